//! `/openapi.json` describes every endpoint the router serves, and every path it describes is
//! routed.

use std::collections::BTreeSet;

use crate::both_backends;
use crate::harness::*;

async fn openapi_describes_every_endpoint(env: &Env) {
    let (st, doc) = env.call("GET", "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut described = BTreeSet::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            assert!(op["responses"].is_object());
            if let Some(roles) = op.get("x-fenfa-roles") {
                assert!(!roles.as_array().unwrap().is_empty(), "{method} {path}");
            }
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = fenfa_admin::api::endpoints()
        .iter()
        .map(|(e, _)| (e.method.to_string(), e.path.to_string()))
        .collect();
    assert_eq!(described, served);
    assert_eq!(
        doc["paths"]["/v1/audit/admin"]["get"]["x-fenfa-roles"],
        serde_json::json!(["audit-admin"])
    );
    // Every described operation is routed: never the fallback's 404 or a 405.
    for (method, path) in &described {
        let concrete = path.replace("{id}", "nope").replace("{seq}", "1");
        let (st, v) = env.call(method, &concrete, None, None).await;
        assert!(
            st != 405 && !(st == 404 && v["error"]["message"] == "no such endpoint"),
            "{method} {path}: {st} {v}"
        );
    }
    let (st, v) = env.call("GET", "/v1/nothing-here", None, None).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));
}
both_backends!(openapi_describes_every_endpoint);

async fn openapi_describes_bodies_responses_queries_and_every_status(env: &Env) {
    let (_, doc) = env.call("GET", "/openapi.json", None, None).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let resolve = |v: &serde_json::Value| -> serde_json::Value {
        match v["$ref"].as_str() {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => v.clone(),
        }
    };
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(
                !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "operationId `{id}` of {method} {path}"
            );
            // A request body is described by its fields.
            if let Some(body) = op.get("requestBody") {
                let schema = resolve(&body["content"]["application/json"]["schema"]);
                assert!(
                    schema["properties"].is_object() || schema["additionalProperties"] == false,
                    "{method} {path}: request schema {schema}"
                );
                for st in ["413", "415", "422"] {
                    assert!(
                        op["responses"][st].is_object(),
                        "{method} {path} declares {st}"
                    );
                }
            }
            // Every error answer has the error schema; the success answer has a schema.
            for (st, resp) in op["responses"].as_object().unwrap() {
                if st.starts_with('4') || st.starts_with('5') {
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {st}"
                    );
                }
            }
            let ok = &op["responses"][if method == "delete" { "204" } else { "200" }];
            assert!(ok.is_object(), "{method} {path}: success declared");
        }
    }
    // The resource schemas name their fields, with examples.
    let service_input = &schemas["ServiceInput"];
    assert!(
        service_input["properties"]["upstream"].is_object(),
        "{service_input}"
    );
    assert!(service_input["required"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("name")));
    assert!(schemas["Agency"]["properties"]["path_prefixes"].is_object());
    assert!(
        schemas["SigningKey"]["properties"]
            .get("sealed_secret")
            .is_none(),
        "sealed secrets are never shown"
    );
    // submit answers 422 without a route; it says so. Queries are described.
    let submit = &doc["paths"]["/v1/services/{id}/submit"]["post"];
    assert!(submit["responses"]["422"].is_object());
    let list = &doc["paths"]["/v1/services"]["get"];
    assert_eq!(
        list["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["items"]
            ["items"]["$ref"],
        "#/components/schemas/Service"
    );
    let params: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["agency_id", "status"]);
    assert!(doc["paths"]["/v1/audit/admin"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "before"));
}
both_backends!(openapi_describes_bodies_responses_queries_and_every_status);
