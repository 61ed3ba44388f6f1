//! The `tracing:` section: its checks, and the client settings the gateway's span exporter is
//! built from (so that `check`, a reload and the exporter itself apply the same rules).
//!
//! What is checked: the endpoint's URL and transport rule and the TLS files (by
//! [`fenfa_net::validate`]: `https://`, or `http://` only to a loopback address unless
//! `insecure`), that the endpoint names a path (OTLP/HTTP endpoints are per signal,
//! `…/v1/traces`), the sample ratio, the batch and queue sizes, and the extra headers. Every
//! error names its field; a header's value is never shown (it may be a credential).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::model::TracingSettings;
use crate::ConfigError;

/// Headers the exporter sets itself; `tracing.headers` may not override them.
const RESERVED: [&str; 7] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "connection",
    "transfer-encoding",
    "user-agent",
];

/// Longest answer read from the collector: an OTLP answer is a few bytes (a partial success at
/// most), so anything near this is not a collector.
pub const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// Largest `tracing.batch_spans`: a batch is one request body, and collectors commonly refuse
/// bodies past a few MiB.
pub const MAX_BATCH_SPANS: usize = 10_000;
/// Largest `tracing.queue_spans` (a span waiting for export is about a kilobyte).
pub const MAX_QUEUE_SPANS: usize = 1_000_000;

/// The names of the section's client fields, for error messages.
pub fn names() -> fenfa_net::Names {
    fenfa_net::Names {
        url: "tracing.endpoint".into(),
        ca: "tracing.tls.ca".into(),
        client_cert: "tracing.tls.client_cert".into(),
        client_key: "tracing.tls.client_key".into(),
        insecure: "tracing.insecure".into(),
        max_body: "tracing".into(),
    }
}

/// How the exporter reaches the collector.
pub fn net_settings(t: &TracingSettings) -> fenfa_net::Settings<'_> {
    fenfa_net::Settings {
        url: &t.endpoint,
        tls: fenfa_net::ClientTls {
            ca: t.tls.ca.as_deref(),
            client_cert: t.tls.client_cert.as_deref(),
            client_key: t.tls.client_key.as_deref(),
        },
        insecure: t.insecure,
        connect_timeout: t.timeout.0,
        max_body: MAX_RESPONSE_BYTES,
        names: names(),
    }
}

fn client_error(e: fenfa_net::ClientError) -> ConfigError {
    match e {
        fenfa_net::ClientError::Setting { field, message } => ConfigError::at(field, message),
        other => ConfigError::at("tracing", other.to_string()),
    }
}

/// Checks the `tracing:` section and returns the extra headers as the exporter sends them
/// (values marked sensitive). Reads the TLS files; connects to nothing.
pub fn check(t: &TracingSettings) -> Result<HeaderMap, ConfigError> {
    fenfa_net::validate(&net_settings(t)).map_err(client_error)?;
    let url = fenfa_net::check_url(&t.endpoint, t.insecure, &names()).map_err(client_error)?;
    if url.path().trim_end_matches('/').is_empty() {
        return Err(ConfigError::at(
            "tracing.endpoint",
            format!(
                "`{}` names no path: an OTLP/HTTP endpoint is per signal, e.g. `{}/v1/traces`",
                t.endpoint,
                url.origin().ascii_serialization()
            ),
        ));
    }
    if !(t.sample_ratio.is_finite() && (0.0..=1.0).contains(&t.sample_ratio)) {
        return Err(ConfigError::at(
            "tracing.sample_ratio",
            format!(
                "expected a share from 0.0 (only callers' sampled traces) to 1.0 (every request), not {}",
                t.sample_ratio
            ),
        ));
    }
    if t.timeout.0.is_zero() {
        return Err(ConfigError::at("tracing.timeout", "must be above zero"));
    }
    if t.interval.0.is_zero() {
        return Err(ConfigError::at("tracing.interval", "must be above zero"));
    }
    if t.batch_spans == 0 || t.batch_spans > MAX_BATCH_SPANS {
        return Err(ConfigError::at(
            "tracing.batch_spans",
            format!("expected 1 to {MAX_BATCH_SPANS}"),
        ));
    }
    if t.queue_spans < t.batch_spans || t.queue_spans > MAX_QUEUE_SPANS {
        return Err(ConfigError::at(
            "tracing.queue_spans",
            format!(
                "expected {} (tracing.batch_spans) to {MAX_QUEUE_SPANS}",
                t.batch_spans
            ),
        ));
    }
    headers(t)
}

/// The configured headers; the error names the header, never its value.
fn headers(t: &TracingSettings) -> Result<HeaderMap, ConfigError> {
    let mut map = HeaderMap::new();
    for (name, value) in &t.headers {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            return Err(ConfigError::at(
                "tracing.headers",
                format!("`{name}` is not a valid header name"),
            ));
        };
        if RESERVED.contains(&header.as_str()) {
            return Err(ConfigError::at(
                "tracing.headers",
                format!("`{name}` is set by the exporter itself; leave it out"),
            ));
        }
        let Ok(mut v) = HeaderValue::from_str(value) else {
            return Err(ConfigError::at(
                format!("tracing.headers.{name}"),
                "the value must be visible ASCII (no control characters)",
            ));
        };
        v.set_sensitive(true);
        map.insert(header, v);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section as an operator writes it, inside a whole config.
    fn parse(section: &str) -> Result<TracingSettings, ConfigError> {
        let text = format!("allow_empty: true\ntracing:\n{section}");
        crate::parse(&text).map(|c| c.tracing.expect("a tracing section"))
    }

    fn error(section: &str) -> ConfigError {
        match parse(section) {
            Err(e) => e,
            Ok(t) => check(&t).expect_err("refused"),
        }
    }

    #[test]
    fn defaults_and_a_loopback_collector() {
        let t = parse("  endpoint: http://127.0.0.1:4318/v1/traces\n").unwrap();
        assert_eq!(t.sample_ratio, 0.1);
        assert_eq!((t.batch_spans, t.queue_spans), (512, 8192));
        assert_eq!(t.interval.0, std::time::Duration::from_secs(5));
        assert!(check(&t).unwrap().is_empty());
        let t =
            parse("  endpoint: https://otel.city.example/v1/traces\n  sample_ratio: 1\n").unwrap();
        assert_eq!(t.sample_ratio, 1.0);
        check(&t).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        for (section, path, says) in [
            (
                "  endpoint: http://otel.city.example:4318/v1/traces\n",
                "tracing.endpoint",
                "plain http://",
            ),
            ("  endpoint: not a url\n", "tracing.endpoint", "not a URL"),
            (
                "  endpoint: https://otel.city.example:4318\n",
                "tracing.endpoint",
                "v1/traces",
            ),
            (
                "  endpoint: ftp://127.0.0.1/v1/traces\n",
                "tracing.endpoint",
                "not ftp://",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  sample_ratio: 1.5\n",
                "tracing.sample_ratio",
                "1.5",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  sample_ratio: -0.1\n",
                "tracing.sample_ratio",
                "0.0",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  sample_ratio: .nan\n",
                "tracing.sample_ratio",
                "NaN",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  sample_ratio: ten\n",
                "tracing.sample_ratio",
                "",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  batch_spans: 0\n",
                "tracing.batch_spans",
                "1 to",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  batch_spans: 600\n  queue_spans: 100\n",
                "tracing.queue_spans",
                "600",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  interval: 0ms\n",
                "tracing.interval",
                "above zero",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  timeout: 5\n",
                "tracing.timeout",
                "no unit",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  tls: { ca: /nonexistent/ca.pem }\n",
                "tracing.tls.ca",
                "cannot read",
            ),
            (
                "  endpoint: http://127.0.0.1:4318/v1/traces\n  tls: { ca: /nonexistent/ca.pem }\n",
                "tracing.tls.ca",
                "only used with an https://",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  tls: { client_cert: /x.pem }\n",
                "tracing.tls.client_key",
                "needed with",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  colour: red\n",
                "tracing.colour",
                "unknown field",
            ),
            ("  sample_ratio: 0.5\n", "tracing", "missing field `endpoint`"),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  headers: { Content-Type: text/plain }\n",
                "tracing.headers",
                "set by the exporter",
            ),
            (
                "  endpoint: https://127.0.0.1/v1/traces\n  headers: { \"bad header\": x }\n",
                "tracing.headers",
                "not a valid header name",
            ),
        ] {
            let e = error(section);
            assert_eq!(e.path, path, "{section}: {e}");
            assert!(e.message.contains(says), "{section}: {e}");
        }
    }

    #[test]
    fn a_header_value_is_never_shown() {
        let e = error(
            "  endpoint: https://127.0.0.1/v1/traces\n  headers: { Authorization: \"Bearer se\\ncret\" }\n",
        );
        assert_eq!(e.path, "tracing.headers.Authorization");
        assert!(!e.to_string().contains("cret"), "{e}");
        let t = parse(
            "  endpoint: https://127.0.0.1/v1/traces\n  headers: { Authorization: \"Bearer secret-1\" }\n",
        )
        .unwrap();
        let headers = check(&t).unwrap();
        assert!(headers["authorization"].is_sensitive());
        assert!(!format!("{t:?}").contains("secret-1"));
    }

    #[test]
    fn absent_means_off_and_leaves_the_serialized_config_unchanged() {
        let c = crate::parse("allow_empty: true\n").unwrap();
        assert!(c.tracing.is_none());
        assert!(!serde_json::to_string(&c).unwrap().contains("tracing"));
    }
}
