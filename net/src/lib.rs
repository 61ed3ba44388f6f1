//! The HTTP client of the gateway's background jobs: following the control plane (long poll),
//! shipping the audit trail to it, and exporting the trail to an OTLP collector. Never used on the
//! request path.
//!
//! Why it exists: those jobs carry the node token, the rendered config (agency signing secrets,
//! HS256 keys) and every audit record, so they speak TLS with a trust anchor the operator chooses
//! (and, if asked, a client certificate), stop after a total deadline and refuse an answer larger
//! than the cap they were given. It wraps reqwest (hyper, rustls with the ring provider the rest
//! of the workspace uses) and runs on a small tokio runtime of its own ([`handle`]), never on the
//! proxy's.
//!
//! What it may not do: talk plain `http://` to a host that is not loopback unless the operator
//! set `insecure` ([`check_url`]), follow redirects, use a system proxy, or read an answer body
//! past its cap.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Method};
pub use reqwest::Url;
use rustls::pki_types::pem::PemObject;

/// The TLS files of one client: its own type, so that this crate depends on no config model
/// (the plugins use it too, and the config crate depends on the plugins). Callers convert
/// from their settings (`fenfa_config::model::ClientTls`, a plugin's own fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientTls<'a> {
    /// PEM file of the only CAs trusted for the server's certificate (default: the system's).
    pub ca: Option<&'a str>,
    /// PEM certificate (chain) presented to the server (mutual TLS); needs `client_key`.
    pub client_cert: Option<&'a str>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<&'a str>,
}

/// Why a request, or the client's settings, failed. Setting errors name the field or flag.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A setting is wrong; `field` is its config path or command-line flag.
    #[error("{field}: {message}")]
    Setting { field: String, message: String },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    /// The server's certificate was refused (e.g. `UnknownIssuer`: not signed by a trusted CA).
    #[error("TLS with {host}: certificate verify failed: {reason}")]
    Certificate { host: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("no complete answer from {host} within {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("the answer from {host} is over the {limit}-byte limit ({field}); refused")]
    TooLarge {
        host: String,
        limit: u64,
        field: String,
    },
    #[error("request to {host} failed: {reason}")]
    Request { host: String, reason: String },
    #[error("cannot start the background network runtime: {0}")]
    Runtime(String),
}

fn setting(field: &str, message: impl Into<String>) -> ClientError {
    ClientError::Setting {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The names of the settings a client was configured with, for error messages: config paths
/// (`audit.ship.tls.ca`) or command-line flags (`--control-plane-ca`).
#[derive(Debug, Clone)]
pub struct Names {
    pub url: String,
    pub ca: String,
    pub client_cert: String,
    pub client_key: String,
    pub insecure: String,
    pub max_body: String,
}

impl Names {
    /// The fields of a config section such as `audit.ship`.
    pub fn section(section: &str) -> Self {
        Self {
            url: format!("{section}.url"),
            ca: format!("{section}.tls.ca"),
            client_cert: format!("{section}.tls.client_cert"),
            client_key: format!("{section}.tls.client_key"),
            insecure: format!("{section}.insecure"),
            max_body: format!("{section}.max_response_bytes"),
        }
    }
}

/// How to reach one endpoint.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    pub url: &'a str,
    pub tls: ClientTls<'a>,
    /// Allow plain `http://` to a host that is not loopback.
    pub insecure: bool,
    /// Connect timeout (capped at 10 s); each request gets its own total deadline.
    pub connect_timeout: Duration,
    /// Longest answer body read.
    pub max_body: u64,
    pub names: Names,
}

/// Whether the URL's host is loopback: `127.0.0.0/8`, `::1` (also IPv4-mapped) or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost."),
    }
}

/// Parses `url` and applies the transport rule: `https://` always; `http://` only to a loopback
/// host, or anywhere when `insecure` is set. Nothing is resolved or connected here.
pub fn check_url(url: &str, insecure: bool, names: &Names) -> Result<Url, ClientError> {
    let parsed =
        Url::parse(url).map_err(|e| setting(&names.url, format!("`{url}` is not a URL: {e}")))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| setting(&names.url, format!("`{url}` has no host")))?
        .to_string();
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(setting(
            &names.url,
            "credentials in the URL are not supported (the node token is sent as a header)",
        ));
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if insecure || is_loopback(&parsed) => Ok(parsed),
        "http" => Err(setting(
            &names.url,
            format!(
                "plain http:// to `{host}` is refused: the node token and the data would cross the \
                 network unencrypted. Use https:// (trusting your CA with {}), a loopback address, \
                 or set {} to accept that risk",
                names.ca, names.insecure
            ),
        )),
        other => Err(setting(
            &names.url,
            format!(
                "`{url}`: expected https:// (or http:// to a loopback address), not {other}://"
            ),
        )),
    }
}

/// Checks the URL rule and reads the TLS files, without building anything: what config load and
/// `check` run, so a reload is refused for what the next start would refuse.
pub fn validate(s: &Settings<'_>) -> Result<(), ClientError> {
    let url = check_url(s.url, s.insecure, &s.names)?;
    if s.max_body == 0 {
        return Err(setting(&s.names.max_body, "expected at least 1"));
    }
    tls_config(&s.tls, &s.names, url.scheme() == "https", false).map(|_| ())
}

fn read_certs(
    file: &str,
    field: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ClientError> {
    let pem =
        std::fs::read(file).map_err(|e| setting(field, format!("cannot read `{file}`: {e}")))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setting(field, format!("`{file}` is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(setting(field, format!("`{file}` holds no certificate")));
    }
    Ok(certs)
}

/// The rustls client settings; `system_roots` loads the system's CAs when no `ca` is set (only
/// when a client is built: validation does not need them).
fn tls_config(
    tls: &ClientTls<'_>,
    names: &Names,
    https: bool,
    system_roots: bool,
) -> Result<rustls::ClientConfig, ClientError> {
    if !https {
        for (set, field) in [
            (tls.ca.is_some(), &names.ca),
            (tls.client_cert.is_some(), &names.client_cert),
            (tls.client_key.is_some(), &names.client_key),
        ] {
            if set {
                return Err(setting(field, "only used with an https:// URL"));
            }
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(file) => {
            for cert in read_certs(file, &names.ca)? {
                roots.add(cert).map_err(|e| {
                    setting(
                        &names.ca,
                        format!("`{file}` holds an unusable certificate: {e}"),
                    )
                })?;
            }
        }
        None if system_roots && https => {
            let native = rustls_native_certs::load_native_certs().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the system's CA certificates");
                Vec::new()
            });
            let (added, _) = roots.add_parsable_certificates(native);
            if added == 0 {
                tracing::warn!(
                    setting = %names.ca,
                    "no system CA certificates found: set {} to trust the server's CA",
                    names.ca
                );
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setting(&names.url, format!("TLS settings: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(setting(
                &names.client_key,
                format!("needed with {}", names.client_cert),
            ))
        }
        (None, Some(_)) => {
            return Err(setting(
                &names.client_cert,
                format!("needed with {}", names.client_key),
            ))
        }
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, &names.client_cert)?;
            let pem = std::fs::read(key)
                .map_err(|e| setting(&names.client_key, format!("cannot read `{key}`: {e}")))?;
            let der =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
                    rustls::pki_types::pem::Error::NoItemsFound => {
                        setting(&names.client_key, format!("`{key}` holds no private key"))
                    }
                    e => setting(&names.client_key, format!("`{key}` is not valid PEM: {e}")),
                })?;
            builder.with_client_auth_cert(chain, der).map_err(|e| {
                setting(
                    &names.client_key,
                    format!("`{key}` cannot be used with `{cert}`: {e}"),
                )
            })?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// One endpoint's client: its URL, TLS settings, connection pool and body cap.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: Url,
    host: String,
    client: reqwest::Client,
    max_body: u64,
    max_body_field: String,
}

/// An HTTP answer: status, header fields, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The start of the body, for an error message (a receiver's explanation, not its data).
    pub fn excerpt(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Endpoint {
    /// Checks the settings (see [`validate`]) and builds the client; connects to nothing. With
    /// `insecure` set, logs a warning (this runs at every start).
    pub fn new(s: &Settings<'_>) -> Result<Self, ClientError> {
        let url = check_url(s.url, s.insecure, &s.names)?;
        if s.max_body == 0 {
            return Err(setting(&s.names.max_body, "expected at least 1"));
        }
        let https = url.scheme() == "https";
        let tls = tls_config(&s.tls, &s.names, https, true)?;
        if s.insecure {
            if !https && !is_loopback(&url) {
                tracing::warn!(setting = %s.names.insecure, url = %url,
                    "INSECURE: plain http:// to a host that is not loopback; the node token and the data cross the network unencrypted");
            } else {
                tracing::warn!(setting = %s.names.insecure, url = %url,
                    "{} is set: plain http:// would be allowed to any host (not used by this URL); remove it", s.names.insecure);
            }
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(s.connect_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("fenfa-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setting(&s.names.url, format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            host: url.host_str().unwrap_or_default().to_string(),
            url,
            client,
            max_body: s.max_body,
            max_body_field: s.names.max_body.clone(),
        })
    }

    /// Sends one request and reads the whole answer, all within `deadline`.
    pub async fn request(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Vec<u8>,
        deadline: Duration,
    ) -> Result<Answer, ClientError> {
        let exchange = async {
            let mut req = self.client.request(method, url).headers(headers);
            if !body.is_empty() {
                req = req.body(body);
            }
            let mut resp = req.send().await.map_err(|e| self.describe(&e))?;
            let too_large = || ClientError::TooLarge {
                host: self.host.clone(),
                limit: self.max_body,
                field: self.max_body_field.clone(),
            };
            if resp.content_length().is_some_and(|n| n > self.max_body) {
                return Err(too_large());
            }
            let status = resp.status().as_u16();
            let headers = std::mem::take(resp.headers_mut());
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.describe(&e))? {
                if (out.len() + chunk.len()) as u64 > self.max_body {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                headers,
                body: out,
            })
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                host: self.host.clone(),
                after: deadline,
            })?
    }

    /// A reqwest error as what an operator needs to know: a refused certificate, a connection
    /// that failed (with the system's reason), a timeout.
    fn describe(&self, e: &reqwest::Error) -> ClientError {
        let host = self.host.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut innermost = e.to_string();
        while let Some(err) = cur {
            if let Some(t) = rustls_error(err) {
                return match t {
                    rustls::Error::InvalidCertificate(c) => ClientError::Certificate {
                        host,
                        reason: format!("{c:?}"),
                    },
                    other => ClientError::Tls {
                        host,
                        reason: other.to_string(),
                    },
                };
            }
            innermost = err.to_string();
            cur = err.source();
        }
        if e.is_timeout() {
            ClientError::Request {
                host,
                reason: format!("timed out: {innermost}"),
            }
        } else if e.is_connect() {
            ClientError::Connect {
                host,
                reason: innermost,
            }
        } else {
            ClientError::Request {
                host,
                reason: innermost,
            }
        }
    }
}

/// The rustls error inside `err`, directly or inside (possibly nested) `io::Error`s, whose
/// `source()` skips the error they wrap.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = err;
    loop {
        if let Some(t) = cur.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cur = cur.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The background network runtime (one worker thread `fenfa-net`, plus a small blocking pool for
/// name resolution, segment reads and config compiles), started on first use. The proxy's
/// runtimes never run these jobs, and these jobs never run on them.
pub fn handle() -> Result<tokio::runtime::Handle, ClientError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(8)
        .thread_name("fenfa-net")
        .enable_all()
        .build()
        .map_err(|e| ClientError::Runtime(e.to_string()))?;
    Ok(RUNTIME.get_or_init(|| rt).handle().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::section("audit.ship")
    }

    #[test]
    fn loopback_hosts_are_127_8_ipv6_one_and_localhost() {
        for url in [
            "http://127.0.0.1:9180/x",
            "http://127.1.2.3/",
            "http://[::1]:9180/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9180/",
            "http://LOCALHOST/",
        ] {
            assert!(is_loopback(&Url::parse(url).unwrap()), "{url}");
        }
        for url in [
            "http://control-plane.invalid:9180/",
            "http://localhost.invalid/",
            "http://128.0.0.1/",
            "http://[::2]/",
            "http://0.0.0.0/",
        ] {
            assert!(!is_loopback(&Url::parse(url).unwrap()), "{url}");
        }
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_insecure() {
        let n = names();
        assert!(check_url("https://control-plane.invalid/v1", false, &n).is_ok());
        assert!(check_url("http://127.0.0.1:9180/v1", false, &n).is_ok());
        assert!(check_url("http://localhost:9180/v1", false, &n).is_ok());
        let e = check_url("http://control-plane.invalid:9180/v1", false, &n)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("audit.ship.url: plain http:// to `control-plane.invalid` is refused")
                && e.contains("audit.ship.insecure")
                && e.contains("audit.ship.tls.ca"),
            "{e}"
        );
        assert!(check_url("http://control-plane.invalid:9180/v1", true, &n).is_ok());
        let e = check_url("ftp://127.0.0.1/", true, &n)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not ftp://"), "{e}");
        assert!(check_url("not a url", false, &n).is_err());
        assert!(check_url("https://user:pw@cp.invalid/", false, &n).is_err());
    }

    #[test]
    fn tls_files_are_checked_with_their_field() {
        let n = names();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem").display().to_string();
        let tls = ClientTls {
            ca: Some(&missing),
            ..Default::default()
        };
        let s = Settings {
            url: "https://cp.invalid/",
            tls,
            insecure: false,
            connect_timeout: Duration::from_secs(1),
            max_body: 1,
            names: n.clone(),
        };
        let e = validate(&s).unwrap_err().to_string();
        assert!(e.starts_with("audit.ship.tls.ca: cannot read"), "{e}");
        // TLS files with a plain URL are a mistake, not silently ignored.
        let e = validate(&Settings {
            url: "http://127.0.0.1/",
            ..s.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("audit.ship.tls.ca: only used with an https://"),
            "{e}"
        );
        let not_pem = dir.path().join("empty.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let not_pem = not_pem.display().to_string();
        let tls = ClientTls {
            client_cert: Some(&not_pem),
            ..Default::default()
        };
        let e = validate(&Settings { tls, ..s.clone() })
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("audit.ship.tls.client_key: needed with"),
            "{e}"
        );
        let e = validate(&Settings {
            max_body: 0,
            ..s.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("audit.ship.max_response_bytes:"), "{e}");
    }
}
