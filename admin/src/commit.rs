//! The commit pipeline — the only way configuration changes.
//!
//! One commit, in one database transaction: bump the config version (the row lock serializes
//! commits, also across control-plane processes sharing PostgreSQL), load every resource, apply
//! the change, check network policies, render the live and the full gateway config and compile
//! both with the gateway's own compiler, then store the changed resource, the sealed rendered
//! config and the audit record, and commit. Any failure before the commit rolls everything back:
//! an invalid change leaves no trace but its 422 answer.

use serde_json::Value;

use crate::app::App;
use crate::audit::{self, Entry};
use crate::authz::Principal;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::model::Snapshot;
use crate::render::{self, render};
use crate::store::{self, kind};

/// The resource a change touched, and any others it changed with it in the same commit (a
/// revision applied: the service, its routes and the revision).
#[derive(Debug, Clone)]
pub struct Touched {
    pub kind: &'static str,
    pub id: String,
    /// Further resources, stored and audited (one record each) in the same transaction.
    pub also: Vec<(&'static str, String)>,
}

impl Touched {
    pub fn new(kind: &'static str, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            also: Vec::new(),
        }
    }

    pub fn and(mut self, kind: &'static str, id: impl Into<String>) -> Self {
        self.also.push((kind, id.into()));
        self
    }
}

/// What a commit produced.
#[derive(Debug, Clone)]
pub struct Committed {
    pub version: i64,
    /// The resource after the change, as the API shows it (`None` after a delete).
    pub after: Option<Value>,
}

/// Who did it and from where, for the audit record.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub role: String,
    pub source_ip: String,
}

impl From<&Principal> for Actor {
    fn from(p: &Principal) -> Self {
        Self {
            name: p.username.clone(),
            role: p.role.as_str().to_string(),
            source_ip: p.source_ip.clone(),
        }
    }
}

impl Actor {
    pub fn system() -> Self {
        Self {
            name: "system".into(),
            role: "system".into(),
            source_ip: "-".into(),
        }
    }
}

/// The stored JSON of one resource.
pub fn resource_json(s: &Snapshot, k: &str, id: &str) -> Option<Value> {
    fn find<T: serde::Serialize>(v: &[T], id: &str, get: impl Fn(&T) -> &str) -> Option<Value> {
        v.iter()
            .find(|x| get(x) == id)
            .and_then(|x| serde_json::to_value(x).ok())
    }
    match k {
        kind::AGENCY => find(&s.agencies, id, |x| &x.id),
        kind::SERVICE => find(&s.services, id, |x| &x.id),
        kind::ROUTE => find(&s.routes, id, |x| &x.id),
        kind::APP => find(&s.apps, id, |x| &x.id),
        kind::POLICY => find(&s.policies, id, |x| &x.id),
        kind::TOKEN_KEY => find(&s.token_keys, id, |x| &x.id),
        kind::SIGNING_KEY => find(&s.signing_keys, id, |x| &x.id),
        kind::LIMIT => find(&s.limits, id, |x| &x.id),
        kind::SETTINGS => serde_json::to_value(&s.settings).ok(),
        kind::BLOCK => find(&s.blocks, id, |x| &x.id),
        kind::REVISION => find(&s.revisions, id, |x| &x.id),
        kind::IDENTITY_KEY => find(&s.identity_keys, id, |x| &x.id),
        _ => None,
    }
}

/// A resource as the API shows it: sealed secrets removed.
pub fn public_view(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|k, _| !k.starts_with("sealed_"));
    }
    v
}

/// A name people recognise a resource by.
fn display_name(s: &Snapshot, k: &str, id: &str) -> String {
    resource_json(s, k, id)
        .and_then(|v| {
            ["name", "kid", "key_id", "app_id"]
                .iter()
                .find_map(|f| v.get(*f).and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_else(|| id.to_string())
}

/// Checks a candidate snapshot: network policies, then the gateway compiler on the full and the
/// live rendering. Returns the live config text.
pub async fn validate(
    app: &App,
    snap: &Snapshot,
    touched: (&str, &str),
    version: i64,
) -> ApiResult<String> {
    let mut errors = Vec::new();
    for (svc, fe) in crate::policy::violations(snap) {
        if touched == (kind::SERVICE, svc.as_str()) {
            errors.push(fe);
        } else {
            errors.push(FieldError::new(
                format!(
                    "service/{}.{}",
                    display_name(snap, kind::SERVICE, &svc),
                    fe.path
                ),
                fe.message,
            ));
        }
    }
    errors.extend(crate::route_space::overlaps(snap, touched));
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let listeners = &app.opts.listeners;
    let full = render(snap, &app.master, listeners, version, true)?;
    let live = render(snap, &app.master, listeners, version, false)?;
    let checker = app.checker.clone();
    let (full_cfg, live_cfg) = (full.config, live.config);
    let text = render::to_text(&live_cfg)?;
    let (r_full, r_live) = tokio::task::spawn_blocking(move || {
        let a = checker.check(&full_cfg);
        let b = checker.check(&live_cfg);
        (a, b)
    })
    .await
    .map_err(ApiError::internal)?;
    let names = |k: &str, id: &str| display_name(snap, k, id);
    if let Err(e) = r_full {
        return Err(ApiError::Invalid(vec![render::field_error(
            &full.origins,
            &e,
            touched,
            &names,
        )]));
    }
    if let Err(e) = r_live {
        return Err(ApiError::Invalid(vec![render::field_error(
            &live.origins,
            &e,
            touched,
            &names,
        )]));
    }
    Ok(text)
}

/// Applies `change` to the current resources and commits it if the result is valid.
pub async fn commit<F>(app: &App, who: &Actor, action: &str, change: F) -> ApiResult<Committed>
where
    F: FnOnce(&mut Snapshot, i64) -> ApiResult<Touched>,
{
    let guard = app.write.lock().await;
    let now = app.now();
    let mut tx = app.store.begin_write().await?;
    let version = store::bump_version(&mut tx).await?;
    let before_snap = store::load_snapshot(&mut tx).await?;
    // Secrets sealed by this change use the platform's cipher as of now (another process may
    // have changed it).
    app.master.set_cipher(before_snap.settings.secret_cipher());
    let mut snap = before_snap.clone();
    let t = change(&mut snap, now)?;
    let before = resource_json(&before_snap, t.kind, &t.id);
    let after = resource_json(&snap, t.kind, &t.id);
    let agency = snap
        .agency_of(t.kind, &t.id)
        .or_else(|| before_snap.agency_of(t.kind, &t.id));
    let text = validate(app, &snap, (t.kind, &t.id), version).await?;
    let body = after.as_ref().map(Value::to_string);
    store::put_resource(
        &mut tx,
        t.kind,
        &t.id,
        agency.as_deref(),
        body.as_deref(),
        now,
    )
    .await?;
    for (k, id) in &t.also {
        let before = resource_json(&before_snap, k, id);
        let after = resource_json(&snap, k, id);
        let agency = snap
            .agency_of(k, id)
            .or_else(|| before_snap.agency_of(k, id));
        let body = after.as_ref().map(Value::to_string);
        store::put_resource(&mut tx, k, id, agency.as_deref(), body.as_deref(), now).await?;
        audit::append(
            &mut tx,
            &app.master,
            Entry {
                at: now,
                actor: who.name.clone(),
                role: who.role.clone(),
                source_ip: who.source_ip.clone(),
                action: action.to_string(),
                resource_kind: k.to_string(),
                resource_id: id.clone(),
                agency_id: agency,
                before: before.map(public_view),
                after: after.map(public_view),
            },
        )
        .await?;
    }
    store::save_config(
        &mut tx,
        version,
        &app.master.seal("config", text.as_bytes()),
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        &app.master,
        Entry {
            at: now,
            actor: who.name.clone(),
            role: who.role.clone(),
            source_ip: who.source_ip.clone(),
            action: action.to_string(),
            resource_kind: t.kind.to_string(),
            resource_id: t.id.clone(),
            agency_id: agency,
            before: before.map(public_view),
            after: after.clone().map(public_view),
        },
    )
    .await?;
    tx.commit().await?;
    drop(guard);
    app.version.send_replace(version);
    app.write_gateway_file().await;
    Ok(Committed {
        version,
        after: after.map(public_view),
    })
}

/// Version 1 of a fresh install: the rendered empty (or seeded) config.
pub async fn initial(app: &App) -> ApiResult<()> {
    let guard = app.write.lock().await;
    let now = app.now();
    let mut tx = app.store.begin_write().await?;
    let version = store::bump_version(&mut tx).await?;
    let snap = store::load_snapshot(&mut tx).await?;
    let text = validate(app, &snap, ("", ""), version).await?;
    store::save_config(
        &mut tx,
        version,
        &app.master.seal("config", text.as_bytes()),
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        &app.master,
        Entry {
            at: now,
            actor: "system".into(),
            role: "system".into(),
            source_ip: "-".into(),
            action: "config.init".into(),
            resource_kind: "config".into(),
            resource_id: version.to_string(),
            agency_id: None,
            before: None,
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    drop(guard);
    app.version.send_replace(version);
    app.write_gateway_file().await;
    Ok(())
}

/// The committed version and its rendered config text (secrets included: for gateways only).
pub async fn current_text(app: &App) -> ApiResult<(i64, String)> {
    let (version, sealed) = store::current_config(&app.store.pool).await?;
    if sealed.is_empty() {
        return Ok((version, String::new()));
    }
    let plain = app
        .master
        .open("config", &sealed)
        .map_err(|e| ApiError::internal(format!("stored config: {e}")))?;
    Ok((
        version,
        String::from_utf8(plain).map_err(ApiError::internal)?,
    ))
}

/// The current resources, read outside any transaction.
pub async fn snapshot(app: &App) -> ApiResult<Snapshot> {
    let mut conn = app.store.pool.acquire().await?;
    Ok(store::load_snapshot(&mut conn).await?)
}

/// A write outside the config (accounts, node tokens, sign-ins): a transaction under the write
/// lock that commits only together with its audit record ([`Write::finish`]).
pub struct Write<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    pub tx: sqlx::Transaction<'static, sqlx::Any>,
    pub now: i64,
    app: &'a App,
}

pub async fn begin_write(app: &App) -> ApiResult<Write<'_>> {
    let guard = app.write.lock().await;
    let tx = app.store.begin_write().await?;
    Ok(Write {
        _guard: guard,
        tx,
        now: app.now(),
        app,
    })
}

impl Write<'_> {
    /// Appends the audit record and commits.
    pub async fn finish(mut self, who: &Actor, action: &str, target: AuditTarget) -> ApiResult<()> {
        audit::append(
            &mut self.tx,
            &self.app.master,
            Entry {
                at: self.now,
                actor: who.name.clone(),
                role: who.role.clone(),
                source_ip: who.source_ip.clone(),
                action: action.to_string(),
                resource_kind: target.kind,
                resource_id: target.id,
                agency_id: target.agency_id,
                before: target.before,
                after: target.after,
            },
        )
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// The resource an [`Write`] change touched.
#[derive(Debug, Clone, Default)]
pub struct AuditTarget {
    pub kind: String,
    pub id: String,
    pub agency_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}
