//! Lock-free request metrics, and their exposition through `prometheus-client`.
//!
//! The request path only increments atomics that the compiled snapshot already holds (per-route
//! counters and latency histograms are created when a config compiles, kept by route name across
//! reloads so counters never go backwards, and dropped when a config without the route goes live,
//! so route labels are the live config's; per-target histograms live with the target's health
//! state in `crate::upstream`). No label value comes from request data (`docs/metrics.md`).
//! The atomics stay Fenfa's: a route's status counts are one array of
//! atomics, created at compile time, with no label lookup or lock per request (a
//! `prometheus-client` `Family` takes a read lock per `get_or_create`). The text format — names,
//! `HELP`/`TYPE`, label escaping, histogram buckets — is `prometheus-client`'s: at scrape time
//! [`render`] hands the current values to its encoder. Scraping walks the route registry under a
//! mutex that only the compiler and the `/metrics` handler take.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`render`] returns (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A source of metric families, written through `prometheus-client`'s encoder at scrape time.
pub trait Families: Send + Sync + 'static {
    fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result;
}

struct Scrape<T>(Arc<T>);

impl<T> fmt::Debug for Scrape<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl<T: Families> Collector for Scrape<T> {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.0.encode(&mut enc)
    }
}

/// Everything `source` holds, in the Prometheus text format ([`CONTENT_TYPE`]).
pub fn render<T: Families>(source: Arc<T>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(source)));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// Writes one unlabelled counter.
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Writes one unlabelled gauge.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

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

    /// The count `status` is in: its own, or its class's when it is not counted individually.
    pub fn get(&self, status: u16) -> u64 {
        match CODES.iter().position(|&c| c == status) {
            Some(i) => self.by_code[i].load(Relaxed),
            None => self.by_class[(status as usize / 100).min(5)].load(Relaxed),
        }
    }

    /// One sample per status seen (individually or by class), labelled `route`, `service` and
    /// `status`, into the `fenfa_http_requests` family.
    fn encode(
        &self,
        fam: &mut prometheus_client::encoding::MetricEncoder,
        route: &str,
        service: &str,
    ) -> fmt::Result {
        let mut status = itoa::Buffer::new();
        for (i, c) in CODES.iter().enumerate() {
            let v = self.by_code[i].load(Relaxed);
            if v > 0 {
                let labels = [
                    ("route", route),
                    ("service", service),
                    ("status", status.format(*c)),
                ];
                ConstCounter::new(v).encode(fam.encode_family(&labels)?)?;
            }
        }
        for (class, counter) in self.by_class.iter().enumerate() {
            let v = counter.load(Relaxed);
            if v > 0 {
                let text = format!("{class}xx");
                let labels = [
                    ("route", route),
                    ("service", service),
                    ("status", text.as_str()),
                ];
                ConstCounter::new(v).encode(fam.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Counters for one route, shared by every snapshot that has a route of this name.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    pub route: String,
    pub service: String,
    pub statuses: StatusCounters,
    /// Time from request head to end of response (`fenfa_http_request_duration_seconds`).
    pub latency: Histogram,
}

impl RouteMetrics {
    /// Counts one answered request: its status and how long it took.
    #[inline]
    pub fn record(&self, status: u16, latency_us: u64) {
        self.statuses.inc(status);
        self.latency.observe_us(latency_us);
    }
}

/// Upper bounds of the latency histogram buckets, in microseconds (0.5 ms to 10 s); the last
/// bucket of [`Histogram`] counts everything above them (`le="+Inf"`).
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram: one atomic per bucket plus the sum, made when its owner is (a route or
/// an upstream target, at config compile time). Observing is a search over 14 integer bounds
/// and two relaxed atomic adds: no lock, no allocation. The count is the sum of the buckets, so
/// a scrape always sees `_count` equal to the `+Inf` bucket. Aligned to a cache line so that its
/// writes do not disturb what its owner keeps next to it (a target's health, read per request).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Histogram {
    /// Non-cumulative counts: `buckets[i]` holds observations in (`BUCKETS_US[i-1]`,
    /// `BUCKETS_US[i]`]; the last one those above every bound.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    #[inline]
    pub fn observe_us(&self, us: u64) {
        let i = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// One histogram sample into `fam` (a family opened with [`MetricType::Histogram`]).
    fn encode(&self, fam: &mut MetricEncoder) -> fmt::Result {
        let buckets: [(f64, u64); BUCKETS_US.len() + 1] = std::array::from_fn(|i| {
            let bound = BUCKETS_US.get(i).map_or(f64::INFINITY, |&b| b as f64 / 1e6);
            (bound, self.buckets[i].load(Relaxed))
        });
        let count = buckets.iter().map(|(_, n)| n).sum();
        fam.encode_histogram::<NoLabelSet>(
            self.sum_us.load(Relaxed) as f64 / 1e6,
            count,
            &buckets,
            None,
        )
    }

    /// One sample labelled `labels` into `fam`; nothing while nothing was observed (see
    /// `docs/metrics.md`: a route or target appears with its first request, which keeps a scrape
    /// of a config with 100 000 routes to the routes in use).
    pub fn encode_labelled(&self, fam: &mut MetricEncoder, labels: &[(&str, &str)]) -> fmt::Result {
        if self.count() == 0 {
            return Ok(());
        }
        self.encode(&mut fam.encode_family(&labels)?)
    }
}

/// Process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    /// Requests that matched no route (404/405/400 before routing), as `route=""`.
    pub unrouted: RouteMetrics,
    pub in_flight: AtomicI64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Failed calls to the control plane (unreachable, refused).
    pub control_plane_errors: AtomicU64,
    pub config_generation: AtomicU64,
    /// Compiled snapshots in memory (`fenfa_config_snapshots`): the live one, plus any a reload
    /// replaced and that requests still hold. Counted by [`SnapshotCount`] in each snapshot.
    pub snapshots: Arc<AtomicI64>,
    /// The audit trail's counters (shared with its writer and shipper threads).
    pub audit: Arc<AuditCounters>,
    /// Async plugin calls by plugin and outcome (`fenfa_plugin_calls_total`).
    pub plugin_calls: PluginCalls,
    /// Inspection findings by plugin, class and action (`fenfa_findings_total`).
    pub findings: FindingCounters,
    /// Requests a plugin refused, by plugin and error code (`fenfa_denials_total`).
    pub denials: Denials,
}

/// Counts one compiled snapshot in [`Metrics::snapshots`] for as long as it lives: a replaced
/// snapshot that something still holds shows as 2 (for 100k routes, 200 MiB that a reload was
/// meant to give back).
#[derive(Debug)]
pub struct SnapshotCount(Arc<AtomicI64>);

impl SnapshotCount {
    pub fn new(metrics: &Metrics) -> Self {
        metrics.snapshots.fetch_add(1, Relaxed);
        Self(metrics.snapshots.clone())
    }
}

impl Drop for SnapshotCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What became of one async plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Returned in time and let the request go on.
    Ok,
    /// Returned in time and answered the request.
    Denied,
    /// Returned an error in time (the failure policy applied).
    Error,
    /// Ran out of its budget (the failure policy applied).
    Timeout,
}

impl CallOutcome {
    const ALL: [CallOutcome; 4] = [Self::Ok, Self::Denied, Self::Error, Self::Timeout];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// Counters made on first use of their key, for series only some requests touch: a read lock to
/// find a key's counters, the write lock once per key.
#[derive(Debug)]
struct Keyed<K, V>(std::sync::RwLock<BTreeMap<K, V>>);

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Self(std::sync::RwLock::new(BTreeMap::new()))
    }
}

impl<K: Ord, V: Default> Keyed<K, V> {
    /// Runs `f` on `key`'s counters, made if missing.
    fn with(&self, key: K, f: impl FnOnce(&V)) {
        {
            let r = self.read();
            if let Some(v) = r.get(&key) {
                return f(v);
            }
        }
        let mut w = self.0.write().unwrap_or_else(|p| p.into_inner());
        f(w.entry(key).or_default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<K, V>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counters of async plugin calls. Only requests on routes with async plugins touch them.
#[derive(Debug, Default)]
pub struct PluginCalls {
    by_plugin: Keyed<&'static str, [AtomicU64; 4]>,
}

impl PluginCalls {
    pub fn inc(&self, plugin: &'static str, outcome: CallOutcome) {
        self.by_plugin.with(plugin, |c| {
            c[outcome as usize].fetch_add(1, Relaxed);
        });
    }

    fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut fam = enc.encode_descriptor(
            "fenfa_plugin_calls",
            "Async plugin calls, by plugin and outcome.",
            None,
            MetricType::Counter,
        )?;
        for (plugin, c) in self.by_plugin.read().iter() {
            for o in CallOutcome::ALL {
                let labels = [("plugin", *plugin), ("outcome", o.label())];
                ConstCounter::new(c[o as usize].load(Relaxed))
                    .encode(fam.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Counters of inspection findings ([`fenfa_plugins::Finding`]). Only requests with findings
/// touch them (rare: an attack, masked personal data).
#[derive(Debug, Default)]
pub struct FindingCounters {
    by_key: Keyed<FindingKey, AtomicU64>,
}

/// `(plugin, class, action)`: the labels of one `fenfa_findings_total` series.
type FindingKey = (&'static str, &'static str, &'static str);

impl FindingCounters {
    pub fn add(&self, finding: &fenfa_plugins::Finding) {
        let key = (finding.plugin, finding.class, finding.action.as_str());
        let n = u64::from(finding.count.max(1));
        self.by_key.with(key, |c| {
            c.fetch_add(n, Relaxed);
        });
    }

    fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut fam = enc.encode_descriptor(
            "fenfa_findings",
            "Inspection findings (WAF detections, masked values, replaced pages), by plugin, class and action.",
            None,
            MetricType::Counter,
        )?;
        for ((plugin, class, action), c) in self.by_key.read().iter() {
            let labels = [("plugin", *plugin), ("class", *class), ("action", *action)];
            ConstCounter::new(c.load(Relaxed)).encode(fam.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Requests a plugin answered with an error instead of the upstream (`denied_by` of the audit
/// record), by plugin and error code. Both labels are `&'static str`s from the plugins' code
/// (names of registered plugins, their documented codes), never from request data, so the
/// label set is bounded by the plugins linked in. Only refused requests touch the map.
#[derive(Debug, Default)]
pub struct Denials {
    by_key: Keyed<(&'static str, &'static str), AtomicU64>,
}

impl Denials {
    pub fn inc(&self, plugin: &'static str, code: &'static str) {
        self.by_key.with((plugin, code), |c| {
            c.fetch_add(1, Relaxed);
        });
    }

    fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut fam = enc.encode_descriptor(
            "fenfa_denials",
            "Requests a plugin refused (answered with its error instead of the upstream's), by plugin and error code.",
            None,
            MetricType::Counter,
        )?;
        for ((plugin, code), c) in self.by_key.read().iter() {
            let labels = [("plugin", *plugin), ("code", *code)];
            ConstCounter::new(c.load(Relaxed)).encode(fam.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

pub use fenfa_audit::counters::{AuditCounters, SinkCounters};

/// Writes the audit trail's counters.
fn encode_audit(a: &AuditCounters, enc: &mut DescriptorEncoder) -> fmt::Result {
    {
        let counters = [
            (
                "fenfa_audit_records_written",
                "Audit records written to a segment.",
                &a.written,
            ),
            (
                "fenfa_audit_records_dropped",
                "Audit records dropped: queue full or writer stopped.",
                &a.dropped,
            ),
            (
                "fenfa_audit_rejected",
                "Requests answered 503 because the audit queue was full (strict mode).",
                &a.rejected,
            ),
            (
                "fenfa_audit_write_errors",
                "Failed audit segment writes (retried).",
                &a.write_errors,
            ),
            (
                "fenfa_audit_records_shipped",
                "Audit records delivered to the control plane.",
                &a.ship.delivered,
            ),
            (
                "fenfa_audit_ship_failures",
                "Failed audit shipping attempts (retried).",
                &a.ship.failures,
            ),
            (
                "fenfa_audit_records_exported",
                "Audit records accepted by the OTLP collector.",
                &a.otlp.delivered,
            ),
            (
                "fenfa_audit_export_failures",
                "Failed OTLP export attempts (retried).",
                &a.otlp.failures,
            ),
            (
                "fenfa_audit_export_refused",
                "Audit records the OTLP collector refused for good (still in the local trail).",
                &a.otlp.refused,
            ),
        ];
        for (name, help, v) in counters {
            counter(enc, name, help, v.load(Relaxed))?;
        }
        gauge(
            enc,
            "fenfa_audit_queue_depth",
            "Audit records queued or reserved, not yet taken by the writer.",
            a.queued.load(Relaxed) as i64,
        )?;
        gauge(
            enc,
            "fenfa_audit_ship_backlog_bytes",
            "Bytes of audit segments not yet delivered to the control plane (0 without audit.ship).",
            a.ship.backlog_bytes.load(Relaxed) as i64,
        )?;
        gauge(
            enc,
            "fenfa_audit_export_backlog_bytes",
            "Bytes of audit segments not yet accepted by the OTLP collector (0 without audit.otlp).",
            a.otlp.backlog_bytes.load(Relaxed) as i64,
        )
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
            ..RouteMetrics::default()
        });
        routes.insert(route.to_string(), m.clone());
        m
    }

    /// Forgets the counters of routes `live` says are gone (called when a config goes live, with
    /// its routes), so the route label set is the live config's: a route removed from the config
    /// leaves `/metrics`, and one added again later starts from zero (a counter reset, which
    /// Prometheus's `rate` handles).
    pub fn retain_routes(&self, live: impl Fn(&str) -> bool) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.retain(|name, _| live(name));
    }

    /// How many routes have counters (for tests of the label set's bound).
    pub fn route_count(&self) -> usize {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Writes everything except upstream health (see `crate::status`).
    pub fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        self.plugin_calls.encode(enc)?;
        self.findings.encode(enc)?;
        self.denials.encode(enc)?;
        {
            let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            let all = || routes.values().map(|m| &**m).chain([&self.unrouted]);
            let mut fam = enc.encode_descriptor(
                "fenfa_http_requests",
                "Requests answered, by route and status.",
                None,
                MetricType::Counter,
            )?;
            for m in all() {
                m.statuses.encode(&mut fam, &m.route, &m.service)?;
            }
            let mut fam = enc.encode_descriptor(
                "fenfa_http_request_duration_seconds",
                "Time from request head to end of response, by route.",
                None,
                MetricType::Histogram,
            )?;
            for m in all() {
                let labels = [("route", m.route.as_str()), ("service", m.service.as_str())];
                m.latency.encode_labelled(&mut fam, &labels)?;
            }
        }
        gauge(
            enc,
            "fenfa_http_requests_in_flight",
            "Requests being answered now.",
            self.in_flight.load(Relaxed),
        )?;
        counter(
            enc,
            "fenfa_config_reloads",
            "Configs that went live, the first included.",
            self.reloads.load(Relaxed),
        )?;
        counter(
            enc,
            "fenfa_config_reload_failures",
            "Configs refused (the running one stayed).",
            self.reload_failures.load(Relaxed),
        )?;
        counter(
            enc,
            "fenfa_control_plane_errors",
            "Failed calls to the control plane.",
            self.control_plane_errors.load(Relaxed),
        )?;
        gauge(
            enc,
            "fenfa_config_snapshots",
            "Compiled configs in memory: 1, and briefly 2 while a reload replaces one.",
            self.snapshots.load(Relaxed),
        )?;
        gauge(
            enc,
            "fenfa_config_generation",
            "Generation of the live config (1 for the first).",
            self.config_generation.load(Relaxed) as i64,
        )?;
        encode_audit(&self.audit, enc)
    }
}

impl Families for Metrics {
    fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        Metrics::encode(self, enc)
    }
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
        let out = render(Arc::new(m));
        assert!(
            out.contains("fenfa_http_requests_total{route=\"r1\",service=\"s1\",status=\"200\"} 2"),
            "{out}"
        );
        assert!(out.contains("status=\"4xx\"} 1"), "{out}");
    }

    #[test]
    fn histogram_is_cumulative_with_inf_equal_to_count() {
        let m = Metrics::default();
        let r = m.route("r1", "s1");
        r.latency.observe_us(300);
        r.latency.observe_us(500);
        r.latency.observe_us(501);
        r.latency.observe_us(2_000_000);
        r.latency.observe_us(20_000_000);
        let out = render(Arc::new(m));
        let x = "fenfa_http_request_duration_seconds";
        let l = r#"route="r1",service="s1""#;
        for (le, n) in [
            ("0.0005", 2),
            ("0.001", 3),
            ("2.5", 4),
            ("10", 4),
            ("+Inf", 5),
        ] {
            let line = format!("{x}_bucket{{{l},le=\"{le}\"}} {n}\n");
            assert!(out.contains(&line), "no {line:?} in {out}");
        }
        assert!(out.contains(&format!("{x}_count{{{l}}} 5\n")), "{out}");
        assert!(
            out.contains(&format!("{x}_sum{{{l}}} 22.001301\n")),
            "{out}"
        );
    }

    #[test]
    fn routes_without_requests_have_no_histogram_and_removed_routes_leave() {
        let m = Metrics::default();
        m.route("idle", "s");
        m.route("busy", "s").record(200, 1_000);
        m.route("gone", "s").record(200, 1_000);
        m.retain_routes(|r| r != "gone");
        assert_eq!(m.route_count(), 2);
        let out = render(Arc::new(m));
        assert!(
            out.contains(r#"_count{route="busy",service="s"} 1"#),
            "{out}"
        );
        assert!(!out.contains(r#"route="idle""#), "{out}");
        assert!(!out.contains(r#"route="gone""#), "{out}");
    }

    #[test]
    fn denials_are_counted_by_plugin_and_code() {
        let m = Metrics::default();
        m.denials.inc("rate-limit", "rate_limited");
        m.denials.inc("rate-limit", "rate_limited");
        m.denials.inc("jwt-auth", "missing_token");
        let out = render(Arc::new(m));
        assert!(
            out.contains(r#"fenfa_denials_total{plugin="rate-limit",code="rate_limited"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"fenfa_denials_total{plugin="jwt-auth",code="missing_token"} 1"#),
            "{out}"
        );
    }

    #[test]
    fn every_family_has_help_and_type_and_label_values_are_escaped() {
        let m = Metrics::default();
        m.route("r\"1\\\n", "s").statuses.inc(200);
        m.unrouted.record(404, 10);
        let out = render(Arc::new(m));
        assert!(
            out.contains(
                r#"fenfa_http_requests_total{route="r\"1\\\n",service="s",status="200"} 1"#
            ),
            "{out}"
        );
        assert!(out.contains(r#"fenfa_http_requests_total{route="",service="",status="404"} 1"#));
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(names.len() > 10, "{out}");
        for name in names {
            assert!(
                out.contains(&format!("# HELP {name} ")),
                "{name} has no HELP: {out}"
            );
        }
    }
}
