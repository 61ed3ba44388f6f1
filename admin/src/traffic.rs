//! Traffic figures from the request audit: the records of a time range (by the request's own
//! time), reduced to what inspection and reports count — volume, 5xx errors, latency
//! percentiles, availability — per any grouping the caller picks.
//!
//! Definitions (docs/reports.md): an *error* is an answer with status 500 or above (a request the
//! gateway refused, 4xx, is the platform working, not failing); *availability* is the share of
//! requests that were not errors (100% with no requests); percentiles are nearest-rank over a
//! latency histogram (1 ms buckets below 1 s, 100 ms up to 60 s), so a period of any volume is
//! read a page at a time in constant memory.
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

/// Records read per query while scanning.
const PAGE: i64 = 5_000;

/// Calls `f` with every record whose time is in `[from, to)` (unix seconds), a page at a time:
/// memory stays bounded whatever the period's volume.
pub async fn scan(
    pool: &sqlx::AnyPool,
    from: i64,
    to: i64,
    mut f: impl FnMut(&Req),
) -> ApiResult<u64> {
    let (lo, hi) = (
        crate::local_time::record_time(from),
        crate::local_time::record_time(to),
    );
    let mut after = i64::MIN;
    let mut n = 0u64;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT seq, record FROM request_audit WHERE rec_time >= $1 AND rec_time < $2 AND seq > $3 ORDER BY seq LIMIT {PAGE}"
        ))
        .bind(&lo)
        .bind(&hi)
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(n);
        };
        after = last.try_get("seq")?;
        for r in &rows {
            let text: String = r.try_get("record")?;
            if let Some(req) = parse(&text) {
                n += 1;
                f(&req);
            }
        }
        if (rows.len() as i64) < PAGE {
            return Ok(n);
        }
    }
}

fn parse(text: &str) -> Option<Req> {
    let v = serde_json::from_str::<Value>(text).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let at = v
        .get("time")
        .and_then(Value::as_str)
        .and_then(crate::local_time::parse_record_time)?;
    let findings = v
        .get("findings")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|f| {
                    let t = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
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
    Some(Req {
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
    })
}

/// Volume, errors and latency of a set of requests.
/// Latency buckets: 1 ms wide below 1 s, 100 ms wide from 1 s to 60 s, one above.
fn bucket(latency_us: u64) -> u32 {
    let ms = latency_us / 1000;
    if ms < 1000 {
        ms as u32
    } else if ms < 60_000 {
        1000 + ((ms - 1000) / 100) as u32
    } else {
        1590
    }
}

/// The lower bound of a bucket, milliseconds.
fn bucket_ms(b: u32) -> f64 {
    if b < 1000 {
        f64::from(b)
    } else if b < 1590 {
        1000.0 + f64::from(b - 1000) * 100.0
    } else {
        60_000.0
    }
}

/// Volume, errors and a latency histogram of a set of requests: constant memory per group.
#[derive(Debug, Clone, Default)]
pub struct Agg {
    pub total: u64,
    pub errors: u64,
    latencies: BTreeMap<u32, u64>,
}

impl Agg {
    pub fn add(&mut self, r: &Req) {
        self.total += 1;
        if r.status >= 500 {
            self.errors += 1;
        }
        *self.latencies.entry(bucket(r.latency_us)).or_default() += 1;
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

    /// Nearest-rank percentile of latency, milliseconds, to the histogram's resolution (the
    /// lower bound of the bucket holding that rank); 0 with no requests.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in &self.latencies {
            seen += n;
            if seen >= rank {
                return bucket_ms(*b);
            }
        }
        self.latencies
            .keys()
            .last()
            .map(|b| bucket_ms(*b))
            .unwrap_or(0.0)
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

/// Adds `r` to the aggregate of its group.
pub fn add_to<K: Ord>(groups: &mut BTreeMap<K, Agg>, key: K, r: &Req) {
    groups.entry(key).or_default().add(r);
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
        let mut slow = Agg::default();
        for ms in [5, 2_345, 75_000] {
            slow.add(&Req {
                latency_us: ms * 1000,
                status: 200,
                ..Default::default()
            });
        }
        assert_eq!(
            slow.percentile_ms(50.0),
            2_300.0,
            "100 ms buckets above 1 s"
        );
        assert_eq!(slow.percentile_ms(99.0), 60_000.0, "one bucket above 60 s");
        assert_eq!(Agg::default().availability(), 100.0);
    }
}
