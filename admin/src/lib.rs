//! `fenfa-admin`: Fenfa's control plane.
//!
//! The system of record for everything a gateway serves: agencies, their services and interfaces
//! (routes), the mini-program apps, network policies, keys and limits; and for who may change
//! them (accounts, roles, sessions, TOTP) and who did (the hash-chained admin audit). Every
//! change is rendered into a gateway [`fenfa_config::Config`] and checked with the gateways' own
//! rules (`fenfa_config::check::plan`, host names by syntax: [`app::Checker`]) *before* it commits, so a change the data plane would refuse is refused
//! here with the field at fault, and nothing is stored. Each commit bumps the config version that
//! gateways long-poll (`/v1/dataplane/watch`).
//!
//! Depends on `fenfa-config` (config model and checks) and `fenfa-audit` (the audit settings'
//! checks), never on the proxy (`fenfa-gateway`, pingora): the `fenfa-admin` binary in
//! `fenfa-platform` links the two for the single-node `serve`. Also axum (HTTP), sqlx (`Any`: SQLite or
//! PostgreSQL through one code path), argon2 and ring. Must not: let a request reach a resource
//! without passing [`authz`]; store a secret (signing key, HMAC token key, TOTP seed) unencrypted;
//! offer any way to change or delete an audit record; commit a config that does not pass the check.
#![forbid(unsafe_code)]

pub mod active_users;
pub mod alerts;
pub mod api;
pub mod app;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod clock;
pub mod commit;
pub mod console;
pub mod crypto;
pub mod dataplane;
pub mod demo_env;
pub mod error;
pub mod exports;
pub mod identity;
pub mod inspection;
pub mod local_time;
pub mod model;
pub mod openapi;
pub mod password;
pub mod policy;
pub mod reencrypt;
pub mod render;
pub mod reports;
pub mod revisions;
pub mod route_space;
pub mod serve;
pub mod store;
pub mod tls;
pub mod totp;
pub mod traffic;
pub mod verification;
