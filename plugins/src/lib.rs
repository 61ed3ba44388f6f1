//! Fenfa's plugin contract and its built-in plugins.
//!
//! A plugin sees each request at fixed phases — request, upstream request, response, log — and at
//! the request phase either lets it continue or answers it (a denial). Authentication, rate
//! limiting, IP rules, CORS, size limits, WAF, masking and the audit record are all plugins.
//!
//! This crate depends on the `http` types and `serde_json` (for configuration) only: no I/O
//! framework, no async runtime, no pingora. The gateway adapts its own request and response types to
//! the views defined in [`contract`]; a plugin must never block, and must never do I/O on the request
//! path. See `docs/plugins.md` for the contract in prose.
#![forbid(unsafe_code)]

pub mod channel_check;
pub mod cidr;
pub mod concurrency_limit;
pub mod contract;
pub mod cors;
pub mod gcra;
pub mod ip_restriction;
pub mod jwt_auth;
pub mod rate_limit;
pub mod registry;
pub mod request_size_limit;
pub mod upstream_signature;

pub use cidr::{Cidr, CidrError, CidrSet};
pub use contract::{
    Flow, HeaderEdits, Identity, LogView, Plugin, PluginFactory, Reply, ReplyBody, RequestCtx,
    RequestView, SchemaError, UpstreamView,
};
pub use registry::{Chain, Registry};
