//! Upstreams: how the gateway spreads requests over a service's targets (weighted round robin,
//! consistent hashing), reuses connections to them, and what a client sees when targets are slow,
//! dead or unhealthy (retries, timeouts, passive ejection, active health checks).
//!
//! Everything runs on loopback. Besides the support [`Upstream`], three tiny raw-TCP targets live
//! here: one that always answers the same status, one that accepts connections and never answers,
//! and one whose accept queue is full so that connecting to it times out.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{client, error_code, free_port, Gateway, Upstream};

/// Starts a gateway with one service `s` (the given `upstream` block, as JSON) behind `/*`.
fn gateway(upstream: Value) -> Gateway {
    Gateway::start(&format!(
        "services:\n  - name: s\n    upstream: {upstream}\nroutes:\n  - {{ name: r, service: s, paths: [\"/*\"] }}\n"
    ))
}

/// Checks a gateway-produced error: status, code and the documented JSON shape
/// `{"error":{"code","message","request_id"}}`, with the request id also in `x-request-id`.
async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    let header_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (got_status, got_code, body) = error_code(resp).await;
    assert_eq!((got_status, got_code.as_str()), (status, code), "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let error = body["error"].as_object().expect("`error` object");
    assert_eq!(error.len(), 3, "exactly code, message, request_id: {body}");
    assert!(!error["message"].as_str().unwrap_or_default().is_empty());
    let id = error["request_id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "{body}");
    assert_eq!(Some(id), header_id.as_deref());
}

/// The `x-upstream` header of a successful response (which target answered).
async fn answered_by(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    resp.headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .expect("x-upstream header")
        .to_owned()
}

/// Polls `check` every 20 ms until it holds; panics with `what` and the gateway log after `within`.
async fn eventually(gw: &Gateway, within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}; log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `healthy` of target `addr` in `/status`.
fn status_healthy(gw: &Gateway, addr: SocketAddr) -> Option<bool> {
    let status = gw.status_json();
    let target = addr.to_string();
    status["upstreams"]
        .as_array()?
        .iter()
        .filter(|s| s["service"] == "s")
        .flat_map(|s| s["targets"].as_array().cloned().unwrap_or_default())
        .find(|t| t["addr"] == target.as_str())
        .and_then(|t| t["healthy"].as_bool())
}

/// `fenfa_upstream_target_healthy` of target `addr`.
fn healthy_gauge(gw: &Gateway, addr: SocketAddr) -> Option<f64> {
    gw.metric(&format!(
        "fenfa_upstream_target_healthy{{service=\"s\",target=\"{addr}\"}}"
    ))
}

/// A raw TCP target run by a thread: each accepted connection is handed to `serve`.
struct RawTarget {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawTarget {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw target");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, serve) = (conns.clone(), stop.clone(), Arc::new(serve));
        let thread = std::thread::spawn(move || {
            while !s.load(SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        c.fetch_add(1, SeqCst);
                        let _ = stream.set_nonblocking(false);
                        let serve = serve.clone();
                        std::thread::spawn(move || serve(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            addr,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    /// A target that answers every request with `status` and closes the connection.
    fn fixed_status(name: &'static str, status: u16) -> Self {
        Self::start(move |mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 {status} Status\r\ncontent-length: 0\r\nx-upstream: {name}\r\nconnection: close\r\n\r\n"
            );
        })
    }

    /// A target that accepts connections, reads whatever comes, and never answers.
    fn black_hole() -> Self {
        Self::start(|mut s| {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    return;
                }
            }
        })
    }

    /// Connections accepted (one per proxied attempt, as these targets never keep one alive).
    fn connections(&self) -> usize {
        self.conns.load(SeqCst)
    }
}

impl Drop for RawTarget {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listening port whose accept queue is full: the kernel drops new SYNs, so connecting to it
/// neither succeeds nor fails until the connector gives up. Loopback only.
struct Unaccepting {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Unaccepting {
    fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..64 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => {
                    return Self {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    }
                }
            }
        }
        panic!("the accept queue of {addr} never filled up");
    }
}

#[tokio::test]
async fn weighted_round_robin_splits_traffic_exactly_by_weight() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = gateway(json!({
        "targets": [
            { "addr": a.addr.to_string(), "weight": 3 },
            { "addr": b.addr.to_string(), "weight": 1 },
        ],
    }));
    let c = client();
    let mut by_header = [0usize; 2];
    for _ in 0..400 {
        match answered_by(c.get(gw.url("/wrr")).send().await.unwrap())
            .await
            .as_str()
        {
            "a" => by_header[0] += 1,
            "b" => by_header[1] += 1,
            other => panic!("answered by {other}"),
        }
    }
    assert_eq!(by_header, [300, 100]);
    assert_eq!((a.hits(), b.hits()), (300, 100));
}

#[tokio::test]
async fn consistent_hash_on_a_header_keeps_each_user_on_one_target() {
    let ups: Vec<Upstream> = ["a", "b", "c"].into_iter().map(Upstream::start).collect();
    let gw = gateway(json!({
        "balance": "consistent_hash",
        "hash_on": "header:X-User",
        "targets": ups.iter().map(|u| json!({ "addr": u.addr.to_string() })).collect::<Vec<_>>(),
    }));
    let c = client();
    let mut used = std::collections::BTreeSet::new();
    for user in 0..50 {
        let user = format!("user-{user}");
        let mut first = None;
        for _ in 0..4 {
            let resp = c
                .get(gw.url("/profile"))
                .header("X-User", &user)
                .send()
                .await
                .unwrap();
            let target = answered_by(resp).await;
            match &first {
                None => first = Some(target),
                Some(f) => assert_eq!(&target, f, "{user} moved between targets"),
            }
        }
        used.extend(first);
    }
    assert_eq!(
        used.len(),
        3,
        "50 users should reach all 3 targets: {used:?}"
    );
}

#[tokio::test]
async fn consistent_hash_on_client_ip_keeps_each_client_on_one_target() {
    let ups: Vec<Upstream> = ["a", "b", "c"].into_iter().map(Upstream::start).collect();
    let gw = gateway(json!({
        "balance": "consistent_hash",
        "hash_on": "client_ip",
        "targets": ups.iter().map(|u| json!({ "addr": u.addr.to_string() })).collect::<Vec<_>>(),
    }));
    let mut used = std::collections::BTreeSet::new();
    // Every 127.0.0.0/8 address is local on Linux, so each client gets its own source IP.
    for host in 2..=41u8 {
        let ip = IpAddr::from([127, 0, 0, host]);
        let c = reqwest::Client::builder()
            .no_proxy()
            .local_address(ip)
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let mut first = None;
        for _ in 0..3 {
            let target = answered_by(c.get(gw.url("/profile")).send().await.unwrap()).await;
            match &first {
                None => first = Some(target),
                Some(f) => assert_eq!(&target, f, "client {ip} moved between targets"),
            }
        }
        used.extend(first);
    }
    assert_eq!(
        used.len(),
        3,
        "40 clients should reach all 3 targets: {used:?}"
    );
}

#[tokio::test]
async fn sequential_requests_reuse_pooled_upstream_connections() {
    let up = Upstream::start("a");
    let gw = gateway(json!({ "targets": [{ "addr": up.addr.to_string() }] }));
    // One client connection carrying many requests.
    let c = client();
    for _ in 0..40 {
        assert_eq!(c.get(gw.url("/ka")).send().await.unwrap().status(), 200);
    }
    // Many clients, each on its own connection (no client-side pooling).
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..40 {
        assert_eq!(fresh.get(gw.url("/ka")).send().await.unwrap().status(), 200);
    }
    assert_eq!(up.hits(), 80);
    assert!(
        up.connections() < 40,
        "80 requests opened {} upstream connections",
        up.connections()
    );
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_target() {
    let live = Upstream::start("live");
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = gateway(json!({
        "retries": 1,
        "targets": [{ "addr": dead.to_string() }, { "addr": live.addr.to_string() }],
    }));
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            answered_by(c.get(gw.url("/x")).send().await.unwrap()).await,
            "live"
        );
    }
    assert_eq!(live.hits(), 20);
}

#[tokio::test]
async fn dead_target_without_retries_answers_502_upstream_error() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = gateway(json!({ "retries": 0, "targets": [{ "addr": dead.to_string() }] }));
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_error(resp, 502, "upstream_error").await;
}

#[tokio::test]
async fn a_keepalive_client_can_go_on_after_an_upstream_error() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = gateway(json!({ "retries": 0, "targets": [{ "addr": dead.to_string() }] }));
    let mut conn = TcpStream::connect(gw.http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    conn.write_all(request).unwrap();
    let first = read_response(&mut conn);
    assert!(first.starts_with("HTTP/1.1 502 "), "{first}");
    if first
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
    {
        return;
    }
    // The gateway said the connection stays open, so it must serve the next request on it.
    conn.write_all(request).unwrap();
    let second = read_response(&mut conn);
    assert!(
        second.starts_with("HTTP/1.1 502 "),
        "a connection announced as keep-alive was dropped; first answer:\n{first}"
    );
}

/// Reads one response with a `content-length` body; an empty string if the peer closed first.
fn read_response(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn read_timeout_answers_504_upstream_timeout() {
    let up = Upstream::start("slow");
    let gw = gateway(json!({
        "retries": 0,
        "timeouts": { "read": "200ms" },
        "targets": [{ "addr": up.addr.to_string() }],
    }));
    let started = Instant::now();
    let resp = client().get(gw.url("/__sleep/2000")).send().await.unwrap();
    assert_error(resp, 504, "upstream_timeout").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn connect_timeout_answers_504_and_is_retried_on_another_target() {
    let stuck = Unaccepting::start();
    let gw = gateway(json!({
        "retries": 0,
        "timeouts": { "connect": "200ms" },
        "targets": [{ "addr": stuck.addr.to_string() }],
    }));
    let started = Instant::now();
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_error(resp, 504, "upstream_timeout").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    let live = Upstream::start("live");
    let gw = gateway(json!({
        "retries": 1,
        "timeouts": { "connect": "200ms" },
        "targets": [{ "addr": stuck.addr.to_string() }, { "addr": live.addr.to_string() }],
    }));
    let c = client();
    for _ in 0..4 {
        assert_eq!(
            answered_by(c.get(gw.url("/x")).send().await.unwrap()).await,
            "live"
        );
    }
}

#[tokio::test]
async fn total_timeout_bounds_retries_across_slow_targets() {
    let ups: Vec<Upstream> = ["a", "b", "c"].into_iter().map(Upstream::start).collect();
    // Each attempt may read for 400ms and two retries are allowed, but the whole exchange has
    // 500ms: the first attempt times out, the second gets what is left, there is no third.
    let gw = gateway(json!({
        "retries": 2,
        "timeouts": { "read": "400ms", "total": "500ms" },
        "targets": ups.iter().map(|u| json!({ "addr": u.addr.to_string() })).collect::<Vec<_>>(),
    }));
    let started = Instant::now();
    let resp = client().get(gw.url("/__sleep/2000")).send().await.unwrap();
    assert_error(resp, 504, "upstream_timeout").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1000),
        "took {took:?}"
    );
    let hits: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    assert_eq!(
        hits.iter().sum::<usize>(),
        2,
        "attempts per target: {hits:?}"
    );
}

#[tokio::test]
async fn timed_out_get_is_retried_on_another_target() {
    let hole = RawTarget::black_hole();
    let live = Upstream::start("live");
    let gw = gateway(json!({
        "retries": 1,
        "timeouts": { "read": "200ms" },
        "targets": [{ "addr": hole.addr.to_string() }, { "addr": live.addr.to_string() }],
    }));
    let c = client();
    for _ in 0..4 {
        assert_eq!(
            answered_by(c.get(gw.url("/x")).send().await.unwrap()).await,
            "live"
        );
    }
    // Round robin gives the silent target its share of first attempts, no more: retries
    // don't move the rotation, so the next request doesn't start on the failing target again.
    assert_eq!(hole.connections(), 2, "first attempts on the silent target");
    assert_eq!(live.hits(), 4);
}

#[tokio::test]
async fn timed_out_post_is_not_retried() {
    let ups: Vec<Upstream> = ["a", "b"].into_iter().map(Upstream::start).collect();
    let gw = gateway(json!({
        "retries": 1,
        "timeouts": { "read": "200ms" },
        "targets": ups.iter().map(|u| json!({ "addr": u.addr.to_string() })).collect::<Vec<_>>(),
    }));
    let c = client();
    let resp = c
        .post(gw.url("/__sleep/2000"))
        .body("{\"order\":1}")
        .send()
        .await
        .unwrap();
    assert_error(resp, 504, "upstream_timeout").await;
    let hits: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    assert_eq!(hits.iter().sum::<usize>(), 1, "POST attempts: {hits:?}");

    // The same request as a GET is retried on the other target (and times out there too).
    let resp = c.get(gw.url("/__sleep/2000")).send().await.unwrap();
    assert_error(resp, 504, "upstream_timeout").await;
    let hits: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    assert_eq!(
        hits.iter().sum::<usize>(),
        3,
        "POST + GET attempts: {hits:?}"
    );
}

#[tokio::test]
async fn passive_check_ejects_a_failing_target_until_the_cooldown_ends() {
    let bad = RawTarget::fixed_status("bad", 503);
    let good = Upstream::start("good");
    let gw = gateway(json!({
        "retries": 0,
        "health_check": {
            "passive": { "max_failures": 2, "cooldown": "1s", "unhealthy_statuses": [503] },
        },
        "targets": [{ "addr": bad.addr.to_string() }, { "addr": good.addr.to_string() }],
    }));
    let c = client();
    // Round robin alternates, so the bad target answers twice within a few requests.
    let mut second_failure_sent = None;
    for _ in 0..10 {
        let sent = Instant::now();
        let resp = c.get(gw.url("/x")).send().await.unwrap();
        if resp.status() == 503 {
            assert_eq!(resp.headers()["x-upstream"], "bad");
        } else {
            assert_eq!(answered_by(resp).await, "good");
        }
        if bad.connections() == 2 {
            second_failure_sent = Some(sent);
            break;
        }
    }
    let ejected_at = second_failure_sent.expect("the bad target got two requests");
    assert_eq!(status_healthy(&gw, bad.addr), Some(false));
    assert_eq!(healthy_gauge(&gw, bad.addr), Some(0.0));
    for _ in 0..20 {
        assert_eq!(
            answered_by(c.get(gw.url("/x")).send().await.unwrap()).await,
            "good"
        );
    }
    assert_eq!(bad.connections(), 2, "an ejected target got traffic");

    // After the cooldown it gets traffic again.
    let deadline = Instant::now() + Duration::from_secs(4);
    while bad.connections() == 2 {
        assert!(Instant::now() < deadline, "the bad target never came back");
        let _ = c.get(gw.url("/x")).send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = ejected_at.elapsed();
    assert!(
        back_after >= Duration::from_millis(900),
        "back after only {back_after:?}"
    );
}

#[tokio::test]
async fn active_check_takes_an_unhealthy_target_out_and_brings_it_back() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = gateway(json!({
        "health_check": {
            "active": {
                "path": "/healthz",
                "interval": "200ms",
                "timeout": "200ms",
                "healthy_threshold": 2,
                "unhealthy_threshold": 2,
            },
        },
        "targets": [{ "addr": a.addr.to_string() }, { "addr": b.addr.to_string() }],
    }));
    let within = Duration::from_secs(5);
    eventually(&gw, within, "first probes", || b.health_hits() > 0).await;
    assert_eq!(status_healthy(&gw, b.addr), Some(true));

    let probes_before = b.health_hits();
    b.set_healthy(false);
    eventually(&gw, within, "b marked unhealthy", || {
        status_healthy(&gw, b.addr) == Some(false)
    })
    .await;
    let failed_probes = b.health_hits() - probes_before;
    assert!(failed_probes >= 2, "flipped after {failed_probes} probes");
    assert_eq!(healthy_gauge(&gw, b.addr), Some(0.0));
    assert_eq!(healthy_gauge(&gw, a.addr), Some(1.0));

    let c = client();
    let b_hits = b.hits();
    for _ in 0..20 {
        assert_eq!(
            answered_by(c.get(gw.url("/x")).send().await.unwrap()).await,
            "a"
        );
    }
    assert_eq!(b.hits(), b_hits, "an unhealthy target got traffic");

    let probes_before = b.health_hits();
    b.set_healthy(true);
    eventually(&gw, within, "b healthy again", || {
        status_healthy(&gw, b.addr) == Some(true)
    })
    .await;
    let passed_probes = b.health_hits() - probes_before;
    assert!(passed_probes >= 2, "came back after {passed_probes} probes");
    assert_eq!(healthy_gauge(&gw, b.addr), Some(1.0));
    for _ in 0..4 {
        assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(b.hits(), b_hits + 2, "b is back in the rotation");
}

#[tokio::test]
async fn no_healthy_target_answers_503_no_healthy_upstream() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    a.set_healthy(false);
    b.set_healthy(false);
    let gw = gateway(json!({
        "health_check": {
            "active": {
                "path": "/healthz",
                "interval": "200ms",
                "timeout": "200ms",
                "unhealthy_threshold": 1,
            },
        },
        "targets": [{ "addr": a.addr.to_string() }, { "addr": b.addr.to_string() }],
    }));
    eventually(
        &gw,
        Duration::from_secs(5),
        "both targets unhealthy",
        || status_healthy(&gw, a.addr) == Some(false) && status_healthy(&gw, b.addr) == Some(false),
    )
    .await;
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_error(resp, 503, "no_healthy_upstream").await;
    assert_eq!(a.hits() + b.hits(), 0);
}
