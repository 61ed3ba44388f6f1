//! `channel-check`: a service is served only on the channels it is published on, and optionally
//! only to listed mini-program apps.
//!
//! The gateway attaches this plugin to every route of a service that has a `publish` section, so
//! publication is a property of the service (as in the control plane), not something each route
//! must remember. It needs an identity from `jwt-auth` (which runs before it): a request without
//! one is refused with 401 `missing_token`.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;

use crate::contract::{Flow, Plugin, PluginFactory, Reply, RequestCtx, RequestView, SchemaError};

/// The channels a mini-program can call from.
pub const CHANNELS: [&str; 3] = ["wechat", "alipay", "baidu"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Channels the service is published on.
    channels: Vec<String>,
    /// If not empty, only these app ids may call the service.
    #[serde(default)]
    apps: Vec<String>,
}

#[derive(Debug)]
pub struct ChannelCheck {
    channels: Vec<String>,
    apps: Vec<String>,
}

impl Plugin for ChannelCheck {
    fn name(&self) -> &'static str {
        "channel-check"
    }

    fn priority(&self) -> i32 {
        2550
    }

    fn request(&self, _req: &RequestView<'_>, ctx: &mut RequestCtx) -> Flow {
        let Some(id) = &ctx.identity else {
            return Flow::Respond(
                Reply::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_token",
                    "this service needs a signed-in caller",
                )
                .with_header(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"fenfa\""),
                ),
            );
        };
        if !self.channels.contains(&id.channel) {
            return Flow::Respond(Reply::new(
                StatusCode::FORBIDDEN,
                "channel_not_published",
                "the service is not published on the caller's channel",
            ));
        }
        if !self.apps.is_empty() && !self.apps.contains(&id.app) {
            return Flow::Respond(Reply::new(
                StatusCode::FORBIDDEN,
                "app_not_allowed",
                "the calling mini-program app may not use this service",
            ));
        }
        Flow::Continue
    }
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "channel-check"
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let c: Config = SchemaError::parse(config)?;
        for (i, ch) in c.channels.iter().enumerate() {
            if !CHANNELS.contains(&ch.as_str()) {
                return Err(SchemaError::new(
                    format!("channels[{i}]"),
                    format!(
                        "`{ch}` is not a channel; expected one of {}",
                        CHANNELS.join(", ")
                    ),
                ));
            }
        }
        for (i, app) in c.apps.iter().enumerate() {
            if app.is_empty() {
                return Err(SchemaError::new(
                    format!("apps[{i}]"),
                    "an app id cannot be empty",
                ));
            }
        }
        Ok(Arc::new(ChannelCheck {
            channels: c.channels,
            apps: c.apps,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Identity;

    fn ctx(channel: &str, app: &str) -> RequestCtx {
        RequestCtx {
            identity: Some(Identity {
                user: "u1".into(),
                channel: channel.into(),
                app: app.into(),
                token_id: None,
                expires_at: u64::MAX,
            }),
            ..RequestCtx::default()
        }
    }

    fn run(p: &Arc<dyn Plugin>, ctx: &mut RequestCtx) -> Option<(u16, &'static str)> {
        let headers = http::HeaderMap::new();
        let req = RequestView {
            method: &http::Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            client_ip: ctx.client_ip,
            tls: false,
        };
        match p.request(&req, ctx) {
            Flow::Continue => None,
            Flow::Respond(r) => Some((r.status.as_u16(), r.code)),
        }
    }

    #[test]
    fn unpublished_channel_is_forbidden_and_published_one_passes() {
        let p = Factory
            .build(&serde_json::json!({"channels": ["wechat", "alipay"]}))
            .unwrap();
        assert_eq!(run(&p, &mut ctx("wechat", "a")), None);
        assert_eq!(
            run(&p, &mut ctx("baidu", "a")),
            Some((403, "channel_not_published"))
        );
    }

    #[test]
    fn app_allow_list_restricts_callers() {
        let p = Factory
            .build(&serde_json::json!({"channels": ["wechat"], "apps": ["wx1"]}))
            .unwrap();
        assert_eq!(run(&p, &mut ctx("wechat", "wx1")), None);
        assert_eq!(
            run(&p, &mut ctx("wechat", "wx2")),
            Some((403, "app_not_allowed"))
        );
    }

    #[test]
    fn without_identity_the_caller_must_authenticate() {
        let p = Factory
            .build(&serde_json::json!({"channels": ["wechat"]}))
            .unwrap();
        assert_eq!(
            run(&p, &mut RequestCtx::default()),
            Some((401, "missing_token"))
        );
    }

    #[test]
    fn unknown_channel_in_config_names_the_field() {
        let e = Factory
            .build(&serde_json::json!({"channels": ["wechat", "weixin"]}))
            .unwrap_err();
        assert_eq!(e.path, "channels[1]");
    }
}
