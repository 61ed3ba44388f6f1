//! Who a channel identity is on the platform, and the sign-in audit.
//!
//! A channel user id is stored only as an HMAC under a key derived from the master key
//! ([`crate::crypto::MasterKey::pseudonym`]), per channel and app for the subject (WeChat and
//! Baidu ids are per app) and per channel for WeChat's union id. The first sign-in of a
//! subject makes a platform user, unless its union id already belongs to one (the same person
//! in two WeChat apps of one open platform account). Linking across channels (a later
//! real-name binding) would add rows pointing at an existing user; it is not offered yet.

use sqlx::{AnyPool, Row};

use crate::crypto::{new_id, MasterKey};
use crate::model::Channel;

/// The pseudonyms of a channel identity.
pub struct Pseudonyms {
    pub subject: String,
    pub union: Option<String>,
}

pub fn pseudonyms(
    master: &MasterKey,
    channel: Channel,
    app_id: &str,
    subject: &str,
    union: Option<&str>,
) -> Pseudonyms {
    Pseudonyms {
        subject: master
            .pseudonym(format!("subject\0{}\0{app_id}\0{subject}", channel.as_str()).as_bytes()),
        union: union
            .map(|u| master.pseudonym(format!("union\0{}\0{u}", channel.as_str()).as_bytes())),
    }
}

/// The platform user of a channel identity, made at its first sign-in.
pub async fn link(
    pool: &AnyPool,
    channel: Channel,
    app_id: &str,
    p: &Pseudonyms,
    now: i64,
) -> Result<String, sqlx::Error> {
    let find = "SELECT user_id FROM channel_identities WHERE channel = $1 AND subject_hash = $2";
    if let Some(row) = sqlx::query(find)
        .bind(channel.as_str())
        .bind(&p.subject)
        .fetch_optional(pool)
        .await?
    {
        sqlx::query("UPDATE channel_identities SET last_seen_at = $1 WHERE channel = $2 AND subject_hash = $3")
            .bind(now)
            .bind(channel.as_str())
            .bind(&p.subject)
            .execute(pool)
            .await?;
        return row.try_get("user_id");
    }
    let mut user = None;
    if let Some(u) = &p.union {
        user = sqlx::query("SELECT user_id FROM channel_identities WHERE channel = $1 AND union_hash = $2 ORDER BY created_at LIMIT 1")
            .bind(channel.as_str())
            .bind(u)
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get::<String, _>("user_id"))
            .transpose()?;
    }
    let user = match user {
        Some(u) => u,
        None => {
            let id = new_id("u");
            sqlx::query("INSERT INTO platform_users (id, created_at) VALUES ($1, $2)")
                .bind(&id)
                .bind(now)
                .execute(pool)
                .await?;
            id
        }
    };
    // Two first sign-ins of one subject at once: one row wins, both get its user.
    sqlx::query(
        "INSERT INTO channel_identities (channel, subject_hash, union_hash, app_id, user_id, created_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (channel, subject_hash) DO NOTHING",
    )
    .bind(channel.as_str())
    .bind(&p.subject)
    .bind(p.union.as_deref())
    .bind(app_id)
    .bind(&user)
    .bind(now)
    .execute(pool)
    .await?;
    sqlx::query(find)
        .bind(channel.as_str())
        .bind(&p.subject)
        .fetch_one(pool)
        .await?
        .try_get("user_id")
}

/// One line of the sign-in audit: what happened, for which app, to whom (a platform user id,
/// never a channel id), and how it ended (`ok` or the error code the client got).
pub struct Event<'a> {
    pub event: &'a str,
    pub channel: &'a str,
    pub app_id: &'a str,
    pub user_id: Option<&'a str>,
    pub outcome: &'a str,
}

pub async fn record(pool: &AnyPool, e: &Event<'_>, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signin_events (id, at, event, channel, app_id, user_id, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id("se"))
    .bind(now)
    .bind(e.event)
    .bind(e.channel)
    .bind(e.app_id)
    .bind(e.user_id)
    .bind(e.outcome)
    .execute(pool)
    .await?;
    Ok(())
}

/// The newest sign-in events, for the audit admin.
pub async fn recent(pool: &AnyPool, limit: i64) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at, event, channel, app_id, user_id, outcome FROM signin_events ORDER BY at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let at: i64 = r.try_get("at")?;
            Ok(serde_json::json!({
                "at": at,
                "time": crate::local_time::display(at),
                "event": r.try_get::<String, _>("event")?,
                "channel": r.try_get::<String, _>("channel")?,
                "app_id": r.try_get::<String, _>("app_id")?,
                "user_id": r.try_get::<Option<String>, _>("user_id")?,
                "outcome": r.try_get::<String, _>("outcome")?,
            }))
        })
        .collect()
}
