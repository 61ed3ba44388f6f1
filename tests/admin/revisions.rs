//! Revisions (docs/verification.md, "Revisions") on the real platform (`fenfa-admin serve
//! --demo`): the published demo service is changed — its route renamed, a route added, its
//! capacity declared — through a revision that is edited, verified and applied while a client
//! calls the service without pause; not one call fails, and the new route is live after the
//! apply. Applying needs a passing verification of the revision; one open revision at a time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::harness::*;
use crate::serve::*;

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method, &url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_replaces_a_live_service_without_a_failed_call() {
    let demo = start_demo().await;
    let (admin, token, url, cp) = (
        demo.admin.clone(),
        demo.token.clone(),
        demo.url.clone(),
        &demo.cp,
    );
    let http = reqwest::Client::new();
    let sys = login(&http, &admin, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let svc = first_service(&http, &admin, &sys).await;

    // A client calls the service without pause for the whole change.
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, calls, failed) = (stop.clone(), calls.clone(), failed.clone());
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Relaxed) {
                let st = status_of(&http, &url, &token).await;
                calls.fetch_add(1, Relaxed);
                if st != 200 {
                    failed.fetch_add(1, Relaxed);
                    statuses.push(st);
                }
            }
            statuses
        })
    };

    // Open a revision: a copy of the live definition.
    let (st, rev) = send(
        &http,
        reqwest::Method::POST,
        format!("{admin}/v1/services/{svc}/revisions"),
        &sys,
        None,
    )
    .await;
    assert_eq!(st, 201, "{rev}");
    assert_eq!(rev["status"], "draft");
    assert_eq!(rev["routes"][0]["name"], "demo-hello");
    let rid = rev["id"].as_str().unwrap().to_string();
    // One open revision per service.
    let (st, _) = send(
        &http,
        reqwest::Method::POST,
        format!("{admin}/v1/services/{svc}/revisions"),
        &sys,
        None,
    )
    .await;
    assert_eq!(st, 409);
    // The new definition: the route renamed (the same paths), one more route, a capacity.
    let mut upstream = rev["upstream"].clone();
    upstream["timeouts"]["read"] = json!("4s");
    let content = json!({
        "upstream": upstream,
        "capacity_rps": 4,
        "routes": [
            {"name": "demo-hello-v2", "paths": ["/demo/*"], "strip_prefix": true},
            {"name": "demo-extra", "paths": ["/extra/*"], "strip_prefix": true},
        ],
    });
    // A route with no interface at all is refused: a service always has one.
    let (st, e) = send(
        &http,
        reqwest::Method::PUT,
        format!("{admin}/v1/revisions/{rid}"),
        &sys,
        Some(json!({"upstream": upstream, "routes": []})),
    )
    .await;
    assert_eq!(
        (st, e["error"]["fields"][0]["path"].as_str()),
        (422, Some("routes")),
        "{e}"
    );
    let (st, r) = send(
        &http,
        reqwest::Method::PUT,
        format!("{admin}/v1/revisions/{rid}"),
        &sys,
        Some(content),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let (st, r) = send(
        &http,
        reqwest::Method::POST,
        format!("{admin}/v1/revisions/{rid}/submit"),
        &sys,
        None,
    )
    .await;
    assert_eq!((st, r["status"].as_str()), (200, Some("submitted")), "{r}");
    // Not verified: not applied.
    let (st, e) = send(
        &http,
        reqwest::Method::POST,
        format!("{admin}/v1/revisions/{rid}/apply"),
        &sys,
        None,
    )
    .await;
    assert_eq!(st, 409, "{e}");
    let (st, v) = send(
        &http,
        reqwest::Method::POST,
        format!("{admin}/v1/revisions/{rid}/verifications"),
        &sys,
        Some(json!({"load": {"step_ms": 200}})),
    )
    .await;
    assert_eq!((st, v["result"].as_str()), (201, Some("passed")), "{v}");
    assert_eq!(v["revision_id"], rid.as_str());
    // Until the apply the live service is the old one.
    assert_eq!(
        status_of(&http, &format!("{}/extra/x", demo.gw), &token).await,
        404
    );
    let (st, s) = send(
        &http,
        reqwest::Method::POST,
        format!("{admin}/v1/revisions/{rid}/apply"),
        &sys,
        None,
    )
    .await;
    assert_eq!((st, s["status"].as_str()), (200, Some("published")), "{s}");
    assert_eq!(s["capacity_rps"], 4);
    wait_for("the new route", cp, async || {
        status_of(&http, &format!("{}/extra/x", demo.gw), &token).await == 200
    })
    .await;
    // Keep calling a little after the switch, then count.
    let seen = calls.load(Relaxed);
    wait_for("calls after the switch", cp, async || {
        calls.load(Relaxed) > seen + 20
    })
    .await;
    stop.store(true, Relaxed);
    let statuses = client.await.unwrap();
    assert!(
        calls.load(Relaxed) > 50,
        "only {} calls",
        calls.load(Relaxed)
    );
    assert_eq!(
        failed.load(Relaxed),
        0,
        "calls failed during the change: {statuses:?}"
    );

    // The routes are the revision's; the revision is applied; one open revision again allowed.
    let routes: Value = get_json(&http, format!("{admin}/v1/routes?service_id={svc}"), &sys).await;
    let mut names: Vec<&str> = routes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["demo-extra", "demo-hello-v2"]);
    let r: Value = get_json(&http, format!("{admin}/v1/revisions/{rid}"), &sys).await;
    assert_eq!(r["status"], "applied");
    // The apply is one audited change of the service, its routes and the revision.
    let aud = login(&http, &admin, "auditor", AUDIT_PW, AUDIT_TOTP).await;
    let log: Value = get_json(
        &http,
        format!("{admin}/v1/audit/admin?action=revision.apply"),
        &aud,
    )
    .await;
    let mut kinds: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource_kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    // The old route removed, two created, the revision, the service.
    assert_eq!(
        kinds,
        ["revision", "route", "route", "route", "service"],
        "{log}"
    );
}
