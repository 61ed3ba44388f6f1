//! Automatic response: a temporary deny of a client IP on every gateway.
//!
//! A deny is a configuration resource ([`crate::model::Block`], kind `alert-block`) committed
//! through the ordinary pipeline ([`crate::commit::commit`]): it is checked, recorded in the admin
//! audit, rendered into a global `ip-restriction` deny list, and reaches every gateway with the
//! next config version (remote gateways long-poll; the in-process one follows the gateway file).
//! [`expire`] lifts denies whose TTL has passed (by the app clock); a security admin may lift one
//! earlier (`DELETE /v1/alert-blocks/{id}`). Both are commits too.

use std::net::IpAddr;

use crate::app::App;
use crate::commit::{commit, Actor, Committed, Touched};
use crate::error::{ApiError, ApiResult};
use crate::model::Block;
use crate::store::kind;

/// Most denies in force at once (the deny list is part of every gateway's config).
pub const MAX_BLOCKS: usize = 1000;

/// Denies `ip` for `ttl_secs` because of alert `alert_id`. An IP already denied is left as it is.
pub async fn deny(
    app: &App,
    ip: &str,
    ttl_secs: i64,
    alert_id: &str,
    rule: &str,
) -> ApiResult<Option<Committed>> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::invalid("ip", "not an IP address"))?;
    let ip = ip.to_canonical().to_string();
    let snap = crate::commit::snapshot(app).await?;
    if snap.blocks.iter().any(|b| b.ip == ip) {
        return Ok(None);
    }
    if snap.blocks.len() >= MAX_BLOCKS {
        return Err(ApiError::Conflict(format!(
            "{MAX_BLOCKS} temporary denies are in force already"
        )));
    }
    let alert_id = alert_id.to_string();
    let rule = rule.to_string();
    let c = commit(
        app,
        &Actor::system(),
        "alert-block.create",
        move |s, now| {
            let id = crate::crypto::new_id("blk");
            s.blocks.push(Block {
                id: id.clone(),
                ip,
                alert_id: Some(alert_id),
                rule,
                created_at: now,
                expires_at: now + ttl_secs,
            });
            Ok(Touched::new(kind::BLOCK, id))
        },
    )
    .await?;
    Ok(Some(c))
}

/// Lifts the deny `id` (`action`: `alert-block.lift` by a person, `alert-block.expire`).
pub async fn lift(app: &App, who: &Actor, id: &str, action: &str) -> ApiResult<Committed> {
    let id = id.to_string();
    commit(app, who, action, move |s, _| {
        let before = s.blocks.len();
        s.blocks.retain(|b| b.id != id);
        if s.blocks.len() == before {
            return Err(ApiError::not_found("temporary deny"));
        }
        Ok(Touched::new(kind::BLOCK, id))
    })
    .await
}

/// Lifts every deny whose TTL has passed.
pub async fn expire(app: &App) -> ApiResult<usize> {
    let now = app.now();
    let blocks: Vec<Block> = crate::store::resources_of_kind(&app.store.pool, kind::BLOCK).await?;
    let mut n = 0;
    for b in blocks.iter().filter(|b| b.expires_at <= now) {
        match lift(app, &Actor::system(), &b.id, "alert-block.expire").await {
            Ok(_) => n += 1,
            // Lifted meanwhile (another process, a person).
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
