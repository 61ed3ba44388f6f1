//! `fenfa-gateway`: Fenfa's data plane, a reverse proxy on pingora.
//!
//! Mini-programs call it; it routes each request to an agency backend, running the plugin chain
//! (from `fenfa-plugins`) on the way. It owns the config model and its compiler: a snapshot
//! ([`config::Config`]) compiles into an immutable [`compile::Runtime`] (router, upstream pools,
//! plugin chains) that is swapped in atomically ([`gateway::Gateway`]).
//!
//! Depends on pingora (proxy, TLS via rustls) and tokio; its background jobs (control-plane
//! watch, audit shipping, OTLP export) use reqwest on a runtime of their own ([`http_client`]). Must not: block the request path on a
//! store, a log or the network beyond the upstream; take a lock per request; let a bad config take
//! effect.
#![forbid(unsafe_code)]

pub mod audit;
pub mod body;
pub mod compile;
pub mod config;
pub mod control_plane;
pub mod demo;
pub mod errors;
pub mod gateway;
pub mod http_client;
pub mod ids;
pub mod metrics;
pub mod path;
pub mod phases;
pub mod proxy;
pub mod response_body;
pub mod router;
pub mod server;
pub mod status;
pub mod tap;
pub mod tls;
pub mod upstream;
