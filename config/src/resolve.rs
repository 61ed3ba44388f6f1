//! Name resolution for upstream targets, behind a trait so that who checks a config decides what
//! a host name means.
//!
//! - The gateway uses [`SystemResolver`]: a name must resolve where the gateway runs, and the first
//!   address is the one it connects to (looked up again at every reload).
//! - The control plane uses [`SyntaxOnly`]: an IP literal is taken as it is; a name is accepted
//!   when it is a syntactically valid DNS name (IDNA applied), without a look-up. The control plane
//!   runs in another network than the gateways, so its DNS view must not decide what they can
//!   reach. A name that a gateway then cannot resolve makes that gateway refuse the snapshot
//!   (it keeps serving the last good one and reports the error in `/status` and its node state).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Why a target's host cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` is not a host name or IP address")]
    NotAHostName(String),
    #[error("cannot resolve: {0}")]
    CannotResolve(std::io::Error),
    #[error("resolves to no address")]
    NoAddress,
}

/// Why a `host:port` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("`{0}`: expected `host:port`")]
    NoPort(String),
    #[error("`{authority}`: `{port}` is not a port number")]
    BadPort { authority: String, port: String },
    #[error("`{0}`: missing host")]
    NoHost(String),
}

/// Turns a target's host into an address, or says why it cannot be used.
pub trait Resolve {
    /// `Ok(Some(addr))`: use this address. `Ok(None)`: the name is acceptable but was not looked up
    /// here.
    fn resolve(&self, host: &str, port: u16) -> Result<Option<SocketAddr>, ResolveError>;
}

/// Looks names up with the operating system's resolver (the gateway's view).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Result<Option<SocketAddr>, ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(Some(SocketAddr::new(ip, port)));
        }
        (host, port)
            .to_socket_addrs()
            .map_err(ResolveError::CannotResolve)?
            .next()
            .map(Some)
            .ok_or(ResolveError::NoAddress)
    }
}

/// Checks the syntax of names without looking them up (the control plane's view).
#[derive(Debug, Clone, Copy, Default)]
pub struct SyntaxOnly;

impl Resolve for SyntaxOnly {
    fn resolve(&self, host: &str, port: u16) -> Result<Option<SocketAddr>, ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(Some(SocketAddr::new(ip, port)));
        }
        match url::Host::parse(host) {
            Ok(url::Host::Domain(d)) if is_dns_name(&d) => Ok(None),
            Ok(_) | Err(_) => Err(ResolveError::NotAHostName(host.to_string())),
        }
    }
}

/// An IP address, with or without the `[...]` an IPv6 literal carries in `host:port`.
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// Letters, digits and hyphens in labels of 1 to 63 characters, 253 in all (after IDNA).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `host:port` → (host, port), with the message a config error shows. An IPv6 literal comes back
/// without its brackets (`[::1]:80` → `::1`).
pub fn split_authority(authority: &str) -> Result<(&str, u16), AuthorityError> {
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| AuthorityError::NoPort(authority.to_string()))?;
    let port = port.parse::<u16>().map_err(|_| AuthorityError::BadPort {
        authority: authority.to_string(),
        port: port.to_string(),
    })?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(AuthorityError::NoHost(authority.to_string()));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_accepts_names_it_cannot_resolve_and_refuses_bad_syntax() {
        let r = SyntaxOnly;
        assert_eq!(r.resolve("backend.tax.internal", 8080).unwrap(), None);
        assert_eq!(r.resolve("no-such-host.invalid", 80).unwrap(), None);
        assert_eq!(
            r.resolve("10.0.0.7", 80).unwrap(),
            Some("10.0.0.7:80".parse().unwrap())
        );
        assert_eq!(
            r.resolve("[::1]", 80).unwrap(),
            Some("[::1]:80".parse().unwrap())
        );
        for bad in ["bad_name", "a..b", "-a.b", "a b", "exa mple.com", "x/y"] {
            assert!(r.resolve(bad, 80).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_gateway_resolves_and_says_why_it_cannot() {
        let r = SystemResolver;
        assert_eq!(
            r.resolve("127.0.0.1", 9).unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert!(r.resolve("localhost", 9).unwrap().is_some());
        let e = r
            .resolve("no-such-host.invalid", 80)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot resolve"), "{e}");
    }

    #[test]
    fn authorities_split_with_messages() {
        assert_eq!(split_authority("a.b:80"), Ok(("a.b", 80)));
        assert_eq!(split_authority("[::1]:80"), Ok(("::1", 80)));
        let e = |a: &str| split_authority(a).unwrap_err().to_string();
        assert!(e("a.b").contains("host:port"));
        assert!(e("a.b:x").contains("port number"));
        assert!(e(":80").contains("missing host"));
    }
}
