//! The request an inspection sends to each interface (route).
//!
//! Today every route is probed with `GET` on the path its first pattern sends upstream: `{name}`
//! parameters become `1`, a trailing `/*` is dropped, `strip_prefix` and `rewrite` are applied as
//! the gateway applies them (docs/routing.md). Any status below 500 counts as the interface
//! answering. Declared sample requests (method, path, headers, body and expected status per
//! route) replace this when a route has them: [`samples`] is the one place that decides.

use crate::model::{Route, Snapshot};

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
    vec![Sample {
        method: "GET".into(),
        path: upstream_path(route),
        headers: Vec::new(),
        body: None,
        expect_status: None,
    }]
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
