//! What a hostile client found in the data plane (issue 11), one test per defect: forged
//! identity headers, path parameters on dot segments, unsafe request ids, empty configs,
//! draining and pipelining.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{client, raw_request, status_of, wait_for, Gateway, Upstream};

/// A gateway with one catch-all route to `up`.
fn single(up: &Upstream) -> Gateway {
    Gateway::start(&routes(up))
}

fn routes(up: &Upstream) -> String {
    format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: all
    service: s
    paths: ["/*"]
"#,
        up.addr
    )
}

/// Stops the gateway (SIGTERM, which flushes the trail) and returns its request records.
fn records_after_stop(gw: &mut Gateway) -> Vec<Value> {
    gw.signal(Signal::SIGTERM);
    let st = gw.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "exit {st:?}; log:\n{}", gw.logs());
    records(&gw.dir.path().join("data").join("audit"))
}

fn records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|v| v.get("request_id").is_some() && v.get("method").is_some())
        .collect()
}

// Defect 8 --------------------------------------------------------------------------------------

#[tokio::test]
async fn unsafe_client_request_id_is_replaced_and_kept_sanitised_in_the_audit_only() {
    let up = Upstream::start("up");
    let mut gw = single(&up);
    let evil = "<script>alert(1)</script>";
    let resp = client()
        .get(gw.url("/a"))
        .header("x-request-id", evil)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the client's id was echoed: {id:?}"
    );
    assert_eq!(up.last().header("x-request-id"), Some(id.as_str()));
    // A UUID is a safe shape and is kept.
    let uuid = "3f2b8c1d-9e7a-4b3c-8d6e-1f0a2b3c4d5e";
    let resp = client()
        .get(gw.url("/b"))
        .header("x-request-id", uuid)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], uuid);
    let recs = records_after_stop(&mut gw);
    let a = recs
        .iter()
        .find(|r| r["path"] == "/a")
        .expect("record of /a");
    assert_eq!(a["request_id"], id.as_str());
    assert_eq!(a["client_request_id"], "_script_alert_1___script_");
    let b = recs
        .iter()
        .find(|r| r["path"] == "/b")
        .expect("record of /b");
    assert_eq!(b["request_id"], uuid);
    assert!(b.get("client_request_id").is_none(), "{b}");
}

// Defect 4 --------------------------------------------------------------------------------------

#[tokio::test]
async fn reserved_headers_spelt_with_underscores_never_reach_the_upstream() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let resp = client()
        .get(gw.url("/a"))
        .header("X_Fenfa_User", "forged-user")
        .header("x_fenfa_channel", "wechat")
        .header("X-Fenfa_App", "forged-app")
        .header("x_fenfa-signature", "forged")
        .header("X_Request_Id", "forged-id")
        .header("x_forwarded_for", "1.2.3.4")
        .header("traceparent_", "kept: not a reserved name")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    for (name, _) in &seen.headers {
        let dashed = name.to_ascii_lowercase().replace('_', "-");
        let reserved = dashed.starts_with("x-fenfa-")
            || [
                "x-request-id",
                "x-forwarded-for",
                "x-forwarded-proto",
                "traceparent",
            ]
            .contains(&dashed.as_str());
        assert!(
            !(reserved && name.contains('_')),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains("forged")),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        seen.header("traceparent_"),
        Some("kept: not a reserved name")
    );
}

// Defect 5 --------------------------------------------------------------------------------------

#[tokio::test]
async fn dot_segments_with_path_parameters_are_refused_with_400() {
    let up = Upstream::start("up");
    let gw = single(&up);
    for target in [
        "/api/a/..;/b/secret",
        "/api/a/..;x=1/b",
        "/api/a/.;x/b",
        "/api/a/%2e%2e;/b",
        "/api/a/.%2e;jsessionid=1/b",
    ] {
        let text = raw_request(
            gw.http,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap_or_default();
        assert_eq!(status_of(&text), 400, "{target}: {text}");
        assert!(text.contains("bad_request"), "{target}: {text}");
    }
    assert_eq!(up.hits(), 0, "a dotted path with parameters was forwarded");
    // A `;` elsewhere in a segment is an ordinary character.
    let resp = client().get(gw.url("/api/a;v=1/b")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().path, "/api/a;v=1/b");
}

fn failures(gw: &Gateway) -> f64 {
    gw.metric("fenfa_config_reload_failures_total")
        .unwrap_or(0.0)
}

// Defects 3 and 9 -------------------------------------------------------------------------------

#[tokio::test]
async fn an_empty_config_file_is_refused_and_never_replaces_the_last_good_one() {
    let up = Upstream::start("up");
    let mut gw = single(&up);
    let last_good = gw.dir.path().join("data").join("last-good.yaml");
    let good = std::fs::read_to_string(&last_good).unwrap();
    assert!(good.contains("paths"), "{good}");

    // Truncated to nothing: refused, the route keeps working, last-good untouched.
    gw.write_raw_config("");
    wait_for(
        "the empty config to be refused",
        Duration::from_secs(10),
        || failures(&gw) >= 1.0,
    );
    assert_eq!(
        client().get(gw.url("/a")).send().await.unwrap().status(),
        200
    );
    assert_eq!(std::fs::read_to_string(&last_good).unwrap(), good);
    let err = &gw.status_json()["config"]["last_error"];
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no services and no routes"),
        "{err}"
    );

    // A restart on the empty file starts on the last good config, and says why in /status.
    gw.signal(Signal::SIGTERM);
    gw.wait_exit(Duration::from_secs(15));
    gw.spawn();
    gw.wait_ready();
    assert_eq!(
        client().get(gw.url("/a")).send().await.unwrap().status(),
        200
    );
    let st = gw.status_json();
    assert_eq!(st["config"]["source"], "last-good", "{st}");
    assert!(
        st["config"]["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no services and no routes"),
        "{st}"
    );
    assert_eq!(std::fs::read_to_string(&last_good).unwrap(), good);

    // Saying so explicitly is accepted: every path is then 404.
    gw.write_config("allow_empty: true\n");
    wait_for(
        "the explicitly empty config",
        Duration::from_secs(10),
        || gw.status_json()["config"]["source"] != "last-good",
    );
    assert_eq!(
        client().get(gw.url("/a")).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn starting_on_last_good_or_losing_the_file_shows_why_in_status() {
    let up = Upstream::start("up");
    let mut gw = single(&up);
    // Invalid file at start: running on last-good, last_error names the field.
    gw.signal(Signal::SIGTERM);
    gw.wait_exit(Duration::from_secs(15));
    gw.write_config(&routes(&up).replace("paths:", "pathz:"));
    gw.spawn();
    gw.wait_ready();
    let st = gw.status_json();
    assert_eq!(st["config"]["source"], "last-good", "{st}");
    let err = &st["config"]["last_error"];
    assert!(
        err["path"]
            .as_str()
            .unwrap_or_default()
            .starts_with("routes[0]"),
        "{st}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("pathz"),
        "{st}"
    );

    // Fixed: the error clears. Deleted: counted and shown.
    gw.write_config(&routes(&up));
    wait_for("the fixed config", Duration::from_secs(10), || {
        gw.status_json()["config"]["last_error"].is_null()
    });
    let before = failures(&gw);
    std::fs::remove_file(&gw.config_path).unwrap();
    gw.signal(Signal::SIGHUP);
    wait_for(
        "the deleted file to be reported",
        Duration::from_secs(10),
        || failures(&gw) > before,
    );
    let err = &gw.status_json()["config"]["last_error"];
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot read"),
        "{err}"
    );
    assert_eq!(
        client().get(gw.url("/a")).send().await.unwrap().status(),
        200
    );
}

// Defects 6 and 7 -------------------------------------------------------------------------------

/// Reads from `s` until `n` complete responses (head and `Content-Length` body) have arrived or
/// the peer closed; returns what arrived.
fn read_responses(s: &mut std::net::TcpStream, n: usize) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if complete_responses(&text) >= n {
            return text;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return text,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// How many complete responses with a `Content-Length` body `text` holds.
fn complete_responses(mut text: &str) -> usize {
    let mut n = 0;
    while let Some(end) = text.find("\r\n\r\n") {
        let head = &text[..end];
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if text.len() < end + 4 + len {
            break;
        }
        n += 1;
        text = &text[end + 4 + len..];
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    use std::io::Write;
    let up = Upstream::start("up");
    let mut gw = single(&up);
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    s.write_all(
        b"GET /first HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-1\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-2\r\n\r\n\
          GET /third HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-3\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let text = read_responses(&mut s, 3);
    assert_eq!(complete_responses(&text), 3, "{text}");
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("x-request-id: "))
        .collect();
    assert_eq!(ids, ["p-1", "p-2", "p-3"], "{text}");
    let paths: Vec<String> = up.seen().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/first", "/second", "/third"]);
    let recs = records_after_stop(&mut gw);
    for id in ["p-1", "p-2", "p-3"] {
        assert!(
            recs.iter().any(|r| r["request_id"] == id),
            "no record of {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_written_while_draining_says_connection_close() {
    use std::io::Write;
    let up = Upstream::start("slow");
    let mut gw = Gateway::start(&format!(
        "gateway:\n  shutdown_grace: 10s\n{}",
        routes(&up).replace(
            "targets: [",
            "timeouts: { read: 10s, total: 20s }\n      targets: ["
        )
    ));
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    // A first answer on this connection is keep-alive.
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let first = read_responses(&mut s, 1);
    assert!(
        first
            .to_ascii_lowercase()
            .contains("connection: keep-alive"),
        "{first}"
    );
    // The second is in flight when SIGTERM arrives, and is answered after it.
    s.write_all(b"GET /__sleep/1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_for(
        "the upstream to hold the request",
        Duration::from_secs(5),
        || up.hits() >= 2,
    );
    gw.signal(Signal::SIGTERM);
    let second = read_responses(&mut s, 1);
    assert_eq!(status_of(&second), 200, "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "a response written while draining offers keep-alive: {second}"
    );
    gw.wait_exit(Duration::from_secs(15));
}

// Defect 1 --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_get_408_and_never_eject_a_healthy_target() {
    use std::io::Write;
    let up = Upstream::start("up");
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: s
    upstream:
      retries: 0
      timeouts: {{ read: 2s, total: 10s }}
      health_check:
        passive: {{ max_failures: 3, cooldown: 30s }}
      targets: [{{ addr: "{}" }}]
routes:
  - name: all
    service: s
    paths: ["/*"]
"#,
        up.addr
    ));
    // Three clients promise 100 bytes of body and send 3.
    let slow: Vec<_> = (0..3)
        .map(|i| {
            let addr = gw.http;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(
                    format!("POST /api/x{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
                        .as_bytes(),
                )
                .unwrap();
                read_responses(&mut s, 1)
            })
        })
        .collect();
    // An honest client keeps calling, before, during and after the slow ones give up.
    let c = client();
    let start = std::time::Instant::now();
    let mut honest = 0;
    while start.elapsed() < Duration::from_secs(4) || slow.iter().any(|t| !t.is_finished()) {
        let resp = c.get(gw.url("/honest")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "an honest caller was refused");
        honest += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "slow clients never finished"
        );
    }
    for t in slow {
        let answer = t.join().unwrap();
        let status = status_of(&answer);
        assert!(
            status == 408 || answer.is_empty(),
            "a slow client got {status} instead of 408 or a closed connection: {answer}"
        );
    }
    assert!(honest > 10);
    // After them, the target is still in service.
    assert_eq!(c.get(gw.url("/after")).send().await.unwrap().status(), 200);
    let st = gw.status_json();
    let target = &st["upstreams"][0]["targets"][0];
    assert_eq!(target["ejected"], false, "{st}");
    assert!(!gw.logs().contains("target ejected"), "{}", gw.logs());
}

// Defect 2 --------------------------------------------------------------------------------------

/// Requests pingora's HTTP/1 parser refuses before any gateway code runs, with the reason the
/// audit record gives.
const MALFORMED: [(&str, &[u8]); 4] = [
    (
        "conflicting Content-Length values",
        b"POST /a?token=s3cr3t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ),
    (
        "invalid header value",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Note: a\0b\r\n\r\n",
    ),
    (
        "invalid header name",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    ("invalid method", b"G@T /a HTTP/1.1\r\nHost: x\r\n\r\n"),
];

const UNROUTED_400: &str = r#"fenfa_http_requests_total{route="",service="",status="400"}"#;

/// The head and the body of a raw response.
fn split_response(text: &str) -> (&str, &str) {
    text.split_once("\r\n\r\n").unwrap_or((text, ""))
}

/// Checks a parser rejection's answer: 400, the gateway's JSON error, `Connection: close`, the
/// same request id in header and body. Returns the request id.
fn rejected(what: &str, text: &str) -> String {
    assert_eq!(status_of(text), 400, "{what}: {text:?}");
    let (head, body) = split_response(text);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{what}: {text:?}");
    assert!(
        head.contains("content-type: application/json"),
        "{what}: {text:?}"
    );
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {text:?}"));
    assert_eq!(v["error"]["code"], "bad_request", "{what}: {v}");
    let id = v["error"]["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{what}: request id {id:?}"
    );
    assert!(
        head.contains(&format!("x-request-id: {id}")),
        "{what}: {text:?}"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_2_requests_the_parser_rejects_get_a_json_400_an_audit_record_and_a_count() {
    let up = Upstream::start("up");
    let mut gw = single(&up);
    let before = gw.metric(UNROUTED_400).unwrap_or(0.0);
    let mut ids = Vec::new();
    for (what, bytes) in MALFORMED {
        let text = raw_request(gw.http, bytes).unwrap_or_default();
        ids.push((what, rejected(what, &text)));
    }
    assert_eq!(up.hits(), 0, "a malformed request was forwarded");
    let after = gw.metric(UNROUTED_400).unwrap_or(0.0);
    assert_eq!(after - before, MALFORMED.len() as f64, "{}", gw.metrics());
    let recs = records_after_stop(&mut gw);
    for (what, id) in &ids {
        let r = recs
            .iter()
            .find(|r| r["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{what}: no audit record of {id} in {recs:?}"));
        assert_eq!(r["client_ip"], "127.0.0.1", "{what}: {r}");
        assert_eq!(r["status"], 400, "{what}: {r}");
        assert_eq!(r["decision"], "error", "{what}: {r}");
        assert_eq!(r["code"], "bad_request", "{what}: {r}");
        assert_eq!(r["reason"], *what, "{r}");
    }
    // What could be parsed is kept, the query masked; the raw bytes never are.
    let cl = recs
        .iter()
        .find(|r| r["request_id"] == ids[0].1.as_str())
        .unwrap();
    assert_eq!(cl["method"], "POST", "{cl}");
    assert_eq!(cl["path"], "/a?token=***", "{cl}");
    let all = serde_json::to_string(&recs).unwrap();
    assert!(!all.contains("s3cr3t"), "a query value reached the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_2_keep_alive_requests_still_work_and_a_late_malformed_one_is_recorded() {
    use std::io::Write;
    let up = Upstream::start("up");
    let mut gw = single(&up);
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    for (i, path) in ["/one", "/two", "/three"].iter().enumerate() {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let text = read_responses(&mut s, 1);
        assert_eq!(status_of(&text), 200, "request {i}: {text}");
        assert!(text.contains("x-request-id: "), "{text}");
    }
    assert_eq!(up.hits(), 3);
    // Then a malformed request on the same, reused connection.
    s.write_all(b"GET /four HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n")
        .unwrap();
    let text = read_responses(&mut s, 1);
    let id = rejected("after keep-alive", &text);
    let recs = records_after_stop(&mut gw);
    let r = recs
        .iter()
        .find(|r| r["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no record of {id}"));
    assert_eq!(r["status"], 400, "{r}");
    assert!(r["reason"].is_string(), "{r}");
    assert_eq!(recs.len(), 4, "{recs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_2_an_upstreams_own_empty_400_passes_through_unchanged() {
    use std::io::{Read, Write};
    // An upstream that answers every request with a bodiless 400.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let _ =
                            c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                    }
                }
            });
        }
    });
    let mut gw = Gateway::start(&format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{addr}" }}]
routes:
  - name: all
    service: s
    paths: ["/*"]
"#
    ));
    let before = gw.metric(UNROUTED_400).unwrap_or(0.0);
    let text = raw_request(
        gw.http,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status_of(&text), 400, "{text}");
    let (head, body) = split_response(&text);
    assert_eq!(body, "", "{text}");
    assert!(!head.contains("application/json"), "{text}");
    assert!(head.contains("x-request-id: "), "{text}");
    assert_eq!(gw.metric(UNROUTED_400).unwrap_or(0.0), before, "{text}");
    assert_eq!(
        gw.metric(r#"fenfa_http_requests_total{route="all",service="s",status="400"}"#),
        Some(1.0)
    );
    let recs = records_after_stop(&mut gw);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["upstream_status"], 400, "{}", recs[0]);
    assert_eq!(recs[0]["decision"], "allowed", "{}", recs[0]);
    assert!(recs[0].get("reason").is_none(), "{}", recs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_2_connect_and_a_pipelined_malformed_request_are_answered_and_recorded_too() {
    use std::io::Write;
    let up = Upstream::start("up");
    let mut gw = single(&up);
    // CONNECT: pingora refuses it with its own 405 before any gateway phase.
    let text = raw_request(
        gw.http,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .unwrap_or_default();
    assert_eq!(status_of(&text), 405, "{text:?}");
    let (_, body) = split_response(&text);
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    let connect_id = v["error"]["request_id"].as_str().unwrap().to_owned();
    // A good request and a malformed one in the same packet: the first is served, the second
    // refused with the JSON 400.
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nG@T /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = read_responses(&mut s, 2);
    assert_eq!(complete_responses(&text), 2, "{text}");
    assert_eq!(status_of(&text), 200, "{text}");
    let second = &text[text.find("\r\n\r\n").unwrap()..];
    let second = &second[second.find("HTTP/1.1").unwrap()..];
    let id = rejected("pipelined", second);
    assert_eq!(up.hits(), 1);
    let recs = records_after_stop(&mut gw);
    let c = recs
        .iter()
        .find(|r| r["request_id"] == connect_id.as_str())
        .unwrap_or_else(|| panic!("no record of the CONNECT in {recs:?}"));
    assert_eq!(c["status"], 405, "{c}");
    assert_eq!(c["method"], "CONNECT", "{c}");
    assert_eq!(c["reason"], "CONNECT is not proxied", "{c}");
    let p = recs
        .iter()
        .find(|r| r["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no record of the pipelined request in {recs:?}"));
    assert_eq!(p["status"], 400, "{p}");
    assert_eq!(p["client_ip"], "127.0.0.1", "{p}");
    assert!(p["reason"].is_string(), "{p}");
}
