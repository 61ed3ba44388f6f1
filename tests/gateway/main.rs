//! Black-box tests of `fenfa-gateway`: the real binary on loopback, real upstreams, real HTTP.
//!
//! Each module covers one user-visible capability; see the module docs.

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod cluster_limits;
mod examples;
mod h5;
mod hardening;
mod identity;
mod jwks;
mod limits;
mod masking;
mod metrics;
mod node_tls;
mod plugins;
mod reload;
mod requests;
mod routing;
mod shutdown;
mod status;
mod tls;
mod traces;
mod upstreams;
mod waf;
