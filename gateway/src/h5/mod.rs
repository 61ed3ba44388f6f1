//! H5 services on the shared H5 domain: what the proxy does for routes of `kind: h5` services,
//! and the channels' domain verification files.
//!
//! Mini-programs' web-views only open registered domains, proved by a file at the domain's
//! root; agencies' pages are served under one shared domain by path prefix (`/h5/agency-a/*`).
//! So the gateway (1) answers the verification files itself, before routing ([`file`]), (2)
//! puts the origin's redirects and cookies back under the route's prefix ([`rewrite`]), (3)
//! adds security headers whose frame policy follows the caller's channel ([`respond`]), and (4)
//! caches static assets ([`cache`]). Everything per snapshot (the files by name, the headers per
//! channel) is built when the config compiles (`fenfa_config::h5`); API routes pay one `Option`
//! check per phase and nothing else. The operator's page is `docs/h5.md`.

pub mod cache;
pub mod rewrite;

use fenfa_config::h5::{Channel, H5Headers};
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::compile::{CompiledService, Runtime};

/// The content of the verification file this request asks for, if it is one: a `GET`/`HEAD`
/// of `/<name>` on an H5 host. A request that is not costs a map look-up when files are
/// configured, and nothing when none are.
pub fn file<'a>(
    rt: &'a Runtime,
    req: &RequestHeader,
    host: Option<&str>,
    path: &str,
) -> Option<&'a str> {
    if rt.h5.files.is_empty() || !matches!(req.method, http::Method::GET | http::Method::HEAD) {
        return None;
    }
    let content = rt.h5.files.get(path.strip_prefix('/')?)?;
    rt.h5.serves_host(host).then_some(&**content)
}

/// An h5 request's own state: the route's prefix as the client sent it (`/h5/agency-a`).
#[derive(Debug)]
pub struct H5Request {
    pub prefix: Box<str>,
}

/// What [`respond`] needs besides the answer.
pub struct Answer<'a> {
    pub prefix: &'a str,
    pub headers: &'a H5Headers,
    /// The verified caller's channel (`chn`), if any.
    pub channel: Option<&'a str>,
    /// The request came over the HTTPS listener.
    pub tls: bool,
    /// The request's `Host`.
    pub host: Option<&'a str>,
    /// The route's service: its targets (`host:port` as configured) are the origin's own
    /// authorities.
    pub service: &'a CompiledService,
    /// `X-Cache-Status`.
    pub cache_status: &'static str,
}

/// Rewrites an h5 answer's head: `Location`, every `Set-Cookie`, the security headers the
/// origin did not set, and `X-Cache-Status`.
pub fn respond(resp: &mut ResponseHeader, a: &Answer<'_>) {
    if let Some(loc) = resp.headers.get(http::header::LOCATION) {
        let targets = a.service.pool.targets().iter();
        let own = targets.map(|t| t.authority.as_str()).chain(a.host);
        let new = loc
            .to_str()
            .ok()
            .and_then(|l| rewrite::location(l, a.prefix, own));
        if let Some(v) = new.and_then(|v| HeaderValue::try_from(v).ok()) {
            let _ = resp.insert_header(http::header::LOCATION, v);
        }
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        let cookies: Vec<HeaderValue> = resp
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| rewrite::set_cookie(v, a.prefix))
            .filter_map(|v| HeaderValue::try_from(v).ok())
            .collect();
        resp.remove_header(&http::header::SET_COOKIE);
        for c in cookies {
            let _ = resp.append_header(http::header::SET_COOKIE, c);
        }
    }
    let channel = a.channel.map_or(Channel::Unknown, Channel::of);
    let mut add = |name: HeaderName, value: HeaderValue| {
        if !resp.headers.contains_key(&name) {
            let _ = resp.insert_header(name, value);
        }
    };
    add(
        http::header::CONTENT_SECURITY_POLICY,
        a.headers.csp(channel).clone(),
    );
    add(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    add(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if a.tls {
        add(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    let _ = resp.insert_header("x-cache-status", HeaderValue::from_static(a.cache_status));
}
