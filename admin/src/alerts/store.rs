//! Alert rows: raising (a new alert, or a signal folded into the open alert of the same incident),
//! reading, the state machine open → acknowledged → resolved with notes, delivery status,
//! destinations and the settings document. Every new alert and every state change is recorded
//! in the admin audit (through `crate::commit::begin_write`).

use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::detect::Signal;
use super::rules::Settings;
use crate::app::App;
use crate::commit::{Actor, AuditTarget};
use crate::error::{ApiError, ApiResult};
use crate::store::{Bind, DbResult};

/// An alert's state.
pub const OPEN: &str = "open";
pub const ACKNOWLEDGED: &str = "acknowledged";
pub const RESOLVED: &str = "resolved";

/// Most sample request ids an alert keeps across folded signals.
const MAX_SAMPLES: usize = 10;

#[derive(Debug, Clone)]
pub struct AlertRow {
    pub id: String,
    pub rule: String,
    pub dedup_key: String,
    pub severity: String,
    pub state: String,
    pub subject_kind: String,
    pub subject: String,
    pub service: Option<String>,
    pub title: String,
    pub evidence: Value,
    pub signals: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub notes: Value,
}

const COLS: &str = "id, rule, dedup_key, severity, state, subject_kind, subject, service, title, evidence, signals, first_seen, last_seen, created_at, updated_at, notes";

fn from_row(r: &AnyRow) -> DbResult<AlertRow> {
    let ev: String = r.try_get("evidence")?;
    let notes: String = r.try_get("notes")?;
    Ok(AlertRow {
        id: r.try_get("id")?,
        rule: r.try_get("rule")?,
        dedup_key: r.try_get("dedup_key")?,
        severity: r.try_get("severity")?,
        state: r.try_get("state")?,
        subject_kind: r.try_get("subject_kind")?,
        subject: r.try_get("subject")?,
        service: r.try_get("service")?,
        title: r.try_get("title")?,
        evidence: serde_json::from_str(&ev).unwrap_or(Value::Null),
        signals: r.try_get("signals")?,
        first_seen: r.try_get("first_seen")?,
        last_seen: r.try_get("last_seen")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        notes: serde_json::from_str(&notes).unwrap_or(json!([])),
    })
}

/// `2027-01-15 10:00:00`, Asia/Shanghai (UTC+8, no daylight saving), for people.
pub fn shanghai(t: i64) -> String {
    crate::clock::rfc3339(t + 8 * 3600)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

impl AlertRow {
    /// The API's view.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "rule": self.rule,
            "title": self.title,
            "severity": self.severity,
            "state": self.state,
            "subject_kind": self.subject_kind,
            "subject": self.subject,
            "service": self.service,
            "summary": self.evidence.get("summary").cloned().unwrap_or(Value::Null),
            "evidence": self.evidence,
            "signals": self.signals,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "first_seen_local": shanghai(self.first_seen),
            "last_seen_local": shanghai(self.last_seen),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "notes": self.notes,
        })
    }
}

pub async fn get(pool: &AnyPool, id: &str) -> DbResult<Option<AlertRow>> {
    let r = sqlx::query(&format!("SELECT {COLS} FROM alerts WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    r.as_ref().map(from_row).transpose()
}

pub async fn list(pool: &AnyPool, conds: &[(&str, Bind)], limit: i64) -> DbResult<Vec<AlertRow>> {
    let (w, binds) = crate::store::where_clause(conds);
    let sql =
        format!("SELECT {COLS} FROM alerts{w} ORDER BY created_at DESC, id DESC LIMIT {limit}");
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter().map(from_row).collect()
}

/// What raising a signal did.
#[derive(Debug, Clone)]
pub enum Raised {
    /// A new alert.
    Opened(Box<AlertRow>),
    /// Folded into an alert of the same incident.
    Folded(String),
}

fn merge_samples(old: &Value, new: &Value) -> Value {
    let mut v: Vec<Value> = old.as_array().cloned().unwrap_or_default();
    for s in new.as_array().into_iter().flatten() {
        if !v.contains(s) {
            v.push(s.clone());
        }
    }
    let skip = v.len().saturating_sub(MAX_SAMPLES);
    Value::Array(v.into_iter().skip(skip).collect())
}

/// Stores a signal: folds it into the unresolved alert of the same incident whose last signal
/// is within `aggregate_secs`, or opens a new alert (recorded in the admin audit).
pub async fn raise(app: &App, s: &Signal, aggregate_secs: i64) -> ApiResult<Raised> {
    let key = s.dedup_key();
    let mut evidence = s.evidence.clone();
    evidence["summary"] = json!(s.summary);
    let mut w = crate::commit::begin_write(app).await?;
    let existing = sqlx::query(&format!(
        "SELECT {COLS} FROM alerts WHERE dedup_key = $1 AND state <> $2 AND last_seen >= $3 ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(&key)
    .bind(RESOLVED)
    .bind(s.at - aggregate_secs)
    .fetch_optional(&mut *w.tx)
    .await?;
    if let Some(row) = existing.as_ref().map(from_row).transpose()? {
        let samples = merge_samples(
            &row.evidence["sample_request_ids"],
            &evidence["sample_request_ids"],
        );
        evidence["sample_request_ids"] = samples;
        sqlx::query(
            "UPDATE alerts SET evidence = $2, signals = signals + 1, last_seen = $3, updated_at = $4, severity = $5 WHERE id = $1",
        )
        .bind(&row.id)
        .bind(evidence.to_string())
        .bind(s.at.max(row.last_seen))
        .bind(w.now)
        .bind(severity_max(&row.severity, s.severity.as_str()))
        .execute(&mut *w.tx)
        .await?;
        w.tx.commit().await?;
        return Ok(Raised::Folded(row.id));
    }
    let row = AlertRow {
        id: crate::crypto::new_id("al"),
        rule: s.rule.as_str().to_string(),
        dedup_key: key,
        severity: s.severity.as_str().to_string(),
        state: OPEN.into(),
        subject_kind: s.subject_kind.to_string(),
        subject: s.subject.clone(),
        service: s.service.clone(),
        title: s.rule.title().to_string(),
        evidence,
        signals: 1,
        first_seen: s.at,
        last_seen: s.at,
        created_at: w.now,
        updated_at: w.now,
        notes: json!([]),
    };
    sqlx::query(&format!(
        "INSERT INTO alerts ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(&row.id)
    .bind(&row.rule)
    .bind(&row.dedup_key)
    .bind(&row.severity)
    .bind(&row.state)
    .bind(&row.subject_kind)
    .bind(&row.subject)
    .bind(&row.service)
    .bind(&row.title)
    .bind(row.evidence.to_string())
    .bind(row.signals)
    .bind(row.first_seen)
    .bind(row.last_seen)
    .bind(row.created_at)
    .bind(row.updated_at)
    .bind(row.notes.to_string())
    .execute(&mut *w.tx)
    .await?;
    w.finish(
        &Actor::system(),
        "alert.open",
        AuditTarget {
            kind: "alert".into(),
            id: row.id.clone(),
            after: Some(
                json!({"rule": row.rule, "severity": row.severity, "subject_kind": row.subject_kind,
                               "service": row.service, "evidence": row.evidence}),
            ),
            ..Default::default()
        },
    )
    .await?;
    Ok(Raised::Opened(Box::new(row)))
}

/// The more severe of two severity names.
fn severity_max(a: &str, b: &str) -> String {
    let rank = |s: &str| match s {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }.to_string()
}

/// Moves an alert to `to` (`acknowledged` or `resolved`) with a note; the admin audit records it.
/// `409` for a move the state machine does not allow.
pub async fn transition(
    app: &App,
    who: &Actor,
    id: &str,
    to: &str,
    note: &str,
) -> ApiResult<AlertRow> {
    let mut w = crate::commit::begin_write(app).await?;
    let row = sqlx::query(&format!("SELECT {COLS} FROM alerts WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *w.tx)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    let allowed = matches!(
        (row.state.as_str(), to),
        (OPEN, ACKNOWLEDGED) | (OPEN, RESOLVED) | (ACKNOWLEDGED, RESOLVED)
    );
    if !allowed {
        return Err(ApiError::Conflict(format!(
            "the alert is {}; it cannot become {to}",
            row.state
        )));
    }
    let mut notes = row.notes.as_array().cloned().unwrap_or_default();
    notes.push(json!({"at": w.now, "at_local": shanghai(w.now), "by": who.name, "state": to, "note": note}));
    sqlx::query("UPDATE alerts SET state = $2, notes = $3, updated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(to)
        .bind(Value::Array(notes.clone()).to_string())
        .bind(w.now)
        .execute(&mut *w.tx)
        .await?;
    let now = w.now;
    w.finish(
        who,
        if to == RESOLVED {
            "alert.resolve"
        } else {
            "alert.acknowledge"
        },
        AuditTarget {
            kind: "alert".into(),
            id: id.to_string(),
            before: Some(json!({"state": row.state})),
            after: Some(json!({"state": to, "note": note})),
            ..Default::default()
        },
    )
    .await?;
    Ok(AlertRow {
        state: to.to_string(),
        notes: Value::Array(notes),
        updated_at: now,
        ..row
    })
}

// ---------------------------------------------------------------------------------------------
// Delivery status

pub async fn set_delivery(
    pool: &AnyPool,
    alert_id: &str,
    destination_id: &str,
    state: &str,
    attempts: i64,
    error: Option<&str>,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO alert_deliveries (alert_id, destination_id, state, attempts, last_error, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (alert_id, destination_id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, last_error = excluded.last_error, updated_at = excluded.updated_at",
    )
    .bind(alert_id)
    .bind(destination_id)
    .bind(state)
    .bind(attempts)
    .bind(error)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn deliveries(pool: &AnyPool, alert_id: &str) -> DbResult<Vec<Value>> {
    let rows = sqlx::query(
        "SELECT destination_id, state, attempts, last_error, updated_at FROM alert_deliveries WHERE alert_id = $1 ORDER BY destination_id",
    )
    .bind(alert_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "destination_id": r.try_get::<String, _>("destination_id")?,
                "state": r.try_get::<String, _>("state")?,
                "attempts": r.try_get::<i64, _>("attempts")?,
                "last_error": r.try_get::<Option<String>, _>("last_error")?,
                "updated_at": r.try_get::<i64, _>("updated_at")?,
            }))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Destinations

#[derive(Debug, Clone)]
pub struct DestinationRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub sealed_url: String,
    pub url_hint: String,
    pub sealed_secret: Option<String>,
    pub per_minute: i64,
    pub created_at: i64,
}

impl DestinationRow {
    /// Never the URL (a WeCom robot's key is in it) nor the secret.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "kind": self.kind, "url_hint": self.url_hint,
            "has_secret": self.sealed_secret.is_some(), "per_minute": self.per_minute,
            "created_at": self.created_at,
        })
    }
}

const DEST_COLS: &str =
    "id, name, kind, sealed_url, url_hint, sealed_secret, per_minute, created_at";

fn dest_from_row(r: &AnyRow) -> DbResult<DestinationRow> {
    Ok(DestinationRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        sealed_url: r.try_get("sealed_url")?,
        url_hint: r.try_get("url_hint")?,
        sealed_secret: r.try_get("sealed_secret")?,
        per_minute: r.try_get("per_minute")?,
        created_at: r.try_get("created_at")?,
    })
}

pub async fn destinations(pool: &AnyPool) -> DbResult<Vec<DestinationRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {DEST_COLS} FROM alert_destinations ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(dest_from_row).collect()
}

pub async fn insert_destination(
    conn: &mut sqlx::AnyConnection,
    d: &DestinationRow,
) -> DbResult<()> {
    sqlx::query(&format!(
        "INSERT INTO alert_destinations ({DEST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&d.id)
    .bind(&d.name)
    .bind(&d.kind)
    .bind(&d.sealed_url)
    .bind(&d.url_hint)
    .bind(&d.sealed_secret)
    .bind(d.per_minute)
    .bind(d.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn delete_destination(conn: &mut sqlx::AnyConnection, id: &str) -> DbResult<u64> {
    let r = sqlx::query("DELETE FROM alert_destinations WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected())
}

// ---------------------------------------------------------------------------------------------
// Settings

/// The stored settings, or the defaults.
pub async fn settings(pool: &AnyPool) -> ApiResult<Settings> {
    let r = sqlx::query("SELECT body FROM alert_settings WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    match r {
        None => Ok(Settings::default()),
        Some(r) => {
            let body: String = r.try_get("body")?;
            serde_json::from_str(&body)
                .map_err(|e| ApiError::internal(format!("stored alert settings: {e}")))
        }
    }
}

pub async fn put_settings(conn: &mut sqlx::AnyConnection, s: &Settings, now: i64) -> ApiResult<()> {
    let body = serde_json::to_string(s).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO alert_settings (id, body, updated_at) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
    )
    .bind(body)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
