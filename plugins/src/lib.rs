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
pub mod contract;
pub mod registry;

pub use contract::{
    Flow, HeaderEdits, Identity, LogView, Plugin, PluginFactory, Reply, RequestCtx, RequestView,
    SchemaError, UpstreamView,
};
pub use registry::{Chain, Registry};
