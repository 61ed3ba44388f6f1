//! `waf`: a web application firewall for the routes that list it.
//!
//! It looks for SQL injection, cross-site scripting, path traversal, command injection, remote
//! file inclusion and protocol abuse (CR/LF injection, smuggled requests) in
//!
//! - the path, every query parameter name and value, the configured headers (default:
//!   `User-Agent`, `Referer`, `X-Forwarded-Host`, `X-Original-URL`, `X-Rewrite-URL`) and each
//!   cookie — in the request phase;
//! - the body (form fields, JSON strings and keys, multipart text parts, XML text, CDATA and
//!   attribute values, other text) — in the
//!   buffered request-body phase, up to `body.limit` bytes (default 64 KiB; over it the body
//!   passes uninspected and the audit record says so, or is refused with 413).
//!
//! Every value is first decoded the way a backend or browser might ([`decode`]): URL encoding
//! (also double, `%u`, overlong UTF-8), `+`, HTML entities, NUL bytes, SQL comments; JSON
//! escapes are undone by the JSON parser. Then Fenfa's own class rules ([`rules`], one compiled
//! `RegexSet` per instance) and libinjection's SQL and HTML5 tokenizers ([`sqli`], [`xss`])
//! judge it, in that order (a rule names the class most precisely). The first match per value
//! is a detection.
//!
//! Config: `{ mode: block|monitor, paranoia: 1..4, exclusions: [{ where, rule? }],
//! body: { limit, over_limit: pass|reject }, headers: [...] }` ([`config`]). In `block` mode
//! the first detection answers `403 waf_blocked`; in `monitor` mode the request goes on. Either
//! way each detection is a [`Finding`] (`plugin: waf`, class, rule, location, redacted excerpt)
//! that the gateway writes into the audit record and counts in `fenfa_findings_total`.
//!
//! The plugin never blocks on I/O and never panics on request data (engine panics are caught,
//! see [`sqli`]). See `docs/plugins/waf.md`.

pub mod body;
pub mod config;
pub mod decode;
pub mod rules;
pub mod sqli;
pub mod xss;

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use crate::contract::{
    BodyNeed, Finding, FindingAction, Flow, Plugin, PluginFactory, Reply, RequestCtx, RequestView,
    SchemaError,
};
use body::BodyKind;
use config::{Mode, Settings};
use rules::{Class, Compiled, Scope};

/// After authentication and channel checks (2600, 2550): a caller who may not call at all is
/// refused before the WAF spends time on the request, and the audit record of a detection names
/// the caller. Before the size and rate limits, so an attack neither holds a concurrency slot
/// nor spends the caller's budget.
pub const PRIORITY: i32 = 2500;

/// The reply's code in the error body, logs and the audit record.
pub const BLOCKED_CODE: &str = "waf_blocked";

/// Rule ids of the engines and framing checks (besides those of [`rules`]).
pub(crate) const ENGINE_RULES: &[&str] = &[
    "proto-te-and-cl",
    "proto-transfer-encoding",
    "proto-content-length",
    "sqli-libinjection",
    "sqli-engine-fault",
    "xss-libinjection",
    "xss-engine-fault",
];

/// Longest excerpt produced, in characters (the gateway keeps at most 64 bytes).
const EXCERPT_CHARS: usize = 48;

/// One detection: what, which rule, where, and a redacted excerpt of the decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub class: Class,
    pub rule: &'static str,
    pub location: String,
    pub excerpt: String,
}

/// A configured `waf` instance: its settings, and its engines compiled once.
#[derive(Debug)]
pub struct Waf {
    settings: Settings,
    rules: Compiled,
    xss: xss::Xss,
}

/// The request's body kind, remembered from the request phase for the body phase.
#[derive(Debug, Clone)]
struct PendingBody(BodyKind);

/// Where a value was found; rendered to a string only when something is detected there.
#[derive(Debug, Clone, Copy)]
enum Loc<'a> {
    Path,
    Query(&'a str),
    Form(&'a str),
    Header(&'a str),
    Cookie(&'a str),
    Json(&'a [Seg<'a>]),
    Body,
}

#[derive(Debug, Clone)]
enum Seg<'a> {
    /// Borrowed from the body unless the key had escapes.
    Key(Cow<'a, str>),
    Index(usize),
}

impl Loc<'_> {
    fn render(&self) -> String {
        match self {
            Loc::Path => "path".to_owned(),
            Loc::Query(n) => format!("query:{}", redact_name(n)),
            Loc::Form(n) => format!("form:{}", redact_name(n)),
            Loc::Header(n) => format!("header:{n}"),
            Loc::Cookie(n) => format!("cookie:{}", redact_name(n)),
            Loc::Body => "body".to_owned(),
            Loc::Json(segs) => {
                let mut s = String::from("body:$");
                for seg in segs.iter() {
                    match seg {
                        Seg::Key(k) => {
                            s.push('.');
                            s.push_str(&redact_name(k));
                        }
                        Seg::Index(i) => {
                            s.push('[');
                            s.push_str(&i.to_string());
                            s.push(']');
                        }
                    }
                }
                s
            }
        }
    }
}

/// A field name as it may appear in a finding's location: attacker-controlled, so it gets the
/// excerpt's redaction and a length cap.
fn redact_name(name: &str) -> Cow<'_, str> {
    if name.len() <= 32 && !needs_redaction(name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(redact(name, 32))
    }
}

fn needs_redaction(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars() {
        if c.is_control() {
            return true;
        }
        if c.is_ascii_digit() {
            run += 1;
            if run >= 6 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// A short excerpt of `s` for the security team: at most `max` characters, control characters
/// as spaces, and every run of 6 or more digits masked with `*` (resident ID, mobile and card
/// numbers never reach the audit trail).
pub fn redact(s: &str, max: usize) -> String {
    let chars: Vec<char> = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // Look past the cut so a digit run split by it is still masked.
    let tail_digits = s.chars().skip(max).take_while(char::is_ascii_digit).count();
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if !c.is_ascii_digit() {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
        let mut run = i - start;
        if i == chars.len() {
            run += tail_digits;
        }
        if run >= 6 {
            out.extend(std::iter::repeat_n('*', i - start));
        } else {
            out.extend(chars.get(start..i).unwrap_or_default());
        }
    }
    out
}

/// Collects detections for one request, up to `limit`.
struct Scanner<'w> {
    waf: &'w Waf,
    found: Vec<Detection>,
    limit: usize,
}

impl<'w> Scanner<'w> {
    fn new(waf: &'w Waf, limit: usize) -> Self {
        Self {
            waf,
            found: Vec::new(),
            limit,
        }
    }

    fn full(&self) -> bool {
        self.found.len() >= self.limit
    }

    /// Records a detection unless an exclusion quiets it. `loc_str` caches the rendered
    /// location across the candidate hits of one value.
    fn hit(
        &mut self,
        loc: Loc<'_>,
        loc_str: &mut Option<String>,
        class: Class,
        rule: &'static str,
        text: &str,
    ) -> bool {
        if self.full() {
            // The cap is reached: report "handled" so the caller stops looking at this value.
            return true;
        }
        let location = loc_str.get_or_insert_with(|| loc.render());
        if self
            .waf
            .settings
            .exclusions
            .iter()
            .any(|e| e.quiets(location, class, rule))
        {
            return false;
        }
        self.found.push(Detection {
            class,
            rule,
            location: location.clone(),
            excerpt: redact(text, EXCERPT_CHARS),
        });
        true
    }

    /// Judges one value (already form-decoded where the format says so).
    fn value(&mut self, scope: Scope, loc: Loc<'_>, raw: &str) {
        self.value_encoded(scope, loc, raw, None);
    }

    /// Like [`Scanner::value`], for a value that was form-decoded from `encoded`: the rules also
    /// see the encoded form, where evasive escapes (`%%35%63`, `%c0%9v`) are still visible.
    fn value_encoded(&mut self, scope: Scope, loc: Loc<'_>, raw: &str, encoded: Option<&str>) {
        if self.full() || raw.is_empty() {
            return;
        }
        let norm = decode::normalize(raw);
        let mut loc_str = None;
        let waf = self.waf;
        // The class rules first: they name the class precisely (a traversal that also parses
        // as SQL is reported as traversal); the engines then catch what no rule describes.
        let stripped = decode::strip_sql_comments(&norm);
        let mut texts: [Option<&str>; 4] = [Some(&norm), None, None, None];
        if *stripped != *norm {
            texts[1] = Some(&stripped);
        }
        if *raw != *norm {
            texts[2] = Some(raw);
        }
        if encoded.is_some_and(|e| e != raw) {
            texts[3] = encoded;
        }
        for text in texts.into_iter().flatten() {
            if !waf.rules.is_match(scope, text) {
                continue;
            }
            for h in waf.rules.matches(scope, text) {
                if self.hit(loc, &mut loc_str, h.class, h.rule, text) {
                    return;
                }
            }
        }
        // Markup is judged as markup first, so `<iframe srcdoc="…">` is reported as XSS even
        // though its quotes also parse as SQL.
        let markup_first = norm.contains('<');
        for engine in if markup_first { [1, 0] } else { [0, 1] } {
            let (verdict, class, found, fault) = if engine == 0 {
                (
                    sqli::detect(&norm),
                    Class::Sqli,
                    "sqli-libinjection",
                    "sqli-engine-fault",
                )
            } else {
                (
                    waf.xss.detect(&norm),
                    Class::Xss,
                    "xss-libinjection",
                    "xss-engine-fault",
                )
            };
            let rule = match verdict {
                sqli::Verdict::Clean => continue,
                sqli::Verdict::Injection => found,
                sqli::Verdict::Fault => fault,
            };
            if self.hit(loc, &mut loc_str, class, rule, &norm) {
                return;
            }
        }
    }

    /// Message framing that only request smuggling produces: `Transfer-Encoding` together with
    /// `Content-Length`, a transfer coding other than `chunked`, or `Content-Length` headers
    /// that disagree.
    fn framing(&mut self, headers: &http::HeaderMap) {
        use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
        let te: Vec<&[u8]> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let mut cl = headers.get_all(CONTENT_LENGTH).iter().map(|v| v.as_bytes());
        let first_cl = cl.next();
        let mut loc_str = None;
        if !te.is_empty() && first_cl.is_some() {
            self.hit(
                Loc::Header("transfer-encoding"),
                &mut loc_str,
                Class::Protocol,
                "proto-te-and-cl",
                "Transfer-Encoding with Content-Length",
            );
        } else if te.iter().any(|v| {
            !String::from_utf8_lossy(v)
                .trim()
                .eq_ignore_ascii_case("chunked")
        }) || te.len() > 1
        {
            let shown = te
                .first()
                .map(|v| String::from_utf8_lossy(v))
                .unwrap_or_default();
            self.hit(
                Loc::Header("transfer-encoding"),
                &mut loc_str,
                Class::Protocol,
                "proto-transfer-encoding",
                &shown,
            );
        } else if let Some(first) = first_cl {
            if cl.any(|v| v != first) {
                self.hit(
                    Loc::Header("content-length"),
                    &mut loc_str,
                    Class::Protocol,
                    "proto-content-length",
                    "conflicting Content-Length headers",
                );
            }
        }
    }

    /// `a=1&b=2`, each name and value form-decoded.
    fn pairs(&mut self, s: &str, form: bool) {
        for pair in s.split('&') {
            if self.full() {
                return;
            }
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let encoded = value;
            let name = decode::form_decode(name);
            let value = decode::form_decode(value);
            let loc = if form {
                Loc::Form(&name)
            } else {
                Loc::Query(&name)
            };
            self.value(Scope::Value, loc, &name);
            self.value_encoded(Scope::Value, loc, &value, Some(encoded));
        }
    }

    fn path(&mut self, path: &str) {
        let norm = decode::normalize(path);
        let once = decode::url_decode_once(path);
        let mut loc_str = None;
        let waf = self.waf;
        for text in [&*norm, &*once, path] {
            if !waf.rules.is_match(Scope::Path, text) {
                continue;
            }
            if let Some(h) = waf.rules.matches(Scope::Path, text).next() {
                if self.hit(Loc::Path, &mut loc_str, h.class, h.rule, text) {
                    return;
                }
            }
        }
        for seg in norm.split('/') {
            if self.full() {
                return;
            }
            if seg.is_empty() {
                continue;
            }
            if sqli::detect(seg) == sqli::Verdict::Injection
                && self.hit(
                    Loc::Path,
                    &mut loc_str,
                    Class::Sqli,
                    "sqli-libinjection",
                    seg,
                )
            {
                return;
            }
            if waf.xss.detect(seg) == xss::Verdict::Injection
                && self.hit(Loc::Path, &mut loc_str, Class::Xss, "xss-libinjection", seg)
            {
                return;
            }
        }
    }

    fn cookies(&mut self, header: &str) {
        for c in header.split(';') {
            if self.full() {
                return;
            }
            let (name, value) = c.split_once('=').unwrap_or((c, ""));
            let name = name.trim();
            let value = value.trim().trim_matches('"');
            self.value(Scope::Value, Loc::Cookie(name), name);
            self.value(Scope::Value, Loc::Cookie(name), value);
        }
    }

    /// Walks a JSON document as it is parsed (no tree is built: strings without escapes are
    /// inspected where they lie in the body), key by key and value by value. `false` if `body` is
    /// not one JSON document; detections made before the parser failed are then dropped, so
    /// that the caller's whole-body scan is the only judgement of it.
    fn json(&mut self, body: &[u8]) -> bool {
        let before = self.found.len();
        let mut de = serde_json::Deserializer::from_slice(body);
        let mut path = Vec::new();
        let walked = JsonWalk {
            scanner: self,
            path: &mut path,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if walked.is_err() {
            self.found.truncate(before);
        }
        walked.is_ok()
    }

    fn body(&mut self, kind: &BodyKind, body: &[u8]) {
        match kind {
            BodyKind::Binary => {}
            BodyKind::Form => self.pairs(&String::from_utf8_lossy(body), true),
            BodyKind::Json => {
                if !self.json(body) {
                    self.value(Scope::Value, Loc::Body, &String::from_utf8_lossy(body))
                }
            }
            BodyKind::Multipart(boundary) => {
                let parts = body::multipart(body, boundary);
                if parts.is_empty() {
                    self.value(Scope::Value, Loc::Body, &String::from_utf8_lossy(body));
                }
                for p in parts {
                    if let Some(f) = p.filename {
                        self.value(Scope::Value, Loc::Form(p.name), f);
                    }
                    if p.is_text {
                        self.value(
                            Scope::Value,
                            Loc::Form(p.name),
                            &String::from_utf8_lossy(p.content),
                        );
                    }
                }
            }
            BodyKind::Xml => {
                let text = String::from_utf8_lossy(body);
                for v in body::xml_values(&text) {
                    self.value(Scope::Value, Loc::Body, v);
                }
            }
            BodyKind::Text => {
                let first = body.iter().find(|b| !b.is_ascii_whitespace());
                if matches!(first, Some(b'{' | b'[')) && self.json(body) {
                    return;
                }
                self.value(Scope::Value, Loc::Body, &String::from_utf8_lossy(body))
            }
        }
    }
}

/// A [`Scanner`] fed by serde_json's parser: every string, and every object key, is judged
/// with its JSON path.
struct JsonWalk<'s, 'w, 'de> {
    scanner: &'s mut Scanner<'w>,
    path: &'s mut Vec<Seg<'de>>,
}

impl<'de> DeserializeSeed<'de> for JsonWalk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonWalk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.scanner.value(Scope::Value, Loc::Json(self.path), v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for i in 0.. {
            self.path.push(Seg::Index(i));
            let more = seq.next_element_seed(JsonWalk {
                scanner: &mut *self.scanner,
                path: &mut *self.path,
            })?;
            self.path.pop();
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            self.path.push(Seg::Key(key));
            if let Some(Seg::Key(k)) = self.path.last() {
                let k = k.clone();
                self.scanner.value(Scope::Value, Loc::Json(self.path), &k);
            }
            map.next_value_seed(JsonWalk {
                scanner: &mut *self.scanner,
                path: &mut *self.path,
            })?;
            self.path.pop();
        }
        Ok(())
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl Waf {
    /// Builds an instance from its `config` (errors name the field).
    pub fn from_config(config: &serde_json::Value) -> Result<Self, SchemaError> {
        let settings = Settings::parse(config)?;
        let rules = Compiled::new(settings.paranoia)
            .map_err(|e| SchemaError::new("", format!("internal rule error: {e}")))?;
        let xss = xss::Xss::new()
            .map_err(|e| SchemaError::new("", format!("internal rule error: {e}")))?;
        Ok(Self {
            settings,
            rules,
            xss,
        })
    }

    fn limit(&self) -> usize {
        match self.settings.mode {
            Mode::Block => 1,
            Mode::Monitor => Finding::MAX_PER_REQUEST,
        }
    }

    /// Inspects the request head: framing, path, query, configured headers and cookies.
    pub fn inspect_head(&self, req: &RequestView<'_>) -> Vec<Detection> {
        let mut s = Scanner::new(self, self.limit());
        s.framing(req.headers);
        s.path(req.path);
        if let Some(q) = req.query {
            s.pairs(q, false);
        }
        for name in &self.settings.headers {
            for v in req.headers.get_all(name.as_str()) {
                let text = String::from_utf8_lossy(v.as_bytes());
                if name == "cookie" {
                    s.cookies(&text);
                } else {
                    s.value(Scope::Header, Loc::Header(name), &text);
                }
            }
        }
        s.found
    }

    /// Inspects a request body of the given kind.
    pub fn inspect_body(&self, kind: &BodyKind, body: &[u8]) -> Vec<Detection> {
        let mut s = Scanner::new(self, self.limit());
        if !body.is_empty() {
            s.body(kind, body);
        }
        s.found
    }

    /// Records the detections as findings and, in block mode, answers 403.
    fn decide(&self, ctx: &mut RequestCtx, found: Vec<Detection>) -> Flow {
        let Some(first_class) = found.first().map(|d| d.class) else {
            return Flow::Continue;
        };
        let action = match self.settings.mode {
            Mode::Block => FindingAction::Blocked,
            Mode::Monitor => FindingAction::Logged,
        };
        for d in found {
            ctx.findings.push(Finding {
                plugin: NAME,
                class: d.class.as_str(),
                rule: Some(d.rule),
                location: d.location,
                action,
                count: 1,
                excerpt: Some(d.excerpt),
            });
        }
        match self.settings.mode {
            Mode::Monitor => Flow::Continue,
            Mode::Block => Flow::Respond(Reply::new(
                StatusCode::FORBIDDEN,
                BLOCKED_CODE,
                format!(
                    "the request was refused by the web application firewall ({})",
                    first_class.as_str()
                ),
            )),
        }
    }
}

/// Whether the request announces a body.
fn has_body(req: &RequestView<'_>) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

const NAME: &str = "waf";

impl Plugin for Waf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn request(&self, req: &RequestView<'_>, ctx: &mut RequestCtx) -> Flow {
        let found = self.inspect_head(req);
        if has_body(req) {
            let ct = req
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let kind = BodyKind::from_content_type(ct);
            if kind != BodyKind::Binary {
                ctx.vars.insert(PendingBody(kind));
            }
        }
        self.decide(ctx, found)
    }

    fn request_body_need(&self) -> BodyNeed {
        BodyNeed::Buffer {
            limit: self.settings.body_limit,
            over_limit: self.settings.over_limit,
        }
    }

    fn request_body_buffered(&self, ctx: &mut RequestCtx, body: &Bytes) -> Flow {
        let Some(PendingBody(kind)) = ctx.vars.remove::<PendingBody>() else {
            return Flow::Continue;
        };
        let found = self.inspect_body(&kind, body);
        self.decide(ctx, found)
    }
}

/// Builds `waf` instances.
pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        Ok(Arc::new(Waf::from_config(config)?))
    }
}

#[cfg(test)]
mod tests;
