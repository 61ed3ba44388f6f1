//! Export to an OpenTelemetry collector: the audit records as OTLP logs, over OTLP/HTTP with
//! the JSON encoding (`POST …/v1/logs`, `Content-Type: application/json`).
//!
//! It is a second [`Sink`] behind its own shipper, with its own cursor (`ship-otlp.cursor`): the
//! same at-least-once delivery from the segments as the control-plane sink, independent of it.
//! Retention keeps a segment until every configured sink has it.
//!
//! One log record per audit record:
//! - `timeUnixNano`: the record's `time` (when the request arrived); `observedTimeUnixNano`: when
//!   it was exported.
//! - `severityNumber`/`severityText`: INFO (9) allowed, WARN (13) denied by a plugin, ERROR (17)
//!   answered with a gateway error.
//! - `body`: the stored line itself, byte for byte (with `seq`, `prev` and `mac`), so a copy in a
//!   log backend can still be checked against the chain.
//! - `attributes`: the fields to search on, under OpenTelemetry semantic-convention names where
//!   one exists (`http.request.method`, `url.path`, `http.response.status_code`,
//!   `client.address`) and `fenfa.*` otherwise, plus `fenfa.audit.segment` and
//!   `fenfa.audit.offset`: with the resource's `service.instance.id` (the node), the record's
//!   idempotency key.
//! - resource: `service.name` = `fenfa-gateway`, `service.instance.id` = the node; scope
//!   `fenfa.audit`.
//!
//! What the collector answers (per the OTLP/HTTP specification): 2xx takes the batch; a
//! `partialSuccess` naming rejected records means those were refused for good (counted in
//! `fenfa_audit_export_refused_total` and logged; the trail keeps them). 408, 429 and 5xx, or no
//! answer, are retried with backoff; any other 4xx means the collector will never take this batch,
//! so it is counted as refused and logged, and export moves on rather than stall.

use std::time::{Duration, SystemTime};

use super::json;
use super::record::{Decision, Record};
use super::sink::{Batch, Sink, SinkError};
use crate::counters::SinkCounters;
use fenfa_config::model::AuditOtlp;
use fenfa_net::{ClientError, Endpoint, Names, Settings};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Headers the client sets itself; `audit.otlp.headers` may not override them.
const RESERVED: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "connection",
    "transfer-encoding",
    "user-agent",
];

/// Posts batches to an OTLP/HTTP logs endpoint.
pub struct OtlpSink {
    endpoint: Endpoint,
    /// `Content-Type` and `audit.otlp.headers` (values marked sensitive).
    headers: HeaderMap,
    timeout: Duration,
    /// `{"resourceLogs":[{"resource":…,"scopeLogs":[{"scope":…,"logRecords":[`, made once.
    prefix: Vec<u8>,
    counters: Arc<SinkCounters>,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("url", &self.endpoint.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The client settings of `audit.otlp`.
fn settings(s: &AuditOtlp) -> Settings<'_> {
    Settings {
        url: &s.url,
        tls: crate::sink::net_tls(&s.tls),
        insecure: s.insecure,
        connect_timeout: s.timeout.0,
        max_body: s.max_response_bytes,
        names: Names::section("audit.otlp"),
    }
}

fn setting(field: String, message: impl Into<String>) -> ClientError {
    ClientError::Setting {
        field,
        message: message.into(),
    }
}

/// Checks `audit.otlp`; the error names the field.
pub fn validate(s: &AuditOtlp) -> Result<(), ClientError> {
    fenfa_net::validate(&settings(s))?;
    headers(s).map(|_| ())
}

/// `Content-Type` and the configured headers; the error names the field, never a value.
fn headers(s: &AuditOtlp) -> Result<HeaderMap, ClientError> {
    if s.batch_records == 0 || s.batch_records > 10_000 {
        return Err(setting(
            "audit.otlp.batch_records".into(),
            "expected 1 to 10000",
        ));
    }
    let mut map = HeaderMap::new();
    map.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in &s.headers {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            return Err(setting(
                "audit.otlp.headers".into(),
                format!("`{name}` is not a valid header name"),
            ));
        };
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(setting(
                "audit.otlp.headers".into(),
                format!("`{name}` is set by the exporter itself; leave it out"),
            ));
        }
        // The value may be a secret: name the header, never show the value.
        let Ok(mut v) = HeaderValue::from_str(value) else {
            return Err(setting(
                format!("audit.otlp.headers.{name}"),
                "the value must be visible ASCII (no control characters)",
            ));
        };
        v.set_sensitive(true);
        map.insert(header, v);
    }
    Ok(map)
}

impl OtlpSink {
    pub fn new(
        cfg: &AuditOtlp,
        node: &str,
        counters: Arc<SinkCounters>,
    ) -> Result<Self, ClientError> {
        let headers = headers(cfg)?;
        let endpoint = Endpoint::new(&settings(cfg))?;
        let mut prefix = Vec::with_capacity(256);
        prefix.extend_from_slice(
            b"{\"resourceLogs\":[{\"resource\":{\"attributes\":[\
              {\"key\":\"service.name\",\"value\":{\"stringValue\":\"fenfa-gateway\"}},\
              {\"key\":\"service.instance.id\",\"value\":{\"stringValue\":",
        );
        json::push_str(&mut prefix, node);
        prefix.extend_from_slice(
            b"}}]},\"scopeLogs\":[{\"scope\":{\"name\":\"fenfa.audit\",\"version\":",
        );
        json::push_str(&mut prefix, env!("CARGO_PKG_VERSION"));
        prefix.extend_from_slice(b"},\"logRecords\":[");
        Ok(Self {
            endpoint,
            headers,
            timeout: cfg.timeout.0,
            prefix,
            counters,
        })
    }

    /// The `ExportLogsServiceRequest` for `batch`, in OTLP's JSON encoding.
    pub fn body(&self, batch: &Batch<'_>, observed: SystemTime) -> Vec<u8> {
        let observed_ns = observed
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let size: usize = batch.records.iter().map(|r| r.len() * 2 + 700).sum();
        let mut out = Vec::with_capacity(self.prefix.len() + size + 8);
        out.extend_from_slice(&self.prefix);
        for (k, line) in batch.records.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            log_record(
                &mut out,
                line,
                batch.segment,
                batch.offset + k as u64,
                observed_ns,
            );
        }
        out.extend_from_slice(b"]}]}]}");
        out
    }
}

/// One `LogRecord`.
fn log_record(out: &mut Vec<u8>, line: &[u8], segment: &str, offset: u64, observed_ns: u128) {
    // A damaged line arrives wrapped as `{"unparsable_line":…}`: it still goes out, as ERROR,
    // with whatever could not be read left out.
    let r: Record = serde_json::from_slice(line).unwrap_or_default();
    let (number, text) = match r.decision {
        Some(Decision::Allowed) => (9, "INFO"),
        Some(Decision::Denied) => (13, "WARN"),
        Some(Decision::Error) | None => (17, "ERROR"),
    };
    out.push(b'{');
    if let Ok(ms) = super::time::parse(&r.time) {
        if ms >= 0 {
            out.extend_from_slice(b"\"timeUnixNano\":\"");
            json::push_u64(out, ms as u64 * 1_000_000);
            out.extend_from_slice(b"\",");
        }
    }
    out.extend_from_slice(b"\"observedTimeUnixNano\":\"");
    out.extend_from_slice(observed_ns.to_string().as_bytes());
    out.extend_from_slice(b"\",\"severityNumber\":");
    json::push_u64(out, number);
    out.extend_from_slice(b",\"severityText\":\"");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\",\"body\":{\"stringValue\":");
    json::push_str(out, &String::from_utf8_lossy(line));
    out.extend_from_slice(b"},\"attributes\":[");
    let mut attrs = Attrs { out, any: false };
    attrs.str("fenfa.audit.segment", segment);
    attrs.int("fenfa.audit.offset", offset);
    if r.seq > 0 {
        attrs.int("fenfa.audit.seq", r.seq);
    }
    for (key, value) in [
        ("fenfa.request_id", Some(&r.request_id)),
        ("client.address", r.client_ip.as_ref()),
        ("fenfa.channel", r.channel.as_ref()),
        ("fenfa.app", r.app.as_ref()),
        ("fenfa.user", r.user.as_ref()),
        ("fenfa.agency", r.agency.as_ref()),
        ("fenfa.service", r.service.as_ref()),
        ("fenfa.route", r.route.as_ref()),
        ("http.request.method", Some(&r.method)),
        ("url.path", Some(&r.path)),
        ("fenfa.upstream", r.upstream.as_ref()),
        ("fenfa.denied_by", r.denied_by.as_ref()),
        ("fenfa.code", r.code.as_ref()),
        ("fenfa.reason", r.reason.as_ref()),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            attrs.str(key, v);
        }
    }
    if r.status > 0 {
        attrs.int("http.response.status_code", r.status.into());
    }
    if let Some(s) = r.upstream_status {
        attrs.int("fenfa.upstream_status", s.into());
    }
    attrs.int("fenfa.latency_us", r.latency_us);
    if let Some(d) = r.decision {
        attrs.str("fenfa.decision", d.as_str());
    }
    out.extend_from_slice(b"]}");
}

/// Appends `{"key":…,"value":{…}}` items, comma-separated.
struct Attrs<'a> {
    out: &'a mut Vec<u8>,
    any: bool,
}

impl Attrs<'_> {
    fn key(&mut self, key: &str) {
        if self.any {
            self.out.push(b',');
        }
        self.any = true;
        self.out.extend_from_slice(b"{\"key\":\"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\",\"value\":{");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.extend_from_slice(b"\"stringValue\":");
        json::push_str(self.out, value);
        self.out.extend_from_slice(b"}}");
    }

    /// OTLP's JSON encoding writes 64-bit integers as strings.
    fn int(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out.extend_from_slice(b"\"intValue\":\"");
        json::push_u64(self.out, value);
        self.out.extend_from_slice(b"\"}}");
    }
}

/// How many records a 2xx answer's `partialSuccess` says were rejected.
fn rejected(body: &[u8]) -> (u64, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (0, String::new());
    };
    let p = &v["partialSuccess"];
    let n = match &p["rejectedLogRecords"] {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        n => n.as_u64().unwrap_or(0),
    };
    (n, p["errorMessage"].as_str().unwrap_or("").to_string())
}

#[async_trait::async_trait]
impl Sink for OtlpSink {
    fn name(&self) -> &str {
        "otlp"
    }

    async fn send(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        let body = self.body(batch, SystemTime::now());
        let answer = self
            .endpoint
            .request(
                Method::POST,
                self.endpoint.url.clone(),
                self.headers.clone(),
                body,
                self.timeout,
            )
            .await?;
        let status = answer.status;
        let n = batch.records.len() as u64;
        match status {
            200..=299 => {
                let (refused, why) = rejected(&answer.body);
                if refused > 0 {
                    self.counters.refused.fetch_add(refused.min(n), Relaxed);
                    tracing::error!(refused, of = n, segment = batch.segment, offset = batch.offset, reason = %why,
                        "the OTLP collector refused audit records for good; they stay in the local trail");
                }
                Ok(())
            }
            408 | 429 | 500..=599 => Err(SinkError::Refused {
                what: "the OTLP collector",
                status,
                excerpt: answer.excerpt(),
            }),
            _ => {
                self.counters.refused.fetch_add(n, Relaxed);
                tracing::error!(status, records = n, segment = batch.segment, offset = batch.offset, answer = %answer.excerpt(),
                    "the OTLP collector refused a batch of audit records for good (not retried); they stay in the local trail");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fenfa_config::duration::HumanDuration;

    fn settings() -> AuditOtlp {
        AuditOtlp {
            url: "http://127.0.0.1:4318/v1/logs".into(),
            headers: Default::default(),
            batch_records: 100,
            interval: HumanDuration::from_secs(1),
            timeout: HumanDuration::from_secs(1),
            backoff_max: HumanDuration::from_secs(1),
            tls: Default::default(),
            insecure: false,
            max_response_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_batch_becomes_one_resource_with_a_log_record_per_audit_record() {
        let sink = OtlpSink::new(&settings(), "gw-\"1\"", Arc::default()).unwrap();
        let allowed = br#"{"time":"2024-06-01T08:30:05.123Z","request_id":"r1","node":"gw-\"1\"","client_ip":"203.0.113.7","channel":"wechat","app":"wx1","user":"u-1","method":"GET","path":"/api/a?x=***","status":200,"upstream":"10.0.0.5:80","upstream_status":200,"latency_us":1834,"bytes":12,"decision":"allowed","seq":41,"prev":"00","mac":"11"}"#;
        let denied = br#"{"time":"2024-06-01T08:30:06Z","request_id":"r2","node":"n","method":"POST","path":"/api/b","status":429,"latency_us":5,"bytes":0,"decision":"denied","denied_by":"rate-limit","code":"rate_limited","seq":42,"prev":"11","mac":"22"}"#;
        let broken = br#"{"unparsable_line":"{\"time\":"}"#;
        let records = vec![allowed.to_vec(), denied.to_vec(), broken.to_vec()];
        let batch = Batch {
            node: "gw-\"1\"",
            segment: "audit-0000000003.jsonl",
            offset: 7,
            records: &records,
        };
        let observed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let v: serde_json::Value = serde_json::from_slice(&sink.body(&batch, observed)).unwrap();
        let rl = &v["resourceLogs"][0];
        assert_eq!(
            rl["resource"]["attributes"][1],
            serde_json::json!({"key": "service.instance.id", "value": {"stringValue": "gw-\"1\""}})
        );
        assert_eq!(rl["scopeLogs"][0]["scope"]["name"], "fenfa.audit");
        let logs = rl["scopeLogs"][0]["logRecords"].as_array().unwrap();
        assert_eq!(logs.len(), 3);
        let attr = |i: usize, k: &str| {
            logs[i]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == k)
                .map(|a| a["value"].clone())
        };
        assert_eq!(logs[0]["timeUnixNano"], "1717230605123000000");
        assert_eq!(logs[0]["observedTimeUnixNano"], "1800000000000000000");
        assert_eq!(
            (&logs[0]["severityNumber"], &logs[0]["severityText"]),
            (&serde_json::json!(9), &serde_json::json!("INFO"))
        );
        // The body is the stored line, byte for byte.
        assert_eq!(
            logs[0]["body"]["stringValue"].as_str().unwrap().as_bytes(),
            allowed
        );
        assert_eq!(
            attr(0, "fenfa.audit.offset"),
            Some(serde_json::json!({"intValue": "7"}))
        );
        assert_eq!(
            attr(0, "http.response.status_code"),
            Some(serde_json::json!({"intValue": "200"}))
        );
        assert_eq!(
            attr(0, "client.address"),
            Some(serde_json::json!({"stringValue": "203.0.113.7"}))
        );
        assert_eq!(
            attr(0, "url.path"),
            Some(serde_json::json!({"stringValue": "/api/a?x=***"}))
        );
        assert_eq!(logs[1]["severityText"], "WARN");
        assert_eq!(
            attr(1, "fenfa.denied_by"),
            Some(serde_json::json!({"stringValue": "rate-limit"}))
        );
        assert_eq!(
            attr(1, "fenfa.audit.offset"),
            Some(serde_json::json!({"intValue": "8"}))
        );
        assert_eq!(attr(1, "client.address"), None);
        // A damaged line still goes out, as an error, without a time of its own.
        assert_eq!(logs[2]["severityText"], "ERROR");
        assert!(logs[2].get("timeUnixNano").is_none());
        assert_eq!(
            logs[2]["body"]["stringValue"].as_str().unwrap().as_bytes(),
            broken
        );
    }

    #[test]
    fn bad_cfgname_the_field_and_never_show_a_header_value() {
        let err = |s: &AuditOtlp| validate(s).unwrap_err().to_string();
        let mut s = settings();
        s.url = "http://collector.invalid:4318/v1/logs".into();
        assert!(err(&s).starts_with("audit.otlp.url: plain http://"));
        s.insecure = true;
        assert!(validate(&s).is_ok());
        let mut s = settings();
        s.batch_records = 0;
        assert!(err(&s).starts_with("audit.otlp.batch_records:"));
        let mut s = settings();
        s.headers
            .insert("Authorization".into(), "Bearer se\ncret".into());
        let e = err(&s);
        assert!(
            e.starts_with("audit.otlp.headers.Authorization:") && !e.contains("cret"),
            "{e}"
        );
        let mut s = settings();
        s.headers.insert("Content-Type".into(), "text/plain".into());
        assert!(err(&s).contains("set by the exporter"));
        let mut s = settings();
        s.headers.insert("bad header".into(), "x".into());
        assert!(err(&s).contains("not a valid header name"));
    }

    #[test]
    fn partial_success_counts_are_read_as_strings_or_numbers() {
        assert_eq!(
            rejected(br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too old"}}"#),
            (2, "too old".into())
        );
        assert_eq!(
            rejected(br#"{"partialSuccess":{"rejectedLogRecords":3}}"#).0,
            3
        );
        assert_eq!(rejected(b"{}").0, 0);
        assert_eq!(rejected(b"").0, 0);
    }
}
