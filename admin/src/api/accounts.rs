//! Accounts (users) and gateway node tokens. Both live outside the gateway config: changing
//! them does not bump the config version, but every change is audited.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{items, Input};
use crate::app::AppState;
use crate::auth::{user_view, TOTP_ISSUER};
use crate::authz::{Action, Principal};
use crate::commit::{begin_write, Actor, AuditTarget};
use crate::crypto::{new_id, random_array, random_token, sha256_hex};
use crate::error::{ApiError, ApiResult};
use crate::model::{Name, Role};
use crate::store::{self, UserRow};
use crate::{password, totp};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub username: Name,
    pub role: Role,
    /// Required for (and only for) agency operators.
    #[serde(default)]
    pub agency_id: Option<String>,
    pub password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub agency_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    pub password: String,
}

async fn user(app: &AppState, id: &str) -> ApiResult<UserRow> {
    store::user_by_id(&app.store.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
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
    let secret = input.role.is_admin().then(random_array::<20>);
    let mut w = begin_write(&app).await?;
    let u = UserRow {
        id: id.clone(),
        username: input.username.to_string(),
        role: input.role,
        agency_id: input.agency_id,
        password_hash: hash,
        sealed_totp: secret.map(|s| app.master.seal(&format!("totp:{id}"), &s)),
        totp_last_step: 0,
        failed_logins: 0,
        locked_until: 0,
        disabled: false,
        created_at: w.now,
        updated_at: w.now,
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
    let mut body = view;
    if let Some(s) = secret {
        // Shown once, for the account holder's authenticator app.
        body["totp"] = json!({
            "secret": totp::base32_encode(&s),
            "otpauth_uri": totp::otpauth_uri(TOTP_ISSUER, &u.username, &s),
        });
    }
    Ok((StatusCode::CREATED, Json(body)))
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
    if let Some(d) = input.disabled {
        if d && u.id == p.user_id {
            return Err(ApiError::Conflict(
                "you cannot disable your own account".into(),
            ));
        }
        u.disabled = d;
    }
    if input.agency_id.is_some() {
        check_agency(&app, u.role, &input.agency_id).await?;
        u.agency_id = input.agency_id;
    }
    let mut w = begin_write(&app).await?;
    u.updated_at = w.now;
    store::update_user(&mut w.tx, &u).await?;
    if u.disabled || u.agency_id != before.agency_id {
        store::delete_user_sessions(&mut w.tx, &u.id).await?;
    }
    let now = w.now;
    w.finish(
        &Actor::from(&p),
        "user.update",
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

pub async fn delete_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::UserWrite)?;
    let u = user(&app, &id).await?;
    if u.id == p.user_id {
        return Err(ApiError::Conflict(
            "you cannot delete your own account".into(),
        ));
    }
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
            after: None,
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
    password::check_complexity(&input.password, &u.username)
        .map_err(|m| ApiError::invalid("password", m))?;
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
    w.finish(
        &Actor::from(&p),
        "user.reset_password",
        AuditTarget {
            kind: "user".into(),
            id: id.clone(),
            agency_id: u.agency_id.clone(),
            ..Default::default()
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unlock_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::UserWrite)?;
    let before = user(&app, &id).await?;
    let mut u = before.clone();
    u.failed_logins = 0;
    u.locked_until = 0;
    let mut w = begin_write(&app).await?;
    u.updated_at = w.now;
    store::update_user(&mut w.tx, &u).await?;
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

#[derive(Debug, Deserialize)]
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
