//! The store: SQLite (single node) or PostgreSQL (cluster) through one code path, `sqlx::Any`.
//!
//! One migration set serves both: portable SQL only (`TEXT`, `BIGINT`, `$n` placeholders,
//! `ON CONFLICT`), ids made by the application, no engine-specific types. Configuration
//! resources are JSON documents in one `resources` table (kind, id, owning agency, body); the
//! typed model is `crate::model`. Accounts, sessions, the admin audit chain, the config version,
//! node tokens and ingested request audit have tables of their own.
//!
//! What it may not do: decide anything. Authorization, validation and the audit chain live
//! above it; this module only moves rows.

use std::borrow::Cow;
use std::sync::Once;

use serde::de::DeserializeOwned;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};

/// How long a request waits for a database connection before it answers 503.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyConnection};
use sqlx::{AnyPool, Row};

use crate::model::{Role, Snapshot};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (
        2,
        "hardening",
        include_str!("../migrations/0002_hardening.sql"),
    ),
    (3, "alerts", include_str!("../migrations/0003_alerts.sql")),
    (
        5,
        "inspection",
        include_str!("../migrations/0005_inspection.sql"),
    ),
    (
        6,
        "verification",
        include_str!("../migrations/0006_verification.sql"),
    ),
    (7, "guomi", include_str!("../migrations/0007_guomi.sql")),
    (
        8,
        "identity",
        include_str!("../migrations/0008_identity.sql"),
    ),
];

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Vec<Migration>, Box<dyn std::error::Error + Send + Sync>>,
                > + Send,
        >,
    > {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
}

pub type DbResult<T> = Result<T, sqlx::Error>;

fn decode_err(e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

impl Store {
    /// Connects (`sqlite://…` or `postgres://…`) and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, String> {
        install_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(format!(
                "unsupported database URL `{}`: use sqlite://FILE or postgres://…",
                redact_url(url)
            ));
        };
        if backend == Backend::Sqlite {
            secure_sqlite_file(url)?;
        }
        let max = if backend == Backend::Sqlite { 4 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            // While the database is out of reach a request waits this long for a connection,
            // then answers 503 `database_unavailable` (not the default 30 s).
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| format!("cannot open the database {}: {e}", redact_url(url)))?;
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|e| format!("migrations: {e}"))?;
        migrator
            .run(&pool)
            .await
            .map_err(|e| format!("migrating {}: {e}", redact_url(url)))?;
        if backend == Backend::Sqlite {
            // The journal files appear with the first connection.
            secure_sqlite_file(url)?;
        }
        Ok(Self { pool, backend })
    }

    /// A transaction that will write. On SQLite it takes the write lock at once (a no-op
    /// `UPDATE`): a deferred transaction that reads first and writes later fails with
    /// `database is locked` (SQLITE_BUSY_SNAPSHOT, no waiting) when another connection wrote in
    /// between — schemathesis found that as a 500 on account changes. Taken up front, a busy
    /// lock is waited for (the pool's busy timeout) instead.
    pub async fn begin_write(&self) -> DbResult<sqlx::Transaction<'static, sqlx::Any>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Sqlite {
            sqlx::query("UPDATE config_state SET version = version WHERE id = 1")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

/// The file of a `sqlite://FILE?…` URL (`None` for in-memory databases).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// The database holds password hashes and sealed secrets: it (and its journal files) are mode
/// 0600, created so before SQLite first opens it, and fixed when found otherwise.
fn secure_sqlite_file(url: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    let fail = |e: std::io::Error| format!("cannot make {} private: {e}", path.display());
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(fail)?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut f = path.clone().into_os_string();
        f.push(suffix);
        let f = std::path::PathBuf::from(f);
        if f.is_file() {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    Ok(())
}

/// Makes the SQLite and PostgreSQL drivers available to `sqlx::Any` (idempotent).
pub fn install_drivers() {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
}

/// The URL without a password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration resources

/// Kind names as stored.
pub mod kind {
    pub const AGENCY: &str = "agency";
    pub const SERVICE: &str = "service";
    pub const ROUTE: &str = "route";
    pub const APP: &str = "app";
    pub const POLICY: &str = "network-policy";
    pub const TOKEN_KEY: &str = "token-key";
    pub const SIGNING_KEY: &str = "signing-key";
    pub const LIMIT: &str = "limit";
    pub const SETTINGS: &str = "settings";
    pub const BLOCK: &str = "alert-block";
    pub const REVISION: &str = "revision";
    pub const IDENTITY_KEY: &str = "identity-key";
}

fn parse_body<T: DeserializeOwned>(kind: &str, id: &str, body: &str) -> DbResult<T> {
    serde_json::from_str(body).map_err(|e| decode_err(format!("{kind} {id}: {e}")))
}

pub async fn load_snapshot(conn: &mut AnyConnection) -> DbResult<Snapshot> {
    let rows = sqlx::query("SELECT kind, id, body FROM resources ORDER BY kind, id")
        .fetch_all(&mut *conn)
        .await?;
    let mut s = Snapshot::default();
    for row in rows {
        let k: String = row.try_get("kind")?;
        let id: String = row.try_get("id")?;
        let body: String = row.try_get("body")?;
        match k.as_str() {
            kind::AGENCY => s.agencies.push(parse_body(&k, &id, &body)?),
            kind::SERVICE => s.services.push(parse_body(&k, &id, &body)?),
            kind::ROUTE => s.routes.push(parse_body(&k, &id, &body)?),
            kind::APP => s.apps.push(parse_body(&k, &id, &body)?),
            kind::POLICY => s.policies.push(parse_body(&k, &id, &body)?),
            kind::TOKEN_KEY => s.token_keys.push(parse_body(&k, &id, &body)?),
            kind::SIGNING_KEY => s.signing_keys.push(parse_body(&k, &id, &body)?),
            kind::LIMIT => s.limits.push(parse_body(&k, &id, &body)?),
            kind::SETTINGS => s.settings = parse_body(&k, &id, &body)?,
            kind::BLOCK => s.blocks.push(parse_body(&k, &id, &body)?),
            kind::REVISION => s.revisions.push(parse_body(&k, &id, &body)?),
            kind::IDENTITY_KEY => s.identity_keys.push(parse_body(&k, &id, &body)?),
            other => tracing::warn!(kind = other, id, "unknown resource kind in the store"),
        }
    }
    // Stable order for listings and rendering: by creation, then id.
    fn by_time<T>(v: &mut [T], f: impl Fn(&T) -> (i64, String)) {
        v.sort_by_key(|x| f(x));
    }
    by_time(&mut s.agencies, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.services, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.routes, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.apps, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.policies, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.token_keys, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.signing_keys, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.limits, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.blocks, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.revisions, |x| (x.created_at, x.id.clone()));
    by_time(&mut s.identity_keys, |x| (x.created_at, x.id.clone()));
    Ok(s)
}

/// The stored bodies of every resource of one kind (without loading the rest).
pub async fn resources_of_kind<T: DeserializeOwned>(pool: &AnyPool, k: &str) -> DbResult<Vec<T>> {
    let rows = sqlx::query("SELECT id, body FROM resources WHERE kind = $1 ORDER BY id")
        .bind(k)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let body: String = r.try_get("body")?;
            parse_body(k, &id, &body)
        })
        .collect()
}

/// Inserts or replaces one resource (`body = None` deletes it).
pub async fn put_resource(
    conn: &mut AnyConnection,
    kind: &str,
    id: &str,
    agency_id: Option<&str>,
    body: Option<&str>,
    now: i64,
) -> DbResult<()> {
    match body {
        Some(body) => {
            sqlx::query(
                "INSERT INTO resources (kind, id, agency_id, body, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (kind, id) DO UPDATE SET agency_id = excluded.agency_id, body = excluded.body, updated_at = excluded.updated_at",
            )
            .bind(kind)
            .bind(id)
            .bind(agency_id)
            .bind(body)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM resources WHERE kind = $1 AND id = $2")
                .bind(kind)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// The owning agency of the resource with this id (any kind), if it exists and has one.
pub async fn resource_agency(pool: &AnyPool, id: &str) -> DbResult<Option<String>> {
    let row =
        sqlx::query("SELECT agency_id FROM resources WHERE id = $1 AND agency_id IS NOT NULL")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(|r| r.try_get("agency_id")).transpose()
}

// ---------------------------------------------------------------------------------------------
// Config version

/// Bumps the version (taking the row lock that serializes commits) and returns the new one.
pub async fn bump_version(conn: &mut AnyConnection) -> DbResult<i64> {
    sqlx::query("UPDATE config_state SET version = version + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query("SELECT version FROM config_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    row.try_get("version")
}

pub async fn save_config(
    conn: &mut AnyConnection,
    version: i64,
    config: &str,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "UPDATE config_state SET config = $1, updated_at = $2 WHERE id = 1 AND version = $3",
    )
    .bind(config)
    .bind(now)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The current version and rendered config (empty before the first commit).
pub async fn current_config(pool: &AnyPool) -> DbResult<(i64, String)> {
    let row = sqlx::query("SELECT version, config FROM config_state WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok((row.try_get("version")?, row.try_get("config")?))
}

pub async fn current_version(pool: &AnyPool) -> DbResult<i64> {
    let row = sqlx::query("SELECT version FROM config_state WHERE id = 1")
        .fetch_one(pool)
        .await?;
    row.try_get("version")
}

// ---------------------------------------------------------------------------------------------
// Users and sessions

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub agency_id: Option<String>,
    pub password_hash: String,
    pub sealed_totp: Option<String>,
    pub totp_last_step: i64,
    pub failed_logins: i64,
    pub locked_until: i64,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// The account that created this one (`system` for the first-start accounts).
    pub created_by: Option<String>,
    /// Time of the last successful sign-in (0: never).
    pub last_login: i64,
    /// An admin role that the security admin has not granted yet: no sign-in until then.
    pub role_pending: bool,
}

const USER_COLS: &str = "id, username, role, agency_id, password_hash, sealed_totp, totp_last_step, failed_logins, locked_until, disabled, created_at, updated_at, created_by, last_login, role_pending";

fn user_from_row(row: &AnyRow) -> DbResult<UserRow> {
    let role: String = row.try_get("role")?;
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: role.parse().map_err(decode_err)?,
        agency_id: row.try_get("agency_id")?,
        password_hash: row.try_get("password_hash")?,
        sealed_totp: row.try_get("sealed_totp")?,
        totp_last_step: row.try_get("totp_last_step")?,
        failed_logins: row.try_get("failed_logins")?,
        locked_until: row.try_get("locked_until")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        created_by: row.try_get("created_by")?,
        last_login: row.try_get("last_login")?,
        role_pending: row.try_get::<i64, _>("role_pending")? != 0,
    })
}

pub async fn user_by_name(pool: &AnyPool, username: &str) -> DbResult<Option<UserRow>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE username = $1"
    ))
    .bind(username)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

pub async fn user_by_id(pool: &AnyPool, id: &str) -> DbResult<Option<UserRow>> {
    let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

pub async fn list_users(pool: &AnyPool) -> DbResult<Vec<UserRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users ORDER BY created_at, username"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(user_from_row).collect()
}

pub async fn count_users(pool: &AnyPool) -> DbResult<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(pool)
        .await?;
    row.try_get("n")
}

pub async fn insert_user(conn: &mut AnyConnection, u: &UserRow) -> DbResult<()> {
    sqlx::query(&format!(
        "INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(&u.id)
    .bind(&u.username)
    .bind(u.role.as_str())
    .bind(&u.agency_id)
    .bind(&u.password_hash)
    .bind(&u.sealed_totp)
    .bind(u.totp_last_step)
    .bind(u.failed_logins)
    .bind(u.locked_until)
    .bind(i64::from(u.disabled))
    .bind(u.created_at)
    .bind(u.updated_at)
    .bind(&u.created_by)
    .bind(u.last_login)
    .bind(i64::from(u.role_pending))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn update_user(conn: &mut AnyConnection, u: &UserRow) -> DbResult<()> {
    sqlx::query(
        "UPDATE users SET username = $2, role = $3, agency_id = $4, password_hash = $5, sealed_totp = $6, \
         totp_last_step = $7, failed_logins = $8, locked_until = $9, disabled = $10, updated_at = $11, role_pending = $12 WHERE id = $1",
    )
    .bind(&u.id)
    .bind(&u.username)
    .bind(u.role.as_str())
    .bind(&u.agency_id)
    .bind(&u.password_hash)
    .bind(&u.sealed_totp)
    .bind(u.totp_last_step)
    .bind(u.failed_logins)
    .bind(u.locked_until)
    .bind(i64::from(u.disabled))
    .bind(u.updated_at)
    .bind(i64::from(u.role_pending))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn delete_user(conn: &mut AnyConnection, id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a sign-in attempt's effect on the counters (no audit; the caller audits).
pub async fn set_login_state(
    pool: &AnyPool,
    id: &str,
    failed_logins: i64,
    locked_until: i64,
    totp_last_step: i64,
) -> DbResult<()> {
    sqlx::query(
        "UPDATE users SET failed_logins = $2, locked_until = $3, totp_last_step = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(failed_logins)
    .bind(locked_until)
    .bind(totp_last_step)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn insert_session(
    pool: &AnyPool,
    token_hash: &str,
    user_id: &str,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen) VALUES ($1, $2, $3, $3)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// `(user_id, last_seen)` of a session.
pub async fn session(pool: &AnyPool, token_hash: &str) -> DbResult<Option<(String, i64)>> {
    let row = sqlx::query("SELECT user_id, last_seen FROM sessions WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(pool)
        .await?;
    row.map(|r| Ok((r.try_get("user_id")?, r.try_get("last_seen")?)))
        .transpose()
}

pub async fn touch_session(pool: &AnyPool, token_hash: &str, now: i64) -> DbResult<()> {
    sqlx::query("UPDATE sessions SET last_seen = $2 WHERE token_hash = $1")
        .bind(token_hash)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_session(pool: &AnyPool, token_hash: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_user_sessions(conn: &mut AnyConnection, user_id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sign-in throttling per (user name, source)

/// `(failures, locked_until)` of one (user name, source) pair.
pub async fn throttle(
    conn: &mut AnyConnection,
    username: &str,
    source_ip: &str,
) -> DbResult<(i64, i64)> {
    let row = sqlx::query(
        "SELECT failures, locked_until FROM login_throttle WHERE username = $1 AND source_ip = $2",
    )
    .bind(username)
    .bind(source_ip)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => Ok((r.try_get("failures")?, r.try_get("locked_until")?)),
        None => Ok((0, 0)),
    }
}

pub async fn set_throttle(
    conn: &mut AnyConnection,
    username: &str,
    source_ip: &str,
    failures: i64,
    locked_until: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO login_throttle (username, source_ip, failures, locked_until) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (username, source_ip) DO UPDATE SET failures = excluded.failures, locked_until = excluded.locked_until",
    )
    .bind(username)
    .bind(source_ip)
    .bind(failures)
    .bind(locked_until)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Forgets every failure recorded against `username` (unlock, successful sign-in from a source).
pub async fn clear_throttle(
    conn: &mut AnyConnection,
    username: &str,
    source_ip: Option<&str>,
) -> DbResult<()> {
    match source_ip {
        Some(ip) => {
            sqlx::query("DELETE FROM login_throttle WHERE username = $1 AND source_ip = $2")
                .bind(username)
                .bind(ip)
                .execute(&mut *conn)
                .await?
        }
        None => {
            sqlx::query("DELETE FROM login_throttle WHERE username = $1")
                .bind(username)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pending two-person account changes

#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: String,
    pub action: String,
    pub target_id: String,
    pub fingerprint: String,
    pub requested_by: String,
    pub requested_by_id: String,
    pub requested_role: String,
    pub created_at: i64,
}

pub async fn approval_for(
    conn: &mut AnyConnection,
    action: &str,
    target_id: &str,
) -> DbResult<Option<ApprovalRow>> {
    let r = sqlx::query(
        "SELECT id, action, target_id, fingerprint, requested_by, requested_by_id, requested_role, created_at \
         FROM approvals WHERE action = $1 AND target_id = $2",
    )
    .bind(action)
    .bind(target_id)
    .fetch_optional(&mut *conn)
    .await?;
    r.map(|r| {
        Ok(ApprovalRow {
            id: r.try_get("id")?,
            action: r.try_get("action")?,
            target_id: r.try_get("target_id")?,
            fingerprint: r.try_get("fingerprint")?,
            requested_by: r.try_get("requested_by")?,
            requested_by_id: r.try_get("requested_by_id")?,
            requested_role: r.try_get("requested_role")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

pub async fn insert_approval(conn: &mut AnyConnection, a: &ApprovalRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO approvals (id, action, target_id, fingerprint, requested_by, requested_by_id, requested_role, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&a.id)
    .bind(&a.action)
    .bind(&a.target_id)
    .bind(&a.fingerprint)
    .bind(&a.requested_by)
    .bind(&a.requested_by_id)
    .bind(&a.requested_role)
    .bind(a.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn delete_approval(conn: &mut AnyConnection, id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM approvals WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Master key check value

pub async fn key_check(pool: &AnyPool) -> DbResult<Option<String>> {
    let r = sqlx::query("SELECT kcv FROM key_check WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    r.map(|r| r.try_get("kcv")).transpose()
}

/// Stores the key check value unless one is there already (a concurrent first start keeps the
/// first); returns the stored one.
pub async fn init_key_check(pool: &AnyPool, kcv: &str) -> DbResult<String> {
    sqlx::query("INSERT INTO key_check (id, kcv) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
        .bind(kcv)
        .execute(pool)
        .await?;
    Ok(key_check(pool).await?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Gateway nodes

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub config_version: i64,
}

fn node_from_row(r: &AnyRow) -> DbResult<NodeRow> {
    Ok(NodeRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        last_seen: r.try_get("last_seen")?,
        config_version: r.try_get("config_version")?,
    })
}

pub async fn list_nodes(pool: &AnyPool) -> DbResult<Vec<NodeRow>> {
    let rows = sqlx::query(
        "SELECT id, name, created_at, last_seen, config_version FROM nodes ORDER BY created_at, name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(node_from_row).collect()
}

pub async fn node_by_token(pool: &AnyPool, token_hash: &str) -> DbResult<Option<NodeRow>> {
    let row = sqlx::query(
        "SELECT id, name, created_at, last_seen, config_version FROM nodes WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(node_from_row).transpose()
}

pub async fn insert_node(
    conn: &mut AnyConnection,
    id: &str,
    name: &str,
    token_hash: &str,
    now: i64,
) -> DbResult<()> {
    sqlx::query("INSERT INTO nodes (id, name, token_hash, created_at, last_seen, config_version) VALUES ($1, $2, $3, $4, 0, 0)")
        .bind(id)
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn delete_node(conn: &mut AnyConnection, id: &str) -> DbResult<u64> {
    let r = sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected())
}

pub async fn node_seen(pool: &AnyPool, id: &str, now: i64, version: i64) -> DbResult<()> {
    sqlx::query("UPDATE nodes SET last_seen = $2, config_version = $3 WHERE id = $1")
        .bind(id)
        .bind(now)
        .bind(version)
        .execute(pool)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Admin audit rows (the chain logic is in `crate::audit`)

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub role: String,
    pub source_ip: String,
    pub action: String,
    pub resource_kind: String,
    pub resource_id: String,
    pub agency_id: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

const AUDIT_COLS: &str = "seq, at, actor, role, source_ip, action, resource_kind, resource_id, agency_id, before_json, after_json, prev_hash, hash";

fn audit_from_row(r: &AnyRow) -> DbResult<AuditRow> {
    Ok(AuditRow {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        role: r.try_get("role")?,
        source_ip: r.try_get("source_ip")?,
        action: r.try_get("action")?,
        resource_kind: r.try_get("resource_kind")?,
        resource_id: r.try_get("resource_id")?,
        agency_id: r.try_get("agency_id")?,
        before: r.try_get("before_json")?,
        after: r.try_get("after_json")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Advances the chain head (row lock) and returns `(seq, prev_hash, algorithm)` for the new
/// record.
pub async fn audit_next(conn: &mut AnyConnection) -> DbResult<(i64, String, String)> {
    sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    let r = sqlx::query("SELECT seq, hash, alg FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok((r.try_get("seq")?, r.try_get("hash")?, r.try_get("alg")?))
}

/// Sets the algorithm later records are chained with (inside the switch record's transaction).
pub async fn audit_set_alg(conn: &mut AnyConnection, alg: &str) -> DbResult<()> {
    sqlx::query("UPDATE audit_head SET alg = $1 WHERE id = 1")
        .bind(alg)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn audit_insert(conn: &mut AnyConnection, a: &AuditRow) -> DbResult<()> {
    sqlx::query(&format!(
        "INSERT INTO admin_audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(a.seq)
    .bind(a.at)
    .bind(&a.actor)
    .bind(&a.role)
    .bind(&a.source_ip)
    .bind(&a.action)
    .bind(&a.resource_kind)
    .bind(&a.resource_id)
    .bind(&a.agency_id)
    .bind(&a.before)
    .bind(&a.after)
    .bind(&a.prev_hash)
    .bind(&a.hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&a.hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A filter value bound to a SQL condition.
pub enum Bind {
    Text(String),
    Int(i64),
}

/// Builds ` WHERE a = $1 AND b >= $2` from conditions written with `?` for their one parameter.
pub fn where_clause<'a>(conds: &'a [(&str, Bind)]) -> (String, Vec<&'a Bind>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    for (i, (cond, b)) in conds.iter().enumerate() {
        sql.push_str(if i == 0 { " WHERE " } else { " AND " });
        sql.push_str(&cond.replace('?', &format!("${}", i + 1)));
        binds.push(b);
    }
    (sql, binds)
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, AnyArguments<'q>>,
    binds: &[&Bind],
) -> sqlx::query::Query<'q, Any, AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

pub async fn audit_query(
    pool: &AnyPool,
    conds: &[(&str, Bind)],
    limit: i64,
) -> DbResult<Vec<AuditRow>> {
    let (w, binds) = where_clause(conds);
    let sql = format!("SELECT {AUDIT_COLS} FROM admin_audit{w} ORDER BY seq DESC LIMIT {limit}");
    let q = bind_all(sqlx::query(&sql), &binds);
    let rows = q.fetch_all(pool).await?;
    rows.iter().map(audit_from_row).collect()
}

/// Records with `seq > after`, oldest first (for verification).
pub async fn audit_range(pool: &AnyPool, after: i64, limit: i64) -> DbResult<Vec<AuditRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {AUDIT_COLS} FROM admin_audit WHERE seq > $1 ORDER BY seq LIMIT {limit}"
    ))
    .bind(after)
    .fetch_all(pool)
    .await?;
    rows.iter().map(audit_from_row).collect()
}

pub async fn audit_head(pool: &AnyPool) -> DbResult<(i64, String)> {
    let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok((r.try_get("seq")?, r.try_get("hash")?))
}

// ---------------------------------------------------------------------------------------------
// Request audit (ingested from gateways)

#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestAuditRow {
    pub seq: i64,
    pub node: String,
    pub segment: String,
    pub line: i64,
    pub received_at: i64,
    pub token_node: String,
    pub record: serde_json::Value,
}

/// Inserts records `(line, fields…)`; existing `(node, segment, line)` keys are left as they are.
/// Returns the indices (into `records`, ascending) of those that were new.
pub async fn request_audit_insert(
    conn: &mut AnyConnection,
    node: &str,
    segment: &str,
    token_node: &str,
    now: i64,
    records: &[(i64, RequestFields, String)],
) -> DbResult<Vec<usize>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("UPDATE request_audit_head SET seq = seq + $1 WHERE id = 1")
        .bind(records.len() as i64)
        .execute(&mut *conn)
        .await?;
    let r = sqlx::query("SELECT seq FROM request_audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let last: i64 = r.try_get("seq")?;
    let first = last - records.len() as i64 + 1;
    let mut inserted = Vec::new();
    for (i, (line, f, record)) in records.iter().enumerate() {
        let res = sqlx::query(
            "INSERT INTO request_audit (node, segment, line, seq, received_at, token_node, rec_time, request_id, agency, service, route, channel, app, user_id, status, decision, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT (node, segment, line) DO NOTHING",
        )
        .bind(node)
        .bind(segment)
        .bind(*line)
        .bind(first + i as i64)
        .bind(now)
        .bind(token_node)
        .bind(&f.time)
        .bind(&f.request_id)
        .bind(&f.agency)
        .bind(&f.service)
        .bind(&f.route)
        .bind(&f.channel)
        .bind(&f.app)
        .bind(&f.user)
        .bind(f.status)
        .bind(&f.decision)
        .bind(record)
        .execute(&mut *conn)
        .await?;
        if res.rows_affected() > 0 {
            inserted.push(i);
        }
    }
    Ok(inserted)
}

/// The searchable fields of a request record.
#[derive(Debug, Clone, Default)]
pub struct RequestFields {
    pub time: Option<String>,
    pub request_id: Option<String>,
    pub agency: Option<String>,
    pub service: Option<String>,
    pub route: Option<String>,
    pub channel: Option<String>,
    pub app: Option<String>,
    pub user: Option<String>,
    pub status: Option<i64>,
    pub decision: Option<String>,
}

pub async fn request_audit_query(
    pool: &AnyPool,
    conds: &[(&str, Bind)],
    limit: i64,
) -> DbResult<Vec<RequestAuditRow>> {
    let (w, binds) = where_clause(conds);
    let sql = format!(
        "SELECT seq, node, segment, line, received_at, token_node, record FROM request_audit{w} ORDER BY seq DESC LIMIT {limit}"
    );
    let q = bind_all(sqlx::query(&sql), &binds);
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            let record: String = r.try_get("record")?;
            Ok(RequestAuditRow {
                seq: r.try_get("seq")?,
                node: r.try_get("node")?,
                segment: r.try_get("segment")?,
                line: r.try_get("line")?,
                received_at: r.try_get("received_at")?,
                token_node: r.try_get("token_node")?,
                record: serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record)),
            })
        })
        .collect()
}
