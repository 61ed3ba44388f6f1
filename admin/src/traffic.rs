//! Traffic figures from the request audit: the records of a time range (by the request's own
//! time), reduced to what inspection and reports count — volume, 5xx errors, latency
//! percentiles, availability — per any grouping the caller picks.
//!
//! Definitions (docs/reports.md): an *error* is an answer with status 500 or above (a request the
//! gateway refused, 4xx, is the platform working, not failing); *availability* is the share of
//! requests that were not errors (100% with no requests); percentiles are nearest-rank.
//!
//! What it may not do: read a user id or any personal field of a record.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::error::ApiResult;

/// What the reports need of one request record.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub at: i64,
    pub service: String,
    pub route: String,
    pub channel: String,
    pub status: u16,
    pub latency_us: u64,
    pub decision: String,
    pub denied_by: String,
    pub code: String,
    /// `(plugin, class, action, count)` of each finding.
    pub findings: Vec<(String, String, String, u64)>,
}

/// Records with `from <= time < to` (unix seconds).
pub async fn load(pool: &sqlx::AnyPool, from: i64, to: i64) -> ApiResult<Vec<Req>> {
    let rows = sqlx::query(
        "SELECT record FROM request_audit WHERE rec_time >= $1 AND rec_time < $2 ORDER BY rec_time",
    )
    .bind(crate::local_time::record_time(from))
    .bind(crate::local_time::record_time(to))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let text: String = r.try_get("record")?;
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let Some(at) = v
            .get("time")
            .and_then(Value::as_str)
            .and_then(crate::local_time::parse_record_time)
        else {
            continue;
        };
        let findings = v
            .get("findings")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|f| {
                        let t =
                            |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        (
                            t("plugin"),
                            t("class"),
                            t("action"),
                            f.get("count").and_then(Value::as_u64).unwrap_or(1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Req {
            at,
            service: s("service"),
            route: s("route"),
            channel: s("channel"),
            status: v.get("status").and_then(Value::as_u64).unwrap_or(0) as u16,
            latency_us: v.get("latency_us").and_then(Value::as_u64).unwrap_or(0),
            decision: s("decision"),
            denied_by: s("denied_by"),
            code: s("code"),
            findings,
        });
    }
    Ok(out)
}

/// Volume, errors and latency of a set of requests.
#[derive(Debug, Clone, Default)]
pub struct Agg {
    pub total: u64,
    pub errors: u64,
    latencies: Vec<u64>,
}

impl Agg {
    pub fn add(&mut self, r: &Req) {
        self.total += 1;
        if r.status >= 500 {
            self.errors += 1;
        }
        self.latencies.push(r.latency_us);
    }

    /// Availability, percent (100 with no requests).
    pub fn availability(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            100.0 * (self.total - self.errors) as f64 / self.total as f64
        }
    }

    /// Error rate, percent.
    pub fn error_rate(&self) -> f64 {
        100.0 - self.availability()
    }

    /// Nearest-rank percentile of latency, milliseconds (0 with no requests).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1] as f64 / 1000.0
    }

    pub fn summary(&self) -> Summary {
        Summary {
            requests: self.total,
            errors: self.errors,
            error_rate: round2(self.error_rate()),
            availability: round2(self.availability()),
            p50_ms: round2(self.percentile_ms(50.0)),
            p99_ms: round2(self.percentile_ms(99.0)),
        }
    }
}

/// The figures as reports show them (rounded to 2 decimals).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub availability: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Groups requests by `key` and aggregates each group.
pub fn group<'a, K: Ord>(
    reqs: impl IntoIterator<Item = &'a Req>,
    key: impl Fn(&Req) -> K,
) -> BTreeMap<K, Agg> {
    let mut out: BTreeMap<K, Agg> = BTreeMap::new();
    for r in reqs {
        out.entry(key(r)).or_default().add(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_counts_only_5xx_and_percentiles_are_nearest_rank() {
        let mut a = Agg::default();
        for i in 1..=100u64 {
            a.add(&Req {
                status: if i <= 2 {
                    503
                } else if i <= 10 {
                    404
                } else {
                    200
                },
                latency_us: i * 1000,
                ..Default::default()
            });
        }
        assert_eq!(a.availability(), 98.0);
        assert_eq!(a.percentile_ms(99.0), 99.0);
        assert_eq!(a.percentile_ms(50.0), 50.0);
        assert_eq!(Agg::default().availability(), 100.0);
    }
}
