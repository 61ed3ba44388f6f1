//! Admin-side detectors, over the admin audit trail (so they see every control-plane process on
//! one database): sign-in failures per typed account name and lockouts (`admin_sign_in`), and
//! changes to keys and network policies outside working hours, Asia/Shanghai
//! (`off_hours_change`).

use std::collections::{HashMap, VecDeque};

use serde_json::json;

use super::detect::Signal;
use super::rules::{RuleName, Settings};
use crate::store::AuditRow;

/// Actions `off_hours_change` watches (by prefix).
const SENSITIVE: [&str; 4] = ["token-key.", "signing-key.", "network-policy.", "settings."];

#[derive(Default)]
pub struct AdminDetector {
    failures: HashMap<String, (VecDeque<i64>, Option<i64>)>,
}

impl AdminDetector {
    pub fn observe(&mut self, s: &Settings, row: &AuditRow) -> Vec<Signal> {
        let mut out = Vec::new();
        let r = s.rule(RuleName::AdminSignIn);
        if r.enabled {
            match row.action.as_str() {
                "auth.lockout" | "auth.login_locked" => out.push(Signal {
                    rule: RuleName::AdminSignIn,
                    severity: super::rules::Severity::Critical.max(r.severity),
                    subject_kind: "account",
                    subject: row.actor.clone(),
                    service: None,
                    at: row.at,
                    summary: "账户因连续登录失败被锁定,或在锁定期内继续尝试登录".into(),
                    evidence: json!({"action": row.action, "audit_seq": row.seq}),
                    auto_deny: None,
                }),
                "auth.login_failed" => {
                    if self.failures.len() > 10_000 {
                        let horizon = row.at - r.window_secs;
                        self.failures
                            .retain(|_, (v, _)| v.back().is_some_and(|t| *t > horizon));
                    }
                    let (times, fired) = self.failures.entry(row.actor.clone()).or_default();
                    times.push_back(row.at);
                    while times
                        .front()
                        .is_some_and(|t| *t <= row.at - r.window_secs || times.len() > 1000)
                    {
                        times.pop_front();
                    }
                    let n = times.len();
                    if n as f64 >= r.threshold && !fired.is_some_and(|f| row.at < f + r.window_secs)
                    {
                        *fired = Some(row.at);
                        out.push(Signal {
                            rule: RuleName::AdminSignIn,
                            severity: r.severity,
                            subject_kind: "account",
                            subject: row.actor.clone(),
                            service: None,
                            at: row.at,
                            summary: format!(
                                "{} 秒内登录失败 {n} 次(阈值 {})",
                                r.window_secs, r.threshold
                            ),
                            evidence: json!({"count": n, "window_secs": r.window_secs,
                                             "threshold": r.threshold, "last_audit_seq": row.seq}),
                            auto_deny: None,
                        });
                    }
                }
                _ => {}
            }
        }
        let r = s.rule(RuleName::OffHoursChange);
        if r.enabled
            && SENSITIVE.iter().any(|p| row.action.starts_with(p))
            && !s.working_hours.contains(row.at)
        {
            out.push(Signal {
                rule: RuleName::OffHoursChange,
                severity: r.severity,
                subject_kind: "account",
                subject: row.actor.clone(),
                service: None,
                at: row.at,
                summary: format!(
                    "{} 在非工作时间({})执行了 {}",
                    row.actor,
                    super::store::shanghai(row.at),
                    row.action
                ),
                evidence: json!({"action": row.action, "resource_kind": row.resource_kind,
                                 "resource_id": row.resource_id, "audit_seq": row.seq}),
                auto_deny: None,
            });
        }
        out
    }
}
