//! Black-box tests of `fenfa-admin`: the control plane's HTTP API on a loopback port, against
//! SQLite always and PostgreSQL when `FENFA_TEST_POSTGRES_URL` is set (CI sets it; outside CI a
//! missing URL skips the PostgreSQL variants loudly). `serve.rs` starts the real binary.
//!
//! Each module covers one capability; see the module docs.

mod harness;
#[path = "../support/pki.rs"]
mod pki;
#[path = "../support/python.rs"]
mod python;

mod accounts;
mod active_users;
mod alerts;
mod architecture;
mod audit;
mod authz;
mod cluster;
mod console;
mod dataplane;
mod deploy;
mod duties;
mod exports;
mod guomi;
mod hardening;
mod input;
mod inspection;
mod openapi;
mod publishing;
mod reports;
mod resources;
mod revisions;
mod schemathesis;
mod serve;
mod signin;
mod tls;
mod verification;
mod walkthrough;
