//! Two-person account changes (四眼原则): what would silence an audit admin — disabling,
//! deleting, resetting the password or second factor of, or changing the role of an audit-admin
//! account — is carried out only when one of the system admin and the security admin asks for it
//! and an account of the other role asks for exactly the same thing (same endpoint, same body).
//!
//! The first request is stored (`approvals`) and answered `202 awaiting_approval`; the second
//! carries the change out. A request waits [`APPROVAL_TTL_SECS`]; the same role asking again, or
//! a different body, is refused with 409. Both steps are in the admin audit.
//!
//! What it may not do: decide who may ask (that is `crate::authz::account_rule`).

use serde_json::{json, Value};

use crate::app::App;
use crate::authz::{AccountAction, AccountRule, Principal};
use crate::commit::{begin_write, Actor, AuditTarget};
use crate::error::{ApiError, ApiResult};
use crate::model::Role;
use crate::store::{self, ApprovalRow};

/// How long a first request waits for the second person.
pub const APPROVAL_TTL_SECS: i64 = 24 * 3600;

/// Who approved: the first requester's user name and role, for the change's audit record.
#[derive(Debug, Clone)]
pub struct Approved {
    pub requested_by: String,
    pub requested_role: String,
}

/// Lets the change go ahead (`Ok(None)` alone, `Ok(Some(..))` as the second person), or
/// registers it and answers 202 (`Err(AwaitingApproval)`), or refuses (409).
pub async fn gate(
    app: &App,
    p: &Principal,
    rule: AccountRule,
    action: AccountAction,
    target_id: &str,
    body: &Value,
) -> ApiResult<Option<Approved>> {
    if rule == AccountRule::Alone {
        return Ok(None);
    }
    let fingerprint = app
        .master
        .audit_mac(format!("approval\n{}\n{target_id}\n{body}", action.name()).as_bytes());
    let other = match p.role {
        Role::SystemAdmin => Role::SecurityAdmin,
        _ => Role::SystemAdmin,
    };
    let mut w = begin_write(app).await?;
    let now = w.now;
    let pending = store::approval_for(&mut w.tx, action.name(), target_id).await?;
    let pending = match pending {
        Some(a) if now - a.created_at > APPROVAL_TTL_SECS => {
            store::delete_approval(&mut w.tx, &a.id).await?;
            None
        }
        other => other,
    };
    match pending {
        Some(a) if a.requested_role != p.role.as_str() && a.requested_by_id != p.user_id => {
            if a.fingerprint != fingerprint {
                return Err(ApiError::Conflict(format!(
                    "{} asked for a different {} of this account; repeat exactly that request to approve it",
                    a.requested_by,
                    action.name()
                )));
            }
            store::delete_approval(&mut w.tx, &a.id).await?;
            w.tx.commit().await?;
            Ok(Some(Approved {
                requested_by: a.requested_by,
                requested_role: a.requested_role,
            }))
        }
        Some(a) => Err(ApiError::Conflict(format!(
            "{} already asked for this; it awaits the same request from a {}",
            a.requested_by,
            other.as_str()
        ))),
        None => {
            let row = ApprovalRow {
                id: crate::crypto::new_id("apr"),
                action: action.name().to_string(),
                target_id: target_id.to_string(),
                fingerprint,
                requested_by: p.username.clone(),
                requested_by_id: p.user_id.clone(),
                requested_role: p.role.as_str().to_string(),
                created_at: now,
            };
            store::insert_approval(&mut w.tx, &row).await?;
            let view = json!({
                "id": row.id,
                "action": row.action,
                "target_id": row.target_id,
                "requested_by": row.requested_by,
                "awaits": other.as_str(),
                "expires_at": now + APPROVAL_TTL_SECS,
            });
            w.finish(
                &Actor::from(p),
                &format!("user.{}.requested", action.name()),
                AuditTarget {
                    kind: "user".into(),
                    id: target_id.to_string(),
                    after: Some(view.clone()),
                    ..Default::default()
                },
            )
            .await?;
            Err(ApiError::AwaitingApproval(view))
        }
    }
}

/// The approval as it goes into the change's audit record.
pub fn audit_note(a: &Option<Approved>) -> Option<Value> {
    a.as_ref()
        .map(|a| json!({"requested_by": a.requested_by, "requested_role": a.requested_role}))
}
