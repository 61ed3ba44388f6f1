//! What a sign-in hands out: the unified access token's claims, refresh tokens (rotating,
//! revocable, bound to the app), and H5 tickets (single use, a minute long).
//!
//! Refresh tokens and tickets are random (32 bytes), stored as their SHA-256. Using a refresh
//! token marks it used and issues the next of its *family*; presenting a used one again means
//! it was copied, so the whole family is revoked (OAuth 2.0 Security BCP, refresh token
//! rotation). Each step is one conditional `UPDATE`, so two concurrent uses cannot both win.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sqlx::{AnyPool, Row};

use crate::crypto::{new_id, random_array, sha256_hex};

/// The claims of a unified token (`jwt-auth` reads `sub`, `chn`, `app`, `jti`, `exp`).
pub fn claims(
    issuer: &str,
    audience: &str,
    user: &str,
    channel: &str,
    app_id: &str,
    now: i64,
    ttl: i64,
) -> Map<String, Value> {
    let v = json!({
        "iss": issuer, "aud": audience, "sub": user, "chn": channel, "app": app_id,
        "iat": now, "nbf": now, "exp": now + ttl, "jti": new_id("jt"),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

fn secret(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_array::<32>()))
}

/// Who a refresh token or ticket was issued to.
#[derive(Debug, Clone)]
pub struct Holder {
    pub user: String,
    pub channel: String,
    pub app_id: String,
}

/// A new refresh token of `family` (a new family when `None`).
pub async fn issue_refresh(
    pool: &AnyPool,
    h: &Holder,
    family: Option<&str>,
    now: i64,
    ttl: i64,
) -> Result<String, sqlx::Error> {
    let token = secret("rt_");
    let family = family.map_or_else(|| new_id("rf"), str::to_string);
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family, user_id, channel, app_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(sha256_hex(token.as_bytes()))
    .bind(&family)
    .bind(&h.user)
    .bind(&h.channel)
    .bind(&h.app_id)
    .bind(now)
    .bind(now + ttl)
    .execute(pool)
    .await?;
    Ok(token)
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefused {
    /// Unknown, expired, revoked, or of another app.
    Invalid,
    /// Used before: its family is now revoked.
    Reused,
}

/// Uses a refresh token of `app_id`: marks it used and returns its holder and family.
pub async fn use_refresh(
    pool: &AnyPool,
    token: &str,
    app_id: &str,
    now: i64,
) -> Result<Result<(Holder, String), RefreshRefused>, sqlx::Error> {
    let hash = sha256_hex(token.as_bytes());
    let won = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND app_id = $3 \
         AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(&hash)
    .bind(app_id)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    let row = sqlx::query(
        "SELECT family, user_id, channel, app_id, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Err(RefreshRefused::Invalid));
    };
    let family: String = row.try_get("family")?;
    let holder = Holder {
        user: row.try_get("user_id")?,
        channel: row.try_get("channel")?,
        app_id: row.try_get("app_id")?,
    };
    if won {
        return Ok(Ok((holder, family)));
    }
    let used: Option<i64> = row.try_get("used_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    if used.is_some() && revoked.is_none() && holder.app_id == app_id {
        revoke_family(pool, &family, now).await?;
        return Ok(Err(RefreshRefused::Reused));
    }
    Ok(Err(RefreshRefused::Invalid))
}

/// Revokes every refresh token of a family.
pub async fn revoke_family(pool: &AnyPool, family: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(family)
    .execute(pool)
    .await?;
    Ok(())
}

/// Revokes the family of a refresh token of `app_id` (sign-out); false when unknown.
pub async fn revoke(
    pool: &AnyPool,
    token: &str,
    app_id: &str,
    now: i64,
) -> Result<Option<Holder>, sqlx::Error> {
    let row = sqlx::query("SELECT family, user_id, channel, app_id FROM refresh_tokens WHERE token_hash = $1 AND app_id = $2")
        .bind(sha256_hex(token.as_bytes()))
        .bind(app_id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let family: String = row.try_get("family")?;
    revoke_family(pool, &family, now).await?;
    Ok(Some(Holder {
        user: row.try_get("user_id")?,
        channel: row.try_get("channel")?,
        app_id: row.try_get("app_id")?,
    }))
}

/// A new H5 ticket for `h`, valid [`super::TICKET_TTL`] seconds.
pub async fn issue_ticket(pool: &AnyPool, h: &Holder, now: i64) -> Result<String, sqlx::Error> {
    let ticket = secret("tk_");
    sqlx::query(
        "INSERT INTO h5_tickets (ticket_hash, user_id, channel, app_id, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(sha256_hex(ticket.as_bytes()))
    .bind(&h.user)
    .bind(&h.channel)
    .bind(&h.app_id)
    .bind(now + super::TICKET_TTL)
    .execute(pool)
    .await?;
    Ok(ticket)
}

/// Redeems a ticket once; `None` when unknown, used or expired.
pub async fn redeem_ticket(
    pool: &AnyPool,
    ticket: &str,
    now: i64,
) -> Result<Option<Holder>, sqlx::Error> {
    let hash = sha256_hex(ticket.as_bytes());
    let won = sqlx::query(
        "UPDATE h5_tickets SET used_at = $1 WHERE ticket_hash = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(&hash)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if !won {
        return Ok(None);
    }
    let row = sqlx::query("SELECT user_id, channel, app_id FROM h5_tickets WHERE ticket_hash = $1")
        .bind(&hash)
        .fetch_one(pool)
        .await?;
    Ok(Some(Holder {
        user: row.try_get("user_id")?,
        channel: row.try_get("channel")?,
        app_id: row.try_get("app_id")?,
    }))
}
