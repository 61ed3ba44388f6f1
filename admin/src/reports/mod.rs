//! Reports (docs/reports.md): 每日巡检报告 (`daily-inspection`), 系统运行状态监控分析报告
//! (`weekly-status`), 服务上线记录表 (`go-live-records`) and 安全监测月报 (`security-monthly`),
//! generated on demand (`POST /v1/reports`) and on schedule ([`scheduled`]), kept in the
//! database, and downloadable as self-contained HTML with charts, CSV (UTF-8 with BOM) and JSON
//! of the same numbers.
//!
//! Each report is built once into a [`doc::Doc`] ([`kinds`]); its three renderings are stored
//! together, so a download later shows exactly what was generated. Periods are local days
//! (Asia/Shanghai).
//!
//! What it may not do: put a user id, client address or other personal field of a request
//! record into a report (only counts, services, interfaces and admin account names).

pub mod api;
pub mod doc;
pub mod html;
pub mod kinds;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::local_time::{day_start, midnight};

/// A stored report's metadata.
pub fn meta(
    id: &str,
    kind: &str,
    from: i64,
    to: i64,
    generated_at: i64,
    generated_by: &str,
) -> Value {
    json!({
        "id": id,
        "kind": kind,
        "title": kinds::title(kind),
        "period_start": crate::clock::rfc3339(from),
        "period_end": crate::clock::rfc3339(to),
        "generated_at": crate::clock::rfc3339(generated_at),
        "generated_by": generated_by,
        "downloads": {
            "html": format!("/v1/reports/{id}?format=html"),
            "csv": format!("/v1/reports/{id}?format=csv"),
            "json": format!("/v1/reports/{id}?format=json"),
        },
    })
}

/// Builds and stores one report of `[from, to)`; returns its metadata.
pub async fn generate(app: &App, kind: &str, from: i64, to: i64, by: &str) -> ApiResult<Value> {
    let now = app.now();
    let d = kinds::build(app, kind, from, to, now).await?;
    let body = serde_json::to_string(&d).map_err(ApiError::internal)?;
    let html = html::render(&d);
    let csv = d.csv();
    let id = crate::crypto::new_id("rpt");
    sqlx::query(
        "INSERT INTO reports (id, kind, period_start, period_end, generated_at, generated_by, body, html, csv) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(kind)
    .bind(from)
    .bind(to)
    .bind(now)
    .bind(by)
    .bind(body)
    .bind(html)
    .bind(csv)
    .execute(&app.store.pool)
    .await?;
    Ok(meta(&id, kind, from, to, now, by))
}

/// The default period of a kind at `now`: today (daily inspection), the seven days before today
/// (weekly), the month before this one (security), everything up to the end of today (go-live).
pub fn default_period(kind: &str, now: i64) -> (i64, i64) {
    let today = day_start(now);
    match kind {
        "daily-inspection" => (today, today + 86_400),
        "weekly-status" => (today - 7 * 86_400, today),
        "security-monthly" => {
            let first = crate::local_time::datetime(now).date().first_of_month();
            let prev = first
                .checked_sub(jiff::Span::new().months(1))
                .unwrap_or(first);
            (midnight(prev), midnight(first))
        }
        _ => (0, today + 86_400),
    }
}

/// Generates what is due after the daily inspection at `now`: the day's inspection report; on
/// Mondays the weekly report of the seven days before; on the 1st the security report and the
/// go-live records of the month before. Each is claimed per day, so a cluster makes one.
pub async fn scheduled(app: &Arc<App>, now: i64) -> ApiResult<()> {
    let day = crate::local_time::day(now);
    let dt = crate::local_time::datetime(now);
    let mut due = vec!["daily-inspection"];
    if dt.weekday() == jiff::civil::Weekday::Monday {
        due.push("weekly-status");
    }
    if dt.day() == 1 {
        due.push("security-monthly");
        due.push("go-live-records");
    }
    for kind in due {
        if !crate::inspection::claim(&app.store.pool, &format!("report:{kind}"), &day, now).await? {
            continue;
        }
        let (from, to) = match kind {
            "go-live-records" => {
                let (from, to) = default_period("security-monthly", now);
                (from, to)
            }
            k => default_period(k, now),
        };
        generate(app, kind, from, to, "schedule").await?;
    }
    Ok(())
}
