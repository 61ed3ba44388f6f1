//! Publication and the agencies' shares of the URL space: `publish` only ever adds channels and
//! apps, `offline` only removes the named ones; routes of different agencies never overlap
//! unless a system admin allows it with a recorded reason, and an agency's operator cannot
//! claim a path or host outside the agency's own.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

async fn publish(env: &Env, sys: &str, svc: &str, body: Value) -> Value {
    env.expect(
        200,
        "POST",
        &format!("/v1/services/{svc}/publish"),
        sys,
        body,
    )
    .await
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn publish_adds_channels_and_apps_and_offline_removes_only_the_named_ones(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "social").await;
    env.policy(&sec, &ag, "social-backends").await;
    let svc = env.service(&sys, &ag, "pension").await;
    env.route(&sys, &svc, "pension-balance", "/social/pension/balance")
        .await;
    for (app_id, channel) in [("wx-a", "wechat"), ("wx-b", "wechat"), ("bd-a", "baidu")] {
        env.expect(
            201,
            "POST",
            "/v1/apps",
            &sys,
            json!({"channel": channel, "app_id": app_id, "name": app_id}),
        )
        .await;
    }
    env.expect(
        200,
        "POST",
        &format!("/v1/services/{svc}/submit"),
        &sys,
        json!({}),
    )
    .await;
    env.verified(&sys, &svc).await;
    let v = publish(
        env,
        &sys,
        &svc,
        json!({"channels": ["wechat"], "apps": ["wx-a"]}),
    )
    .await;
    assert_eq!(sorted(&v["channels"]), ["wechat"]);

    // Publishing on Baidu adds Baidu: WeChat callers keep their channel, the app list stays.
    let v = publish(env, &sys, &svc, json!({"channels": ["baidu"]})).await;
    assert_eq!(v["status"], "published");
    assert_eq!(sorted(&v["channels"]), ["baidu", "wechat"], "{v}");
    assert_eq!(sorted(&v["apps"]), ["wx-a"], "{v}");
    // Naming another app adds it.
    let v = publish(
        env,
        &sys,
        &svc,
        json!({"channels": ["wechat"], "apps": ["wx-b"]}),
    )
    .await;
    assert_eq!(sorted(&v["channels"]), ["baidu", "wechat"], "{v}");
    assert_eq!(sorted(&v["apps"]), ["wx-a", "wx-b"], "{v}");
    let (_, text) = fenfa_admin::commit::current_text(&env.app).await.unwrap();
    let cfg: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        sorted(&cfg["services"][0]["publish"]["channels"]),
        ["baidu", "wechat"],
        "the live config has both channels"
    );

    // Offline removes exactly the named app, then exactly the named channel.
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/services/{svc}/offline"),
            &sys,
            json!({"apps": ["wx-a"]}),
        )
        .await;
    assert_eq!(sorted(&v["apps"]), ["wx-b"], "{v}");
    assert_eq!(sorted(&v["channels"]), ["baidu", "wechat"], "{v}");
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/services/{svc}/offline"),
            &sys,
            json!({"channels": ["baidu"]}),
        )
        .await;
    assert_eq!(
        (v["status"].as_str(), sorted(&v["channels"])),
        (Some("published"), vec!["wechat".to_string()])
    );
    assert_eq!(sorted(&v["apps"]), ["wx-b"], "{v}");
    // Withdrawing the last app would open the service to every app: refused, nothing changes.
    let version = env.version().await;
    let e = env
        .expect(
            422,
            "POST",
            &format!("/v1/services/{svc}/offline"),
            &sys,
            json!({"apps": ["wx-b"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "apps", "{e}");
    assert_eq!(env.version().await, version);
}
both_backends!(publish_adds_channels_and_apps_and_offline_removes_only_the_named_ones);

/// Two agencies with their own path prefixes and an operator each.
async fn two_agencies(env: &Env, sys: &str, sec: &str) -> (String, String) {
    let a = env
        .expect(
            201,
            "POST",
            "/v1/agencies",
            sys,
            json!({"name": "housing", "title": "住房局", "path_prefixes": ["/housing/"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = env
        .expect(
            201,
            "POST",
            "/v1/agencies",
            sys,
            json!({"name": "social", "title": "人社局", "path_prefixes": ["/social/"],
                   "hosts": ["social.city.example"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.policy(sec, &a, "housing-backends").await;
    env.policy(sec, &b, "social-backends").await;
    (a, b)
}

async fn an_agency_cannot_take_another_agencys_paths(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let (a, b) = two_agencies(env, &sys, &sec).await;
    let op_a = env.operator(&sys, "housing-op", &a).await;
    let svc_a = env.service(&op_a, &a, "fund").await;

    // Agency A's operator claims B's prefix: refused, naming the field.
    let version = env.version().await;
    let e = env
        .expect(
            422,
            "POST",
            "/v1/routes",
            &op_a,
            json!({"service_id": svc_a, "name": "grab", "paths": ["/housing/x", "/social/pension/*"],
                   "priority": 100}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "paths[1]", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`social`"),
        "the message names the agency whose paths they are: {e}"
    );
    // Outside its own prefixes, even where nobody else is: refused, naming its own prefixes.
    let e = env
        .expect(
            422,
            "POST",
            "/v1/routes",
            &op_a,
            json!({"service_id": svc_a, "name": "grab", "paths": ["/elsewhere/x"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "paths[0]", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/housing/"),
        "the message names the agency's own prefixes: {e}"
    );
    // A host of B's is refused at `hosts[0]`, and B's own routes must use B's host.
    let e = env
        .expect(
            422,
            "POST",
            "/v1/routes",
            &op_a,
            json!({"service_id": svc_a, "name": "grab", "paths": ["/housing/x"],
                   "hosts": ["social.city.example"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "hosts[0]", "{e}");
    assert_eq!(env.version().await, version, "nothing was committed");
    let svc_b = env.service(&sys, &b, "pension").await;
    let e = env
        .expect(
            422,
            "POST",
            "/v1/routes",
            &sys,
            json!({"service_id": svc_b, "name": "anyhost", "paths": ["/social/pension/*"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "hosts", "{e}");

    // Inside its own prefix A is fine.
    env.route(&op_a, &svc_a, "fund-balance", "/housing/fund/balance")
        .await;
    // An agency cannot be given another agency's paths, nor paths other agencies' routes use.
    let e = env
        .expect(
            422,
            "PUT",
            &format!("/v1/agencies/{b}"),
            &sys,
            json!({"name": "social", "title": "人社局", "path_prefixes": ["/social/", "/housing/fund/"],
                   "hosts": ["social.city.example"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "path_prefixes[1]", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`housing`"),
        "names the agency whose paths they are: {e}"
    );
    let c = env.agency(&sys, "culture").await;
    env.policy(&sec, &c, "culture-backends").await;
    let svc_c = env.service(&sys, &c, "museum").await;
    env.route(&sys, &svc_c, "museum-tickets", "/culture/tickets")
        .await;
    let e = env
        .expect(
            422,
            "PUT",
            &format!("/v1/agencies/{b}"),
            &sys,
            json!({"name": "social", "title": "人社局", "path_prefixes": ["/social/", "/culture/"],
                   "hosts": ["social.city.example"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "path_prefixes", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("museum-tickets"),
        "names the route in the way: {e}"
    );
}
both_backends!(an_agency_cannot_take_another_agencys_paths);

async fn overlapping_routes_of_two_agencies_are_published_only_when_a_system_admin_allows_it(
    env: &Env,
) {
    let sys = env.admin().await;
    let sec = env.security().await;
    // Two agencies without prefixes of their own: the overlap check alone protects them.
    let a = env.agency(&sys, "tax").await;
    let b = env.agency(&sys, "health").await;
    env.policy(&sec, &a, "tax-backends").await;
    env.policy(&sec, &b, "health-backends").await;
    let svc_b = env.service(&sys, &b, "clinic").await;
    env.route(&sys, &svc_b, "clinic-slots", "/health/clinic/slots")
        .await;
    env.expect(
        200,
        "POST",
        &format!("/v1/services/{svc_b}/submit"),
        &sys,
        json!({}),
    )
    .await;
    env.verified(&sys, &svc_b).await;
    publish(env, &sys, &svc_b, json!({"channels": ["wechat"]})).await;

    // A's operator registers a route shadowing B's (a prefix over B's path, any method).
    let op_a = env.operator(&sys, "tax-op", &a).await;
    let svc_a = env.service(&op_a, &a, "refund").await;
    let rt = env
        .expect(
            201,
            "POST",
            "/v1/routes",
            &op_a,
            json!({"service_id": svc_a, "name": "shadow", "paths": ["/health/*"], "priority": 100}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.expect(
        200,
        "POST",
        &format!("/v1/services/{svc_a}/submit"),
        &op_a,
        json!({}),
    )
    .await;
    env.verified(&sys, &svc_a).await;
    // Publishing it is refused, naming the route and the route it overlaps.
    let version = env.version().await;
    let e = env
        .expect(
            422,
            "POST",
            &format!("/v1/services/{svc_a}/publish"),
            &sys,
            json!({"channels": ["wechat"]}),
        )
        .await;
    let f = &e["error"]["fields"][0];
    assert_eq!(f["path"], "route/shadow.paths[0]", "{e}");
    assert!(
        f["message"].as_str().unwrap().contains("clinic-slots"),
        "names the other agency's route: {e}"
    );
    assert_eq!(env.version().await, version);
    let (_, text) = fenfa_admin::commit::current_text(&env.app).await.unwrap();
    assert!(
        !text.contains("/health/*"),
        "the shadowing route is not live"
    );

    // An agency operator may not allow an overlap.
    env.expect(
        403,
        "PUT",
        &format!("/v1/routes/{rt}"),
        &op_a,
        json!({"service_id": svc_a, "name": "shadow", "paths": ["/health/*"],
               "allow_overlap": {"reason": "mine now"}}),
    )
    .await;
    // A system admin allows it, with a reason; the allowance is recorded and publication passes.
    env.expect(
        422,
        "PUT",
        &format!("/v1/routes/{rt}"),
        &sys,
        json!({"service_id": svc_a, "name": "shadow", "paths": ["/health/*"],
               "allow_overlap": {}}),
    )
    .await;
    // The allowance is an object: the same reason as a one-element array (which serde would
    // read by position) is refused at the field.
    let e = env
        .expect(
            422,
            "PUT",
            &format!("/v1/routes/{rt}"),
            &sys,
            json!({"service_id": svc_a, "name": "shadow", "paths": ["/health/*"],
                   "allow_overlap": ["tax takes over the health desk (order 2026-17)"]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "allow_overlap", "{e}");
    let v = env
        .expect(
            200,
            "PUT",
            &format!("/v1/routes/{rt}"),
            &sys,
            json!({"service_id": svc_a, "name": "shadow", "paths": ["/health/*"], "priority": 100,
                   "allow_overlap": {"reason": "tax takes over the health desk (order 2026-17)"}}),
        )
        .await;
    assert_eq!(v["allow_overlap"]["by"], "admin", "{v}");
    publish(env, &sys, &svc_a, json!({"channels": ["wechat"]})).await;
    let auditor = env.auditor().await;
    let log = env
        .get("/v1/audit/admin?action=route.update", &auditor)
        .await;
    assert!(
        log.to_string().contains("order 2026-17"),
        "the reason is in the admin audit: {log}"
    );
}
both_backends!(overlapping_routes_of_two_agencies_are_published_only_when_a_system_admin_allows_it);
