//! The detectors: a pure state machine over request audit records ([`Detector::observe`]) and
//! the passing of time ([`Detector::tick`]), producing [`Signal`]s. No I/O, no clock of its own:
//! time is the records' `time` (so a replay of old records behaves as the traffic did), moved on
//! by `tick` when no records arrive.
//!
//! Memory is bounded: every per-subject table holds at most [`MAX_KEYS`] subjects (new subjects
//! beyond that are not tracked until idle ones are swept), and every sliding window at most
//! [`MAX_WINDOW`] entries. Evidence carries counts, windows, thresholds and sample request ids,
//! never the values of personal data (an enumerated id, a WAF excerpt, a path).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use serde_json::{json, Value};

use super::rules::{AutoDeny, Rule, RuleName, Settings, Severity};

/// Most subjects one table tracks.
pub const MAX_KEYS: usize = 100_000;
/// Most entries one sliding window keeps.
pub const MAX_WINDOW: usize = 10_000;
/// Sample request ids an alert carries.
pub const SAMPLES: usize = 5;
/// Weight of the newest window in a baseline.
const ALPHA: f64 = 0.3;

/// What a detector saw: one alert's worth of evidence about one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub rule: RuleName,
    pub severity: Severity,
    /// `client_ip`, `app`, `user`, `service` or `account`.
    pub subject_kind: &'static str,
    pub subject: String,
    pub service: Option<String>,
    /// Unix seconds of the record (or tick) that crossed the threshold.
    pub at: i64,
    /// One line for people (Simplified Chinese).
    pub summary: String,
    /// Counts, window, threshold, sample request ids.
    pub evidence: Value,
    /// Set when the rule asks for it and the subject is a client IP.
    pub auto_deny: Option<AutoDeny>,
}

impl Signal {
    /// Signals with one key belong to one incident.
    pub fn dedup_key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.rule.as_str(),
            self.subject_kind,
            self.subject,
            self.service.as_deref().unwrap_or("")
        )
    }
}

/// The fields of a request audit record the detectors read (docs/audit.md).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub time: i64,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub app: Option<String>,
    pub user: Option<String>,
    pub service: Option<String>,
    pub route: Option<String>,
    pub path: Option<String>,
    pub status: u16,
    pub latency_us: u64,
    pub bytes: u64,
    pub denied_by: Option<String>,
    pub waf: bool,
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(str::to_string)
}

impl Record {
    /// Reads a record; `time` falls back to `received` when absent or unreadable.
    pub fn from_json(v: &Value, received: i64) -> Record {
        let time = v
            .get("time")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(received, |t| t.as_second());
        let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let waf = v
            .get("findings")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x.get("plugin") == Some(&json!("waf"))));
        Record {
            time,
            request_id: text(v, "request_id"),
            client_ip: text(v, "client_ip"),
            app: text(v, "app"),
            user: text(v, "user"),
            service: text(v, "service"),
            route: text(v, "route"),
            path: text(v, "path"),
            status: u16::try_from(num("status")).unwrap_or(0),
            latency_us: num("latency_us"),
            bytes: num("bytes"),
            denied_by: text(v, "denied_by"),
            waf,
        }
    }
}

/// Whether a path segment looks like a resource id: digits, a UUID, long hex, or a code of
/// letters and digits (an order number, an id card number).
pub fn looks_like_id(seg: &str) -> bool {
    if seg.is_empty() || seg.len() > 64 {
        return false;
    }
    let all = |f: fn(char) -> bool| seg.chars().all(f);
    if all(|c| c.is_ascii_digit()) {
        return true;
    }
    if seg.len() == 36 && all(|c| c.is_ascii_hexdigit() || c == '-') {
        return true;
    }
    if seg.len() >= 8 && all(|c| c.is_ascii_hexdigit()) {
        return true;
    }
    seg.len() >= 6
        && all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && seg.chars().filter(char::is_ascii_digit).count() >= 3
}

/// The id-like segments among the last two of `path` (query string dropped), joined.
pub fn resource_id(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let ids: Vec<&str> = path
        .rsplit('/')
        .filter(|s| !s.is_empty())
        .take(2)
        .filter(|s| looks_like_id(s))
        .collect();
    (!ids.is_empty()).then(|| ids.join("/"))
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// The last few request ids, for evidence.
#[derive(Debug, Default, Clone)]
struct Samples(VecDeque<String>);

impl Samples {
    fn push(&mut self, id: &Option<String>) {
        if let Some(id) = id {
            if self.0.len() == SAMPLES {
                self.0.pop_front();
            }
            self.0.push_back(id.clone());
        }
    }

    fn json(&self) -> Value {
        json!(self.0.iter().collect::<Vec<_>>())
    }
}

/// Events in the last `window` seconds (sliding), with an optional amount each.
#[derive(Debug, Default)]
struct Sliding {
    events: VecDeque<(i64, u64)>,
    sum: u64,
    samples: Samples,
    fired_at: Option<i64>,
    last: i64,
}

impl Sliding {
    fn add(&mut self, t: i64, amount: u64, window: i64, id: &Option<String>) {
        self.last = self.last.max(t);
        while let Some(&(old, a)) = self.events.front() {
            if old > self.last - window && self.events.len() < MAX_WINDOW {
                break;
            }
            self.events.pop_front();
            self.sum -= a;
        }
        self.events.push_back((t, amount));
        self.sum += amount;
        self.samples.push(id);
    }

    /// True once per window when `value` reaches `threshold`.
    fn crossed(&mut self, value: f64, threshold: f64, window: i64) -> bool {
        if value < threshold {
            return false;
        }
        if self.fired_at.is_some_and(|f| self.last < f + window) {
            return false;
        }
        self.fired_at = Some(self.last);
        true
    }
}

/// A per-window count with an EWMA baseline of past windows.
#[derive(Debug, Default)]
struct Baseline {
    bucket: i64,
    count: u64,
    ewma: f64,
    seen: u32,
    started: bool,
    fired_bucket: Option<i64>,
    samples: Samples,
    last: i64,
}

impl Baseline {
    /// Moves to the window of `t`, folding finished windows (and empty ones) into the baseline.
    fn roll(&mut self, t: i64, window: i64) {
        let b = t.div_euclid(window);
        if !self.started {
            self.started = true;
            self.bucket = b;
            return;
        }
        if b <= self.bucket {
            return;
        }
        let c = self.count as f64;
        self.ewma = if self.seen == 0 {
            c
        } else {
            ALPHA * c + (1.0 - ALPHA) * self.ewma
        };
        let empty = (b - self.bucket - 1).min(1000) as i32;
        self.ewma *= (1.0 - ALPHA).powi(empty);
        self.seen = self.seen.saturating_add(1 + empty as u32);
        self.bucket = b;
        self.count = 0;
        self.samples = Samples::default();
    }
}

/// A service's window: requests, 5xx, latencies.
#[derive(Debug, Default)]
struct ServiceWindow {
    start: i64,
    total: u64,
    errors: u64,
    latencies: Vec<u64>,
    error_samples: Samples,
    fired_errors: bool,
    fired_latency: bool,
    p99_ewma: f64,
    p99_seen: u32,
    started: bool,
}

fn p99(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64) * 0.99).ceil() as usize;
    v[i.saturating_sub(1).min(v.len() - 1)]
}

/// Distinct resource ids one subject touched on one route.
#[derive(Debug, Default)]
struct Distinct {
    ids: HashMap<u64, i64>,
    samples: Samples,
    fired_at: Option<i64>,
    last: i64,
}

/// A table of per-subject state, bounded by [`MAX_KEYS`].
#[derive(Debug)]
struct Table<T>(HashMap<String, T>);

impl<T: Default> Default for Table<T> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<T: Default> Table<T> {
    fn get(&mut self, key: String) -> Option<&mut T> {
        if self.0.len() >= MAX_KEYS && !self.0.contains_key(&key) {
            return None;
        }
        Some(self.0.entry(key).or_default())
    }
}

/// All detector state.
#[derive(Default)]
pub struct Detector {
    now: i64,
    jump: Table<Baseline>,
    service_traffic: Table<Baseline>,
    stopped: HashSet<String>,
    auth: Table<Sliding>,
    enumeration: Table<Distinct>,
    services: Table<ServiceWindow>,
    waf: Table<Sliding>,
    limited: Table<Sliding>,
    large: Table<Sliding>,
    /// Recent signals by every subject of the record that caused them (`rule|kind|value` →
    /// the signal's subject and time), so that one client crossing several thresholds at once
    /// (its address, its user, its app) is one incident.
    links: HashMap<String, (&'static str, String, i64)>,
}

fn signal(
    rule: RuleName,
    r: &Rule,
    (kind, subject): (&'static str, &str),
    service: Option<&str>,
    at: i64,
    summary: String,
    evidence: Value,
) -> Signal {
    Signal {
        rule,
        severity: r.severity,
        subject_kind: kind,
        subject: subject.to_string(),
        service: service.map(str::to_string),
        at,
        summary,
        evidence,
        auto_deny: if kind == "client_ip" {
            r.auto_deny.clone()
        } else {
            None
        },
    }
}

impl Detector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The subject a signal of `rule` caused by `rec` is filed under: that of a recent signal of
    /// the same rule caused by a record sharing a subject with `rec`, else `own`. Links `rec`'s
    /// subjects to the result.
    fn correlate(
        &mut self,
        rule: RuleName,
        rec: &Record,
        window: i64,
        own: (&'static str, String),
    ) -> (&'static str, String) {
        let keys: Vec<String> = [
            ("app", &rec.app),
            ("user", &rec.user),
            ("client_ip", &rec.client_ip),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{}|{k}|{v}", rule.as_str())))
        .collect();
        let found = keys.iter().find_map(|k| {
            self.links
                .get(k)
                .filter(|(_, _, t)| *t > rec.time - window)
                .map(|(kind, s, _)| (*kind, s.clone()))
        });
        let chosen = found.unwrap_or(own);
        if self.links.len() < MAX_KEYS {
            for k in keys {
                self.links.insert(k, (chosen.0, chosen.1.clone(), rec.time));
            }
        }
        chosen
    }

    /// The detector's time: the latest record or tick.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Feeds one record; returns the signals it caused.
    pub fn observe(&mut self, s: &Settings, rec: &Record) -> Vec<Signal> {
        let mut out = Vec::new();
        let t = rec.time;
        if t > self.now {
            self.tick_into(s, t, &mut out);
        }
        let svc = rec.service.as_deref();
        self.traffic_jump(s, rec, &mut out);
        self.service_traffic(s, rec);
        self.auth_failures(s, rec, &mut out);
        self.enumeration(s, rec, &mut out);
        self.service_health(s, rec, &mut out);
        // Per client IP: WAF detections, rate-limit denials, response bytes.
        if let Some(ip) = &rec.client_ip {
            let count_rules = [
                (RuleName::Waf, rec.waf, "次 WAF 检测"),
                (
                    RuleName::RateLimited,
                    rec.denied_by.as_deref() == Some("rate-limit"),
                    "次限流拒绝",
                ),
            ];
            for (rule, hit, what) in count_rules {
                let (scope, r) = s.rule_for(rule, svc);
                if !hit || !r.enabled {
                    continue;
                }
                let table = if rule == RuleName::Waf {
                    &mut self.waf
                } else {
                    &mut self.limited
                };
                let Some(w) = table.get(format!("{scope}|{ip}")) else {
                    continue;
                };
                w.add(t, 1, r.window_secs, &rec.request_id);
                let n = w.events.len();
                if w.crossed(n as f64, r.threshold, r.window_secs) {
                    out.push(signal(
                        rule,
                        &r,
                        ("client_ip", ip),
                        None,
                        t,
                        format!("{} 秒内 {n} {what}(阈值 {})", r.window_secs, r.threshold),
                        json!({"count": n, "window_secs": r.window_secs, "threshold": r.threshold,
                               "sample_request_ids": w.samples.json()}),
                    ));
                }
            }
            let (scope, r) = s.rule_for(RuleName::LargeResponses, svc);
            if r.enabled && rec.bytes > 0 {
                if let Some(w) = self.large.get(format!("{scope}|{ip}")) {
                    w.add(t, rec.bytes, r.window_secs, &rec.request_id);
                    let sum = w.sum;
                    if w.crossed(sum as f64, r.threshold, r.window_secs) {
                        out.push(signal(
                            RuleName::LargeResponses,
                            &r,
                            ("client_ip", ip),
                            None,
                            t,
                            format!(
                                "{} 秒内响应 {:.1} MiB(阈值 {:.1} MiB)",
                                r.window_secs,
                                sum as f64 / 1048576.0,
                                r.threshold / 1048576.0
                            ),
                            json!({"bytes": sum, "responses": w.events.len(), "window_secs": r.window_secs,
                                   "threshold": r.threshold, "sample_request_ids": w.samples.json()}),
                        ));
                    }
                }
            }
        }
        out
    }

    fn traffic_jump(&mut self, s: &Settings, rec: &Record, out: &mut Vec<Signal>) {
        let (scope, r) = s.rule_for(RuleName::TrafficJump, rec.service.as_deref());
        if !r.enabled {
            return;
        }
        let subjects = [
            ("app", &rec.app),
            ("user", &rec.user),
            ("client_ip", &rec.client_ip),
        ];
        for (kind, v) in subjects {
            let Some(v) = v else { continue };
            let Some(b) = self.jump.get(format!("{scope}|{kind}|{v}")) else {
                continue;
            };
            b.roll(rec.time, r.window_secs);
            b.count += 1;
            b.last = b.last.max(rec.time);
            b.samples.push(&rec.request_id);
            let base = b.ewma.max(1.0);
            if b.seen >= r.warmup_windows
                && b.count >= r.min_requests
                && b.count as f64 >= r.threshold * base
                && b.fired_bucket != Some(b.bucket)
            {
                b.fired_bucket = Some(b.bucket);
                let factor = b.count as f64 / base;
                let (count, ewma, samples) = (b.count, b.ewma, b.samples.json());
                let (kind, v) =
                    self.correlate(RuleName::TrafficJump, rec, r.window_secs, (kind, v.clone()));
                out.push(signal(
                    RuleName::TrafficJump,
                    &r,
                    (kind, &v),
                    None,
                    rec.time,
                    format!(
                        "{} 秒内 {} 次调用,为基线 {:.1} 的 {:.1} 倍(阈值 {} 倍)",
                        r.window_secs, count, ewma, factor, r.threshold
                    ),
                    json!({"count": count, "baseline": (ewma * 10.0).round() / 10.0,
                           "factor": (factor * 10.0).round() / 10.0, "window_secs": r.window_secs,
                           "threshold": r.threshold, "sample_request_ids": samples}),
                ));
            }
        }
    }

    fn service_traffic(&mut self, s: &Settings, rec: &Record) {
        let Some(svc) = &rec.service else { return };
        let (_, r) = s.rule_for(RuleName::TrafficStop, Some(svc));
        if let Some(b) = self.service_traffic.get(svc.clone()) {
            b.roll(rec.time, r.window_secs);
            b.count += 1;
            b.last = b.last.max(rec.time);
        }
        self.stopped.remove(svc);
    }

    fn auth_failures(&mut self, s: &Settings, rec: &Record, out: &mut Vec<Signal>) {
        if !matches!(rec.status, 401 | 403) {
            return;
        }
        let (scope, r) = s.rule_for(RuleName::AuthFailures, rec.service.as_deref());
        if !r.enabled {
            return;
        }
        // Per client IP at the threshold; per app (many addresses, one app) at 5× it.
        for (kind, v, factor) in [("client_ip", &rec.client_ip, 1.0), ("app", &rec.app, 5.0)] {
            let Some(v) = v else { continue };
            let Some(w) = self.auth.get(format!("{scope}|{kind}|{v}")) else {
                continue;
            };
            w.add(rec.time, 1, r.window_secs, &rec.request_id);
            let n = w.events.len();
            let threshold = r.threshold * factor;
            if w.crossed(n as f64, threshold, r.window_secs) {
                out.push(signal(
                    RuleName::AuthFailures,
                    &r,
                    (kind, v),
                    None,
                    rec.time,
                    format!("{} 秒内 {n} 次 401/403(阈值 {threshold})", r.window_secs),
                    json!({"count": n, "window_secs": r.window_secs, "threshold": threshold,
                           "sample_request_ids": w.samples.json()}),
                ));
            }
        }
    }

    fn enumeration(&mut self, s: &Settings, rec: &Record, out: &mut Vec<Signal>) {
        let (Some(route), Some(path)) = (&rec.route, &rec.path) else {
            return;
        };
        let Some(id) = resource_id(path) else { return };
        let (scope, r) = s.rule_for(RuleName::Enumeration, rec.service.as_deref());
        if !r.enabled {
            return;
        }
        let (kind, who) = match (&rec.user, &rec.client_ip) {
            (Some(u), _) => ("user", u),
            (None, Some(ip)) => ("client_ip", ip),
            _ => return,
        };
        let Some(d) = self
            .enumeration
            .get(format!("{scope}|{route}|{kind}|{who}"))
        else {
            return;
        };
        d.last = d.last.max(rec.time);
        let horizon = d.last - r.window_secs;
        if d.ids.len() >= MAX_WINDOW {
            d.ids.retain(|_, t| *t > horizon);
        }
        if d.ids.len() < MAX_WINDOW {
            d.ids.insert(hash(&id), rec.time);
        }
        d.samples.push(&rec.request_id);
        let n = d.ids.values().filter(|t| **t > horizon).count();
        if n as f64 >= r.threshold && d.fired_at.is_none_or(|f| d.last >= f + r.window_secs) {
            d.fired_at = Some(d.last);
            out.push(signal(
                RuleName::Enumeration,
                &r,
                (kind, who),
                rec.service.as_deref(),
                rec.time,
                format!(
                    "{} 秒内访问接口 {route} 的 {n} 个不同资源 id(阈值 {})",
                    r.window_secs, r.threshold
                ),
                json!({"distinct_ids": n, "route": route, "window_secs": r.window_secs,
                       "threshold": r.threshold, "sample_request_ids": d.samples.json()}),
            ));
        }
    }

    fn service_health(&mut self, s: &Settings, rec: &Record, out: &mut Vec<Signal>) {
        let Some(svc) = &rec.service else { return };
        let (_, er) = s.rule_for(RuleName::ServerErrors, Some(svc));
        let (_, lr) = s.rule_for(RuleName::LatencyJump, Some(svc));
        let window = er.window_secs;
        let Some(w) = self.services.get(svc.clone()) else {
            return;
        };
        if !w.started {
            w.started = true;
            w.start = rec.time;
        }
        if rec.time >= w.start + window {
            Self::close_service_window(svc, w, &lr, rec.time, out);
        }
        w.total += 1;
        if rec.status >= 500 {
            w.errors += 1;
            w.error_samples.push(&rec.request_id);
        }
        if w.latencies.len() < MAX_WINDOW {
            w.latencies.push(rec.latency_us);
        }
        let ratio = w.errors as f64 / w.total as f64;
        if er.enabled && !w.fired_errors && w.total >= er.min_requests && ratio >= er.threshold {
            w.fired_errors = true;
            out.push(signal(
                RuleName::ServerErrors,
                &er,
                ("service", svc),
                Some(svc),
                rec.time,
                format!(
                    "{} 个请求中 {} 个 5xx,比例 {:.0}%(阈值 {:.0}%)",
                    w.total,
                    w.errors,
                    ratio * 100.0,
                    er.threshold * 100.0
                ),
                json!({"requests": w.total, "errors": w.errors, "ratio": (ratio * 1000.0).round() / 1000.0,
                       "window_secs": window, "threshold": er.threshold,
                       "sample_request_ids": w.error_samples.json()}),
            ));
        }
    }

    /// Ends a service's window: compares its p99 with the baseline, then starts a new one.
    fn close_service_window(
        svc: &str,
        w: &mut ServiceWindow,
        lr: &Rule,
        t: i64,
        out: &mut Vec<Signal>,
    ) {
        if w.total >= lr.min_requests.max(1) {
            let p = p99(&mut w.latencies) as f64;
            if lr.enabled
                && !w.fired_latency
                && w.p99_seen >= lr.warmup_windows
                && w.p99_ewma > 0.0
                && p >= lr.threshold * w.p99_ewma
            {
                w.fired_latency = true;
                out.push(signal(
                    RuleName::LatencyJump,
                    lr,
                    ("service", svc),
                    Some(svc),
                    t,
                    format!(
                        "P99 时延 {:.0} ms,为基线 {:.0} ms 的 {:.1} 倍(阈值 {} 倍)",
                        p / 1000.0,
                        w.p99_ewma / 1000.0,
                        p / w.p99_ewma,
                        lr.threshold
                    ),
                    json!({"p99_us": p, "baseline_p99_us": w.p99_ewma.round(), "requests": w.total,
                           "window_secs": lr.window_secs, "threshold": lr.threshold}),
                ));
            }
            w.p99_ewma = if w.p99_seen == 0 {
                p
            } else {
                ALPHA * p + (1.0 - ALPHA) * w.p99_ewma
            };
            w.p99_seen = w.p99_seen.saturating_add(1);
        }
        *w = ServiceWindow {
            start: t,
            p99_ewma: w.p99_ewma,
            p99_seen: w.p99_seen,
            started: true,
            ..Default::default()
        };
    }

    /// Moves time on to `now` (never back): services whose traffic stopped, idle state swept.
    pub fn tick(&mut self, s: &Settings, now: i64) -> Vec<Signal> {
        let mut out = Vec::new();
        if now > self.now {
            self.tick_into(s, now, &mut out);
        }
        out
    }

    fn tick_into(&mut self, s: &Settings, now: i64, out: &mut Vec<Signal>) {
        let before = self.now;
        self.now = now;
        // Traffic stop: a service with a baseline and a whole empty window behind it.
        for (svc, b) in self.service_traffic.0.iter_mut() {
            let (_, r) = s.rule_for(RuleName::TrafficStop, Some(svc));
            if !r.enabled || self.stopped.contains(svc) {
                continue;
            }
            let current = now.div_euclid(r.window_secs);
            if current < b.bucket + 2 {
                continue;
            }
            let warm = b.seen >= r.warmup_windows;
            let baseline = if b.seen == 0 {
                b.count as f64
            } else {
                ALPHA * b.count as f64 + (1.0 - ALPHA) * b.ewma
            };
            if warm && baseline >= r.min_requests as f64 {
                self.stopped.insert(svc.clone());
                out.push(signal(
                    RuleName::TrafficStop,
                    &r,
                    ("service", svc),
                    Some(svc),
                    now,
                    format!(
                        "{} 秒以上无任何请求,此前基线为每 {} 秒 {:.1} 次",
                        now - b.last,
                        r.window_secs,
                        baseline
                    ),
                    json!({"silent_secs": now - b.last, "baseline": (baseline * 10.0).round() / 10.0,
                           "window_secs": r.window_secs, "min_requests": r.min_requests}),
                ));
            }
        }
        // Sweep idle state once a minute (of record time).
        if now.div_euclid(60) != before.div_euclid(60) {
            let day = now - 86_400;
            self.jump.0.retain(|_, b| b.last > day);
            self.service_traffic
                .0
                .retain(|_, b| b.last > now - 7 * 86_400);
            for t in [
                &mut self.auth,
                &mut self.waf,
                &mut self.limited,
                &mut self.large,
            ] {
                t.0.retain(|_, w| w.last > day);
            }
            self.enumeration.0.retain(|_, d| d.last > day);
            self.links.retain(|_, (_, _, t)| *t > day);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: i64, ip: &str, status: u16) -> Record {
        Record {
            time: t,
            request_id: Some(format!("r{t}")),
            client_ip: Some(ip.into()),
            app: Some("wx1".into()),
            user: None,
            service: Some("svc".into()),
            route: Some("get".into()),
            path: Some("/a/b".into()),
            status,
            latency_us: 1000,
            bytes: 100,
            ..Default::default()
        }
    }

    #[test]
    fn ids_are_recognised() {
        assert_eq!(
            resource_id("/v1/orders/12345?x=1").as_deref(),
            Some("12345")
        );
        assert_eq!(
            resource_id("/p/11010519491231002X").as_deref(),
            Some("11010519491231002X")
        );
        assert_eq!(resource_id("/v1/orders/list"), None);
        assert!(looks_like_id("3f2504e0-4f89-11d3-9a0c-0305e82c3301"));
        assert!(!looks_like_id("profile"));
    }

    #[test]
    fn a_401_burst_fires_once_per_window() {
        let s = Settings::default();
        let mut d = Detector::new();
        let mut sig = Vec::new();
        for i in 0..50 {
            sig.extend(d.observe(&s, &rec(1000 + i / 5, "10.0.0.1", 401)));
        }
        assert_eq!(sig.len(), 1, "{sig:?}");
        assert_eq!(sig[0].rule, RuleName::AuthFailures);
        assert_eq!(sig[0].subject, "10.0.0.1");
        assert_eq!(sig[0].evidence["count"], 20);
    }

    #[test]
    fn a_jump_over_the_baseline_fires_and_steady_traffic_does_not() {
        let s = Settings::default();
        let mut d = Detector::new();
        let mut sig = Vec::new();
        for m in 0..10 {
            for i in 0..20 {
                sig.extend(d.observe(&s, &rec(60 * m + i * 3, &format!("10.0.0.{i}"), 200)));
            }
        }
        assert!(sig.is_empty(), "{sig:?}");
        for i in 0..300 {
            sig.extend(d.observe(&s, &rec(600 + i / 10, &format!("10.0.0.{}", i % 20), 200)));
        }
        assert_eq!(sig.len(), 1, "{sig:?}");
        assert_eq!(
            (sig[0].rule, sig[0].subject_kind),
            (RuleName::TrafficJump, "app")
        );
    }

    #[test]
    fn one_client_jumping_on_every_subject_is_one_incident() {
        let s = Settings::default();
        let mut d = Detector::new();
        let mut sig = Vec::new();
        let one = |t: i64| Record {
            user: Some("u-1".into()),
            ..rec(t, "10.0.0.1", 200)
        };
        for m in 0..10 {
            for i in 0..20 {
                sig.extend(d.observe(&s, &one(60 * m + i * 3)));
            }
        }
        for i in 0..400 {
            sig.extend(d.observe(&s, &one(600 + i / 10)));
        }
        let keys: std::collections::BTreeSet<String> = sig.iter().map(Signal::dedup_key).collect();
        assert!(sig.len() >= 2, "app, user and address all jumped: {sig:?}");
        assert_eq!(keys.len(), 1, "{keys:?}");
    }

    #[test]
    fn waf_rate_limit_and_bulk_download_per_address() {
        let s = Settings::default();
        let mut d = Detector::new();
        let mut sig = Vec::new();
        for i in 0..10 {
            let mut r = rec(1000 + i, "10.0.0.9", 403);
            r.waf = true;
            r.client_ip = Some("10.0.0.9".into());
            r.app = None;
            sig.extend(d.observe(&s, &r));
        }
        for i in 0..60 {
            let mut r = rec(1000 + i / 2, "10.0.0.8", 429);
            r.denied_by = Some("rate-limit".into());
            r.app = None;
            sig.extend(d.observe(&s, &r));
        }
        for i in 0..30 {
            let mut r = rec(1000 + i * 10, "10.0.0.7", 200);
            r.bytes = 5 << 20;
            r.app = None;
            sig.extend(d.observe(&s, &r));
        }
        let rules: Vec<(RuleName, &str)> =
            sig.iter().map(|x| (x.rule, x.subject.as_str())).collect();
        assert_eq!(
            rules,
            [
                (RuleName::Waf, "10.0.0.9"),
                (RuleName::RateLimited, "10.0.0.8"),
                (RuleName::LargeResponses, "10.0.0.7"),
            ]
        );
        assert_eq!(sig[2].evidence["bytes"], 20 * (5 << 20));
    }

    #[test]
    fn a_p99_jump_is_noticed_when_its_window_closes() {
        let s = Settings::default();
        let mut d = Detector::new();
        let mut sig = Vec::new();
        for m in 0..8 {
            for i in 0..30 {
                let mut r = rec(60 * m + i * 2, "10.0.0.1", 200);
                r.app = None;
                r.latency_us = if m == 7 {
                    900_000
                } else {
                    10_000 + (i as u64) * 100
                };
                sig.extend(d.observe(&s, &r));
            }
        }
        assert!(sig.is_empty(), "{sig:?}");
        let mut r = rec(60 * 8 + 1, "10.0.0.1", 200);
        r.app = None;
        sig.extend(d.observe(&s, &r));
        assert_eq!(sig.len(), 1, "{sig:?}");
        assert_eq!(sig[0].rule, RuleName::LatencyJump);
    }

    #[test]
    fn a_service_that_goes_silent_is_noticed() {
        let s = Settings::default();
        let mut d = Detector::new();
        let mut sig = Vec::new();
        for m in 0..10 {
            for i in 0..20 {
                sig.extend(d.observe(&s, &rec(60 * m + i, "10.0.0.1", 200)));
            }
        }
        sig.retain(|x| x.rule == RuleName::TrafficStop);
        assert!(sig.is_empty());
        let sig = d.tick(&s, 60 * 12 + 5);
        assert_eq!(sig.len(), 1, "{sig:?}");
        assert_eq!(sig[0].rule, RuleName::TrafficStop);
        assert!(d.tick(&s, 60 * 14).is_empty());
    }
}
