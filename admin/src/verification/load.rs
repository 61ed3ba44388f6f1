//! The load check: per interface, a step load at 25 %, 50 % and 100 % of the declared capacity.
//!
//! Each step sends its interface's first sample request open-loop — at a fixed pace of `rate`
//! requests per second for `step`, whether or not earlier answers came back, spread over the
//! targets in turn — and waits for the answers (each bounded by the timeout). A step *breaks the
//! threshold* when more than [`MAX_ERROR_RATE`] of its requests fail (no answer, 5xx, or not the
//! expected status) or its p99 is slower than the inspection's slow threshold; the load stops
//! there for that interface and the check fails. Interfaces are loaded one after another, so the
//! backend never sees more than the capacity at once; the pace never catches up on a late tick
//! (`MissedTickBehavior::Delay`), and a step's first request waits one interval, so it never
//! bursts above it either.
//!
//! Per step it reports the rate, requests sent, errors, error rate, p50, p99 and the sustained
//! rate (correct answers per second of the step's wall time).

use std::time::{Duration, Instant};

use serde_json::json;

use super::checks::{answered, Probed};
use super::{Check, Definition, Grade, Item};
use crate::inspection::probe::{self, Limits};
use crate::inspection::sample;

/// More than this share of failed requests breaks a step (1 %).
pub const MAX_ERROR_RATE: f64 = 0.01;
/// Default length of a step.
pub const DEFAULT_STEP: Duration = Duration::from_secs(2);
/// Shares of the capacity, in percent, of the steps.
pub const STEPS: [u32; 3] = [25, 50, 100];

/// The rates of the steps for a capacity: each share rounded up, at least 1, no repeats.
pub fn rates(capacity: u32) -> Vec<u32> {
    let mut out: Vec<u32> = STEPS
        .iter()
        .map(|pct| (capacity * pct).div_ceil(100).max(1))
        .collect();
    out.dedup();
    out
}

/// The `q` quantile (0–1) of sorted values, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Loads every interface whose samples all answered in the connectivity check.
pub async fn check(
    def: &Definition,
    probes: &[Probed],
    limits: Limits,
    step: Duration,
    now: i64,
) -> Check {
    let mut items = Vec::new();
    let targets: Vec<String> = def
        .upstream()
        .targets
        .iter()
        .map(|t| t.addr.clone())
        .collect();
    for r in &def.routes {
        let name = r.name.to_string();
        let ok = probes
            .iter()
            .filter(|p| p.interface == name)
            .all(|p| answered(&p.outcome));
        if !ok || targets.is_empty() {
            items.push(Item {
                result: Grade::Fail,
                interface: Some(name),
                target: None,
                what: "load".into(),
                detail: "not loaded: the interface did not answer its samples correctly".into(),
                evidence: serde_json::Value::Null,
            });
            continue;
        }
        let Some(s) = sample::of(r, &r.samples).into_iter().next() else {
            continue;
        };
        let host = r.hosts.first().cloned();
        for rate in rates(def.capacity()) {
            let n = ((rate as u128 * step.as_millis()).div_ceil(1000) as usize).max(1);
            // The first request one interval after the step starts: the step before it never
            // adds to this one's pace.
            let period = Duration::from_secs_f64(1.0 / rate as f64);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let started = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                tick.tick().await;
                let (up, target, host, s) = (
                    def.upstream().clone(),
                    targets[i % targets.len()].clone(),
                    host.clone(),
                    s.clone(),
                );
                set.spawn(async move {
                    probe::probe(&up, &target, host.as_deref(), &s, limits, now).await
                });
            }
            let mut latencies = Vec::with_capacity(n);
            let mut errors = 0usize;
            while let Some(o) = set.join_next().await {
                match o {
                    Ok(o) if answered(&o) => latencies.push(o.latency_ms.unwrap_or(0)),
                    _ => errors += 1,
                }
            }
            let wall = started.elapsed().as_secs_f64().max(0.001);
            latencies.sort_unstable();
            let p50 = quantile(&latencies, 0.50);
            let p99 = quantile(&latencies, 0.99);
            let error_rate = errors as f64 / n as f64;
            let sustained = latencies.len() as f64 / wall;
            let slow_ms = limits.slow.as_millis() as u64;
            let broke_errors = error_rate > MAX_ERROR_RATE;
            let broke_p99 = p99.is_some_and(|p| p > slow_ms);
            let detail = format!(
                "{n} requests at {rate} rps: {errors} failed ({:.1}%), p50 {} ms, p99 {} ms, sustained {sustained:.1} rps",
                error_rate * 100.0,
                p50.map_or("-".into(), |v| v.to_string()),
                p99.map_or("-".into(), |v| v.to_string()),
            );
            let broke = broke_errors || broke_p99;
            items.push(Item {
                result: if broke { Grade::Fail } else { Grade::Pass },
                interface: Some(name.clone()),
                target: None,
                what: format!(
                    "{rate} rps ({}% of {} rps)",
                    rate * 100 / def.capacity().max(1),
                    def.capacity()
                ),
                detail: if broke {
                    let why = match (broke_errors, broke_p99) {
                        (true, _) => format!("error rate above {:.0}%", MAX_ERROR_RATE * 100.0),
                        _ => format!("p99 above {slow_ms} ms"),
                    };
                    format!("{detail}; {why}: the load stopped here")
                } else {
                    detail
                },
                evidence: json!({
                    "rate": rate,
                    "requests": n,
                    "errors": errors,
                    "error_rate": error_rate,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "sustained_rps": (sustained * 10.0).round() / 10.0,
                }),
            });
            if broke {
                break;
            }
        }
    }
    Check::new("load", items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_never_exceed_the_capacity() {
        assert_eq!(rates(10), vec![3, 5, 10]);
        assert_eq!(rates(100), vec![25, 50, 100]);
        assert_eq!(rates(2), vec![1, 2]);
        assert_eq!(rates(1), vec![1]);
        for c in 1..500 {
            assert!(rates(c).iter().all(|r| *r <= c && *r >= 1), "{c}");
            assert_eq!(*rates(c).last().unwrap(), c);
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
