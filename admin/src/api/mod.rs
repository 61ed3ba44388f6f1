//! The REST API: the endpoint table (the single list the router and the OpenAPI document are
//! built from), request extractors that turn bad input into `422` with field paths, and the
//! JSON answers for unknown paths (404) and methods (405).
//!
//! Handlers are thin: authorize, then hand the change to `crate::commit` (configuration) or
//! `crate::commit::begin_write` (accounts, node tokens). Handlers live by resource group:
//! [`resources`], [`services`], [`accounts`], [`audit`]; the gateway-facing endpoints are in
//! `crate::dataplane`, the reports in `crate::exports`.

pub mod accounts;
pub mod audit;
pub mod resources;
pub mod services;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::Value;

use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::authz::{Action, Principal};
use crate::error::{ApiError, ApiResult};

/// The largest request body an endpoint reads, unless it sets its own ([`BodyLimit`]).
pub const BODY_LIMIT: usize = 2 << 20;
/// `POST /v1/dataplane/audit` takes batches of up to 10 000 records.
pub const AUDIT_BODY_LIMIT: usize = 16 << 20;

/// The body limit of an endpoint, in the request extensions, so a `413` can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// `2 MiB`, `16 MiB`, or bytes.
fn human_size(n: usize) -> String {
    if n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// A JSON body, parsed with the path of the first bad field on error (`422 invalid`; a body
/// that is not JSON at all is `422` too, at the path where parsing stopped). An empty body reads
/// as `{}` (a blank one is refused). A body must be a JSON object sent as `application/json` (or `…+json`): anything
/// else is `415`; a body over the endpoint's limit is `413` naming the limit.
pub struct Input<T>(pub T);

fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The path serde reports, with the field a `missing field `x`` error is about appended.
fn error_path(path: &str, msg: &str) -> String {
    let path = if path == "." { "" } else { path };
    let missing = msg
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match missing {
        Some(field) if path.is_empty() => field.to_string(),
        Some(field) => format!("{path}.{field}"),
        None => path.to_string(),
    }
}

/// How much of a body over the limit is still read (and thrown away) before the `413` goes
/// out, and for how long at most. A server that answers while the client is still sending, and
/// closes, makes the kernel reset the connection over the unread bytes: the client then sees a
/// broken connection instead of the `413` (nginx discards such bodies for the same reason).
/// Past these bounds the connection is simply closed.
const DISCARD_AT_MOST: usize = 64 << 20;
const DISCARD_FOR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request body of at most `limit` bytes; over it, discards the rest (see
/// [`DISCARD_AT_MOST`]) and answers `413` naming the limit.
async fn read_body(req: Request, limit: usize) -> ApiResult<Bytes> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    let too_large = || ApiError::TooLarge(human_size(limit));
    let mut seen = 0usize;
    let mut buf = Vec::new();
    if declared.is_none_or(|n| n <= limit as u64) {
        loop {
            let Some(frame) = next_frame(&mut body).await else {
                return Ok(Bytes::from(buf));
            };
            let data =
                frame.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
            seen += data.len();
            if seen > limit {
                break;
            }
            buf.extend_from_slice(&data);
        }
    }
    drop(buf);
    let discard = async {
        while seen <= DISCARD_AT_MOST {
            match next_frame(&mut body).await {
                Some(Ok(data)) => seen += data.len(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_FOR_AT_MOST, discard).await;
    Err(too_large())
}

/// The next data of `body` (empty for a trailers frame); `None` at its end.
async fn next_frame(body: &mut axum::body::Body) -> Option<Result<Bytes, axum::Error>> {
    use axum::body::HttpBody;
    let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
    Some(frame.map(|f| f.into_data().unwrap_or_default()))
}

/// `#[serde(deserialize_with = "crate::api::object")]` for an optional nested object of an
/// input: serde's derived structs also accept a JSON array (the fields by position), which the
/// schema does not allow, so `{"load": []}` would pass as `{"load": {}}`. This accepts only an
/// object or `null`, and hands the object's entries straight to `T` (so an error inside still
/// names its full path).
pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct ObjectOrNull<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_option(ObjectOrNull(std::marker::PhantomData))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Input<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> ApiResult<Self> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(BODY_LIMIT, |l| l.0);
        let json = is_json(req.headers().get(axum::http::header::CONTENT_TYPE));
        let bytes = read_body(req, limit).await?;
        let bytes = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None if bytes.is_empty() => Bytes::from_static(b"{}"),
            None => {
                return Err(ApiError::invalid(
                    "",
                    "the body is blank; send a JSON object or nothing",
                ))
            }
            Some(_) if !json => {
                return Err(ApiError::UnsupportedMediaType(
                    "send the body as JSON with `Content-Type: application/json`".into(),
                ))
            }
            Some(b'{') => bytes,
            Some(_) => {
                return Err(ApiError::invalid(
                    "",
                    "the body must be a JSON object (`{…}`)",
                ))
            }
        };
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(Input)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                let msg = match msg.find(" at line ") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                };
                ApiError::invalid(error_path(&path, &msg), msg)
            })
    }
}

/// A query string, parsed; a bad one is `400`.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
    }
}

/// One endpoint: what the OpenAPI document says about it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Who may call it: `public`, `node token`, `any signed-in account`, or role names.
    pub access: &'static str,
    /// Whether it takes a JSON body.
    pub body: bool,
    /// The action a session must be allowed (checked before the body is read); `None` for
    /// public, node-token and own-account endpoints.
    pub action: Option<Action>,
}

macro_rules! ep {
    ($m:literal, $p:literal, $tag:literal, $access:literal, $body:literal, $summary:literal) => {
        Endpoint {
            method: $m,
            path: $p,
            tag: $tag,
            summary: $summary,
            access: $access,
            body: $body,
            action: None,
        }
    };
    ($m:literal, $p:literal, $tag:literal, $action:ident, $access:literal, $body:literal, $summary:literal) => {
        Endpoint {
            method: $m,
            path: $p,
            tag: $tag,
            summary: $summary,
            access: $access,
            body: $body,
            action: Some(Action::$action),
        }
    };
}

/// Every endpoint with its handler. The router and `/openapi.json` are both built from this.
pub fn endpoints() -> Vec<(Endpoint, MethodRouter<AppState>)> {
    use crate::alerts::api as al;
    use crate::inspection::api as ins;
    use crate::verification::api as vf;
    use accounts as ac;
    use resources as rs;
    use services as sv;
    vec![
        (ep!("GET", "/healthz", "meta", "public", false, "Liveness: 200 when the store answers"), get(healthz)),
        (ep!("GET", "/openapi.json", "meta", "public", false, "This OpenAPI document"), get(crate::openapi::handler)),
        (ep!("POST", "/v1/auth/login", "auth", "public", true, "Sign in (password, and TOTP for admin roles); returns a bearer session token"), post(crate::auth::login)),
        (ep!("POST", "/v1/auth/logout", "auth", "any signed-in account", false, "End this session"), post(crate::auth::logout)),
        (ep!("GET", "/v1/auth/me", "auth", "any signed-in account", false, "The signed-in account"), get(crate::auth::me)),
        (ep!("POST", "/v1/auth/password", "auth", "any signed-in account", true, "Change one's own password"), post(crate::auth::change_password)),

        (ep!("GET", "/v1/agencies", "agencies", AgencyRead, "system-admin, security-admin, agency-operator (own)", false, "List agencies"), get(rs::list_agencies)),
        (ep!("POST", "/v1/agencies", "agencies", AgencyWrite, "system-admin", true, "Register an agency"), post(rs::create_agency)),
        (ep!("GET", "/v1/agencies/{id}", "agencies", AgencyRead, "system-admin, security-admin, agency-operator (own)", false, "Get an agency"), get(rs::get_agency)),
        (ep!("PUT", "/v1/agencies/{id}", "agencies", AgencyWrite, "system-admin", true, "Update an agency"), put(rs::update_agency)),
        (ep!("DELETE", "/v1/agencies/{id}", "agencies", AgencyWrite, "system-admin", false, "Delete an agency (only when nothing refers to it)"), delete(rs::delete_agency)),

        (ep!("GET", "/v1/services", "services", ServiceRead, "system-admin, security-admin, agency-operator (own)", false, "List services (`?agency_id=`, `?status=`)"), get(sv::list)),
        (ep!("POST", "/v1/services", "services", ServiceWrite, "system-admin, agency-operator (own)", true, "Register a service (draft)"), post(sv::create)),
        (ep!("GET", "/v1/services/{id}", "services", ServiceRead, "system-admin, security-admin, agency-operator (own)", false, "Get a service"), get(sv::get_one)),
        (ep!("PUT", "/v1/services/{id}", "services", ServiceWrite, "system-admin, agency-operator (own; draft or offline only)", true, "Update a service"), put(sv::update)),
        (ep!("DELETE", "/v1/services/{id}", "services", ServiceWrite, "system-admin, agency-operator (own; not published)", false, "Delete a service without routes or limits"), delete(sv::remove)),
        (ep!("POST", "/v1/services/{id}/submit", "services", ServiceSubmit, "system-admin, agency-operator (own)", false, "Submit for verification: draft|offline|returned → submitted"), post(sv::submit)),
        (ep!("POST", "/v1/services/{id}/verifications", "verification", VerificationRun, "system-admin, security-admin", true, "Verify a submitted service (接口核验: connectivity, load, data sensitivity, baseline); a failure returns it to its agency"), post(vf::run_for_service)),
        (ep!("POST", "/v1/services/{id}/publish", "services", ServicePublish, "system-admin", true, "Publish on channels (and apps): → published; a service not yet published needs a passing (or overridden) verification of its current definition"), post(sv::publish)),
        (ep!("POST", "/v1/services/{id}/offline", "services", ServicePublish, "system-admin", true, "Withdraw from channels (all by default)"), post(sv::offline)),
        (ep!("POST", "/v1/services/{id}/reject", "services", ServicePublish, "system-admin", true, "Send a submitted service back: submitted → draft"), post(sv::reject)),

        (ep!("POST", "/v1/services/{id}/revisions", "revisions", ServiceWrite, "system-admin, agency-operator (own)", false, "Open a revision of a published service: a copy of its live definition to edit while it keeps serving"), post(crate::revisions::open)),
        (ep!("GET", "/v1/revisions", "revisions", ServiceRead, "system-admin, security-admin, agency-operator (own)", false, "List revisions (`?service_id=`)"), get(crate::revisions::list)),
        (ep!("GET", "/v1/revisions/{id}", "revisions", ServiceRead, "system-admin, security-admin, agency-operator (own)", false, "Get a revision"), get(crate::revisions::get_one)),
        (ep!("PUT", "/v1/revisions/{id}", "revisions", ServiceWrite, "system-admin, agency-operator (own; draft or returned)", true, "Replace a revision's upstream, capacity, masking and routes"), put(crate::revisions::update)),
        (ep!("POST", "/v1/revisions/{id}/submit", "revisions", ServiceSubmit, "system-admin, agency-operator (own)", false, "Submit a revision for verification: draft|returned → submitted"), post(crate::revisions::submit)),
        (ep!("POST", "/v1/revisions/{id}/verifications", "verification", VerificationRun, "system-admin, security-admin", true, "Verify a submitted revision; a failure returns it to its agency"), post(crate::revisions::verify)),
        (ep!("POST", "/v1/revisions/{id}/apply", "revisions", ServicePublish, "system-admin", false, "Replace the live definition with the verified revision, in one config version"), post(crate::revisions::apply_now)),
        (ep!("POST", "/v1/revisions/{id}/discard", "revisions", ServiceWrite, "system-admin, agency-operator (own)", false, "Discard an open revision"), post(crate::revisions::discard)),

        (ep!("GET", "/v1/verifications", "verification", VerificationRead, "system-admin, security-admin, audit-admin, agency-operator (own)", false, "Verification runs, newest first (`?service_id=`, `?limit=`)"), get(vf::list)),
        (ep!("GET", "/v1/verifications/{id}", "verification", VerificationRead, "system-admin, security-admin, audit-admin, agency-operator (own)", false, "One verification with every check's findings and evidence"), get(vf::get_one)),
        (ep!("POST", "/v1/verifications/{id}/override", "verification", VerificationOverride, "security-admin", true, "Let a failed verification go live, with a written reason (admin audit)"), post(vf::override_failure)),

        (ep!("GET", "/v1/routes", "routes", RouteRead, "system-admin, security-admin, agency-operator (own)", false, "List routes (interfaces) (`?service_id=`)"), get(rs::list_routes)),
        (ep!("POST", "/v1/routes", "routes", RouteWrite, "system-admin, agency-operator (own)", true, "Register a route (interface) of a service"), post(rs::create_route)),
        (ep!("GET", "/v1/routes/{id}", "routes", RouteRead, "system-admin, security-admin, agency-operator (own)", false, "Get a route"), get(rs::get_route)),
        (ep!("PUT", "/v1/routes/{id}", "routes", RouteWrite, "system-admin, agency-operator (own)", true, "Update a route"), put(rs::update_route)),
        (ep!("DELETE", "/v1/routes/{id}", "routes", RouteWrite, "system-admin, agency-operator (own)", false, "Delete a route"), delete(rs::delete_route)),

        (ep!("GET", "/v1/apps", "apps", AppRead, "system-admin, security-admin, agency-operator", false, "List mini-program apps"), get(rs::list_apps)),
        (ep!("POST", "/v1/apps", "apps", AppWrite, "system-admin", true, "Register a mini-program app (channel + app id)"), post(rs::create_app)),
        (ep!("GET", "/v1/apps/{id}", "apps", AppRead, "system-admin, security-admin, agency-operator", false, "Get an app"), get(rs::get_app)),
        (ep!("PUT", "/v1/apps/{id}", "apps", AppWrite, "system-admin", true, "Update an app"), put(rs::update_app)),
        (ep!("DELETE", "/v1/apps/{id}", "apps", AppWrite, "system-admin", false, "Delete an app no service is published to"), delete(rs::delete_app)),

        (ep!("GET", "/v1/network-policies", "network-policies", PolicyRead, "system-admin, security-admin, agency-operator (own)", false, "List network policies"), get(rs::list_policies)),
        (ep!("POST", "/v1/network-policies", "network-policies", PolicyWrite, "security-admin", true, "Create an agency's network policy"), post(rs::create_policy)),
        (ep!("GET", "/v1/network-policies/{id}", "network-policies", PolicyRead, "system-admin, security-admin, agency-operator (own)", false, "Get a network policy"), get(rs::get_policy)),
        (ep!("PUT", "/v1/network-policies/{id}", "network-policies", PolicyWrite, "security-admin", true, "Update a network policy"), put(rs::update_policy)),
        (ep!("DELETE", "/v1/network-policies/{id}", "network-policies", PolicyWrite, "security-admin", false, "Delete a network policy no upstream depends on"), delete(rs::delete_policy)),

        (ep!("GET", "/v1/token-keys", "keys", TokenKeyRead, "system-admin, security-admin", false, "List the client-token JWKS entries"), get(rs::list_token_keys)),
        (ep!("POST", "/v1/token-keys", "keys", TokenKeyWrite, "security-admin", true, "Add a JWKS entry (`{\"jwk\":{…}}`)"), post(rs::create_token_key)),
        (ep!("GET", "/v1/token-keys/{id}", "keys", TokenKeyRead, "system-admin, security-admin", false, "Get a JWKS entry"), get(rs::get_token_key)),
        (ep!("DELETE", "/v1/token-keys/{id}", "keys", TokenKeyWrite, "security-admin", false, "Remove a JWKS entry"), delete(rs::delete_token_key)),
        (ep!("POST", "/v1/token-keys/{id}/revoke", "keys", TokenKeyWrite, "security-admin", false, "Revoke a key: tokens it signed are refused on every node"), post(rs::revoke_token_key)),

        (ep!("GET", "/v1/signing-keys", "keys", SigningKeyRead, "system-admin, security-admin, agency-operator (own)", false, "List upstream signing keys (never their secrets)"), get(rs::list_signing_keys)),
        (ep!("POST", "/v1/signing-keys", "keys", SigningKeyWrite, "security-admin", true, "Create an agency's signing key; the secret is shown once"), post(rs::create_signing_key)),
        (ep!("GET", "/v1/signing-keys/{id}", "keys", SigningKeyRead, "system-admin, security-admin, agency-operator (own)", false, "Get a signing key (no secret)"), get(rs::get_signing_key)),
        (ep!("DELETE", "/v1/signing-keys/{id}", "keys", SigningKeyWrite, "security-admin", false, "Delete a signing key"), delete(rs::delete_signing_key)),
        (ep!("POST", "/v1/signing-keys/{id}/retire", "keys", SigningKeyWrite, "security-admin", false, "Retire a key after a rotation"), post(rs::retire_signing_key)),

        (ep!("GET", "/v1/limits", "limits", LimitRead, "system-admin, security-admin, agency-operator (own)", false, "List rate limits"), get(rs::list_limits)),
        (ep!("POST", "/v1/limits", "limits", LimitWrite, "security-admin", true, "Set a service's rate limits"), post(rs::create_limit)),
        (ep!("GET", "/v1/limits/{id}", "limits", LimitRead, "system-admin, security-admin, agency-operator (own)", false, "Get a service's rate limits"), get(rs::get_limit)),
        (ep!("PUT", "/v1/limits/{id}", "limits", LimitWrite, "security-admin", true, "Change a service's rate limits"), put(rs::update_limit)),
        (ep!("DELETE", "/v1/limits/{id}", "limits", LimitWrite, "security-admin", false, "Remove a service's rate limits"), delete(rs::delete_limit)),

        (ep!("GET", "/v1/settings", "settings", SettingsRead, "system-admin, security-admin", false, "Token issuer and audience"), get(rs::get_settings)),
        (ep!("PUT", "/v1/settings", "settings", SettingsWrite, "security-admin", true, "Change the token issuer and audience"), put(rs::put_settings)),
        (ep!("POST", "/v1/secrets/re-encrypt", "settings", SettingsWrite, "security-admin", false, "Re-seal every stored secret with the current cipher (`algorithms.secrets`), online"), post(crate::reencrypt::reencrypt)),
        (ep!("GET", "/v1/config", "settings", ConfigRead, "system-admin, security-admin", false, "The committed gateway config, secrets redacted"), get(rs::get_config)),

        (ep!("GET", "/v1/users", "accounts", UserRead, "system-admin, security-admin", false, "List accounts"), get(ac::list_users)),
        (ep!("POST", "/v1/users", "accounts", UserCreate, "system-admin", true, "Create an account (one role); an admin role takes effect when the security admin grants it"), post(ac::create_user)),
        (ep!("GET", "/v1/users/{id}", "accounts", UserRead, "system-admin, security-admin", false, "Get an account"), get(ac::get_user)),
        (ep!("PUT", "/v1/users/{id}", "accounts", UserWrite, "system-admin (disable/enable, agency), security-admin (role); see docs/admin.md", true, "One change: grant or change the role, disable/enable, or move an operator to another agency"), put(ac::update_user)),
        (ep!("DELETE", "/v1/users/{id}", "accounts", UserWrite, "system-admin; an audit admin needs system-admin and security-admin", false, "Delete an account"), delete(ac::delete_user)),
        (ep!("POST", "/v1/users/{id}/reset-password", "accounts", UserWrite, "system-admin; an audit admin needs system-admin and security-admin", true, "Set a new password; ends the account's sessions"), post(ac::reset_password)),
        (ep!("POST", "/v1/users/{id}/reset-totp", "accounts", UserWrite, "security-admin; an audit admin needs system-admin and security-admin", false, "Forget the account's TOTP secret; its owner enrols a new one at the next sign-in"), post(ac::reset_totp)),
        (ep!("POST", "/v1/users/{id}/unlock", "accounts", UserWrite, "system-admin", false, "Lift a sign-in lockout"), post(ac::unlock_user)),

        (ep!("GET", "/v1/nodes", "nodes", NodeRead, "system-admin, security-admin", false, "List gateway nodes"), get(ac::list_nodes)),
        (ep!("POST", "/v1/nodes", "nodes", NodeWrite, "security-admin", true, "Register a gateway node; its token is shown once"), post(ac::create_node)),
        (ep!("DELETE", "/v1/nodes/{id}", "nodes", NodeWrite, "security-admin", false, "Revoke a node token"), delete(ac::delete_node)),

        (ep!("GET", "/v1/audit/admin", "audit", AuditRead, "audit-admin", false, "Query the admin audit trail (filters, `limit`, `before` cursor)"), get(audit::admin_list)),
        (ep!("GET", "/v1/audit/admin/verify", "audit", AuditRead, "audit-admin", false, "Verify the admin audit hash chain"), get(audit::admin_verify)),
        (ep!("GET", "/v1/audit/admin/{seq}", "audit", AuditRead, "audit-admin", false, "One admin audit record (records cannot be changed or deleted: 405)"), get(audit::admin_one)),
        (ep!("GET", "/v1/audit/requests", "audit", AuditRead, "audit-admin", false, "Query ingested request audit records (filters, `limit`, `before` cursor)"), get(audit::request_list)),

        (ep!("GET", "/v1/exports/interfaces", "exports", ExportInterfaces, "system-admin, agency-operator (own)", false, "注册接口信息表: registered interfaces (`?format=csv|json`)"), get(crate::exports::interfaces)),
        (ep!("GET", "/v1/exports/network-policies", "exports", ExportPolicies, "system-admin, security-admin", false, "网络策略清单: network policy inventory (`?format=csv|json`)"), get(crate::exports::policies)),
        (ep!("GET", "/v1/exports/accounts", "exports", ExportAccounts, "system-admin, security-admin", false, "账户权限配置清单: accounts and permissions (`?format=csv|json`)"), get(crate::exports::accounts)),

        (ep!("GET", "/v1/alerts", "alerts", AlertRead, "security-admin, audit-admin", false, "List alerts, newest first (`?state=`, `?rule=`, `?severity=`, `?limit=`)"), get(al::list)),
        (ep!("GET", "/v1/alerts/{id}", "alerts", AlertRead, "security-admin, audit-admin", false, "Get an alert with its evidence, notes, deliveries and automatic responses"), get(al::get_one)),
        (ep!("POST", "/v1/alerts/{id}/acknowledge", "alerts", AlertWrite, "security-admin", true, "Acknowledge an open alert, with a note"), post(al::acknowledge)),
        (ep!("POST", "/v1/alerts/{id}/resolve", "alerts", AlertWrite, "security-admin", true, "Resolve an alert, with a note"), post(al::resolve)),
        (ep!("GET", "/v1/alert-settings", "alerts", AlertRead, "security-admin, audit-admin", false, "Detector settings: rules, per-service overrides, working hours"), get(al::get_settings)),
        (ep!("PUT", "/v1/alert-settings", "alerts", AlertWrite, "security-admin", true, "Change the detector settings"), put(al::put_settings)),
        (ep!("GET", "/v1/alert-destinations", "alerts", AlertRead, "security-admin, audit-admin", false, "List alert destinations (never their URLs' keys or secrets)"), get(al::list_destinations)),
        (ep!("POST", "/v1/alert-destinations", "alerts", AlertWrite, "security-admin", true, "Add a webhook, WeCom or DingTalk robot destination; its secret is never shown again"), post(al::create_destination)),
        (ep!("DELETE", "/v1/alert-destinations/{id}", "alerts", AlertWrite, "security-admin", false, "Remove an alert destination"), delete(al::delete_destination)),
        (ep!("GET", "/v1/alert-blocks", "alerts", AlertRead, "security-admin, audit-admin", false, "Temporary denies of client IPs in force"), get(al::list_blocks)),
        (ep!("DELETE", "/v1/alert-blocks/{id}", "alerts", AlertWrite, "security-admin", false, "Lift a temporary deny before it expires"), delete(al::lift_block)),

        (ep!("POST", "/v1/inspections", "inspection", InspectionWrite, "system-admin", false, "Inspect every published service now (巡检); answers with the results"), post(ins::run_now)),
        (ep!("GET", "/v1/inspections", "inspection", InspectionRead, "system-admin, security-admin, audit-admin", false, "List inspections, newest first (`?limit=`)"), get(ins::list)),
        (ep!("GET", "/v1/inspections/{id}", "inspection", InspectionRead, "system-admin, security-admin, audit-admin", false, "One inspection with every probe and the 24-hour traffic per service"), get(ins::get_one)),
        (ep!("GET", "/v1/faults", "inspection", InspectionRead, "system-admin, security-admin, audit-admin", false, "Fault records (故障记录), newest first (`?state=`, `?service_id=`, `?cause=`, `?limit=`)"), get(ins::list_faults)),
        (ep!("GET", "/v1/faults/{id}", "inspection", InspectionRead, "system-admin, security-admin, audit-admin", false, "One fault record"), get(ins::get_fault)),
        (ep!("POST", "/v1/faults/{id}/close", "inspection", InspectionWrite, "system-admin", true, "Close an open fault record with a note"), post(ins::close_fault)),
        (ep!("GET", "/v1/inspection-settings", "inspection", InspectionRead, "system-admin, security-admin, audit-admin", false, "Inspection settings: daily time, timeouts, thresholds"), get(ins::get_settings)),
        (ep!("PUT", "/v1/inspection-settings", "inspection", InspectionWrite, "system-admin", true, "Change the inspection settings"), put(ins::put_settings)),
        (ep!("GET", "/v1/active-users", "reports", ReportRead, "system-admin, security-admin, audit-admin", false, "Daily and monthly active users per channel and in total (`?day=YYYY-MM-DD`, `?month=YYYY-MM`)"), get(crate::active_users::api::get)),

        (ep!("POST", "/v1/reports", "reports", ReportWrite, "system-admin, security-admin", true, "Generate a report (每日巡检报告, 系统运行状态监控分析报告, 服务上线记录表, 安全监测月报) and keep it"), post(crate::reports::api::generate)),
        (ep!("GET", "/v1/reports", "reports", ReportRead, "system-admin, security-admin, audit-admin", false, "Kept reports, newest first (`?kind=`, `?limit=`)"), get(crate::reports::api::list)),
        (ep!("GET", "/v1/reports/{id}", "reports", ReportRead, "system-admin, security-admin, audit-admin", false, "Download a report (`?format=html|csv|json`)"), get(crate::reports::api::download)),

        (ep!("POST", "/v1/login/{channel}", "signin", "public", true, "Sign in with a channel's one-time code (`wechat`, `alipay`, `baidu`); answers the unified token and a refresh token. Reached through a gateway's sign-in route"), post(crate::identity::api::login)),
        (ep!("POST", "/v1/token/refresh", "signin", "public", true, "Trade a refresh token for a new pair (the old one is used up; reusing it revokes its sign-in)"), post(crate::identity::api::refresh)),
        (ep!("POST", "/v1/token/revoke", "signin", "public", true, "Sign out: revoke a refresh token and every token of its sign-in"), post(crate::identity::api::revoke)),
        (ep!("GET", "/.well-known/jwks.json", "signin", "public", false, "The platform's token signing keys (JWKS)"), get(crate::identity::api::jwks)),
        (ep!("POST", "/v1/h5/ticket", "signin", "public", false, "A one-time ticket for an H5 page (`Authorization: Bearer <access token>`)"), post(crate::identity::api::ticket)),
        (ep!("GET", "/v1/h5/enter", "signin", "public", false, "Redeem a ticket: sets the H5 session cookie for the page's prefix and redirects to `to`"), get(crate::identity::api::enter)),
        (ep!("PUT", "/v1/apps/{id}/signin", "apps", TokenKeyWrite, "security-admin", true, "Set an app's sign-in credentials (sealed; never shown again)"), put(crate::identity::api::set_credentials)),
        (ep!("DELETE", "/v1/apps/{id}/signin", "apps", TokenKeyWrite, "security-admin", false, "Remove an app's sign-in credentials"), delete(crate::identity::api::delete_credentials)),
        (ep!("GET", "/v1/identity-keys", "keys", TokenKeyRead, "system-admin, security-admin", false, "The platform's token signing keys (public parts)"), get(crate::identity::api::list_keys)),
        (ep!("POST", "/v1/identity-keys/rotate", "keys", TokenKeyWrite, "security-admin", true, "Make a new signing key; the old one stays in the key set for `overlap` seconds"), post(crate::identity::api::rotate)),
        (ep!("POST", "/v1/identity-keys/{id}/revoke", "keys", TokenKeyWrite, "security-admin", false, "Revoke a signing key now: tokens it signed are refused everywhere"), post(crate::identity::api::revoke_key)),
        (ep!("GET", "/v1/audit/signins", "audit", AuditRead, "audit-admin", false, "The newest sign-in events (no channel ids)"), get(crate::identity::api::events)),

        (ep!("GET", "/v1/dataplane/watch", "dataplane", "node token", false, "Long-poll for a config newer than `?version=N` (200 with config, or 304 after ~25 s)"), get(crate::dataplane::watch)),
        (ep!("POST", "/v1/dataplane/audit", "dataplane", "node token", true, "Ingest a request-audit batch (idempotent by node, segment, offset)"), post(crate::dataplane::ingest)),
    ]
}

async fn healthz(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> ApiResult<Json<Value>> {
    let v = crate::store::current_version(&app.store.pool).await?;
    Ok(Json(
        serde_json::json!({"status": "ok", "config_version": v}),
    ))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Authenticates the session and checks the endpoint's action before anything else runs (the
/// body is not even read for a role that may not call the endpoint). The principal is handed
/// to the handler in the request extensions.
async fn guard(app: AppState, action: Action, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let p = match Principal::from_request_parts(&mut parts, &app).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = p.authorize(action) {
        let path = format!("{} {}", parts.method, parts.uri.path());
        crate::authz::record_refusal(&app, &p, &action.name(), "endpoint", &path, "role").await;
        return e.into_response();
    }
    let path = format!("{} {}", parts.method, parts.uri.path());
    let id = parts.uri.path().split('/').nth(3).map(str::to_string);
    parts.extensions.insert(p.clone());
    let resp = next.run(Request::from_parts(parts, body)).await;
    // An agency operator reaching for another agency's resource is answered 404, as if it did
    // not exist: a refusal all the same, and recorded as one.
    if resp.status() == axum::http::StatusCode::NOT_FOUND {
        if let (Some(own), Some(id)) = (p.own_agency(), id) {
            if let Ok(Some(owner)) = crate::store::resource_agency(&app.store.pool, &id).await {
                if owner != own {
                    crate::authz::record_refusal(
                        &app,
                        &p,
                        &action.name(),
                        "endpoint",
                        &path,
                        "another agency's resource",
                    )
                    .await;
                }
            }
        }
    }
    resp
}

/// The router over [`endpoints`].
pub fn router(app: AppState) -> Router {
    let mut r = Router::new();
    for (e, mr) in endpoints() {
        let mr = match e.action {
            Some(action) => {
                let state = app.clone();
                mr.route_layer(axum::middleware::from_fn(
                    move |req: Request, next: Next| guard(state.clone(), action, req, next),
                ))
            }
            None => mr,
        };
        let limit = if e.path == "/v1/dataplane/audit" {
            AUDIT_BODY_LIMIT
        } else {
            BODY_LIMIT
        };
        let mr = mr
            .layer::<_, std::convert::Infallible>(axum::extract::DefaultBodyLimit::max(limit))
            .layer::<_, std::convert::Infallible>(axum::Extension(BodyLimit(limit)));
        r = r.route(e.path, mr);
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// `{"items": [...]}`.
pub fn items(v: Vec<Value>) -> Json<Value> {
    Json(serde_json::json!({ "items": v }))
}
