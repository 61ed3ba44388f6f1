//! Reading the audit trails (audit admin only): admin actions and ingested request records,
//! newest first, with filters and a `before` cursor. There is nothing here that writes.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Params;
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::error::{ApiError, ApiResult};
use crate::store::{self, Bind};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

fn limit(l: Option<i64>) -> ApiResult<i64> {
    match l {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        ))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminFilter {
    actor: Option<String>,
    role: Option<String>,
    action: Option<String>,
    resource_kind: Option<String>,
    resource_id: Option<String>,
    agency_id: Option<String>,
    source_ip: Option<String>,
    /// Unix seconds, inclusive.
    from: Option<i64>,
    /// Unix seconds, exclusive.
    to: Option<i64>,
    /// Only records with `seq` below this (the `next_before` of the previous page).
    before: Option<i64>,
    /// 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

pub async fn admin_list(
    State(app): State<AppState>,
    p: Principal,
    Params(f): Params<AdminFilter>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AuditRead)?;
    let limit = limit(f.limit)?;
    let mut conds: Vec<(&str, Bind)> = Vec::new();
    let text = |c: &mut Vec<(&str, Bind)>, sql, v: Option<String>| {
        if let Some(v) = v {
            c.push((sql, Bind::Text(v)));
        }
    };
    text(&mut conds, "actor = ?", f.actor);
    text(&mut conds, "role = ?", f.role);
    text(&mut conds, "action = ?", f.action);
    text(&mut conds, "resource_kind = ?", f.resource_kind);
    text(&mut conds, "resource_id = ?", f.resource_id);
    text(&mut conds, "agency_id = ?", f.agency_id);
    text(&mut conds, "source_ip = ?", f.source_ip);
    if let Some(v) = f.from {
        conds.push(("at >= ?", Bind::Int(v)));
    }
    if let Some(v) = f.to {
        conds.push(("at < ?", Bind::Int(v)));
    }
    if let Some(v) = f.before {
        conds.push(("seq < ?", Bind::Int(v)));
    }
    let rows = store::audit_query(&app.store.pool, &conds, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(json!({
        "items": rows.iter().map(crate::audit::view).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

pub async fn admin_one(
    State(app): State<AppState>,
    p: Principal,
    Path(seq): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AuditRead)?;
    let seq: i64 = seq
        .parse()
        .map_err(|_| ApiError::not_found("audit record"))?;
    let rows = store::audit_query(&app.store.pool, &[("seq = ?", Bind::Int(seq))], 1).await?;
    let r = rows
        .first()
        .ok_or_else(|| ApiError::not_found("audit record"))?;
    Ok(Json(crate::audit::view(r)))
}

pub async fn admin_verify(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::AuditRead)?;
    let v = crate::audit::verify(&app.store.pool, &app.master).await?;
    Ok(Json(serde_json::to_value(v).map_err(ApiError::internal)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestFilter {
    node: Option<String>,
    agency: Option<String>,
    service: Option<String>,
    route: Option<String>,
    channel: Option<String>,
    app: Option<String>,
    user: Option<String>,
    request_id: Option<String>,
    decision: Option<String>,
    status: Option<i64>,
    before: Option<i64>,
    /// 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

pub async fn request_list(
    State(app): State<AppState>,
    p: Principal,
    Params(f): Params<RequestFilter>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AuditRead)?;
    let limit = limit(f.limit)?;
    let mut conds: Vec<(&str, Bind)> = Vec::new();
    for (sql, v) in [
        ("node = ?", f.node),
        ("agency = ?", f.agency),
        ("service = ?", f.service),
        ("route = ?", f.route),
        ("channel = ?", f.channel),
        ("app = ?", f.app),
        ("user_id = ?", f.user),
        ("request_id = ?", f.request_id),
        ("decision = ?", f.decision),
    ] {
        if let Some(v) = v {
            conds.push((sql, Bind::Text(v)));
        }
    }
    if let Some(v) = f.status {
        conds.push(("status = ?", Bind::Int(v)));
    }
    if let Some(v) = f.before {
        conds.push(("seq < ?", Bind::Int(v)));
    }
    let rows = store::request_audit_query(&app.store.pool, &conds, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(json!({ "items": rows, "next_before": next })))
}
