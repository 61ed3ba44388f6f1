//! `ip-restriction`: allow or deny requests by client address.
//!
//! Config: `{ "allow": [networks], "deny": [networks], "message": "…" }` — at least one list
//! non-empty. A client in `deny` is refused, even if it is also in `allow`; when `allow` is not
//! empty, a client outside it is refused too. Refusals are 403 `ip_denied`.
//!
//! The address is [`RequestCtx::client_ip`], i.e. after the gateway's trusted-proxy resolution:
//! this plugin never reads `X-Forwarded-For` itself. See `docs/plugins/ip-restriction.md`.

use std::borrow::Cow;
use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;

use crate::cidr::CidrSet;
use crate::contract::{Flow, Plugin, PluginFactory, Reply, RequestCtx, RequestView, SchemaError};

/// Runs before authentication (`jwt-auth`, 2600): an address that may not call is refused
/// before a token is even looked at.
pub const PRIORITY: i32 = 3000;

const DEFAULT_MESSAGE: &str = "your address is not allowed to call this route";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// If not empty, only these networks may call.
    #[serde(default)]
    allow: CidrSet,
    /// These networks may never call (wins over `allow`).
    #[serde(default)]
    deny: CidrSet,
    /// The message of the 403 (the code is always `ip_denied`).
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug)]
pub struct IpRestriction {
    allow: CidrSet,
    deny: CidrSet,
    message: Cow<'static, str>,
}

impl IpRestriction {
    /// True if a client at `ip` may pass.
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn request(&self, _req: &RequestView<'_>, ctx: &mut RequestCtx) -> Flow {
        if self.permits(ctx.client_ip) {
            Flow::Continue
        } else {
            Flow::Respond(Reply::new(
                StatusCode::FORBIDDEN,
                "ip_denied",
                self.message.clone(),
            ))
        }
    }
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let c: Config = SchemaError::parse(config)?;
        if c.allow.is_empty() && c.deny.is_empty() {
            return Err(SchemaError::new(
                "",
                "at least one of `allow` or `deny` must list a network (e.g. `10.0.0.0/8`)",
            ));
        }
        let message = match c.message {
            None => Cow::Borrowed(DEFAULT_MESSAGE),
            Some(m) if m.trim().is_empty() || m.len() > 1024 => {
                return Err(SchemaError::new(
                    "message",
                    "expected a non-empty message of at most 1024 bytes",
                ))
            }
            Some(m) => Cow::Owned(m),
        };
        Ok(Arc::new(IpRestriction {
            allow: c.allow,
            deny: c.deny,
            message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(config: serde_json::Value) -> Arc<dyn Plugin> {
        Factory.build(&config).unwrap()
    }

    /// Runs the request phase for a client at `ip`; `None` means it continued.
    fn run(p: &Arc<dyn Plugin>, ip: &str) -> Option<Reply> {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let headers = http::HeaderMap::new();
        let req = RequestView {
            method: &http::Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            client_ip: ip,
            tls: false,
        };
        let mut ctx = RequestCtx {
            client_ip: ip,
            ..RequestCtx::default()
        };
        match p.request(&req, &mut ctx) {
            Flow::Continue => None,
            Flow::Respond(r) => Some(r),
        }
    }

    #[test]
    fn client_in_allow_list_passes() {
        let p = build(json!({"allow": ["10.0.0.0/8"]}));
        assert!(run(&p, "10.1.2.3").is_none());
    }

    #[test]
    fn client_outside_a_non_empty_allow_list_is_denied_with_403_ip_denied() {
        let p = build(json!({"allow": ["10.0.0.0/8"]}));
        let r = run(&p, "192.0.2.1").expect("denied");
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.code, "ip_denied");
        assert_eq!(r.message, DEFAULT_MESSAGE);
    }

    #[test]
    fn client_in_deny_list_is_denied() {
        let p = build(json!({"deny": ["192.0.2.0/24", "2001:db8::/32"]}));
        assert_eq!(run(&p, "192.0.2.9").unwrap().code, "ip_denied");
        assert_eq!(run(&p, "2001:db8::5").unwrap().code, "ip_denied");
    }

    #[test]
    fn client_outside_deny_list_passes_when_allow_is_empty() {
        let p = build(json!({"deny": ["192.0.2.0/24"]}));
        assert!(run(&p, "198.51.100.1").is_none());
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = build(json!({"allow": ["10.0.0.0/8"], "deny": ["10.6.6.0/24"]}));
        assert!(run(&p, "10.1.1.1").is_none());
        assert_eq!(run(&p, "10.6.6.6").unwrap().code, "ip_denied");
    }

    #[test]
    fn ipv4_mapped_client_address_is_matched_as_ipv4() {
        let p = build(json!({"allow": ["10.0.0.0/8"]}));
        assert!(run(&p, "::ffff:10.0.0.1").is_none());
        assert!(run(&p, "::ffff:192.0.2.1").is_some());
    }

    #[test]
    fn custom_message_is_used_in_the_403() {
        let p = build(json!({"deny": ["192.0.2.1"], "message": "内网专用接口"}));
        assert_eq!(run(&p, "192.0.2.1").unwrap().message, "内网专用接口");
    }

    #[test]
    fn config_with_neither_list_is_rejected() {
        for c in [json!({}), json!(null), json!({"allow": [], "deny": []})] {
            let e = Factory.build(&c).unwrap_err();
            assert_eq!(e.path, "");
            assert!(
                e.message.contains("at least one of `allow` or `deny`"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_network_is_reported_with_its_field_path() {
        let e = Factory
            .build(&json!({"allow": ["10.0.0.0/8"], "deny": ["10.0.0.0/8", "10.1.0.0/8"]}))
            .unwrap_err();
        assert_eq!(e.path, "deny[1]");
        assert!(e.message.contains("did you mean `10.0.0.0/8`"), "{e}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = Factory
            .build(&json!({"whitelist": ["10.0.0.0/8"]}))
            .unwrap_err();
        assert!(e.message.contains("unknown field `whitelist`"), "{e}");
    }

    #[test]
    fn empty_message_is_rejected() {
        let e = Factory
            .build(&json!({"deny": ["10.0.0.0/8"], "message": " "}))
            .unwrap_err();
        assert_eq!(e.path, "message");
    }
}
