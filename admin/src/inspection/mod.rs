//! Daily inspection (巡检, docs/inspection.md): every published service is checked — each
//! interface's sample request against each upstream target (connectivity, latency, status), the
//! certificate of TLS upstreams, and the service's last 24 hours in the request audit (volume,
//! error rate, p99, availability). Problems become fault records ([`faults`]) with a classified
//! cause ([`probe::Cause`]), opened and closed automatically.
//!
//! When: once a day at the configured local time ([`settings::Settings::daily_at`],
//! Asia/Shanghai), and on demand (`POST /v1/inspections`). [`tick`] decides from the app clock
//! (injectable: tests move it), and claims the day in the database so that only one process of
//! a cluster runs it; a loop calls it every [`TICK`] unless [`crate::app::Options::schedule`] is
//! off. After the daily inspection, the scheduled reports are generated (`crate::reports`).
//!
//! What it may not do: probe anything but the targets of published services, change a service,
//! or run two inspections at once in one process.

pub mod api;
pub mod faults;
pub mod probe;
pub mod sample;
pub mod settings;

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::model::Lifecycle;
use probe::{Cause, Limits, Outcome};

/// How often the schedule looks at the clock.
pub const TICK: Duration = Duration::from_secs(1);
/// The job name of the daily inspection in `schedule_runs`.
pub const DAILY_JOB: &str = "daily-inspection";
/// Probes run at the same time.
const PARALLEL: usize = 16;

/// Starts the schedule loop (unless the options turn it off); it ends with the app.
pub fn start(app: &Arc<App>) {
    if let Some(every) = app.opts.schedule {
        tokio::spawn(schedule_loop(Arc::downgrade(app), every));
    }
}

async fn schedule_loop(app: Weak<App>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(app) = app.upgrade() else {
            return;
        };
        if let Err(e) = tick(&app).await {
            tracing::warn!(error = %e, "the inspection schedule failed; it tries again");
        }
    }
}

/// Runs what the schedule says is due at the app clock's now: the daily inspection once the
/// local time has passed `daily_at` on a day it has not run yet, then the scheduled reports.
/// Returns the id of the inspection it ran, if any.
pub async fn tick(app: &Arc<App>) -> ApiResult<Option<String>> {
    let now = app.now();
    let s = settings::load(&app.store.pool).await?;
    let Some(at) = s.daily_minute() else {
        return Ok(None);
    };
    if crate::local_time::minute_of_day(now) < at {
        return Ok(None);
    }
    let today = crate::local_time::day(now);
    if !claim(&app.store.pool, DAILY_JOB, &today, now).await? {
        return Ok(None);
    }
    let run = run(app, "schedule", "system").await?;
    if let Err(e) = crate::reports::scheduled(app, now).await {
        tracing::warn!(error = %e, "cannot generate the scheduled reports");
    }
    Ok(Some(run.id))
}

/// Marks `job` as run for local day `day`; false when it already ran for it (here or in
/// another process).
pub async fn claim(pool: &sqlx::AnyPool, job: &str, day: &str, now: i64) -> ApiResult<bool> {
    sqlx::query(
        "INSERT INTO schedule_runs (job, last_day, updated_at) VALUES ($1, '', 0) ON CONFLICT (job) DO NOTHING",
    )
    .bind(job)
    .execute(pool)
    .await?;
    let r = sqlx::query(
        "UPDATE schedule_runs SET last_day = $1, updated_at = $2 WHERE job = $3 AND last_day < $1",
    )
    .bind(day)
    .bind(now)
    .bind(job)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// One interface's probes.
#[derive(Debug, Serialize)]
pub struct InterfaceResult {
    pub route_id: String,
    pub route: String,
    pub probes: Vec<Outcome>,
}

/// One service's results.
#[derive(Debug, Serialize)]
pub struct ServiceResult {
    pub service_id: String,
    pub service: String,
    pub title: String,
    pub agency: String,
    pub healthy: bool,
    pub interfaces: Vec<InterfaceResult>,
    /// The last 24 hours from the request audit.
    pub traffic: crate::traffic::Summary,
    pub findings: Vec<faults::Finding>,
}

/// A finished inspection.
#[derive(Debug, Serialize)]
pub struct Run {
    pub id: String,
    pub trigger: String,
    pub requested_by: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub summary: Value,
    pub services: Vec<ServiceResult>,
}

/// Inspects every published service now. `trigger`: `schedule` or `manual`.
pub async fn run(app: &Arc<App>, trigger: &str, requested_by: &str) -> ApiResult<Run> {
    let _one = app.inspecting.lock().await;
    let started = app.now();
    let s = settings::load(&app.store.pool).await?;
    let limits = Limits {
        timeout: Duration::from_millis(s.timeout_ms),
        slow: Duration::from_millis(s.slow_ms),
        cert_warn_days: s.cert_warn_days,
    };
    let snap = crate::commit::snapshot(app).await?;
    let mut traffic = std::collections::BTreeMap::new();
    crate::traffic::scan(&app.store.pool, started - 86_400, started + 1, |r| {
        crate::traffic::add_to(&mut traffic, r.service.clone(), r)
    })
    .await?;
    let mut services = Vec::new();
    for svc in snap
        .services
        .iter()
        .filter(|x| x.status == Lifecycle::Published)
    {
        let mut jobs = Vec::new();
        for route in snap.routes.iter().filter(|r| r.service_id == svc.id) {
            for sample in sample::samples(&snap, route) {
                for t in &svc.upstream.targets {
                    jobs.push((route, sample.clone(), t.addr.clone()));
                }
            }
        }
        let mut interfaces: Vec<InterfaceResult> = Vec::new();
        for chunk in jobs.chunks(PARALLEL) {
            let mut set = tokio::task::JoinSet::new();
            for (i, (route, sample, target)) in chunk.iter().enumerate() {
                let upstream = svc.upstream.clone();
                let sample = sample.clone();
                let target = target.clone();
                let host = route.hosts.first().cloned();
                set.spawn(async move {
                    let o = probe::probe(
                        &upstream,
                        &target,
                        host.as_deref(),
                        &sample,
                        limits,
                        started,
                    )
                    .await;
                    (i, o)
                });
            }
            let mut outs: Vec<(usize, Outcome)> = Vec::new();
            while let Some(r) = set.join_next().await {
                if let Ok(x) = r {
                    outs.push(x);
                }
            }
            outs.sort_by_key(|(i, _)| *i);
            for (i, o) in outs {
                let route = chunk[i].0;
                match interfaces.iter_mut().find(|x| x.route_id == route.id) {
                    Some(x) => x.probes.push(o),
                    None => interfaces.push(InterfaceResult {
                        route_id: route.id.clone(),
                        route: route.name.to_string(),
                        probes: vec![o],
                    }),
                }
            }
        }
        let agg = traffic.get(svc.name.as_str()).cloned().unwrap_or_default();
        let mut findings = Vec::new();
        for iface in &interfaces {
            for o in &iface.probes {
                for c in &o.causes {
                    // A certificate is the target's, not the interface's: one record per target.
                    let route = (*c != Cause::CertificateExpiring).then(|| iface.route.clone());
                    findings.push(faults::Finding {
                        service_id: svc.id.clone(),
                        service: svc.name.to_string(),
                        route,
                        target: Some(o.target.clone()),
                        cause: c.as_str(),
                        detail: o.detail.clone(),
                    });
                }
            }
        }
        if agg.total >= s.min_requests && agg.availability() < s.availability_target {
            findings.push(faults::Finding {
                service_id: svc.id.clone(),
                service: svc.name.to_string(),
                route: None,
                target: None,
                cause: Cause::Availability.as_str(),
                detail: format!(
                    "availability {:.2}% over the last 24 hours ({} of {} requests answered 5xx), target {}%",
                    agg.availability(),
                    agg.errors,
                    agg.total,
                    s.availability_target
                ),
            });
        }
        let agency = snap
            .agency(&svc.agency_id)
            .map(|a| a.title.as_str().to_string())
            .unwrap_or_default();
        services.push(ServiceResult {
            service_id: svc.id.clone(),
            service: svc.name.to_string(),
            title: svc.title.as_str().to_string(),
            agency,
            healthy: findings.is_empty(),
            interfaces,
            traffic: agg.summary(),
            findings,
        });
    }
    let id = crate::crypto::new_id("insp");
    let finished = app.now();
    let inspected: BTreeSet<String> = services.iter().map(|s| s.service_id.clone()).collect();
    let all: Vec<faults::Finding> = services
        .iter()
        .flat_map(|s| s.findings.iter().cloned())
        .collect();
    let guard = app.write.lock().await;
    let mut tx = app.store.begin_write().await?;
    let changes = faults::reconcile(&mut tx, &id, finished, &inspected, &all).await?;
    let probes: usize = services
        .iter()
        .flat_map(|s| &s.interfaces)
        .map(|i| i.probes.len())
        .sum();
    let summary = json!({
        "services": services.len(),
        "healthy_services": services.iter().filter(|s| s.healthy).count(),
        "interfaces": services.iter().map(|s| s.interfaces.len()).sum::<usize>(),
        "probes": probes,
        "findings": all.len(),
        "faults_opened": changes.opened,
        "faults_closed": changes.closed,
        "faults_still_open": changes.still_open,
    });
    let results = serde_json::to_string(&services).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO inspections (id, trigger_kind, requested_by, started_at, finished_at, summary, results) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(trigger)
    .bind(requested_by)
    .bind(started)
    .bind(finished)
    .bind(summary.to_string())
    .bind(results)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    drop(guard);
    tracing::info!(
        inspection = %id,
        services = services.len(),
        opened = changes.opened.len(),
        closed = changes.closed.len(),
        "inspection finished"
    );
    Ok(Run {
        id,
        trigger: trigger.to_string(),
        requested_by: requested_by.to_string(),
        started_at: started,
        finished_at: finished,
        summary,
        services,
    })
}

/// A stored inspection, as the API shows it.
pub fn view(
    id: &str,
    trigger: &str,
    requested_by: &str,
    started: i64,
    finished: i64,
    summary: Value,
    services: Option<Value>,
) -> Value {
    let mut v = json!({
        "id": id,
        "trigger": trigger,
        "requested_by": requested_by,
        "started_at": crate::clock::rfc3339(started),
        "finished_at": crate::clock::rfc3339(finished),
        "summary": summary,
    });
    if let Some(s) = services {
        v["services"] = s;
    }
    v
}

/// Stored inspections that started in `[from, to)`, oldest first, with their results.
pub async fn stored(pool: &sqlx::AnyPool, from: i64, to: i64, limit: i64) -> ApiResult<Vec<Value>> {
    let rows = sqlx::query(&format!(
        "SELECT id, trigger_kind, requested_by, started_at, finished_at, summary, results FROM inspections \
         WHERE started_at >= $1 AND started_at < $2 ORDER BY started_at DESC, id LIMIT {limit}"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows.iter().rev() {
        let summary: String = r.try_get("summary")?;
        let results: String = r.try_get("results")?;
        out.push(view(
            &r.try_get::<String, _>("id")?,
            &r.try_get::<String, _>("trigger_kind")?,
            &r.try_get::<String, _>("requested_by")?,
            r.try_get("started_at")?,
            r.try_get("finished_at")?,
            serde_json::from_str(&summary).unwrap_or(Value::Null),
            Some(serde_json::from_str(&results).unwrap_or(Value::Null)),
        ));
    }
    Ok(out)
}
