//! Go-live verification (docs/verification.md) against real loopback backends: a service whose
//! answers carry unmasked personal data fails and goes back to its agency with the field paths
//! (never the values), passes once the agency masks them, and is then published; publishing
//! needs a passing verdict of the current definition; a security admin's override is a written
//! decision in the admin audit; the load test never goes above the declared capacity and stops
//! at the first step that breaks the threshold.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

/// What the backend saw: each request's path and when it arrived.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Instant)>>>);

impl Seen {
    fn on(&self, path: &str) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }
}

const CITIZEN: &str = r#"{"code":0,"data":{"xm":"张三","sfzh":"11010519491231002X","sjh":"13812345678","balance":1234.5}}"#;

async fn handle(State(seen): State<Seen>, req: axum::extract::Request) -> axum::response::Response {
    let path = req.uri().path().to_string();
    let now = Instant::now();
    let (n, since_last) = {
        let mut s = seen.0.lock().unwrap();
        let last = s.iter().rev().find(|(p, _)| *p == path).map(|(_, t)| *t);
        s.push((path.clone(), now));
        (
            s.iter().filter(|(p, _)| *p == path).count(),
            last.map(|t| now.duration_since(t)),
        )
    };
    // Slow (400 ms) when requests come faster than one per 130 ms: above ~7.7 rps.
    if path == "/load/slow" && since_last.is_some_and(|d| d.as_millis() < 130) {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    match path.as_str() {
        "/social/pension/balance" => (json, CITIZEN).into_response(),
        "/load/ok" | "/load/slow" => (json, r#"{"ok":true}"#).into_response(),
        // Healthy for its first 4 requests, then failing.
        "/load/flaky" if n <= 4 => (json, r#"{"ok":true}"#).into_response(),
        "/load/flaky" => {
            (StatusCode::INTERNAL_SERVER_ERROR, json, r#"{"ok":false}"#).into_response()
        }
        _ => (StatusCode::NOT_FOUND, json, r#"{"error":"not found"}"#).into_response(),
    }
}

/// A backend on a loopback port; its port and what it saw.
async fn backend() -> (u16, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Seen::default();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, seen)
}

/// An agency whose policy admits 127.0.0.1:`port`, and its operator.
async fn agency(env: &Env, sys: &str, port: u16) -> (String, String) {
    let sec = env.security().await;
    let ag = env.agency(sys, "social").await;
    env.expect(
        201,
        "POST",
        "/v1/network-policies",
        &sec,
        json!({"agency_id": ag, "name": "social-dc", "rules": [
            {"destination": "127.0.0.1", "port": port, "protocol": "http"}
        ]}),
    )
    .await;
    let op = env.operator(sys, "social-op", &ag).await;
    (ag, op)
}

fn service_body(ag: &str, port: u16, capacity: u32, masking: Option<Value>) -> Value {
    json!({
        "agency_id": ag, "name": "pension", "title": "养老金查询", "kind": "api",
        "upstream": {"targets": [{"addr": format!("127.0.0.1:{port}")}]},
        "capacity_rps": capacity, "masking": masking,
    })
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {v}"))
}

async fn verify(env: &Env, token: &str, svc: &str, step_ms: u64) -> Value {
    env.expect(
        201,
        "POST",
        &format!("/v1/services/{svc}/verifications"),
        token,
        json!({"load": {"step_ms": step_ms}}),
    )
    .await
}

async fn submit(env: &Env, token: &str, svc: &str) {
    env.expect(
        200,
        "POST",
        &format!("/v1/services/{svc}/submit"),
        token,
        json!({}),
    )
    .await;
}

async fn unmasked_personal_data_returns_the_service_until_the_agency_masks_it(env: &Env) {
    let (port, _seen) = backend().await;
    let sys = env.admin().await;
    let (ag, op) = agency(env, &sys, port).await;
    let svc = env
        .expect(
            201,
            "POST",
            "/v1/services",
            &op,
            service_body(&ag, port, 4, None),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.expect(
        201,
        "POST",
        "/v1/routes",
        &op,
        json!({"service_id": svc, "name": "pension-balance", "paths": ["/social/pension/balance"],
               "samples": [{"method": "GET", "expect_status": 200}]}),
    )
    .await;
    submit(env, &op, &svc).await;
    // Not verified yet: publishing is refused, saying why.
    let e = env
        .expect(
            409,
            "POST",
            &format!("/v1/services/{svc}/publish"),
            &sys,
            json!({"channels": ["wechat"]}),
        )
        .await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not been verified"),
        "{e}"
    );
    // An agency operator cannot verify its own service.
    env.expect(
        403,
        "POST",
        &format!("/v1/services/{svc}/verifications"),
        &op,
        json!({}),
    )
    .await;

    // The load settings are an object: an array (which serde would read by position) and an
    // out-of-range step are refused, naming the field.
    for (body, path) in [
        (json!({"load": []}), "load"),
        (json!({"load": [1000]}), "load"),
        (json!({"load": {"step_ms": 10}}), "load.step_ms"),
    ] {
        let e = env
            .expect(
                422,
                "POST",
                &format!("/v1/services/{svc}/verifications"),
                &sys,
                body,
            )
            .await;
        assert_eq!(e["error"]["fields"][0]["path"], path, "{e}");
    }

    let v = verify(env, &sys, &svc, 200).await;
    assert_eq!(v["result"], "failed", "{v}");
    assert_eq!(check(&v, "connectivity")["result"], "pass", "{v}");
    assert_eq!(check(&v, "load")["result"], "pass", "{v}");
    assert_eq!(check(&v, "baseline")["result"], "pass", "{v}");
    let sens = check(&v, "sensitivity");
    assert_eq!(sens["result"], "fail");
    let fields: Vec<(String, String)> = sens["items"][0]["evidence"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["class"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("$.data.xm", "name"),
            ("$.data.sfzh", "id_number"),
            ("$.data.sjh", "mobile")
        ]
        .map(|(p, c)| (p.to_string(), c.to_string()))
    );
    // Field paths and types, never the values.
    let text = v.to_string();
    for secret in ["11010519491231002X", "13812345678", "张三"] {
        assert!(!text.contains(secret), "the result shows {secret}: {text}");
    }
    // The load went up to the capacity the agency declared: 1, 2 and 4 rps.
    let rates: Vec<u64> = check(&v, "load")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["evidence"]["rate"].as_u64().unwrap())
        .collect();
    assert_eq!(rates, [1, 2, 4]);

    // Back to the agency, with the reasons; it cannot be published.
    let s = env.get(&format!("/v1/services/{svc}"), &op).await;
    assert_eq!(s["status"], "returned");
    let note = s["review_note"].as_str().unwrap();
    assert!(note.contains("$.data.sfzh (id_number"), "{note}");
    assert!(!note.contains("11010519491231002X"), "{note}");
    assert_eq!(s["verification"]["result"], "failed");
    env.expect(
        409,
        "POST",
        &format!("/v1/services/{svc}/publish"),
        &sys,
        json!({"channels": ["wechat"]}),
    )
    .await;
    // The agency reads its verification; another agency's operator does not find it.
    let id = v["id"].as_str().unwrap();
    let own = env.get(&format!("/v1/verifications/{id}"), &op).await;
    assert_eq!(own["result"], "failed");
    let ag2 = env.agency(&sys, "tax").await;
    let other = env.operator(&sys, "tax-op", &ag2).await;
    env.expect(
        404,
        "GET",
        &format!("/v1/verifications/{id}"),
        &other,
        json!(null),
    )
    .await;

    // A bad masking config is refused at the boundary, naming the field.
    let e = env
        .expect(
            422,
            "PUT",
            &format!("/v1/services/{svc}"),
            &op,
            service_body(&ag, port, 4, Some(json!({"classes": ["id_nummer"]}))),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "masking.classes[0]", "{e}");
    // The agency masks its answers, resubmits; verification passes and the service goes live.
    env.expect(
        200,
        "PUT",
        &format!("/v1/services/{svc}"),
        &op,
        service_body(&ag, port, 4, Some(json!({}))),
    )
    .await;
    submit(env, &op, &svc).await;
    let v = verify(env, &sys, &svc, 200).await;
    assert_eq!(v["result"], "passed", "{v}");
    assert_eq!(check(&v, "sensitivity")["result"], "pass");

    // A change after the verification makes its verdict stale.
    env.expect(
        200,
        "PUT",
        &format!("/v1/services/{svc}"),
        &sys,
        service_body(&ag, port, 3, Some(json!({}))),
    )
    .await;
    let e = env
        .expect(
            409,
            "POST",
            &format!("/v1/services/{svc}/publish"),
            &sys,
            json!({"channels": ["wechat"]}),
        )
        .await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changed after verification"),
        "{e}"
    );
    let v = verify(env, &sys, &svc, 200).await;
    assert_eq!(v["result"], "passed", "{v}");
    let s = env
        .expect(
            200,
            "POST",
            &format!("/v1/services/{svc}/publish"),
            &sys,
            json!({"channels": ["wechat"]}),
        )
        .await;
    assert_eq!(s["status"], "published");
    // The gateways mask the service's answers.
    let cfg = env.get("/v1/config", &sys).await;
    let plugins = &cfg["config"]["services"][0]["plugins"];
    assert!(
        plugins
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["name"] == "response-masking")),
        "{cfg}"
    );
    // Every run is in the admin audit and kept.
    let auditor = env.auditor().await;
    let log = env
        .get("/v1/audit/admin?action=verification.run", &auditor)
        .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 3, "{log}");
    let runs = env
        .get(&format!("/v1/verifications?service_id={svc}"), &auditor)
        .await;
    let results: Vec<&str> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["passed", "passed", "failed"]);
}
both_backends!(unmasked_personal_data_returns_the_service_until_the_agency_masks_it);

async fn an_override_is_a_security_admins_written_decision_in_the_admin_audit(env: &Env) {
    // Nothing listens: connectivity fails.
    let port = crate::serve::free_port();
    let sys = env.admin().await;
    let (ag, op) = agency(env, &sys, port).await;
    let svc = env
        .expect(
            201,
            "POST",
            "/v1/services",
            &op,
            service_body(&ag, port, 4, None),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.route(&op, &svc, "pension-balance", "/social/pension/balance")
        .await;
    submit(env, &op, &svc).await;
    let v = verify(env, &sys, &svc, 200).await;
    assert_eq!(v["result"], "failed");
    let conn = check(&v, "connectivity");
    assert_eq!(conn["result"], "fail");
    assert_eq!(
        conn["items"][0]["evidence"]["causes"],
        json!(["refused"]),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    let url = format!("/v1/verifications/{id}/override");
    let reason = "backend moves to the new data centre on 12-08; accepted by 安全办 for one week";
    // Only the security admin overrides, and only with a reason.
    env.expect(403, "POST", &url, &sys, json!({"reason": reason}))
        .await;
    let sec = env.security().await;
    let e = env
        .expect(422, "POST", &url, &sec, json!({"reason": "ok"}))
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "reason");
    let o = env
        .expect(200, "POST", &url, &sec, json!({"reason": reason}))
        .await;
    assert_eq!(o["result"], "overridden");
    assert_eq!(o["override"]["reason"], reason);
    assert_eq!(o["override"]["by"], "security");
    env.expect(409, "POST", &url, &sec, json!({"reason": reason}))
        .await;
    // The service is back under review and may be published.
    let s = env.get(&format!("/v1/services/{svc}"), &sys).await;
    assert_eq!(s["status"], "submitted");
    assert_eq!(s["verification"]["result"], "overridden");
    env.expect(
        200,
        "POST",
        &format!("/v1/services/{svc}/publish"),
        &sys,
        json!({"channels": ["wechat"]}),
    )
    .await;
    // The admin audit keeps who decided, when and why.
    let auditor = env.auditor().await;
    let log = env
        .get("/v1/audit/admin?action=verification.override", &auditor)
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    assert_eq!(items[0]["actor"], "security");
    assert_eq!(items[0]["resource_id"], svc.as_str());
    assert_eq!(items[0]["after"]["verification"]["override_reason"], reason);
    assert_eq!(items[0]["after"]["verification"]["id"], id.as_str());
}
both_backends!(an_override_is_a_security_admins_written_decision_in_the_admin_audit);

/// A service with one route on `path` of the backend at `port`, submitted, with `capacity`.
async fn submitted(env: &Env, sys: &str, port: u16, capacity: u32, path: &str) -> String {
    let (ag, _) = agency(env, sys, port).await;
    let svc = env
        .expect(
            201,
            "POST",
            "/v1/services",
            sys,
            service_body(&ag, port, capacity, None),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.route(sys, &svc, "load-probe", path).await;
    submit(env, sys, &svc).await;
    svc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_goes_up_to_the_declared_capacity_and_never_above_it() {
    let env = Env::start(Backend::Sqlite).await.unwrap();
    let (port, seen) = backend().await;
    let sys = env.admin().await;
    let svc = submitted(&env, &sys, port, 20, "/load/ok").await;
    let v = verify(&env, &sys, &svc, 1000).await;
    assert_eq!(v["result"], "passed", "{v}");
    let steps: Vec<(u64, u64)> = check(&v, "load")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["evidence"]["rate"].as_u64().unwrap(),
                i["evidence"]["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    // 25 %, 50 % and 100 % of 20 rps, one second each.
    assert_eq!(steps, [(5, 5), (10, 10), (20, 20)]);
    // The backend saw the connectivity sample and exactly those requests…
    let at = seen.on("/load/ok");
    assert_eq!(at.len(), 1 + 5 + 10 + 20);
    // …and the last step's 20 at the pace of 20 per second, not faster: they span 19 intervals
    // of 50 ms (less what scheduling jitter can take from the two ends).
    let last = &at[at.len() - 20..];
    let span = last[19].duration_since(last[0]);
    assert!(
        span.as_millis() >= 900,
        "20 requests in {span:?}: faster than the declared 20 rps"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_stops_at_the_first_step_that_breaks_the_threshold() {
    let env = Env::start(Backend::Sqlite).await.unwrap();
    let (port, seen) = backend().await;
    let sys = env.admin().await;
    let svc = submitted(&env, &sys, port, 20, "/load/flaky").await;
    let v = verify(&env, &sys, &svc, 500).await;
    assert_eq!(v["result"], "failed", "{v}");
    let load = check(&v, "load");
    let items = load["items"].as_array().unwrap();
    // 5 rps for half a second (3 requests) passes; at 10 rps the backend fails (5 requests,
    // all 500): the load stops there, and 20 rps is never tried.
    assert_eq!(items.len(), 2, "{load}");
    assert_eq!(items[0]["result"], "pass");
    assert_eq!(items[1]["result"], "fail");
    assert_eq!(items[1]["evidence"]["rate"], 10);
    assert_eq!(items[1]["evidence"]["errors"], 5);
    assert!(
        items[1]["detail"]
            .as_str()
            .unwrap()
            .contains("error rate above 1%"),
        "{load}"
    );
    assert_eq!(seen.on("/load/flaky").len(), 1 + 3 + 5);
    let s = env.get(&format!("/v1/services/{svc}"), &sys).await;
    assert_eq!(s["status"], "returned");
    assert!(s["review_note"].as_str().unwrap().contains("load:"), "{s}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_stops_where_the_backend_slows_down_past_a_rate() {
    let env = Env::start(Backend::Sqlite).await.unwrap();
    let (port, seen) = backend().await;
    let sys = env.admin().await;
    // Answers slower than 200 ms count as slow (the inspection settings' threshold).
    env.expect(
        200,
        "PUT",
        "/v1/inspection-settings",
        &sys,
        json!({"daily_at": "08:30", "timeout_ms": 5000, "slow_ms": 200, "cert_warn_days": 30,
               "availability_target": 99.0, "min_requests": 20}),
    )
    .await;
    let svc = submitted(&env, &sys, port, 20, "/load/slow").await;
    let v = verify(&env, &sys, &svc, 1000).await;
    assert_eq!(v["result"], "failed", "{v}");
    let load = check(&v, "load");
    let items = load["items"].as_array().unwrap();
    // 5 rps (200 ms apart) is answered at once; at 10 rps the backend slows to 400 ms: p99
    // breaks the threshold and the load stops before 20 rps.
    assert_eq!(items.len(), 2, "{load}");
    assert_eq!(items[0]["result"], "pass", "{load}");
    assert_eq!(items[1]["result"], "fail");
    assert_eq!(items[1]["evidence"]["errors"], 0);
    assert!(
        items[1]["evidence"]["p99_ms"].as_u64().unwrap() > 200,
        "{load}"
    );
    assert!(
        items[1]["detail"]
            .as_str()
            .unwrap()
            .contains("p99 above 200 ms"),
        "{load}"
    );
    assert_eq!(seen.on("/load/slow").len(), 1 + 5 + 10);
    env.finish().await;
}
