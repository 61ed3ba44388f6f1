//! Request bodies at the edges: a missing field is named, an oversized body is `413` with the
//! limit, a JSON array is not an object, and only JSON is JSON (`415` otherwise). Nothing
//! changes in any of these cases.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

async fn raw(
    env: &Env,
    token: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = env
        .http
        .post(format!("{}{path}", env.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let st = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn malformed_bodies_are_refused_with_the_status_and_field_that_explain_them(env: &Env) {
    let sys = env.admin().await;
    let version = env.version().await;

    // A missing required field is named, at the top level and nested.
    let e = env
        .expect(422, "POST", "/v1/agencies", &sys, json!({"title": "无名"}))
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "name", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().starts_with("name:"),
        "{e}"
    );
    let e = env
        .expect(
            422,
            "POST",
            "/v1/services",
            &sys,
            json!({"agency_id": "x", "name": "s", "title": "t", "kind": "api", "upstream": {}}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "upstream.targets", "{e}");

    // 3 MiB: 413, naming the limit.
    let big = format!("{{\"name\":\"big\",\"title\":\"{}\"}}", "x".repeat(3 << 20));
    let (st, e) = raw(
        env,
        &sys,
        "/v1/agencies",
        "application/json",
        big.into_bytes(),
    )
    .await;
    assert_eq!(st, 413, "{e}");
    assert_eq!(e["error"]["code"], "payload_too_large");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("2 MiB"),
        "{e}"
    );

    // An array where an object belongs (serde would read it as the fields in order).
    let (st, e) = raw(
        env,
        &sys,
        "/v1/agencies",
        "application/json",
        br#"["arrayagency", "title"]"#.to_vec(),
    )
    .await;
    assert_eq!(st, 422, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("object"),
        "{e}"
    );

    // JSON sent as text/plain (or without a content type) is not taken as JSON.
    let body = br#"{"name": "plainagency", "title": "t"}"#.to_vec();
    let (st, e) = raw(env, &sys, "/v1/agencies", "text/plain", body.clone()).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{e}"
    );
    let (st, _) = raw(
        env,
        &sys,
        "/v1/agencies",
        "application/json; charset=utf-8",
        br#"{"name": "jsonagency", "title": "t"}"#.to_vec(),
    )
    .await;
    assert_eq!(st, 201, "JSON with a charset is JSON");

    let names: Vec<String> = env.get("/v1/agencies", &sys).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["jsonagency"],
        "only the good request changed anything"
    );
    assert_eq!(env.version().await, version + 1);
}
both_backends!(malformed_bodies_are_refused_with_the_status_and_field_that_explain_them);
