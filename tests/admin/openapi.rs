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
