//! What an h5 origin says about its own paths, put back under the route's prefix.
//!
//! The origin of `/h5/agency-a/*` sees requests with the prefix stripped and answers as if it
//! were at the root of its own site: it redirects to `/login`, sets cookies on `Path=/` or on its
//! own domain. On the shared H5 domain those would leave the agency's prefix (a redirect to
//! another agency's pages, or to nothing) and a cookie would reach every agency's pages.
//!
//! - [`location`]: a path (`/login?x=1`) gets the prefix; an absolute URL whose authority is
//!   the origin's own (one of the service's targets) or the request's `Host` becomes the prefix
//!   plus its path, query and fragment; URLs of other sites and relative references are left
//!   alone (another site is the origin's business; a relative reference already resolves under
//!   the prefix). Absolute URLs are parsed with the `url` crate (WHATWG parsing, what browsers
//!   do with a `Location`).
//! - [`set_cookie`]: `Path` becomes the prefix plus the path (`Path=/` → `Path=/h5/a/`; no
//!   `Path` → `Path=/h5/a/`), and `Domain` is removed, so the cookie is host-only and stays
//!   under the prefix. This is an attribute-level rewrite rather than the `cookie` crate's
//!   parse-and-print: that crate re-renders what it parses (it drops attributes it does not
//!   know, changes `Expires` formats and attribute case), and an origin's cookie must reach the
//!   browser exactly as sent apart from the two attributes the gateway owns. The name/value pair
//!   and every other attribute are kept byte for byte.
//!
//! Both return `None` when nothing changes, so the common answer allocates nothing.

/// The rewritten `Location`, or `None` to keep it. `own` are the authorities that mean "this
/// origin" (`host[:port]`, compared without case; a missing port is the scheme's default).
pub fn location<'a>(
    value: &str,
    prefix: &str,
    own: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    if value.starts_with('/') {
        if value.starts_with("//") || value.starts_with("/\\") {
            // Scheme-relative: another site, or this one by name; parse it as a URL.
            return absolute(&format!("http:{value}"), prefix, own);
        }
        return Some(format!("{prefix}{value}"));
    }
    absolute(value, prefix, own)
}

fn absolute<'a>(
    value: &str,
    prefix: &str,
    own: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let url = url::Url::parse(value).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default();
    let ours = own.into_iter().any(|a| {
        let (h, p) = split(a);
        h.eq_ignore_ascii_case(host) && p.map_or(url.port().is_none(), |p| Some(p) == port)
    });
    if !ours {
        return None;
    }
    let mut out = String::with_capacity(prefix.len() + value.len());
    out.push_str(prefix);
    out.push_str(url.path());
    if let Some(q) = url.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = url.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// `host[:port]` → host (brackets kept for IPv6, as `url` prints them) and port.
fn split(authority: &str) -> (&str, Option<u16>) {
    if authority.starts_with('[') {
        return match authority.split_once("]:") {
            Some((h, p)) => (&authority[..h.len() + 1], p.parse().ok()),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (authority, None),
    }
}

/// The rewritten `Set-Cookie`, or `None` when the header is not text (then it is dropped by
/// the caller: a cookie the gateway cannot confine must not reach the shared domain).
pub fn set_cookie(value: &str, prefix: &str) -> Option<String> {
    let mut parts = value.split(';');
    let pair = parts.next()?;
    let mut out = String::with_capacity(value.len() + prefix.len() + 8);
    out.push_str(pair);
    let mut has_path = false;
    for attr in parts {
        let trimmed = attr.trim_start();
        let name = trimmed.split_once('=').map_or(trimmed, |(n, _)| n).trim();
        if name.eq_ignore_ascii_case("domain") {
            continue;
        }
        out.push(';');
        if name.eq_ignore_ascii_case("path") {
            has_path = true;
            let lead = &attr[..attr.len() - trimmed.len()];
            let path = trimmed.split_once('=').map_or("", |(_, v)| v.trim());
            out.push_str(lead);
            out.push_str("Path=");
            out.push_str(prefix);
            // A path that is not absolute is the default path (RFC 6265 §5.2.4): the prefix.
            out.push_str(if path.starts_with('/') { path } else { "/" });
        } else {
            out.push_str(attr);
        }
    }
    if !has_path {
        out.push_str("; Path=");
        out.push_str(prefix);
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/h5/agency-a";
    const OWN: [&str; 2] = ["10.0.0.7:8080", "h5.city.example"];

    #[test]
    fn paths_get_the_prefix() {
        assert_eq!(
            location("/login?x=1", P, OWN).unwrap(),
            "/h5/agency-a/login?x=1"
        );
        assert_eq!(location("/", P, OWN).unwrap(), "/h5/agency-a/");
    }

    #[test]
    fn relative_references_are_kept() {
        assert_eq!(location("next?x=1", P, OWN), None);
        assert_eq!(location("../up", P, OWN), None);
    }

    #[test]
    fn absolute_urls_of_this_origin_come_back_inside_the_prefix() {
        assert_eq!(
            location("http://10.0.0.7:8080/done?a=b#top", P, OWN).unwrap(),
            "/h5/agency-a/done?a=b#top"
        );
        assert_eq!(
            location("https://H5.City.Example/x", P, OWN).unwrap(),
            "/h5/agency-a/x"
        );
        // Another port of the same host is another origin.
        assert_eq!(location("http://10.0.0.7:9090/x", P, OWN), None);
    }

    #[test]
    fn other_sites_are_kept() {
        assert_eq!(location("https://open.weixin.qq.com/connect", P, OWN), None);
        assert_eq!(location("//evil.example/x", P, OWN), None);
        assert_eq!(
            location("//h5.city.example/x", P, OWN).unwrap(),
            "/h5/agency-a/x"
        );
        assert_eq!(location("javascript:alert(1)", P, OWN), None);
    }

    #[test]
    fn cookie_paths_go_under_the_prefix_and_domains_go() {
        assert_eq!(
            set_cookie("sid=abc; Path=/; HttpOnly; Secure; SameSite=Lax", P).unwrap(),
            "sid=abc; Path=/h5/agency-a/; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            set_cookie("lang=zh; Domain=.city.example; Max-Age=60", P).unwrap(),
            "lang=zh; Max-Age=60; Path=/h5/agency-a/"
        );
        assert_eq!(
            set_cookie(
                "a=1;path=/app;Expires=Wed, 21 Oct 2026 07:28:00 GMT;Partitioned",
                P
            )
            .unwrap(),
            "a=1;Path=/h5/agency-a/app;Expires=Wed, 21 Oct 2026 07:28:00 GMT;Partitioned"
        );
        assert_eq!(
            set_cookie("a=1; Path=rel", P).unwrap(),
            "a=1; Path=/h5/agency-a/"
        );
        assert_eq!(
            set_cookie("a=\"q;\"", P).unwrap(),
            "a=\"q;\"; Path=/h5/agency-a/"
        );
    }
}
