//! One probe: a sample request to one upstream target, step by step — name lookup, TCP
//! connect, TLS (with the certificate's expiry), the HTTP/1.1 exchange — so that a failure is
//! classified by the step that failed ([`Cause`]).
//!
//! The upstream's own settings apply: its scheme, TLS (`verify`, `sni`, `ca`) and connect and
//! read timeouts, each capped by the inspection's timeout.
//!
//! What it may not do: follow redirects, read more than the answer's head and a small part of
//! its body, or send anything but the sample.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;

use fenfa_config::model::{Scheme, Upstream};

use super::sample::Sample;

/// Why a check failed (the fault's cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The host name did not resolve.
    Dns,
    /// Connection refused: nothing listens there.
    Refused,
    /// No connection, or no answer, within the timeout.
    Timeout,
    /// The TLS handshake failed (certificate not trusted, wrong name, expired, protocol).
    Tls,
    /// The connection broke before a whole answer head came back.
    Protocol,
    /// The interface answered 5xx.
    #[serde(rename = "5xx")]
    Status5xx,
    /// The interface answered another status than the sample expects.
    UnexpectedStatus,
    /// It answered, slower than the threshold.
    Slow,
    /// The TLS certificate expires within the warning period.
    CertificateExpiring,
    /// The service's error rate over the last 24 hours was above the availability target.
    Availability,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Dns => "dns",
            Cause::Refused => "refused",
            Cause::Timeout => "timeout",
            Cause::Tls => "tls",
            Cause::Protocol => "protocol",
            Cause::Status5xx => "5xx",
            Cause::UnexpectedStatus => "unexpected_status",
            Cause::Slow => "slow",
            Cause::CertificateExpiring => "certificate_expiring",
            Cause::Availability => "availability",
        }
    }

    /// 中文 for reports.
    pub fn label_zh(self) -> &'static str {
        match self {
            Cause::Dns => "域名解析失败",
            Cause::Refused => "连接被拒绝",
            Cause::Timeout => "超时",
            Cause::Tls => "TLS 握手失败",
            Cause::Protocol => "连接中断",
            Cause::Status5xx => "服务端错误 (5xx)",
            Cause::UnexpectedStatus => "状态码不符",
            Cause::Slow => "响应缓慢",
            Cause::CertificateExpiring => "证书即将过期",
            Cause::Availability => "可用率低于目标",
        }
    }

    pub fn parse(s: &str) -> Option<Cause> {
        use Cause::*;
        [
            Dns,
            Refused,
            Timeout,
            Tls,
            Protocol,
            Status5xx,
            UnexpectedStatus,
            Slow,
            CertificateExpiring,
            Availability,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// The limits an inspection applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub slow: Duration,
    pub cert_warn_days: i64,
}

/// What one probe found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub target: String,
    pub method: String,
    pub path: String,
    /// Every problem found (empty: healthy).
    pub causes: Vec<Cause>,
    pub detail: String,
    pub status: Option<u16>,
    /// Time to the answer's head, milliseconds (`None` when there was none).
    pub latency_ms: Option<u64>,
    /// Days until the upstream certificate expires (https only).
    pub cert_days_left: Option<i64>,
    /// What came back, for verification's checks of the answer (never stored: it may hold
    /// personal data).
    #[serde(skip)]
    pub answer: Option<Answer>,
}

/// An answer's head and the first [`BODY_KEPT`] bytes of its body.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    /// The body was longer than what was kept.
    pub truncated: bool,
}

/// How much of an answer's body a probe keeps.
pub const BODY_KEPT: usize = 64 << 10;

/// Probes `target` (`host:port`) of `upstream` with `sample`. `now`: the app clock, for the
/// certificate's days left.
pub async fn probe(
    upstream: &Upstream,
    target: &str,
    host_header: Option<&str>,
    sample: &Sample,
    limits: Limits,
    now: i64,
) -> Outcome {
    let mut out = Outcome {
        target: target.to_string(),
        method: sample.method.clone(),
        path: sample.path.clone(),
        causes: Vec::new(),
        detail: String::new(),
        status: None,
        latency_ms: None,
        cert_days_left: None,
        answer: None,
    };
    let connect_timeout = upstream.timeouts.connect.0.min(limits.timeout);
    let read_timeout = upstream.timeouts.read.0.min(limits.timeout);
    let started = Instant::now();
    let addrs = match tokio::time::timeout(connect_timeout, tokio::net::lookup_host(target)).await {
        Ok(Ok(a)) => a.collect::<Vec<_>>(),
        Ok(Err(e)) => return fail(out, Cause::Dns, format!("cannot resolve {target}: {e}")),
        Err(_) => return fail(out, Cause::Timeout, format!("resolving {target} timed out")),
    };
    let Some(addr) = addrs.first().copied() else {
        return fail(out, Cause::Dns, format!("{target} resolves to no address"));
    };
    let tcp =
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return fail(out, Cause::Refused, format!("{target}: connection refused"))
            }
            Ok(Err(e)) => return fail(out, Cause::Refused, format!("{target}: {e}")),
            Err(_) => {
                return fail(
                    out,
                    Cause::Timeout,
                    format!(
                        "{target}: no connection within {} ms",
                        connect_timeout.as_millis()
                    ),
                )
            }
        };
    let host = host_header
        .map(str::to_string)
        .unwrap_or_else(|| target.to_string());
    let answer = match upstream.scheme {
        Scheme::Http => exchange(tcp, &host, sample, read_timeout).await,
        Scheme::Https => {
            let name = upstream
                .tls
                .sni
                .clone()
                .unwrap_or_else(|| target_host(target).to_string());
            let tls = match tls_connect(upstream, &name, tcp, connect_timeout).await {
                Ok(s) => s,
                Err((cause, why)) => return fail(out, cause, format!("{target}: {why}")),
            };
            out.cert_days_left = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| not_after(c))
                .map(|t| (t - now).div_euclid(86_400));
            exchange(tls, &host, sample, read_timeout).await
        }
    };
    let elapsed = started.elapsed();
    match answer {
        Ok(a) => {
            let status = a.status;
            out.answer = Some(a);
            out.status = Some(status);
            out.latency_ms = Some(elapsed.as_millis() as u64);
            match sample.expect_status {
                Some(want) if want != status => {
                    out.causes.push(Cause::UnexpectedStatus);
                    out.detail = format!("answered {status}, expected {want}");
                }
                _ if status >= 500 => {
                    out.causes.push(Cause::Status5xx);
                    out.detail = format!("answered {status}");
                }
                _ => {}
            }
            if elapsed > limits.slow {
                out.causes.push(Cause::Slow);
                if out.detail.is_empty() {
                    out.detail = format!(
                        "answered in {} ms (threshold {} ms)",
                        elapsed.as_millis(),
                        limits.slow.as_millis()
                    );
                }
            }
        }
        Err((cause, why)) => return fail(out, cause, format!("{target}: {why}")),
    }
    if let Some(days) = out.cert_days_left {
        if days < limits.cert_warn_days {
            out.causes.push(Cause::CertificateExpiring);
            if out.detail.is_empty() {
                out.detail = format!("the certificate expires in {days} days");
            }
        }
    }
    out
}

fn fail(mut out: Outcome, cause: Cause, detail: String) -> Outcome {
    out.causes.push(cause);
    out.detail = detail;
    out
}

/// `host` of `host:port` (brackets of an IPv6 address removed).
fn target_host(target: &str) -> &str {
    let host = target.rsplit_once(':').map(|(h, _)| h).unwrap_or(target);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The certificate's `notAfter`, unix seconds.
fn not_after(der: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Sends the sample on `io` and reads the answer's head and at most [`BODY_KEPT`] of its body.
async fn exchange<S>(
    io: S,
    host: &str,
    sample: &Sample,
    timeout: Duration,
) -> Result<Answer, (Cause, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let run = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| (Cause::Protocol, e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder()
            .method(sample.method.as_str())
            .uri(sample.path.as_str())
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "fenfa-inspection")
            .header(http::header::CONNECTION, "close");
        for (k, v) in &sample.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let body =
            http_body_util::Full::new(bytes::Bytes::from(sample.body.clone().unwrap_or_default()));
        let req = req
            .body(body)
            .map_err(|e| (Cause::Protocol, format!("the sample request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| (Cause::Protocol, e.to_string()))?;
        let status = resp.status().as_u16();
        let (parts, mut body) = resp.into_parts();
        let mut kept = bytes::BytesMut::new();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                let room = BODY_KEPT - kept.len();
                if data.len() > room {
                    kept.extend_from_slice(&data[..room]);
                    truncated = true;
                    break;
                }
                kept.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status,
            headers: parts.headers,
            body: kept.freeze(),
            truncated,
        })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err((
            Cause::Timeout,
            format!("no answer within {} ms", timeout.as_millis()),
        )),
    }
}

async fn tls_connect(
    upstream: &Upstream,
    name: &str,
    tcp: tokio::net::TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, (Cause, String)> {
    let config = client_config(upstream).map_err(|e| (Cause::Tls, e))?;
    let server = ServerName::try_from(name.to_string()).map_err(|_| {
        (
            Cause::Tls,
            format!("`{name}` is not a valid TLS server name"),
        )
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(server, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err((Cause::Tls, format!("TLS handshake: {e}"))),
        Err(_) => Err((Cause::Timeout, "TLS handshake timed out".into())),
    }
}

fn client_config(upstream: &Upstream) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?;
    if !upstream.tls.verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match &upstream.tls.ca {
        Some(file) => {
            use rustls::pki_types::pem::PemObject;
            // A file on this machine: the control plane checks with the same file the gateways
            // use when both run from one deployment (docs/inspection.md).
            let pem = std::fs::read(file).map_err(|e| format!("upstream.tls.ca `{file}`: {e}"))?;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("upstream.tls.ca: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("upstream.tls.ca: unusable certificate: {e}"))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs().unwrap_or_default();
            roots.add_parsable_certificates(native);
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `tls.verify: false` upstreams: the gateway does not check their certificate, so neither does
/// the probe (it still reads its expiry).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
