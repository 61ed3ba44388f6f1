//! `response-masking`: masks personal data in upstream response bodies before they reach the
//! client — resident ID numbers, mobile numbers, bank card numbers, e-mail addresses, and names
//! and addresses under known JSON keys — with the detectors of [`crate::pii`].
//!
//! - A body in which no detector could match — no run of 11 digits, no `@`, no name or address
//!   key, no `\u` escape ([`pii::Prefilter`]) — is passed on as it is, unparsed.
//! - JSON bodies (`application/json`, `*+json`) are walked where they lie ([`pii::mask_json`]):
//!   string values are masked where they match, a number that is an ID or phone number becomes
//!   a masked string, and nothing else in the document changes (key order, number spellings,
//!   whitespace). When the gateway keeps the upstream's `Content-Length`
//!   ([`KeptLength`]), the masked body keeps the length too: padded with spaces when shorter,
//!   and a value whose mask would be longer than itself (a number gaining its quotes) turned
//!   into `*` of its own length when the document as a whole would grow. Text bodies (`text/*`, `application/xml`, `*+xml`, JavaScript, forms, or
//!   no `Content-Type` at all) are masked as text. Anything else (images, PDFs, octet
//!   streams) is left untouched.
//! - Counts per class — never the values — go into the audit record as one
//!   [`Finding`] per class (`action: masked`).
//!
//! Config in one line: `{classes, formats: {<class>: {keep_prefix, keep_suffix, stars}},
//! name_keys, address_keys, card_keys, default_keys, limit, over_limit}`. It may not: see a body larger than
//! `limit` (see `over_limit`), find names or addresses in free text (only under JSON keys and
//! in simple XML elements of those names), or keep an e-mail's domain or a
//! masked number's visible digits when a kept length leaves no room for them. See `docs/plugins/response-masking.md`.

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::HeaderValue;
use serde::Deserialize;

use crate::contract::{
    BodyNeed, Finding, FindingAction, HeaderEdits, KeptLength, OverLimit, Plugin, PluginFactory,
    RequestCtx, SchemaError,
};
use crate::pii::{self, Class, Fit, Format, Policy};

/// The plugin's name in configs and findings.
pub const NAME: &str = "response-masking";

/// Runs after `leak-guard` (450) in the response-body phase: a replaced error page needs no
/// masking. It has no request-side work, so its place among the request plugins is irrelevant.
pub const PRIORITY: i32 = 400;

/// Default buffering limit: 2 MiB of decoded body.
pub const DEFAULT_LIMIT: usize = 2 * 1024 * 1024;
/// Largest configurable limit (64 MiB): every buffered response holds this much memory.
pub const MAX_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClassName {
    IdNumber,
    Mobile,
    BankCard,
    Email,
    Name,
    Address,
}

impl ClassName {
    fn class(self) -> Class {
        match self {
            ClassName::IdNumber => Class::IdNumber,
            ClassName::Mobile => Class::Mobile,
            ClassName::BankCard => Class::BankCard,
            ClassName::Email => Class::Email,
            ClassName::Name => Class::Name,
            ClassName::Address => Class::Address,
        }
    }
}

/// What happens to a body over `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OverLimitConfig {
    /// Sent on unmasked; the audit record says `"body":"uninspected"`.
    #[default]
    Pass,
    /// Never sent unmasked: the response is aborted (502 if nothing was sent yet).
    Reject,
}

impl OverLimitConfig {
    pub(crate) fn policy(self) -> OverLimit {
        match self {
            OverLimitConfig::Pass => OverLimit::PassUninspected,
            OverLimitConfig::Reject => OverLimit::Reject,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatConfig {
    #[serde(default)]
    keep_prefix: usize,
    #[serde(default)]
    keep_suffix: usize,
    /// Exactly this many `*`; absent: one per hidden character.
    #[serde(default)]
    stars: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Formats {
    id_number: Option<FormatConfig>,
    mobile: Option<FormatConfig>,
    bank_card: Option<FormatConfig>,
    email: Option<FormatConfig>,
    name: Option<FormatConfig>,
    address: Option<FormatConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    classes: Option<Vec<ClassName>>,
    #[serde(default)]
    formats: Formats,
    #[serde(default)]
    name_keys: Vec<String>,
    #[serde(default)]
    address_keys: Vec<String>,
    #[serde(default)]
    card_keys: Vec<String>,
    /// Whether the built-in name, address and card key lists apply (the configured ones are
    /// added to them); `false`: only the configured ones.
    #[serde(default = "yes")]
    default_keys: bool,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    over_limit: OverLimitConfig,
}

fn default_limit() -> usize {
    DEFAULT_LIMIT
}

fn yes() -> bool {
    true
}

/// Shortest value of each digit class: a format must hide at least one of its characters.
fn shortest(class: Class) -> Option<usize> {
    match class {
        Class::IdNumber => Some(15),
        Class::Mobile => Some(11),
        Class::BankCard => Some(13),
        _ => None,
    }
}

fn check_keys(field: &str, keys: &[String]) -> Result<Vec<String>, SchemaError> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let k = k.trim();
            if k.is_empty() {
                Err(SchemaError::new(
                    format!("{field}[{i}]"),
                    "an empty key name matches nothing",
                ))
            } else {
                Ok(k.to_lowercase())
            }
        })
        .collect()
}

fn build_policy(cfg: &Config) -> Result<Policy, SchemaError> {
    let mut policy = Policy::default();
    if !cfg.default_keys {
        policy.name_keys.clear();
        policy.address_keys.clear();
        policy.card_words.clear();
    }
    if let Some(classes) = &cfg.classes {
        if classes.is_empty() {
            return Err(SchemaError::new(
                "classes",
                "an empty list masks nothing; leave `classes` out for all of them, or disable the plugin",
            ));
        }
        for (i, c) in classes.iter().enumerate() {
            if classes[..i].contains(c) {
                return Err(SchemaError::new(
                    format!("classes[{i}]"),
                    format!("`{}` is listed twice", c.class().as_str()),
                ));
            }
        }
        let list: Vec<Class> = classes.iter().map(|c| c.class()).collect();
        policy = policy.only(&list);
    }
    let f = &cfg.formats;
    for (class, fc) in [
        (Class::IdNumber, &f.id_number),
        (Class::Mobile, &f.mobile),
        (Class::BankCard, &f.bank_card),
        (Class::Email, &f.email),
        (Class::Name, &f.name),
        (Class::Address, &f.address),
    ] {
        let Some(fc) = fc else { continue };
        let path = format!("formats.{}", class.as_str());
        if fc.stars == Some(0) {
            return Err(SchemaError::new(
                format!("{path}.stars"),
                "0 stars would hide the masked part's existence; use at least 1 or leave it out",
            ));
        }
        if let Some(n) = shortest(class) {
            if fc.keep_prefix + fc.keep_suffix >= n {
                return Err(SchemaError::new(
                    path,
                    format!(
                        "keep_prefix + keep_suffix = {} leaves nothing hidden of {n}-digit {} values; keep fewer",
                        fc.keep_prefix + fc.keep_suffix,
                        class.as_str()
                    ),
                ));
            }
        }
        policy = policy.with_format(class, Format::new(fc.keep_prefix, fc.keep_suffix, fc.stars));
    }
    policy
        .name_keys
        .extend(check_keys("name_keys", &cfg.name_keys)?);
    policy
        .address_keys
        .extend(check_keys("address_keys", &cfg.address_keys)?);
    policy
        .card_words
        .extend(check_keys("card_keys", &cfg.card_keys)?);
    Ok(policy)
}

/// Checks a body limit (shared with `leak-guard`).
pub(crate) fn check_limit(limit: usize) -> Result<usize, SchemaError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(SchemaError::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT} bytes (64 MiB); got {limit}"),
        ));
    }
    Ok(limit)
}

/// How a body is treated, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Json,
    Text,
    /// No `Content-Type`: JSON if it parses as an object or array, else text if UTF-8.
    Unknown,
    Binary,
}

impl BodyKind {
    pub(crate) fn of(content_type: Option<&HeaderValue>) -> BodyKind {
        let Some(ct) = content_type else {
            return BodyKind::Unknown;
        };
        let Ok(ct) = ct.to_str() else {
            return BodyKind::Binary;
        };
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime == "application/json" || mime == "text/json" || mime.ends_with("+json") {
            BodyKind::Json
        } else if mime.starts_with("text/")
            || mime == "application/xml"
            || mime.ends_with("+xml")
            || mime == "application/javascript"
            || mime == "application/x-www-form-urlencoded"
            || mime == "application/problem"
        {
            BodyKind::Text
        } else if mime.is_empty() {
            BodyKind::Unknown
        } else {
            BodyKind::Binary
        }
    }
}

#[derive(Debug)]
pub struct ResponseMasking {
    policy: Policy,
    /// `policy` hiding character for character, for a text that must keep its length.
    no_growth: Policy,
    /// Skips parsing a body in which nothing could be masked.
    prefilter: pii::Prefilter,
    limit: usize,
    over_limit: OverLimit,
}

impl ResponseMasking {
    /// Masks `body` as a `kind` body; returns the counts. Under [`Fit::KeepLength`] the body
    /// keeps its length (see [`Plugin::response_body_keeps_length`]).
    fn mask(&self, kind: BodyKind, body: &mut Vec<u8>, fit: Fit) -> pii::Counts {
        if !self.prefilter.may_mask(body) {
            return pii::Counts::default();
        }
        let looks_json = || {
            body.iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[')
        };
        if kind == BodyKind::Json || (kind == BodyKind::Unknown && looks_json()) {
            if let Some(masked) = pii::mask_json(body, &self.policy, fit) {
                if let Some(out) = masked.body {
                    *body = out;
                }
                return masked.counts;
            }
            // Not valid JSON after all: masked as text (digits become `*`, so it stays as
            // valid or invalid as it was, except for bare numbers).
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return pii::Counts::default();
        };
        let (mut out, mut counts) = pii::mask_text(text, &self.policy);
        if fit == Fit::KeepLength && out.as_ref().is_some_and(|o| o.len() > text.len()) {
            // A format with a fixed number of stars made it longer: hide character for
            // character instead, which never grows.
            (out, counts) = pii::mask_text(text, &self.no_growth);
        }
        if let Some(out) = out {
            let len = body.len();
            *body = out.into_bytes();
            if fit == Fit::KeepLength {
                body.resize(len, b' ');
            }
        }
        counts
    }
}

/// Put in [`RequestCtx::vars`] at the head: how this response's body is to be masked.
#[derive(Debug, Clone, Copy)]
struct Kind(BodyKind);

impl Plugin for ResponseMasking {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn response_body_need(&self) -> BodyNeed {
        BodyNeed::Buffer {
            limit: self.limit,
            over_limit: self.over_limit,
        }
    }

    fn response_body_head(
        &self,
        ctx: &mut RequestCtx,
        _status: u16,
        headers: &mut dyn HeaderEdits,
    ) {
        ctx.vars
            .insert(Kind(BodyKind::of(headers.get(CONTENT_TYPE.as_str()))));
    }

    /// Masking keeps a body's length when asked to (JSON padded with spaces, or over-masked
    /// where a mask would be longer than its value; text hidden character for character).
    fn response_body_keeps_length(&self, _ctx: &RequestCtx, _status: u16) -> bool {
        true
    }

    fn response_body(&self, ctx: &mut RequestCtx, _status: u16, body: &mut Vec<u8>) {
        let kind = ctx.vars.get::<Kind>().map_or(BodyKind::Unknown, |k| k.0);
        if kind == BodyKind::Binary || body.is_empty() {
            return;
        }
        let fit = if ctx.vars.get::<KeptLength>().is_some() {
            Fit::KeepLength
        } else {
            Fit::Free
        };
        let counts = self.mask(kind, body, fit);
        for (class, count) in counts.iter() {
            ctx.findings.push(Finding {
                plugin: NAME,
                class: class.as_str(),
                rule: None,
                location: "response".into(),
                action: FindingAction::Masked,
                count,
                excerpt: None,
            });
        }
    }
}

/// The masking a config describes, as the plugin would apply it: the control plane checks a
/// service's `masking` with this at the boundary, and its go-live sensitivity scan asks what a
/// response would still show once this policy masked it.
pub fn policy_of(config: &serde_json::Value) -> Result<Policy, SchemaError> {
    let cfg: Config = SchemaError::parse(config)?;
    check_limit(cfg.limit)?;
    build_policy(&cfg)
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let cfg: Config = SchemaError::parse(config)?;
        let policy = build_policy(&cfg)?;
        Ok(Arc::new(ResponseMasking {
            prefilter: pii::Prefilter::new(&policy),
            no_growth: policy.no_growth(),
            policy,
            limit: check_limit(cfg.limit)?,
            over_limit: cfg.over_limit.policy(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "11010519491231002X";
    const ID_BAD: &str = "110105194912310021";

    struct H(http::HeaderMap);
    impl HeaderEdits for H {
        fn get(&self, name: &str) -> Option<&HeaderValue> {
            self.0.get(name)
        }
        fn insert(&mut self, name: http::HeaderName, value: HeaderValue) {
            self.0.insert(name, value);
        }
        fn remove(&mut self, name: &str) {
            self.0.remove(name);
        }
    }

    fn build(cfg: serde_json::Value) -> Arc<dyn Plugin> {
        Factory.build(&cfg).unwrap()
    }

    fn err(cfg: serde_json::Value) -> String {
        Factory
            .build(&cfg)
            .expect_err("config must be refused")
            .to_string()
    }

    fn run(p: &Arc<dyn Plugin>, content_type: Option<&str>, body: &str) -> (String, RequestCtx) {
        let mut ctx = RequestCtx::default();
        let mut h = H(http::HeaderMap::new());
        if let Some(ct) = content_type {
            h.0.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        p.response_body_head(&mut ctx, 200, &mut h);
        let mut b = body.as_bytes().to_vec();
        p.response_body(&mut ctx, 200, &mut b);
        (String::from_utf8(b).unwrap(), ctx)
    }

    #[test]
    fn json_bodies_are_masked_and_stay_valid_json() {
        let p = build(json!(null));
        let body =
            json!({"xm": "张三", "sfzh": ID, "bad": ID_BAD, "sjh": 13812345678u64}).to_string();
        let (out, ctx) = run(&p, Some("application/json; charset=utf-8"), &body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["xm"], "张*");
        assert_eq!(v["sfzh"], "110105********002X");
        assert_eq!(v["bad"], ID_BAD);
        assert_eq!(v["sjh"], "138****5678");
        let f: Vec<(&str, u32)> = ctx.findings.iter().map(|f| (f.class, f.count)).collect();
        assert_eq!(f, vec![("id_number", 1), ("mobile", 1), ("name", 1)]);
        assert!(ctx.findings.iter().all(|f| f.plugin == NAME
            && f.action == FindingAction::Masked
            && f.location == "response"
            && f.excerpt.is_none()));
    }

    #[test]
    fn a_body_without_matches_is_left_byte_for_byte() {
        let p = build(json!({}));
        let body = "{ \"z\": 1,  \"a\": \"order 202412041234567890\" }";
        let (out, ctx) = run(&p, Some("application/json"), body);
        assert_eq!(out, body);
        assert!(ctx.findings.is_empty());
    }

    #[test]
    fn text_is_masked_binary_is_not() {
        let p = build(json!({}));
        let (out, _) = run(&p, Some("text/html"), "<p>13812345678</p>");
        assert_eq!(out, "<p>138****5678</p>");
        let (out, _) = run(&p, Some("application/octet-stream"), "13812345678");
        assert_eq!(out, "13812345678");
        let (out, _) = run(&p, None, "[13812345678]");
        assert_eq!(out, "[\"138****5678\"]");
    }

    #[test]
    fn invalid_json_under_a_json_type_falls_back_to_text() {
        let p = build(json!({}));
        let (out, _) = run(&p, Some("application/json"), "{\"m\":\"13812345678\"");
        assert_eq!(out, "{\"m\":\"138****5678\"");
    }

    #[test]
    fn config_selects_classes_formats_and_keys() {
        let p = build(json!({
            "classes": ["mobile", "name"],
            "formats": {"mobile": {"keep_prefix": 3, "keep_suffix": 2, "stars": 3}},
            "name_keys": ["Holder"]
        }));
        let body = json!({"holder": "李四", "m": "13812345678", "id": ID}).to_string();
        let (out, _) = run(&p, Some("application/json"), &body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, json!({"holder": "李*", "m": "138***78", "id": ID}));
        // Only the configured keys: `name` (a service's name here) is left alone.
        let p = build(json!({"default_keys": false, "name_keys": ["applicant"]}));
        let body = json!({"name": "营业执照办理", "applicant": "王五"}).to_string();
        let (out, _) = run(&p, Some("application/json"), &body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, json!({"name": "营业执照办理", "applicant": "王*"}));
        assert_eq!(
            p.response_body_need(),
            BodyNeed::Buffer {
                limit: DEFAULT_LIMIT,
                over_limit: OverLimit::PassUninspected
            }
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        assert!(
            err(json!({"classes": ["phone"]})).starts_with("classes[0]: unknown variant `phone`")
        );
        assert!(err(json!({"classes": []})).starts_with("classes: "));
        assert!(err(json!({"classes": ["mobile", "mobile"]})).starts_with("classes[1]: "));
        assert!(
            err(json!({"formats": {"mobile": {"keep_prefix": 7, "keep_suffix": 4}}}))
                .starts_with("formats.mobile: ")
        );
        assert!(
            err(json!({"formats": {"email": {"stars": 0}}})).starts_with("formats.email.stars: ")
        );
        assert!(err(json!({"formats": {"phone": {}}})).contains("unknown field `phone`"));
        let e = err(json!({"formats": {"name": {"keep": 1}}}));
        assert!(
            e.starts_with("formats.name") && e.contains("unknown field `keep`"),
            "{e}"
        );
        assert!(err(json!({"name_keys": ["ok", " "]})).starts_with("name_keys[1]: "));
        assert!(err(json!({"limit": 0})).starts_with("limit: "));
        assert!(
            err(json!({"over_limit": "drop"})).starts_with("over_limit: unknown variant `drop`")
        );
        assert!(err(json!({"masks": []})).contains("unknown field `masks`"));
    }
}
