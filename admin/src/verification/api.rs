//! The verification endpoints: run one on a submitted service, read the stored runs, and let a
//! security admin override a failure with a written reason (`verification-run`,
//! `verification-read`, `verification-override` in `crate::authz`). Revisions are verified
//! through `crate::revisions`, with [`perform`].

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::store::{self, Stored};
use super::{checks, load, Definition};
use crate::api::{items, Input, Params};
use crate::app::{App, AppState};
use crate::authz::{Action, Principal};
use crate::commit::{self, commit, Actor, Touched};
use crate::error::{ApiError, ApiResult};
use crate::model::{Lifecycle, Role, Snapshot, Verdict, VerdictResult};
use crate::store::kind;

/// `POST …/verifications`: how long each load step lasts.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInput {
    #[serde(default, deserialize_with = "crate::api::object")]
    pub load: Option<LoadInput>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadInput {
    /// Length of each load step, milliseconds: 200 to 60000, default 2000.
    #[serde(default)]
    #[schema(minimum = 200, maximum = 60000)]
    pub step_ms: Option<u64>,
}

impl RunInput {
    pub fn step(&self) -> ApiResult<Duration> {
        match self.load.as_ref().and_then(|l| l.step_ms) {
            None => Ok(load::DEFAULT_STEP),
            Some(ms) if (200..=60_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(ms) => Err(ApiError::invalid(
                "load.step_ms",
                format!("expected 200 to 60000 milliseconds, got {ms}"),
            )),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideInput {
    /// Why the service may go live despite the failure (kept in the admin audit), 10 to 2000
    /// characters.
    pub reason: String,
}

/// Runs every check on `def` and stores the run (not yet its verdict on the service).
pub async fn perform(
    app: &App,
    snapshot: &Snapshot,
    def: &Definition,
    revision_id: Option<&str>,
    requested_by: &str,
    step: Duration,
) -> ApiResult<Stored> {
    let _one = app.verifying.lock().await;
    let started = app.now();
    let settings = crate::inspection::settings::load(&app.store.pool).await?;
    let limits = checks::limits(&settings);
    let probes = checks::probe_samples(def, limits, started).await;
    let missing = checks::probe_missing(def, limits, started).await;
    let masking = def
        .service
        .masking
        .as_ref()
        .map(fenfa_plugins::response_masking::policy_of)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("masking.{}", e.path), e.message))?;
    let connectivity = checks::connectivity(&probes);
    let load = load::check(def, &probes, limits, step, started).await;
    let sensitivity = checks::sensitivity(&probes, masking.as_ref());
    let baseline = checks::baseline(def, snapshot, &probes, &missing);
    let checks = vec![connectivity, load, sensitivity, baseline];
    let v = Stored {
        id: crate::crypto::new_id("vf"),
        service_id: def.service.id.clone(),
        revision_id: revision_id.map(str::to_string),
        digest: def.digest(),
        result: Stored::result_of(&checks),
        requested_by: requested_by.to_string(),
        started_at: started,
        finished_at: app.now(),
        checks,
        override_reason: None,
        override_by: None,
        override_at: None,
    };
    store::insert(&app.store.pool, &v).await?;
    tracing::info!(verification = %v.id, service = %v.service_id, result = v.result.as_str(), "verification finished");
    Ok(v)
}

/// The verdict a stored run gives.
pub fn verdict(v: &Stored) -> Verdict {
    Verdict {
        id: v.id.clone(),
        digest: v.digest.clone(),
        result: v.result,
        at: v.finished_at,
        override_reason: v.override_reason.clone(),
        override_by: v.override_by.clone(),
    }
}

/// Whether `verdict` lets the definition with `digest` go live; the refusal says why.
pub fn check_verdict(verdict: Option<&Verdict>, digest: &str, what: &str) -> ApiResult<()> {
    match verdict {
        None => Err(ApiError::Conflict(format!(
            "the {what} has not been verified; run a verification (POST …/verifications) first"
        ))),
        Some(v) if v.digest != digest => Err(ApiError::Conflict(format!(
            "the {what} changed after verification {}; verify it again",
            v.id
        ))),
        Some(v) if v.result == VerdictResult::Failed => Err(ApiError::Conflict(format!(
            "verification {} failed; the agency fixes the {what} and it is verified again, or a security admin overrides the failure",
            v.id
        ))),
        Some(_) => Ok(()),
    }
}

/// `POST /v1/services/{id}/verifications`.
pub async fn run_for_service(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<RunInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::VerificationRun)?;
    let step = input.step()?;
    let snap = commit::snapshot(&app).await?;
    let svc = snap
        .service(&id)
        .filter(|s| p.sees(Some(&s.agency_id)))
        .ok_or_else(|| ApiError::not_found("service"))?;
    match svc.status {
        Lifecycle::Submitted => {}
        Lifecycle::Published => {
            return Err(ApiError::Conflict(
                "a published service is changed and verified through a revision (POST /v1/services/{id}/revisions)".into(),
            ))
        }
        other => {
            return Err(ApiError::Conflict(format!(
                "the service is {}; only a submitted service is verified",
                other.as_str()
            )))
        }
    }
    let def = Definition::of_service(&snap, svc);
    let v = perform(&app, &snap, &def, None, &p.username, step).await?;
    let verdict = verdict(&v);
    let failed = v.result == VerdictResult::Failed;
    let note = failed.then(|| super::reasons(&v.checks));
    commit(&app, &Actor::from(&p), "verification.run", |s, now| {
        let i = s
            .services
            .iter()
            .position(|x| x.id == id)
            .ok_or_else(|| ApiError::not_found("service"))?;
        let current = Definition::of_service(s, &s.services[i]).digest();
        let x = &mut s.services[i];
        // A change made while it ran leaves the service as it is: the verdict is then stale.
        if current == verdict.digest && x.status == Lifecycle::Submitted {
            if let Some(note) = note {
                x.status = Lifecycle::Returned;
                x.review_note = Some(note);
            }
        }
        x.verification = Some(verdict);
        x.updated_at = now;
        Ok(Touched::new(kind::SERVICE, id.clone()))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v.view(true))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    service_id: Option<String>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    #[serde(default)]
    limit: Option<i64>,
}

/// 404 for an agency operator reaching for another agency's run.
fn scoped(p: &Principal, snap: &Snapshot, v: &Stored) -> ApiResult<()> {
    if p.role == Role::AgencyOperator {
        p.scope(
            snap.agency_of(kind::SERVICE, &v.service_id)
                .as_deref()
                .or(Some("")),
            "verification",
        )?;
    }
    Ok(())
}

pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::VerificationRead)?;
    let limit = match q.limit {
        None => 20,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid("limit", "expected 1 to 100")),
    };
    let snap = commit::snapshot(&app).await?;
    let rows = store::list(&app.store.pool, q.service_id.as_deref(), limit).await?;
    Ok(items(
        rows.iter()
            .filter(|v| scoped(&p, &snap, v).is_ok())
            .map(|v| v.view(false))
            .collect(),
    ))
}

pub async fn get_one(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::VerificationRead)?;
    let v = store::get(&app.store.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("verification"))?;
    let snap = commit::snapshot(&app).await?;
    scoped(&p, &snap, &v)?;
    Ok(Json(v.view(true)))
}

/// `POST /v1/verifications/{id}/override`: a security admin lets a failed verification's
/// definition go live; the service goes back to `submitted` (a revision stays `submitted`), and
/// the admin audit keeps who, when and why.
pub async fn override_failure(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<OverrideInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::VerificationOverride)?;
    let reason = input.reason.trim().to_string();
    let n = reason.chars().count();
    if !(10..=2000).contains(&n) {
        return Err(ApiError::invalid(
            "reason",
            format!("expected 10 to 2000 characters explaining why, got {n}"),
        ));
    }
    let v = store::get(&app.store.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("verification"))?;
    if v.result != VerdictResult::Failed {
        return Err(ApiError::Conflict(format!(
            "verification {id} {}; only a failure can be overridden",
            if v.result == VerdictResult::Passed {
                "passed"
            } else {
                "is already overridden"
            }
        )));
    }
    let who = p.username.clone();
    let at = app.now();
    let stale = || {
        ApiError::Conflict(format!(
            "verification {id} is not the latest verification of what it verified, or that changed since; verify again"
        ))
    };
    let mk = |mut verdict: Verdict| {
        verdict.result = VerdictResult::Overridden;
        verdict.override_reason = Some(reason.clone());
        verdict.override_by = Some(who.clone());
        verdict
    };
    match v.revision_id.clone() {
        None => {
            commit(&app, &Actor::from(&p), "verification.override", |s, now| {
                let i = s
                    .services
                    .iter()
                    .position(|x| x.id == v.service_id)
                    .ok_or_else(|| ApiError::not_found("service"))?;
                let current = Definition::of_service(s, &s.services[i]).digest();
                let x = &mut s.services[i];
                let latest = x.verification.clone().filter(|d| d.id == id);
                let Some(verdict) = latest.filter(|_| current == v.digest) else {
                    return Err(stale());
                };
                x.verification = Some(mk(verdict));
                if x.status == Lifecycle::Returned {
                    x.status = Lifecycle::Submitted;
                    x.review_note = None;
                }
                x.updated_at = now;
                Ok(Touched::new(kind::SERVICE, v.service_id.clone()))
            })
            .await?;
        }
        Some(rid) => {
            commit(&app, &Actor::from(&p), "verification.override", |s, now| {
                let svc = s
                    .service(&v.service_id)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found("service"))?;
                let r = s
                    .revisions
                    .iter()
                    .position(|x| x.id == rid)
                    .ok_or_else(|| ApiError::not_found("revision"))?;
                let current = Definition::of_revision(&svc, &s.revisions[r]).digest();
                let x = &mut s.revisions[r];
                let latest = x.verification.clone().filter(|d| d.id == id);
                let Some(verdict) = latest.filter(|_| current == v.digest && x.status.is_open())
                else {
                    return Err(stale());
                };
                x.verification = Some(mk(verdict));
                if x.status == crate::model::RevisionStatus::Returned {
                    x.status = crate::model::RevisionStatus::Submitted;
                    x.review_note = None;
                }
                x.updated_at = now;
                Ok(Touched::new(kind::REVISION, rid.clone()))
            })
            .await?;
        }
    }
    store::set_override(&app.store.pool, &id, &reason, &who, at).await?;
    let v = store::get(&app.store.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("verification"))?;
    Ok(Json(v.view(true)))
}
