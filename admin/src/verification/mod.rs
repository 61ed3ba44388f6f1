//! Go-live verification (接口核验, docs/verification.md): before a service — or a revision of a
//! published one — goes live, the control plane checks its definition against the upstream
//! targets its network policy admits, through the same probe the daily inspection uses (the
//! upstream's own TLS settings and timeouts):
//!
//! - *connectivity* — each interface's sample requests on each target: DNS, TCP, TLS (and the
//!   certificate's days left), the expected status within the timeout;
//! - *load* — a bounded step load per interface at 25 %, 50 % and 100 % of the capacity the agency
//!   declared (never above it), stopping at the first step whose error rate or p99 breaks the
//!   threshold ([`load`]);
//! - *sensitivity* — the sample answers scanned by the `response-masking` detectors in
//!   report-only mode: personal data the service's masking would not hide fails, named by JSON
//!   path and class, never by value ([`checks::sensitivity`]);
//! - *baseline* — no stack traces, SQL errors or debug pages in error answers, no version
//!   banners, and the transport the network policy admits ([`checks::baseline`]).
//!
//! A run is stored whole ([`store`]) and its verdict is kept on what it verified, with the
//! [`Definition::digest`] of the definition it saw: a service is published (a revision applied)
//! only with a passing — or overridden — verdict for its current digest. A failure sends the
//! service back to its agency (`returned`, with the reasons).
//!
//! What it may not do: send anything to a target but the declared samples, one request for a
//! path that does not exist (the baseline's error answer) and the load steps; go above the
//! declared capacity; keep the answers' bodies; run two verifications at once in one process.

pub mod api;
pub mod checks;
pub mod load;
pub mod store;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use fenfa_config::model::Upstream;

use crate::model::{Revision, Route, Service, Snapshot, DEFAULT_CAPACITY_RPS};

/// What a verification checks: a service's upstream, capacity, masking and interfaces (its own
/// or a revision's).
#[derive(Debug, Clone)]
pub struct Definition {
    pub service: Service,
    pub routes: Vec<Route>,
}

impl Definition {
    /// The service as it is.
    pub fn of_service(s: &Snapshot, svc: &Service) -> Self {
        Self {
            service: svc.clone(),
            routes: s
                .routes
                .iter()
                .filter(|r| r.service_id == svc.id)
                .cloned()
                .collect(),
        }
    }

    /// The service as the revision would make it (its routes get the revision's names as ids).
    pub fn of_revision(svc: &Service, rev: &Revision) -> Self {
        let mut service = svc.clone();
        service.upstream = rev.upstream.clone();
        service.capacity_rps = rev.capacity_rps;
        service.masking = rev.masking.clone();
        let routes = rev
            .routes
            .iter()
            .map(|r| Route {
                id: r.name.to_string(),
                service_id: svc.id.clone(),
                name: r.name.clone(),
                description: r.description.clone(),
                paths: r.paths.clone(),
                methods: r.methods.clone(),
                hosts: r.hosts.clone(),
                strip_prefix: r.strip_prefix,
                rewrite: r.rewrite.clone(),
                priority: r.priority,
                allow_overlap: None,
                samples: r.samples.clone(),
                created_at: rev.created_at,
                updated_at: rev.updated_at,
            })
            .collect();
        Self { service, routes }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.service.upstream
    }

    /// The capacity the load test goes up to.
    pub fn capacity(&self) -> u32 {
        self.service.capacity_rps.unwrap_or(DEFAULT_CAPACITY_RPS)
    }

    /// SHA-256 (hex) of what the verification depends on: the upstream, the capacity, the
    /// masking, and each interface's matching, rewriting and samples (by name; descriptions and
    /// times do not count). The same content gives the same digest as a service or a revision.
    pub fn digest(&self) -> String {
        let mut routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "paths": r.paths,
                    "methods": r.methods,
                    "hosts": r.hosts,
                    "strip_prefix": r.strip_prefix,
                    "rewrite": r.rewrite,
                    "priority": r.priority,
                    "samples": r.samples,
                })
            })
            .collect();
        routes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let doc = json!({
            "upstream": serde_json::to_value(&self.service.upstream).unwrap_or(Value::Null),
            "capacity_rps": self.service.capacity_rps,
            "masking": canonical(self.service.masking.clone().unwrap_or(Value::Null)),
            "routes": routes,
        });
        let text = canonical(doc).to_string();
        let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `v` with every object's keys in order, whatever map serde_json was built with.
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<(String, Value)> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// How one finding, one check or a whole run came out. Ordered: the worst wins.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Pass,
    Warn,
    Fail,
}

impl Grade {
    pub fn label_zh(self) -> &'static str {
        match self {
            Grade::Pass => "通过",
            Grade::Warn => "警告",
            Grade::Fail => "未通过",
        }
    }
}

/// One finding of a check, with its evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub result: Grade,
    /// The interface (route name) it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The upstream target (`host:port`) it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What was checked: `GET /pension/balance`, `transport`, `25% capacity (5 rps)`, …
    pub what: String,
    /// Why it came out so, in a sentence.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub evidence: Value,
}

/// One of the four checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// `connectivity`, `load`, `sensitivity` or `baseline`.
    pub check: String,
    pub result: Grade,
    pub items: Vec<Item>,
}

impl Check {
    pub fn new(check: &str, items: Vec<Item>) -> Self {
        Self {
            check: check.to_string(),
            result: items.iter().map(|i| i.result).max().unwrap_or(Grade::Pass),
            items,
        }
    }
}

/// The checks' overall grade: any failure fails the run; warnings pass it.
pub fn overall(checks: &[Check]) -> Grade {
    checks.iter().map(|c| c.result).max().unwrap_or(Grade::Pass)
}

/// The reasons a failed run gives the agency: its failing findings, the first few of them.
pub fn reasons(checks: &[Check]) -> String {
    let failing: Vec<String> = checks
        .iter()
        .flat_map(|c| {
            c.items
                .iter()
                .filter(|i| i.result == Grade::Fail)
                .map(move |i| {
                    let at = [i.interface.as_deref(), i.target.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" @ ");
                    if at.is_empty() {
                        format!("{}: {}: {}", c.check, i.what, i.detail)
                    } else {
                        format!("{}: {} ({at}): {}", c.check, i.what, i.detail)
                    }
                })
        })
        .collect();
    let shown = failing.len().min(5);
    let mut out = format!("verification failed: {}", failing[..shown].join("; "));
    if failing.len() > shown {
        out.push_str(&format!(" (and {} more)", failing.len() - shown));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        serde_json::from_value(json!({
            "id": "sv1", "agency_id": "ag1", "name": "pension", "title": "养老金",
            "kind": "api", "upstream": {"targets": [{"addr": "127.0.0.1:9"}]},
            "status": "submitted", "created_at": 0, "updated_at": 0,
        }))
        .unwrap()
    }

    fn route(name: &str, path: &str) -> Route {
        serde_json::from_value(json!({
            "id": format!("rt-{name}"), "service_id": "sv1", "name": name, "paths": [path],
            "created_at": 0, "updated_at": 0,
        }))
        .unwrap()
    }

    #[test]
    fn the_digest_follows_what_is_verified_and_nothing_else() {
        let base = Definition {
            service: service(),
            routes: vec![route("a", "/a"), route("b", "/b")],
        };
        let d = base.digest();
        assert_eq!(d.len(), 64);
        // Route order, ids, descriptions and times do not count.
        let mut same = base.clone();
        same.routes.reverse();
        same.routes[0].id = "other".into();
        same.routes[0].updated_at = 99;
        same.service.title = "别的标题".to_string().try_into().unwrap();
        assert_eq!(same.digest(), d);
        // The upstream, capacity, masking, a path and a sample do.
        let mut c = base.clone();
        c.service.upstream.targets[0].addr = "127.0.0.1:10".into();
        assert_ne!(c.digest(), d);
        let mut c = base.clone();
        c.service.capacity_rps = Some(50);
        assert_ne!(c.digest(), d);
        let mut c = base.clone();
        c.service.masking = Some(json!({"classes": ["mobile"]}));
        assert_ne!(c.digest(), d);
        let mut c = base.clone();
        c.routes[1].paths = vec!["/b2".into()];
        assert_ne!(c.digest(), d);
        let mut c = base.clone();
        c.routes[0].samples = vec![serde_json::from_value(json!({"path": "/a?x=1"})).unwrap()];
        assert_ne!(c.digest(), d);
    }

    #[test]
    fn the_worst_finding_decides() {
        let item = |g| Item {
            result: g,
            interface: Some("a".into()),
            target: None,
            what: "GET /a".into(),
            detail: "d".into(),
            evidence: Value::Null,
        };
        let checks = vec![
            Check::new("connectivity", vec![item(Grade::Pass), item(Grade::Warn)]),
            Check::new("load", vec![]),
        ];
        assert_eq!(checks[0].result, Grade::Warn);
        assert_eq!(checks[1].result, Grade::Pass);
        assert_eq!(overall(&checks), Grade::Warn);
        let checks = vec![Check::new("sensitivity", vec![item(Grade::Fail)])];
        assert_eq!(overall(&checks), Grade::Fail);
        assert_eq!(
            reasons(&checks),
            "verification failed: sensitivity: GET /a (a): d"
        );
    }
}
