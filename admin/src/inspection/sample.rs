//! The requests verification and inspection send to each interface (route).
//!
//! A route's declared sample requests (`samples`: method, path, headers, body and the expected
//! status) are sent as declared; a sample without a path gets the default path below. A route
//! that declares none is probed with `GET` on the path its first pattern sends upstream:
//! `{name}` parameters become `1`, a trailing `/*` is dropped, `strip_prefix` and `rewrite` are
//! applied as the gateway applies them (docs/routing.md), and any status below 500 counts as
//! the interface answering. [`samples`] is the one place that decides.

use crate::error::{ApiError, ApiResult};
use crate::model::{Route, SampleDecl, Snapshot, MAX_SAMPLES};

/// One request to send, and what answer counts as healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub method: String,
    /// Path (and query) as the upstream receives it.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// The status the interface must answer; `None`: any status below 500.
    pub expect_status: Option<u16>,
}

/// The sample requests of `route`.
pub fn samples(_snapshot: &Snapshot, route: &Route) -> Vec<Sample> {
    of(route, &route.samples)
}

/// `declared` as requests to send (the default sample when none is declared).
pub fn of(route: &Route, declared: &[SampleDecl]) -> Vec<Sample> {
    if declared.is_empty() {
        return vec![Sample {
            method: "GET".into(),
            path: upstream_path(route),
            headers: Vec::new(),
            body: None,
            expect_status: None,
        }];
    }
    declared
        .iter()
        .map(|d| Sample {
            method: d.method.to_ascii_uppercase(),
            path: d.path.clone().unwrap_or_else(|| upstream_path(route)),
            headers: d
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: d.body.clone(),
            expect_status: d.expect_status,
        })
        .collect()
}

/// Largest sample body, bytes.
pub const MAX_BODY: usize = 64 << 10;

/// Checks declared samples at the boundary; `field` is their path in the input (`samples`).
pub fn check(declared: &[SampleDecl], field: &str) -> ApiResult<()> {
    if declared.len() > MAX_SAMPLES {
        return Err(ApiError::invalid(
            field,
            format!(
                "at most {MAX_SAMPLES} sample requests per route, got {}",
                declared.len()
            ),
        ));
    }
    for (i, d) in declared.iter().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
        if http::Method::from_bytes(d.method.to_ascii_uppercase().as_bytes()).is_err()
            || d.method.is_empty()
        {
            return Err(ApiError::invalid(
                at("method"),
                "expected an HTTP method such as GET or POST",
            ));
        }
        if let Some(p) = &d.path {
            if !p.starts_with('/') || p.parse::<http::Uri>().is_err() {
                return Err(ApiError::invalid(
                    at("path"),
                    "expected a path (and query) starting with `/`, e.g. `/pension/balance?id=1`",
                ));
            }
        }
        for (k, v) in &d.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(ApiError::invalid(
                    at(&format!("headers.{k}")),
                    "not a valid header name",
                ));
            }
            if http::HeaderValue::from_str(v).is_err() {
                return Err(ApiError::invalid(
                    at(&format!("headers.{k}")),
                    "expected visible ASCII characters",
                ));
            }
            if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length") {
                return Err(ApiError::invalid(
                    at(&format!("headers.{k}")),
                    "set by the prober; leave it out",
                ));
            }
        }
        if d.body.as_ref().is_some_and(|b| b.len() > MAX_BODY) {
            return Err(ApiError::invalid(at("body"), "at most 64 KiB"));
        }
        if let Some(s) = d.expect_status {
            if !(100..=599).contains(&s) {
                return Err(ApiError::invalid(
                    at("expect_status"),
                    "expected an HTTP status, 100 to 599",
                ));
            }
        }
    }
    Ok(())
}

/// Fills a path pattern's parameters: `{x}` → `1`, `{*}` and a trailing `*` → nothing.
fn fill(pattern: &str) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if name != "*" {
            out.push('1');
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    let out = out.trim_end_matches('*').to_string();
    if out.is_empty() {
        "/".into()
    } else {
        out
    }
}

/// The path the gateway sends upstream for a request on the route's first pattern.
pub fn upstream_path(route: &Route) -> String {
    let pattern = route.paths.first().map(String::as_str).unwrap_or("/");
    if let Some(t) = &route.rewrite {
        return fill(t);
    }
    if route.strip_prefix && pattern.ends_with("/*") {
        return "/".into();
    }
    fill(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(paths: &[&str], strip: bool, rewrite: Option<&str>) -> Route {
        serde_json::from_value(serde_json::json!({
            "id": "r", "service_id": "s", "name": "r", "paths": paths,
            "strip_prefix": strip, "rewrite": rewrite, "created_at": 0, "updated_at": 0,
        }))
        .unwrap()
    }

    #[test]
    fn the_sample_path_is_what_the_upstream_receives() {
        assert_eq!(
            upstream_path(&route(&["/api/permits"], false, None)),
            "/api/permits"
        );
        assert_eq!(upstream_path(&route(&["/api/*"], false, None)), "/api/");
        assert_eq!(upstream_path(&route(&["/api/*"], true, None)), "/");
        assert_eq!(
            upstream_path(&route(&["/users/{id}/orders"], false, None)),
            "/users/1/orders"
        );
        assert_eq!(
            upstream_path(&route(&["/old/*"], false, Some("/new/{*}"))),
            "/new/"
        );
    }
}
