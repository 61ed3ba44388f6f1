//! Resources and validation: agencies register services and interfaces, operators publish them
//! per channel; every change is compiled by the gateway's compiler before it commits; invalid
//! input is a 422 with field paths and changes nothing; upstreams stay inside network policy;
//! secrets are encrypted at rest.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

async fn rendered(env: &Env) -> Value {
    let (_, text) = fenfa_admin::commit::current_text(&env.app).await.unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The names of the services in the live config.
async fn live_services(env: &Env) -> Vec<String> {
    rendered(env).await["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

async fn service_lifecycle_draft_submit_publish_offline(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "social").await;
    env.policy(&sec, &ag, "social-backends").await;
    let op = env.operator(&sys, "social-op", &ag).await;
    // The operator registers a service (its own agency by default) and an interface.
    let v = env
        .expect(
            201,
            "POST",
            "/v1/services",
            &op,
            json!({"name": "pension", "title": "养老金查询", "kind": "api",
                   "upstream": {"targets": [{"addr": format!("127.0.0.1:{UPSTREAM_PORT}")}]}}),
        )
        .await;
    assert_eq!(v["status"], "draft");
    assert_eq!(v["agency_id"], ag.as_str());
    let svc = v["id"].as_str().unwrap().to_string();
    // Submitting without an interface is refused with the reason.
    let e = env
        .expect(
            422,
            "POST",
            &format!("/v1/services/{svc}/submit"),
            &op,
            json!({}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "routes");
    env.route(&op, &svc, "pension-balance", "/social/pension/balance")
        .await;
    assert!(live_services(env).await.is_empty(), "a draft is not live");
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/services/{svc}/submit"),
            &op,
            json!({}),
        )
        .await;
    assert_eq!(v["status"], "submitted");
    // Submitted: frozen for the operator, and the operator cannot publish.
    env.expect(
        409,
        "POST",
        "/v1/routes",
        &op,
        json!({"service_id": svc, "name": "x", "paths": ["/x"]}),
    )
    .await;
    env.expect(
        403,
        "POST",
        &format!("/v1/services/{svc}/publish"),
        &op,
        json!({"channels": ["wechat"]}),
    )
    .await;
    // The system admin publishes on two channels, once the service is verified.
    env.verified(&sys, &svc).await;
    let before = env.version().await;
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/services/{svc}/publish"),
            &sys,
            json!({"channels": ["wechat", "alipay"]}),
        )
        .await;
    assert_eq!(v["status"], "published");
    assert_eq!(v["channels"], json!(["wechat", "alipay"]));
    assert_eq!(
        env.version().await,
        before + 1,
        "a commit bumps the version"
    );
    let cfg = rendered(env).await;
    assert_eq!(cfg["services"][0]["name"], "pension");
    assert_eq!(cfg["services"][0]["agency"], "social");
    assert_eq!(
        cfg["services"][0]["publish"]["channels"],
        json!(["wechat", "alipay"])
    );
    assert_eq!(
        cfg["routes"][0]["paths"],
        json!(["/social/pension/balance"])
    );
    // Offline per channel, then entirely.
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/services/{svc}/offline"),
            &sys,
            json!({"channels": ["alipay"]}),
        )
        .await;
    assert_eq!(
        (v["status"].as_str(), v["channels"].clone()),
        (Some("published"), json!(["wechat"]))
    );
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/services/{svc}/offline"),
            &sys,
            json!({}),
        )
        .await;
    assert_eq!(v["status"], "offline");
    assert!(live_services(env).await.is_empty());
    // Offline: the operator may edit again.
    env.route(&op, &svc, "pension-history", "/social/pension/history")
        .await;
}
both_backends!(service_lifecycle_draft_submit_publish_offline);

async fn invalid_input_is_422_with_field_paths_and_changes_nothing(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "housing").await;
    env.policy(&sec, &ag, "housing-backends").await;
    let svc = env.service(&sys, &ag, "fund").await;
    let version = env.version().await;
    let count = env.get("/v1/services", &sys).await["items"]
        .as_array()
        .unwrap()
        .len();

    // Shape errors name the field (parse, don't validate).
    let e = env
        .expect(
            422,
            "POST",
            "/v1/agencies",
            &sys,
            json!({"name": "Bad Name", "title": "x"}),
        )
        .await;
    assert_eq!(e["error"]["code"], "invalid");
    assert_eq!(e["error"]["fields"][0]["path"], "name");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/network-policies",
            &sec,
            json!({"agency_id": ag, "name": "p2",
            "rules": [{"destination": "10.1.0.0/8", "port": 80, "protocol": "http"}]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "rules[0].destination");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/services",
            &sys,
            json!({"agency_id": ag, "name": "fund2", "title": "t", "kind": "api",
            "upstream": {"targets": [{"addr": "127.0.0.1:18000"}], "balance": "random"}}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "upstream.balance");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/apps",
            &sys,
            json!({"channel": "weixin", "app_id": "a", "name": "n"}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "channel");

    // Meaning errors come from the gateway's own compiler, mapped to the request's fields.
    let e = env
        .expect(
            422,
            "POST",
            "/v1/routes",
            &sys,
            json!({"service_id": svc, "name": "r1", "paths": ["no-slash"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "paths[0]", "{e}");
    let e = env
        .expect(422, "POST", "/v1/routes", &sys, json!({"service_id": svc, "name": "r1", "paths": ["/a"], "methods": ["FETCH WITH SPACE"]}))
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "methods[0]", "{e}");
    let e = env
        .expect(
            422,
            "PUT",
            &format!("/v1/services/{svc}"),
            &sys,
            json!({"name": "fund", "title": "t", "kind": "api",
            "upstream": {"targets": [{"addr": "127.0.0.1:18000", "weight": 0}]}}),
        )
        .await;
    assert!(
        e["error"]["fields"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("upstream.targets[0]"),
        "{e}"
    );
    let e = env
        .expect(
            422,
            "POST",
            "/v1/limits",
            &sec,
            json!({"service_id": svc, "limits": [{"key": "app", "rate": 0, "per": "1s"}]}),
        )
        .await;
    assert!(
        e["error"]["fields"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("limits[0]"),
        "{e}"
    );
    let e = env
        .expect(
            422,
            "POST",
            "/v1/signing-keys",
            &sec,
            json!({"agency_id": ag, "secret": "c2hvcnQ="}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "secret");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/token-keys",
            &sec,
            json!({"jwk": {"kid": "k1", "alg": "RS256", "kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
        )
        .await;
    assert!(
        e["error"]["fields"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("jwk"),
        "{e}"
    );
    // A duplicate name.
    let e = env
        .expect(
            422,
            "POST",
            "/v1/agencies",
            &sys,
            json!({"name": "housing", "title": "again"}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "name");
    // Not JSON at all.
    let (st, _, _) = env.call_raw("POST", "/v1/agencies", Some(&sys), None).await;
    assert_eq!(st, 422, "an empty body is `{{}}`, which lacks fields");

    assert_eq!(env.version().await, version, "nothing was committed");
    let after = env.get("/v1/services", &sys).await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, count);
    assert!(env.get("/v1/routes", &sys).await["items"]
        .as_array()
        .unwrap()
        .is_empty());
}
both_backends!(invalid_input_is_422_with_field_paths_and_changes_nothing);

async fn upstreams_must_fall_inside_the_agency_network_policy(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "transport").await;
    // No policy yet: no upstream at all.
    let body = |addr: &str| {
        json!({"agency_id": ag, "name": "eta", "title": "到站时间", "kind": "api",
        "upstream": {"targets": [{"addr": addr}]}})
    };
    let e = env
        .expect(422, "POST", "/v1/services", &sys, body("127.0.0.1:18000"))
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "upstream.targets[0].addr");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("network policy"),
        "{e}"
    );
    let pol = env
        .expect(
            201,
            "POST",
            "/v1/network-policies",
            &sec,
            json!({"agency_id": ag, "name": "tp",
            "rules": [{"destination": "127.0.0.0/24", "port": 18000, "protocol": "http"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.expect(422, "POST", "/v1/services", &sys, body("127.0.1.1:18000"))
        .await;
    env.expect(422, "POST", "/v1/services", &sys, body("127.0.0.5:18001"))
        .await;
    let e = env
        .expect(
            422,
            "POST",
            "/v1/services",
            &sys,
            json!({"agency_id": ag, "name": "eta", "title": "t", "kind": "api",
            "upstream": {"scheme": "https", "targets": [{"addr": "127.0.0.5:18000"}]}}),
        )
        .await;
    assert!(
        e["error"]["message"].as_str().unwrap().contains("https"),
        "{e}"
    );
    env.expect(201, "POST", "/v1/services", &sys, body("127.0.0.5:18000"))
        .await;
    // Narrowing the policy under a live upstream is refused, naming the service that breaks.
    let e = env
        .expect(
            422,
            "PUT",
            &format!("/v1/network-policies/{pol}"),
            &sec,
            json!({"agency_id": ag, "name": "tp",
            "rules": [{"destination": "127.0.0.1", "port": 18000, "protocol": "http"}]}),
        )
        .await;
    assert_eq!(
        e["error"]["fields"][0]["path"], "service/eta.upstream.targets[0].addr",
        "{e}"
    );
    env.expect(
        422,
        "DELETE",
        &format!("/v1/network-policies/{pol}"),
        &sec,
        Value::Null,
    )
    .await;
}
both_backends!(upstreams_must_fall_inside_the_agency_network_policy);

async fn secrets_are_encrypted_at_rest_and_shown_once(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "tax").await;
    env.policy(&sec, &ag, "tax-net").await;
    let svc = env.service(&sys, &ag, "tax-api").await;
    env.route(&sys, &svc, "tax-route", "/tax/*").await;
    let v = env
        .expect(
            201,
            "POST",
            "/v1/signing-keys",
            &sec,
            json!({"agency_id": ag, "key_id": "tax-2026a"}),
        )
        .await;
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 43);
    let id = v["id"].as_str().unwrap();
    let again = env.get(&format!("/v1/signing-keys/{id}"), &sec).await;
    assert!(
        again.get("secret").is_none() && again.get("sealed_secret").is_none(),
        "{again}"
    );
    let hs = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
    env.expect(
        201,
        "POST",
        "/v1/token-keys",
        &sec,
        json!({"jwk": {"kty": "oct", "kid": "hs1", "alg": "HS256", "k": hs}}),
    )
    .await;
    // Nothing in the database holds either secret in the clear.
    use sqlx::Row;
    let rows = sqlx::query("SELECT body FROM resources")
        .fetch_all(&env.app.store.pool)
        .await
        .unwrap();
    let mut all: Vec<String> = rows.iter().map(|r| r.get::<String, _>("body")).collect();
    let cfg = sqlx::query("SELECT config FROM config_state")
        .fetch_one(&env.app.store.pool)
        .await
        .unwrap();
    all.push(cfg.get::<String, _>("config"));
    for text in &all {
        assert!(
            !text.contains(&secret) && !text.contains(hs),
            "a secret is stored in the clear: {text}"
        );
    }
    // The gateway gets them (it signs with the first key of the agency).
    let cfg = rendered(env).await;
    assert_eq!(
        cfg["agencies"][0]["signing_keys"][0]["secret"],
        secret.as_str()
    );
    assert_eq!(
        cfg["global_plugins"][0]["config"]["keys"]["keys"][0]["k"],
        hs
    );
    // People reading the config see them redacted.
    let shown = env.get("/v1/config", &sec).await;
    assert_eq!(
        shown["config"]["agencies"][0]["signing_keys"][0]["secret"],
        "***"
    );
    assert_eq!(
        shown["config"]["global_plugins"][0]["config"]["keys"]["keys"][0]["k"],
        "***"
    );
}
both_backends!(secrets_are_encrypted_at_rest_and_shown_once);

async fn agency_operators_see_only_their_agency(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let a = env.agency(&sys, "agency-a").await;
    let b = env.agency(&sys, "agency-b").await;
    env.policy(&sec, &a, "pa").await;
    env.policy(&sec, &b, "pb").await;
    let sa = env.service(&sys, &a, "svc-a").await;
    let sb = env.service(&sys, &b, "svc-b").await;
    let rb = env.route(&sys, &sb, "route-b", "/b/*").await;
    let op = env.operator(&sys, "op-a", &a).await;
    let names = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(env.get("/v1/services", &op).await), vec!["svc-a"]);
    assert_eq!(names(env.get("/v1/agencies", &op).await), vec!["agency-a"]);
    assert_eq!(
        names(env.get("/v1/network-policies", &op).await),
        vec!["pa"]
    );
    assert!(env.get("/v1/routes", &op).await["items"]
        .as_array()
        .unwrap()
        .is_empty());
    for path in [
        format!("/v1/services/{sb}"),
        format!("/v1/routes/{rb}"),
        format!("/v1/agencies/{b}"),
    ] {
        let (st, v) = env.call("GET", &path, Some(&op), None).await;
        assert_eq!(st, 404, "{path}: {v}");
    }
    env.expect(
        404,
        "PUT",
        &format!("/v1/routes/{rb}"),
        &op,
        json!({"service_id": sb, "name": "route-b", "paths": ["/b/*"]}),
    )
    .await;
    env.expect(
        404,
        "DELETE",
        &format!("/v1/services/{sb}"),
        &op,
        Value::Null,
    )
    .await;
    env.expect(
        404,
        "POST",
        "/v1/routes",
        &op,
        json!({"service_id": sb, "name": "sneaky", "paths": ["/sneaky"]}),
    )
    .await;
    env.expect(
        404,
        "POST",
        "/v1/services",
        &op,
        json!({"agency_id": b, "name": "sneaky", "title": "t", "kind": "h5",
        "upstream": {"targets": [{"addr": "127.0.0.1:18000"}]}}),
    )
    .await;
    env.route(&op, &sa, "route-a", "/a/*").await;
}
both_backends!(agency_operators_see_only_their_agency);

/// The control plane checks target host names by syntax and policy, never by its own DNS: a name
/// that does not resolve on its machine (here `.invalid`, which never resolves) is accepted when
/// the agency's policy allows it; a name that is not a host name is refused, naming the field.
async fn target_names_are_checked_by_syntax_and_policy_not_by_the_control_planes_dns(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "water").await;
    env.expect(
        201,
        "POST",
        "/v1/network-policies",
        &sec,
        json!({"agency_id": ag, "name": "w",
        "rules": [{"destination": "*.water.invalid", "port": 8080, "protocol": "http"}]}),
    )
    .await;
    let body = |name: &str, addr: &str| {
        json!({"agency_id": ag, "name": name, "title": "水费", "kind": "api",
        "upstream": {"targets": [{"addr": addr}]}})
    };
    let before = env.version().await;
    env.expect(
        201,
        "POST",
        "/v1/services",
        &sys,
        body("bill", "backend.water.invalid:8080"),
    )
    .await;
    assert!(env.version().await > before, "the commit went through");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/services",
            &sys,
            body("meter", "bad_name.water.invalid:8080"),
        )
        .await;
    assert_eq!(
        e["error"]["fields"][0]["path"], "upstream.targets[0].addr",
        "{e}"
    );
}
both_backends!(target_names_are_checked_by_syntax_and_policy_not_by_the_control_planes_dns);
