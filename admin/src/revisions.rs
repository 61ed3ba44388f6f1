//! Revisions: how a published service changes without going offline (docs/verification.md,
//! "Revisions").
//!
//! A revision copies the live definition — upstream, capacity, masking and interfaces (routes,
//! by name) — and the agency edits the copy while the published service keeps serving. It is
//! submitted, verified like a new service (`crate::verification`) and then *applied*: one commit
//! changes the service, updates the routes of the same name, adds the new ones and removes the
//! missing ones, and marks the revision applied, so gateways move from the old definition to the
//! new one in a single config version — never through a config with the routes half changed.
//!
//! draft → submitted → applied; a failed verification returns it (`returned`) for rework; an open
//! revision may be discarded. At most one open revision per service.
//!
//! What it may not do: change a service that is not published (edit it directly), apply without
//! a passing or overridden verification of its current content, or apply over a service whose
//! definition changed since the revision was opened (its digest is checked).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::api::services::check_definition;
use crate::api::{items, Input, Params};
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::{self, commit, public_view, Actor, Touched};
use crate::crypto::new_id;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::*;
use crate::store::kind;
use crate::verification::{self, Definition};

fn view(r: &Revision) -> Value {
    public_view(serde_json::to_value(r).unwrap_or(Value::Null))
}

fn answer(c: commit::Committed) -> Json<Value> {
    Json(c.after.unwrap_or(Value::Null))
}

/// The revision `id` if `p` may see it.
fn find(p: &Principal, s: &Snapshot, id: &str) -> ApiResult<usize> {
    s.revisions
        .iter()
        .position(|r| {
            r.id == id
                && s.service(&r.service_id)
                    .is_some_and(|x| p.sees(Some(&x.agency_id)))
        })
        .ok_or_else(|| ApiError::not_found("revision"))
}

fn route_of(r: &Route) -> RevisionRoute {
    RevisionRoute {
        name: r.name.clone(),
        description: r.description.clone(),
        paths: r.paths.clone(),
        methods: r.methods.clone(),
        hosts: r.hosts.clone(),
        strip_prefix: r.strip_prefix,
        rewrite: r.rewrite.clone(),
        priority: r.priority,
        samples: r.samples.clone(),
    }
}

/// Applies `rev` to its service in `s`: the service's definition, its routes by name. Returns
/// what it touched besides the service (routes, then the revision).
pub fn apply(s: &mut Snapshot, rev: &Revision, now: i64) -> ApiResult<Vec<(&'static str, String)>> {
    let svc_id = rev.service_id.clone();
    let i = s
        .services
        .iter()
        .position(|x| x.id == svc_id)
        .ok_or_else(|| ApiError::not_found("service"))?;
    let x = &mut s.services[i];
    x.upstream = rev.upstream.clone();
    x.capacity_rps = rev.capacity_rps;
    x.masking = rev.masking.clone();
    x.verification = rev.verification.clone();
    x.updated_at = now;
    let mut touched = Vec::new();
    // Removed: live routes whose name the revision no longer has.
    let gone: Vec<String> = s
        .routes
        .iter()
        .filter(|r| r.service_id == svc_id && !rev.routes.iter().any(|n| n.name == r.name))
        .map(|r| r.id.clone())
        .collect();
    s.routes.retain(|r| !gone.contains(&r.id));
    touched.extend(gone.into_iter().map(|id| (kind::ROUTE, id)));
    for (k, nr) in rev.routes.iter().enumerate() {
        if let Some(other) = s
            .routes
            .iter()
            .find(|r| r.name == nr.name && r.service_id != svc_id)
        {
            let owner = s
                .service(&other.service_id)
                .map(|x| x.name.to_string())
                .unwrap_or_default();
            return Err(ApiError::invalid(
                format!("routes[{k}].name"),
                format!(
                    "a route named `{}` already exists (service `{owner}`)",
                    nr.name
                ),
            ));
        }
        match s
            .routes
            .iter_mut()
            .find(|r| r.name == nr.name && r.service_id == svc_id)
        {
            Some(r) => {
                let changed = route_of(r) != *nr;
                if changed {
                    r.description = nr.description.clone();
                    r.paths = nr.paths.clone();
                    r.methods = nr.methods.clone();
                    r.hosts = nr.hosts.clone();
                    r.strip_prefix = nr.strip_prefix;
                    r.rewrite = nr.rewrite.clone();
                    r.priority = nr.priority;
                    r.samples = nr.samples.clone();
                    r.updated_at = now;
                    touched.push((kind::ROUTE, r.id.clone()));
                }
            }
            None => {
                let id = new_id("rt");
                s.routes.push(Route {
                    id: id.clone(),
                    service_id: svc_id.clone(),
                    name: nr.name.clone(),
                    description: nr.description.clone(),
                    paths: nr.paths.clone(),
                    methods: nr.methods.clone(),
                    hosts: nr.hosts.clone(),
                    strip_prefix: nr.strip_prefix,
                    rewrite: nr.rewrite.clone(),
                    priority: nr.priority,
                    allow_overlap: None,
                    samples: nr.samples.clone(),
                    created_at: now,
                    updated_at: now,
                });
                touched.push((kind::ROUTE, id));
            }
        }
    }
    Ok(touched)
}

/// Checks a revision's content as the commit pipeline would check the service it makes:
/// boundary rules here, then the network policies, the URL space and the gateway compiler on
/// the snapshot with the revision applied.
async fn check_content(app: &crate::app::App, s: &Snapshot, rev: &Revision) -> ApiResult<()> {
    check_definition(rev.capacity_rps, rev.masking.as_ref())?;
    if rev.upstream.tls.ca.is_some() {
        return Err(ApiError::invalid(
            "upstream.tls.ca",
            "CA bundle files are local to a gateway node and cannot be set through the control plane",
        ));
    }
    if rev.routes.is_empty() {
        return Err(ApiError::invalid(
            "routes",
            "a service needs at least one route (interface); take it offline to withdraw it",
        ));
    }
    let agency = s
        .service(&rev.service_id)
        .and_then(|x| s.agency(&x.agency_id))
        .ok_or_else(|| ApiError::not_found("service"))?;
    for (k, r) in rev.routes.iter().enumerate() {
        if rev.routes[..k].iter().any(|o| o.name == r.name) {
            return Err(ApiError::invalid(
                format!("routes[{k}].name"),
                format!("`{}` is listed twice", r.name),
            ));
        }
        crate::inspection::sample::check(&r.samples, &format!("routes[{k}].samples"))?;
        if let Some(fe) =
            crate::route_space::outside_agency(agency, &s.agencies, &r.paths, &r.hosts)
        {
            return Err(ApiError::Invalid(vec![FieldError::new(
                format!("routes[{k}].{}", fe.path),
                fe.message,
            )]));
        }
    }
    let mut candidate = s.clone();
    apply(&mut candidate, rev, 0)?;
    commit::validate(app, &candidate, (kind::SERVICE, &rev.service_id), 0).await?;
    Ok(())
}

/// `POST /v1/services/{id}/revisions`: opens a revision of a published service, a copy of its
/// live definition.
pub async fn open(
    State(app): State<AppState>,
    p: Principal,
    Path(service_id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::ServiceWrite)?;
    let c = commit(&app, &Actor::from(&p), "revision.create", |s, now| {
        let svc = s
            .service(&service_id)
            .filter(|x| p.sees(Some(&x.agency_id)))
            .ok_or_else(|| ApiError::not_found("service"))?;
        if svc.status != Lifecycle::Published {
            return Err(ApiError::Conflict(format!(
                "the service is {}; only a published service changes through a revision (edit it directly)",
                svc.status.as_str()
            )));
        }
        if let Some(r) = s
            .revisions
            .iter()
            .find(|r| r.service_id == service_id && r.status.is_open())
        {
            return Err(ApiError::Conflict(format!(
                "revision {} of this service is still {}; finish or discard it first",
                r.id,
                r.status.as_str()
            )));
        }
        let id = new_id("rv");
        let rev = Revision {
            id: id.clone(),
            service_id: service_id.clone(),
            status: RevisionStatus::Draft,
            upstream: svc.upstream.clone(),
            capacity_rps: svc.capacity_rps,
            masking: svc.masking.clone(),
            routes: s
                .routes
                .iter()
                .filter(|r| r.service_id == service_id)
                .map(route_of)
                .collect(),
            verification: None,
            review_note: None,
            base_digest: Definition::of_service(s, svc).digest(),
            created_at: now,
            updated_at: now,
        };
        s.revisions.push(rev);
        Ok(Touched::new(kind::REVISION, id))
    })
    .await?;
    Ok((StatusCode::CREATED, answer(c)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevisionFilter {
    #[serde(default)]
    service_id: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    Params(f): Params<RevisionFilter>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(
        s.revisions
            .iter()
            .filter(|r| {
                s.service(&r.service_id)
                    .is_some_and(|x| p.sees(Some(&x.agency_id)))
            })
            .filter(|r| f.service_id.as_ref().is_none_or(|id| *id == r.service_id))
            .map(view)
            .collect(),
    ))
}

pub async fn get_one(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceRead)?;
    let s = commit::snapshot(&app).await?;
    let i = find(&p, &s, &id)?;
    Ok(Json(view(&s.revisions[i])))
}

/// `PUT /v1/revisions/{id}`: replaces the revision's content (draft or returned).
pub async fn update(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<RevisionInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceWrite)?;
    let s = commit::snapshot(&app).await?;
    let i = find(&p, &s, &id)?;
    let mut rev = s.revisions[i].clone();
    if !matches!(rev.status, RevisionStatus::Draft | RevisionStatus::Returned) {
        return Err(ApiError::Conflict(format!(
            "the revision is {}; only a draft or returned revision can be edited",
            rev.status.as_str()
        )));
    }
    rev.upstream = input.upstream;
    rev.capacity_rps = input.capacity_rps;
    rev.masking = input.masking;
    rev.routes = input.routes;
    check_content(&app, &s, &rev).await?;
    let c = commit(&app, &Actor::from(&p), "revision.update", |s, now| {
        let i = find(&p, s, &id)?;
        let x = &mut s.revisions[i];
        if !matches!(x.status, RevisionStatus::Draft | RevisionStatus::Returned) {
            return Err(ApiError::Conflict(
                "the revision changed meanwhile; read it again".into(),
            ));
        }
        x.upstream = rev.upstream;
        x.capacity_rps = rev.capacity_rps;
        x.masking = rev.masking;
        x.routes = rev.routes;
        x.status = RevisionStatus::Draft;
        x.updated_at = now;
        Ok(Touched::new(kind::REVISION, id.clone()))
    })
    .await?;
    Ok(answer(c))
}

/// Moves an open revision from one of `from` to `to`.
async fn step(
    app: &AppState,
    p: &Principal,
    id: &str,
    action: &str,
    from: &[RevisionStatus],
    to: RevisionStatus,
) -> ApiResult<Json<Value>> {
    let c = commit(app, &Actor::from(p), action, |s, now| {
        let i = find(p, s, id)?;
        let x = &mut s.revisions[i];
        if !from.contains(&x.status) {
            return Err(ApiError::Conflict(format!(
                "the revision is {}; this needs it {}",
                x.status.as_str(),
                from.iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        x.status = to;
        if to == RevisionStatus::Submitted {
            x.review_note = None;
        }
        x.updated_at = now;
        Ok(Touched::new(kind::REVISION, id.to_string()))
    })
    .await?;
    Ok(answer(c))
}

pub async fn submit(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceSubmit)?;
    step(
        &app,
        &p,
        &id,
        "revision.submit",
        &[RevisionStatus::Draft, RevisionStatus::Returned],
        RevisionStatus::Submitted,
    )
    .await
}

pub async fn discard(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceWrite)?;
    step(
        &app,
        &p,
        &id,
        "revision.discard",
        &[
            RevisionStatus::Draft,
            RevisionStatus::Submitted,
            RevisionStatus::Returned,
        ],
        RevisionStatus::Discarded,
    )
    .await
}

/// `POST /v1/revisions/{id}/verifications`: verifies a submitted revision; a failure returns it.
pub async fn verify(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<verification::api::RunInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::VerificationRun)?;
    let step = input.step()?;
    let s = commit::snapshot(&app).await?;
    let i = find(&p, &s, &id)?;
    let rev = &s.revisions[i];
    if rev.status != RevisionStatus::Submitted {
        return Err(ApiError::Conflict(format!(
            "the revision is {}; only a submitted revision is verified",
            rev.status.as_str()
        )));
    }
    let svc = s
        .service(&rev.service_id)
        .ok_or_else(|| ApiError::not_found("service"))?;
    let def = Definition::of_revision(svc, rev);
    let v = verification::api::perform(&app, &s, &def, Some(&id), &p.username, step).await?;
    let verdict = verification::api::verdict(&v);
    let note = (v.result == VerdictResult::Failed).then(|| verification::reasons(&v.checks));
    commit(&app, &Actor::from(&p), "verification.run", |s, now| {
        let i = find(&p, s, &id)?;
        let svc = s
            .service(&s.revisions[i].service_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("service"))?;
        let current = Definition::of_revision(&svc, &s.revisions[i]).digest();
        let x = &mut s.revisions[i];
        if current == verdict.digest && x.status == RevisionStatus::Submitted {
            if let Some(note) = note {
                x.status = RevisionStatus::Returned;
                x.review_note = Some(note);
            }
        }
        x.verification = Some(verdict);
        x.updated_at = now;
        Ok(Touched::new(kind::REVISION, id.clone()))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v.view(true))))
}

/// `POST /v1/revisions/{id}/apply`: replaces the live definition with the verified revision, in
/// one commit.
pub async fn apply_now(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServicePublish)?;
    let c = commit(&app, &Actor::from(&p), "revision.apply", |s, now| {
        let i = find(&p, s, &id)?;
        let rev = s.revisions[i].clone();
        if rev.status != RevisionStatus::Submitted {
            return Err(ApiError::Conflict(format!(
                "the revision is {}; only a submitted, verified revision is applied",
                rev.status.as_str()
            )));
        }
        let svc = s
            .service(&rev.service_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("service"))?;
        if svc.status != Lifecycle::Published {
            return Err(ApiError::Conflict(format!(
                "the service is {} now; a revision applies to a published service",
                svc.status.as_str()
            )));
        }
        if Definition::of_service(s, &svc).digest() != rev.base_digest {
            return Err(ApiError::Conflict(
                "the service changed after this revision was opened; discard it and open a new one"
                    .into(),
            ));
        }
        let digest = Definition::of_revision(&svc, &rev).digest();
        verification::api::check_verdict(rev.verification.as_ref(), &digest, "revision")?;
        let mut also = apply(s, &rev, now)?;
        let x = &mut s.revisions[i];
        x.status = RevisionStatus::Applied;
        x.updated_at = now;
        also.push((kind::REVISION, id.clone()));
        let mut t = Touched::new(kind::SERVICE, rev.service_id.clone());
        for (k, rid) in also {
            t = t.and(k, rid);
        }
        Ok(t)
    })
    .await?;
    Ok(answer(c))
}
