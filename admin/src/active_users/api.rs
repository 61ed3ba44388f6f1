//! `GET /v1/active-users`: daily and monthly active users per channel and in total.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Counter, Counts, CHANNELS, TOTAL};
use crate::api::Params;
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActiveQuery {
    /// Local day (Asia/Shanghai) `YYYY-MM-DD`; default today.
    #[param(format = Date)]
    day: Option<String>,
    /// Local month `YYYY-MM`; default the month of `day`.
    #[param(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    month: Option<String>,
}

/// Every channel and the total, zero where nobody was seen.
fn complete(c: Counts) -> Value {
    let mut obj = serde_json::Map::new();
    for ch in CHANNELS.iter().chain([&TOTAL]) {
        obj.insert(ch.to_string(), json!(c.get(*ch).copied().unwrap_or(0)));
    }
    Value::Object(obj)
}

pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<ActiveQuery>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::ReportRead)?;
    let day = match &q.day {
        Some(d) => crate::local_time::parse_day(d)
            .map_err(|e| ApiError::BadRequest(format!("day: {e}")))?
            .to_string(),
        None => crate::local_time::day(app.now()),
    };
    let month = match &q.month {
        Some(m) => {
            crate::local_time::parse_month(m)
                .map_err(|e| ApiError::BadRequest(format!("month: {e}")))?;
            m.clone()
        }
        None => day[..7].to_string(),
    };
    let (daily, monthly) = counts(&app, &day, &month).await?;
    Ok(Json(json!({
        "day": day,
        "month": month,
        "daily": complete(daily),
        "monthly": complete(monthly),
        "store": match *app.active_users.counter {
            Counter::Memory(_) => "memory",
            Counter::Redis(_) => "redis",
        },
    })))
}

/// Daily and monthly counts (reports use this too).
pub async fn counts(app: &AppState, day: &str, month: &str) -> ApiResult<(Counts, Counts)> {
    let c = &app.active_users.counter;
    let pool = &app.store.pool;
    let unavailable = |e: String| ApiError::Internal(format!("active users: {e}"));
    let daily = c
        .counts(pool, &format!("d:{day}"))
        .await
        .map_err(unavailable)?;
    let monthly = c
        .counts(pool, &format!("m:{month}"))
        .await
        .map_err(unavailable)?;
    Ok((daily, monthly))
}
