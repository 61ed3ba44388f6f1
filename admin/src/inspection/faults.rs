//! Fault records (故障记录): one per subject (service, interface, target) and cause while it
//! lasts. An inspection opens a record for a problem it finds that has none open, refreshes the
//! open ones it finds again, and closes those of the services it inspected whose problem is gone
//! (`closed_by: inspection`). An operator may close a record with a note; if the problem is
//! still there, the next inspection opens a new one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::ApiResult;
use crate::store::Bind;

pub const OPEN: &str = "open";
pub const CLOSED: &str = "closed";
/// `closed_by` of records an inspection closed.
pub const BY_INSPECTION: &str = "inspection";

/// A problem one inspection found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub service_id: String,
    pub service: String,
    pub route: Option<String>,
    pub target: Option<String>,
    pub cause: &'static str,
    pub detail: String,
}

impl Finding {
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.service_id,
            self.route.as_deref().unwrap_or("-"),
            self.target.as_deref().unwrap_or("-"),
            self.cause
        )
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FaultRow {
    pub id: String,
    pub service_id: String,
    pub service: String,
    pub route: Option<String>,
    pub target: Option<String>,
    /// `refused`, `timeout`, `tls`, `dns`, `protocol`, `5xx`, `unexpected_status`, `slow`,
    /// `certificate_expiring`, `availability`.
    pub cause: String,
    /// `open` or `closed`.
    pub state: String,
    pub detail: String,
    #[schema(value_type = String, format = DateTime)]
    pub opened_at: i64,
    /// The inspection that found it.
    pub opened_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub closed_at: Option<i64>,
    /// `inspection`, or the operator's account name.
    pub closed_by: Option<String>,
    pub note: Option<String>,
    #[serde(skip)]
    pub dedup_key: String,
}

impl FaultRow {
    pub fn view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["opened_at"] = json!(crate::clock::rfc3339(self.opened_at));
        v["last_seen"] = json!(crate::clock::rfc3339(self.last_seen));
        v["closed_at"] = json!(self.closed_at.map(crate::clock::rfc3339));
        v
    }
}

const COLS: &str = "id, dedup_key, service_id, service, route, target, cause, state, detail, opened_at, opened_by, last_seen, closed_at, closed_by, note";

fn from_row(r: &AnyRow) -> Result<FaultRow, sqlx::Error> {
    Ok(FaultRow {
        id: r.try_get("id")?,
        dedup_key: r.try_get("dedup_key")?,
        service_id: r.try_get("service_id")?,
        service: r.try_get("service")?,
        route: r.try_get("route")?,
        target: r.try_get("target")?,
        cause: r.try_get("cause")?,
        state: r.try_get("state")?,
        detail: r.try_get("detail")?,
        opened_at: r.try_get("opened_at")?,
        opened_by: r.try_get("opened_by")?,
        last_seen: r.try_get("last_seen")?,
        closed_at: r.try_get("closed_at")?,
        closed_by: r.try_get("closed_by")?,
        note: r.try_get("note")?,
    })
}

pub async fn list(
    pool: &sqlx::AnyPool,
    conds: &[(&str, Bind)],
    limit: i64,
) -> ApiResult<Vec<FaultRow>> {
    let (w, binds) = crate::store::where_clause(conds);
    let sql = format!("SELECT {COLS} FROM faults{w} ORDER BY opened_at DESC, id LIMIT {limit}");
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    let rows = q.fetch_all(pool).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn get(pool: &sqlx::AnyPool, id: &str) -> ApiResult<Option<FaultRow>> {
    Ok(list(pool, &[("id = ?", Bind::Text(id.to_string()))], 1)
        .await?
        .pop())
}

/// What one inspection changed.
#[derive(Debug, Default, Serialize)]
pub struct Changes {
    pub opened: Vec<String>,
    pub closed: Vec<String>,
    pub still_open: Vec<String>,
}

/// Applies one inspection's findings: opens, refreshes and closes records. `inspected`: the
/// service ids it covered (open records of other services are closed too: they are no longer
/// published).
pub async fn reconcile(
    conn: &mut sqlx::AnyConnection,
    inspection: &str,
    now: i64,
    inspected: &BTreeSet<String>,
    findings: &[Finding],
) -> ApiResult<Changes> {
    let open_rows = sqlx::query(&format!("SELECT {COLS} FROM faults WHERE state = $1"))
        .bind(OPEN)
        .fetch_all(&mut *conn)
        .await?;
    let open: Vec<FaultRow> = open_rows.iter().map(from_row).collect::<Result<_, _>>()?;
    let mut by_key: BTreeMap<&str, &FaultRow> = BTreeMap::new();
    for f in &open {
        by_key.insert(f.dedup_key.as_str(), f);
    }
    let mut changes = Changes::default();
    let mut found = BTreeSet::new();
    for f in findings {
        let key = f.key();
        if !found.insert(key.clone()) {
            continue;
        }
        if let Some(row) = by_key.get(key.as_str()) {
            sqlx::query("UPDATE faults SET last_seen = $1, detail = $2 WHERE id = $3")
                .bind(now)
                .bind(&f.detail)
                .bind(&row.id)
                .execute(&mut *conn)
                .await?;
            changes.still_open.push(row.id.clone());
        } else {
            let id = crate::crypto::new_id("flt");
            sqlx::query(&format!(
                "INSERT INTO faults ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, NULL)"
            ))
            .bind(&id)
            .bind(&key)
            .bind(&f.service_id)
            .bind(&f.service)
            .bind(&f.route)
            .bind(&f.target)
            .bind(f.cause)
            .bind(OPEN)
            .bind(&f.detail)
            .bind(now)
            .bind(inspection)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            changes.opened.push(id);
        }
    }
    for f in &open {
        if found.contains(&f.dedup_key) {
            continue;
        }
        let note = if inspected.contains(&f.service_id) {
            format!("巡检 {inspection} 检查正常，自动关闭")
        } else {
            format!("服务已不在发布状态，巡检 {inspection} 自动关闭")
        };
        close(&mut *conn, &f.id, now, BY_INSPECTION, &note).await?;
        changes.closed.push(f.id.clone());
    }
    Ok(changes)
}

pub async fn close(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    now: i64,
    by: &str,
    note: &str,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE faults SET state = $1, closed_at = $2, closed_by = $3, note = $4 WHERE id = $5 AND state = $6",
    )
    .bind(CLOSED)
    .bind(now)
    .bind(by)
    .bind(note)
    .bind(id)
    .bind(OPEN)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
