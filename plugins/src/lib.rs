//! Fenfa's plugin contract and its built-in plugins.
//!
//! A plugin sees each request at fixed phases — request, upstream request, response, log — and at
//! the request phase either lets it continue or answers it (a denial). Authentication, rate
//! limiting, IP rules, CORS, size limits, WAF, masking and the audit record are all plugins.
//!
//! The contract itself (traits, views, registry, chain) is the `fenfa-plugin-api` crate; this
//! crate re-exports it and adds the plugins that ship with Fenfa: [`builtin`] is a registry with
//! all of them, [`register_builtins`] adds them to an embedder's registry. Like the API crate it
//! has no pingora; a plugin must never block, and does no I/O in its synchronous phases. The
//! one built-in that calls out, `rate-limit` with `store: redis`, does it in the async phase
//! with redis's tokio client, on the proxy's runtime, within its declared budget. See
//! `docs/plugins.md` for the contract in prose.
#![forbid(unsafe_code)]

pub mod channel_check;
pub mod cidr;
pub mod concurrency_limit;
pub mod contract;
pub mod cors;
pub mod gcra;
pub mod ip_restriction;
pub mod jwt_auth;
pub mod leak_guard;
pub mod pii;
pub mod rate_limit;
pub mod registry;
pub mod request_size_limit;
pub mod response_masking;
pub mod upstream_signature;
pub mod waf;

pub use cidr::{Cidr, CidrError, CidrSet};
pub use fenfa_plugin_api::{
    BodyNeed, BoxFuture, BuildError, CallError, CallOut, Chain, Finding, FindingAction, Flow,
    HeaderEdits, Host, Identity, KeptLength, LogView, OnFailure, OverLimit, Plugin, PluginFactory,
    Registry, Reply, ReplyBody, RequestCtx, RequestView, SchemaError, UpstreamView, API_VERSION,
};
pub use registry::{builtin, register_builtins};
