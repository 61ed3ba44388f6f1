//! An example of a Fenfa plugin in its own crate, registered without changing Fenfa.
//!
//! `body-digest` asks for the request body ([`BodyNeed::Buffer`]) up to a configured limit,
//! computes its SHA-256 and length from the exact bytes the client sent, and reports both to the
//! client in the response headers `x-body-sha256` and `x-body-length` (the upstream receives the
//! body unchanged). A body over the limit follows the configured policy: `reject` answers 413,
//! `pass` forwards it uninspected and answers with `x-body-inspected: false`.
//!
//! With `response_max_bytes` set it also rewrites the upstream's response body: every occurrence
//! of `mask` is replaced by `[masked]` (a stand-in for masking personal data), on bodies up to
//! `response_max_bytes` (decoded); over it, `response_over_limit` applies (`pass`: unchanged and
//! marked uninspected; `reject`: the response is aborted).
//!
//! Config (`plugins: [{ name: body-digest, config: { max_bytes: 1024, over_limit: reject } }]`):
//! - `max_bytes` (integer, required): the largest request body the plugin inspects;
//! - `over_limit` (`reject` | `pass`, default `reject`);
//! - `response_max_bytes` (integer, optional): rewrite response bodies up to this size;
//! - `response_over_limit` (`reject` | `pass`, default `reject`);
//! - `mask` (string, default `SECRET`): what the response rewrite replaces.
//!
//! [`redis_counter`] is the second example: a plugin with an async phase (a Redis round trip
//! within a declared budget and failure policy).
//!
//! This crate depends on `fenfa-plugin-api` for the contract; its binary (`src/main.rs`) also
//! links the gateway to run it. `body-digest` and `body-noop` do no I/O; none of the plugins
//! blocks a thread.
#![forbid(unsafe_code)]

pub mod redis_counter;

use std::sync::Arc;

use bytes::Bytes;
use fenfa_plugin_api::{
    BodyNeed, Flow, HeaderEdits, OverLimit, Plugin, PluginFactory, RequestCtx, SchemaError,
};
use http::{HeaderName, HeaderValue};

/// The config name of the plugin.
pub const NAME: &str = "body-digest";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    max_bytes: usize,
    #[serde(default)]
    over_limit: Policy,
    #[serde(default)]
    response_max_bytes: Option<usize>,
    #[serde(default)]
    response_over_limit: Policy,
    #[serde(default = "default_mask")]
    mask: String,
}

fn default_mask() -> String {
    "SECRET".to_string()
}

/// What the response rewrite puts in place of the mask.
pub const MASKED: &[u8] = b"[masked]";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Policy {
    #[default]
    Reject,
    Pass,
}

/// A configured `body-digest` instance.
#[derive(Debug)]
pub struct BodyDigest {
    need: BodyNeed,
    response_need: BodyNeed,
    mask: Vec<u8>,
}

/// What the buffered phase learnt, kept for the response phase.
#[derive(Debug, Clone)]
struct Digest {
    sha256: HeaderValue,
    len: HeaderValue,
}

impl Plugin for BodyDigest {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        500
    }

    fn request_body_need(&self) -> BodyNeed {
        self.need
    }

    fn request_body_buffered(&self, ctx: &mut RequestCtx, body: &Bytes) -> Flow {
        let d = ring::digest::digest(&ring::digest::SHA256, body);
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(sha256) = HeaderValue::from_str(&hex) {
            ctx.vars.insert(Digest {
                sha256,
                len: HeaderValue::from(body.len()),
            });
        }
        Flow::Continue
    }

    fn response_body_need(&self) -> BodyNeed {
        self.response_need
    }

    fn response_body(&self, _ctx: &mut RequestCtx, _status: u16, body: &mut Vec<u8>) {
        *body = replace_all(body, &self.mask, MASKED);
    }

    fn response(&self, ctx: &RequestCtx, _status: u16, headers: &mut dyn HeaderEdits) {
        if let Some(d) = ctx.vars.get::<Digest>() {
            headers.insert(HeaderName::from_static("x-body-sha256"), d.sha256.clone());
            headers.insert(HeaderName::from_static("x-body-length"), d.len.clone());
        }
        if ctx.body_uninspected {
            headers.insert(
                HeaderName::from_static("x-body-inspected"),
                HeaderValue::from_static("false"),
            );
        }
    }
}

/// Builds `body-digest` instances; register it with `registry.register(Box::new(Factory))`.
pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let c: Config = SchemaError::parse(config)?;
        if c.max_bytes == 0 {
            return Err(SchemaError::new("max_bytes", "must be at least 1"));
        }
        if c.mask.is_empty() {
            return Err(SchemaError::new("mask", "must not be empty"));
        }
        Ok(Arc::new(BodyDigest {
            need: BodyNeed::Buffer {
                limit: c.max_bytes,
                over_limit: c.over_limit.into(),
            },
            response_need: match c.response_max_bytes {
                Some(limit) => BodyNeed::Buffer {
                    limit,
                    over_limit: c.response_over_limit.into(),
                },
                None => BodyNeed::None,
            },
            mask: c.mask.into_bytes(),
        }))
    }
}

impl From<Policy> for OverLimit {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Reject => OverLimit::Reject,
            Policy::Pass => OverLimit::PassUninspected,
        }
    }
}

/// `body` with every occurrence of `needle` (not empty) replaced by `with`.
pub fn replace_all(body: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

/// `body-noop`: asks for the whole request body up to `max_bytes` (passing longer bodies
/// uninspected) and does nothing with it — what the body-plugin benchmark measures
/// (`benches/configs/fenfa-body-noop.yaml`).
#[derive(Debug)]
pub struct BodyNoop {
    limit: usize,
}

impl Plugin for BodyNoop {
    fn name(&self) -> &'static str {
        "body-noop"
    }

    fn priority(&self) -> i32 {
        400
    }

    fn request_body_need(&self) -> BodyNeed {
        BodyNeed::Buffer {
            limit: self.limit,
            over_limit: OverLimit::PassUninspected,
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoopConfig {
    max_bytes: usize,
}

/// Builds `body-noop` instances.
pub struct NoopFactory;

impl PluginFactory for NoopFactory {
    fn name(&self) -> &'static str {
        "body-noop"
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let c: NoopConfig = SchemaError::parse(config)?;
        Ok(Arc::new(BodyNoop { limit: c.max_bytes }))
    }
}

/// The built-in plugins plus this crate's.
pub fn registry() -> fenfa_plugin_api::Registry {
    let mut r = fenfa_plugins::builtin();
    r.register(Box::new(Factory));
    r.register(Box::new(redis_counter::Factory));
    r.register(Box::new(NoopFactory));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors_name_the_field() {
        let e = Factory.build(&json!({"max_bytes": 0})).unwrap_err();
        assert_eq!(e.path, "max_bytes");
        let e = Factory
            .build(&json!({"max_bytes": 8, "over_limit": "drop"}))
            .unwrap_err();
        assert_eq!(e.path, "over_limit");
    }

    #[test]
    fn replace_all_replaces_every_occurrence() {
        assert_eq!(
            replace_all(b"a SECRET, SECRETSECRET", b"SECRET", MASKED),
            b"a [masked], [masked][masked]".to_vec()
        );
        assert_eq!(replace_all(b"", b"SECRET", MASKED), Vec::<u8>::new());
    }

    #[test]
    fn registry_has_builtins_and_body_digest() {
        let r = registry();
        assert!(r.contains(NAME));
        assert!(r.contains("body-noop"));
        assert!(r.contains(redis_counter::NAME));
        assert!(r.contains("jwt-auth"));
    }
}
