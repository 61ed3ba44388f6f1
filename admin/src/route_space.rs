//! The agencies' shares of the URL space, so one agency cannot take another's callers.
//!
//! Two rules. (1) An agency may be given path prefixes and hosts of its own
//! ([`Agency::path_prefixes`], [`Agency::hosts`]); a route of its services outside them is
//! refused at the offending field (`paths[1]`, `hosts[0]`). (2) Live routes (those of published
//! services) of different agencies must not overlap — a request that both could match by host,
//! path and method — unless a system admin allowed the overlap on one of them with a reason
//! ([`Route::allow_overlap`], kept on the route and so in the admin audit).
//!
//! Patterns are compared as patterns (`/a/{id}`, `/a/*`, `*.city.example`), never by trying
//! requests. This module may not resolve names or look at anything but the snapshot.

use crate::error::FieldError;
use crate::model::{Agency, Lifecycle, Route, Service, Snapshot};

/// Whether `path` lies inside `prefix` (`/social/` and `/social` both cover `/social`,
/// `/social/x` and `/social/*`, never `/socialx`).
pub fn path_within(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty() || path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
}

/// Whether every name `route_host` matches is also matched by `agency_host`.
pub fn host_within(route_host: &str, agency_host: &str) -> bool {
    let (r, a) = (
        route_host.to_ascii_lowercase(),
        agency_host.to_ascii_lowercase(),
    );
    match a.strip_prefix("*.") {
        None => r == a,
        Some(suffix) => {
            let r = r.strip_prefix("*.").unwrap_or(&r);
            r.len() > suffix.len()
                && r.ends_with(suffix)
                && r.as_bytes()[r.len() - suffix.len() - 1] == b'.'
        }
    }
}

/// Rule (1) for one route of `agency`: the first path or host outside the agency's own, or
/// inside another agency's (`all` is every agency).
pub fn outside_agency(
    agency: &Agency,
    all: &[Agency],
    paths: &[String],
    hosts: &[String],
) -> Option<FieldError> {
    let others = || all.iter().filter(|a| a.id != agency.id);
    for (i, p) in paths.iter().enumerate() {
        let own = agency
            .path_prefixes
            .iter()
            .any(|x| path_within(p, x.as_str()));
        if let Some(other) =
            others().find(|a| a.path_prefixes.iter().any(|x| path_within(p, x.as_str())))
        {
            if !own {
                return Some(FieldError::new(
                    format!("paths[{i}]"),
                    format!(
                        "`{p}` is inside the paths of agency `{}` ({})",
                        other.name,
                        list(other.path_prefixes.iter().map(|x| x.as_str()))
                    ),
                ));
            }
        }
    }
    for (i, h) in hosts.iter().enumerate() {
        let own = agency.hosts.iter().any(|x| host_within(h, x.as_str()));
        if let Some(other) = others().find(|a| a.hosts.iter().any(|x| host_within(h, x.as_str()))) {
            if !own {
                return Some(FieldError::new(
                    format!("hosts[{i}]"),
                    format!(
                        "`{h}` is a host of agency `{}` ({})",
                        other.name,
                        list(other.hosts.iter().map(|x| x.as_str()))
                    ),
                ));
            }
        }
    }
    if !agency.path_prefixes.is_empty() {
        for (i, p) in paths.iter().enumerate() {
            if !agency
                .path_prefixes
                .iter()
                .any(|x| path_within(p, x.as_str()))
            {
                return Some(FieldError::new(
                    format!("paths[{i}]"),
                    format!(
                        "`{p}` is outside the paths of agency `{}` ({})",
                        agency.name,
                        list(agency.path_prefixes.iter().map(|x| x.as_str()))
                    ),
                ));
            }
        }
    }
    if !agency.hosts.is_empty() {
        if hosts.is_empty() {
            return Some(FieldError::new(
                "hosts",
                format!(
                    "agency `{}` serves only its own hosts ({}); name at least one",
                    agency.name,
                    list(agency.hosts.iter().map(|x| x.as_str()))
                ),
            ));
        }
        for (i, h) in hosts.iter().enumerate() {
            if !agency.hosts.iter().any(|x| host_within(h, x.as_str())) {
                return Some(FieldError::new(
                    format!("hosts[{i}]"),
                    format!(
                        "`{h}` is outside the hosts of agency `{}` ({})",
                        agency.name,
                        list(agency.hosts.iter().map(|x| x.as_str()))
                    ),
                ));
            }
        }
    }
    None
}

fn list<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

fn is_param(seg: &str) -> bool {
    seg.starts_with('{') && seg.ends_with('}')
}

fn segments_overlap(a: &[&str], b: &[&str]) -> bool {
    match (a.first(), b.first()) {
        // A prefix pattern matches the rest, zero or more segments.
        (Some(&"*"), _) | (_, Some(&"*")) => true,
        (None, None) => true,
        (None, _) | (_, None) => false,
        (Some(x), Some(y)) => {
            (x == y || is_param(x) || is_param(y)) && segments_overlap(&a[1..], &b[1..])
        }
    }
}

/// Whether some request path matches both patterns.
pub fn paths_overlap(a: &str, b: &str) -> bool {
    let split = |p: &str| -> Vec<String> {
        p.trim_start_matches('/')
            .split('/')
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (split(a), split(b));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    segments_overlap(&a, &b)
}

fn host_patterns_overlap(a: &str, b: &str) -> bool {
    host_within(a, b) || host_within(b, a) || a.eq_ignore_ascii_case(b) || {
        // Two wildcards overlap when one suffix is inside the other.
        match (a.strip_prefix("*."), b.strip_prefix("*.")) {
            (Some(x), Some(y)) => {
                host_within(&format!("a.{x}"), b) || host_within(&format!("a.{y}"), a)
            }
            _ => false,
        }
    }
}

/// Whether some request (host, path, method) matches both routes.
pub fn routes_overlap(a: &Route, b: &Route) -> Option<(usize, String)> {
    let hosts = a.hosts.is_empty()
        || b.hosts.is_empty()
        || a.hosts
            .iter()
            .any(|x| b.hosts.iter().any(|y| host_patterns_overlap(x, y)));
    let methods = a.methods.is_empty()
        || b.methods.is_empty()
        || a.methods
            .iter()
            .any(|x| b.methods.iter().any(|y| x.eq_ignore_ascii_case(y)));
    if !(hosts && methods) {
        return None;
    }
    a.paths.iter().enumerate().find_map(|(i, p)| {
        b.paths
            .iter()
            .find(|q| paths_overlap(p, q))
            .map(|q| (i, q.clone()))
    })
}

fn live(s: &Service) -> bool {
    s.status == Lifecycle::Published && !s.channels.is_empty()
}

/// Rule (2): overlaps between live routes of different agencies that involve the touched
/// resource (a route, or a service's routes), as field errors. Paths are the route's own
/// (`paths[0]`) when the touched resource is that route, else `route/<name>.paths[0]`.
pub fn overlaps(s: &Snapshot, touched: (&str, &str)) -> Vec<FieldError> {
    let live_routes: Vec<(&Route, &Service)> = s
        .routes
        .iter()
        .filter_map(|r| s.service(&r.service_id).filter(|x| live(x)).map(|x| (r, x)))
        .collect();
    let involved = |r: &Route| match touched {
        (crate::store::kind::ROUTE, id) => r.id == id,
        (crate::store::kind::SERVICE, id) => r.service_id == id,
        _ => false,
    };
    let mut out = Vec::new();
    for (r, svc) in live_routes.iter().filter(|(r, _)| involved(r)) {
        for (o, other) in &live_routes {
            if other.agency_id == svc.agency_id
                || r.allow_overlap.is_some()
                || o.allow_overlap.is_some()
            {
                continue;
            }
            if let Some((i, theirs)) = routes_overlap(r, o) {
                let agency = s
                    .agency(&other.agency_id)
                    .map(|a| a.name.to_string())
                    .unwrap_or_else(|| other.agency_id.clone());
                let path = if touched == (crate::store::kind::ROUTE, r.id.as_str()) {
                    format!("paths[{i}]")
                } else {
                    format!("route/{}.paths[{i}]", r.name)
                };
                out.push(FieldError::new(
                    path,
                    format!(
                        "`{}` overlaps route `{}` (`{theirs}`) of agency `{agency}` on the same hosts and methods; only a system admin may allow that, with `allow_overlap.reason`",
                        r.paths[i], o.name
                    ),
                ));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_overlap_when_one_request_matches_both() {
        assert!(paths_overlap("/health/*", "/health/clinic/slots"));
        assert!(paths_overlap("/health/*", "/health"));
        assert!(paths_overlap("/*", "/anything/at/all"));
        assert!(paths_overlap("/a/{id}", "/a/b"));
        assert!(paths_overlap("/a/{id}/c", "/a/b/*"));
        assert!(!paths_overlap("/a/{id}", "/a/b/c"));
        assert!(!paths_overlap("/health/*", "/healthx"));
        assert!(!paths_overlap("/a/b", "/a/c"));
    }

    #[test]
    fn prefixes_and_hosts_cover_what_they_should() {
        assert!(path_within("/social/pension/*", "/social/"));
        assert!(path_within("/social", "/social/"));
        assert!(!path_within("/socialx", "/social"));
        assert!(host_within("a.city.example", "*.city.example"));
        assert!(host_within("*.a.city.example", "*.city.example"));
        assert!(!host_within("city.example", "*.city.example"));
        assert!(host_patterns_overlap("*.a.example", "*.example"));
        assert!(!host_patterns_overlap("a.example", "b.example"));
    }
}
