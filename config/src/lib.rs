//! Fenfa's configuration: the declarative model, its parser, and every check a config must pass
//! before it may go live.
//!
//! **What it is for.** One place that says what a valid config is, shared by the gateway (which
//! builds its runtime from a checked [`check::Plan`]) and the control plane (which refuses a change
//! that would not pass, before committing it). Because both call [`check::plan`], they cannot
//! disagree.
//!
//! **What is in it**, one concept per module: [`model`] (the YAML/JSON model and [`parse`]),
//! [`duration`] (`30s`-style durations), [`path`] (request path normalisation), [`router`] (host,
//! path and method matching, built once per config), [`rewrite`] (route rewrite templates),
//! [`resolve`] (target host names, behind a trait), [`check`] (the whole check), [`traces`] (the
//! `tracing:` section) and [`files`] (atomic, owner-only files), [`h5`] (H5 services: their routes, verification files
//! and security headers).
//!
//! **What it must not depend on.** The proxy (pingora): the control plane links this crate
//! without the data plane. It links the built-in plugins for their schemas, and through them the
//! clients two plugins use (redis for `rate-limit` with `store: redis`, `fenfa-net` for
//! `jwt-auth`'s `jwks_uri`), but checking a config never connects or fetches: plugins start
//! calling out only in a running gateway. Name look-ups happen only through the
//! [`resolve::Resolve`] the caller passes. [`traces`] checks the `tracing:` section with
//! `fenfa-net`'s URL and TLS rules (reading the TLS files, connecting nowhere).
#![forbid(unsafe_code)]

pub mod check;
pub mod duration;
pub mod files;
pub mod h5;
pub mod model;
pub mod path;
pub mod resolve;
pub mod rewrite;
pub mod router;
pub mod traces;

pub use duration::HumanDuration;
pub use model::{parse, Config};

/// A configuration that cannot take effect, with the path of the field at fault
/// (e.g. `services[0].upstream.targets[1].addr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
