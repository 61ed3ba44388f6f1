//! One upstream target and its health.
//!
//! A target is available when the active checker (if any) last judged it healthy and it is not
//! ejected by passive checks. State lives in atomics so the request path never locks; the compiler
//! looks up the same `Arc<TargetState>` by (service, address) on every reload so health survives it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

pub use fenfa_config::check::PassivePolicy;

use crate::metrics::Histogram;

#[derive(Debug)]
pub struct TargetState {
    pub addr: SocketAddr,
    /// `host:port` as configured.
    pub authority: String,
    /// The host part as configured (name or IP), for SNI and the Host header.
    pub host: String,
    active_healthy: AtomicBool,
    active_streak: AtomicU32,
    passive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Set while an active probe is in flight.
    pub(crate) probing: AtomicBool,
    pub(crate) next_probe_ms: AtomicU64,
    /// Time of each attempt on this target, to its answer's head or its failure
    /// (`fenfa_upstream_duration_seconds`); kept across reloads with the rest of the state.
    pub latency: Histogram,
}

impl TargetState {
    pub fn new(addr: SocketAddr, authority: String, host: String) -> Self {
        Self {
            addr,
            authority,
            host,
            active_healthy: AtomicBool::new(true),
            active_streak: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            latency: Histogram::default(),
        }
    }

    /// Healthy by active checks and not ejected by passive ones.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.active_healthy.load(Relaxed) && self.ejected_until_ms.load(Relaxed) <= now_ms
    }

    pub fn is_active_healthy(&self) -> bool {
        self.active_healthy.load(Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Relaxed) > now_ms
    }

    /// A request to this target succeeded (passive view).
    pub fn record_success(&self) {
        // Only write when needed: a store on every request would bounce the cache line.
        if self.passive_failures.load(Relaxed) != 0 {
            self.passive_failures.store(0, Relaxed);
        }
    }

    /// A request to this target failed; ejects it after `max_failures` in a row.
    /// Returns true when this failure ejected the target.
    pub fn record_failure(&self, policy: &PassivePolicy, now_ms: u64) -> bool {
        let n = self.passive_failures.fetch_add(1, Relaxed) + 1;
        if n >= policy.max_failures {
            self.passive_failures.store(0, Relaxed);
            self.ejected_until_ms
                .store(now_ms + policy.cooldown.as_millis() as u64, Relaxed);
            return true;
        }
        false
    }

    /// Applies one active probe result with the thresholds; returns the new health if it changed.
    pub fn record_probe(
        &self,
        ok: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        let healthy = self.active_healthy.load(Relaxed);
        if ok == healthy {
            self.active_streak.store(0, Relaxed);
            return None;
        }
        let streak = self.active_streak.fetch_add(1, Relaxed) + 1;
        let needed = if ok {
            healthy_threshold
        } else {
            unhealthy_threshold
        };
        if streak >= needed.max(1) {
            self.active_streak.store(0, Relaxed);
            self.active_healthy.store(ok, Relaxed);
            if ok {
                // A target that active checks bring back also gets a clean passive slate.
                self.passive_failures.store(0, Relaxed);
                self.ejected_until_ms.store(0, Relaxed);
            }
            return Some(ok);
        }
        None
    }

    /// Forget active-check verdicts (used when a service stops having active checks).
    pub fn reset_active(&self) {
        self.active_healthy.store(true, Relaxed);
        self.active_streak.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t() -> TargetState {
        TargetState::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:1".into(),
            "127.0.0.1".into(),
        )
    }

    #[test]
    fn consecutive_failures_eject_for_the_cooldown() {
        let p = PassivePolicy {
            max_failures: 3,
            cooldown: Duration::from_millis(1000),
            unhealthy_statuses: vec![],
        };
        let t = t();
        assert!(!t.record_failure(&p, 0));
        t.record_success();
        assert!(!t.record_failure(&p, 0));
        assert!(!t.record_failure(&p, 0));
        assert!(t.record_failure(&p, 10));
        assert!(!t.is_available(500));
        assert!(t.is_available(1010));
    }

    #[test]
    fn probes_flip_health_only_after_thresholds() {
        let t = t();
        assert_eq!(t.record_probe(false, 2, 3), None);
        assert_eq!(t.record_probe(false, 2, 3), None);
        assert_eq!(t.record_probe(false, 2, 3), Some(false));
        assert!(!t.is_available(0));
        assert_eq!(t.record_probe(true, 2, 3), None);
        assert_eq!(t.record_probe(true, 2, 3), Some(true));
        assert!(t.is_available(0));
    }
}
