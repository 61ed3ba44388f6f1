//! TLS: certificates chosen by SNI on the HTTPS listener, replaced on disk without a restart,
//! HTTP/2 negotiated by ALPN, and HTTPS upstreams verified by default.
//!
//! All key material is generated at test time (rcgen) into the test's own temp dir. The served
//! certificate is checked two ways: by reading the leaf of a raw handshake (tokio-rustls,
//! `peer_certificates()`), and by reqwest trusting only the test CA and resolving the test names
//! to the gateway, which fails if the wrong certificate is served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::support::{client, error_code, Gateway, Upstream};

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another test module may have installed it first; either way ring is the provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A test certificate authority.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM and as the DER a handshake serves.
struct Issued {
    cert_pem: String,
    key_pem: String,
    key_der: Vec<u8>,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names`, signed by this CA (a fresh key every time).
    fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            der: cert.der().clone(),
        }
    }
}

/// A self-signed server certificate for `name` (no CA behind it).
fn self_signed(name: &str) -> Issued {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-sign");
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
        der: cert.der().clone(),
    }
}

/// Writes a file the way a deploy tool should: a temp file next to it, then a rename.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes `issued` as `<dir>/<stem>.crt` and `<dir>/<stem>.key`; returns both paths.
fn write_pair(dir: &Path, stem: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    replace_file(&cert, &issued.cert_pem);
    replace_file(&key, &issued.key_pem);
    (cert, key)
}

/// Accepts any server certificate: used only to read which certificate the server chose.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Handshakes with `addr` sending SNI `sni` and returns the leaf certificate it served.
async fn served_leaf(addr: SocketAddr, sni: &str) -> std::io::Result<CertificateDer<'static>> {
    install_crypto();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| std::io::Error::other("no certificate served"))
}

/// A reqwest client that trusts only `ca_pem` and sends `names` to the gateway's HTTPS port.
fn https_client(ca_pem: &str, names: &[&str], gw: &Gateway, http1_only: bool) -> reqwest::Client {
    install_crypto();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(15));
    for n in names {
        b = b.resolve(n, gw.https);
    }
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn https_url(gw: &Gateway, host: &str, path: &str) -> String {
    format!("https://{host}:{}{path}", gw.https.port())
}

/// Config body: the given certificates on the HTTPS listener and one route to `up`.
fn config(certs: &[(&Path, &Path, bool)], up: SocketAddr) -> String {
    let mut s = String::from("gateway:\n  tls:\n    certificates:\n");
    for (cert, key, default) in certs {
        s.push_str(&format!(
            "      - cert: \"{}\"\n        key: \"{}\"\n        default: {default}\n",
            cert.display(),
            key.display()
        ));
    }
    s.push_str(&format!(
        "services:\n  - name: echo\n    upstream:\n      targets:\n        - addr: \"{up}\"\n\
         routes:\n  - name: all\n    service: echo\n    paths: [\"/*\"]\n"
    ));
    s
}

/// Polls `served_leaf` until it returns `want`, or panics after 10 s with the gateway log.
async fn wait_for_leaf(gw: &Gateway, sni: &str, want: &CertificateDer<'_>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(got) = served_leaf(gw.https, sni).await {
            if got == *want {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "`{sni}` never served the new certificate; log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two certificates on one listener, and one upstream.
struct TwoNames {
    ca: TestCa,
    a: Issued,
    b: Issued,
    a_files: (PathBuf, PathBuf),
    certs: tempfile::TempDir,
    up: Upstream,
    gw: Gateway,
}

fn two_names() -> TwoNames {
    install_crypto();
    let ca = TestCa::new("fenfa test CA");
    let a = ca.issue(&["a.test"]);
    let b = ca.issue(&["b.test"]);
    let certs = tempfile::tempdir().unwrap();
    let a_files = write_pair(certs.path(), "a", &a);
    let b_files = write_pair(certs.path(), "b", &b);
    let up = Upstream::start("echo");
    let gw = Gateway::start_tls(&config(
        &[
            (&a_files.0, &a_files.1, true),
            (&b_files.0, &b_files.1, false),
        ],
        up.addr,
    ));
    TwoNames {
        ca,
        a,
        b,
        a_files,
        certs,
        up,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sni_name_gets_its_own_certificate_and_upstreams_see_https() {
    let t = two_names();
    let gw = &t.gw;

    assert_eq!(served_leaf(gw.https, "a.test").await.unwrap(), t.a.der);
    assert_eq!(served_leaf(gw.https, "b.test").await.unwrap(), t.b.der);
    assert_eq!(
        served_leaf(gw.https, "B.Test").await.unwrap(),
        t.b.der,
        "SNI names match case-insensitively"
    );
    assert_eq!(
        served_leaf(gw.https, "unknown.test").await.unwrap(),
        t.a.der,
        "an unknown name gets the default certificate"
    );

    // A client that trusts only the test CA and checks the name accepts both.
    let c = https_client(&t.ca.pem(), &["a.test", "b.test"], gw, false);
    for host in ["a.test", "b.test"] {
        let resp = c
            .get(https_url(gw, host, "/hello"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS to {host}: {e:?}; log:\n{}", gw.logs()));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-upstream"], "echo");
        let seen = t.up.last();
        assert_eq!(seen.path, "/hello");
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    }

    // The plain listener keeps saying http.
    let resp = client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(t.up.last().header("x-forwarded-proto"), Some("http"));
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_certificate_files_are_served_without_a_restart() {
    let t = two_names();
    let gw = &t.gw;
    let pid = gw.pid();
    assert_eq!(served_leaf(gw.https, "a.test").await.unwrap(), t.a.der);

    let renewed = t.ca.issue(&["a.test"]);
    assert_ne!(renewed.der, t.a.der);
    replace_file(&t.a_files.0, &renewed.cert_pem);
    replace_file(&t.a_files.1, &renewed.key_pem);

    wait_for_leaf(gw, "a.test", &renewed.der).await;
    assert_eq!(gw.pid(), pid);
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false),
        "the gateway process is still the one that started"
    );
    // The other name is untouched, and a verifying client accepts the new certificate.
    assert_eq!(served_leaf(gw.https, "b.test").await.unwrap(), t.b.der);
    let c = https_client(&t.ca.pem(), &["a.test"], gw, false);
    let resp = c
        .get(https_url(gw, "a.test", "/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(t.up.last().path, "/after");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_is_negotiated_by_alpn_and_http1_still_works() {
    let t = two_names();
    let gw = &t.gw;

    let h2 = https_client(&t.ca.pem(), &["a.test"], gw, false);
    let resp = h2.get(https_url(gw, "a.test", "/h2")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(t.up.last().path, "/h2");
    assert_eq!(t.up.last().header("x-forwarded-proto"), Some("https"));

    let h1 = https_client(&t.ca.pem(), &["a.test"], gw, true);
    let resp = h1.get(https_url(gw, "a.test", "/h1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(t.up.last().path, "/h1");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_are_verified_unless_told_otherwise() {
    install_crypto();
    let backend = self_signed("backend.agency.test");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("backend-ca.pem");
    replace_file(&ca_file, &backend.cert_pem);
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![backend.der.clone()],
            PrivateKeyDer::Pkcs8(backend.key_der.clone().into()),
        )
        .unwrap();
    let up = Upstream::start_tls("tls-backend", Arc::new(server));
    let target = format!("127.0.0.1:{}", up.addr.port());

    // Four services on the same target, differing only in their TLS settings. `named` sends the
    // right name but does not trust the certificate: the failure is about trust, not the name.
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: defaults
    upstream: {{ scheme: https, targets: [{{ addr: "{target}" }}] }}
  - name: named
    upstream:
      scheme: https
      targets: [{{ addr: "{target}" }}]
      tls: {{ sni: backend.agency.test }}
  - name: trusted
    upstream:
      scheme: https
      targets: [{{ addr: "{target}" }}]
      tls: {{ sni: backend.agency.test, ca: "{ca}" }}
  - name: unverified
    upstream:
      scheme: https
      targets: [{{ addr: "{target}" }}]
      tls: {{ verify: false }}
routes:
  - {{ name: defaults, service: defaults, paths: ["/defaults/*"] }}
  - {{ name: named, service: named, paths: ["/named/*"] }}
  - {{ name: trusted, service: trusted, paths: ["/trusted/*"] }}
  - {{ name: unverified, service: unverified, paths: ["/unverified/*"] }}
"#,
        ca = ca_file.display()
    ));
    // A fresh client connection per request: this test is about the gateway's upstream side, and
    // must not depend on whether the gateway keeps a client connection open after a 502.
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Interleaved, so that a connection verified for one service is pooled right before another
    // service asks for the same target: trust must not leak through the connection pool.
    for round in 0..3 {
        for (service, want) in [
            ("trusted", 200),
            ("named", 502),
            ("unverified", 200),
            ("defaults", 502),
        ] {
            let resp = c
                .get(gw.url(&format!("/{service}/r{round}")))
                .send()
                .await
                .unwrap();
            if want == 200 {
                assert_eq!(
                    resp.status(),
                    200,
                    "{service} round {round}; log:\n{}",
                    gw.logs()
                );
                assert_eq!(resp.headers()["x-upstream"], "tls-backend");
            } else {
                let (status, code, body) = error_code(resp).await;
                assert_eq!(
                    (status, code.as_str()),
                    (502, "upstream_error"),
                    "{service} round {round}: {body}"
                );
            }
        }
    }
    // Only the two services that may talk to it ever reached the backend.
    let paths: Vec<String> = up.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths.len(), 6, "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/trusted/") || p.starts_with("/unverified/")),
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_with_a_missing_certificate_file_is_rejected_and_the_old_one_stays() {
    let t = two_names();
    let gw = &t.gw;
    let generation = gw.generation();
    let missing = t.certs.path().join("nope.crt");
    let b_key = t.certs.path().join("b.key");
    let b_cert = t.certs.path().join("b.crt");
    gw.write_config(&config(
        &[(&missing, &t.a_files.1, true), (&b_cert, &b_key, false)],
        t.up.addr,
    ));

    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        let st = gw.status_json();
        if !st["config"]["last_error"].is_null() {
            break st["config"]["last_error"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the bad config was never rejected; log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(error["path"], "gateway.tls.certificates[0].cert", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nope.crt"),
        "{error}"
    );
    assert_eq!(gw.generation(), generation, "nothing went live");

    assert_eq!(served_leaf(gw.https, "a.test").await.unwrap(), t.a.der);
    assert_eq!(served_leaf(gw.https, "b.test").await.unwrap(), t.b.der);
    let c = https_client(&t.ca.pem(), &["a.test"], gw, false);
    let resp = c
        .get(https_url(gw, "a.test", "/still"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn upstream_tls_sni_must_be_a_server_name() {
    // An empty SNI would make pingora skip every certificate check: it is a config error.
    let dir = tempfile::tempdir().unwrap();
    for (sni, ok) in [
        ("\"\"", false),
        ("\"not a name\"", false),
        ("backend.agency.test", true),
    ] {
        let file = dir.path().join("sni.yaml");
        std::fs::write(
            &file,
            format!(
                "services:\n  - name: s\n    upstream:\n      scheme: https\n      \
                 targets: [{{ addr: \"127.0.0.1:1\" }}]\n      tls: {{ sni: {sni} }}\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "sni {sni}: {err}");
        if !ok {
            assert!(err.contains("services[0].upstream.tls.sni:"), "{err}");
        }
    }
}

/// Sends `bytes` over a TLS connection to `addr` (ALPN `alpn`) and returns all it answers.
async fn raw_tls(addr: SocketAddr, alpn: &[u8], bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    install_crypto();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("a.test").map_err(std::io::Error::other)?;
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    Ok(out)
}

// Issue 11, defect 2: the tap works on the decrypted stream.
#[tokio::test(flavor = "multi_thread")]
async fn defect_2_over_tls_a_request_the_parser_refuses_gets_the_json_400() {
    let t = two_names();
    let gw = &t.gw;
    let out = raw_tls(
        gw.https,
        b"http/1.1",
        b"GET /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding : chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("x-request-id: "), "{text}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "bad_request", "{text}");
    // A good request over TLS is still served (and the HTTPS listener still speaks HTTP/2).
    let ok = raw_tls(
        gw.https,
        b"http/1.1",
        b"GET /hello HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&ok).starts_with("HTTP/1.1 200 "));
    let c = https_client(&t.ca.pem(), &["a.test"], gw, false);
    let resp = c
        .get(https_url(gw, "a.test", "/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
}
