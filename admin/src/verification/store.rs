//! Stored verifications (table `verifications`): each run whole, with its checks' evidence, and
//! a security admin's override. Rows are only added, and an override only fills its columns.

use serde_json::{json, Value};
use sqlx::Row;

use super::{Check, Grade};
use crate::error::{ApiError, ApiResult};
use crate::model::VerdictResult;

/// One verification run.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub service_id: String,
    pub revision_id: Option<String>,
    pub digest: String,
    pub result: VerdictResult,
    pub requested_by: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub checks: Vec<Check>,
    pub override_reason: Option<String>,
    pub override_by: Option<String>,
    pub override_at: Option<i64>,
}

impl Stored {
    /// As the API shows it; `full`: with every check's findings.
    pub fn view(&self, full: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "service_id": self.service_id,
            "revision_id": self.revision_id,
            "digest": self.digest,
            "result": self.result.as_str(),
            "requested_by": self.requested_by,
            "started_at": crate::clock::rfc3339(self.started_at),
            "finished_at": crate::clock::rfc3339(self.finished_at),
            "summary": self.checks.iter().map(|c| (c.check.clone(), json!(c.result))).collect::<serde_json::Map<_, _>>(),
            "override": self.override_reason.as_ref().map(|r| json!({
                "reason": r,
                "by": self.override_by,
                "at": self.override_at.map(crate::clock::rfc3339),
            })),
        });
        if full {
            v["checks"] = serde_json::to_value(&self.checks).unwrap_or(Value::Null);
        }
        v
    }

    /// The result a run's checks give.
    pub fn result_of(checks: &[Check]) -> VerdictResult {
        if super::overall(checks) == Grade::Fail {
            VerdictResult::Failed
        } else {
            VerdictResult::Passed
        }
    }
}

fn parse_result(s: &str) -> VerdictResult {
    match s {
        "passed" => VerdictResult::Passed,
        "overridden" => VerdictResult::Overridden,
        _ => VerdictResult::Failed,
    }
}

pub async fn insert(pool: &sqlx::AnyPool, v: &Stored) -> ApiResult<()> {
    let body = serde_json::to_string(&v.checks).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO verifications (id, service_id, revision_id, digest, result, requested_by, started_at, finished_at, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&v.id)
    .bind(&v.service_id)
    .bind(v.revision_id.as_deref())
    .bind(&v.digest)
    .bind(v.result.as_str())
    .bind(&v.requested_by)
    .bind(v.started_at)
    .bind(v.finished_at)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the override of a failed run.
pub async fn set_override(
    pool: &sqlx::AnyPool,
    id: &str,
    reason: &str,
    by: &str,
    at: i64,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE verifications SET result = 'overridden', override_reason = $1, override_by = $2, override_at = $3 \
         WHERE id = $4 AND result = 'failed'",
    )
    .bind(reason)
    .bind(by)
    .bind(at)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, service_id, revision_id, digest, result, requested_by, started_at, finished_at, body, override_reason, override_by, override_at";

fn from_row(r: &sqlx::any::AnyRow) -> ApiResult<Stored> {
    let body: String = r.try_get("body")?;
    let result: String = r.try_get("result")?;
    Ok(Stored {
        id: r.try_get("id")?,
        service_id: r.try_get("service_id")?,
        revision_id: r.try_get("revision_id")?,
        digest: r.try_get("digest")?,
        result: parse_result(&result),
        requested_by: r.try_get("requested_by")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        checks: serde_json::from_str(&body)
            .map_err(|e| ApiError::internal(format!("verification body: {e}")))?,
        override_reason: r.try_get("override_reason")?,
        override_by: r.try_get("override_by")?,
        override_at: r.try_get("override_at")?,
    })
}

pub async fn get(pool: &sqlx::AnyPool, id: &str) -> ApiResult<Option<Stored>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM verifications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The newest runs first, of one service or of all; at most `limit`.
pub async fn list(
    pool: &sqlx::AnyPool,
    service_id: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<Stored>> {
    let rows = match service_id {
        Some(s) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM verifications WHERE service_id = $1 ORDER BY started_at DESC, id DESC LIMIT {limit}"
            ))
            .bind(s)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM verifications ORDER BY started_at DESC, id DESC LIMIT {limit}"
            ))
            .fetch_all(pool)
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}
