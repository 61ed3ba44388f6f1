//! The `waf` plugin's configuration: the serde schema, and its translation into checked,
//! ready-to-use types ([`Settings`]) at the boundary, so the request path never re-validates.
//!
//! ```yaml
//! - name: waf
//!   config:
//!     mode: block              # or monitor
//!     paranoia: 1              # 1..=4
//!     headers: [user-agent, referer, cookie, x-forwarded-host]
//!     body: { limit: 65536, over_limit: pass }   # or reject
//!     exclusions:
//!       - { where: "body:$.article.html", rule: xss }
//!       - { where: "query:sign" }
//! ```

use serde::Deserialize;

use super::rules::Class;
use crate::contract::{OverLimit, SchemaError};

/// Headers inspected when `headers` is not configured. `cookie` is split into its cookies, each
/// inspected as `cookie:<name>`.
pub const DEFAULT_HEADERS: &[&str] = &[
    "user-agent",
    "referer",
    "cookie",
    "x-forwarded-host",
    "x-original-url",
    "x-rewrite-url",
];

/// Default body limit: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Largest configurable body limit (16 MiB): the gateway holds the whole body in memory.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    mode: Mode,
    #[serde(default = "default_paranoia")]
    paranoia: u8,
    #[serde(default)]
    exclusions: Vec<RawExclusion>,
    #[serde(default)]
    body: RawBody,
    #[serde(default)]
    headers: Option<Vec<String>>,
}

fn default_paranoia() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExclusion {
    #[serde(default)]
    rule: Option<String>,
    #[serde(rename = "where")]
    location: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    over_limit: OverLimitPolicy,
}

impl Default for RawBody {
    fn default() -> Self {
        Self {
            limit: DEFAULT_BODY_LIMIT,
            over_limit: OverLimitPolicy::Pass,
        }
    }
}

fn default_limit() -> usize {
    DEFAULT_BODY_LIMIT
}

/// What the plugin does about a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse the request with 403 `waf_blocked`.
    #[default]
    Block,
    /// Let it through; the detection is recorded only.
    Monitor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OverLimitPolicy {
    /// Forward a body over the limit uninspected (the audit record says so).
    #[default]
    Pass,
    /// Refuse it with 413.
    Reject,
}

/// Which inputs an exclusion quiets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSelector {
    /// Every rule.
    Any,
    /// Every rule of one class (`sqli`, `xss`, …).
    Class(Class),
    /// One rule, by id (`sqli-libinjection`, `pt-dotdot`, …).
    Rule(&'static str),
}

/// One exclusion: a location pattern (`query:sign`, `body:$.items[*].note`) and what it quiets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub location: String,
    pub rule: RuleSelector,
}

impl Exclusion {
    /// Whether this exclusion quiets `rule` (of `class`) at `location`. A `[*]` in the pattern
    /// matches any array index (`[0]`, `[12]`).
    pub fn quiets(&self, location: &str, class: Class, rule: &str) -> bool {
        let rule_matches = match &self.rule {
            RuleSelector::Any => true,
            RuleSelector::Class(c) => *c == class,
            RuleSelector::Rule(r) => *r == rule,
        };
        rule_matches && location_matches(&self.location, location)
    }
}

/// `pattern` equals `location`, where `[*]` in the pattern stands for any `[digits]`.
fn location_matches(pattern: &str, location: &str) -> bool {
    let (mut p, mut l) = (pattern, location);
    loop {
        match p.find("[*]") {
            None => return p == l,
            Some(i) => {
                let (head, tail) = p.split_at(i);
                let Some(rest) = l.strip_prefix(head) else {
                    return false;
                };
                let Some(rest) = rest.strip_prefix('[') else {
                    return false;
                };
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let Some(rest) = rest.get(digits..).and_then(|r| r.strip_prefix(']')) else {
                    return false;
                };
                if digits == 0 {
                    return false;
                }
                p = tail.get(3..).unwrap_or_default();
                l = rest;
            }
        }
    }
}

/// The checked configuration of one instance.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub paranoia: u8,
    pub exclusions: Vec<Exclusion>,
    pub body_limit: usize,
    pub over_limit: OverLimit,
    /// Lower-case header names to inspect.
    pub headers: Vec<String>,
}

impl Settings {
    pub fn parse(config: &serde_json::Value) -> Result<Self, SchemaError> {
        let raw: Raw = SchemaError::parse(config)?;
        if !(1..=4).contains(&raw.paranoia) {
            return Err(SchemaError::new(
                "paranoia",
                format!("must be 1, 2, 3 or 4, not {}", raw.paranoia),
            ));
        }
        if raw.body.limit == 0 || raw.body.limit > MAX_BODY_LIMIT {
            return Err(SchemaError::new(
                "body.limit",
                format!(
                    "must be between 1 and {MAX_BODY_LIMIT} bytes, not {}",
                    raw.body.limit
                ),
            ));
        }
        let mut exclusions = Vec::with_capacity(raw.exclusions.len());
        for (i, e) in raw.exclusions.into_iter().enumerate() {
            let location = check_location(&e.location)
                .map_err(|m| SchemaError::new(format!("exclusions[{i}].where"), m))?;
            let rule = match e.rule.as_deref() {
                None => RuleSelector::Any,
                Some(r) => parse_rule_selector(r)
                    .map_err(|m| SchemaError::new(format!("exclusions[{i}].rule"), m))?,
            };
            exclusions.push(Exclusion { location, rule });
        }
        let headers = match raw.headers {
            None => DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, h) in list.into_iter().enumerate() {
                    let name = h.trim().to_ascii_lowercase();
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(SchemaError::new(
                            format!("headers[{i}]"),
                            format!("`{h}` is not a valid header name"),
                        ));
                    }
                    if name == "authorization" {
                        return Err(SchemaError::new(
                            format!("headers[{i}]"),
                            "`authorization` carries credentials and is not inspected; \
                             authentication plugins check it",
                        ));
                    }
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
                out
            }
        };
        Ok(Settings {
            mode: raw.mode,
            paranoia: raw.paranoia,
            exclusions,
            body_limit: raw.body.limit,
            over_limit: match raw.body.over_limit {
                OverLimitPolicy::Pass => OverLimit::PassUninspected,
                OverLimitPolicy::Reject => OverLimit::Reject,
            },
            headers,
        })
    }
}

/// Checks an exclusion's `where` and returns its canonical form (header names lower-case).
fn check_location(raw: &str) -> Result<String, String> {
    if raw == "path" {
        return Ok(raw.to_owned());
    }
    let Some((kind, name)) = raw.split_once(':') else {
        return Err(format!(
            "`{raw}`: expected `path`, `query:NAME`, `form:NAME`, `body:$.a.b`, \
             `header:NAME` or `cookie:NAME`"
        ));
    };
    if name.is_empty() {
        return Err(format!("`{raw}`: the name after `{kind}:` is empty"));
    }
    let kind = kind.to_ascii_lowercase();
    match kind.as_str() {
        "query" | "form" | "cookie" => Ok(format!("{kind}:{name}")),
        "header" => Ok(format!("header:{}", name.to_ascii_lowercase())),
        "body" => {
            if name == "$" || name.starts_with("$.") || name.starts_with("$[") {
                Ok(format!("body:{name}"))
            } else {
                Err(format!(
                    "`{raw}`: a body location is a JSON path starting with `$` (`body:$.user.name`, \
                     `body:$.items[*].note`); use `form:NAME` for form fields"
                ))
            }
        }
        _ => Err(format!(
            "`{raw}`: unknown location kind `{kind}`; expected path, query, form, body, header or cookie"
        )),
    }
}

fn parse_rule_selector(raw: &str) -> Result<RuleSelector, String> {
    if let Some(class) = Class::from_name(raw) {
        return Ok(RuleSelector::Class(class));
    }
    if let Some(id) = super::rules::rule_id(raw) {
        return Ok(RuleSelector::Rule(id));
    }
    Err(format!(
        "unknown rule or class `{raw}`; classes are {}; rule ids are listed in docs/plugins/waf.md",
        Class::ALL
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let s = Settings::parse(&json!(null)).unwrap();
        assert_eq!(s.mode, Mode::Block);
        assert_eq!(s.paranoia, 1);
        assert_eq!(s.body_limit, 64 * 1024);
        assert_eq!(s.over_limit, OverLimit::PassUninspected);
        assert!(s.headers.iter().any(|h| h == "cookie"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"paranoia": 5}), "paranoia"),
            (json!({"paranoia": 0}), "paranoia"),
            (json!({"mode": "log"}), "mode"),
            (json!({"modes": "block"}), "modes"),
            (json!({"body": {"limit": 0}}), "body.limit"),
            (json!({"body": {"over_limit": "drop"}}), "body.over_limit"),
            (json!({"body": {"size": 1}}), "body.size"),
            (
                json!({"exclusions": [{"where": "query:a"}, {"where": "nowhere"}]}),
                "exclusions[1].where",
            ),
            (
                json!({"exclusions": [{"where": "body:user.name"}]}),
                "exclusions[0].where",
            ),
            (
                json!({"exclusions": [{"where": "query:a", "rule": "nosuch"}]}),
                "exclusions[0].rule",
            ),
            (json!({"exclusions": [{"rule": "xss"}]}), "exclusions[0]"),
            (json!({"headers": ["user agent"]}), "headers[0]"),
            (json!({"headers": ["x", "Authorization"]}), "headers[1]"),
        ];
        for (config, path) in cases {
            let e = Settings::parse(&config).unwrap_err();
            assert_eq!(e.path, path, "{config}: {e}");
        }
    }

    #[test]
    fn exclusions_parse_and_match() {
        let s = Settings::parse(&json!({"exclusions": [
            {"where": "body:$.items[*].note", "rule": "xss"},
            {"where": "Header:X-Thing"},
            {"where": "query:q", "rule": "sqli-libinjection"},
        ]}))
        .unwrap();
        let [a, b, c] = &s.exclusions[..] else {
            panic!("{:?}", s.exclusions)
        };
        assert!(a.quiets("body:$.items[3].note", Class::Xss, "xss-libinjection"));
        assert!(!a.quiets("body:$.items[3].note", Class::Sqli, "sqli-libinjection"));
        assert!(!a.quiets("body:$.items[].note", Class::Xss, "xss-libinjection"));
        assert!(!a.quiets("body:$.items[3].name", Class::Xss, "xss-libinjection"));
        assert!(b.quiets("header:x-thing", Class::Protocol, "proto-crlf"));
        assert!(c.quiets("query:q", Class::Sqli, "sqli-libinjection"));
        assert!(!c.quiets("query:q", Class::Sqli, "sqli-union"));
    }
}
