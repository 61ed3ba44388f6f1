//! Handlers of the configuration resources other than services: agencies, routes, apps,
//! network policies, token keys, signing keys, limits and settings.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{items, Input, Params};
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::{self, commit, public_view, Actor, Committed, Touched};
use crate::crypto::{new_id, random_array};
use crate::error::{ApiError, ApiResult};
use crate::model::*;
use crate::store::kind;

type Created = (StatusCode, Json<Value>);

fn created(c: Committed) -> Created {
    (StatusCode::CREATED, Json(c.after.unwrap_or(Value::Null)))
}

fn updated(c: Committed) -> Json<Value> {
    Json(c.after.unwrap_or(Value::Null))
}

fn view<T: serde::Serialize>(x: &T) -> Value {
    public_view(serde_json::to_value(x).unwrap_or(Value::Null))
}

fn taken(path: &str, what: String) -> ApiError {
    ApiError::invalid(path, format!("{what} already exists"))
}

/// The index of `id` in `v`, or 404.
fn position<T>(v: &[T], id: &str, get: impl Fn(&T) -> &str, what: &str) -> ApiResult<usize> {
    v.iter()
        .position(|x| get(x) == id)
        .ok_or_else(|| ApiError::not_found(what))
}

// ------------------------------------------------------------------------------------------
// Agencies

pub async fn list_agencies(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::AgencyRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(
        s.agencies
            .iter()
            .filter(|a| p.sees(Some(&a.id)))
            .map(view)
            .collect(),
    ))
}

pub async fn get_agency(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AgencyRead)?;
    p.scope(Some(&id), "agency")?;
    let s = commit::snapshot(&app).await?;
    let a = s.agency(&id).ok_or_else(|| ApiError::not_found("agency"))?;
    Ok(Json(view(a)))
}

/// After agency `id`'s paths or hosts change: they overlap no other agency's, and every route
/// is still inside its own agency's and outside the others' (naming the route in the way).
fn check_agency_space(s: &Snapshot, id: &str) -> ApiResult<()> {
    use crate::route_space::{host_within, path_within};
    if let Some(a) = s.agency(id) {
        for o in s.agencies.iter().filter(|o| o.id != id) {
            for (i, p) in a.path_prefixes.iter().enumerate() {
                if let Some(q) = o.path_prefixes.iter().find(|q| {
                    path_within(p.as_str(), q.as_str()) || path_within(q.as_str(), p.as_str())
                }) {
                    return Err(ApiError::invalid(
                        format!("path_prefixes[{i}]"),
                        format!(
                            "`{}` overlaps `{}` of agency `{}`",
                            p.as_str(),
                            q.as_str(),
                            o.name
                        ),
                    ));
                }
            }
            for (i, h) in a.hosts.iter().enumerate() {
                if let Some(q) = o.hosts.iter().find(|q| {
                    host_within(h.as_str(), q.as_str()) || host_within(q.as_str(), h.as_str())
                }) {
                    return Err(ApiError::invalid(
                        format!("hosts[{i}]"),
                        format!(
                            "`{}` overlaps `{}` of agency `{}`",
                            h.as_str(),
                            q.as_str(),
                            o.name
                        ),
                    ));
                }
            }
        }
    }
    for r in &s.routes {
        let Some(agency) = s
            .service(&r.service_id)
            .and_then(|x| s.agency(&x.agency_id))
        else {
            continue;
        };
        if let Some(fe) =
            crate::route_space::outside_agency(agency, &s.agencies, &r.paths, &r.hosts)
        {
            let field = if fe.path.starts_with("paths") {
                "path_prefixes"
            } else {
                "hosts"
            };
            return Err(ApiError::invalid(
                field,
                format!(
                    "route `{}` of agency `{}` would be out of place: {}",
                    r.name, agency.name, fe.message
                ),
            ));
        }
    }
    Ok(())
}

pub async fn create_agency(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<AgencyInput>,
) -> ApiResult<Created> {
    p.authorize(Action::AgencyWrite)?;
    let c = commit(&app, &Actor::from(&p), "agency.create", |s, now| {
        if s.agencies.iter().any(|a| a.name == input.name) {
            return Err(taken("name", format!("an agency named `{}`", input.name)));
        }
        let id = new_id("ag");
        s.agencies.push(Agency {
            id: id.clone(),
            name: input.name,
            title: input.title,
            contact: input.contact,
            path_prefixes: input.path_prefixes,
            hosts: input.hosts,
            signature_algorithm: input.signature_algorithm,
            created_at: now,
            updated_at: now,
        });
        check_agency_space(s, &id)?;
        Ok(Touched::new(kind::AGENCY, id))
    })
    .await?;
    Ok(created(c))
}

pub async fn update_agency(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<AgencyInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AgencyWrite)?;
    let c = commit(&app, &Actor::from(&p), "agency.update", |s, now| {
        let i = position(&s.agencies, &id, |a| &a.id, "agency")?;
        if s.agencies
            .iter()
            .any(|a| a.name == input.name && a.id != id)
        {
            return Err(taken("name", format!("an agency named `{}`", input.name)));
        }
        let a = &mut s.agencies[i];
        a.name = input.name;
        a.title = input.title;
        a.contact = input.contact;
        a.path_prefixes = input.path_prefixes;
        a.hosts = input.hosts;
        a.signature_algorithm = input.signature_algorithm;
        a.updated_at = now;
        check_agency_space(s, &id)?;
        Ok(Touched::new(kind::AGENCY, id.clone()))
    })
    .await?;
    Ok(updated(c))
}

pub async fn delete_agency(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::AgencyWrite)?;
    let operators = crate::store::list_users(&app.store.pool)
        .await?
        .into_iter()
        .filter(|u| u.agency_id.as_deref() == Some(id.as_str()))
        .count();
    commit(&app, &Actor::from(&p), "agency.delete", |s, _| {
        let i = position(&s.agencies, &id, |a| &a.id, "agency")?;
        let used = s.services.iter().any(|x| x.agency_id == id)
            || s.policies.iter().any(|x| x.agency_id == id)
            || s.signing_keys.iter().any(|x| x.agency_id == id);
        if used || operators > 0 {
            return Err(ApiError::Conflict(
                "the agency still has services, network policies, signing keys or operator accounts".into(),
            ));
        }
        s.agencies.remove(i);
        Ok(Touched::new(kind::AGENCY, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------
// Routes

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteFilter {
    #[serde(default)]
    service_id: Option<String>,
}

pub async fn list_routes(
    State(app): State<AppState>,
    p: Principal,
    Params(f): Params<RouteFilter>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::RouteRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(
        s.routes
            .iter()
            .filter(|r| p.sees(s.agency_of(kind::ROUTE, &r.id).as_deref()))
            .filter(|r| f.service_id.as_ref().is_none_or(|x| *x == r.service_id))
            .map(view)
            .collect(),
    ))
}

pub async fn get_route(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::RouteRead)?;
    let s = commit::snapshot(&app).await?;
    p.scope(s.agency_of(kind::ROUTE, &id).as_deref(), "route")?;
    let r = s
        .routes
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found("route"))?;
    Ok(Json(view(r)))
}

/// The service a route input names, visible to `p` and open to `p`'s edits. A service an
/// agency operator may not see answers 404, exactly like one that does not exist.
fn route_service<'a>(p: &Principal, s: &'a Snapshot, service_id: &str) -> ApiResult<&'a Service> {
    let svc = s
        .service(service_id)
        .filter(|x| p.sees(Some(&x.agency_id)))
        .ok_or_else(|| match p.role {
            Role::AgencyOperator => ApiError::not_found("service"),
            _ => ApiError::invalid("service_id", "no such service"),
        })?;
    super::services::check_editable(p, svc)?;
    Ok(svc)
}

fn build_route(p: &Principal, id: String, input: RouteInput, created_at: i64, now: i64) -> Route {
    Route {
        id,
        service_id: input.service_id,
        name: input.name,
        description: input.description,
        paths: input.paths,
        methods: input.methods,
        hosts: input.hosts,
        strip_prefix: input.strip_prefix,
        rewrite: input.rewrite,
        priority: input.priority,
        allow_overlap: input.allow_overlap.map(|a| OverlapAllowance {
            reason: a.reason,
            by: p.username.clone(),
            at: now,
        }),
        samples: input.samples,
        created_at,
        updated_at: now,
    }
}

/// Only a system admin allows a route to overlap another agency's.
fn check_allowance(p: &Principal, input: &RouteInput) -> ApiResult<()> {
    if input.allow_overlap.is_some() && p.role != Role::SystemAdmin {
        return Err(ApiError::Forbidden(
            "only a system admin may allow a route to overlap another agency's (`allow_overlap`)"
                .into(),
        ));
    }
    Ok(())
}

/// A route stays inside its agency's own paths and hosts, out of other agencies'.
fn check_route_space(s: &Snapshot, input: &RouteInput) -> ApiResult<()> {
    let agency = s
        .service(&input.service_id)
        .and_then(|x| s.agency(&x.agency_id));
    if let Some(fe) = agency.and_then(|a| {
        crate::route_space::outside_agency(a, &s.agencies, &input.paths, &input.hosts)
    }) {
        return Err(ApiError::Invalid(vec![fe]));
    }
    Ok(())
}

pub async fn create_route(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<RouteInput>,
) -> ApiResult<Created> {
    p.authorize(Action::RouteWrite)?;
    check_allowance(&p, &input)?;
    let c = commit(&app, &Actor::from(&p), "route.create", |s, now| {
        route_service(&p, s, &input.service_id)?;
        check_route_space(s, &input)?;
        crate::inspection::sample::check(&input.samples, "samples")?;
        if s.routes.iter().any(|r| r.name == input.name) {
            return Err(taken("name", format!("a route named `{}`", input.name)));
        }
        let id = new_id("rt");
        s.routes.push(build_route(&p, id.clone(), input, now, now));
        Ok(Touched::new(kind::ROUTE, id))
    })
    .await?;
    Ok(created(c))
}

pub async fn update_route(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<RouteInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::RouteWrite)?;
    check_allowance(&p, &input)?;
    let c = commit(&app, &Actor::from(&p), "route.update", |s, now| {
        p.scope(s.agency_of(kind::ROUTE, &id).as_deref(), "route")?;
        let i = position(&s.routes, &id, |r| &r.id, "route")?;
        route_service(&p, s, &s.routes[i].service_id.clone())?;
        route_service(&p, s, &input.service_id)?;
        check_route_space(s, &input)?;
        crate::inspection::sample::check(&input.samples, "samples")?;
        if s.routes.iter().any(|r| r.name == input.name && r.id != id) {
            return Err(taken("name", format!("a route named `{}`", input.name)));
        }
        let created_at = s.routes[i].created_at;
        s.routes[i] = build_route(&p, id.clone(), input, created_at, now);
        Ok(Touched::new(kind::ROUTE, id.clone()))
    })
    .await?;
    Ok(updated(c))
}

pub async fn delete_route(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::RouteWrite)?;
    commit(&app, &Actor::from(&p), "route.delete", |s, _| {
        p.scope(s.agency_of(kind::ROUTE, &id).as_deref(), "route")?;
        let i = position(&s.routes, &id, |r| &r.id, "route")?;
        route_service(&p, s, &s.routes[i].service_id.clone())?;
        s.routes.remove(i);
        Ok(Touched::new(kind::ROUTE, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------
// Apps

pub async fn list_apps(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::AppRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(s.apps.iter().map(view).collect()))
}

pub async fn get_app(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AppRead)?;
    let s = commit::snapshot(&app).await?;
    let a = s
        .apps
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ApiError::not_found("app"))?;
    Ok(Json(view(a)))
}

pub async fn create_app(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<AppInput>,
) -> ApiResult<Created> {
    p.authorize(Action::AppWrite)?;
    let c = commit(&app, &Actor::from(&p), "app.create", |s, now| {
        if s.apps
            .iter()
            .any(|a| a.channel == input.channel && a.app_id == input.app_id)
        {
            return Err(taken(
                "app_id",
                format!(
                    "app `{}` on {}",
                    input.app_id.as_str(),
                    input.channel.as_str()
                ),
            ));
        }
        let id = new_id("app");
        s.apps.push(App {
            id: id.clone(),
            channel: input.channel,
            app_id: input.app_id,
            name: input.name,
            sealed_signin: None,
            signin_endpoint: None,
            created_at: now,
            updated_at: now,
        });
        Ok(Touched::new(kind::APP, id))
    })
    .await?;
    Ok(created(c))
}

pub async fn update_app(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<AppInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AppWrite)?;
    let c = commit(&app, &Actor::from(&p), "app.update", |s, now| {
        let i = position(&s.apps, &id, |a| &a.id, "app")?;
        if s.apps
            .iter()
            .any(|a| a.channel == input.channel && a.app_id == input.app_id && a.id != id)
        {
            return Err(taken(
                "app_id",
                format!(
                    "app `{}` on {}",
                    input.app_id.as_str(),
                    input.channel.as_str()
                ),
            ));
        }
        let old = s.apps[i].app_id.clone();
        if old != input.app_id
            && s.services
                .iter()
                .any(|x| x.apps.contains(&old.as_str().to_string()))
        {
            return Err(ApiError::Conflict(
                "services are published to this app id; publish them without it first".into(),
            ));
        }
        let a = &mut s.apps[i];
        if a.channel != input.channel || a.app_id != input.app_id {
            // Credentials belong to one app on one channel.
            a.sealed_signin = None;
            a.signin_endpoint = None;
        }
        a.channel = input.channel;
        a.app_id = input.app_id;
        a.name = input.name;
        a.updated_at = now;
        Ok(Touched::new(kind::APP, id.clone()))
    })
    .await?;
    Ok(updated(c))
}

pub async fn delete_app(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::AppWrite)?;
    commit(&app, &Actor::from(&p), "app.delete", |s, _| {
        let i = position(&s.apps, &id, |a| &a.id, "app")?;
        let app_id = s.apps[i].app_id.as_str().to_string();
        if s.services.iter().any(|x| x.apps.contains(&app_id)) {
            return Err(ApiError::Conflict(
                "services are published to this app; publish them without it first".into(),
            ));
        }
        s.apps.remove(i);
        Ok(Touched::new(kind::APP, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------
// Network policies

pub async fn list_policies(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::PolicyRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(
        s.policies
            .iter()
            .filter(|x| p.sees(Some(&x.agency_id)))
            .map(view)
            .collect(),
    ))
}

pub async fn get_policy(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::PolicyRead)?;
    let s = commit::snapshot(&app).await?;
    let x = s
        .policies
        .iter()
        .find(|x| x.id == id && p.sees(Some(&x.agency_id)))
        .ok_or_else(|| ApiError::not_found("network policy"))?;
    Ok(Json(view(x)))
}

fn check_policy(s: &Snapshot, input: &PolicyInput, id: &str) -> ApiResult<()> {
    if s.agency(&input.agency_id).is_none() {
        return Err(ApiError::invalid("agency_id", "no such agency"));
    }
    if input.rules.is_empty() {
        return Err(ApiError::invalid("rules", "at least one rule is needed"));
    }
    if s.policies
        .iter()
        .any(|x| x.agency_id == input.agency_id && x.name == input.name && x.id != id)
    {
        return Err(taken(
            "name",
            format!("a policy named `{}` for this agency", input.name),
        ));
    }
    Ok(())
}

pub async fn create_policy(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<PolicyInput>,
) -> ApiResult<Created> {
    p.authorize(Action::PolicyWrite)?;
    let c = commit(&app, &Actor::from(&p), "network-policy.create", |s, now| {
        check_policy(s, &input, "")?;
        let id = new_id("np");
        s.policies.push(NetworkPolicy {
            id: id.clone(),
            agency_id: input.agency_id,
            name: input.name,
            description: input.description,
            rules: input.rules,
            created_at: now,
            updated_at: now,
        });
        Ok(Touched::new(kind::POLICY, id))
    })
    .await?;
    Ok(created(c))
}

pub async fn update_policy(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<PolicyInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::PolicyWrite)?;
    let c = commit(&app, &Actor::from(&p), "network-policy.update", |s, now| {
        let i = position(&s.policies, &id, |x| &x.id, "network policy")?;
        check_policy(s, &input, &id)?;
        let x = &mut s.policies[i];
        x.agency_id = input.agency_id;
        x.name = input.name;
        x.description = input.description;
        x.rules = input.rules;
        x.updated_at = now;
        Ok(Touched::new(kind::POLICY, id.clone()))
    })
    .await?;
    Ok(updated(c))
}

pub async fn delete_policy(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::PolicyWrite)?;
    commit(&app, &Actor::from(&p), "network-policy.delete", |s, _| {
        let i = position(&s.policies, &id, |x| &x.id, "network policy")?;
        s.policies.remove(i);
        Ok(Touched::new(kind::POLICY, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------
// Token keys (the client-token JWKS)

pub async fn list_token_keys(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::TokenKeyRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(s.token_keys.iter().map(view).collect()))
}

pub async fn get_token_key(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::TokenKeyRead)?;
    let s = commit::snapshot(&app).await?;
    let k = s
        .token_keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::not_found("token key"))?;
    Ok(Json(view(k)))
}

pub async fn create_token_key(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<TokenKeyInput>,
) -> ApiResult<Created> {
    p.authorize(Action::TokenKeyWrite)?;
    let master = &app.master;
    let c = commit(&app, &Actor::from(&p), "token-key.create", |s, now| {
        let mut jwk = input.jwk;
        let kid = match jwk.get("kid") {
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 128 => k.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "jwk.kid",
                    "a kid (1 to 128 characters) is required",
                ))
            }
        };
        let alg = match jwk.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "jwk.alg",
                    "an alg is required (ES256, RS256, PS256, EdDSA, HS256 or SM2)",
                ))
            }
        };
        if s.token_keys.iter().any(|k| k.kid == kid) {
            return Err(taken("jwk.kid", format!("a key with kid `{kid}`")));
        }
        let id = new_id("tk");
        let sealed_k = match jwk.remove("k") {
            Some(Value::String(k)) => Some(master.seal(&format!("token-key:{id}"), k.as_bytes())),
            Some(_) => return Err(ApiError::invalid("jwk.k", "must be a base64url string")),
            None => None,
        };
        s.token_keys.push(TokenKey {
            id: id.clone(),
            kid,
            alg,
            jwk,
            sealed_k,
            status: KeyStatus::Active,
            created_at: now,
            updated_at: now,
        });
        Ok(Touched::new(kind::TOKEN_KEY, id))
    })
    .await?;
    Ok(created(c))
}

pub async fn revoke_token_key(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::TokenKeyWrite)?;
    let c = commit(&app, &Actor::from(&p), "token-key.revoke", |s, now| {
        let i = position(&s.token_keys, &id, |k| &k.id, "token key")?;
        s.token_keys[i].status = KeyStatus::Revoked;
        s.token_keys[i].updated_at = now;
        Ok(Touched::new(kind::TOKEN_KEY, id.clone()))
    })
    .await?;
    Ok(updated(c))
}

pub async fn delete_token_key(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::TokenKeyWrite)?;
    commit(&app, &Actor::from(&p), "token-key.delete", |s, _| {
        let i = position(&s.token_keys, &id, |k| &k.id, "token key")?;
        s.token_keys.remove(i);
        Ok(Touched::new(kind::TOKEN_KEY, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------
// Signing keys (per agency, for the upstream signature)

pub async fn list_signing_keys(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::SigningKeyRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(
        s.signing_keys
            .iter()
            .filter(|k| p.sees(Some(&k.agency_id)))
            .map(view)
            .collect(),
    ))
}

pub async fn get_signing_key(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::SigningKeyRead)?;
    let s = commit::snapshot(&app).await?;
    let k = s
        .signing_keys
        .iter()
        .find(|k| k.id == id && p.sees(Some(&k.agency_id)))
        .ok_or_else(|| ApiError::not_found("signing key"))?;
    Ok(Json(view(k)))
}

pub async fn create_signing_key(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<SigningKeyInput>,
) -> ApiResult<Created> {
    p.authorize(Action::SigningKeyWrite)?;
    let secret = match &input.secret {
        Some(s) => {
            let n = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|_| ApiError::invalid("secret", "is not base64 (standard alphabet)"))?
                .len();
            if n < 32 {
                return Err(ApiError::invalid(
                    "secret",
                    format!("decodes to {n} bytes; at least 32 random bytes are needed"),
                ));
            }
            s.trim().to_string()
        }
        None => base64::engine::general_purpose::STANDARD.encode(random_array::<32>()),
    };
    let master = &app.master;
    let c = commit(&app, &Actor::from(&p), "signing-key.create", |s, now| {
        let agency = s
            .agency(&input.agency_id)
            .ok_or_else(|| ApiError::invalid("agency_id", "no such agency"))?;
        let key_id = match input.key_id {
            Some(k) => k,
            None => Name::try_from(format!(
                "{}-{}-{}",
                agency.name,
                crate::clock::rfc3339(now)[..10].replace('-', ""),
                crate::crypto::hex(&random_array::<4>())
            ))
            .map_err(|m| ApiError::invalid("key_id", m))?,
        };
        if s.signing_keys.iter().any(|k| k.key_id == key_id) {
            return Err(taken("key_id", format!("a signing key `{key_id}`")));
        }
        let id = new_id("sk");
        s.signing_keys.push(SigningKey {
            id: id.clone(),
            agency_id: input.agency_id,
            key_id,
            sealed_secret: master.seal(&format!("signing-key:{id}"), secret.as_bytes()),
            status: KeyStatus::Active,
            created_at: now,
            updated_at: now,
        });
        Ok(Touched::new(kind::SIGNING_KEY, id))
    })
    .await?;
    let mut body = c.after.unwrap_or(Value::Null);
    // Shown once: the agency configures its backend with it. It is never readable again.
    body["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn retire_signing_key(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::SigningKeyWrite)?;
    let c = commit(&app, &Actor::from(&p), "signing-key.retire", |s, now| {
        let i = position(&s.signing_keys, &id, |k| &k.id, "signing key")?;
        s.signing_keys[i].status = KeyStatus::Retired;
        s.signing_keys[i].updated_at = now;
        Ok(Touched::new(kind::SIGNING_KEY, id.clone()))
    })
    .await?;
    Ok(updated(c))
}

pub async fn delete_signing_key(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::SigningKeyWrite)?;
    commit(&app, &Actor::from(&p), "signing-key.delete", |s, _| {
        let i = position(&s.signing_keys, &id, |k| &k.id, "signing key")?;
        s.signing_keys.remove(i);
        Ok(Touched::new(kind::SIGNING_KEY, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------
// Limits

pub async fn list_limits(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::LimitRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(items(
        s.limits
            .iter()
            .filter(|l| p.sees(s.agency_of(kind::LIMIT, &l.id).as_deref()))
            .map(view)
            .collect(),
    ))
}

pub async fn get_limit(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::LimitRead)?;
    let s = commit::snapshot(&app).await?;
    p.scope(s.agency_of(kind::LIMIT, &id).as_deref(), "limit")?;
    let l = s
        .limits
        .iter()
        .find(|l| l.id == id)
        .ok_or_else(|| ApiError::not_found("limit"))?;
    Ok(Json(view(l)))
}

pub async fn create_limit(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<LimitInput>,
) -> ApiResult<Created> {
    p.authorize(Action::LimitWrite)?;
    let c = commit(&app, &Actor::from(&p), "limit.create", |s, now| {
        if s.service(&input.service_id).is_none() {
            return Err(ApiError::invalid("service_id", "no such service"));
        }
        if s.limits.iter().any(|l| l.service_id == input.service_id) {
            return Err(taken("service_id", "a limit for this service".into()));
        }
        let id = new_id("lm");
        s.limits.push(Limit {
            id: id.clone(),
            service_id: input.service_id,
            limits: input.limits,
            created_at: now,
            updated_at: now,
        });
        Ok(Touched::new(kind::LIMIT, id))
    })
    .await?;
    Ok(created(c))
}

pub async fn update_limit(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<LimitInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::LimitWrite)?;
    let c = commit(&app, &Actor::from(&p), "limit.update", |s, now| {
        let i = position(&s.limits, &id, |l| &l.id, "limit")?;
        if s.limits[i].service_id != input.service_id {
            return Err(ApiError::invalid(
                "service_id",
                "a limit stays with its service; delete it and create another",
            ));
        }
        s.limits[i].limits = input.limits;
        s.limits[i].updated_at = now;
        Ok(Touched::new(kind::LIMIT, id.clone()))
    })
    .await?;
    Ok(updated(c))
}

pub async fn delete_limit(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.authorize(Action::LimitWrite)?;
    commit(&app, &Actor::from(&p), "limit.delete", |s, _| {
        let i = position(&s.limits, &id, |l| &l.id, "limit")?;
        s.limits.remove(i);
        Ok(Touched::new(kind::LIMIT, id.clone()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------
// Settings and the rendered config

pub async fn get_settings(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::SettingsRead)?;
    let s = commit::snapshot(&app).await?;
    Ok(Json(view(&s.settings)))
}

pub async fn put_settings(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<Settings>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::SettingsWrite)?;
    for (path, v) in [
        ("token_issuer", &input.token_issuer),
        ("token_audience", &input.token_audience),
    ] {
        if v.trim().is_empty() || v.len() > 256 {
            return Err(ApiError::invalid(path, "expected 1 to 256 characters"));
        }
    }
    if let Some(si) = &input.signin {
        for (path, v, lo, hi) in [
            ("signin.access_ttl", si.access_ttl, 60, 3600),
            ("signin.refresh_ttl", si.refresh_ttl, 3600, 90 * 86400),
            ("signin.session_ttl", si.session_ttl, 300, 86400),
            (
                "signin.login_per_minute",
                i64::from(si.login_per_minute),
                1,
                100_000,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(ApiError::invalid(path, format!("expected {lo} to {hi}")));
            }
        }
    }
    let mut chain = input.audit_chain();
    let c = commit(&app, &Actor::from(&p), "settings.update", |s, _| {
        let mut input = input;
        // Left out, the algorithms stay as they are: changing the token issuer must not
        // switch the platform's cryptography back to its defaults. So does sign-in.
        if input.algorithms.is_none() {
            input.algorithms = s.settings.algorithms.clone();
        }
        if input.signin.is_none() {
            input.signin = s.settings.signin.clone();
        }
        if input.h5.is_none() {
            input.h5 = s.settings.h5.clone();
        }
        chain = input.audit_chain();
        s.settings = input;
        Ok(Touched::new(kind::SETTINGS, "global"))
    })
    .await?;
    // The settings record is chained with the old algorithm; the switch record that follows
    // it with the new one (a crash in between is healed at the next start).
    crate::audit::follow(&app.store.pool, &app.master, chain, app.now(), &p.username).await?;
    Ok(updated(c))
}

pub async fn get_config(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::ConfigRead)?;
    let (version, text) = commit::current_text(&app).await?;
    Ok(Json(json!({
        "version": version,
        "config": crate::render::redacted(&text),
    })))
}
