//! `/openapi.json`: an OpenAPI 3.1 document built from the endpoint table
//! (`crate::api::endpoints`), so every route the router serves is described — a test checks it.

use axum::Json;
use serde_json::{json, Map, Value};

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (e, _) in crate::api::endpoints() {
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match e.access {
            "public" => json!([]),
            "node token" => json!([{"nodeToken": []}]),
            _ => json!([{"session": []}]),
        };
        let mut responses = json!({
            "200": {"description": "OK"},
            "400": {"$ref": "#/components/responses/Error"},
            "422": {"$ref": "#/components/responses/Invalid"},
        });
        if e.access != "public" {
            responses["401"] = json!({"$ref": "#/components/responses/Error"});
            responses["403"] = json!({"$ref": "#/components/responses/Error"});
            responses["404"] = json!({"$ref": "#/components/responses/Error"});
        }
        if e.method == "POST" {
            responses["201"] = json!({"description": "Created"});
            responses["409"] = json!({"$ref": "#/components/responses/Error"});
        }
        if e.method == "DELETE" {
            responses["204"] = json!({"description": "Deleted"});
            responses["409"] = json!({"$ref": "#/components/responses/Error"});
        }
        if e.path == "/v1/dataplane/watch" {
            responses["304"] = json!({"description": "Nothing newer within the timeout"});
        }
        let mut op = json!({
            "summary": e.summary,
            "description": format!("Access: {}.", e.access),
            "tags": [e.tag],
            "operationId": format!("{} {}", e.method.to_lowercase(), e.path),
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
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object"}}}
            });
        }
        let entry = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        entry[e.method.to_lowercase()] = op;
    }
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "fields": {"type": "array", "items": {
                                "type": "object",
                                "properties": {"path": {"type": "string"}, "message": {"type": "string"}}
                            }}
                        }
                    }}
                }
            },
            "responses": {
                "Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Invalid": {"description": "Invalid input; nothing changed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            }
        }
    })
}

pub async fn handler() -> Json<Value> {
    Json(document())
}
