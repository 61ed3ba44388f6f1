//! Lock-free request metrics and their Prometheus text rendering.
//!
//! The request path only increments atomics that the compiled snapshot already holds (per-route
//! counters are created when a config compiles, and kept by route name across reloads so counters
//! never go backwards). Rendering walks the registry under a mutex that only the compiler and the
//! `/metrics` handler take.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Status codes counted individually; anything else is counted by class (`2xx`, …).
const CODES: [u16; 20] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 413, 429, 500, 502, 503, 504,
    499,
];

/// Request counts by status for one route.
#[derive(Debug, Default)]
pub struct StatusCounters {
    by_code: [AtomicU64; CODES.len()],
    by_class: [AtomicU64; 6],
}

impl StatusCounters {
    pub fn inc(&self, status: u16) {
        match CODES.iter().position(|&c| c == status) {
            Some(i) => self.by_code[i].fetch_add(1, Relaxed),
            None => self.by_class[(status as usize / 100).min(5)].fetch_add(1, Relaxed),
        };
    }

    fn render(&self, out: &mut String, labels: &str) {
        for (i, c) in CODES.iter().enumerate() {
            let v = self.by_code[i].load(Relaxed);
            if v > 0 {
                let _ = writeln!(
                    out,
                    "fenfa_http_requests_total{{{labels},status=\"{c}\"}} {v}"
                );
            }
        }
        for (class, counter) in self.by_class.iter().enumerate() {
            let v = counter.load(Relaxed);
            if v > 0 {
                let _ = writeln!(
                    out,
                    "fenfa_http_requests_total{{{labels},status=\"{class}xx\"}} {v}"
                );
            }
        }
    }
}

/// Counters for one route, shared by every snapshot that has a route of this name.
#[derive(Debug)]
pub struct RouteMetrics {
    pub route: String,
    pub service: String,
    pub statuses: StatusCounters,
}

/// Latency histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe_us(&self, us: u64) {
        let secs = us as f64 / 1e6;
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    /// Requests that matched no route (404/405/400 before routing).
    pub unrouted: StatusCounters,
    pub latency: Histogram,
    pub in_flight: AtomicI64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Failed calls to the control plane (unreachable, refused).
    pub control_plane_errors: AtomicU64,
    pub config_generation: AtomicU64,
    /// The audit trail's counters (shared with its writer and shipper threads).
    pub audit: Arc<AuditCounters>,
}

/// One delivery stream's counters: shipping to the control plane, or OTLP export.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Records the receiver accepted.
    pub delivered: AtomicU64,
    /// Failed delivery attempts (each retried).
    pub failures: AtomicU64,
    /// Records the receiver refused for good and will not get again (they stay on disk).
    pub refused: AtomicU64,
}

/// Audit trail counters (`crate::audit`).
#[derive(Debug, Default)]
pub struct AuditCounters {
    /// Records appended to a segment.
    pub written: AtomicU64,
    /// Records lost because the queue was full or the writer had stopped.
    pub dropped: AtomicU64,
    /// Requests answered 503 in strict mode because the queue was full.
    pub rejected: AtomicU64,
    /// Failed segment writes (each retried).
    pub write_errors: AtomicU64,
    /// Shipping to the control plane's ingest endpoint (`audit.ship`).
    pub ship: Arc<SinkCounters>,
    /// Export to an OpenTelemetry collector (`audit.otlp`).
    pub otlp: Arc<SinkCounters>,
    /// Records queued or reserved, not yet taken by the writer.
    pub queued: AtomicU64,
}

impl AuditCounters {
    fn render(&self, out: &mut String) {
        let counters = [
            (
                "fenfa_audit_records_written_total",
                "Audit records written to a segment.",
                &self.written,
            ),
            (
                "fenfa_audit_records_dropped_total",
                "Audit records dropped: queue full or writer stopped.",
                &self.dropped,
            ),
            (
                "fenfa_audit_rejected_total",
                "Requests answered 503 because the audit queue was full (strict mode).",
                &self.rejected,
            ),
            (
                "fenfa_audit_write_errors_total",
                "Failed audit segment writes (retried).",
                &self.write_errors,
            ),
            (
                "fenfa_audit_records_shipped_total",
                "Audit records delivered to the control plane.",
                &self.ship.delivered,
            ),
            (
                "fenfa_audit_ship_failures_total",
                "Failed audit shipping attempts (retried).",
                &self.ship.failures,
            ),
            (
                "fenfa_audit_records_exported_total",
                "Audit records accepted by the OTLP collector.",
                &self.otlp.delivered,
            ),
            (
                "fenfa_audit_export_failures_total",
                "Failed OTLP export attempts (retried).",
                &self.otlp.failures,
            ),
            (
                "fenfa_audit_export_refused_total",
                "Audit records the OTLP collector refused for good (still in the local trail).",
                &self.otlp.refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(out, "# TYPE fenfa_audit_queue_depth gauge");
        let _ = writeln!(out, "fenfa_audit_queue_depth {}", self.queued.load(Relaxed));
    }
}

impl Metrics {
    /// The counters for a route, created on first use and kept across reloads.
    pub fn route(&self, route: &str, service: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = routes.get(route) {
            if m.service == service {
                return m.clone();
            }
        }
        let m = Arc::new(RouteMetrics {
            route: route.to_string(),
            service: service.to_string(),
            statuses: StatusCounters::default(),
        });
        routes.insert(route.to_string(), m.clone());
        m
    }

    /// Renders everything except upstream health (see `crate::status`).
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP fenfa_http_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE fenfa_http_requests_total counter");
        {
            let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            for m in routes.values() {
                let labels = format!(
                    "route=\"{}\",service=\"{}\"",
                    escape_label(&m.route),
                    escape_label(&m.service)
                );
                m.statuses.render(out, &labels);
            }
        }
        self.unrouted.render(out, "route=\"\",service=\"\"");
        let _ = writeln!(
            out,
            "# HELP fenfa_http_request_duration_seconds Time from request head to end of response."
        );
        self.latency
            .render(out, "fenfa_http_request_duration_seconds");
        let _ = writeln!(out, "# TYPE fenfa_http_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "fenfa_http_requests_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE fenfa_config_reloads_total counter");
        let _ = writeln!(
            out,
            "fenfa_config_reloads_total {}",
            self.reloads.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE fenfa_config_reload_failures_total counter");
        let _ = writeln!(
            out,
            "fenfa_config_reload_failures_total {}",
            self.reload_failures.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE fenfa_control_plane_errors_total counter");
        let _ = writeln!(
            out,
            "fenfa_control_plane_errors_total {}",
            self.control_plane_errors.load(Relaxed)
        );
        let _ = writeln!(out, "# TYPE fenfa_config_generation gauge");
        let _ = writeln!(
            out,
            "fenfa_config_generation {}",
            self.config_generation.load(Relaxed)
        );
        self.audit.render(out);
    }
}

/// Escapes a Prometheus label value.
pub fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counters_survive_recompilation_by_name() {
        let m = Metrics::default();
        m.route("r1", "s1").statuses.inc(200);
        m.route("r1", "s1").statuses.inc(200);
        m.route("r1", "s1").statuses.inc(418);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("fenfa_http_requests_total{route=\"r1\",service=\"s1\",status=\"200\"} 2"),
            "{out}"
        );
        assert!(out.contains("status=\"4xx\"} 1"), "{out}");
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe_us(300);
        h.observe_us(2_000_000);
        let mut out = String::new();
        h.render(&mut out, "x");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1"));
        assert!(out.contains("x_bucket{le=\"2.5\"} 2"));
        assert!(out.contains("x_count 2"));
    }
}
