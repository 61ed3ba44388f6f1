//! The alert endpoints: alerts (list, get, acknowledge, resolve), detector settings,
//! destinations (secrets sealed, shown never), temporary denies. Security admins act; audit
//! admins read. The permissions are in `crate::authz` (`alert-read`, `alert-write`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::rules::Settings;
use super::store::{self as astore, DestinationRow, ACKNOWLEDGED, RESOLVED};
use crate::api::{items, Input, Params};
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::{Actor, AuditTarget};
use crate::error::{ApiError, ApiResult};
use crate::store::Bind;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertFilter {
    /// `open`, `acknowledged` or `resolved`.
    state: Option<String>,
    /// A rule name (`auth_failures`, …).
    rule: Option<String>,
    severity: Option<String>,
    /// 1 to 500; default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    Params(f): Params<AlertFilter>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertRead)?;
    let limit = match f.limit {
        None => 100,
        Some(n) if (1..=500).contains(&n) => n,
        Some(_) => return Err(ApiError::BadRequest("limit must be 1 to 500".into())),
    };
    let mut conds = Vec::new();
    if let Some(s) = f.state {
        conds.push(("state = ?", Bind::Text(s)));
    }
    if let Some(s) = f.rule {
        conds.push(("rule = ?", Bind::Text(s)));
    }
    if let Some(s) = f.severity {
        conds.push(("severity = ?", Bind::Text(s)));
    }
    let rows = astore::list(&app.store.pool, &conds, limit).await?;
    Ok(items(rows.iter().map(astore::AlertRow::view).collect()))
}

pub async fn get_one(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertRead)?;
    let row = astore::get(&app.store.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    let mut v = row.view();
    v["deliveries"] = json!(astore::deliveries(&app.store.pool, &id).await?);
    let snap = crate::commit::snapshot(&app).await?;
    v["responses"] = json!(snap
        .blocks
        .iter()
        .filter(|b| b.alert_id.as_deref() == Some(id.as_str()))
        .collect::<Vec<_>>());
    Ok(Json(v))
}

/// A state change's note.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    /// What was done or found, 1 to 2000 characters.
    pub note: String,
}

fn note(n: &NoteInput) -> ApiResult<&str> {
    let t = n.note.trim();
    if t.is_empty() || t.chars().count() > 2000 {
        return Err(ApiError::invalid("note", "expected 1 to 2000 characters"));
    }
    Ok(t)
}

pub async fn acknowledge(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(n): Input<NoteInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertWrite)?;
    let row = astore::transition(&app, &Actor::from(&p), &id, ACKNOWLEDGED, note(&n)?).await?;
    Ok(Json(row.view()))
}

pub async fn resolve(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(n): Input<NoteInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertWrite)?;
    let row = astore::transition(&app, &Actor::from(&p), &id, RESOLVED, note(&n)?).await?;
    Ok(Json(row.view()))
}

pub async fn get_settings(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertRead)?;
    let s = astore::settings(&app.store.pool).await?;
    Ok(Json(serde_json::to_value(s).map_err(ApiError::internal)?))
}

pub async fn put_settings(
    State(app): State<AppState>,
    p: Principal,
    Input(s): Input<Settings>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertWrite)?;
    let s = s.validate()?;
    let before = astore::settings(&app.store.pool).await?;
    let mut w = crate::commit::begin_write(&app).await?;
    astore::put_settings(&mut w.tx, &s, w.now).await?;
    let after = serde_json::to_value(&s).map_err(ApiError::internal)?;
    w.finish(
        &Actor::from(&p),
        "alert-settings.update",
        AuditTarget {
            kind: "alert-settings".into(),
            id: "global".into(),
            before: serde_json::to_value(before).ok(),
            after: Some(after.clone()),
            ..Default::default()
        },
    )
    .await?;
    app.alerts.settings_changed();
    Ok(Json(after))
}

/// A new destination. `secret`: a webhook's HMAC key (required) or a DingTalk robot's signing
/// secret (`SEC…`, required); not used by WeCom, whose key is in the URL.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationInput {
    /// 1 to 64 characters.
    pub name: String,
    /// `webhook`, `wecom` or `dingtalk`.
    pub kind: String,
    /// `https://…` (plain `http://` to loopback only).
    pub url: String,
    pub secret: Option<String>,
    /// Messages per minute at most, 1 to 60; default 20 (the robots' limit).
    pub per_minute: Option<i64>,
}

/// `https://host/…` with the path and query cut, for listings.
fn url_hint(u: &fenfa_net::Url) -> String {
    format!(
        "{}://{}{}/…",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

pub async fn list_destinations(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertRead)?;
    let rows = astore::destinations(&app.store.pool).await?;
    Ok(items(rows.iter().map(DestinationRow::view).collect()))
}

pub async fn create_destination(
    State(app): State<AppState>,
    p: Principal,
    Input(d): Input<DestinationInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::AlertWrite)?;
    let name = d.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "expected 1 to 64 printable characters",
        ));
    }
    if !super::deliver::KINDS.contains(&d.kind.as_str()) {
        return Err(ApiError::invalid(
            "kind",
            "expected `webhook`, `wecom` or `dingtalk`",
        ));
    }
    if d.url.len() > 2048 {
        return Err(ApiError::invalid("url", "at most 2048 characters"));
    }
    let url = fenfa_net::check_url(&d.url, false, &fenfa_net::Names::section("destination"))
        .map_err(|_| {
            ApiError::invalid(
                "url",
                "expected an https:// URL with a host and no user name or password (plain http:// only to a loopback address)",
            )
        })?;
    let secret = d.secret.filter(|s| !s.is_empty());
    match (d.kind.as_str(), &secret) {
        ("webhook" | "dingtalk", None) => {
            return Err(ApiError::invalid(
                "secret",
                "required for this kind (the HMAC key of the signature)",
            ))
        }
        ("wecom", Some(_)) => {
            return Err(ApiError::invalid(
                "secret",
                "WeCom robots take no secret: the key is part of the URL",
            ))
        }
        _ => {}
    }
    if let Some(s) = &secret {
        if s.len() < 16 || s.len() > 256 || s.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "secret",
                "expected 16 to 256 printable characters",
            ));
        }
    }
    let per_minute = d.per_minute.unwrap_or(20);
    if !(1..=60).contains(&per_minute) {
        return Err(ApiError::invalid("per_minute", "expected 1 to 60"));
    }
    let id = crate::crypto::new_id("dst");
    let row = DestinationRow {
        sealed_url: app
            .master
            .seal(&format!("alert-destination-url:{id}"), d.url.as_bytes()),
        url_hint: url_hint(&url),
        sealed_secret: secret.map(|s| {
            app.master
                .seal(&format!("alert-destination:{id}"), s.as_bytes())
        }),
        id,
        name: name.to_string(),
        kind: d.kind,
        per_minute,
        created_at: app.now(),
    };
    let mut w = crate::commit::begin_write(&app).await?;
    astore::insert_destination(&mut w.tx, &row).await?;
    w.finish(
        &Actor::from(&p),
        "alert-destination.create",
        AuditTarget {
            kind: "alert-destination".into(),
            id: row.id.clone(),
            after: Some(row.view()),
            ..Default::default()
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.view())))
}

pub async fn delete_destination(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::AlertWrite)?;
    let mut w = crate::commit::begin_write(&app).await?;
    if astore::delete_destination(&mut w.tx, &id).await? == 0 {
        return Err(ApiError::not_found("alert destination"));
    }
    w.finish(
        &Actor::from(&p),
        "alert-destination.delete",
        AuditTarget {
            kind: "alert-destination".into(),
            id,
            ..Default::default()
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_blocks(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::AlertRead)?;
    let snap = crate::commit::snapshot(&app).await?;
    Ok(items(
        snap.blocks
            .iter()
            .map(|b| {
                let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
                v["expires_at_local"] = json!(astore::shanghai(b.expires_at));
                v
            })
            .collect(),
    ))
}

pub async fn lift_block(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::AlertWrite)?;
    super::respond::lift(&app, &Actor::from(&p), &id, "alert-block.lift").await?;
    Ok(StatusCode::NO_CONTENT)
}
