//! Black-box tests of `fenfa-gateway`: the real binary on loopback, real upstreams, real HTTP.
//!
//! Each module covers one user-visible capability; see the module docs.

#[path = "../support/mod.rs"]
mod support;

mod examples;
mod plugins;
mod reload;
mod requests;
mod routing;
mod shutdown;
mod status;
mod tls;
mod upstreams;
