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
use std::time::{SystemTime, UNIX_EPOCH};

use fenfa_plugin_api::{Finding, Identity};
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::json;
use fenfa_config::model::AuditSettings;

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
    /// The client's `X-Request-Id` when the gateway refused its shape and made its own id:
    /// sanitised (by the gateway).
    pub client_request_id: Option<&'a str>,
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
    /// Why the request was refused before it could be routed: set only for requests pingora's
    /// HTTP/1 parser rejected (`crate::tap`), e.g. `invalid header name`. A fixed phrase, never
    /// client bytes.
    pub reason: Option<&'a str>,
    /// A body plugin let the body pass without reading it (over its limit): `"body":"uninspected"`.
    pub body_uninspected: bool,
    /// What inspecting plugins found (`"findings":[…]`, the first [`Finding::MAX_PER_REQUEST`]).
    pub findings: &'a [Finding],
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

/// A record read back from a segment (for `audit query`). Unknown fields are ignored so that
/// older tools read newer trails.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Record {
    pub time: String,
    pub request_id: String,
    pub client_request_id: Option<String>,
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
    /// Why the HTTP parser refused the request (parser rejections only).
    pub reason: Option<String>,
    /// `uninspected` when a body plugin let the body pass unread (over its limit).
    pub body: Option<String>,
    /// What inspecting plugins found: WAF detections, masked personal data, replaced error pages.
    pub findings: Vec<RecordFinding>,
    /// Findings beyond [`Finding::MAX_PER_REQUEST`], counted but not listed.
    pub findings_dropped: Option<u64>,
    pub headers: BTreeMap<String, String>,
    pub seq: u64,
}

/// One [`Finding`] as a record holds it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RecordFinding {
    pub plugin: String,
    pub class: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(rename = "where")]
    pub location: String,
    pub action: String,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

/// The masking policy and node name: turns [`Parts`] into record bytes.
#[derive(Debug, Clone)]
pub struct Recorder {
    node: String,
    /// `,"node":"…"`, escaped once here rather than for every record.
    node_field: Vec<u8>,
    /// The request headers copied into records: lower-case name, sorted and without repeats
    /// (the order of the `headers` object), and whether the value is masked.
    headers: Vec<(http::HeaderName, bool)>,
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
        let mask: Vec<String> = settings
            .mask_headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let mut headers: Vec<(http::HeaderName, bool)> = headers
            .into_iter()
            .map(|name| {
                let masked = mask.iter().any(|m| m == name.as_str());
                (name, masked)
            })
            .collect();
        headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        headers.dedup_by(|a, b| a.0 == b.0);
        let mut node_field = b",\"node\":".to_vec();
        json::push_str(&mut node_field, node);
        Ok(Self {
            node: node.to_string(),
            node_field,
            headers,
            keep_query_values: settings.keep_query_values.clone(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The record for `p`, as one JSON object (no newline). `arrived` is when the request head
    /// was read: `now - latency`.
    ///
    /// Written by hand into one buffer (see [`super::json`]): this runs on the proxy thread for
    /// every request. Field order is the order in the file; absent optional fields are left out.
    pub fn encode(&self, p: &Parts<'_>, arrived: SystemTime) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(p, super::time::unix_ms(arrived), &mut out);
        out
    }

    /// Appends the record to `out` (the proxy's lane in the queue), with the arrival time in
    /// milliseconds since the epoch. Makes room for all of it first, so `out` grows at most once.
    fn encode_into(&self, p: &Parts<'_>, arrived_ms: i64, out: &mut Vec<u8>) {
        out.reserve(self.capacity_for(p));
        out.extend_from_slice(b"{\"time\":\"");
        super::time::push_ms(arrived_ms, out);
        out.extend_from_slice(b"\",\"request_id\":");
        json::push_str(out, p.request_id);
        if let Some(id) = p.client_request_id {
            str_field(out, "client_request_id", id);
        }
        out.extend_from_slice(&self.node_field);
        if let Some(ip) = p.client_ip {
            out.extend_from_slice(b",\"client_ip\":");
            json::push_ip(out, ip);
        }
        if let Some(id) = p.identity {
            str_field(out, "channel", &id.channel);
            str_field(out, "app", &id.app);
            str_field(out, "user", &id.user);
        }
        for (name, value) in [
            ("agency", p.agency),
            ("service", p.service),
            ("route", p.route),
        ] {
            if !value.is_empty() {
                str_field(out, name, value);
            }
        }
        str_field(out, "method", p.method);
        out.extend_from_slice(b",\"path\":\"");
        self.push_path(out, p.path, p.query);
        out.extend_from_slice(b"\",\"status\":");
        json::push_u64(out, p.status.into());
        if let Some(upstream) = p.upstream {
            str_field(out, "upstream", upstream);
        }
        if let Some(status) = p.upstream_status {
            out.extend_from_slice(b",\"upstream_status\":");
            json::push_u64(out, status.into());
        }
        out.extend_from_slice(b",\"latency_us\":");
        json::push_u64(out, p.latency_us);
        out.extend_from_slice(b",\"bytes\":");
        json::push_u64(out, p.bytes_sent);
        out.extend_from_slice(b",\"decision\":\"");
        out.extend_from_slice(p.decision().as_str().as_bytes());
        out.push(b'"');
        match (p.denied_by, p.error) {
            (Some((plugin, code)), _) => {
                str_field(out, "denied_by", plugin);
                str_field(out, "code", code);
            }
            (None, Some(code)) => str_field(out, "code", code),
            (None, None) => {}
        }
        if let Some(reason) = p.reason {
            str_field(out, "reason", reason);
        }
        if p.body_uninspected {
            out.extend_from_slice(b",\"body\":\"uninspected\"");
        }
        push_findings(out, p.findings);
        self.push_headers(out, p.headers);
        out.push(b'}');
    }

    /// Room for the whole record in one allocation: the names, punctuation and numbers take at
    /// most [`FIXED`], the strings their own length (more only when one needs escaping, rare:
    /// the buffer then grows once). Masking can lengthen a query: `a=1&b=2` → `a=***&b=***`.
    fn capacity_for(&self, p: &Parts<'_>) -> usize {
        /// Field names, quotes, commas, the time, the numbers and the decision, at their widest.
        const FIXED: usize = 372;
        let identity = p
            .identity
            .map_or(0, |i| i.channel.len() + i.app.len() + i.user.len());
        let query = p
            .query
            .map_or(0, |q| q.len() + 1 + 3 * (q.matches('=').count()));
        let denial =
            p.denied_by.map_or(0, |(a, b)| a.len() + b.len()) + p.error.map_or(0, str::len);
        let reason = p.reason.map_or(0, |r| r.len() + 12);
        let headers = if self.headers.is_empty() {
            0
        } else {
            self.headers.len() * (MAX_HEADER_VALUE + 32)
        };
        FIXED
            + self.node_field.len()
            + p.request_id.len()
            + p.client_request_id.map_or(0, |id| id.len() + 24)
            + identity
            + p.agency.len()
            + p.service.len()
            + p.route.len()
            + p.method.len()
            + (p.path.len() + query).min(MAX_PATH)
            + p.upstream.map_or(0, str::len)
            + denial
            + reason
            + headers
            + findings_len(p.findings)
    }

    /// The path and masked query, cut to [`MAX_PATH`] bytes, escaped (without quotes).
    fn push_path(&self, out: &mut Vec<u8>, path: &str, query: Option<&str>) {
        let start = out.len();
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = query {
            out.push(b'?');
            mask_query(q, &self.keep_query_values, out);
        }
        // Everything from `start` is valid UTF-8: pieces of `&str`s cut at ASCII delimiters.
        if let Some(end) = cut_at(&out[start..], MAX_PATH) {
            out.truncate(start + end);
            out.extend_from_slice("…".as_bytes());
        }
        // A request target has no quotes or control characters in practice; escape if it does.
        if json::needs_escape(&out[start..]) {
            let raw = out.split_off(start);
            json::push_escaped(out, &raw);
        }
    }

    /// `,"headers":{…}` with the configured request headers that are present (none: nothing).
    fn push_headers(&self, out: &mut Vec<u8>, headers: &HeaderMap) {
        let mut any = false;
        for (name, masked) in &self.headers {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                continue;
            }
            out.extend_from_slice(if any { b"," } else { b",\"headers\":{" });
            any = true;
            json::push_str(out, name.as_str());
            out.push(b':');
            if *masked {
                json::push_str(out, MASK);
                continue;
            }
            let mut v = String::new();
            for (i, value) in values.enumerate() {
                if i > 0 {
                    v.push_str(", ");
                }
                v.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
            truncate(&mut v, MAX_HEADER_VALUE);
            json::push_str(out, &v);
        }
        if any {
            out.push(b'}');
        }
    }

    /// For the proxy: appends the record to `out`, arrival time from the latency.
    pub fn encode_now_into(&self, p: &Parts<'_>, out: &mut Vec<u8>) {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let arrived_us = now_us.saturating_sub(p.latency_us.min(i64::MAX as u64) as i64);
        self.encode_into(p, arrived_us.max(0).div_euclid(1000), out)
    }
}

/// Appends `query` with every value replaced by `***` (keys kept; `keep` lists keys whose
/// values stay). `a=1&b&c=` becomes `a=***&b&c=***`.
pub fn mask_query(query: &str, keep: &[String], out: &mut Vec<u8>) {
    // Byte-wise: `&` and `=` are ASCII, so every cut is on a character boundary.
    for (i, pair) in query.as_bytes().split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let (k, v) = (&pair[..eq], &pair[eq + 1..]);
                out.extend_from_slice(k);
                out.push(b'=');
                if keep.iter().any(|kk| kk.as_bytes() == k) {
                    out.extend_from_slice(v);
                } else {
                    out.extend_from_slice(MASK.as_bytes());
                }
            }
            None => out.extend_from_slice(pair),
        }
    }
}

/// `,"findings":[{…},…]` and, past the cap, `,"findings_dropped":N`; nothing when empty.
fn push_findings(out: &mut Vec<u8>, findings: &[Finding]) {
    if findings.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"findings\":[");
    for (i, f) in findings.iter().take(Finding::MAX_PER_REQUEST).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"plugin\":");
        json::push_str(out, f.plugin);
        str_field(out, "class", f.class);
        if let Some(rule) = f.rule {
            str_field(out, "rule", rule);
        }
        str_field(out, "where", &f.location);
        str_field(out, "action", f.action.as_str());
        out.extend_from_slice(b",\"count\":");
        json::push_u64(out, f.count.into());
        if let Some(excerpt) = &f.excerpt {
            let end = cut_at(excerpt.as_bytes(), Finding::MAX_EXCERPT);
            out.extend_from_slice(b",\"excerpt\":");
            match end {
                Some(end) => {
                    let mut cut = excerpt[..end].to_string();
                    cut.push('…');
                    json::push_str(out, &cut);
                }
                None => json::push_str(out, excerpt),
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    if findings.len() > Finding::MAX_PER_REQUEST {
        out.extend_from_slice(b",\"findings_dropped\":");
        json::push_u64(out, (findings.len() - Finding::MAX_PER_REQUEST) as u64);
    }
}

/// `,"name":"value"`.
fn str_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    json::push_str(out, value);
}

/// Room for the listed findings: their strings plus names and punctuation.
fn findings_len(findings: &[Finding]) -> usize {
    findings
        .iter()
        .take(Finding::MAX_PER_REQUEST)
        .map(|f| {
            96 + f.plugin.len()
                + f.class.len()
                + f.rule.map_or(0, str::len)
                + f.location.len()
                + f.excerpt
                    .as_ref()
                    .map_or(0, |e| e.len().min(Finding::MAX_EXCERPT + 3))
        })
        .sum::<usize>()
        + if findings.is_empty() { 0 } else { 48 }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
fn truncate(s: &mut String, max: usize) {
    if let Some(end) = cut_at(s.as_bytes(), max) {
        s.truncate(end);
        s.push('…');
    }
}

/// Where to cut UTF-8 text longer than `max` bytes so that it ends on a character boundary and
/// the `…` that marks the cut still fits; `None` when it fits as it is.
fn cut_at(text: &[u8], max: usize) -> Option<usize> {
    if text.len() <= max {
        return None;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    // A UTF-8 continuation byte (10xxxxxx) is inside a character.
    while end > 0 && text[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    Some(end)
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
            client_request_id: None,
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
            reason: None,
            body_uninspected: false,
            findings: &[],
        }
    }

    #[test]
    fn query_values_are_masked_and_keys_kept() {
        let mut out = Vec::new();
        mask_query("a=1&b&c=&d=x=y", &[], &mut out);
        assert_eq!(out, b"a=***&b&c=***&d=***");
        let mut out = Vec::new();
        mask_query("page=2&q=secret", &["page".into()], &mut out);
        assert_eq!(out, b"page=2&q=***");
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
            crate::time::from_ms(1_717_230_605_123),
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

    fn now(r: &Recorder, p: &Parts<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode_now_into(p, &mut out);
        out
    }

    #[test]
    fn denials_name_the_plugin_and_gateway_errors_the_code() {
        let r = Recorder::new("n", &AuditSettings::default()).unwrap();
        let h = HeaderMap::new();
        let mut p = parts(&h, None);
        p.denied_by = Some(("rate-limit", "rate_limited"));
        p.error = Some("rate_limited");
        let v: serde_json::Value = serde_json::from_slice(&now(&r, &p)).unwrap();
        assert_eq!(v["decision"], "denied");
        assert_eq!(v["denied_by"], "rate-limit");
        assert_eq!(v["code"], "rate_limited");
        assert!(v.get("user").is_none());
        let mut p = parts(&h, None);
        p.error = Some("route_not_found");
        let v: serde_json::Value = serde_json::from_slice(&now(&r, &p)).unwrap();
        assert_eq!(v["decision"], "error");
        assert_eq!(v["code"], "route_not_found");
        assert!(v.get("denied_by").is_none());
    }

    /// The record format as first written with `serde_json`: the reference the hand-written
    /// encoder must reproduce byte for byte.
    #[derive(Serialize)]
    struct Out<'a> {
        time: &'a str,
        request_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_request_id: Option<&'a str>,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<&'static str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        findings: Vec<RecordFinding>,
        #[serde(skip_serializing_if = "Option::is_none")]
        findings_dropped: Option<u64>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<&'a str, String>,
    }

    /// What the serde-based encoder wrote for `p` under `settings`.
    fn reference(
        node: &str,
        settings: &AuditSettings,
        p: &Parts<'_>,
        arrived: SystemTime,
    ) -> Vec<u8> {
        let time = crate::time::format(arrived);
        let mut path = Vec::new();
        path.extend_from_slice(p.path.as_bytes());
        if let Some(q) = p.query {
            path.push(b'?');
            mask_query(q, &settings.keep_query_values, &mut path);
        }
        let mut path = String::from_utf8(path).unwrap();
        truncate(&mut path, MAX_PATH);
        let mut headers = BTreeMap::new();
        for h in &settings.headers {
            let name = h.trim().to_ascii_lowercase();
            let values: Vec<String> = p
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if values.is_empty() {
                continue;
            }
            let masked = settings
                .mask_headers
                .iter()
                .any(|m| m.to_ascii_lowercase() == name);
            let mut value = if masked {
                MASK.to_string()
            } else {
                values.join(", ")
            };
            truncate(&mut value, MAX_HEADER_VALUE);
            headers.insert(name, value);
        }
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let (denied_by, code) = match (p.denied_by, p.error) {
            (Some((plugin, code)), _) => (Some(plugin), Some(code)),
            (None, Some(code)) => (None, Some(code)),
            (None, None) => (None, None),
        };
        fn non_empty(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        serde_json::to_vec(&Out {
            time: &time,
            request_id: p.request_id,
            client_request_id: p.client_request_id,
            node,
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
            reason: p.reason,
            body: p.body_uninspected.then_some("uninspected"),
            findings: p
                .findings
                .iter()
                .take(Finding::MAX_PER_REQUEST)
                .map(|f| RecordFinding {
                    plugin: f.plugin.into(),
                    class: f.class.into(),
                    rule: f.rule.map(Into::into),
                    location: f.location.clone(),
                    action: f.action.as_str().into(),
                    count: f.count.into(),
                    excerpt: f.excerpt.clone().map(|mut e| {
                        truncate(&mut e, Finding::MAX_EXCERPT);
                        e
                    }),
                })
                .collect(),
            findings_dropped: (p.findings.len() > Finding::MAX_PER_REQUEST)
                .then(|| (p.findings.len() - Finding::MAX_PER_REQUEST) as u64),
            headers,
        })
        .unwrap()
    }

    #[test]
    fn the_hand_written_record_is_byte_for_byte_what_serde_json_writes() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet: Vec<char> = "aZ09/-_.~%\"\\\u{1}\n中é😀 ".chars().collect();
        let text = |rng: &mut fastrand::Rng, max: usize| -> String {
            let len = rng.usize(0..=max);
            (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect()
        };
        for round in 0..400 {
            let settings = AuditSettings {
                headers: vec![
                    "X-Trace".into(),
                    "user-agent".into(),
                    "authorization".into(),
                    "x-trace".into(),
                ],
                keep_query_values: vec!["page".into()],
                ..AuditSettings::default()
            };
            let node = text(&mut rng, 12);
            let r = Recorder::new(&node, &settings).unwrap();
            let mut h = HeaderMap::new();
            if rng.bool() {
                h.append("user-agent", "MiniProgram/1.0 \"q\"".parse().unwrap());
                h.append(
                    "user-agent",
                    http::HeaderValue::from_bytes(b"caf\xc3\xa9 \xff").unwrap(),
                );
            }
            if rng.bool() {
                h.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
            }
            if rng.bool() {
                h.insert("x-trace", "y".repeat(rng.usize(0..400)).parse().unwrap());
            }
            let id = Identity {
                user: text(&mut rng, 20),
                channel: text(&mut rng, 8),
                app: text(&mut rng, 8),
                token_id: None,
                expires_at: 0,
            };
            let path = format!(
                "/{}",
                text(&mut rng, if round % 10 == 0 { 3000 } else { 40 })
            );
            let query = match rng.u8(0..4) {
                0 => None,
                1 => Some("page=2&idcard=110101199001011234&flag".to_string()),
                _ => Some(format!(
                    "{}={}&page={}",
                    text(&mut rng, 5),
                    text(&mut rng, 5),
                    text(&mut rng, 900)
                )),
            };
            let agency = text(&mut rng, 6);
            let request_id = text(&mut rng, 16);
            let client_id = text(&mut rng, 10);
            let findings: Vec<Finding> = (0..[0, 0, 1, 3, 20][rng.usize(..5)])
                .map(|i| Finding {
                    plugin: "waf",
                    class: if i % 2 == 0 { "sqli" } else { "x\"ss" },
                    rule: rng.bool().then_some("942100"),
                    location: text(&mut rng, 20),
                    action: fenfa_plugin_api::FindingAction::Blocked,
                    count: rng.u32(..),
                    excerpt: rng.bool().then(|| text(&mut rng, 100)),
                })
                .collect();
            let p = Parts {
                request_id: &request_id,
                client_request_id: rng.bool().then_some(client_id.as_str()),
                client_ip: match rng.u8(0..3) {
                    0 => None,
                    1 => Some(IpAddr::from([rng.u8(..), 0, 113, rng.u8(..)])),
                    _ => Some("2001:db8::17".parse().unwrap()),
                },
                identity: rng.bool().then_some(&id),
                agency: &agency,
                service: if rng.bool() { "permits" } else { "" },
                route: if rng.bool() { "r\"1" } else { "" },
                method: "GET",
                path: &path,
                query: query.as_deref(),
                headers: &h,
                status: rng.u16(100..600),
                upstream: rng.bool().then_some("127.0.0.1:8001"),
                upstream_status: rng.bool().then(|| rng.u16(100..600)),
                latency_us: rng.u64(..),
                bytes_sent: rng.u64(..),
                denied_by: rng.bool().then_some(("rate-limit", "rate_limited")),
                error: rng.bool().then_some("upstream_unavailable"),
                reason: rng.bool().then_some("invalid header \"name\""),
                body_uninspected: rng.bool(),
                findings: &findings,
            };
            let at = crate::time::from_ms(rng.i64(0..4_102_444_800_000));
            let ours = r.encode(&p, at);
            let want = reference(&node, &settings, &p, at);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&want),
                "round {round}"
            );
        }
    }

    #[test]
    fn a_record_fits_the_buffer_it_is_first_given() {
        // Widest fixed parts: every optional field present, IPv6, the longest numbers and
        // decision, a masked query longer than the original.
        let r = Recorder::new("node-a", &settings()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("user-agent", "x".repeat(400).parse().unwrap());
        h.insert("authorization", "Bearer t".parse().unwrap());
        let id = Identity {
            user: "u".into(),
            channel: "c".into(),
            app: "a".into(),
            token_id: None,
            expires_at: 0,
        };
        let mut p = parts(&h, Some(&id));
        p.client_ip = Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
        p.query = Some("a=1&b=2&c=3&d");
        p.latency_us = u64::MAX;
        p.bytes_sent = u64::MAX;
        p.status = u16::MAX;
        p.upstream_status = Some(u16::MAX);
        let at = crate::time::from_ms(4_102_444_800_000);
        for denied in [false, true] {
            if denied {
                p.denied_by = Some(("rate-limit", "rate_limited"));
                p.error = Some("rate_limited");
                p.reason = Some("conflicting Content-Length values");
            }
            for r in [
                &r,
                &Recorder::new("node-a", &AuditSettings::default()).unwrap(),
            ] {
                let first = r.capacity_for(&p);
                let out = r.encode(&p, at);
                assert!(out.len() <= first, "{} > {first}", out.len());
                assert_eq!(out.capacity(), first, "the buffer grew");
            }
        }
        // And without the options, it is not wasteful.
        let h = HeaderMap::new();
        let p = parts(&h, None);
        let out = Recorder::new("node-a", &AuditSettings::default())
            .unwrap()
            .encode(&p, at);
        assert!(
            out.capacity() < out.len() + 300,
            "{} for {}",
            out.capacity(),
            out.len()
        );
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let mut s = "é".repeat(3000);
        truncate(&mut s, MAX_PATH);
        assert!(s.len() <= MAX_PATH && s.ends_with('…'));
    }
}
