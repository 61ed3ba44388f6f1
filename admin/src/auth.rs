//! Accounts and sessions: initial accounts, sign-in (password, lockout, TOTP), bearer sessions
//! with an idle timeout, and the request extractors that turn a bearer token into a
//! [`Principal`] (people) or a [`Node`] (gateways).
//!
//! Rules: argon2id passwords under the rule of `crate::password` (complexity, no common
//! passwords); 5 failed sign-ins in a row from one source address lock that user name for that
//! source for 15 minutes (a wrong or missing TOTP code counts as a failure; other sources are not
//! affected, so nobody can lock out the well-known accounts from afar); every failure answers
//! the same `401 bad_credentials`, whatever was wrong; the three admin roles need a TOTP code
//! (RFC 6238), sent with the password, and a code is accepted once only; an admin account
//! without a TOTP secret gets one at its first correct sign-in, shown to its owner only there;
//! a session ends after 30 minutes without a request. Session and node tokens are stored as
//! SHA-256 only.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::{App, AppState};
use crate::authz::Principal;
use crate::commit::{begin_write, Actor, AuditTarget};
use crate::crypto::{random_array, random_token, sha256_hex};
use crate::error::{ApiError, ApiResult};
use crate::model::Role;
use crate::store::{self, UserRow};
use crate::{password, totp};

pub const IDLE_TIMEOUT_SECS: i64 = 30 * 60;
pub const MAX_FAILURES: i64 = 5;
pub const LOCKOUT_SECS: i64 = 15 * 60;
/// Issuer shown in authenticator apps.
pub const TOTP_ISSUER: &str = "Fenfa";

/// One account to create on first start.
#[derive(Debug, Clone)]
pub struct InitialAccount {
    pub username: String,
    pub role: Role,
    /// Generated (and printed once) when absent.
    pub password: Option<String>,
    /// Base32 TOTP secret; generated (and printed once) when absent.
    pub totp_secret: Option<String>,
}

/// The initial accounts: one per admin role.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub accounts: Vec<InitialAccount>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self::from_lookup(|_| None)
    }
}

impl Bootstrap {
    /// `FENFA_ADMIN_USERNAME` / `FENFA_ADMIN_PASSWORD` / `FENFA_ADMIN_TOTP_SECRET` (account
    /// `admin` unless named, system-admin), the same with `FENFA_SECURITY_` (`security`,
    /// security-admin) and `FENFA_AUDIT_` (`auditor`, audit-admin).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let acc = |user: &str, role, prefix: &str| InitialAccount {
            username: get(&format!("FENFA_{prefix}_USERNAME")).unwrap_or_else(|| user.into()),
            role,
            password: get(&format!("FENFA_{prefix}_PASSWORD")),
            totp_secret: get(&format!("FENFA_{prefix}_TOTP_SECRET")),
        };
        Self {
            accounts: vec![
                acc("admin", Role::SystemAdmin, "ADMIN"),
                acc("security", Role::SecurityAdmin, "SECURITY"),
                acc("auditor", Role::AuditAdmin, "AUDIT"),
            ],
        }
    }
}

/// Credentials generated at first start, to be shown once.
#[derive(Debug, Clone)]
pub struct Issued {
    pub username: String,
    pub role: Role,
    pub password: Option<String>,
    pub totp_secret: Option<String>,
}

impl Issued {
    pub fn otpauth(&self) -> Option<String> {
        let secret = totp::base32_decode(self.totp_secret.as_deref()?)?;
        Some(totp::otpauth_uri(TOTP_ISSUER, &self.username, &secret))
    }
}

/// Creates the initial accounts if there are no accounts at all.
pub async fn bootstrap(app: &App) -> Result<Vec<Issued>, String> {
    let n = store::count_users(&app.store.pool)
        .await
        .map_err(|e| e.to_string())?;
    if n > 0 {
        return Ok(Vec::new());
    }
    let mut issued = Vec::new();
    for acc in &app.opts.bootstrap.accounts {
        crate::model::Name::try_from(acc.username.clone())
            .map_err(|e| format!("the initial account name `{}`: {e}", acc.username))?;
        let (pw, pw_generated) = match &acc.password {
            Some(p) => {
                password::check_complexity(p, &acc.username)
                    .map_err(|e| format!("the initial password of `{}` {e}", acc.username))?;
                (p.clone(), false)
            }
            None => (password::generate(), true),
        };
        let (secret, totp_generated) = match &acc.totp_secret {
            Some(s) => (
                totp::base32_decode(s)
                    .filter(|b| b.len() >= 10)
                    .ok_or_else(|| {
                        format!(
                            "the TOTP secret of `{}` is not base32 of at least 10 bytes",
                            acc.username
                        )
                    })?,
                false,
            ),
            None => (random_array::<20>().to_vec(), true),
        };
        let hash = password::hash(&pw)?;
        let now = app.now();
        let id = crate::crypto::new_id("usr");
        let user = UserRow {
            id: id.clone(),
            username: acc.username.clone(),
            role: acc.role,
            agency_id: None,
            password_hash: hash,
            sealed_totp: Some(app.master.seal(&format!("totp:{id}"), &secret)),
            totp_last_step: 0,
            failed_logins: 0,
            locked_until: 0,
            disabled: false,
            created_at: now,
            updated_at: now,
            created_by: Some("system".into()),
            last_login: 0,
            role_pending: false,
        };
        let mut w = begin_write(app).await.map_err(|e| e.to_string())?;
        store::insert_user(&mut w.tx, &user)
            .await
            .map_err(|e| e.to_string())?;
        w.finish(
            &Actor::system(),
            "user.create",
            AuditTarget {
                kind: "user".into(),
                id: id.clone(),
                after: Some(user_view(&user, now)),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if pw_generated || totp_generated {
            issued.push(Issued {
                username: acc.username.clone(),
                role: acc.role,
                password: pw_generated.then_some(pw),
                totp_secret: totp_generated.then(|| totp::base32_encode(&secret)),
            });
        }
    }
    Ok(issued)
}

/// An account as the API shows it (no hash, no TOTP secret).
pub fn user_view(u: &UserRow, now: i64) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "role": u.role,
        "agency_id": u.agency_id,
        "role_granted": !u.role_pending,
        "disabled": u.disabled,
        "locked": u.locked_until > now,
        "totp_enrolled": u.sealed_totp.is_some(),
        "created_at": u.created_at,
        "created_by": u.created_by,
        "last_login": (u.last_login > 0).then_some(u.last_login),
        "updated_at": u.updated_at,
    })
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub fn source_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "-".into())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let token = bearer(parts).ok_or_else(|| {
            ApiError::Unauthorized(
                "unauthenticated",
                "sign in first: no bearer session token".into(),
            )
        })?;
        let hash = sha256_hex(token.as_bytes());
        let pool = &app.store.pool;
        let now = app.now();
        let (user_id, last_seen) = store::session(pool, &hash).await?.ok_or_else(|| {
            ApiError::Unauthorized(
                "unauthenticated",
                "the session is unknown or has ended".into(),
            )
        })?;
        if now - last_seen > IDLE_TIMEOUT_SECS {
            store::delete_session(pool, &hash).await?;
            return Err(ApiError::Unauthorized(
                "session_expired",
                "the session expired after 30 minutes without activity; sign in again".into(),
            ));
        }
        let user = match store::user_by_id(pool, &user_id).await? {
            Some(u) if !u.disabled => u,
            _ => {
                store::delete_session(pool, &hash).await?;
                return Err(ApiError::Unauthorized(
                    "unauthenticated",
                    "the account is disabled or gone".into(),
                ));
            }
        };
        store::touch_session(pool, &hash, now).await?;
        Ok(Principal {
            user_id: user.id,
            username: user.username,
            role: user.role,
            agency_id: user.agency_id,
            source_ip: source_ip(parts),
            session: hash,
        })
    }
}

/// A gateway node, authenticated by its node token.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    /// The name the node was registered with: the only node its batches may be filed under.
    pub name: String,
    pub source_ip: String,
}

impl FromRequestParts<AppState> for Node {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::Unauthorized("unauthenticated", "a node token is required".into())
        })?;
        let row = store::node_by_token(&app.store.pool, &sha256_hex(token.as_bytes()))
            .await?
            .ok_or_else(|| {
                ApiError::Unauthorized("unauthenticated", "unknown node token".into())
            })?;
        Ok(Node {
            id: row.id,
            name: row.name,
            source_ip: source_ip(parts),
        })
    }
}

/// The client address, for handlers that have no principal (sign-in).
pub struct SourceIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SourceIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(SourceIp(source_ip(parts)))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub totp: Option<String>,
}

fn bad_credentials() -> ApiError {
    ApiError::Unauthorized(
        "bad_credentials",
        "the user name, password or TOTP code is wrong".into(),
    )
}

/// `POST /v1/auth/login`.
pub async fn login(
    State(app): State<AppState>,
    SourceIp(ip): SourceIp,
    crate::api::Input(input): crate::api::Input<LoginInput>,
) -> ApiResult<Json<Value>> {
    let pool = &app.store.pool;
    // What an unknown caller typed goes into the audit record: keep it short.
    let typed: String = input.username.chars().take(64).collect();
    let actor = |role: &str| Actor {
        name: typed.clone(),
        role: role.to_string(),
        source_ip: ip.clone(),
    };
    let target = |u: Option<&UserRow>| AuditTarget {
        kind: "session".into(),
        id: u.map(|u| u.id.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let now = app.now();
    // The lockout belongs to (typed name, source): the same answer for names that do not exist.
    let (failures, locked_until) = {
        let mut conn = pool.acquire().await?;
        store::throttle(&mut conn, &typed, &ip).await?
    };
    let user = store::user_by_name(pool, &input.username).await?;
    let role = user.as_ref().map(|u| u.role.as_str()).unwrap_or("-");
    if locked_until > now {
        let w = begin_write(&app).await?;
        w.finish(&actor(role), "auth.login_locked", target(user.as_ref()))
            .await?;
        return Err(ApiError::Locked(locked_until - now));
    }
    // Same work for unknown names as for real accounts, so timing does not tell which exist.
    let (pw, hash) = (
        input.password.clone(),
        user.as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_string()),
    );
    let pw_ok = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
        .await
        .map_err(ApiError::internal)?
        && user.is_some();
    let usable = user
        .as_ref()
        .is_some_and(|u| !u.disabled && !u.role_pending);
    if let (Some(user), true, true) = (&user, pw_ok, usable) {
        if user.role.is_admin() && user.sealed_totp.is_none() {
            return enrol_totp(&app, user, &ip, &typed).await;
        }
    }
    let mut step = user.as_ref().map(|u| u.totp_last_step).unwrap_or(0);
    let mut second_ok = true;
    if let (Some(user), true) = (&user, pw_ok) {
        if user.role.is_admin() {
            second_ok = false;
            if let (Some(code), Some(sealed)) = (&input.totp, &user.sealed_totp) {
                let secret = app
                    .master
                    .open(&format!("totp:{}", user.id), sealed)
                    .map_err(ApiError::internal)?;
                if let Some(s) = totp::verify(&secret, code, now) {
                    // A code is good once: refuse a replay of this or an older step.
                    if s > user.totp_last_step {
                        step = s;
                        second_ok = true;
                    }
                }
            }
        }
    }
    if let (Some(user), true, true, true) = (&user, usable, pw_ok, second_ok) {
        let token = random_token();
        let mut w = begin_write(&app).await?;
        sqlx::query("UPDATE users SET failed_logins = 0, totp_last_step = $2, last_login = $3 WHERE id = $1")
            .bind(&user.id)
            .bind(step)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        store::clear_throttle(&mut w.tx, &typed, Some(&ip)).await?;
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, last_seen) VALUES ($1, $2, $3, $3)")
            .bind(sha256_hex(token.as_bytes()))
            .bind(&user.id)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        w.finish(&actor(role), "auth.login", target(Some(user)))
            .await?;
        let mut view = user_view(user, now);
        view["last_login"] = json!(now);
        return Ok(Json(json!({
            "token": token,
            "token_type": "Bearer",
            "idle_timeout_seconds": IDLE_TIMEOUT_SECS,
            "user": view,
        })));
    }
    let failures = failures + 1;
    let (failures, locked_until) = if failures >= MAX_FAILURES {
        (0, now + LOCKOUT_SECS)
    } else {
        (failures, 0)
    };
    let mut w = begin_write(&app).await?;
    store::set_throttle(&mut w.tx, &typed, &ip, failures, locked_until).await?;
    if let Some(user) = &user {
        // The account shows as locked while any source is locked out of it.
        sqlx::query("UPDATE users SET locked_until = $2 WHERE id = $1 AND locked_until < $2")
            .bind(&user.id)
            .bind(locked_until)
            .execute(&mut *w.tx)
            .await?;
    }
    let action = if locked_until > 0 {
        "auth.lockout"
    } else {
        "auth.login_failed"
    };
    w.finish(&actor(role), action, target(user.as_ref()))
        .await?;
    Err(bad_credentials())
}

/// The first correct sign-in of an admin account without a TOTP secret: a new secret, shown
/// here once, to the one who knows the password. No session yet: sign in again with a code.
async fn enrol_totp(app: &App, user: &UserRow, ip: &str, typed: &str) -> ApiResult<Json<Value>> {
    let secret = random_array::<20>();
    let mut w = begin_write(app).await?;
    let n = sqlx::query("UPDATE users SET sealed_totp = $2, totp_last_step = 0 WHERE id = $1 AND sealed_totp IS NULL")
        .bind(&user.id)
        .bind(app.master.seal(&format!("totp:{}", user.id), &secret))
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(bad_credentials());
    }
    store::clear_throttle(&mut w.tx, typed, Some(ip)).await?;
    w.finish(
        &Actor {
            name: user.username.clone(),
            role: user.role.as_str().to_string(),
            source_ip: ip.to_string(),
        },
        "auth.totp_enrolled",
        AuditTarget {
            kind: "user".into(),
            id: user.id.clone(),
            ..Default::default()
        },
    )
    .await?;
    Ok(Json(json!({
        "totp_enrollment": {
            "secret": totp::base32_encode(&secret),
            "otpauth_uri": totp::otpauth_uri(TOTP_ISSUER, &user.username, &secret),
        },
        "message": "add this secret to your authenticator app now (it is shown only this once), then sign in again with a code (`totp`)",
    })))
}

/// `POST /v1/auth/logout`.
pub async fn logout(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<axum::http::StatusCode> {
    let mut w = begin_write(&app).await?;
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(&p.session)
        .execute(&mut *w.tx)
        .await?;
    w.finish(
        &Actor::from(&p),
        "auth.logout",
        AuditTarget {
            kind: "session".into(),
            id: p.user_id.clone(),
            ..Default::default()
        },
    )
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `GET /v1/auth/me`.
pub async fn me(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    let u = store::user_by_id(&app.store.pool, &p.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_view(&u, app.now())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /v1/auth/password`: change one's own password.
pub async fn change_password(
    State(app): State<AppState>,
    p: Principal,
    crate::api::Input(input): crate::api::Input<PasswordChange>,
) -> ApiResult<axum::http::StatusCode> {
    let u = store::user_by_id(&app.store.pool, &p.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let (pw, hash) = (input.current_password.clone(), u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        return Err(ApiError::invalid(
            "current_password",
            "is not the current password",
        ));
    }
    password::check_complexity(&input.new_password, &u.username)
        .map_err(|m| ApiError::invalid("new_password", m))?;
    let newpw = input.new_password.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&newpw))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut w = begin_write(&app).await?;
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
        .bind(&u.id)
        .bind(&hash)
        .bind(w.now)
        .execute(&mut *w.tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
        .bind(&u.id)
        .bind(&p.session)
        .execute(&mut *w.tx)
        .await?;
    w.finish(
        &Actor::from(&p),
        "user.password_change",
        AuditTarget {
            kind: "user".into(),
            id: u.id.clone(),
            agency_id: u.agency_id.clone(),
            ..Default::default()
        },
    )
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
