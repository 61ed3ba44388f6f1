//! Services and their lifecycle: draft → submitted → (verified) published ⇄ offline, publication
//! per channel (and optionally per app); a failed verification sends a submitted service back to
//! its agency as `returned` (`crate::verification`).
//!
//! Agency operators register and edit their own services while they are drafts, returned or
//! offline, and submit them; a submitted or published service is frozen for them (409: a
//! published one changes through a revision, `crate::revisions`). Only a system admin publishes
//! — a service not yet published only with a passing or overridden verification of its current
//! definition —, takes offline, or sends a submission back.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{items, Input, Params};
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::{self, commit, public_view, Actor, Committed, Touched};
use crate::crypto::new_id;
use crate::error::{ApiError, ApiResult};
use crate::model::*;
use crate::store::kind;

fn view(s: &Service) -> Value {
    public_view(serde_json::to_value(s).unwrap_or(Value::Null))
}

fn answer(c: Committed) -> Json<Value> {
    Json(c.after.unwrap_or(Value::Null))
}

/// 409 when an agency operator would change a service under review or in production.
pub fn check_editable(p: &Principal, svc: &Service) -> ApiResult<()> {
    if p.role == Role::AgencyOperator
        && matches!(svc.status, Lifecycle::Submitted | Lifecycle::Published)
    {
        return Err(ApiError::Conflict(format!(
            "service `{}` is {}; it can be changed again once it is offline, returned or sent back to draft (a published service changes through a revision)",
            svc.name,
            svc.status.as_str()
        )));
    }
    Ok(())
}

/// Index of a service `p` may see, or 404.
fn find(p: &Principal, s: &Snapshot, id: &str) -> ApiResult<usize> {
    s.services
        .iter()
        .position(|x| x.id == id && p.sees(Some(&x.agency_id)))
        .ok_or_else(|| ApiError::not_found("service"))
}

fn check_input(p: &Principal, s: &Snapshot, input: &ServiceInput, id: &str) -> ApiResult<String> {
    let agency = match (&input.agency_id, p.own_agency()) {
        (Some(a), Some(own)) if a != own => return Err(ApiError::not_found("agency")),
        (Some(a), _) => a.clone(),
        (None, Some(own)) => own.to_string(),
        (None, None) => return Err(ApiError::invalid("agency_id", "is required")),
    };
    if s.agency(&agency).is_none() {
        return Err(ApiError::invalid("agency_id", "no such agency"));
    }
    if input.upstream.tls.ca.is_some() {
        return Err(ApiError::invalid(
            "upstream.tls.ca",
            "CA bundle files are local to a gateway node and cannot be set through the control plane",
        ));
    }
    check_definition(input.capacity_rps, input.masking.as_ref())?;
    if s.services
        .iter()
        .any(|x| x.name == input.name && x.id != id)
    {
        return Err(ApiError::invalid(
            "name",
            format!("a service named `{}` already exists", input.name),
        ));
    }
    Ok(agency)
}

/// Checks the parts of a definition the gateway compiler does not see: the declared capacity and
/// the masking config (parsed by the `response-masking` plugin itself).
pub fn check_definition(capacity_rps: Option<u32>, masking: Option<&Value>) -> ApiResult<()> {
    if let Some(c) = capacity_rps {
        if !(1..=MAX_CAPACITY_RPS).contains(&c) {
            return Err(ApiError::invalid(
                "capacity_rps",
                format!("expected 1 to {MAX_CAPACITY_RPS} requests per second, got {c}"),
            ));
        }
    }
    if let Some(m) = masking {
        fenfa_plugins::response_masking::policy_of(m).map_err(|e| {
            let path = if e.path.is_empty() {
                "masking".to_string()
            } else {
                format!("masking.{}", e.path)
            };
            ApiError::invalid(path, e.message)
        })?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    #[serde(default)]
    agency_id: Option<String>,
    #[serde(default)]
    status: Option<Lifecycle>,
}

pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    Params(f): Params<Filter>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(
        s.services
            .iter()
            .filter(|x| p.sees(Some(&x.agency_id)))
            .filter(|x| f.agency_id.as_ref().is_none_or(|a| *a == x.agency_id))
            .filter(|x| f.status.is_none_or(|st| st == x.status))
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
    Ok(Json(view(&s.services[i])))
}

pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<ServiceInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::ServiceWrite)?;
    let c = commit(&app, &Actor::from(&p), "service.create", |s, now| {
        let agency_id = check_input(&p, s, &input, "")?;
        let id = new_id("sv");
        s.services.push(Service {
            id: id.clone(),
            agency_id,
            name: input.name,
            title: input.title,
            kind: input.kind,
            description: input.description,
            upstream: input.upstream,
            status: Lifecycle::Draft,
            channels: Vec::new(),
            apps: Vec::new(),
            review_note: None,
            capacity_rps: input.capacity_rps,
            masking: input.masking,
            verification: None,
            created_at: now,
            updated_at: now,
        });
        Ok(Touched::new(kind::SERVICE, id))
    })
    .await?;
    Ok((StatusCode::CREATED, answer(c)))
}

pub async fn update(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<ServiceInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceWrite)?;
    let c = commit(&app, &Actor::from(&p), "service.update", |s, now| {
        let i = find(&p, s, &id)?;
        check_editable(&p, &s.services[i])?;
        let input = ServiceInput {
            agency_id: input
                .agency_id
                .or_else(|| Some(s.services[i].agency_id.clone())),
            ..input
        };
        let agency_id = check_input(&p, s, &input, &id)?;
        let x = &mut s.services[i];
        x.agency_id = agency_id;
        x.name = input.name;
        x.title = input.title;
        x.kind = input.kind;
        x.description = input.description;
        x.upstream = input.upstream;
        x.capacity_rps = input.capacity_rps;
        x.masking = input.masking;
        x.updated_at = now;
        Ok(Touched::new(kind::SERVICE, id.clone()))
    })
    .await?;
    Ok(answer(c))
}

pub async fn remove(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::ServiceWrite)?;
    commit(&app, &Actor::from(&p), "service.delete", |s, _| {
        let i = find(&p, s, &id)?;
        check_editable(&p, &s.services[i])?;
        if s.services[i].status == Lifecycle::Published {
            return Err(ApiError::Conflict(
                "the service is published; take it offline first".into(),
            ));
        }
        if s.routes.iter().any(|r| r.service_id == id)
            || s.limits.iter().any(|l| l.service_id == id)
        {
            return Err(ApiError::Conflict(
                "the service still has routes or limits; delete them first".into(),
            ));
        }
        s.services.remove(i);
        Ok(Touched::new(kind::SERVICE, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn needs_routes(s: &Snapshot, id: &str) -> ApiResult<()> {
    if !s.routes.iter().any(|r| r.service_id == id) {
        return Err(ApiError::invalid(
            "routes",
            "the service has no route (interface) yet; register at least one",
        ));
    }
    Ok(())
}

pub async fn submit(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServiceSubmit)?;
    let c = commit(&app, &Actor::from(&p), "service.submit", |s, now| {
        let i = find(&p, s, &id)?;
        let x = &s.services[i];
        if !matches!(
            x.status,
            Lifecycle::Draft | Lifecycle::Offline | Lifecycle::Returned
        ) {
            return Err(ApiError::Conflict(format!(
                "a {} service cannot be submitted; only drafts, returned and offline services can",
                x.status.as_str()
            )));
        }
        needs_routes(s, &id)?;
        let x = &mut s.services[i];
        x.status = Lifecycle::Submitted;
        x.review_note = None;
        x.updated_at = now;
        Ok(Touched::new(kind::SERVICE, id.clone()))
    })
    .await?;
    Ok(answer(c))
}

pub async fn publish(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<PublishInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServicePublish)?;
    let c = commit(&app, &Actor::from(&p), "service.publish", |s, now| {
        let i = find(&p, s, &id)?;
        match s.services[i].status {
            Lifecycle::Draft => {
                return Err(ApiError::Conflict(
                    "a draft must be submitted for verification before it is published".into(),
                ))
            }
            Lifecycle::Returned => {
                return Err(ApiError::Conflict(
                    "the service was returned to its agency after a failed verification; it is fixed, submitted and verified again".into(),
                ))
            }
            Lifecycle::Published => {}
            Lifecycle::Submitted | Lifecycle::Offline => {
                let digest =
                    crate::verification::Definition::of_service(s, &s.services[i]).digest();
                crate::verification::api::check_verdict(
                    s.services[i].verification.as_ref(),
                    &digest,
                    "service",
                )?;
            }
        }
        if input.channels.is_empty() {
            return Err(ApiError::invalid("channels", "name at least one channel"));
        }
        // Publishing adds to what is published; a service not published starts afresh.
        let (mut channels, mut apps) = match &s.services[i] {
            x if x.status == Lifecycle::Published => (x.channels.clone(), x.apps.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        if s.services[i].status == Lifecycle::Published && apps.is_empty() && !input.apps.is_empty() {
            return Err(ApiError::Conflict(
                "the service is published to every app on its channels; naming apps would withdraw it from the others. Take it offline first to publish it to some apps only".into(),
            ));
        }
        channels.extend(input.channels.iter().copied());
        channels.sort();
        channels.dedup();
        for (j, a) in input.apps.iter().enumerate() {
            if !s
                .apps
                .iter()
                .any(|x| x.app_id == *a && channels.contains(&x.channel))
            {
                return Err(ApiError::invalid(
                    format!("apps[{j}]"),
                    format!(
                        "`{}` is not a registered app on the channels being published",
                        a.as_str()
                    ),
                ));
            }
            if !apps.iter().any(|x| x == a.as_str()) {
                apps.push(a.as_str().to_string());
            }
        }
        needs_routes(s, &id)?;
        let x = &mut s.services[i];
        x.status = Lifecycle::Published;
        x.channels = channels;
        x.apps = apps;
        x.review_note = None;
        x.updated_at = now;
        Ok(Touched::new(kind::SERVICE, id.clone()))
    })
    .await?;
    Ok(answer(c))
}

pub async fn offline(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<OfflineInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServicePublish)?;
    let c = commit(&app, &Actor::from(&p), "service.offline", |s, now| {
        let i = find(&p, s, &id)?;
        let x = &mut s.services[i];
        if x.status != Lifecycle::Published {
            return Err(ApiError::Conflict(format!(
                "the service is {}, not published",
                x.status.as_str()
            )));
        }
        match (&input.channels, &input.apps) {
            (None, None) => x.channels.clear(),
            (channels, apps) => {
                if let Some(list) = channels {
                    x.channels.retain(|c| !list.contains(c));
                }
                if let Some(list) = apps {
                    let had_apps = !x.apps.is_empty();
                    x.apps.retain(|a| !list.iter().any(|n| n.as_str() == a));
                    if had_apps && x.apps.is_empty() && !x.channels.is_empty() {
                        return Err(ApiError::invalid(
                            "apps",
                            "withdrawing every app would open the service to all apps on its channels; withdraw the channels instead",
                        ));
                    }
                }
            }
        }
        if x.channels.is_empty() {
            x.status = Lifecycle::Offline;
            x.apps.clear();
        }
        x.updated_at = now;
        Ok(Touched::new(kind::SERVICE, id.clone()))
    })
    .await?;
    Ok(answer(c))
}

pub async fn reject(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<RejectInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ServicePublish)?;
    let c = commit(&app, &Actor::from(&p), "service.reject", |s, now| {
        let i = find(&p, s, &id)?;
        let x = &mut s.services[i];
        if x.status != Lifecycle::Submitted {
            return Err(ApiError::Conflict(format!(
                "the service is {}, not submitted",
                x.status.as_str()
            )));
        }
        x.status = Lifecycle::Draft;
        x.review_note = input.reason.map(String::from);
        x.updated_at = now;
        Ok(Touched::new(kind::SERVICE, id.clone()))
    })
    .await?;
    Ok(answer(c))
}
