//! Fenfa's plugin API: the versioned contract between the gateway and its plugins.
//!
//! **What it is for.** A plugin — built in (`fenfa-plugins`) or in its own crate — implements
//! [`Plugin`] and a [`PluginFactory`], and is added to a [`Registry`]; the gateway
//! (`fenfa_gateway::server::Options::registry`) and the control plane's config checker take that
//! registry, so a new plugin never needs a change to Fenfa itself. The phases, what each sees,
//! and what each return value means are documented on [`Plugin`] and in `docs/plugins.md`.
//!
//! **What it depends on.** The `http` and `bytes` types, `serde`/`serde_json` for configuration
//! and `thiserror`: nothing else.
//!
//! **What it must not do.** Depend on pingora, tokio or any I/O: the gateway adapts its own
//! request and response types to the views defined here, and a plugin built against this crate
//! must compile without the proxy. No `unsafe`.
//!
//! **Versioning.** [`API_VERSION`] changes whenever a change to this crate would break a plugin
//! that compiled against the previous version (a removed or changed method, view field or type).
//! New phases are added as default trait methods, which does not change the version.
#![forbid(unsafe_code)]

pub mod contract;
pub mod registry;

pub use contract::{
    BodyNeed, BoxFuture, CallError, CallOut, Finding, FindingAction, Flow, HeaderEdits, Host,
    Identity, KeptLength, LogView, OnFailure, OverLimit, Plugin, PluginFactory, Reply, ReplyBody,
    RequestCtx, RequestView, SchemaError, UpstreamView,
};
pub use registry::{BuildError, Chain, Registry};

/// The contract's version. Version 2 added the request-body bytes phase
/// ([`Plugin::request_body_need`], [`Plugin::request_body_buffered`]), the chunk bytes in
/// [`Plugin::request_body`], the response-body phase ([`Plugin::response_body`]), the async
/// phase ([`Plugin::call_out`], [`Plugin::request_async`]) and the open registry (no built-ins
/// in this crate). Added since, as default methods and new types (no version change):
/// [`Plugin::request_fallback`] (a plugin's own answer when its async call fails) and
/// [`PluginFactory::start`] with [`Host`] (a running gateway's data dir and file writer).
pub const API_VERSION: u32 = 2;
