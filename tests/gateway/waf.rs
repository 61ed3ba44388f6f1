//! The `waf` plugin through the real gateway: every attack class refused with
//! `403 waf_blocked` in the query, a form body, a JSON body and a header, before the upstream
//! sees it; `monitor` mode lets the request through and the audit record carries the finding;
//! an exclusion quiets one JSON field and no other; the city app's own traffic (Chinese text,
//! rich-text HTML, JWTs, resident ID and mobile numbers) passes; `fenfa_findings_total` counts;
//! and the whole development corpus (`tests/data/waf-dev.jsonl.gz`) replayed over HTTP meets the
//! detection and false-positive targets. See `docs/plugins/waf.md`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{client, error_code, raw_request, status_of, wait_for, Gateway, Upstream};

/// One service, a blocking WAF route on `/api/*` (with an exclusion on `$.article.html`) and a
/// monitoring one on `/monitor/*`.
fn config(up: &Upstream) -> String {
    format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: guarded
    service: s
    paths: ["/api/*"]
    plugins:
      - name: waf
        config:
          mode: block
          exclusions:
            - {{ where: "body:$.article.html", rule: xss }}
  - name: watched
    service: s
    paths: ["/monitor/*"]
    plugins:
      - name: waf
        config: {{ mode: monitor }}
"#,
        up.addr
    )
}

/// One payload per class (decoded form).
const ATTACKS: &[(&str, &str)] = &[
    ("sqli", "1' UNION SELECT username, password FROM users--"),
    ("xss", "<img src=x onerror=alert(document.cookie)>"),
    ("path_traversal", "../../../../etc/passwd"),
    ("command_injection", "8.8.8.8; cat /etc/shadow"),
    ("rfi", "http://198.51.100.7/shell.txt"),
];

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn expect_blocked(resp: reqwest::Response, what: &str) {
    let (status, code, body) = error_code(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "waf_blocked"),
        "{what}: {body}"
    );
    assert!(body["error"]["request_id"].is_string(), "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

#[tokio::test]
async fn waf_blocks_every_class_in_query_form_json_and_header() {
    let up = Upstream::start("s");
    let gw = Gateway::start(&config(&up));
    let c = client();
    for (class, payload) in ATTACKS {
        let q = format!("/api/search?q={}&page=1", enc(payload));
        expect_blocked(
            c.get(gw.url(&q)).send().await.unwrap(),
            &format!("query {class}"),
        )
        .await;
        let form = format!("q={}&page=1", enc(payload));
        expect_blocked(
            c.post(gw.url("/api/search"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap(),
            &format!("form {class}"),
        )
        .await;
        expect_blocked(
            c.post(gw.url("/api/search"))
                .json(&json!({"user": {"name": payload}, "page": 1}))
                .send()
                .await
                .unwrap(),
            &format!("json {class}"),
        )
        .await;
        if *class != "rfi" {
            expect_blocked(
                c.get(gw.url("/api/search"))
                    .header("x-forwarded-host", *payload)
                    .send()
                    .await
                    .unwrap(),
                &format!("header {class}"),
            )
            .await;
        }
    }
    // CR/LF smuggled in a value (protocol abuse), double-encoded.
    expect_blocked(
        c.get(gw.url("/api/search?lang=en%250d%250aSet-Cookie:%2520sid%3D1"))
            .send()
            .await
            .unwrap(),
        "protocol",
    )
    .await;
    // Requests refused in the request phase never reach the upstream. For a body refused in
    // the body phase, pingora has already sent the request head upstream; the body is held back
    // by the gateway and never forwarded (the upstream request is abandoned). Whether the
    // upstream got to read such a head before the gateway dropped the connection is a race, so
    // the count is at most one per body-carrying request, and none has a body.
    wait_for("the upstream to finish", Duration::from_secs(5), || {
        up.seen().len() == up.hits()
    });
    let seen = up.seen();
    assert!(
        seen.len() <= 2 * ATTACKS.len(),
        "only the body-carrying requests' heads: {seen:?}"
    );
    for s in &seen {
        assert_eq!((s.method.as_str(), s.body_len), ("POST", 0), "{s:?}");
    }
    for (class, n) in [
        ("sqli", 4.0),
        ("xss", 4.0),
        ("path_traversal", 4.0),
        ("command_injection", 4.0),
        ("rfi", 3.0),
        ("protocol", 1.0),
    ] {
        let series =
            format!("fenfa_findings_total{{plugin=\"waf\",class=\"{class}\",action=\"blocked\"}}");
        assert_eq!(gw.metric(&series), Some(n), "{series}\n{}", gw.metrics());
    }
}

#[tokio::test]
async fn waf_lets_city_app_traffic_through() {
    let up = Upstream::start("s");
    let gw = Gateway::start(&config(&up));
    let c = client();
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1LTEiLCJjaG4iOiJ3ZWNoYXQiLCJhcHAiOiJ3eDEifQ.Zm9vYmFyYmF6cXV4LXNpZ25hdHVyZQ";
    let bodies = [
        json!({"name": "黄丽", "idCard": "320106197810164745", "mobile": "15007851086",
               "address": "江苏省南京市鼓楼区中山北路30号(近鼓楼地铁站)", "remark": "不动产登记，O'Brien 代办"}),
        json!({"title": "关于开展2024年度个税汇算的通知",
               "content": "<p><strong>各位市民：</strong></p><p style=\"text-align:center\"><img src=\"https://cdn.example.gov.cn/a.png\" width=\"300\"></p><ul><li>请 select a time slot</li><li>drop me a line</li></ul><p><a href=\"https://www.example.gov.cn/\" target=\"_blank\">详情</a></p>"}),
        json!({"token": jwt, "appid": "wx1c218e7c60c31932", "nonce": "pPB2fd2MRj6UKAtM",
               "sign": "F7452E3DDC00BDA24B20032627B76272"}),
    ];
    for b in &bodies {
        let r = c
            .post(gw.url("/api/v1/feedback"))
            .json(b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{b}");
    }
    let r = c
        .get(gw.url(&format!(
            "/api/v1/policy/search?keyword={}&from=2024-01-01T00:00:00%2B08:00&sort=-created_at",
            enc("C++ 培训补贴")
        )))
        .header("cookie", format!("session={jwt}; lang=zh-CN"))
        .header(
            "referer",
            "https://servicewechat.com/wx1c218e7c60c31932/12/page-frame.html",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(gw.url("/api/v1/feedback"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "content={}&contact=13974650979",
            enc("请问社保卡补办需要哪些材料？50% off?")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits(), bodies.len() + 2);
    // The upstream got the body bytes unchanged.
    assert_eq!(
        up.last().body_len,
        "content=".len()
            + enc("请问社保卡补办需要哪些材料？50% off?").len()
            + "&contact=13974650979".len()
    );
    assert!(!gw.metrics().contains("plugin=\"waf\""));
}

#[tokio::test]
async fn waf_exclusion_quiets_one_json_field_only() {
    let up = Upstream::start("s");
    let gw = Gateway::start(&config(&up));
    let c = client();
    let r = c
        .post(gw.url("/api/articles"))
        .json(&json!({"article": {"html": "<script>track()</script><p>正文</p>", "title": "标题"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the excluded field passes");
    expect_blocked(
        c.post(gw.url("/api/articles"))
            .json(&json!({"article": {"html": "<p>ok</p>", "title": "<script>alert(1)</script>"}}))
            .send()
            .await
            .unwrap(),
        "another field",
    )
    .await;
    // The exclusion is for XSS only: SQL injection in the excluded field is still refused.
    expect_blocked(
        c.post(gw.url("/api/articles"))
            .json(&json!({"article": {"html": "1' OR '1'='1' --"}}))
            .send()
            .await
            .unwrap(),
        "sqli in the excluded field",
    )
    .await;
    // Only the allowed request's body reached the upstream.
    wait_for("the upstream to finish", Duration::from_secs(5), || {
        up.seen().len() == up.hits()
    });
    let bodies: Vec<usize> = up
        .seen()
        .iter()
        .map(|s| s.body_len)
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
}

/// Audit records (checkpoints left out) under the gateway's data dir.
fn audit_records(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .filter(|v| v.get("checkpoint").is_none())
        .collect()
}

#[tokio::test]
async fn waf_monitor_mode_passes_and_the_audit_record_has_the_finding() {
    let up = Upstream::start("s");
    let gw = Gateway::start(&config(&up));
    let resp = client()
        .get(gw.url(&format!(
            "/monitor/items?mobile={}",
            enc("13800138000' OR '1'='1")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "monitor mode lets it through");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(up.hits(), 1);

    let dir = gw.dir.path().join("data").join("audit");
    let mut record = None;
    wait_for("the audit record", Duration::from_secs(10), || {
        record = audit_records(&dir)
            .into_iter()
            .find(|r| r["request_id"] == id.as_str());
        record.is_some()
    });
    let record = record.unwrap();
    let f = &record["findings"][0];
    assert_eq!(f["plugin"], "waf", "{record}");
    assert_eq!(f["class"], "sqli", "{record}");
    assert_eq!(f["where"], "query:mobile", "{record}");
    assert_eq!(f["action"], "logged", "{record}");
    assert!(f["rule"].is_string(), "{record}");
    let excerpt = f["excerpt"].as_str().unwrap();
    assert!(
        !excerpt.contains("13800138000"),
        "the mobile number is masked: {excerpt}"
    );
    assert!(excerpt.contains("OR"), "{excerpt}");
    assert_eq!(
        gw.metric("fenfa_findings_total{plugin=\"waf\",class=\"sqli\",action=\"logged\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn waf_body_over_the_limit_passes_uninspected_or_is_refused() {
    let up = Upstream::start("s");
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: lenient
    service: s
    paths: ["/lenient/*"]
    plugins:
      - name: waf
        config: {{ body: {{ limit: 64, over_limit: pass }} }}
  - name: strict
    service: s
    paths: ["/strict/*"]
    plugins:
      - name: waf
        config: {{ body: {{ limit: 64, over_limit: reject }} }}
"#,
        up.addr
    ));
    let c = client();
    let small = json!({"q": "<script>alert(1)</script>"});
    let large = json!({"q": "<script>alert(1)</script>", "pad": "x".repeat(100)});
    expect_blocked(
        c.post(gw.url("/lenient/x"))
            .json(&small)
            .send()
            .await
            .unwrap(),
        "within the limit",
    )
    .await;
    let resp = c
        .post(gw.url("/lenient/x"))
        .json(&large)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "over the limit with `pass`: forwarded unread"
    );
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (status, code, _) = error_code(
        c.post(gw.url("/strict/x"))
            .json(&large)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    let dir = gw.dir.path().join("data").join("audit");
    let mut record = None;
    wait_for("the audit record", Duration::from_secs(10), || {
        record = audit_records(&dir)
            .into_iter()
            .find(|r| r["request_id"] == id.as_str());
        record.is_some()
    });
    let record = record.unwrap();
    assert_eq!(record["body"], "uninspected", "{record}");
    assert!(record.get("findings").is_none(), "{record}");
}

// --- the development corpus over HTTP ---------------------------------------------------------

fn corpus() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/waf-dev.jsonl.gz"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("corpus"))
        .read_to_string(&mut text)
        .expect("gzip");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Escapes what may not stand raw in a request target (space, controls, non-ASCII, `#`).
fn target_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= 0x20 || b >= 0x7F || b == b'#' {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The corpus request as raw HTTP/1.1 bytes.
fn raw(r: &Value) -> Vec<u8> {
    let mut target = target_safe(r["path"].as_str().unwrap_or("/"));
    if let Some(q) = r["query"].as_str().filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(&target_safe(q));
    }
    let body = r["body"].as_str().unwrap_or("");
    let mut head = format!(
        "{} {target} HTTP/1.1\r\n",
        r["method"].as_str().unwrap_or("GET")
    );
    if let Some(h) = r["headers"].as_object() {
        for (k, v) in h {
            let v = v.as_str().unwrap_or("");
            if v.bytes().all(|b| b >= 0x20 && b != 0x7F) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
    }
    if !body.is_empty() || r["method"] != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

#[test]
fn waf_replays_the_dev_corpus_over_http() {
    let up = Upstream::start("s");
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: all
    service: s
    paths: ["/*"]
    plugins:
      - name: waf
        config: {{ mode: block }}
"#,
        up.addr
    ));
    let records = corpus();
    // (class, status) for each request, four clients at a time.
    let results: Vec<(String, u16, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = records
            .chunks(records.len().div_ceil(4))
            .map(|chunk| {
                let addr = gw.http;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|r| {
                            let resp = raw_request(addr, &raw(r)).unwrap_or_default();
                            (
                                r["class"].as_str().unwrap_or("?").to_owned(),
                                status_of(&resp),
                                resp.contains("waf_blocked"),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    // class -> (total, refused by the waf, refused by the gateway's own path rules, passed)
    let mut stats: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new();
    for (class, status, waf) in &results {
        let e = stats.entry(class.clone()).or_default();
        e.0 += 1;
        if *waf && *status == 403 {
            e.1 += 1;
        } else if *status == 400 {
            e.2 += 1;
        } else {
            e.3 += 1;
        }
    }
    println!("waf dev corpus over HTTP (block mode, paranoia 1):");
    for (class, (total, waf, gw400, passed)) in &stats {
        println!(
            "  {class:<18} {total:>5} requests: {waf:>5} waf 403, {gw400:>4} gateway 400, {passed:>4} passed = {:6.2}% refused",
            100.0 * (waf + gw400) as f64 / *total as f64
        );
    }
    for class in ["sqli", "xss", "path_traversal", "command_injection"] {
        let (total, waf, gw400, _) = stats[class];
        assert!(
            (waf + gw400) * 100 >= total * 95,
            "{class}: only {} of {total} refused",
            waf + gw400
        );
    }
    let (total, waf, gw400, passed) = stats["benign"];
    assert!(
        (waf + gw400) * 1000 <= total * 5,
        "benign: {} of {total} refused",
        waf + gw400
    );
    assert_eq!(passed, total - waf - gw400);
}
