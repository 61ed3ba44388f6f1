//! `/openapi.json`: an OpenAPI 3.1 document built from the endpoint table
//! (`crate::api::endpoints`), so every route the router serves is described — a test checks it —
//! with request, response and query-parameter schemas derived (utoipa) from the very types the
//! handlers parse and store, the one error shape, and every status a handler can answer.
//!
//! This module only describes; it may not decide anything the router or a handler decides.

use axum::Json;
use serde_json::{json, Map, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::{IntoParams, ToSchema};

use crate::model::*;

/// What an operation takes and answers, beyond the endpoint table.
#[derive(Default)]
struct Shape {
    request: Option<Value>,
    /// The success body: a schema, `None` for no body (204) or a described object.
    response: Option<Value>,
    /// The success body is `{"items": [...]}` of `response`.
    list: bool,
    query: Vec<Value>,
    /// Extra media types of the success answer (exports: CSV).
    csv: bool,
    /// The success answer may be HTML (reports).
    html: bool,
}

/// Component schemas, collected as operations refer to them.
#[derive(Default)]
struct Schemas(Map<String, Value>);

impl Schemas {
    fn add(&mut self, name: &str, schema: impl serde::Serialize) {
        if let Ok(v) = serde_json::to_value(schema) {
            self.0.insert(name.to_string(), v);
        }
    }

    /// Registers `T` (and what it refers to) and returns a reference to it.
    fn of<T: ToSchema>(&mut self) -> Value {
        let mut deps = Vec::new();
        T::schemas(&mut deps);
        for (n, s) in deps {
            self.add(&n, s);
        }
        let name = T::name();
        self.add(&name, T::schema());
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn params<P: IntoParams>(&mut self) -> Vec<Value> {
        P::into_params(|| Some(ParameterIn::Query))
            .into_iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect()
    }
}

const VERIFICATION: &str = "A verification: id, service_id, revision_id, digest, result (passed, failed, overridden), requested_by, times, summary, override, and checks (connectivity, load, sensitivity, baseline: result and findings with evidence)";

fn object(description: &str) -> Value {
    json!({"type": "object", "description": description})
}

/// The request and response types of each operation: the handlers' own.
fn shape(method: &str, path: &str, s: &mut Schemas) -> Shape {
    use crate::api::{accounts as ac, audit as au, resources as rs, services as sv};
    let one = |r: Value| Shape {
        response: Some(r),
        ..Shape::default()
    };
    let with = |req: Value, r: Value| Shape {
        request: Some(req),
        response: Some(r),
        ..Shape::default()
    };
    let list = |r: Value, query: Vec<Value>| Shape {
        response: Some(r),
        list: true,
        query,
        ..Shape::default()
    };
    let none = Shape::default;
    match (method, path) {
        ("GET", "/healthz") => one(
            json!({"type": "object", "required": ["status", "config_version"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}, "config_version": {"type": "integer"}}}),
        ),
        ("GET", "/openapi.json") => one(object("An OpenAPI 3.1 document")),
        ("POST", "/v1/auth/login") => with(
            s.of::<crate::auth::LoginInput>(),
            json!({"type": "object",
            "required": ["token"], "properties": {"token": {"type": "string", "description": "The bearer session token"}}}),
        ),
        ("POST", "/v1/auth/logout") => none(),
        ("GET", "/v1/auth/me") => one(object(
            "The signed-in account: id, username, role, agency_id",
        )),
        ("POST", "/v1/auth/password") => Shape {
            request: Some(s.of::<crate::auth::PasswordChange>()),
            ..none()
        },

        ("GET", "/v1/agencies") => list(s.of::<Agency>(), vec![]),
        ("POST", "/v1/agencies") | ("PUT", "/v1/agencies/{id}") => {
            with(s.of::<AgencyInput>(), s.of::<Agency>())
        }
        ("GET", "/v1/agencies/{id}") => one(s.of::<Agency>()),

        ("GET", "/v1/services") => {
            let q = s.params::<sv::Filter>();
            list(s.of::<Service>(), q)
        }
        ("POST", "/v1/services") | ("PUT", "/v1/services/{id}") => {
            with(s.of::<ServiceInput>(), s.of::<Service>())
        }
        ("GET", "/v1/services/{id}") | ("POST", "/v1/services/{id}/submit") => {
            one(s.of::<Service>())
        }
        ("POST", "/v1/services/{id}/publish") => with(s.of::<PublishInput>(), s.of::<Service>()),
        ("POST", "/v1/services/{id}/offline") => with(s.of::<OfflineInput>(), s.of::<Service>()),
        ("POST", "/v1/services/{id}/reject") => with(s.of::<RejectInput>(), s.of::<Service>()),

        ("GET", "/v1/routes") => {
            let q = s.params::<rs::RouteFilter>();
            list(s.of::<Route>(), q)
        }
        ("POST", "/v1/routes") | ("PUT", "/v1/routes/{id}") => {
            with(s.of::<RouteInput>(), s.of::<Route>())
        }
        ("GET", "/v1/routes/{id}") => one(s.of::<Route>()),

        ("GET", "/v1/apps") => list(s.of::<App>(), vec![]),
        ("POST", "/v1/apps") | ("PUT", "/v1/apps/{id}") => with(s.of::<AppInput>(), s.of::<App>()),
        ("GET", "/v1/apps/{id}") => one(s.of::<App>()),

        ("GET", "/v1/network-policies") => list(s.of::<NetworkPolicy>(), vec![]),
        ("POST", "/v1/network-policies") | ("PUT", "/v1/network-policies/{id}") => {
            with(s.of::<PolicyInput>(), s.of::<NetworkPolicy>())
        }
        ("GET", "/v1/network-policies/{id}") => one(s.of::<NetworkPolicy>()),

        ("GET", "/v1/token-keys") => list(s.of::<TokenKey>(), vec![]),
        ("POST", "/v1/token-keys") => with(s.of::<TokenKeyInput>(), s.of::<TokenKey>()),
        ("GET", "/v1/token-keys/{id}") | ("POST", "/v1/token-keys/{id}/revoke") => {
            one(s.of::<TokenKey>())
        }

        ("GET", "/v1/signing-keys") => list(s.of::<SigningKey>(), vec![]),
        ("POST", "/v1/signing-keys") => with(s.of::<SigningKeyInput>(), s.of::<SigningKey>()),
        ("GET", "/v1/signing-keys/{id}") | ("POST", "/v1/signing-keys/{id}/retire") => {
            one(s.of::<SigningKey>())
        }

        ("GET", "/v1/limits") => list(s.of::<Limit>(), vec![]),
        ("POST", "/v1/limits") | ("PUT", "/v1/limits/{id}") => {
            with(s.of::<LimitInput>(), s.of::<Limit>())
        }
        ("GET", "/v1/limits/{id}") => one(s.of::<Limit>()),

        ("GET", "/v1/settings") => one(s.of::<Settings>()),
        ("PUT", "/v1/settings") => with(s.of::<Settings>(), s.of::<Settings>()),
        ("GET", "/v1/config") => one(json!({"type": "object", "required": ["version", "config"],
            "properties": {"version": {"type": "integer"}, "config": {"type": "object"}}})),

        ("GET", "/v1/users") => list(
            object("An account (never its password hash or TOTP seed)"),
            vec![],
        ),
        ("POST", "/v1/users") => with(
            s.of::<ac::UserInput>(),
            object("The account; for admin roles also its one-time TOTP secret"),
        ),
        ("PUT", "/v1/users/{id}") => with(s.of::<ac::UserUpdate>(), object("The account")),
        ("POST", "/v1/users/{id}/reset-password") => Shape {
            request: Some(s.of::<ac::PasswordReset>()),
            ..none()
        },
        ("GET", "/v1/users/{id}") | ("POST", "/v1/users/{id}/unlock") => one(object("The account")),

        ("GET", "/v1/nodes") => list(
            object("A gateway node: name, last seen, config version"),
            vec![],
        ),
        ("POST", "/v1/nodes") => with(
            s.of::<ac::NodeInput>(),
            object("The node and its token, shown once"),
        ),

        ("GET", "/v1/audit/admin") => Shape {
            response: Some(object("`items` (newest first) and `next_before`")),
            query: s.params::<au::AdminFilter>(),
            ..none()
        },
        ("GET", "/v1/audit/admin/verify") => {
            one(json!({"type": "object", "required": ["ok", "records"],
            "properties": {"ok": {"type": "boolean"}, "records": {"type": "integer"},
                "first_bad_seq": {"type": ["integer", "null"]}, "message": {"type": ["string", "null"]}}}))
        }
        ("GET", "/v1/audit/admin/{seq}") => one(object("One admin audit record")),
        ("GET", "/v1/audit/requests") => Shape {
            response: Some(object("`items` (newest first) and `next_before`")),
            query: s.params::<au::RequestFilter>(),
            ..none()
        },

        ("GET", p) if p.starts_with("/v1/exports/") => Shape {
            response: Some(object("`{title, generated_at, columns, items}`")),
            query: {
                s.of::<crate::exports::Format>();
                s.params::<crate::exports::ExportQuery>()
            },
            csv: true,
            ..none()
        },

        ("GET", "/v1/alerts") => Shape {
            response: Some(object(
                "An alert: rule, severity, state, subject, evidence, notes",
            )),
            list: true,
            query: s.params::<crate::alerts::api::AlertFilter>(),
            ..none()
        },
        ("GET", "/v1/alerts/{id}") => one(object(
            "An alert with its deliveries and automatic responses",
        )),
        ("POST", "/v1/alerts/{id}/acknowledge") | ("POST", "/v1/alerts/{id}/resolve") => {
            with(s.of::<crate::alerts::api::NoteInput>(), object("The alert"))
        }
        ("GET", "/v1/alert-settings") => one(s.of::<crate::alerts::rules::Settings>()),
        ("PUT", "/v1/alert-settings") => with(
            s.of::<crate::alerts::rules::Settings>(),
            s.of::<crate::alerts::rules::Settings>(),
        ),
        ("GET", "/v1/alert-destinations") => list(
            object("A destination: id, name, kind, url_hint, has_secret, per_minute"),
            vec![],
        ),
        ("POST", "/v1/alert-destinations") => with(
            s.of::<crate::alerts::api::DestinationInput>(),
            object("The destination (never its URL or secret)"),
        ),
        ("GET", "/v1/alert-blocks") => list(s.of::<Block>(), vec![]),

        ("POST", "/v1/services/{id}/revisions")
        | ("GET", "/v1/revisions/{id}")
        | ("POST", "/v1/revisions/{id}/submit")
        | ("POST", "/v1/revisions/{id}/discard") => one(s.of::<Revision>()),
        ("PUT", "/v1/revisions/{id}") => with(s.of::<RevisionInput>(), s.of::<Revision>()),
        ("GET", "/v1/revisions") => {
            let q = s.params::<crate::revisions::RevisionFilter>();
            list(s.of::<Revision>(), q)
        }
        ("POST", "/v1/revisions/{id}/apply") => one(s.of::<Service>()),
        ("POST", "/v1/revisions/{id}/verifications") => with(
            s.of::<crate::verification::api::RunInput>(),
            object(VERIFICATION),
        ),
        ("POST", "/v1/services/{id}/verifications") => with(
            s.of::<crate::verification::api::RunInput>(),
            object(VERIFICATION),
        ),
        ("GET", "/v1/verifications/{id}") => one(object(VERIFICATION)),
        ("POST", "/v1/verifications/{id}/override") => with(
            s.of::<crate::verification::api::OverrideInput>(),
            object(VERIFICATION),
        ),
        ("GET", "/v1/verifications") => Shape {
            response: Some(object("A verification's id, service_id, revision_id, digest, result, times, summary (grade per check) and override")),
            list: true,
            query: s.params::<crate::verification::api::ListQuery>(),
            ..none()
        },

        ("POST", "/v1/inspections") | ("GET", "/v1/inspections/{id}") => one(object(
            "An inspection: id, trigger, requested_by, started_at, finished_at, summary, services (probes, 24-hour traffic, findings)",
        )),
        ("GET", "/v1/inspections") => Shape {
            response: Some(object("An inspection's id, trigger, times and summary")),
            list: true,
            query: s.params::<crate::inspection::api::ListQuery>(),
            ..none()
        },
        ("GET", "/v1/faults") => Shape {
            response: Some(s.of::<crate::inspection::faults::FaultRow>()),
            list: true,
            query: s.params::<crate::inspection::api::FaultQuery>(),
            ..none()
        },
        ("GET", "/v1/faults/{id}") => one(s.of::<crate::inspection::faults::FaultRow>()),
        ("POST", "/v1/faults/{id}/close") => with(
            s.of::<crate::inspection::api::CloseInput>(),
            s.of::<crate::inspection::faults::FaultRow>(),
        ),
        ("GET", "/v1/inspection-settings") => one(s.of::<crate::inspection::settings::Settings>()),
        ("PUT", "/v1/inspection-settings") => with(
            s.of::<crate::inspection::settings::Settings>(),
            s.of::<crate::inspection::settings::Settings>(),
        ),
        ("GET", "/v1/active-users") => Shape {
            response: Some(object(
                "`{day, month, daily, monthly, store}`: distinct users per channel (`wechat`, `alipay`, `baidu`) and `all`",
            )),
            query: s.params::<crate::active_users::api::ActiveQuery>(),
            ..none()
        },

        ("POST", "/v1/reports") => with(
            s.of::<crate::reports::api::GenerateInput>(),
            object("The report: id, kind, title, period, generated_at, generated_by, download links"),
        ),
        ("GET", "/v1/reports") => Shape {
            response: Some(object("A kept report: id, kind, title, period, generated_at, download links")),
            list: true,
            query: s.params::<crate::reports::api::ReportFilter>(),
            ..none()
        },
        ("GET", "/v1/reports/{id}") => Shape {
            response: Some(object("The report's metadata and `report`: title, period, summary, sections")),
            query: {
                s.of::<crate::reports::api::Format>();
                s.params::<crate::reports::api::DownloadQuery>()
            },
            csv: true,
            html: true,
            ..none()
        },

        ("GET", "/v1/dataplane/watch") => Shape {
            response: Some(object("The rendered gateway config")),
            query: s.params::<crate::dataplane::WatchQuery>(),
            ..none()
        },
        ("POST", "/v1/dataplane/audit") => with(
            s.of::<crate::dataplane::Batch>(),
            json!({"type": "object",
            "required": ["accepted", "duplicates"], "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"}}}),
        ),
        ("POST", "/v1/login/{channel}") => with(s.of::<crate::identity::api::LoginInput>(), TOKENS()),
        ("POST", "/v1/token/refresh") => with(s.of::<crate::identity::api::RefreshInput>(), TOKENS()),
        ("POST", "/v1/token/revoke") => with(
            s.of::<crate::identity::api::RefreshInput>(),
            json!({"type": "object", "required": ["revoked"], "properties": {"revoked": {"type": "boolean"}}}),
        ),
        ("GET", "/.well-known/jwks.json") => one(object("A JWK Set (RFC 7517): `{keys: [...]}`")),
        ("POST", "/v1/h5/ticket") => one(json!({"type": "object", "required": ["ticket", "expires_in"],
            "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer"}}})),
        ("GET", "/v1/h5/enter") => Shape {
            query: s.params::<crate::identity::api::EnterQuery>(),
            ..none()
        },
        ("PUT", "/v1/apps/{id}/signin") => with(s.of::<crate::identity::api::CredentialsInput>(), s.of::<App>()),
        ("DELETE", "/v1/apps/{id}/signin") => one(s.of::<App>()),
        ("GET", "/v1/identity-keys") => list(s.of::<IdentityKey>(), vec![]),
        ("POST", "/v1/identity-keys/rotate") => with(s.of::<crate::identity::api::RotateInput>(), s.of::<IdentityKey>()),
        ("POST", "/v1/identity-keys/{id}/revoke") => one(s.of::<IdentityKey>()),
        ("GET", "/v1/audit/signins") => Shape {
            response: Some(object("A sign-in event: at, time (Beijing), event, channel, app_id, user_id, outcome")),
            list: true,
            query: s.params::<crate::identity::api::EventsQuery>(),
            ..none()
        },
        _ => none(),
    }
}

/// What a sign-in or a refresh answers.
#[allow(non_snake_case)]
fn TOKENS() -> Value {
    json!({"type": "object", "required": ["access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in", "user_id"],
        "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"},
        "refresh_expires_in": {"type": "integer"}, "user_id": {"type": "string"}}})
}

/// `post /v1/services/{id}/publish` → `post_v1_services_id_publish`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(seg.chars().filter(|c| !matches!(c, '{' | '}')).map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        }));
    }
    id
}

fn error_ref(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document.
pub fn document() -> Value {
    let mut schemas = Schemas::default();
    let mut paths: Map<String, Value> = Map::new();
    for (e, _) in crate::api::endpoints() {
        let mut params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let shape = shape(e.method, e.path, &mut schemas);
        params.extend(shape.query.iter().cloned());
        let security = match e.access {
            "public" => json!([]),
            "node token" => json!([{"nodeToken": []}]),
            _ => json!([{"session": []}]),
        };
        let success_body = shape.response.as_ref().map(|r| {
            let schema = if shape.list {
                json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": r}}})
            } else {
                r.clone()
            };
            let mut content = json!({"application/json": {"schema": schema}});
            if shape.csv {
                content["text/csv"] = json!({"schema": {"type": "string"}});
            }
            if shape.html {
                content["text/html"] = json!({"schema": {"type": "string"}});
            }
            content
        });
        let ok = |description: &str| match &success_body {
            Some(c) => json!({"description": description, "content": c}),
            None => json!({"description": description}),
        };
        let mut responses = json!({
            "400": error_ref("Malformed request (query string, path)"),
            "404": error_ref("No such resource, or not one the caller may see"),
            "405": error_ref("Method not allowed on this path"),
            "500": error_ref("A failure of the control plane (never detailed)"),
            "503": error_ref("The control plane's database cannot be reached (`database_unavailable`); nothing changed, try again"),
        });
        match e.method {
            "POST" => {
                responses["200"] = ok("OK");
                responses["201"] = ok("Created");
                responses["204"] = json!({"description": "Done; no body"});
            }
            "DELETE" => responses["204"] = json!({"description": "Deleted"}),
            _ => responses["200"] = ok("OK"),
        }
        if e.method != "GET" {
            responses["409"] =
                error_ref("The resource's state forbids this, or it is still referenced");
            responses["422"] =
                error_ref("Invalid input (`fields` name each offending field); nothing changed");
        }
        if e.body {
            responses["413"] = error_ref("The body is over the limit (named in the message)");
            responses["415"] = error_ref("The body is not `application/json`");
            responses["422"] =
                error_ref("Invalid input (`fields` name each offending field); nothing changed");
        }
        if !shape.query.is_empty() {
            responses["422"] = error_ref("Invalid input; nothing changed");
        }
        if e.access != "public" || e.path == "/v1/auth/login" {
            responses["401"] = error_ref("Not signed in, session expired, or bad credentials");
            responses["403"] = error_ref("The role may not do this, or the account is locked");
        }
        if e.method != "GET" && e.path.starts_with("/v1/users/{id}") {
            // Changes to an audit admin's account need a second person (docs/admin.md).
            responses["202"] = json!({
                "description": "Awaiting approval: the other admin role must repeat this request",
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status", "approval"],
                    "properties": {
                        "status": {"type": "string", "enum": ["awaiting_approval"]},
                        "approval": {"type": "object", "required": ["id", "action", "target_id", "requested_by", "awaits", "expires_at"],
                            "properties": {
                                "id": {"type": "string"}, "action": {"type": "string"},
                                "target_id": {"type": "string"}, "requested_by": {"type": "string"},
                                "awaits": {"type": "string"}, "expires_at": {"type": "integer"}}}}}}}
            });
        }
        if e.path == "/v1/dataplane/watch" {
            responses["304"] = json!({"description": "Nothing newer within the timeout"});
        }
        let mut op = json!({
            "summary": e.summary,
            "description": format!("Access: {}.", e.access),
            "tags": [e.tag],
            "operationId": operation_id(e.method, e.path),
            "security": security,
            "parameters": params,
            "responses": responses,
        });
        if let Some(action) = e.action {
            // The roles the router enforces, from the permission table itself.
            let roles: Vec<&str> = crate::authz::allowed(action)
                .iter()
                .map(|r| r.as_str())
                .collect();
            op["x-fenfa-action"] = json!(action.name());
            op["x-fenfa-roles"] = json!(roles);
        }
        if e.body {
            let schema = shape
                .request
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "additionalProperties": false}));
            // An empty body reads as `{}`: it is optional exactly when `{}` is a valid input.
            let required = schema["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|n| schemas.0.get(n))
                .and_then(|v| v["required"].as_array())
                .is_some_and(|r| !r.is_empty());
            op["requestBody"] = json!({
                "required": required,
                "description": "JSON; an empty body reads as `{}`",
                "content": {"application/json": {"schema": schema}}
            });
        }
        let entry = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        entry[e.method.to_lowercase()] = op;
    }
    schemas.add(
        "Error",
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "examples": ["invalid"]},
                    "message": {"type": "string"},
                    "fields": {"type": "array", "items": {
                        "type": "object",
                        "required": ["path", "message"],
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}}
                    }}
                }
            }},
            "examples": [{"error": {"code": "invalid", "message": "upstream.targets[0].addr: `10.30.0.9:8080` (http) is outside the network policy of agency `social`",
                "fields": [{"path": "upstream.targets[0].addr", "message": "`10.30.0.9:8080` (http) is outside the network policy of agency `social`"}]}}]
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Fenfa control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agencies register services and interfaces, platform operators publish them per channel, security staff manage keys and policies, auditors read the trails. See docs/admin.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer", "description": "Session token from POST /v1/auth/login; ends after 30 minutes idle."},
                "nodeToken": {"type": "http", "scheme": "bearer", "description": "Gateway node token from POST /v1/nodes."},
            },
            "schemas": schemas.0,
        }
    })
}

pub async fn handler() -> Json<Value> {
    Json(document())
}
