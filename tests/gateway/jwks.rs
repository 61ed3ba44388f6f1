//! Remote key sets: `jwt-auth` with `jwks_uri` against a local identity service (a loopback
//! HTTP server answering with a JWKS and `Cache-Control`). Rotation is followed without a config
//! change; a bad key set is refused and the last good one kept; with the identity service down,
//! tokens of known keys still verify — after a gateway restart too, from the persisted set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::support::tokens::{Keys, AUDIENCE, ISSUER};
use crate::support::{client, wait_for, Gateway, Upstream};

/// A minimal identity service: answers every request with the current body and
/// `Cache-Control: max-age=1`; "down" closes each connection without an answer.
struct IdentityService {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

impl IdentityService {
    fn start(body: &Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body.to_string()));
        let down = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, d, h) = (body.clone(), down.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                h.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes without an answer
                }
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = b.lock().unwrap().clone();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            addr,
            body,
            down,
            hits,
        }
    }

    fn serve(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }

    /// Waits until the gateway has fetched `n` more times.
    fn wait_fetches(&self, n: usize) {
        let start = self.hits.load(Ordering::SeqCst);
        wait_for("key set fetches", Duration::from_secs(15), || {
            self.hits.load(Ordering::SeqCst) >= start + n
        });
    }
}

fn config(up: &Upstream, idp: &IdentityService) -> String {
    config_with(up, idp, 1, 2)
}

fn config_with(up: &Upstream, idp: &IdentityService, min: u64, max: u64) -> String {
    format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{addr}" }}]
routes:
  - name: r
    service: s
    paths: ["/api/*"]
    plugins:
      - name: jwt-auth
        config:
          issuer: "{ISSUER}"
          audience: "{AUDIENCE}"
          jwks_uri: "http://{idp}/.well-known/jwks.json"
          jwks_min_refresh_seconds: {min}
          jwks_max_refresh_seconds: {max}
"#,
        addr = up.addr,
        idp = idp.addr
    )
}

/// The status of a request with this token (blocking: used inside `wait_for`).
fn status(gw: &Gateway, token: &str) -> u16 {
    let url = gw.url("/api/x");
    let token = token.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    })
    .join()
    .unwrap()
}

fn wait_status(gw: &Gateway, token: &str, want: u16, what: &str) {
    wait_for(what, Duration::from_secs(20), || status(gw, token) == want);
}

#[test]
fn a_remote_key_set_rotates_refuses_bad_sets_and_survives_outages_and_restarts() {
    let keys = Keys::generate(&[("k1", "ES256"), ("k2", "RS256"), ("k3", "ES256")]);
    let t1 = keys.token(json!({"kid": "k1"}));
    let t2 = keys.token(json!({"kid": "k2"}));
    let t3 = keys.token(json!({"kid": "k3"}));
    let idp = IdentityService::start(&keys.jwks_of(&["k1"]));
    let up = Upstream::start("up");
    let mut gw = Gateway::start(&config(&up, &idp));

    // The first set is fetched in the background; k1 verifies, k2 is unknown.
    wait_status(&gw, &t1, 200, "k1 accepted from the fetched set");
    assert_eq!(status(&gw, &t2), 401);

    // Rotation at the identity service: k2 added, k1 removed. No config change.
    idp.serve(&keys.jwks_of(&["k2"]).to_string());
    wait_status(&gw, &t2, 200, "k2 accepted after rotation");
    wait_status(&gw, &t1, 401, "k1 refused once removed (cached tokens too)");
    let generation = gw.generation();

    // Bad key sets are refused; the last good one stays.
    idp.serve("{not json");
    idp.wait_fetches(2);
    assert_eq!(status(&gw, &t2), 200, "kept after a non-JSON answer");
    let mut off_curve = keys.jwks_of(&["k3"]);
    off_curve["keys"][0]["y"] = off_curve["keys"][0]["x"].clone();
    idp.serve(&off_curve.to_string());
    idp.wait_fetches(2);
    assert_eq!(status(&gw, &t2), 200, "kept after a set with a bad key");
    assert_eq!(status(&gw, &t3), 401, "the bad set's key was never used");
    idp.serve(r#"{"keys": []}"#);
    idp.wait_fetches(2);
    assert_eq!(status(&gw, &t2), 200, "kept after an empty set");
    let logs = gw.logs();
    assert!(logs.contains("key set refused"), "{logs}");
    assert_eq!(gw.generation(), generation, "no config reload was involved");

    // The identity service goes down: known keys keep verifying.
    idp.down.store(true, Ordering::SeqCst);
    idp.wait_fetches(2);
    assert_eq!(status(&gw, &t2), 200, "identity service down");

    // The last good set was persisted, owner-only.
    let dir = gw.dir.path().join("data/plugins/jwt-auth");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&files[0]).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let saved: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(saved, keys.jwks_of(&["k2"]));

    // Restart with the identity service still down: the persisted set serves at once.
    gw.signal(Signal::SIGTERM);
    gw.wait_exit(Duration::from_secs(20));
    gw.spawn();
    gw.wait_ready();
    assert_eq!(
        status(&gw, &t2),
        200,
        "after a restart, from the persisted set"
    );
    assert_eq!(status(&gw, &t1), 401);

    // Back up with a new rotation: followed again.
    idp.serve(&keys.jwks_of(&["k1", "k2"]).to_string());
    idp.down.store(false, Ordering::SeqCst);
    wait_status(&gw, &t1, 200, "k1 accepted again after the outage");
    assert_eq!(status(&gw, &t2), 200);
}

#[test]
fn an_unknown_kid_triggers_an_early_refetch_at_most_once_per_ten_seconds() {
    let keys = Keys::generate(&[("k1", "ES256"), ("k2", "ES256"), ("k3", "ES256")]);
    let t1 = keys.token(json!({"kid": "k1"}));
    let t2 = keys.token(json!({"kid": "k2"}));
    let t3 = keys.token(json!({"kid": "k3"}));
    let idp = IdentityService::start(&keys.jwks_of(&["k1"]));
    let up = Upstream::start("up");
    // Refresh only hourly: anything sooner is the unknown-kid refetch.
    let gw = Gateway::start(&config_with(&up, &idp, 3600, 3600));
    wait_status(&gw, &t1, 200, "k1 accepted from the first fetch");

    // The identity service adds k2; the first k2 token is refused and asks for a refetch.
    idp.serve(&keys.jwks_of(&["k1", "k2"]).to_string());
    let before = idp.hits.load(Ordering::SeqCst);
    let start = std::time::Instant::now();
    wait_status(&gw, &t2, 200, "k2 picked up by the unknown-kid refetch");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let after_k2 = idp.hits.load(Ordering::SeqCst);
    assert_eq!(after_k2 - before, 1, "one refetch");

    // k3 arrives at once; tokens naming it keep coming, but the next refetch waits for the
    // 10 s since the last one: until then they are refused, and the service sees no fetch.
    idp.serve(&keys.jwks_of(&["k1", "k2", "k3"]).to_string());
    let poked_at = start;
    for _ in 0..20 {
        assert_eq!(status(&gw, &t3), 401);
        std::thread::sleep(Duration::from_millis(100));
    }
    if poked_at.elapsed() < Duration::from_secs(9) {
        assert_eq!(
            idp.hits.load(Ordering::SeqCst),
            after_k2,
            "refetches are rate limited"
        );
    }
    wait_status(&gw, &t3, 200, "k3 picked up after the 10 s pause");
    assert!(idp.hits.load(Ordering::SeqCst) - after_k2 <= 2);
}
