//! One audit record: what the proxy knows about a finished request, turned into one JSON object.
//!
//! [`Parts`] borrows everything from the request context, so building it costs nothing;
//! [`Recorder::encode`] applies the masking policy and serialises. The writer later appends
//! `seq`, `prev` and `mac` (see [`super::chain`]), which is why the encoded object must stay a
//! flat JSON object ending in `}`.
//!
//! What a record may never contain: a token, a secret, a query *value* (unless an operator listed
//! its key in `keep_query_values`), or a header value that is listed in `mask_headers`. The user
//! is the identity service's pseudonymous `sub`, never the token it came in.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use fenfa_plugins::Identity;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::model::AuditSettings;

/// What replaces a masked value.
pub const MASK: &str = "***";
/// Longest path (with its masked query) kept in a record; longer ones are cut and end in `…`.
pub const MAX_PATH: usize = 2048;
/// Longest recorded header value.
pub const MAX_HEADER_VALUE: usize = 256;

/// How the request ended, for auditors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Passed every check; the status is whatever the upstream (or client) made of it.
    Allowed,
    /// A plugin answered instead of the upstream (`denied_by` names it, `code` says why).
    Denied,
    /// The gateway itself answered with an error (`code`): no route, bad request, upstream down…
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Error => "error",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allowed" => Ok(Decision::Allowed),
            "denied" => Ok(Decision::Denied),
            "error" => Ok(Decision::Error),
            _ => Err(format!(
                "`{s}` is not a decision; expected allowed, denied or error"
            )),
        }
    }
}

/// Everything a record is made of, borrowed from the request context.
#[derive(Debug)]
pub struct Parts<'a> {
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    /// The verified caller, if an authentication plugin set one.
    pub identity: Option<&'a Identity>,
    pub agency: &'a str,
    pub service: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    /// The path as the client sent it (without the query).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub status: u16,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub latency_us: u64,
    pub bytes_sent: u64,
    /// `(plugin, code)` when a plugin answered.
    pub denied_by: Option<(&'a str, &'a str)>,
    /// The gateway error code when the gateway answered.
    pub error: Option<&'a str>,
}

impl Parts<'_> {
    pub fn decision(&self) -> Decision {
        if self.denied_by.is_some() {
            Decision::Denied
        } else if self.error.is_some() {
            Decision::Error
        } else {
            Decision::Allowed
        }
    }
}

/// The record as serialised; field order is the order in the file.
#[derive(Serialize)]
struct Out<'a> {
    time: &'a str,
    request_id: &'a str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
    latency_us: u64,
    bytes: u64,
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    denied_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'a str, String>,
}

/// A record read back from a segment (for `audit query`). Unknown fields are ignored so that
/// older tools read newer trails.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Record {
    pub time: String,
    pub request_id: String,
    pub node: String,
    pub client_ip: Option<String>,
    pub channel: Option<String>,
    pub app: Option<String>,
    pub user: Option<String>,
    pub agency: Option<String>,
    pub service: Option<String>,
    pub route: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub upstream: Option<String>,
    pub upstream_status: Option<u16>,
    pub latency_us: u64,
    pub bytes: u64,
    pub decision: Option<Decision>,
    pub denied_by: Option<String>,
    pub code: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub seq: u64,
}

/// The masking policy and node name: turns [`Parts`] into record bytes.
#[derive(Debug, Clone)]
pub struct Recorder {
    node: String,
    /// Lower-case names of the request headers copied into records.
    headers: Vec<http::HeaderName>,
    /// Lower-case names whose values are always replaced by `***`.
    mask_headers: Vec<String>,
    /// Query keys whose values are kept verbatim.
    keep_query_values: Vec<String>,
}

impl Recorder {
    pub fn new(node: &str, settings: &AuditSettings) -> Result<Self, String> {
        let headers = settings
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                http::HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("audit.headers[{i}]: `{h}` is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            node: node.to_string(),
            headers,
            mask_headers: settings
                .mask_headers
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            keep_query_values: settings.keep_query_values.clone(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The record for `p`, as one JSON object (no newline). `arrived` is when the request head
    /// was read: `now - latency`.
    pub fn encode(&self, p: &Parts<'_>, arrived: SystemTime) -> Vec<u8> {
        let time = super::time::format(arrived);
        let mut path = String::with_capacity(p.path.len() + p.query.map_or(0, |q| q.len() + 1));
        path.push_str(p.path);
        if let Some(q) = p.query {
            path.push('?');
            mask_query(q, &self.keep_query_values, &mut path);
        }
        truncate(&mut path, MAX_PATH);
        let mut headers = BTreeMap::new();
        for name in &self.headers {
            let mut values = p.headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                continue;
            }
            let value = if self.mask_headers.iter().any(|m| m == name.as_str()) {
                MASK.to_string()
            } else {
                let mut v = values
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ");
                truncate(&mut v, MAX_HEADER_VALUE);
                v
            };
            headers.insert(name.as_str(), value);
        }
        fn non_empty(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        let (denied_by, code) = match (p.denied_by, p.error) {
            (Some((plugin, code)), _) => (Some(plugin), Some(code)),
            (None, Some(code)) => (None, Some(code)),
            (None, None) => (None, None),
        };
        let out = Out {
            time: &time,
            request_id: p.request_id,
            node: &self.node,
            client_ip: p.client_ip,
            channel: p.identity.map(|i| i.channel.as_str()),
            app: p.identity.map(|i| i.app.as_str()),
            user: p.identity.map(|i| i.user.as_str()),
            agency: non_empty(p.agency),
            service: non_empty(p.service),
            route: non_empty(p.route),
            method: p.method,
            path: &path,
            status: p.status,
            upstream: p.upstream,
            upstream_status: p.upstream_status,
            latency_us: p.latency_us,
            bytes: p.bytes_sent,
            decision: p.decision(),
            denied_by,
            code,
            headers,
        };
        let mut buf = Vec::with_capacity(384 + path.len());
        // Serialising a struct of strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut buf, &out);
        buf
    }

    /// Convenience for the proxy: arrival time from the latency.
    pub fn encode_now(&self, p: &Parts<'_>) -> Vec<u8> {
        let arrived = SystemTime::now()
            .checked_sub(Duration::from_micros(p.latency_us))
            .unwrap_or_else(SystemTime::now);
        self.encode(p, arrived)
    }
}

/// Appends `query` with every value replaced by `***` (keys kept; `keep` lists keys whose
/// values stay). `a=1&b&c=` becomes `a=***&b&c=***`.
pub fn mask_query(query: &str, keep: &[String], out: &mut String) {
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) => {
                out.push_str(k);
                out.push('=');
                if keep.iter().any(|kk| kk == k) {
                    out.push_str(v);
                } else {
                    out.push_str(MASK);
                }
            }
            None => out.push_str(pair),
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuditSettings {
        AuditSettings {
            headers: vec!["User-Agent".into(), "authorization".into()],
            ..AuditSettings::default()
        }
    }

    fn parts<'a>(headers: &'a HeaderMap, identity: Option<&'a Identity>) -> Parts<'a> {
        Parts {
            request_id: "r-1",
            client_ip: Some("10.1.2.3".parse().unwrap()),
            identity,
            agency: "tax",
            service: "permits",
            route: "permits-api",
            method: "GET",
            path: "/api/permits",
            query: Some("idcard=110101199001011234&page=2&flag"),
            headers,
            status: 200,
            upstream: Some("127.0.0.1:8001"),
            upstream_status: Some(200),
            latency_us: 1234,
            bytes_sent: 99,
            denied_by: None,
            error: None,
        }
    }

    #[test]
    fn query_values_are_masked_and_keys_kept() {
        let mut out = String::new();
        mask_query("a=1&b&c=&d=x=y", &[], &mut out);
        assert_eq!(out, "a=***&b&c=***&d=***");
        let mut out = String::new();
        mask_query("page=2&q=secret", &["page".into()], &mut out);
        assert_eq!(out, "page=2&q=***");
    }

    #[test]
    fn a_record_has_every_field_and_no_secret() {
        let r = Recorder::new("node-a", &settings()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("user-agent", "MiniProgram/1.0".parse().unwrap());
        h.insert(
            "authorization",
            "Bearer eyJhbGciOi.secret.sig".parse().unwrap(),
        );
        let id = Identity {
            user: "u-42".into(),
            channel: "wechat".into(),
            app: "wx123".into(),
            token_id: Some("jti-1".into()),
            expires_at: 0,
        };
        let bytes = r.encode(
            &parts(&h, Some(&id)),
            super::super::time::from_ms(1_717_230_605_123),
        );
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("eyJ"), "{text}");
        assert!(!text.contains("110101199001011234"), "{text}");
        assert!(!text.contains("jti-1"), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["time"], "2024-06-01T08:30:05.123Z");
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["client_ip"], "10.1.2.3");
        assert_eq!(v["user"], "u-42");
        assert_eq!(v["channel"], "wechat");
        assert_eq!(v["app"], "wx123");
        assert_eq!(v["agency"], "tax");
        assert_eq!(v["path"], "/api/permits?idcard=***&page=***&flag");
        assert_eq!(v["upstream"], "127.0.0.1:8001");
        assert_eq!(v["decision"], "allowed");
        assert_eq!(v["headers"]["user-agent"], "MiniProgram/1.0");
        assert_eq!(v["headers"]["authorization"], "***");
        assert!(text.starts_with('{') && text.ends_with('}'));
        let back: Record = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.decision, Some(Decision::Allowed));
    }

    #[test]
    fn denials_name_the_plugin_and_gateway_errors_the_code() {
        let r = Recorder::new("n", &AuditSettings::default()).unwrap();
        let h = HeaderMap::new();
        let mut p = parts(&h, None);
        p.denied_by = Some(("rate-limit", "rate_limited"));
        p.error = Some("rate_limited");
        let v: serde_json::Value = serde_json::from_slice(&r.encode_now(&p)).unwrap();
        assert_eq!(v["decision"], "denied");
        assert_eq!(v["denied_by"], "rate-limit");
        assert_eq!(v["code"], "rate_limited");
        assert!(v.get("user").is_none());
        let mut p = parts(&h, None);
        p.error = Some("route_not_found");
        let v: serde_json::Value = serde_json::from_slice(&r.encode_now(&p)).unwrap();
        assert_eq!(v["decision"], "error");
        assert_eq!(v["code"], "route_not_found");
        assert!(v.get("denied_by").is_none());
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let mut s = "é".repeat(3000);
        truncate(&mut s, MAX_PATH);
        assert!(s.len() <= MAX_PATH && s.ends_with('…'));
    }
}
