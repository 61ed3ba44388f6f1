//! Abnormal-call detection and alerts (docs/alerts.md), through the real ingest endpoint with a
//! node token: scripted traffic for each detector raises exactly one alert with the right
//! evidence within 10 s, a replay of normal traffic raises none (record times drive the
//! detectors, so 30 minutes of traffic replay in a moment); alerts are acknowledged and resolved
//! by the security admin (auditors read only) and every change is in the admin audit; delivery to
//! loopback receivers checks the WeCom, DingTalk (signature computed here) and webhook payloads,
//! retries, and the robots' per-minute limit with the manual clock; the automatic deny is served
//! by a real gateway (`fenfa-admin serve --demo`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

/// A request audit record as a gateway writes it (docs/audit.md).
#[allow(clippy::too_many_arguments)]
fn rec(
    t: i64,
    n: u64,
    ip: &str,
    user: &str,
    service: &str,
    path: &str,
    status: u16,
    bytes: u64,
) -> Value {
    let time = fenfa_admin::clock::rfc3339(t);
    json!({
        "time": time, "request_id": format!("req-{n:08}"), "node": "gw-a", "client_ip": ip,
        "channel": "wechat", "app": "wx-app-0001", "user": user, "agency": "civil",
        "service": service, "route": format!("{service}-get"), "method": "GET", "path": path,
        "status": status, "latency_us": 2000, "bytes": bytes,
        "decision": if status < 400 { "allowed" } else { "denied" },
    })
}

/// A tiny deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `minutes` of normal traffic ending at `end`: 20 users on their own addresses, three
/// services, a few ids each, the odd 401 and 5xx.
fn normal(end: i64, minutes: i64, seq: &mut u64) -> Vec<Value> {
    let mut g = Lcg(7);
    let mut out = Vec::new();
    let start = end - minutes * 60;
    for m in 0..minutes {
        for u in 0..20u64 {
            for _ in 0..(1 + g.next(2)) {
                let t = start + m * 60 + g.next(60) as i64;
                let svc = ["social", "health", "housing"][g.next(3) as usize];
                let id = 1000 + u * 10 + g.next(3);
                let status = match g.next(200) {
                    0 => 500,
                    1 | 2 => 401,
                    _ => 200,
                };
                *seq += 1;
                out.push(rec(
                    t,
                    *seq,
                    &format!("10.1.0.{u}"),
                    &format!("u-{u:04}"),
                    svc,
                    &format!("/{svc}/records/{id}"),
                    status,
                    1500 + g.next(1000),
                ));
            }
        }
    }
    out.sort_by_key(|r| r["time"].as_str().unwrap().to_string());
    out
}

async fn node(env: &Env, sec: &str) -> String {
    let v = env
        .expect(201, "POST", "/v1/nodes", sec, json!({"name": "gw-a"}))
        .await;
    v["token"].as_str().unwrap().to_string()
}

/// Posts records through the ingest endpoint in batches.
async fn ingest(env: &Env, node: &str, offset: &mut u64, records: Vec<Value>) {
    for chunk in records.chunks(2000) {
        let v = env
            .expect(
                200,
                "POST",
                "/v1/dataplane/audit",
                node,
                json!({"node": "gw-a", "segment": "audit-0001.jsonl", "offset": *offset, "records": chunk}),
            )
            .await;
        assert_eq!(v["accepted"].as_u64(), Some(chunk.len() as u64));
        *offset += chunk.len() as u64;
    }
}

async fn alerts(env: &Env, token: &str) -> Vec<Value> {
    env.get("/v1/alerts?limit=500", token).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (at most 10 s) until `n` alerts exist, then a little more to see no extra one arrives.
async fn expect_alerts(env: &Env, token: &str, n: usize) -> Vec<Value> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) && alerts(env, token).await.len() < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "no alert within 10 s: {:?}",
        alerts(env, token).await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = alerts(env, token).await;
    assert_eq!(got.len(), n, "{got:#?}");
    got
}

async fn normal_traffic_raises_no_alert(env: &Env) {
    let sec = env.security().await;
    let node = node(env, &sec).await;
    let (mut seq, mut off) = (0, 0);
    let records = normal(env.now(), 30, &mut seq);
    assert!(records.len() > 900);
    ingest(env, &node, &mut off, records).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(alerts(env, &sec).await, Vec::<Value>::new());
}
both_backends!(normal_traffic_raises_no_alert);

async fn a_401_burst_raises_one_alert(env: &Env) {
    let sec = env.security().await;
    let node = node(env, &sec).await;
    let (mut seq, mut off) = (0, 0);
    let end = env.now();
    let mut records = normal(end - 60, 20, &mut seq);
    // Credential stuffing: 40 failures from one address in 20 seconds.
    for i in 0..40 {
        seq += 1;
        records.push(rec(
            end - 30 + i / 2,
            seq,
            "203.0.113.9",
            "",
            "social",
            "/social/login",
            401,
            80,
        ));
    }
    ingest(env, &node, &mut off, records).await;
    let got = expect_alerts(env, &sec, 1).await;
    let a = &got[0];
    assert_eq!(a["rule"], "auth_failures");
    assert_eq!(
        (a["subject_kind"].as_str(), a["subject"].as_str()),
        (Some("client_ip"), Some("203.0.113.9"))
    );
    assert_eq!(a["state"], "open");
    assert_eq!(a["evidence"]["window_secs"], 60);
    assert_eq!(a["evidence"]["threshold"], 20.0);
    assert!(a["evidence"]["count"].as_u64().unwrap() >= 20);
    let samples = a["evidence"]["sample_request_ids"].as_array().unwrap();
    assert!(
        !samples.is_empty()
            && samples
                .iter()
                .all(|s| s.as_str().unwrap().starts_with("req-"))
    );
    // One incident, one alert: the rest of the burst was folded into it.
    assert!(a["first_seen_local"].as_str().unwrap().len() == 19);
}
both_backends!(a_401_burst_raises_one_alert);

async fn an_enumeration_raises_one_alert(env: &Env) {
    let sec = env.security().await;
    let node = node(env, &sec).await;
    let (mut seq, mut off) = (0, 0);
    let end = env.now();
    let mut records = normal(end - 60, 20, &mut seq);
    // One user walks 50 ids of one route in 50 seconds.
    for i in 0..50 {
        seq += 1;
        records.push(rec(
            end - 55 + i,
            seq,
            "10.1.0.3",
            "u-0003",
            "housing",
            &format!("/housing/records/{}", 110_105_000 + i * 7),
            200,
            900,
        ));
    }
    ingest(env, &node, &mut off, records).await;
    let got = expect_alerts(env, &sec, 1).await;
    let a = &got[0];
    assert_eq!(a["rule"], "enumeration");
    assert_eq!(
        (a["subject_kind"].as_str(), a["subject"].as_str()),
        (Some("user"), Some("u-0003"))
    );
    assert_eq!(a["service"], "housing");
    assert_eq!(a["evidence"]["route"], "housing-get");
    assert!(a["evidence"]["distinct_ids"].as_u64().unwrap() >= 30);
    // Never the ids themselves.
    assert!(!a.to_string().contains("110105"), "{a}");
}
both_backends!(an_enumeration_raises_one_alert);

async fn a_5xx_spike_raises_one_alert(env: &Env) {
    let sec = env.security().await;
    let node = node(env, &sec).await;
    let (mut seq, mut off) = (0, 0);
    let end = env.now();
    let mut records = normal(end - 60, 20, &mut seq);
    for i in 0..60 {
        seq += 1;
        records.push(rec(
            end - 50 + i / 2,
            seq,
            &format!("10.1.0.{}", i % 20),
            &format!("u-{:04}", i % 20),
            "health",
            "/health/status",
            if i % 3 == 0 { 200 } else { 503 },
            200,
        ));
    }
    ingest(env, &node, &mut off, records).await;
    let got = expect_alerts(env, &sec, 1).await;
    let a = &got[0];
    assert_eq!(a["rule"], "server_errors");
    assert_eq!(
        (a["subject_kind"].as_str(), a["subject"].as_str()),
        (Some("service"), Some("health"))
    );
    assert_eq!(a["severity"], "critical");
    assert!(a["evidence"]["ratio"].as_f64().unwrap() >= 0.3);
    assert!(a["evidence"]["requests"].as_u64().unwrap() >= 20);
}
both_backends!(a_5xx_spike_raises_one_alert);

async fn a_rate_jump_raises_one_alert(env: &Env) {
    let sec = env.security().await;
    let node = node(env, &sec).await;
    let (mut seq, mut off) = (0, 0);
    let end = env.now();
    let minute = end - end.rem_euclid(60) - 60;
    let mut records = normal(minute, 20, &mut seq);
    // The app's usual ~30 calls a minute become 500, spread over its users.
    for i in 0..500 {
        seq += 1;
        records.push(rec(
            minute + (i * 59 / 500) as i64,
            seq,
            &format!("10.1.0.{}", i % 20),
            &format!("u-{:04}", i % 20),
            "social",
            "/social/news",
            200,
            1200,
        ));
    }
    ingest(env, &node, &mut off, records).await;
    let got = expect_alerts(env, &sec, 1).await;
    let a = &got[0];
    assert_eq!(a["rule"], "traffic_jump");
    assert_eq!(
        (a["subject_kind"].as_str(), a["subject"].as_str()),
        (Some("app"), Some("wx-app-0001"))
    );
    assert!(a["evidence"]["factor"].as_f64().unwrap() >= 5.0, "{a}");
    assert!(a["evidence"]["baseline"].as_f64().unwrap() > 10.0, "{a}");
}
both_backends!(a_rate_jump_raises_one_alert);

async fn alerts_are_handled_by_the_security_admin_and_audited(env: &Env) {
    let sec = env.security().await;
    let aud = env.auditor().await;
    let sys = env.admin().await;
    let node = node(env, &sec).await;
    let mut off = 0;
    let end = env.now();
    let burst: Vec<Value> = (0..25)
        .map(|i| {
            rec(
                end - 20,
                i,
                "198.51.100.4",
                "",
                "social",
                "/social/login",
                403,
                50,
            )
        })
        .collect();
    ingest(env, &node, &mut off, burst).await;
    let got = expect_alerts(env, &aud, 1).await;
    let id = got[0]["id"].as_str().unwrap().to_string();
    // Auditors read; only the security admin acts; the system admin sees nothing.
    env.get(&format!("/v1/alerts/{id}"), &aud).await;
    env.expect(
        403,
        "POST",
        &format!("/v1/alerts/{id}/acknowledge"),
        &aud,
        json!({"note": "x"}),
    )
    .await;
    env.expect(403, "GET", "/v1/alerts", &sys, Value::Null)
        .await;
    let e = env
        .expect(
            422,
            "POST",
            &format!("/v1/alerts/{id}/acknowledge"),
            &sec,
            json!({"note": " "}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "note");
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/alerts/{id}/acknowledge"),
            &sec,
            json!({"note": "正在核查该地址"}),
        )
        .await;
    assert_eq!(v["state"], "acknowledged");
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/alerts/{id}/resolve"),
            &sec,
            json!({"note": "已确认为测试流量"}),
        )
        .await;
    assert_eq!(v["state"], "resolved");
    assert_eq!(v["notes"].as_array().unwrap().len(), 2);
    assert_eq!(v["notes"][1]["by"], "security");
    env.expect(
        409,
        "POST",
        &format!("/v1/alerts/{id}/acknowledge"),
        &sec,
        json!({"note": "again"}),
    )
    .await;
    let trail = env.get("/v1/audit/admin?resource_kind=alert", &aud).await;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["alert.resolve", "alert.acknowledge", "alert.open"]
    );
    // Settings: defaults readable, bad values refused naming the field, changes audited.
    let mut s = env.get("/v1/alert-settings", &sec).await;
    assert_eq!(s["rules"]["auth_failures"]["threshold"], 20.0);
    s["rules"]["enumeration"]["window_secs"] = json!(3);
    let e = env
        .expect(422, "PUT", "/v1/alert-settings", &sec, s.clone())
        .await;
    assert_eq!(
        e["error"]["fields"][0]["path"],
        "rules.enumeration.window_secs"
    );
    s["rules"]["enumeration"]["window_secs"] = json!(120);
    s["services"] = json!({"social": {"auth_failures": {"threshold": 100.0}}});
    let v = env.expect(200, "PUT", "/v1/alert-settings", &sec, s).await;
    assert_eq!(v["services"]["social"]["auth_failures"]["threshold"], 100.0);
    env.expect(403, "PUT", "/v1/alert-settings", &aud, v).await;
    // With the override, the same burst on `social` is no longer an incident.
    let burst: Vec<Value> = (0..25)
        .map(|i| {
            rec(
                end - 10,
                100 + i,
                "198.51.100.5",
                "",
                "social",
                "/social/login",
                403,
                50,
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    ingest(env, &node, &mut off, burst).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(alerts(env, &sec).await.len(), 1);
}
both_backends!(alerts_are_handled_by_the_security_admin_and_audited);

// ---- delivery ---------------------------------------------------------------------------------

/// What a loopback receiver got: app-clock second, path and query, headers, body.
#[derive(Debug, Clone)]
struct Got {
    at: i64,
    uri: String,
    signature: Option<String>,
    body: Value,
    raw: Vec<u8>,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    /// Requests still to answer 500.
    fail: Arc<Mutex<u32>>,
    clock: fenfa_admin::clock::ManualClock,
}

/// A loopback HTTP receiver; returns its base URL.
async fn receiver(env: &Env, fail_first: u32) -> (String, Receiver) {
    use fenfa_admin::clock::Clock;
    let r = Receiver {
        got: Arc::default(),
        fail: Arc::new(Mutex::new(fail_first)),
        clock: env.clock.clone(),
    };
    let state = r.clone();
    let handler = move |req: axum::extract::Request| {
        let state = state.clone();
        async move {
            let uri = req.uri().to_string();
            let signature = req
                .headers()
                .get("x-fenfa-signature")
                .map(|v| v.to_str().unwrap().to_string());
            let raw = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec();
            {
                let mut f = state.fail.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "{}".to_string(),
                    );
                }
            }
            state.got.lock().unwrap().push(Got {
                at: state.clock.now(),
                uri,
                signature,
                body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                raw,
            });
            (
                axum::http::StatusCode::OK,
                r#"{"errcode":0,"errmsg":"ok"}"#.to_string(),
            )
        }
    };
    let app = axum::Router::new().fallback(axum::routing::any(handler));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), r)
}

impl Receiver {
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    async fn wait(&self, n: usize) -> Vec<Got> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) && self.got().len() < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.got()
    }
}

fn hmac_b64(key: &str, msg: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&k, msg.as_bytes()).as_ref())
}

async fn alerts_reach_wecom_dingtalk_and_webhooks_with_their_payloads(env: &Env) {
    let sec = env.security().await;
    let aud = env.auditor().await;
    let (wecom_url, wecom) = receiver(env, 0).await;
    let (ding_url, ding) = receiver(env, 0).await;
    let (hook_url, hook) = receiver(env, 2).await;
    const DING_SECRET: &str = "SECa1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6";
    const HOOK_SECRET: &str = "webhook-secret-0123456789";
    // https only, except loopback; WeCom takes no secret; the others need one.
    let e = env
        .expect(422, "POST", "/v1/alert-destinations", &sec,
            json!({"name": "x", "kind": "wecom", "url": "http://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"}))
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "url");
    let e = env
        .expect(422, "POST", "/v1/alert-destinations", &sec,
            json!({"name": "x", "kind": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=t"}))
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "secret");
    let w = env
        .expect(201, "POST", "/v1/alert-destinations", &sec,
            json!({"name": "安全值班群", "kind": "wecom", "url": format!("{wecom_url}/cgi-bin/webhook/send?key=wecom-key-1")}))
        .await;
    let d = env
        .expect(201, "POST", "/v1/alert-destinations", &sec,
            json!({"name": "钉钉值班群", "kind": "dingtalk", "url": format!("{ding_url}/robot/send?access_token=tok"), "secret": DING_SECRET}))
        .await;
    let h = env
        .expect(201, "POST", "/v1/alert-destinations", &sec,
            json!({"name": "soc", "kind": "webhook", "url": format!("{hook_url}/hook"), "secret": HOOK_SECRET}))
        .await;
    // Secrets and URL keys are never shown again.
    let listed = env.get("/v1/alert-destinations", &aud).await.to_string();
    for s in [DING_SECRET, HOOK_SECRET, "wecom-key-1", "access_token"] {
        assert!(
            !listed.contains(s) && !d.to_string().contains(s) && !w.to_string().contains(s),
            "{s}"
        );
    }
    assert_eq!(h["has_secret"], true);

    let node = node(env, &sec).await;
    let end = env.now();
    let burst: Vec<Value> = (0..25)
        .map(|i| {
            rec(
                end - 20,
                i,
                "192.0.2.77",
                "",
                "social",
                "/social/login",
                401,
                50,
            )
        })
        .collect();
    ingest(env, &node, &mut 0, burst).await;
    let got = expect_alerts(env, &sec, 1).await;
    let id = got[0]["id"].as_str().unwrap().to_string();

    let m = wecom.wait(1).await;
    assert_eq!(m.len(), 1);
    assert!(
        m[0].uri.ends_with("/cgi-bin/webhook/send?key=wecom-key-1"),
        "{}",
        m[0].uri
    );
    let b = &m[0].body;
    assert_eq!(b.as_object().unwrap().len(), 2);
    assert_eq!(b["msgtype"], "markdown");
    assert_eq!(b["markdown"].as_object().unwrap().len(), 1);
    let content = b["markdown"]["content"].as_str().unwrap();
    assert!(content.len() <= 4096);
    assert!(
        content.contains(&id) && content.contains("认证失败") && content.contains("192.0.2.77"),
        "{content}"
    );

    let m = ding.wait(1).await;
    assert_eq!(m.len(), 1);
    let b = &m[0].body;
    assert_eq!(b["msgtype"], "markdown");
    assert!(b["markdown"]["title"].as_str().unwrap().contains("告警"));
    assert!(b["markdown"]["text"].as_str().unwrap().contains(&id));
    let query = m[0].uri.split_once('?').unwrap().1;
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    assert_eq!(param("access_token"), "tok");
    let ts = param("timestamp");
    assert_eq!(
        ts.parse::<i64>().unwrap(),
        m[0].at * 1000,
        "milliseconds of the app clock"
    );
    let want = hmac_b64(DING_SECRET, &format!("{ts}\n{DING_SECRET}"))
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(param("sign"), want);

    // The webhook failed twice and got there on the third attempt, signed.
    let m = hook.wait(1).await;
    assert_eq!(m.len(), 1);
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    let want = format!(
        "sha256={}",
        ring::hmac::sign(&k, &m[0].raw)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!(m[0].signature.as_deref(), Some(want.as_str()));
    assert_eq!(m[0].body["alerts"][0]["id"], id.as_str());

    // Delivery status per destination.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = env.get(&format!("/v1/alerts/{id}"), &sec).await;
    let by = |dest: &Value| {
        a["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["destination_id"] == dest["id"])
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (by(&w)["state"].as_str(), by(&w)["attempts"].as_i64()),
        (Some("delivered"), Some(1))
    );
    assert_eq!(by(&d)["state"], "delivered");
    assert_eq!(
        (by(&h)["state"].as_str(), by(&h)["attempts"].as_i64()),
        (Some("delivered"), Some(3))
    );
}
both_backends!(alerts_reach_wecom_dingtalk_and_webhooks_with_their_payloads);

async fn a_burst_of_100_alerts_is_batched_within_the_robots_limit(env: &Env) {
    let sec = env.security().await;
    let (fast_url, fast) = receiver(env, 0).await;
    let (slow_url, slow) = receiver(env, 0).await;
    env.expect(
        201,
        "POST",
        "/v1/alert-destinations",
        &sec,
        json!({"name": "wecom", "kind": "wecom", "url": format!("{fast_url}/send?key=a")}),
    )
    .await;
    // A robot allowing only 2 messages a minute shows the limiter at work.
    env.expect(201, "POST", "/v1/alert-destinations", &sec,
        json!({"name": "slow", "kind": "wecom", "url": format!("{slow_url}/send?key=b"), "per_minute": 2}))
        .await;
    let node = node(env, &sec).await;
    let end = env.now();
    let mut burst = Vec::new();
    for ip in 0..100u64 {
        for i in 0..20 {
            burst.push(rec(
                end - 30,
                ip * 100 + i,
                &format!("100.64.0.{ip}"),
                "",
                "social",
                "/social/login",
                401,
                10,
            ));
        }
    }
    ingest(env, &node, &mut 0, burst).await;
    // 100 addresses, and the app they all used (2000 failures): 101 incidents.
    expect_alerts(env, &sec, 101).await;
    let ids: std::collections::BTreeSet<String> = alerts(env, &sec)
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let count = |got: &[Got]| {
        let mut seen = std::collections::BTreeSet::new();
        for g in got {
            let c = g.body["markdown"]["content"].as_str().unwrap();
            assert!(c.len() <= 4096);
            for id in &ids {
                if c.contains(id.as_str()) {
                    assert!(seen.insert(id.clone()), "{id} delivered twice");
                }
            }
        }
        seen.len()
    };
    let per_minute = |got: &[Got], max: usize| {
        let mut by: std::collections::BTreeMap<i64, usize> = Default::default();
        for g in got {
            *by.entry(g.at / 60).or_default() += 1;
        }
        assert!(by.values().all(|n| *n <= max), "{by:?}");
        by
    };
    // Wait for both; when nothing moves for a while, the (manual) clock moves a minute on.
    let first_minute = env.now() / 60;
    let mut minutes = 0;
    loop {
        let before = (fast.got().len(), slow.got().len());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if count(&fast.got()) == 101 && count(&slow.got()) == 101 {
            break;
        }
        if (fast.got().len(), slow.got().len()) == before {
            assert!(
                minutes < 30,
                "alerts lost: {} and {} of 101 delivered",
                count(&fast.got()),
                count(&slow.got())
            );
            env.clock.advance(60);
            minutes += 1;
        }
    }
    let got = fast.got();
    assert!(got.len() <= 20, "{} messages", got.len());
    per_minute(&got, 20);
    // The slow robot had more than 2 messages' worth at once: it got 2 in the first minute.
    let by = per_minute(&slow.got(), 2);
    assert_eq!(by.get(&first_minute), Some(&2), "{by:?}");
    assert!(minutes >= 2);
}
both_backends!(a_burst_of_100_alerts_is_batched_within_the_robots_limit);

// ---- automatic response -----------------------------------------------------------------------

/// Polls `url` until it answers `want`; how long that took (panics after `max`).
async fn until_status(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    want: u16,
    max: Duration,
) -> Duration {
    let t = Instant::now();
    while t.elapsed() < max {
        if crate::serve::status_of(http, url, token).await == want {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} did not answer {want} within {max:?}");
}

/// The control plane and its in-process gateway (`serve --demo`) plus a separate gateway that
/// follows it: a 401 burst from 127.0.0.1 raises an alert whose rule denies the address; both
/// gateways refuse it within 2 s; a security admin lifts the deny, or it expires with its TTL,
/// and the address is served again. Every step is in the admin audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_deny_reaches_every_gateway_and_is_lifted() {
    use crate::serve::{
        demo_curl, free_port, gateway_bin, get_json, login, register_node, spawn, status_of,
        wait_for, write_edge_base,
    };
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, gw_port, status_port, echo_port) =
        (free_port(), free_port(), free_port(), free_port());
    let admin = format!("http://127.0.0.1:{admin_port}");
    let cp = spawn(
        Command::new(env!("CARGO_BIN_EXE_fenfa-admin"))
            .arg("serve")
            .arg("--demo")
            .args(["--listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--gateway-http", &format!("127.0.0.1:{gw_port}")])
            .args(["--gateway-status", &format!("127.0.0.1:{status_port}")])
            .args(["--demo-upstream", &format!("127.0.0.1:{echo_port}")])
            .env("FENFA_ADMIN_PASSWORD", ADMIN_PW)
            .env("FENFA_ADMIN_TOTP_SECRET", ADMIN_TOTP)
            .env("FENFA_SECURITY_PASSWORD", SECURITY_PW)
            .env("FENFA_SECURITY_TOTP_SECRET", SECURITY_TOTP)
            .env("FENFA_AUDIT_PASSWORD", AUDIT_PW)
            .env("FENFA_AUDIT_TOTP_SECRET", AUDIT_TOTP)
            .env("FENFA_MASTER_KEY", MASTER_KEY)
            .env("FENFA_LOG", "info"),
        &dir.path().join("admin.log"),
    );
    let (token, _) = demo_curl(&cp).await;
    let url = format!("http://127.0.0.1:{gw_port}/demo/hello");
    let http = reqwest::Client::new();
    wait_for("the demo call", &cp, async || {
        status_of(&http, &url, &token).await == 200
    })
    .await;
    let sec = login(&http, &admin, "security", SECURITY_PW, SECURITY_TOTP).await;

    // A second gateway, following the control plane as a remote node does.
    let node = register_node(&http, &admin, &sec, "edge-1").await;
    let (edge_port, edge_status) = (free_port(), free_port());
    let base = dir.path().join("edge.yaml");
    write_edge_base(&base, edge_port, edge_status, "");
    let edge = spawn(
        Command::new(gateway_bin())
            .args(["--control-plane", &admin])
            .args(["--node-token", &node])
            .arg("--config")
            .arg(&base)
            .arg("--data-dir")
            .arg(dir.path().join("edge"))
            .env("FENFA_LOG", "info"),
        &dir.path().join("edge.log"),
    );
    let edge_url = format!("http://127.0.0.1:{edge_port}/demo/hello");
    wait_for("the edge gateway", &edge, async || {
        status_of(&http, &edge_url, &token).await == 200
    })
    .await;

    // auth_failures: 10 in 60 s, and deny the address for 10 minutes.
    let put = |body: Value| {
        let (http, admin, sec) = (http.clone(), admin.clone(), sec.clone());
        async move {
            let r = http
                .put(format!("{admin}/v1/alert-settings"))
                .bearer_auth(&sec)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    let get = |path: String| {
        let (http, admin, sec) = (http.clone(), admin.clone(), sec.clone());
        async move {
            http.get(format!("{admin}{path}"))
                .bearer_auth(&sec)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut settings = get("/v1/alert-settings".into()).await;
    settings["rules"]["auth_failures"]["threshold"] = json!(10.0);
    settings["rules"]["auth_failures"]["auto_deny"] = json!({"ttl_secs": 600});
    put(settings.clone()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let burst = async |client: &reqwest::Client| {
        for _ in 0..15 {
            assert_eq!(status_of(client, &url, "not-a-token").await, 401);
        }
    };
    burst(&http).await;
    let block = async || {
        let t = Instant::now();
        loop {
            let v = get("/v1/alert-blocks".into()).await;
            if let Some(b) = v["items"].as_array().unwrap().first() {
                return b.clone();
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no deny within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let b = block().await;
    assert_eq!(b["ip"], "127.0.0.1");
    assert_eq!(b["rule"], "auth_failures");
    let took = until_status(&http, &url, &token, 403, Duration::from_secs(2)).await;
    let took_edge = until_status(&http, &edge_url, &token, 403, Duration::from_secs(2)).await;
    eprintln!("denied on the in-process gateway after {took:?}, on the edge after {took_edge:?}");
    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ip_denied", "{body}");
    // Visible on its alert, and reversible by the security admin.
    let alert_id = b["alert_id"].as_str().unwrap();
    let a = get(format!("/v1/alerts/{alert_id}")).await;
    assert_eq!(a["responses"][0]["id"], b["id"]);
    let r = http
        .delete(format!(
            "{admin}/v1/alert-blocks/{}",
            b["id"].as_str().unwrap()
        ))
        .bearer_auth(&sec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    until_status(&http, &url, &token, 200, Duration::from_secs(2)).await;
    until_status(&http, &edge_url, &token, 200, Duration::from_secs(2)).await;

    // Another address (127.0.0.2, loopback too) is another incident; this time the deny
    // expires by itself, and only that address is refused meanwhile.
    let r = http
        .post(format!("{admin}/v1/alerts/{alert_id}/resolve"))
        .bearer_auth(&sec)
        .json(&json!({"note": "测试结束"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    settings["rules"]["auth_failures"]["auto_deny"] = json!({"ttl_secs": 5});
    put(settings).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    burst(&other).await;
    let b2 = block().await;
    assert_ne!(b2["id"], b["id"]);
    assert_eq!(b2["ip"], "127.0.0.2");
    until_status(&other, &url, &token, 403, Duration::from_secs(2)).await;
    until_status(&other, &edge_url, &token, 403, Duration::from_secs(2)).await;
    assert_eq!(status_of(&http, &url, &token).await, 200);
    let t = Instant::now();
    until_status(&other, &url, &token, 200, Duration::from_secs(10)).await;
    until_status(&other, &edge_url, &token, 200, Duration::from_secs(2)).await;
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "lifted before its TTL"
    );
    assert!(get("/v1/alert-blocks".into()).await["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let aud = login(&http, &admin, "auditor", AUDIT_PW, AUDIT_TOTP).await;
    let trail: Value = get_json(
        &http,
        format!("{admin}/v1/audit/admin?resource_kind=alert-block"),
        &aud,
    )
    .await;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "alert-block.expire",
            "alert-block.create",
            "alert-block.lift",
            "alert-block.create"
        ]
    );
}

async fn admin_sign_in_failures_and_off_hours_changes_raise_alerts(env: &Env) {
    let sec = env.security().await;
    let sys = env.admin().await;
    // Five wrong passwords lock `admin` out for this address: one incident, one alert.
    for _ in 0..6 {
        let (st, _) = env.try_login("admin", "Wrong-Password-2026", None).await;
        assert!(st == 401 || st == 403);
    }
    let got = expect_alerts(env, &sec, 1).await;
    assert_eq!(got[0]["rule"], "admin_sign_in");
    assert_eq!(
        (got[0]["subject_kind"].as_str(), got[0]["subject"].as_str()),
        (Some("account"), Some("admin"))
    );
    assert_eq!(got[0]["severity"], "critical");
    // Working hours that never apply: a network-policy change is off hours.
    let mut s = env.get("/v1/alert-settings", &sec).await;
    s["working_hours"]["weekdays"] = json!([]);
    env.expect(200, "PUT", "/v1/alert-settings", &sec, s).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ag = env.agency(&sys, "night").await;
    env.policy(&sec, &ag, "night-policy").await;
    let got = expect_alerts(env, &sec, 2).await;
    let a = got
        .iter()
        .find(|a| a["rule"] == "off_hours_change")
        .unwrap();
    assert_eq!(a["subject"], "security");
    assert_eq!(a["evidence"]["action"], "network-policy.create");
}
both_backends!(admin_sign_in_failures_and_off_hours_changes_raise_alerts);
