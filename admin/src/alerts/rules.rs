//! Detector settings: the rules, their documented defaults ([`Settings::default`]), per-service
//! overrides, and the working hours admin-side rules compare against.
//!
//! Stored as one JSON document (`PUT /v1/alert-settings`, security admin). Input is parsed into
//! these types at the boundary; [`Settings::validate`] names the first bad field (`422`).
//! docs/alerts.md lists every rule with what `threshold`, `window_secs`, `min_requests` and
//! `warmup_windows` mean for it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// 提示 / 警告 / 严重, for messages to people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Info => "提示",
            Self::Warning => "警告",
            Self::Critical => "严重",
        }
    }
}

/// The rules, by name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    /// An app, user or client IP far above its own recent baseline (EWMA).
    TrafficJump,
    /// A service with a baseline receiving nothing for a whole window.
    TrafficStop,
    /// 401/403 bursts per client IP and per app.
    AuthFailures,
    /// One user or IP touching many distinct resource ids of one route.
    Enumeration,
    /// A service's 5xx ratio.
    ServerErrors,
    /// A service's p99 latency against its baseline.
    LatencyJump,
    /// WAF detections per client IP.
    Waf,
    /// Rate-limit denials per client IP.
    RateLimited,
    /// Response bytes to one client IP.
    LargeResponses,
    /// Admin sign-in failures (per account) and lockouts.
    AdminSignIn,
    /// Key and network-policy changes outside working hours.
    OffHoursChange,
}

impl RuleName {
    pub const ALL: [RuleName; 11] = [
        Self::TrafficJump,
        Self::TrafficStop,
        Self::AuthFailures,
        Self::Enumeration,
        Self::ServerErrors,
        Self::LatencyJump,
        Self::Waf,
        Self::RateLimited,
        Self::LargeResponses,
        Self::AdminSignIn,
        Self::OffHoursChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrafficJump => "traffic_jump",
            Self::TrafficStop => "traffic_stop",
            Self::AuthFailures => "auth_failures",
            Self::Enumeration => "enumeration",
            Self::ServerErrors => "server_errors",
            Self::LatencyJump => "latency_jump",
            Self::Waf => "waf",
            Self::RateLimited => "rate_limited",
            Self::LargeResponses => "large_responses",
            Self::AdminSignIn => "admin_sign_in",
            Self::OffHoursChange => "off_hours_change",
        }
    }

    /// What the rule is about, for people.
    pub fn title(self) -> &'static str {
        match self {
            Self::TrafficJump => "调用量突增",
            Self::TrafficStop => "服务流量归零",
            Self::AuthFailures => "认证失败激增(撞库/令牌探测)",
            Self::Enumeration => "资源遍历",
            Self::ServerErrors => "服务 5xx 比例升高",
            Self::LatencyJump => "服务 P99 时延突增",
            Self::Waf => "WAF 攻击检测",
            Self::RateLimited => "频繁触发限流",
            Self::LargeResponses => "大量数据导出",
            Self::AdminSignIn => "管理端登录失败/锁定",
            Self::OffHoursChange => "非工作时间变更密钥或策略",
        }
    }
}

/// An automatic response a rule may take when it raises an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoDeny {
    /// How long the client IP is refused by every gateway, 5 to 86400 seconds.
    pub ttl_secs: i64,
}

/// One rule's parameters. What `threshold` measures depends on the rule (docs/alerts.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub enabled: bool,
    pub severity: Severity,
    /// The counting window, 10 to 86400 seconds.
    pub window_secs: i64,
    /// Count, ratio, factor or bytes, by rule; above 0.
    pub threshold: f64,
    /// Requests a window needs before ratios, percentiles and baselines count.
    #[serde(default)]
    pub min_requests: u64,
    /// Windows a baseline is learnt over before it is compared against.
    #[serde(default)]
    pub warmup_windows: u32,
    /// Deny the client IP on every gateway for a while when this rule raises an alert.
    #[serde(default, deserialize_with = "crate::api::object")]
    pub auto_deny: Option<AutoDeny>,
}

impl Rule {
    fn new(severity: Severity, window_secs: i64, threshold: f64) -> Self {
        Self {
            enabled: true,
            severity,
            window_secs,
            threshold,
            min_requests: 0,
            warmup_windows: 0,
            auto_deny: None,
        }
    }

    fn min(mut self, n: u64) -> Self {
        self.min_requests = n;
        self
    }

    fn warmup(mut self, n: u32) -> Self {
        self.warmup_windows = n;
        self
    }
}

/// A service's changes to some rules' parameters; absent fields keep the platform's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub enabled: Option<bool>,
    pub severity: Option<Severity>,
    pub window_secs: Option<i64>,
    pub threshold: Option<f64>,
    pub min_requests: Option<u64>,
    pub warmup_windows: Option<u32>,
    pub auto_deny: Option<AutoDeny>,
}

/// Admin-side working hours, Asia/Shanghai.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlertWorkingHours)]
pub struct WorkingHours {
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive.
    pub end: String,
    /// ISO weekdays (1 = Monday … 7 = Sunday).
    pub weekdays: Vec<u8>,
}

impl Default for WorkingHours {
    fn default() -> Self {
        Self {
            start: "08:30".into(),
            end: "18:00".into(),
            weekdays: vec![1, 2, 3, 4, 5],
        }
    }
}

fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl WorkingHours {
    /// Whether unix second `t` falls within working hours in Asia/Shanghai (UTC+8, no DST).
    pub fn contains(&self, t: i64) -> bool {
        let local = t + 8 * 3600;
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        // 1970-01-01 was a Thursday (ISO 4).
        let weekday = ((local.div_euclid(86_400) + 3).rem_euclid(7) + 1) as u8;
        let (Some(start), Some(end)) = (hhmm(&self.start), hhmm(&self.end)) else {
            return true;
        };
        self.weekdays.contains(&weekday) && minute >= start && minute < end
    }
}

/// Every detector setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlertSettings)]
pub struct Settings {
    /// Signals of one rule about one subject within this many seconds of the alert's last
    /// signal are folded into that alert (one incident, one alert); 60 to 86400.
    pub aggregate_secs: i64,
    pub working_hours: WorkingHours,
    /// The platform's rules; a rule left out keeps its default.
    #[schema(value_type = Object)]
    pub rules: BTreeMap<RuleName, Rule>,
    /// Per service (by service name): rule overrides.
    #[schema(value_type = Object)]
    #[serde(default)]
    pub services: BTreeMap<String, BTreeMap<RuleName, RuleOverride>>,
}

impl Default for Settings {
    fn default() -> Self {
        use RuleName::*;
        use Severity::*;
        let rules = BTreeMap::from([
            (TrafficJump, Rule::new(Warning, 60, 5.0).min(60).warmup(5)),
            (TrafficStop, Rule::new(Critical, 60, 1.0).min(10).warmup(5)),
            (AuthFailures, Rule::new(Warning, 60, 20.0)),
            (Enumeration, Rule::new(Critical, 60, 30.0)),
            (ServerErrors, Rule::new(Critical, 60, 0.3).min(20)),
            (LatencyJump, Rule::new(Warning, 60, 3.0).min(20).warmup(5)),
            (Waf, Rule::new(Critical, 300, 5.0)),
            (RateLimited, Rule::new(Warning, 60, 50.0)),
            (
                LargeResponses,
                Rule::new(Warning, 600, 100.0 * 1024.0 * 1024.0),
            ),
            (AdminSignIn, Rule::new(Warning, 300, 5.0)),
            (OffHoursChange, Rule::new(Warning, 60, 1.0)),
        ]);
        Self {
            aggregate_secs: 3600,
            working_hours: WorkingHours::default(),
            rules,
            services: BTreeMap::new(),
        }
    }
}

fn check_rule(path: &str, r: &RuleOverride) -> ApiResult<()> {
    if let Some(w) = r.window_secs {
        if !(10..=86_400).contains(&w) {
            return Err(ApiError::invalid(
                format!("{path}.window_secs"),
                "expected 10 to 86400 seconds",
            ));
        }
    }
    if let Some(t) = r.threshold {
        if !(t.is_finite() && t > 0.0) {
            return Err(ApiError::invalid(
                format!("{path}.threshold"),
                "expected a number above 0",
            ));
        }
    }
    if let Some(w) = r.warmup_windows {
        if w > 1440 {
            return Err(ApiError::invalid(
                format!("{path}.warmup_windows"),
                "expected at most 1440",
            ));
        }
    }
    if let Some(d) = &r.auto_deny {
        if !(5..=86_400).contains(&d.ttl_secs) {
            return Err(ApiError::invalid(
                format!("{path}.auto_deny.ttl_secs"),
                "expected 5 to 86400 seconds",
            ));
        }
    }
    Ok(())
}

impl Rule {
    fn as_override(&self) -> RuleOverride {
        RuleOverride {
            enabled: Some(self.enabled),
            severity: Some(self.severity),
            window_secs: Some(self.window_secs),
            threshold: Some(self.threshold),
            min_requests: Some(self.min_requests),
            warmup_windows: Some(self.warmup_windows),
            auto_deny: self.auto_deny.clone(),
        }
    }

    fn apply(&self, o: &RuleOverride) -> Rule {
        Rule {
            enabled: o.enabled.unwrap_or(self.enabled),
            severity: o.severity.unwrap_or(self.severity),
            window_secs: o.window_secs.unwrap_or(self.window_secs),
            threshold: o.threshold.unwrap_or(self.threshold),
            min_requests: o.min_requests.unwrap_or(self.min_requests),
            warmup_windows: o.warmup_windows.unwrap_or(self.warmup_windows),
            auto_deny: o.auto_deny.clone().or_else(|| self.auto_deny.clone()),
        }
    }
}

impl Settings {
    /// Fills in rules left out with their defaults and checks every value (`422` naming it).
    pub fn validate(mut self) -> ApiResult<Self> {
        if !(60..=86_400).contains(&self.aggregate_secs) {
            return Err(ApiError::invalid(
                "aggregate_secs",
                "expected 60 to 86400 seconds",
            ));
        }
        let wh = &self.working_hours;
        for (f, v) in [("start", &wh.start), ("end", &wh.end)] {
            if hhmm(v).is_none() {
                return Err(ApiError::invalid(
                    format!("working_hours.{f}"),
                    "expected HH:MM (00:00 to 23:59)",
                ));
            }
        }
        if let Some(i) = wh.weekdays.iter().position(|d| !(1..=7).contains(d)) {
            return Err(ApiError::invalid(
                format!("working_hours.weekdays[{i}]"),
                "expected 1 (Monday) to 7 (Sunday)",
            ));
        }
        for (name, def) in Settings::default().rules {
            self.rules.entry(name).or_insert(def);
        }
        for (name, r) in &self.rules {
            check_rule(&format!("rules.{}", name.as_str()), &r.as_override())?;
        }
        if self.services.len() > 1000 {
            return Err(ApiError::invalid("services", "at most 1000 services"));
        }
        for (svc, rules) in &self.services {
            if svc.is_empty() || svc.len() > 128 || svc.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    format!("services.{svc}"),
                    "expected a service name of 1 to 128 printable characters",
                ));
            }
            for (name, o) in rules {
                check_rule(&format!("services.{svc}.{}", name.as_str()), o)?;
            }
        }
        Ok(self)
    }

    /// The platform's parameters of `rule`.
    pub fn rule(&self, rule: RuleName) -> Rule {
        self.rules
            .get(&rule)
            .cloned()
            .or_else(|| Settings::default().rules.get(&rule).cloned())
            .unwrap_or_else(|| Rule::new(Severity::Warning, 60, 1.0))
    }

    /// `rule` as it applies to `service`, and the scope counters of it are kept under: the
    /// service name when the service overrides the rule, `""` otherwise.
    pub fn rule_for(&self, rule: RuleName, service: Option<&str>) -> (String, Rule) {
        let base = self.rule(rule);
        match service.and_then(|s| self.services.get(s).map(|o| (s, o))) {
            Some((s, o)) => match o.get(&rule) {
                Some(o) => (s.to_string(), base.apply(o)),
                None => (String::new(), base),
            },
            None => (String::new(), base),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_hours_are_shanghai_time() {
        let wh = WorkingHours::default();
        // 2027-01-15 (a Friday) 02:00 UTC = 10:00 in Shanghai.
        let fri_10 = 1_800_000_000 - (1_800_000_000 % 86_400) + 2 * 3600;
        assert!(wh.contains(fri_10));
        // 14:00 UTC = 22:00 in Shanghai.
        assert!(!wh.contains(fri_10 + 12 * 3600));
        // Saturday 10:00.
        assert!(!wh.contains(fri_10 + 86_400));
    }

    #[test]
    fn overrides_apply_per_service_and_bad_values_name_the_field() {
        let mut s = Settings::default();
        s.services.insert(
            "pay".into(),
            BTreeMap::from([(
                RuleName::ServerErrors,
                RuleOverride {
                    threshold: Some(0.05),
                    ..Default::default()
                },
            )]),
        );
        let s = s.validate().unwrap();
        let (scope, r) = s.rule_for(RuleName::ServerErrors, Some("pay"));
        assert_eq!(
            (scope.as_str(), r.threshold, r.min_requests),
            ("pay", 0.05, 20)
        );
        assert_eq!(
            s.rule_for(RuleName::ServerErrors, Some("x")).1.threshold,
            0.3
        );
        let mut bad = Settings::default();
        bad.rules.get_mut(&RuleName::Waf).unwrap().window_secs = 1;
        match bad.validate() {
            Err(ApiError::Invalid(f)) => assert_eq!(f[0].path, "rules.waf.window_secs"),
            other => panic!("{other:?}"),
        }
    }
}
