//! `POST /v1/secrets/re-encrypt`: re-seals every stored secret with the platform's current
//! cipher (`settings.algorithms.secrets`), online — the control plane keeps serving, and a
//! secret opens under either cipher at every moment (`crate::crypto`), so nothing waits for it.
//!
//! What it covers: upstream signing secrets and HMAC token keys (one config commit, audited per
//! key), TOTP secrets of accounts, alert destinations' URLs and secrets, and the stored rendered
//! config (one transaction with one `secrets.re-encrypt` audit record naming the counts). A row
//! changed concurrently (a TOTP re-enrolled meanwhile) is left as it now is: each update only
//! applies if the row still holds the value that was re-sealed.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use sqlx::Row;

use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::{self, commit, Actor, AuditTarget, Touched};
use crate::crypto::{MasterKey, SecretCipher};
use crate::error::{ApiError, ApiResult};
use crate::store::kind;

/// `sealed` re-sealed with `cipher` for `context`, or `None` if it already is.
fn reseal(
    master: &MasterKey,
    cipher: SecretCipher,
    context: &str,
    sealed: &str,
) -> ApiResult<Option<String>> {
    if SecretCipher::of(sealed) == Some(cipher) {
        return Ok(None);
    }
    let plain = master
        .open(context, sealed)
        .map_err(|e| ApiError::internal(format!("{context}: {e}")))?;
    Ok(Some(master.seal_with(cipher, context, &plain)))
}

/// Re-seals one text column of `table` row by row (compare-and-set on the old value).
async fn reseal_column(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    master: &MasterKey,
    cipher: SecretCipher,
    table: &str,
    column: &str,
    context: impl Fn(&str) -> String,
) -> ApiResult<u64> {
    let rows = sqlx::query(&format!(
        "SELECT id, {column} AS sealed FROM {table} WHERE {column} IS NOT NULL"
    ))
    .fetch_all(&mut **tx)
    .await?;
    let mut n = 0;
    for r in rows {
        let id: String = r.try_get("id")?;
        let sealed: String = r.try_get("sealed")?;
        if let Some(new) = reseal(master, cipher, &context(&id), &sealed)? {
            n += sqlx::query(&format!(
                "UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3"
            ))
            .bind(new)
            .bind(&id)
            .bind(&sealed)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
    }
    Ok(n)
}

pub async fn reencrypt(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::SettingsWrite)?;
    let actor = Actor::from(&p);
    let snap = commit::snapshot(&app).await?;
    let cipher = snap.settings.secret_cipher();
    app.master.set_cipher(cipher);
    let master = &app.master;

    // The snapshot's secrets: one commit, one audit record per key.
    let stale_signing: Vec<String> = snap
        .signing_keys
        .iter()
        .filter(|k| SecretCipher::of(&k.sealed_secret) != Some(cipher))
        .map(|k| k.id.clone())
        .collect();
    let stale_token: Vec<String> = snap
        .token_keys
        .iter()
        .filter(|k| {
            k.sealed_k
                .as_deref()
                .is_some_and(|s| SecretCipher::of(s) != Some(cipher))
        })
        .map(|k| k.id.clone())
        .collect();
    let identity = snap
        .identity_keys
        .iter()
        .filter(|k| SecretCipher::of(&k.sealed_private) != Some(cipher))
        .count();
    let app_signin = snap
        .apps
        .iter()
        .filter(|a| {
            a.sealed_signin
                .as_deref()
                .is_some_and(|s| SecretCipher::of(s) != Some(cipher))
        })
        .count();
    let (signing, token) = (stale_signing.len(), stale_token.len());
    if signing + token + identity + app_signin > 0 {
        commit(&app, &actor, "secrets.re-encrypt", |s, _| {
            let mut touched: Vec<(&'static str, String)> = Vec::new();
            for k in s.signing_keys.iter_mut() {
                let context = format!("signing-key:{}", k.id);
                if let Some(new) = reseal(master, cipher, &context, &k.sealed_secret)? {
                    k.sealed_secret = new;
                    touched.push((kind::SIGNING_KEY, k.id.clone()));
                }
            }
            for k in s.token_keys.iter_mut() {
                let Some(sealed) = k.sealed_k.as_deref() else {
                    continue;
                };
                let context = format!("token-key:{}", k.id);
                if let Some(new) = reseal(master, cipher, &context, sealed)? {
                    k.sealed_k = Some(new);
                    touched.push((kind::TOKEN_KEY, k.id.clone()));
                }
            }
            for k in s.identity_keys.iter_mut() {
                let context = format!("identity-key:{}", k.id);
                if let Some(new) = reseal(master, cipher, &context, &k.sealed_private)? {
                    k.sealed_private = new;
                    touched.push((kind::IDENTITY_KEY, k.id.clone()));
                }
            }
            for a in s.apps.iter_mut() {
                let Some(sealed) = a.sealed_signin.as_deref() else {
                    continue;
                };
                let context = format!("app-signin:{}", a.id);
                if let Some(new) = reseal(master, cipher, &context, sealed)? {
                    a.sealed_signin = Some(new);
                    touched.push((kind::APP, a.id.clone()));
                }
            }
            let mut it = touched.into_iter();
            let (k, id) = it
                .next()
                .ok_or_else(|| ApiError::Conflict("re-encrypted meanwhile".into()))?;
            Ok(it.fold(Touched::new(k, id), |t, (k, id)| t.and(k, id)))
        })
        .await?;
    }

    // The tables outside the config, and the stored config: one transaction, one record.
    let mut w = commit::begin_write(&app).await?;
    let totp = reseal_column(&mut w.tx, master, cipher, "users", "sealed_totp", |id| {
        format!("totp:{id}")
    })
    .await?;
    let mut destinations = 0;
    for (column, prefix) in [
        ("sealed_url", "alert-destination-url"),
        ("sealed_secret", "alert-destination"),
    ] {
        destinations += reseal_column(
            &mut w.tx,
            master,
            cipher,
            "alert_destinations",
            column,
            |id| format!("{prefix}:{id}"),
        )
        .await?;
    }
    let row = sqlx::query("SELECT config FROM config_state WHERE id = 1")
        .fetch_one(&mut *w.tx)
        .await?;
    let sealed: String = row.try_get("config")?;
    let mut config = 0;
    if !sealed.is_empty() {
        if let Some(new) = reseal(master, cipher, "config", &sealed)? {
            config =
                sqlx::query("UPDATE config_state SET config = $1 WHERE id = 1 AND config = $2")
                    .bind(new)
                    .bind(&sealed)
                    .execute(&mut *w.tx)
                    .await?
                    .rows_affected();
        }
    }
    let counts = json!({
        "signing_keys": signing,
        "token_keys": token,
        "identity_keys": identity,
        "app_signin_secrets": app_signin,
        "totp_secrets": totp,
        "alert_destination_secrets": destinations,
        "stored_config": config,
    });
    w.finish(
        &actor,
        "secrets.re-encrypt",
        AuditTarget {
            kind: "settings".into(),
            id: "secrets".into(),
            agency_id: None,
            before: None,
            after: Some(json!({"cipher": cipher.as_str(), "re_encrypted": counts})),
        },
    )
    .await?;
    tracing::info!(cipher = cipher.as_str(), %counts, "secrets re-encrypted");
    Ok(Json(
        json!({"cipher": cipher.as_str(), "re_encrypted": counts}),
    ))
}
