//! Accounts (users) and gateway node tokens. Both live outside the gateway config: changing
//! them does not bump the config version, but every change is audited.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{items, Input};
use crate::app::AppState;
use crate::approvals::{audit_note, gate, Approved};
use crate::auth::user_view;
use crate::authz::{record_refusal, AccountAction, AccountRule, Action, Principal};
use crate::commit::{begin_write, Actor, AuditTarget};
use crate::crypto::{new_id, random_token, sha256_hex};
use crate::error::{ApiError, ApiResult};
use crate::model::{Name, Role};
use crate::password;
use crate::store::{self, UserRow};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub username: Name,
    /// An admin role takes effect once the security admin grants it (`PUT {"role"}`).
    pub role: Role,
    /// Required for (and only for) agency operators.
    #[serde(default)]
    pub agency_id: Option<String>,
    pub password: String,
}

/// One change per request: a role (with `agency_id` when it is agency-operator), or
/// `disabled`, or an operator's `agency_id`.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub agency_id: Option<String>,
    /// Grant or change the role (security admin only).
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    pub password: String,
}

async fn user(app: &AppState, id: &str) -> ApiResult<UserRow> {
    store::user_by_id(&app.store.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// The separation-of-duties rule for `action` on `target`; a refusal is recorded.
async fn rule_for(
    app: &AppState,
    p: &Principal,
    action: AccountAction,
    target: &UserRow,
) -> ApiResult<AccountRule> {
    match p.account_rule(action, &target.id, target.role, target.role_pending) {
        Ok(r) => Ok(r),
        Err(e) => {
            record_refusal(
                app,
                p,
                &format!("user.{}", action.name()),
                "user",
                &target.id,
                &e.to_string(),
            )
            .await;
            Err(e)
        }
    }
}

/// `after` with the first requester of a two-person change noted.
fn with_approval(after: Value, approved: &Option<Approved>) -> Value {
    match (after, audit_note(approved)) {
        (Value::Object(mut o), Some(note)) => {
            o.insert("approved_request".into(), note);
            Value::Object(o)
        }
        (after, _) => after,
    }
}

async fn check_agency(app: &AppState, role: Role, agency: &Option<String>) -> ApiResult<()> {
    match (role, agency) {
        (Role::AgencyOperator, None) => Err(ApiError::invalid(
            "agency_id",
            "an agency operator is bound to one agency",
        )),
        (Role::AgencyOperator, Some(a)) => {
            let s = crate::commit::snapshot(app).await?;
            s.agency(a)
                .map(|_| ())
                .ok_or_else(|| ApiError::invalid("agency_id", "no such agency"))
        }
        (_, Some(_)) => Err(ApiError::invalid(
            "agency_id",
            "only agency operators are bound to an agency",
        )),
        (_, None) => Ok(()),
    }
}

pub async fn list_users(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::UserRead)?;
    let now = app.now();
    let users = store::list_users(&app.store.pool).await?;
    Ok(items(users.iter().map(|u| user_view(u, now)).collect()))
}

pub async fn get_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::UserRead)?;
    let u = user(&app, &id).await?;
    Ok(Json(user_view(&u, app.now())))
}

pub async fn create_user(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<UserInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::UserWrite)?;
    if let Err(e) = p.account_rule(AccountAction::Create, "", input.role, false) {
        record_refusal(&app, &p, "user.create", "user", "", &e.to_string()).await;
        return Err(e);
    }
    check_agency(&app, input.role, &input.agency_id).await?;
    password::check_complexity(&input.password, input.username.as_str())
        .map_err(|m| ApiError::invalid("password", m))?;
    if store::user_by_name(&app.store.pool, input.username.as_str())
        .await?
        .is_some()
    {
        return Err(ApiError::invalid(
            "username",
            format!("an account named `{}` already exists", input.username),
        ));
    }
    let pw = input.password.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let id = new_id("usr");
    let mut w = begin_write(&app).await?;
    // No TOTP secret here: the account's owner gets it at the first sign-in.
    let u = UserRow {
        id: id.clone(),
        username: input.username.to_string(),
        role: input.role,
        agency_id: input.agency_id,
        password_hash: hash,
        sealed_totp: None,
        totp_last_step: 0,
        failed_logins: 0,
        locked_until: 0,
        disabled: false,
        created_at: w.now,
        updated_at: w.now,
        created_by: Some(p.username.clone()),
        last_login: 0,
        role_pending: input.role.is_admin(),
    };
    store::insert_user(&mut w.tx, &u).await?;
    let view = user_view(&u, w.now);
    w.finish(
        &Actor::from(&p),
        "user.create",
        AuditTarget {
            kind: "user".into(),
            id: id.clone(),
            agency_id: u.agency_id.clone(),
            before: None,
            after: Some(view.clone()),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn update_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<UserUpdate>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::UserWrite)?;
    let before = user(&app, &id).await?;
    let mut u = before.clone();
    let action = match (&input.role, input.disabled, &input.agency_id) {
        (Some(_), None, _) => AccountAction::ChangeRole,
        (None, Some(true), None) => AccountAction::Disable,
        (None, Some(false), None) => AccountAction::Enable,
        (None, None, Some(_)) => AccountAction::MoveAgency,
        (None, None, None) => {
            return Err(ApiError::invalid(
                "",
                "expected one change: `role`, `disabled` or `agency_id`",
            ))
        }
        _ => {
            return Err(ApiError::invalid(
                "disabled",
                "change one thing at a time: `disabled` goes alone",
            ))
        }
    };
    let rule = rule_for(&app, &p, action, &before).await?;
    match action {
        AccountAction::ChangeRole => {
            let role = input.role.unwrap_or(u.role);
            let agency = input.agency_id.clone();
            check_agency(&app, role, &agency).await?;
            u.role = role;
            u.agency_id = agency;
            u.role_pending = false;
        }
        AccountAction::Disable | AccountAction::Enable => {
            u.disabled = action == AccountAction::Disable;
        }
        _ => {
            check_agency(&app, u.role, &input.agency_id).await?;
            u.agency_id = input.agency_id.clone();
        }
    }
    let body = serde_json::to_value(&input).map_err(ApiError::internal)?;
    let approved = gate(&app, &p, rule, action, &id, &body).await?;
    let mut w = begin_write(&app).await?;
    u.updated_at = w.now;
    store::update_user(&mut w.tx, &u).await?;
    if u.disabled || u.agency_id != before.agency_id || u.role != before.role {
        store::delete_user_sessions(&mut w.tx, &u.id).await?;
    }
    let now = w.now;
    let audit_action = match action {
        AccountAction::ChangeRole if before.role_pending => "user.grant_role",
        AccountAction::ChangeRole => "user.change_role",
        _ => "user.update",
    };
    w.finish(
        &Actor::from(&p),
        audit_action,
        AuditTarget {
            kind: "user".into(),
            id: id.clone(),
            agency_id: u.agency_id.clone(),
            before: Some(user_view(&before, now)),
            after: Some(with_approval(user_view(&u, now), &approved)),
        },
    )
    .await?;
    Ok(Json(user_view(&u, now)))
}

pub async fn delete_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::UserWrite)?;
    let u = user(&app, &id).await?;
    let rule = rule_for(&app, &p, AccountAction::Delete, &u).await?;
    let approved = gate(&app, &p, rule, AccountAction::Delete, &id, &Value::Null).await?;
    let mut w = begin_write(&app).await?;
    store::delete_user(&mut w.tx, &id).await?;
    let now = w.now;
    w.finish(
        &Actor::from(&p),
        "user.delete",
        AuditTarget {
            kind: "user".into(),
            id: id.clone(),
            agency_id: u.agency_id.clone(),
            before: Some(user_view(&u, now)),
            after: audit_note(&approved),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reset_password(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<PasswordReset>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::UserWrite)?;
    let mut u = user(&app, &id).await?;
    let rule = rule_for(&app, &p, AccountAction::ResetPassword, &u).await?;
    password::check_complexity(&input.password, &u.username)
        .map_err(|m| ApiError::invalid("password", m))?;
    let approved = gate(
        &app,
        &p,
        rule,
        AccountAction::ResetPassword,
        &id,
        &json!({"password": input.password}),
    )
    .await?;
    let pw = input.password.clone();
    u.password_hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    u.failed_logins = 0;
    u.locked_until = 0;
    let mut w = begin_write(&app).await?;
    u.updated_at = w.now;
    store::update_user(&mut w.tx, &u).await?;
    store::delete_user_sessions(&mut w.tx, &u.id).await?;
    store::clear_throttle(&mut w.tx, &u.username, None).await?;
    w.finish(
        &Actor::from(&p),
        "user.reset_password",
        AuditTarget {
            kind: "user".into(),
            id: id.clone(),
            agency_id: u.agency_id.clone(),
            after: audit_note(&approved),
            ..Default::default()
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/users/{id}/reset-totp`: forgets the account's TOTP secret; its owner enrols a new
/// one at the next sign-in. Ends the account's sessions.
pub async fn reset_totp(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::UserWrite)?;
    let before = user(&app, &id).await?;
    let rule = rule_for(&app, &p, AccountAction::ResetTotp, &before).await?;
    if !before.role.is_admin() {
        return Err(ApiError::Conflict(
            "agency operators sign in without TOTP".into(),
        ));
    }
    let approved = gate(&app, &p, rule, AccountAction::ResetTotp, &id, &Value::Null).await?;
    let mut u = before.clone();
    u.sealed_totp = None;
    u.totp_last_step = 0;
    let mut w = begin_write(&app).await?;
    u.updated_at = w.now;
    store::update_user(&mut w.tx, &u).await?;
    store::delete_user_sessions(&mut w.tx, &u.id).await?;
    let now = w.now;
    w.finish(
        &Actor::from(&p),
        "user.reset_totp",
        AuditTarget {
            kind: "user".into(),
            id: id.clone(),
            agency_id: u.agency_id.clone(),
            before: Some(user_view(&before, now)),
            after: Some(with_approval(user_view(&u, now), &approved)),
        },
    )
    .await?;
    Ok(Json(user_view(&u, now)))
}

pub async fn unlock_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::UserWrite)?;
    let before = user(&app, &id).await?;
    rule_for(&app, &p, AccountAction::Unlock, &before).await?;
    let mut u = before.clone();
    u.failed_logins = 0;
    u.locked_until = 0;
    let mut w = begin_write(&app).await?;
    u.updated_at = w.now;
    store::update_user(&mut w.tx, &u).await?;
    store::clear_throttle(&mut w.tx, &u.username, None).await?;
    let now = w.now;
    w.finish(
        &Actor::from(&p),
        "user.unlock",
        AuditTarget {
            kind: "user".into(),
            id: id.clone(),
            agency_id: u.agency_id.clone(),
            before: Some(user_view(&before, now)),
            after: Some(user_view(&u, now)),
        },
    )
    .await?;
    Ok(Json(user_view(&u, now)))
}

// ------------------------------------------------------------------------------------------
// Gateway nodes

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeInput {
    pub name: Name,
}

fn node_view(n: &store::NodeRow) -> Value {
    json!({
        "id": n.id,
        "name": n.name,
        "created_at": n.created_at,
        "last_seen": n.last_seen,
        "config_version": n.config_version,
    })
}

pub async fn list_nodes(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::NodeRead)?;
    let nodes = store::list_nodes(&app.store.pool).await?;
    Ok(items(nodes.iter().map(node_view).collect()))
}

pub async fn create_node(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<NodeInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::NodeWrite)?;
    if store::list_nodes(&app.store.pool)
        .await?
        .iter()
        .any(|n| n.name == input.name.as_str())
    {
        return Err(ApiError::invalid(
            "name",
            format!("a node named `{}` already exists", input.name),
        ));
    }
    let id = new_id("nd");
    let token = format!("fn_{}", random_token());
    let mut w = begin_write(&app).await?;
    store::insert_node(
        &mut w.tx,
        &id,
        input.name.as_str(),
        &sha256_hex(token.as_bytes()),
        w.now,
    )
    .await?;
    let view = json!({"id": id, "name": input.name.as_str(), "created_at": w.now});
    w.finish(
        &Actor::from(&p),
        "node.create",
        AuditTarget {
            kind: "node".into(),
            id: id.clone(),
            after: Some(view.clone()),
            ..Default::default()
        },
    )
    .await?;
    let mut body = view;
    body["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn delete_node(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::NodeWrite)?;
    let mut w = begin_write(&app).await?;
    if store::delete_node(&mut w.tx, &id).await? == 0 {
        return Err(ApiError::not_found("node"));
    }
    w.finish(
        &Actor::from(&p),
        "node.delete",
        AuditTarget {
            kind: "node".into(),
            id: id.clone(),
            ..Default::default()
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
