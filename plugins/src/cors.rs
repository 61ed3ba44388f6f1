//! `cors`: Cross-Origin Resource Sharing for browser callers (H5 pages), APISIX-style.
//!
//! - Preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
//!   plugin itself with a bodiless `204` ([`Reply::empty`]); it never reaches the upstream.
//! - Actual requests: the request phase remembers the decision for the request's `Origin` in
//!   [`RequestCtx::vars`]; the response phase adds `Access-Control-Allow-Origin` (the request's
//!   origin, with `Vary: Origin`), `Access-Control-Allow-Credentials` and
//!   `Access-Control-Expose-Headers`. It runs on the gateway's own answers too, so a browser can
//!   read a 401 or 429.
//! - An origin that is not allowed gets no CORS headers (the browser then withholds the
//!   response from the page); the request itself still proceeds.
//!
//! With the plugin on a route the gateway owns CORS there: CORS headers the upstream sets on
//! responses to cross-origin requests are replaced or removed. See `docs/plugins/cors.md`.

use std::collections::HashSet;
use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;

use crate::contract::{
    Flow, HeaderEdits, Plugin, PluginFactory, Reply, RequestCtx, RequestView, SchemaError,
};

/// Runs first among the built-ins: a preflight carries no credentials, so it must be answered
/// before authentication or IP rules could refuse it.
pub const PRIORITY: i32 = 4000;

/// The answer's code in the log and audit record (never sent: the 204 has no body).
pub const PREFLIGHT_CODE: &str = "cors_preflight";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "any")]
    allow_origins: StrList,
    #[serde(default = "any")]
    allow_methods: StrList,
    #[serde(default = "any")]
    allow_headers: StrList,
    #[serde(default)]
    expose_headers: StrList,
    #[serde(default = "default_max_age")]
    max_age: u32,
    #[serde(default)]
    allow_credential: bool,
}

fn any() -> StrList {
    StrList {
        items: vec!["*".into()],
        from_list: false,
    }
}

fn default_max_age() -> u32 {
    5
}

/// A list attribute, written as a list (`["a", "b"]`) or, as in APISIX, one comma-separated
/// string (`"a,b"`).
#[derive(Debug, Default)]
struct StrList {
    items: Vec<String>,
    from_list: bool,
}

impl StrList {
    /// The config path of item `i` of field `field`.
    fn path(&self, field: &str, i: usize) -> String {
        if self.from_list {
            format!("{field}[{i}]")
        } else {
            field.to_string()
        }
    }

    fn is_any(&self) -> bool {
        self.items.iter().any(|s| s == "*")
    }

    /// Checks that `*`, if present, is alone.
    fn check_star(&self, field: &str) -> Result<(), SchemaError> {
        if self.is_any() && self.items.len() > 1 {
            let i = self.items.iter().position(|s| s == "*").unwrap_or(0);
            return Err(SchemaError::new(
                self.path(field, i),
                "`*` allows everything and must be the only entry",
            ));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of strings, or one comma-separated string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StrList, E> {
                Ok(StrList {
                    items: v
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    from_list: false,
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StrList, A::Error> {
                let mut items = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    items.push(s.trim().to_string());
                }
                Ok(StrList {
                    items,
                    from_list: true,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Which origins may read responses.
#[derive(Debug)]
enum Origins {
    /// `*`: any origin (never with credentials).
    Any,
    /// Exact origins, lower-cased (`https://h5.example.gov.cn`).
    Exact(HashSet<Box<str>>),
}

/// Allowed methods or request headers in a preflight answer.
#[derive(Debug)]
enum Allowed {
    /// `*`: echo what the preflight asks for (works with credentials, unlike a literal `*`).
    Reflect,
    /// The configured list, joined.
    List(Option<HeaderValue>),
}

/// What the request phase decided about a cross-origin request, for the response phase.
#[derive(Debug, Clone)]
enum CorsState {
    /// The preflight was answered by the plugin; its reply already carries the headers.
    Preflight,
    /// Allowed: the value for `Access-Control-Allow-Origin`.
    Allowed(HeaderValue),
    /// The request had an `Origin` that is not allowed.
    Refused,
}

#[derive(Debug)]
pub struct Cors {
    origins: Origins,
    methods: Allowed,
    headers: Allowed,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

static STAR: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            // A literal `*` only without credentials (checked when built).
            Origins::Any => Some(STAR.clone()),
            Origins::Exact(set) => {
                let s = origin.to_str().ok()?;
                let hit = if s.bytes().any(|b| b.is_ascii_uppercase()) {
                    set.contains(s.to_ascii_lowercase().as_str())
                } else {
                    set.contains(s)
                };
                // Echo the request's own spelling: the browser compares it byte for byte.
                hit.then(|| origin.clone())
            }
        }
    }

    /// Whether responses differ by `Origin` (then caches must key on it).
    fn varies_by_origin(&self) -> bool {
        matches!(self.origins, Origins::Exact(_))
    }

    fn preflight(&self, req: &RequestView<'_>, origin: &HeaderValue) -> Reply {
        let mut reply = Reply::empty(StatusCode::NO_CONTENT, PREFLIGHT_CODE);
        let mut varies = Vec::new();
        if self.varies_by_origin() {
            varies.push("Origin");
        }
        if let Some(allow) = self.allow_origin(origin) {
            reply = reply.with_header(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            if self.credentials {
                reply = reply.with_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
            }
            let asked_method = req.headers.get(ACCESS_CONTROL_REQUEST_METHOD);
            let methods = match &self.methods {
                Allowed::Reflect => {
                    varies.push("Access-Control-Request-Method");
                    asked_method.cloned()
                }
                Allowed::List(v) => v.clone(),
            };
            if let Some(m) = methods {
                reply = reply.with_header(ACCESS_CONTROL_ALLOW_METHODS, m);
            }
            let headers = match &self.headers {
                Allowed::Reflect => {
                    varies.push("Access-Control-Request-Headers");
                    req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned()
                }
                Allowed::List(v) => v.clone(),
            };
            if let Some(h) = headers {
                reply = reply.with_header(ACCESS_CONTROL_ALLOW_HEADERS, h);
            }
            reply = reply.with_header(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        }
        if !varies.is_empty() {
            reply = reply.with_header(VARY, vary(&varies));
        }
        reply
    }
}

/// A `Vary` value from a few static header names.
fn vary(parts: &[&'static str]) -> HeaderValue {
    HeaderValue::from_str(&parts.join(", ")).unwrap_or_else(|_| VARY_ORIGIN.clone())
}

/// Adds `Origin` to `Vary` unless it is already there (or `Vary: *`).
fn add_vary_origin(headers: &mut dyn HeaderEdits) {
    let merged = match headers.get(VARY.as_str()) {
        None => VARY_ORIGIN.clone(),
        Some(v) => {
            let Ok(s) = v.to_str() else { return };
            if s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
            {
                return;
            }
            match HeaderValue::from_str(&format!("{s}, Origin")) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
    };
    headers.insert(VARY, merged);
}

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn request(&self, req: &RequestView<'_>, ctx: &mut RequestCtx) -> Flow {
        let Some(origin) = req.headers.get(ORIGIN) else {
            return Flow::Continue;
        };
        if req.method == Method::OPTIONS && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            ctx.vars.insert(CorsState::Preflight);
            return Flow::Respond(self.preflight(req, origin));
        }
        let state = match self.allow_origin(origin) {
            Some(v) => CorsState::Allowed(v),
            None => CorsState::Refused,
        };
        ctx.vars.insert(state);
        Flow::Continue
    }

    fn response(&self, ctx: &RequestCtx, _status: u16, headers: &mut dyn HeaderEdits) {
        match ctx.vars.get::<CorsState>() {
            Some(CorsState::Preflight) => {}
            Some(CorsState::Allowed(origin)) => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if self.credentials {
                    headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
                } else {
                    headers.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS.as_str());
                }
                match &self.expose {
                    Some(e) => headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()),
                    None => headers.remove(ACCESS_CONTROL_EXPOSE_HEADERS.as_str()),
                }
                if self.varies_by_origin() {
                    add_vary_origin(headers);
                }
            }
            Some(CorsState::Refused) => {
                headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN.as_str());
                headers.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS.as_str());
                headers.remove(ACCESS_CONTROL_EXPOSE_HEADERS.as_str());
                add_vary_origin(headers);
            }
            // Not a cross-origin request; a cache must still not serve this response to one.
            None => {
                if self.varies_by_origin() {
                    add_vary_origin(headers);
                }
            }
        }
    }
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let c: Config = SchemaError::parse(config)?;
        for (field, list) in [
            ("allow_origins", &c.allow_origins),
            ("allow_methods", &c.allow_methods),
            ("allow_headers", &c.allow_headers),
            ("expose_headers", &c.expose_headers),
        ] {
            list.check_star(field)?;
        }
        if c.allow_origins.items.is_empty() {
            return Err(SchemaError::new(
                "allow_origins",
                "list at least one origin (e.g. `https://h5.example.gov.cn`), or `*`",
            ));
        }
        let origins = if c.allow_origins.is_any() {
            if c.allow_credential {
                return Err(SchemaError::new(
                    "allow_origins",
                    "`*` cannot be used with `allow_credential: true` (browsers refuse it); \
                     list the exact origins",
                ));
            }
            Origins::Any
        } else {
            let mut set = HashSet::new();
            for (i, o) in c.allow_origins.items.iter().enumerate() {
                let o = parse_origin(o)
                    .map_err(|m| SchemaError::new(c.allow_origins.path("allow_origins", i), m))?;
                set.insert(o.into_boxed_str());
            }
            Origins::Exact(set)
        };
        let methods = if c.allow_methods.is_any() {
            Allowed::Reflect
        } else {
            let mut out = Vec::new();
            for (i, m) in c.allow_methods.items.iter().enumerate() {
                let up = m.to_ascii_uppercase();
                if up.is_empty() || Method::from_bytes(up.as_bytes()).is_err() {
                    return Err(SchemaError::new(
                        c.allow_methods.path("allow_methods", i),
                        format!("`{m}` is not an HTTP method"),
                    ));
                }
                out.push(up);
            }
            Allowed::List(join(&out))
        };
        let headers = if c.allow_headers.is_any() {
            Allowed::Reflect
        } else {
            Allowed::List(join(&header_names(&c.allow_headers, "allow_headers")?))
        };
        let expose = if c.expose_headers.is_any() {
            if c.allow_credential {
                return Err(SchemaError::new(
                    "expose_headers",
                    "`*` is taken literally by browsers when `allow_credential` is true; list \
                     the header names",
                ));
            }
            Some(STAR.clone())
        } else {
            join(&header_names(&c.expose_headers, "expose_headers")?)
        };
        Ok(Arc::new(Cors {
            origins,
            methods,
            headers,
            expose,
            max_age: HeaderValue::from(c.max_age),
            credentials: c.allow_credential,
        }))
    }
}

/// Joins names into one header value; `None` for an empty list.
fn join(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

fn header_names(list: &StrList, field: &str) -> Result<Vec<String>, SchemaError> {
    let mut out = Vec::with_capacity(list.items.len());
    for (i, h) in list.items.iter().enumerate() {
        let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            SchemaError::new(list.path(field, i), format!("`{h}` is not a header name"))
        })?;
        out.push(name.as_str().to_string());
    }
    Ok(out)
}

/// Checks one configured origin (`scheme://host[:port]`) and returns it lower-cased, the way
/// browsers serialise the `Origin` header.
fn parse_origin(o: &str) -> Result<String, String> {
    let example = "expected `scheme://host[:port]`, e.g. `https://h5.example.gov.cn`";
    if o.eq_ignore_ascii_case("null") {
        return Err(
            "the `null` origin (sandboxed frames, local files) cannot be allowed safely".into(),
        );
    }
    let lower = o.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return Err(format!("`{o}` is not an origin; {example}"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !scheme_ok {
        return Err(format!("`{o}` has no valid scheme; {example}"));
    }
    if let Some(trimmed) = rest.strip_suffix('/') {
        if !trimmed.is_empty() && !trimmed.contains(['/', '?', '#']) {
            return Err(format!(
                "an origin has no path; did you mean `{scheme}://{trimmed}`?"
            ));
        }
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("`{o}` has a path, query or fragment; {example}"));
    }
    if rest.contains('*') {
        return Err(format!(
            "`{o}`: wildcards inside an origin are not supported; list each origin, or use `*` \
             alone"
        ));
    }
    if rest.is_empty() || rest.contains(['@', ' ', '\t', ',']) {
        return Err(format!("`{o}` has no valid host; {example}"));
    }
    // Split a port off the end (an IPv6 host is in brackets and ends with `]`).
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return Err(format!("`{o}` has no host; {example}"));
    }
    if let Some(p) = port {
        let n: u16 = match p.parse() {
            Ok(n) if n > 0 && !p.starts_with('0') => n,
            _ => return Err(format!("`{o}` has an invalid port `{p}`")),
        };
        let default = match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        if default == Some(n) {
            return Err(format!(
                "browsers omit the default port; write `{scheme}://{host}`"
            ));
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Headers(http::HeaderMap);

    impl HeaderEdits for Headers {
        fn get(&self, name: &str) -> Option<&HeaderValue> {
            self.0.get(name)
        }
        fn insert(&mut self, name: HeaderName, value: HeaderValue) {
            self.0.insert(name, value);
        }
        fn remove(&mut self, name: &str) {
            self.0.remove(name);
        }
    }

    fn build(config: serde_json::Value) -> Arc<dyn Plugin> {
        Factory.build(&config).unwrap()
    }

    fn err(config: serde_json::Value) -> SchemaError {
        Factory.build(&config).unwrap_err()
    }

    /// Runs the request phase; returns the reply (if any) and the ctx for the response phase.
    fn request(
        p: &Arc<dyn Plugin>,
        method: Method,
        headers: &[(&str, &str)],
    ) -> (Option<Reply>, RequestCtx) {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let req = RequestView {
            method: &method,
            path: "/api/x",
            query: None,
            headers: &map,
            client_ip: [127, 0, 0, 1].into(),
            tls: true,
        };
        let mut ctx = RequestCtx::default();
        let flow = p.request(&req, &mut ctx);
        match flow {
            Flow::Continue => (None, ctx),
            Flow::Respond(r) => (Some(r), ctx),
        }
    }

    fn response(p: &Arc<dyn Plugin>, ctx: &RequestCtx, upstream: &[(&str, &str)]) -> Headers {
        let mut h = Headers(http::HeaderMap::new());
        for (k, v) in upstream {
            h.0.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        p.response(ctx, 200, &mut h);
        h
    }

    fn reply_header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    fn h5() -> serde_json::Value {
        json!({
            "allow_origins": ["https://h5.example.gov.cn", "https://www.example.gov.cn"],
            "allow_methods": ["GET", "post"],
            "allow_headers": ["Authorization", "Content-Type"],
            "expose_headers": ["X-Request-Id"],
            "max_age": 600,
            "allow_credential": true
        })
    }

    const PREFLIGHT: [(&str, &str); 3] = [
        ("origin", "https://h5.example.gov.cn"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];

    #[test]
    fn preflight_from_allowed_origin_is_answered_with_bodiless_204() {
        let p = build(h5());
        let (reply, _) = request(&p, Method::OPTIONS, &PREFLIGHT);
        let r = reply.expect("answered by the plugin");
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(r.body, crate::contract::ReplyBody::Empty);
        assert_eq!(r.code, PREFLIGHT_CODE);
        assert_eq!(
            reply_header(&r, "access-control-allow-origin"),
            Some("https://h5.example.gov.cn")
        );
        assert_eq!(
            reply_header(&r, "access-control-allow-methods"),
            Some("GET, POST")
        );
        assert_eq!(
            reply_header(&r, "access-control-allow-headers"),
            Some("authorization, content-type")
        );
        assert_eq!(reply_header(&r, "access-control-max-age"), Some("600"));
        assert_eq!(
            reply_header(&r, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(reply_header(&r, "vary"), Some("Origin"));
    }

    #[test]
    fn preflight_from_disallowed_origin_gets_204_without_cors_headers() {
        let p = build(h5());
        let (reply, _) = request(
            &p,
            Method::OPTIONS,
            &[
                ("origin", "https://evil.example.com"),
                ("access-control-request-method", "POST"),
            ],
        );
        let r = reply.expect("answered");
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(r
            .headers
            .iter()
            .all(|(k, _)| !k.as_str().starts_with("access-control-")));
    }

    #[test]
    fn preflight_headers_survive_the_response_phase_on_the_gateway_answer() {
        let p = build(h5());
        let (reply, ctx) = request(&p, Method::OPTIONS, &PREFLIGHT);
        let r = reply.unwrap();
        let pairs: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        let h = response(&p, &ctx, &pairs);
        assert_eq!(
            h.0.get("access-control-allow-origin").unwrap(),
            "https://h5.example.gov.cn"
        );
        assert_eq!(
            h.0.get("access-control-allow-methods").unwrap(),
            "GET, POST"
        );
    }

    #[test]
    fn wildcard_methods_and_headers_echo_what_the_preflight_asks_for() {
        let p = build(json!({"allow_origins": "*"}));
        let (reply, _) = request(
            &p,
            Method::OPTIONS,
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PATCH"),
                ("access-control-request-headers", "x-custom"),
            ],
        );
        let r = reply.unwrap();
        assert_eq!(reply_header(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            reply_header(&r, "access-control-allow-methods"),
            Some("PATCH")
        );
        assert_eq!(
            reply_header(&r, "access-control-allow-headers"),
            Some("x-custom")
        );
        assert_eq!(reply_header(&r, "access-control-max-age"), Some("5"));
        assert_eq!(reply_header(&r, "access-control-allow-credentials"), None);
        assert_eq!(
            reply_header(&r, "vary"),
            Some("Access-Control-Request-Method, Access-Control-Request-Headers")
        );
    }

    #[test]
    fn options_without_request_method_is_not_a_preflight_and_proceeds() {
        let p = build(h5());
        let (reply, _) = request(
            &p,
            Method::OPTIONS,
            &[("origin", "https://h5.example.gov.cn")],
        );
        assert!(reply.is_none());
    }

    #[test]
    fn actual_request_from_allowed_origin_gets_origin_credentials_and_expose_headers() {
        let p = build(h5());
        let (reply, ctx) = request(&p, Method::POST, &[("origin", "https://h5.example.gov.cn")]);
        assert!(reply.is_none());
        let h = response(&p, &ctx, &[("vary", "Accept-Encoding")]);
        assert_eq!(
            h.0.get("access-control-allow-origin").unwrap(),
            "https://h5.example.gov.cn"
        );
        assert_eq!(h.0.get("access-control-allow-credentials").unwrap(), "true");
        assert_eq!(
            h.0.get("access-control-expose-headers").unwrap(),
            "x-request-id"
        );
        assert_eq!(h.0.get("vary").unwrap(), "Accept-Encoding, Origin");
    }

    #[test]
    fn origin_matches_case_insensitively_and_is_echoed_as_sent() {
        let p = build(json!({"allow_origins": ["https://H5.Example.gov.cn"]}));
        let (_, ctx) = request(&p, Method::GET, &[("origin", "https://h5.EXAMPLE.gov.cn")]);
        let h = response(&p, &ctx, &[]);
        assert_eq!(
            h.0.get("access-control-allow-origin").unwrap(),
            "https://h5.EXAMPLE.gov.cn"
        );
    }

    #[test]
    fn disallowed_origin_gets_no_cors_headers_but_the_request_proceeds() {
        let p = build(h5());
        let (reply, ctx) = request(&p, Method::GET, &[("origin", "https://evil.example.com")]);
        assert!(reply.is_none());
        let h = response(
            &p,
            &ctx,
            &[
                ("access-control-allow-origin", "*"),
                ("access-control-allow-credentials", "true"),
            ],
        );
        assert!(h.0.get("access-control-allow-origin").is_none());
        assert!(h.0.get("access-control-allow-credentials").is_none());
        assert_eq!(h.0.get("vary").unwrap(), "Origin");
    }

    #[test]
    fn upstream_cors_headers_are_replaced_for_allowed_origins() {
        let p = build(json!({"allow_origins": ["https://a.example"]}));
        let (_, ctx) = request(&p, Method::GET, &[("origin", "https://a.example")]);
        let h = response(
            &p,
            &ctx,
            &[
                ("access-control-allow-origin", "*"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "x-secret"),
            ],
        );
        assert_eq!(
            h.0.get("access-control-allow-origin").unwrap(),
            "https://a.example"
        );
        assert!(h.0.get("access-control-allow-credentials").is_none());
        assert!(h.0.get("access-control-expose-headers").is_none());
    }

    #[test]
    fn request_without_origin_gets_only_vary_origin() {
        let p = build(h5());
        let (reply, ctx) = request(&p, Method::GET, &[]);
        assert!(reply.is_none());
        let h = response(&p, &ctx, &[("vary", "origin")]);
        assert!(h.0.get("access-control-allow-origin").is_none());
        assert_eq!(h.0.get("vary").unwrap(), "origin");
    }

    #[test]
    fn wildcard_origin_without_credentials_sends_star_and_no_vary() {
        let p = build(json!({}));
        let (_, ctx) = request(&p, Method::GET, &[("origin", "https://any.example")]);
        let h = response(&p, &ctx, &[]);
        assert_eq!(h.0.get("access-control-allow-origin").unwrap(), "*");
        assert!(h.0.get("vary").is_none());
    }

    #[test]
    fn comma_separated_strings_are_accepted_like_apisix() {
        let p = build(json!({
            "allow_origins": "https://a.example, https://b.example:8443",
            "allow_methods": "GET,POST",
        }));
        let (_, ctx) = request(&p, Method::GET, &[("origin", "https://b.example:8443")]);
        let h = response(&p, &ctx, &[]);
        assert_eq!(
            h.0.get("access-control-allow-origin").unwrap(),
            "https://b.example:8443"
        );
    }

    #[test]
    fn wildcard_origin_with_credentials_is_a_config_error() {
        let e = err(json!({"allow_origins": "*", "allow_credential": true}));
        assert_eq!(e.path, "allow_origins");
        assert!(e.message.contains("allow_credential"), "{e}");
        let e = err(json!({"allow_credential": true}));
        assert_eq!(e.path, "allow_origins");
    }

    #[test]
    fn wildcard_expose_headers_with_credentials_is_a_config_error() {
        let e = err(json!({
            "allow_origins": ["https://a.example"],
            "expose_headers": "*",
            "allow_credential": true
        }));
        assert_eq!(e.path, "expose_headers");
    }

    #[test]
    fn star_mixed_with_origins_is_a_config_error() {
        let e = err(json!({"allow_origins": ["https://a.example", "*"]}));
        assert_eq!(e.path, "allow_origins[1]");
    }

    #[test]
    fn malformed_origins_are_rejected_with_their_index_and_a_hint() {
        let cases = [
            ("https://a.example/", "did you mean `https://a.example`?"),
            ("https://a.example/app", "path"),
            ("a.example", "is not an origin"),
            ("null", "`null` origin"),
            ("https://*.example.gov.cn", "wildcards"),
            ("https://a.example:443", "write `https://a.example`"),
            ("https://a.example:99999", "invalid port"),
            ("1https://a.example", "no valid scheme"),
        ];
        for (bad, hint) in cases {
            let e = err(json!({"allow_origins": ["https://ok.example", bad]}));
            assert_eq!(e.path, "allow_origins[1]", "{bad}");
            assert!(e.message.contains(hint), "{bad}: {e}");
        }
    }

    #[test]
    fn ipv6_and_non_default_port_origins_are_accepted() {
        let origins = ["http://[::1]:8080", "http://[::1]", "http://localhost:3000"];
        build(json!({ "allow_origins": origins }));
    }

    #[test]
    fn bad_method_and_header_names_are_rejected_with_their_path() {
        let e = err(json!({"allow_methods": ["GET", "PO ST"]}));
        assert_eq!(e.path, "allow_methods[1]");
        let e = err(json!({"allow_headers": ["x-ok", "bad header"]}));
        assert_eq!(e.path, "allow_headers[1]");
        let e = err(json!({"expose_headers": "x-ok,bad:header"}));
        assert_eq!(e.path, "expose_headers");
    }

    #[test]
    fn unknown_field_and_wrong_types_are_rejected_with_their_path() {
        let e = err(json!({"allow_origin": "*"}));
        assert!(e.message.contains("unknown field `allow_origin`"), "{e}");
        let e = err(json!({"max_age": -1}));
        assert_eq!(e.path, "max_age");
        let e = err(json!({"allow_credential": "yes"}));
        assert_eq!(e.path, "allow_credential");
        let e = err(json!({"allow_origins": [1]}));
        assert_eq!(e.path, "allow_origins[0]");
    }

    #[test]
    fn empty_origin_list_is_a_config_error() {
        let e = err(json!({"allow_origins": []}));
        assert_eq!(e.path, "allow_origins");
    }
}
