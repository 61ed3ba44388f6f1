//! The report endpoints: generate, list, download. The system and security admins generate;
//! all three admins read (`report-read`, `report-write` in `crate::authz`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use sqlx::Row;

use crate::api::{items, Input, Params};
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::{Actor, AuditTarget};
use crate::error::{ApiError, ApiResult};

/// What to generate.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateInput {
    /// `daily-inspection`, `weekly-status`, `go-live-records` or `security-monthly`.
    pub kind: String,
    /// First local day (`YYYY-MM-DD`, Asia/Shanghai) of the period; default by kind (see
    /// docs/reports.md).
    pub from: Option<String>,
    /// The local day after the period (exclusive); at most 366 days after `from`.
    pub to: Option<String>,
}

pub async fn generate(
    State(app): State<AppState>,
    p: Principal,
    Input(g): Input<GenerateInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::ReportWrite)?;
    if !super::kinds::KINDS.iter().any(|(k, _)| *k == g.kind) {
        return Err(ApiError::invalid(
            "kind",
            "expected daily-inspection, weekly-status, go-live-records or security-monthly",
        ));
    }
    let (mut from, mut to) = super::default_period(&g.kind, app.now());
    if let Some(f) = &g.from {
        from = crate::local_time::midnight(
            crate::local_time::parse_day(f).map_err(|e| ApiError::invalid("from", e))?,
        );
        if g.to.is_none() {
            to = from + 86_400 * if g.kind == "weekly-status" { 7 } else { 1 };
        }
    }
    if let Some(t) = &g.to {
        to = crate::local_time::midnight(
            crate::local_time::parse_day(t).map_err(|e| ApiError::invalid("to", e))?,
        );
    }
    if to <= from {
        return Err(ApiError::invalid("to", "must be a day after `from`"));
    }
    if g.from.is_some() && to - from > 366 * 86_400 {
        return Err(ApiError::invalid("to", "the period is at most 366 days"));
    }
    let m = super::generate(&app, &g.kind, from, to, &p.username).await?;
    let w = crate::commit::begin_write(&app).await?;
    w.finish(
        &Actor::from(&p),
        "report.generate",
        AuditTarget {
            kind: "report".into(),
            id: m["id"].as_str().unwrap_or("").to_string(),
            after: Some(serde_json::json!({"kind": g.kind, "period_start": m["period_start"], "period_end": m["period_end"]})),
            ..Default::default()
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(m)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportFilter {
    kind: Option<String>,
    /// 1 to 500; default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    Params(f): Params<ReportFilter>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ReportRead)?;
    let limit = match f.limit {
        None => 100,
        Some(n) if (1..=500).contains(&n) => n,
        Some(_) => return Err(ApiError::BadRequest("limit must be 1 to 500".into())),
    };
    let rows = match &f.kind {
        Some(k) => sqlx::query(&format!(
            "SELECT id, kind, period_start, period_end, generated_at, generated_by FROM reports WHERE kind = $1 ORDER BY generated_at DESC, id LIMIT {limit}"
        ))
        .bind(k)
        .fetch_all(&app.store.pool)
        .await?,
        None => sqlx::query(&format!(
            "SELECT id, kind, period_start, period_end, generated_at, generated_by FROM reports ORDER BY generated_at DESC, id LIMIT {limit}"
        ))
        .fetch_all(&app.store.pool)
        .await?,
    };
    let mut out = Vec::new();
    for r in &rows {
        out.push(super::meta(
            &r.try_get::<String, _>("id")?,
            &r.try_get::<String, _>("kind")?,
            r.try_get("period_start")?,
            r.try_get("period_end")?,
            r.try_get("generated_at")?,
            &r.try_get::<String, _>("generated_by")?,
        ));
    }
    Ok(items(out))
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ReportFormat)]
pub enum Format {
    #[default]
    Json,
    Csv,
    Html,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    #[serde(default)]
    format: Format,
}

pub async fn download(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Params(q): Params<DownloadQuery>,
) -> ApiResult<Response> {
    p.authorize(Action::ReportRead)?;
    let r = sqlx::query(
        "SELECT id, kind, period_start, period_end, generated_at, generated_by, body, html, csv FROM reports WHERE id = $1",
    )
    .bind(&id)
    .fetch_optional(&app.store.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("report"))?;
    let kind: String = r.try_get("kind")?;
    let from: i64 = r.try_get("period_start")?;
    let file = format!("{kind}-{}", crate::local_time::day(from));
    let (text, ctype, ext) = match q.format {
        Format::Json => {
            let body: String = r.try_get("body")?;
            let mut m = super::meta(
                &id,
                &kind,
                from,
                r.try_get("period_end")?,
                r.try_get("generated_at")?,
                &r.try_get::<String, _>("generated_by")?,
            );
            m["report"] = serde_json::from_str(&body).unwrap_or(Value::Null);
            return Ok(Json(m).into_response());
        }
        Format::Csv => (
            r.try_get::<String, _>("csv")?,
            "text/csv; charset=utf-8",
            "csv",
        ),
        Format::Html => (
            r.try_get::<String, _>("html")?,
            "text/html; charset=utf-8",
            "html",
        ),
    };
    let mut resp = (StatusCode::OK, text).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
