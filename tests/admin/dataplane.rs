//! Propagation and ingest: every commit bumps the config version; gateways long-poll
//! `/v1/dataplane/watch` with a node token and get the rendered config when it is newer (304
//! otherwise); request-audit batches are ingested idempotently by (node, segment, offset). The
//! gateway's own client code (`fenfa_gateway::control_plane`, `fenfa_gateway::audit::sink`) is
//! used where it exists, so both sides keep to one contract.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

async fn node_token(env: &Env, sec: &str, name: &str) -> (String, String) {
    let v = env
        .expect(201, "POST", "/v1/nodes", sec, json!({"name": name}))
        .await;
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

async fn watch_returns_newer_configs_and_304_when_nothing_changes(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let (node_id, node) = node_token(env, &sec, "gw-1").await;
    let current = env.version().await;
    // Newer than 0: the config at once, its version in the header; the gateway's parser reads it.
    let (st, headers, body) = env
        .call_raw(
            "GET",
            "/v1/dataplane/watch?version=0&timeout=0",
            Some(&node),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        headers["x-fenfa-config-version"].to_str().unwrap(),
        current.to_string()
    );
    let cfg = fenfa_gateway::config::parse(&body).expect("the gateway parses what it is sent");
    assert_eq!(
        cfg.version.as_deref(),
        Some(format!("cp-{current}").as_str())
    );
    // Up to date: 304 after the timeout.
    let t = Instant::now();
    let (st, headers, body) = env
        .call_raw(
            "GET",
            &format!("/v1/dataplane/watch?version={current}&timeout=1"),
            Some(&node),
            None,
        )
        .await;
    assert_eq!((st, body.as_str()), (304, ""));
    assert_eq!(
        headers["x-fenfa-config-version"].to_str().unwrap(),
        current.to_string()
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
    // A waiting watcher wakes on a commit.
    let base = env.base.clone();
    let waiter = tokio::spawn({
        let node = node.clone();
        async move {
            let t = Instant::now();
            let r = reqwest::Client::new()
                .get(format!(
                    "{base}/v1/dataplane/watch?version={current}&timeout=20"
                ))
                .bearer_auth(node)
                .send()
                .await
                .unwrap();
            let v = r.headers()["x-fenfa-config-version"]
                .to_str()
                .unwrap()
                .to_string();
            (r.status().as_u16(), v, r.text().await.unwrap(), t.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.agency(&sys, "watched").await;
    let (st, v, body, took) = waiter.await.unwrap();
    assert_eq!((st, v), (200, (current + 1).to_string()));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let cfg = fenfa_gateway::config::parse(&body).unwrap();
    assert!(cfg.agencies.iter().any(|a| a.name == "watched"));
    // The node's progress is visible to operators.
    let nodes = env.get("/v1/nodes", &sec).await;
    let n = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(n["config_version"].as_i64(), Some(current + 1));
    // A node ahead of the store (restored from a backup) is given what is committed.
    let (st, headers, _) = env
        .call_raw(
            "GET",
            &format!("/v1/dataplane/watch?version={}&timeout=5", current + 100),
            Some(&node),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        headers["x-fenfa-config-version"].to_str().unwrap(),
        (current + 1).to_string()
    );
    // The gateway's own watch client speaks the same contract.
    let cp =
        fenfa_gateway::control_plane::ControlPlane::new(&fenfa_gateway::control_plane::Options {
            url: env.base.clone(),
            token: node.clone(),
            max_body: fenfa_gateway::control_plane::DEFAULT_MAX_BODY,
            ..Default::default()
        })
        .unwrap();
    let got = cp.watch(0, 0).await.unwrap();
    assert!(
        matches!(got, fenfa_gateway::control_plane::Watch::Changed { version, .. } if version == current + 1),
        "{got:?}"
    );
}
both_backends!(watch_returns_newer_configs_and_304_when_nothing_changes);

async fn dataplane_endpoints_need_a_live_node_token(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    for token in [None, Some(sys.as_str()), Some("fn_made_up")] {
        let (st, _) = env
            .call(
                "GET",
                "/v1/dataplane/watch?version=0&timeout=0",
                token,
                None,
            )
            .await;
        assert_eq!(st, 401);
        let (st, _) = env
            .call(
                "POST",
                "/v1/dataplane/audit",
                token,
                Some(json!({"node": "n", "segment": "s", "offset": 0, "records": []})),
            )
            .await;
        assert_eq!(st, 401);
    }
    let (id, node) = node_token(env, &sec, "gw-2").await;
    let (st, _) = env
        .call(
            "GET",
            "/v1/dataplane/watch?version=0&timeout=0",
            Some(&node),
            None,
        )
        .await;
    assert_eq!(st, 200);
    env.expect(204, "DELETE", &format!("/v1/nodes/{id}"), &sec, Value::Null)
        .await;
    let (st, _) = env
        .call(
            "GET",
            "/v1/dataplane/watch?version=0&timeout=0",
            Some(&node),
            None,
        )
        .await;
    assert_eq!(st, 401, "a revoked node token stops working");
}
both_backends!(dataplane_endpoints_need_a_live_node_token);

fn record(i: u64, agency: &str) -> Value {
    json!({"time": "2027-01-15T08:00:00Z", "request_id": format!("req-{i}"), "node": "gw-3",
           "agency": agency, "service": "pension", "route": "pension-balance", "channel": "wechat",
           "app": "wx1", "user": "u1", "method": "GET", "path": "/social/pension/balance",
           "status": 200, "decision": "allowed", "latency_us": 1200, "bytes": 10, "seq": i})
}

async fn request_audit_ingest_is_idempotent_and_queryable(env: &Env) {
    let sec = env.security().await;
    let aud = env.auditor().await;
    let (_, node) = node_token(env, &sec, "gw-3").await;
    let batch = |offset: u64, n: u64| {
        json!({"node": "gw-3", "segment": "audit-0000000001.jsonl", "offset": offset,
               "records": (offset..offset + n).map(|i| record(i, "social")).collect::<Vec<_>>()})
    };
    let v = env
        .expect(200, "POST", "/v1/dataplane/audit", &node, batch(0, 3))
        .await;
    assert_eq!(v, json!({"accepted": 3, "duplicates": 0}));
    let v = env
        .expect(200, "POST", "/v1/dataplane/audit", &node, batch(0, 3))
        .await;
    assert_eq!(
        v,
        json!({"accepted": 0, "duplicates": 3}),
        "a re-sent batch changes nothing"
    );
    let v = env
        .expect(200, "POST", "/v1/dataplane/audit", &node, batch(2, 3))
        .await;
    assert_eq!(v, json!({"accepted": 2, "duplicates": 1}));
    let e = env
        .expect(
            422,
            "POST",
            "/v1/dataplane/audit",
            &node,
            json!({"node": "gw-3", "segment": "s", "offset": 0, "records": [1]}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "records[0]");
    // The gateway's own HTTP sink delivers to this endpoint.
    {
        use fenfa_gateway::audit::sink::{Batch, HttpSink, Sink};
        let ship = serde_json::from_value(
            json!({"url": format!("{}/v1/dataplane/audit", env.base), "token": node}),
        )
        .unwrap();
        let mut sink = HttpSink::new(&ship, node).unwrap();
        let records: Vec<Vec<u8>> = (0..2)
            .map(|i| record(100 + i, "housing").to_string().into_bytes())
            .collect();
        let b = Batch {
            node: "gw-3",
            segment: "audit-0000000002.jsonl",
            offset: 0,
            records: &records,
        };
        sink.send(&b).await.unwrap();
        sink.send(&b).await.unwrap();
    }
    // The audit admin queries with filters and pages.
    let v = env
        .get("/v1/audit/requests?agency=social&limit=3", &aud)
        .await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["record"]["request_id"], "req-4");
    assert_eq!(items[0]["token_node"], "gw-3");
    let next = v["next_before"].as_i64().unwrap();
    let v = env
        .get(
            &format!("/v1/audit/requests?agency=social&limit=3&before={next}"),
            &aud,
        )
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let v = env.get("/v1/audit/requests?agency=housing", &aud).await;
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        2,
        "the sink's re-send was deduplicated"
    );
    let v = env
        .get("/v1/audit/requests?request_id=req-1&status=200", &aud)
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (st, _) = env
        .call("GET", "/v1/audit/requests", Some(&sec), None)
        .await;
    assert_eq!(st, 403);
}
both_backends!(request_audit_ingest_is_idempotent_and_queryable);
