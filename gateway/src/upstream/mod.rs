//! Upstreams: the targets of a service, how one is chosen for a request, and their health.
//!
//! - [`target`]: one target's address and health state, shared across config reloads.
//! - [`pool`]: target selection (weighted round robin, consistent hashing), lock-free.
//! - [`health`]: active HTTP probes in the background; passive ejection is driven by the proxy.

pub mod health;
pub mod pool;
pub mod target;

pub use pool::{HashOn, Pool};
pub use target::{PassivePolicy, TargetState};

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the process started: a cheap monotonic clock for health timestamps.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
