//! The gateway-facing endpoints, authenticated by node tokens (`POST /v1/nodes`).
//!
//! - `GET /v1/dataplane/watch?version=N[&timeout=S]`: long-poll. Answers `200` with the rendered
//!   gateway config (JSON, which the gateway's YAML parser reads as is) as soon as the committed
//!   version differs from `N`, with the version in `X-Fenfa-Config-Version`; or `304` with an
//!   empty body when nothing newer arrived within the timeout (25 s by default, `timeout` 0–60).
//! - `POST /v1/dataplane/audit`: a batch of request-audit records,
//!   `{"node","segment","offset","records":[…]}`. Record `k` is stored under the key
//!   `(node, segment, offset + k)`; a key already stored is skipped, so re-sending a batch is
//!   harmless. Answers `200 {"accepted": new, "duplicates": skipped}`. The node is the one the
//!   token was issued to: a batch naming any other node is refused (`403`, nothing stored) and
//!   the attempt is recorded in the admin audit, so one node cannot pre-empt another's records.
//!
//! Newly stored records are handed to the alert detectors (`crate::alerts`) without waiting.
//!
//! `docs/admin.md` is the contract for gateway implementers; keep the two in step.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{Input, Params};
use crate::app::AppState;
use crate::auth::Node;
use crate::error::{ApiError, ApiResult};
use crate::store::{self, RequestFields};

pub const VERSION_HEADER: &str = "x-fenfa-config-version";
/// Longest `timeout` a watcher may ask for.
pub const MAX_WATCH_SECS: u64 = 60;
/// Most records in one ingest batch.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    #[serde(default)]
    version: i64,
    /// Seconds to hold the request, 0 to 60; default 25.
    #[serde(default)]
    #[param(minimum = 0, maximum = 60)]
    timeout: Option<u64>,
}

fn version_header(v: i64) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or(HeaderValue::from_static("0"))
}

pub async fn watch(
    State(app): State<AppState>,
    node: Node,
    Params(q): Params<WatchQuery>,
) -> ApiResult<Response> {
    let timeout = match q.timeout {
        Some(t) if t <= MAX_WATCH_SECS => Duration::from_secs(t),
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "timeout must be 0 to {MAX_WATCH_SECS} seconds"
            )))
        }
        None => app.opts.watch_timeout,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = app.version.subscribe();
    loop {
        let v = store::current_version(&app.store.pool).await?;
        // Newer — or older, when the store was restored from a backup: either way the node
        // must take what is committed.
        if v != q.version {
            let (v, text) = crate::commit::current_text(&app).await?;
            store::node_seen(&app.store.pool, &node.id, app.now(), v).await?;
            let mut resp = (StatusCode::OK, text).into_response();
            let h = resp.headers_mut();
            h.insert(VERSION_HEADER, version_header(v));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(resp);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            store::node_seen(&app.store.pool, &node.id, app.now(), q.version).await?;
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            resp.headers_mut().insert(VERSION_HEADER, version_header(v));
            return Ok(resp);
        }
        // Woken by a commit in this process; the 1 s tick covers commits made by another
        // control-plane process on the same database.
        let wait = (deadline - now).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait, rx.changed()).await;
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub node: String,
    pub segment: String,
    pub offset: u64,
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

pub async fn ingest(
    State(app): State<AppState>,
    node: Node,
    Input(b): Input<Batch>,
) -> ApiResult<Json<Value>> {
    for (path, v) in [("node", &b.node), ("segment", &b.segment)] {
        if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                path,
                "expected 1 to 128 printable characters",
            ));
        }
    }
    if b.node != node.name {
        refuse_foreign_batch(&app, &node, &b).await;
        return Err(ApiError::Forbidden(format!(
            "this node token belongs to node `{}`; it may not file records for another node",
            node.name
        )));
    }
    if b.records.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "records",
            format!("at most {MAX_BATCH} records per batch"),
        ));
    }
    let offset = i64::try_from(b.offset).map_err(|_| ApiError::invalid("offset", "too large"))?;
    let mut rows = Vec::with_capacity(b.records.len());
    for (k, r) in b.records.iter().enumerate() {
        if !r.is_object() {
            return Err(ApiError::invalid(
                format!("records[{k}]"),
                "must be a JSON object",
            ));
        }
        let fields = RequestFields {
            time: text(r, "time"),
            request_id: text(r, "request_id"),
            agency: text(r, "agency"),
            service: text(r, "service"),
            route: text(r, "route"),
            channel: text(r, "channel"),
            app: text(r, "app"),
            user: text(r, "user"),
            status: r.get("status").and_then(Value::as_i64),
            decision: text(r, "decision"),
        };
        rows.push((offset + k as i64, fields, r.to_string()));
    }
    let guard = app.write.lock().await;
    let mut tx = app.store.begin_write().await?;
    let now = app.now();
    let fresh =
        store::request_audit_insert(&mut tx, &b.node, &b.segment, &node.name, now, &rows).await?;
    tx.commit().await?;
    drop(guard);
    let new = fresh.len() as u64;
    // Only records stored now: a re-sent batch is not counted twice. Never waits.
    let mut records = b.records;
    let mut k = 0;
    records.retain(|_| {
        k += 1;
        fresh.binary_search(&(k - 1)).is_ok()
    });
    app.active_users.feed(&records);
    app.alerts.feed(now, records);
    Ok(Json(json!({
        "accepted": new,
        "duplicates": rows.len() as u64 - new,
    })))
}

/// Records a batch filed under another node's name in the admin audit.
async fn refuse_foreign_batch(app: &crate::app::App, node: &Node, b: &Batch) {
    let res = async {
        let w = crate::commit::begin_write(app).await?;
        w.finish(
            &crate::commit::Actor {
                name: node.name.clone(),
                role: "gateway-node".into(),
                source_ip: node.source_ip.clone(),
            },
            "dataplane.audit_refused",
            crate::commit::AuditTarget {
                kind: "node".into(),
                id: node.id.clone(),
                after: Some(json!({
                    "claimed_node": b.node.chars().take(128).collect::<String>(),
                    "segment": b.segment.chars().take(128).collect::<String>(),
                    "offset": b.offset,
                    "records": b.records.len(),
                })),
                ..Default::default()
            },
        )
        .await
    }
    .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "cannot record a refused audit batch in the admin audit");
    }
}
