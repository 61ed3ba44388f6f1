//! `fenfa-gateway`: Fenfa's data plane, a reverse proxy on pingora.
//!
//! Mini-programs call it; it routes each request to an agency backend, running the plugin chain
//! (from `fenfa-plugins`) on the way. A snapshot ([`config::Config`]), checked by `fenfa-config`,
//! compiles into an immutable [`compile::Runtime`] (router, upstream pools, plugin chains) that is
//! swapped in atomically ([`gateway::Gateway`]); every request is recorded by `fenfa-audit`.
//!
//! Depends on pingora (proxy, TLS via rustls) and tokio; its background jobs (control-plane
//! watch, audit shipping, OTLP export of audit records and of spans, [`otel`]) use `fenfa-net` (reqwest) on a runtime of their own. Must
//! not: block the request path on a store, a log or the network beyond the upstream; take a lock
//! per request; let a bad config take effect.
#![forbid(unsafe_code)]

pub mod body;
// The config model and checks, the audit trail and the background HTTP client are crates of their
// own (the control plane links the first two without the proxy); their old paths stay valid.
pub use fenfa_audit as audit;
pub use fenfa_config as config;
pub use fenfa_config::{path, router};
pub use fenfa_net as http_client;
pub mod compile;
pub mod control_plane;
pub mod demo;
pub mod errors;
pub mod gateway;
pub mod h5;
pub mod ids;
pub mod metrics;
pub mod otel;
pub mod phases;
pub mod proxy;
pub mod response_body;
pub mod server;
pub mod status;
pub mod tap;
pub mod tls;
pub mod upstream;
