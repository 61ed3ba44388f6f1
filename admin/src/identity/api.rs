//! The sign-in endpoints (public: reached through a gateway's rendered sign-in routes) and the
//! administration of sign-in (channel credentials, key rotation, the sign-in audit).
//!
//! Sign-in errors use the gateway's JSON error shape, `{"error":{"code","message"}}`, with
//! codes a mini-program can act on: `invalid_code`, `code_used` (ask the user to sign in
//! again), `channel_rate_limited` (503, `Retry-After`), `channel_unavailable` (502),
//! `channel_rejected_credentials` (502: the platform's settings are wrong, not the user),
//! `unknown_app`, `signin_not_configured`, `invalid_refresh_token`, `refresh_token_reused`,
//! `invalid_token`, `token_expired`, `invalid_ticket`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::channels::{self, ChannelError, Credentials};
use super::keys::{self, Refused};
use super::tokens::{self, Holder, RefreshRefused};
use super::users::{self, Event};
use crate::api::{items, Input, Params};
use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::commit::Touched;
use crate::commit::{commit, public_view, Actor};
use crate::error::{ApiError, ApiResult};
use crate::model::{App, AppId, Channel, IdentityKey, KeyStatus, Settings, SigninSettings};
use crate::store::{self, kind};

/// A refusal of a sign-in endpoint.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
        retry_after: None,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        // Bad input keeps its 422 with the field; failures of ours stay unexplained.
        let status = e.status();
        let message = match &e {
            ApiError::Internal(d) => {
                tracing::error!(error = %d, "sign-in failed");
                "the sign-in service failed to handle the request".to_string()
            }
            other => other.to_string(),
        };
        refuse(status, e.code(), message)
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

type Signed<T> = Result<T, Refusal>;

async fn settings(app: &AppState) -> Signed<(Settings, SigninSettings)> {
    let s: Settings = store::resources_of_kind::<Settings>(&app.store.pool, kind::SETTINGS)
        .await?
        .pop()
        .unwrap_or_default();
    match s.signin.clone() {
        Some(si) => Ok((s, si)),
        None => Err(refuse(
            StatusCode::NOT_FOUND,
            "signin_disabled",
            "the platform does not sign users in (settings.signin is not set)",
        )),
    }
}

async fn identity_keys(app: &AppState) -> Signed<Vec<IdentityKey>> {
    Ok(store::resources_of_kind::<IdentityKey>(&app.store.pool, kind::IDENTITY_KEY).await?)
}

fn parse_channel(c: &str) -> Signed<Channel> {
    match c {
        "wechat" => Ok(Channel::Wechat),
        "alipay" => Ok(Channel::Alipay),
        "baidu" => Ok(Channel::Baidu),
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            "expected /v1/login/wechat, /v1/login/alipay or /v1/login/baidu",
        )),
    }
}

/// The answer of a sign-in or refresh: an access token and the next refresh token.
async fn token_pair(
    app: &AppState,
    s: &Settings,
    si: &SigninSettings,
    h: &Holder,
    family: Option<&str>,
    now: i64,
) -> Signed<Json<Value>> {
    let keys = identity_keys(app).await?;
    let Some(key) = keys::signer(&keys) else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "signin_keys_missing",
            "the platform has no signing key yet (POST /v1/identity-keys/rotate)",
        ));
    };
    let claims = tokens::claims(
        &s.token_issuer,
        &s.token_audience,
        &h.user,
        &h.channel,
        &h.app_id,
        now,
        si.access_ttl,
    );
    let access = keys::sign(&app.master, key, &claims).map_err(ApiError::internal)?;
    let refresh = tokens::issue_refresh(&app.store.pool, h, family, now, si.refresh_ttl).await?;
    Ok(Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": si.access_ttl,
        "refresh_token": refresh,
        "refresh_expires_in": si.refresh_ttl,
        "user_id": h.user,
    })))
}

/// A one-time code from the channel's login API.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    /// The mini-program's app id on that channel.
    pub app_id: AppId,
    /// What `wx.login`, `my.getAuthCode` or `swan.getLoginCode` returned.
    pub code: String,
}

pub async fn login(
    State(app): State<AppState>,
    Path(channel): Path<String>,
    Input(input): Input<LoginInput>,
) -> Signed<Json<Value>> {
    let channel = parse_channel(&channel)?;
    if input.code.is_empty()
        || input.code.len() > 512
        || !input.code.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid("code", "expected 1 to 512 visible ASCII characters").into());
    }
    let (s, si) = settings(&app).await?;
    let now = app.now();
    let app_id = input.app_id.as_str();
    let apps = store::resources_of_kind::<App>(&app.store.pool, kind::APP).await?;
    let Some(a) = apps
        .iter()
        .find(|a| a.channel == channel && a.app_id.as_str() == app_id)
    else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "unknown_app",
            format!(
                "app_id: no {} app with this id is registered",
                channel.as_str()
            ),
        ));
    };
    let Some(sealed) = &a.sealed_signin else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "signin_not_configured",
            "app_id: this app has no sign-in credentials (PUT /v1/apps/{id}/signin)",
        ));
    };
    let creds: Credentials = app
        .master
        .open(&format!("app-signin:{}", a.id), sealed)
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(ApiError::internal)?;
    let audit = |outcome: &'static str, user: Option<String>| {
        let app = app.clone();
        let app_id = app_id.to_string();
        async move {
            let e = Event {
                event: "login",
                channel: channel.as_str(),
                app_id: &app_id,
                user_id: user.as_deref(),
                outcome,
            };
            users::record(&app.store.pool, &e, now).await
        }
    };
    let user = match channels::exchange(
        channel,
        app_id,
        &creds,
        a.signin_endpoint.as_deref(),
        &input.code,
        now,
    )
    .await
    {
        Ok(u) => u,
        Err(e) => {
            let r = match e {
                ChannelError::InvalidCode => refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_code",
                    "the channel does not accept this code; get a new one and sign in again",
                ),
                ChannelError::CodeUsed => refuse(
                    StatusCode::UNAUTHORIZED,
                    "code_used",
                    "this code was already used; get a new one and sign in again",
                ),
                ChannelError::RateLimited => Refusal {
                    retry_after: Some(60),
                    ..refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "channel_rate_limited",
                        "the channel is limiting the platform's calls; try again in a minute",
                    )
                },
                ChannelError::Credentials(why) => {
                    tracing::warn!(channel = channel.as_str(), app_id, reason = %why, "a channel refused the app's sign-in credentials");
                    refuse(StatusCode::BAD_GATEWAY, "channel_rejected_credentials", "the channel refused the platform's credentials for this app; the platform's operators have been told")
                }
                ChannelError::Unavailable(why) => {
                    tracing::warn!(channel = channel.as_str(), app_id, reason = %why, "a channel's sign-in failed");
                    refuse(
                        StatusCode::BAD_GATEWAY,
                        "channel_unavailable",
                        "the channel's platform did not answer usably; try again shortly",
                    )
                }
            };
            audit(r.code, None).await?;
            return Err(r);
        }
    };
    let p = users::pseudonyms(
        &app.master,
        channel,
        app_id,
        &user.subject,
        user.union.as_deref(),
    );
    drop(user);
    let uid = users::link(&app.store.pool, channel, app_id, &p, now).await?;
    let h = Holder {
        user: uid.clone(),
        channel: channel.as_str().to_string(),
        app_id: app_id.to_string(),
    };
    let answer = token_pair(&app, &s, &si, &h, None, now).await;
    audit(
        if answer.is_ok() {
            "ok"
        } else {
            "signin_keys_missing"
        },
        Some(uid),
    )
    .await?;
    answer
}

/// A refresh token and the app it was issued to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshInput {
    pub app_id: AppId,
    pub refresh_token: String,
}

pub async fn refresh(
    State(app): State<AppState>,
    Input(input): Input<RefreshInput>,
) -> Signed<Json<Value>> {
    let (s, si) = settings(&app).await?;
    let now = app.now();
    let app_id = input.app_id.as_str();
    let used = tokens::use_refresh(&app.store.pool, &input.refresh_token, app_id, now).await?;
    let (h, family) = match used {
        Ok(x) => x,
        Err(why) => {
            let r = match why {
                RefreshRefused::Invalid => refuse(StatusCode::UNAUTHORIZED, "invalid_refresh_token", "the refresh token is unknown, expired, revoked or not this app's; sign in again"),
                RefreshRefused::Reused => refuse(StatusCode::UNAUTHORIZED, "refresh_token_reused", "this refresh token was used before; every token of its sign-in is now revoked — sign in again"),
            };
            let e = Event {
                event: "refresh",
                channel: "",
                app_id,
                user_id: None,
                outcome: r.code,
            };
            users::record(&app.store.pool, &e, now).await?;
            return Err(r);
        }
    };
    let answer = token_pair(&app, &s, &si, &h, Some(&family), now).await;
    let e = Event {
        event: "refresh",
        channel: &h.channel,
        app_id,
        user_id: Some(&h.user),
        outcome: if answer.is_ok() {
            "ok"
        } else {
            "signin_keys_missing"
        },
    };
    users::record(&app.store.pool, &e, now).await?;
    answer
}

/// Sign-out: the refresh token's whole family is revoked. Answers 200 whether or not the
/// token was known (RFC 7009), so it tells nothing about tokens.
pub async fn revoke(
    State(app): State<AppState>,
    Input(input): Input<RefreshInput>,
) -> Signed<Json<Value>> {
    let now = app.now();
    let app_id = input.app_id.as_str();
    if let Some(h) = tokens::revoke(&app.store.pool, &input.refresh_token, app_id, now).await? {
        let e = Event {
            event: "logout",
            channel: &h.channel,
            app_id,
            user_id: Some(&h.user),
            outcome: "ok",
        };
        users::record(&app.store.pool, &e, now).await?;
    }
    Ok(Json(json!({"revoked": true})))
}

/// `GET /.well-known/jwks.json`: the keys unified tokens are signed with.
pub async fn jwks(State(app): State<AppState>) -> Signed<Response> {
    let keys = identity_keys(&app).await?;
    let mut r = Json(keys::jwks(&keys, app.now())).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(r)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `POST /v1/h5/ticket` with the user's access token: a one-time ticket for a web-view URL.
pub async fn ticket(State(app): State<AppState>, headers: HeaderMap) -> Signed<Json<Value>> {
    let (s, _) = settings(&app).await?;
    let now = app.now();
    let Some(token) = bearer(&headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "send the access token as `Authorization: Bearer …`",
        ));
    };
    let keys = identity_keys(&app).await?;
    let claims = match keys::verify(&keys, now, token, &s.token_issuer, &s.token_audience) {
        Ok(c) => c,
        Err(Refused::Expired) => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the access token has expired; refresh it",
            ))
        }
        Err(Refused::Invalid) => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the access token is not valid",
            ))
        }
    };
    let claim = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let h = Holder {
        user: claim("sub"),
        channel: claim("chn"),
        app_id: claim("app"),
    };
    let t = tokens::issue_ticket(&app.store.pool, &h, now).await?;
    Ok(Json(json!({"ticket": t, "expires_in": super::TICKET_TTL})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnterQuery {
    /// The ticket from `POST /v1/h5/ticket`.
    pub ticket: String,
    /// The page: a path under `/h5/`.
    pub to: String,
}

/// The H5 prefix of `to` (`/h5/agency-a`), when `to` is a clean path under `/h5/`.
pub fn h5_prefix(to: &str) -> Option<&str> {
    if to.len() > 2048
        || !to.starts_with("/h5/")
        || to.bytes().any(|b| !b.is_ascii_graphic() || b == b'\\')
    {
        return None;
    }
    let path = to.split(['?', '#']).next().unwrap_or(to);
    if path.contains("//") || path.split('/').any(|seg| seg == ".." || seg == ".") {
        return None;
    }
    let agency_end = path[4..].find('/').map_or(path.len(), |i| i + 4);
    let prefix = &to[..agency_end];
    (prefix.len() > 4).then_some(prefix)
}

/// `GET /v1/h5/enter?ticket=…&to=/h5/agency/page`: redeems the ticket once, sets the session
/// cookie for that agency's prefix and redirects to the page.
pub async fn enter(State(app): State<AppState>, Params(q): Params<EnterQuery>) -> Signed<Response> {
    let Some(prefix) = h5_prefix(&q.to) else {
        return Err(ApiError::invalid(
            "to",
            "expected a path under /h5/ (e.g. /h5/agency/page), without `..` or `//`",
        )
        .into());
    };
    let (s, si) = settings(&app).await?;
    let now = app.now();
    let Some(h) = tokens::redeem_ticket(&app.store.pool, &q.ticket, now).await? else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_ticket",
            "the ticket is unknown, used or expired; open the page from the mini-program again",
        ));
    };
    let keys = identity_keys(&app).await?;
    let Some(key) = keys::signer(&keys) else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "signin_keys_missing",
            "the platform has no signing key yet",
        ));
    };
    let audience = format!("{}{}", s.token_audience, super::H5_AUDIENCE_SUFFIX);
    let claims = tokens::claims(
        &s.token_issuer,
        &audience,
        &h.user,
        &h.channel,
        &h.app_id,
        now,
        si.session_ttl,
    );
    let session = keys::sign(&app.master, key, &claims).map_err(ApiError::internal)?;
    let cookie = format!(
        "{}={session}; Path={prefix}; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        super::SESSION_COOKIE,
        si.session_ttl
    );
    let e = Event {
        event: "h5_enter",
        channel: &h.channel,
        app_id: &h.app_id,
        user_id: Some(&h.user),
        outcome: "ok",
    };
    users::record(&app.store.pool, &e, now).await?;
    let mut r = StatusCode::FOUND.into_response();
    let hv = |v: &str| HeaderValue::from_str(v).map_err(ApiError::internal);
    r.headers_mut().insert(header::LOCATION, hv(&q.to)?);
    r.headers_mut().insert(header::SET_COOKIE, hv(&cookie)?);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Administration

/// An app's sign-in credentials (each channel needs its own; see `docs/signin.md`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsInput {
    /// WeChat AppSecret, Baidu App Secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Baidu App Key.
    #[serde(default)]
    pub app_key: Option<String>,
    /// Alipay: the app's RSA private key (PKCS#8 PEM or base64).
    #[serde(default)]
    pub private_key: Option<String>,
    /// Where the channel's platform is called (default: the channel's own address).
    #[serde(default)]
    pub endpoint: Option<String>,
}

pub async fn set_credentials(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Input(input): Input<CredentialsInput>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::TokenKeyWrite)?;
    if let Some(e) = &input.endpoint {
        channels::check_endpoint(e).map_err(|m| ApiError::invalid("endpoint", m))?;
    }
    let creds = Credentials {
        secret: input.secret,
        app_key: input.app_key,
        private_key: input.private_key,
    };
    let master = &app.master;
    let c = commit(&app, &Actor::from(&p), "app.signin.set", |s, now| {
        let a = s
            .apps
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| ApiError::NotFound("no such app".into()))?;
        creds
            .check(a.channel)
            .map_err(|(f, m)| ApiError::invalid(f, m))?;
        let plain = serde_json::to_vec(&creds).map_err(ApiError::internal)?;
        a.sealed_signin = Some(master.seal(&format!("app-signin:{}", a.id), &plain));
        a.signin_endpoint = input.endpoint;
        a.updated_at = now;
        Ok(Touched::new(kind::APP, id.clone()))
    })
    .await?;
    Ok(Json(c.after.unwrap_or(Value::Null)))
}

pub async fn delete_credentials(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::TokenKeyWrite)?;
    let c = commit(&app, &Actor::from(&p), "app.signin.delete", |s, now| {
        let a = s
            .apps
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| ApiError::NotFound("no such app".into()))?;
        a.sealed_signin = None;
        a.signin_endpoint = None;
        a.updated_at = now;
        Ok(Touched::new(kind::APP, id.clone()))
    })
    .await?;
    Ok(Json(c.after.unwrap_or(Value::Null)))
}

pub async fn list_keys(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.authorize(Action::TokenKeyRead)?;
    let keys = store::resources_of_kind::<IdentityKey>(&app.store.pool, kind::IDENTITY_KEY).await?;
    Ok(items(
        keys.iter()
            .map(|k| public_view(serde_json::to_value(k).unwrap_or(Value::Null)))
            .collect(),
    ))
}

/// How long the key a rotation replaces stays in the key set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// Seconds (at least the access-token lifetime, so every token it signed can expire;
    /// default: twice that lifetime).
    #[serde(default)]
    pub overlap: Option<i64>,
    /// What the new key signs with: `ES256` (default) or `SM2` (国密, `docs/guomi.md`).
    #[serde(default)]
    pub alg: Option<String>,
}

pub async fn rotate(
    State(app): State<AppState>,
    p: Principal,
    Input(input): Input<RotateInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.authorize(Action::TokenKeyWrite)?;
    let alg = match input.alg.as_deref() {
        None => keys::KeyAlg::Es256,
        Some(a) => keys::KeyAlg::parse(a)
            .ok_or_else(|| ApiError::invalid("alg", "expected ES256 or SM2"))?,
    };
    let master = &app.master;
    let c = commit(&app, &Actor::from(&p), "identity-key.rotate", |s, now| {
        let ttl = s.settings.signin.as_ref().map_or(900, |si| si.access_ttl);
        let overlap = input.overlap.unwrap_or(2 * ttl);
        if overlap < ttl || overlap > 30 * 86400 {
            return Err(ApiError::invalid(
                "overlap",
                format!("expected {ttl} (the access-token lifetime) to 2592000 seconds"),
            ));
        }
        let key = keys::generate(master, now, alg).map_err(ApiError::internal)?;
        let id = key.id.clone();
        let mut touched = Touched::new(kind::IDENTITY_KEY, id.clone());
        for k in s
            .identity_keys
            .iter_mut()
            .filter(|k| k.status == KeyStatus::Active)
        {
            match k.retire_at {
                None => k.retire_at = Some(now + overlap),
                Some(t) if t <= now => k.status = KeyStatus::Retired,
                Some(_) => continue,
            }
            k.updated_at = now;
            touched = touched.and(kind::IDENTITY_KEY, k.id.clone());
        }
        s.identity_keys.push(key);
        Ok(touched)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(c.after.unwrap_or(Value::Null))))
}

/// Revokes a key at once (compromise): every token it signed is refused on every gateway.
pub async fn revoke_key(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::TokenKeyWrite)?;
    let c = commit(&app, &Actor::from(&p), "identity-key.revoke", |s, now| {
        let k = s
            .identity_keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| ApiError::NotFound("no such identity key".into()))?;
        k.status = KeyStatus::Revoked;
        k.updated_at = now;
        Ok(Touched::new(kind::IDENTITY_KEY, id.clone()))
    })
    .await?;
    Ok(Json(c.after.unwrap_or(Value::Null)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// At most this many (1 to 1000; default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `GET /v1/audit/signins`: the newest sign-in events (audit admin).
pub async fn events(
    State(app): State<AppState>,
    p: Principal,
    Params(q): Params<EventsQuery>,
) -> ApiResult<Json<Value>> {
    p.authorize(Action::AuditRead)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(items(users::recent(&app.store.pool, limit).await?))
}

#[cfg(test)]
mod tests {
    use super::h5_prefix;

    #[test]
    fn only_clean_paths_under_h5_are_entered() {
        assert_eq!(h5_prefix("/h5/agency-a/page?x=1"), Some("/h5/agency-a"));
        assert_eq!(h5_prefix("/h5/agency-a"), Some("/h5/agency-a"));
        for bad in [
            "https://evil.example/h5/a",
            "//evil.example/h5/",
            "/h5/",
            "/h5//x",
            "/h5/a/../b",
            "/api/x",
            "/h5/a\\b",
        ] {
            assert_eq!(h5_prefix(bad), None, "{bad}");
        }
    }
}
