//! The inspection endpoints: run now, list and read inspections, fault records (list, read,
//! close with a note), settings. The system admin runs and handles; the security and audit
//! admins read (`inspection-read`, `inspection-write` in `crate::authz`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::faults::{self, CLOSED, OPEN};
use super::settings::{self, Settings};
use crate::api::{items, Input, Params};
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::{Actor, AuditTarget};
use crate::error::{ApiError, ApiResult};
use crate::store::Bind;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

fn limit(l: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    match l {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!("limit must be 1 to {max}"))),
    }
}

/// `POST /v1/inspections`: inspects every published service now; answers with the results.
pub async fn run_now(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::InspectionWrite)?;
    let run = super::run(&app, "manual", &p.username).await?;
    let w = crate::commit::begin_write(&app).await?;
    w.finish(
        &Actor::from(&p),
        "inspection.run",
        AuditTarget {
            kind: "inspection".into(),
            id: run.id.clone(),
            after: Some(run.summary.clone()),
            ..Default::default()
        },
    )
    .await?;
    let services = serde_json::to_value(&run.services).map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(super::view(
            &run.id,
            &run.trigger,
            &run.requested_by,
            run.started_at,
            run.finished_at,
            run.summary,
            Some(services),
        )),
    ))
}

pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::InspectionRead)?;
    let n = limit(q.limit, 20, 100)?;
    let rows = sqlx::query(&format!(
        "SELECT id, trigger_kind, requested_by, started_at, finished_at, summary FROM inspections ORDER BY started_at DESC, id LIMIT {n}"
    ))
    .fetch_all(&app.store.pool)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let summary: String = r.try_get("summary")?;
        out.push(super::view(
            &r.try_get::<String, _>("id")?,
            &r.try_get::<String, _>("trigger_kind")?,
            &r.try_get::<String, _>("requested_by")?,
            r.try_get("started_at")?,
            r.try_get("finished_at")?,
            serde_json::from_str(&summary).unwrap_or(Value::Null),
            None,
        ));
    }
    Ok(items(out))
}

pub async fn get_one(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::InspectionRead)?;
    let r = sqlx::query(
        "SELECT id, trigger_kind, requested_by, started_at, finished_at, summary, results FROM inspections WHERE id = $1",
    )
    .bind(&id)
    .fetch_optional(&app.store.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("inspection"))?;
    let summary: String = r.try_get("summary")?;
    let results: String = r.try_get("results")?;
    Ok(Json(super::view(
        &r.try_get::<String, _>("id")?,
        &r.try_get::<String, _>("trigger_kind")?,
        &r.try_get::<String, _>("requested_by")?,
        r.try_get("started_at")?,
        r.try_get("finished_at")?,
        serde_json::from_str(&summary).unwrap_or(Value::Null),
        Some(serde_json::from_str(&results).unwrap_or(Value::Null)),
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FaultQuery {
    /// `open` or `closed`.
    #[param(pattern = "^(open|closed)$")]
    state: Option<String>,
    service_id: Option<String>,
    /// A cause (`refused`, `timeout`, …).
    #[param(
        pattern = "^(dns|refused|timeout|tls|protocol|5xx|unexpected_status|slow|certificate_expiring|availability)$"
    )]
    cause: Option<String>,
    /// 1 to 500; default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

pub async fn list_faults(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<FaultQuery>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::InspectionRead)?;
    let n = limit(q.limit, 100, 500)?;
    let mut conds = Vec::new();
    if let Some(s) = q.state {
        if s != OPEN && s != CLOSED {
            return Err(ApiError::BadRequest(
                "state must be `open` or `closed`".into(),
            ));
        }
        conds.push(("state = ?", Bind::Text(s)));
    }
    if let Some(s) = q.service_id {
        conds.push(("service_id = ?", Bind::Text(s)));
    }
    if let Some(c) = q.cause {
        if super::probe::Cause::parse(&c).is_none() {
            return Err(ApiError::BadRequest(
                "cause must be one of dns, refused, timeout, tls, protocol, 5xx, unexpected_status, slow, certificate_expiring, availability".into(),
            ));
        }
        conds.push(("cause = ?", Bind::Text(c)));
    }
    let rows = faults::list(&app.store.pool, &conds, n).await?;
    Ok(items(rows.iter().map(faults::FaultRow::view).collect()))
}

pub async fn get_fault(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::InspectionRead)?;
    let f = faults::get(&app.store.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("fault"))?;
    Ok(Json(f.view()))
}

/// An operator's note on closing a fault record.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseInput {
    /// What was done or found, 1 to 2000 characters.
    pub note: String,
}

pub async fn close_fault(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(c): Input<CloseInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::InspectionWrite)?;
    let note = c.note.trim();
    if note.is_empty() || note.chars().count() > 2000 {
        return Err(ApiError::invalid("note", "expected 1 to 2000 characters"));
    }
    let before = faults::get(&app.store.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("fault"))?;
    if before.state != OPEN {
        return Err(ApiError::Conflict(format!(
            "fault {id} is already closed (by {})",
            before.closed_by.as_deref().unwrap_or("?")
        )));
    }
    let mut w = crate::commit::begin_write(&app).await?;
    faults::close(&mut w.tx, &id, w.now, &p.username, note).await?;
    w.finish(
        &Actor::from(&p),
        "fault.close",
        AuditTarget {
            kind: "fault".into(),
            id: id.clone(),
            before: Some(json!({"state": OPEN, "cause": before.cause, "service": before.service})),
            after: Some(json!({"state": CLOSED, "note": note})),
            ..Default::default()
        },
    )
    .await?;
    let f = faults::get(&app.store.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("fault"))?;
    Ok(Json(f.view()))
}

pub async fn get_settings(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::InspectionRead)?;
    let s = settings::load(&app.store.pool).await?;
    Ok(Json(serde_json::to_value(s).map_err(ApiError::internal)?))
}

pub async fn put_settings(
    State(app): State<AppState>,
    p: Principal,
    Input(s): Input<Settings>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::InspectionWrite)?;
    s.validate()?;
    let before = settings::load(&app.store.pool).await?;
    let mut w = crate::commit::begin_write(&app).await?;
    settings::save(&mut w.tx, &s, w.now).await?;
    let after = serde_json::to_value(&s).map_err(ApiError::internal)?;
    w.finish(
        &Actor::from(&p),
        "inspection-settings.update",
        AuditTarget {
            kind: "inspection-settings".into(),
            id: "global".into(),
            before: serde_json::to_value(before).ok(),
            after: Some(after.clone()),
            ..Default::default()
        },
    )
    .await?;
    Ok(Json(after))
}
