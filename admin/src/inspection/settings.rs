//! Inspection settings: when the daily run starts and what counts as a fault. One JSON document
//! (`inspection_settings`), defaults when absent; changed with `PUT /v1/inspection-settings`.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(as = InspectionSettings)]
pub struct Settings {
    /// Local time (Asia/Shanghai, `HH:MM`) of the daily run. Default `08:30`. A control plane
    /// that starts later in the day runs that day's inspection at once.
    pub daily_at: String,
    /// Longest wait for one probe (connect, TLS and answer each), milliseconds. Default 5000.
    pub timeout_ms: u64,
    /// An answer slower than this is a `slow` fault, milliseconds. Default 2000.
    pub slow_ms: u64,
    /// A certificate that expires within this many days is a `certificate_expiring` fault.
    /// Default 30.
    pub cert_warn_days: i64,
    /// Availability target, percent. A service below it over the last 24 hours (with at least
    /// `min_requests` requests) has an `availability` fault. Default 99.
    pub availability_target: f64,
    /// Default 20.
    pub min_requests: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            daily_at: "08:30".into(),
            timeout_ms: 5000,
            slow_ms: 2000,
            cert_warn_days: 30,
            availability_target: 99.0,
            min_requests: 20,
        }
    }
}

impl Settings {
    /// Minutes after local midnight of `daily_at`.
    pub fn daily_minute(&self) -> Option<i64> {
        let (h, m) = self.daily_at.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let h: i64 = h.parse().ok()?;
        let m: i64 = m.parse().ok()?;
        ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
    }

    pub fn validate(&self) -> ApiResult<()> {
        if self.daily_minute().is_none() {
            return Err(ApiError::invalid(
                "daily_at",
                "expected a local time HH:MM (00:00 to 23:59)",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(ApiError::invalid("timeout_ms", "expected 100 to 60000"));
        }
        if !(1..=60_000).contains(&self.slow_ms) {
            return Err(ApiError::invalid("slow_ms", "expected 1 to 60000"));
        }
        if !(0..=365).contains(&self.cert_warn_days) {
            return Err(ApiError::invalid("cert_warn_days", "expected 0 to 365"));
        }
        if !(self.availability_target > 0.0 && self.availability_target <= 100.0) {
            return Err(ApiError::invalid(
                "availability_target",
                "expected a percentage above 0 and at most 100",
            ));
        }
        if self.min_requests > 1_000_000 {
            return Err(ApiError::invalid("min_requests", "expected 0 to 1000000"));
        }
        Ok(())
    }
}

pub async fn load(pool: &sqlx::AnyPool) -> ApiResult<Settings> {
    let r = sqlx::query("SELECT body FROM inspection_settings WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    match r {
        None => Ok(Settings::default()),
        Some(r) => {
            let body: String = r.try_get("body")?;
            serde_json::from_str(&body)
                .map_err(|e| ApiError::internal(format!("stored inspection settings: {e}")))
        }
    }
}

pub async fn save(conn: &mut sqlx::AnyConnection, s: &Settings, now: i64) -> ApiResult<()> {
    let body = serde_json::to_string(s).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO inspection_settings (id, body, updated_at) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
    )
    .bind(body)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
