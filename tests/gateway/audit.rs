//! The audit trail: one record per request (allowed, denied or failed), nothing lost on SIGTERM,
//! what was written survives SIGKILL, tampering is found and located by `audit verify`, strict
//! mode refuses what it cannot record, `audit query` filters, and shipping survives an outage of
//! the control plane. See `docs/audit.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::collector::Collector;
use crate::support::otlp::OtlpReceiver;
use crate::support::{client, python, wait_for, Gateway, Upstream};

/// The HS256 secret of the test identity service (32 bytes).
pub(crate) const SECRET: [u8; 32] = *b"fenfa-audit-test-secret-32-bytes";

pub(crate) fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A unified-identity token for `sub` on `chn` from mini-program `app`.
pub(crate) fn token(sub: &str, chn: &str, app: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = b64url(br#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": sub, "chn": chn, "app": app, "iss": "https://id.city.example",
        "aud": "fenfa", "iat": now, "exp": now + 3600,
    });
    let payload = b64url(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &SECRET);
    let sig = b64url(ring::hmac::sign(&key, input.as_bytes()).as_ref());
    format!("{input}.{sig}")
}

/// One agency service behind jwt-auth on `/api/*`, and `audit` appended (YAML, top level).
fn config(up: SocketAddr, audit: &str) -> String {
    format!(
        r#"
agencies:
  - name: tax
services:
  - name: permits
    agency: tax
    upstream:
      targets: [{{ addr: "{up}" }}]
    plugins:
      - name: jwt-auth
        config:
          issuer: "https://id.city.example"
          audience: "fenfa"
          keys: {{ keys: [ {{ kid: "k1", alg: "HS256", kty: "oct", k: "{k}" }} ] }}
routes:
  - name: permits-api
    service: permits
    paths: ["/api/*"]
{audit}
"#,
        k = b64url(&SECRET)
    )
}

fn audit_dir(gw: &Gateway) -> PathBuf {
    gw.dir.path().join("data").join("audit")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    v.sort();
    v
}

/// Every record (checkpoints left out), oldest first.
fn records(dir: &Path) -> Vec<Value> {
    segments(dir)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("each line is JSON"))
                .collect::<Vec<_>>()
        })
        .filter(|v| v.get("checkpoint").is_none())
        .collect()
}

/// Runs `fenfa-gateway ARGS`: (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
        .args(args)
        .env("FENFA_LOG", "warn")
        .output()
        .expect("run fenfa-gateway");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn verify(dir: &Path) -> (bool, String) {
    cli(&["audit", "verify", dir.to_str().unwrap()])
}

fn stop(gw: &mut Gateway) {
    gw.signal(Signal::SIGTERM);
    let st = gw.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "exit {st:?}; log:\n{}", gw.logs());
}

/// GET with an optional bearer token: (status, request id).
async fn get(gw: &Gateway, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut req = client().get(gw.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("gateway answers");
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (resp.status().as_u16(), id)
}

#[tokio::test]
async fn every_request_leaves_exactly_one_record_and_sigterm_loses_none() {
    let up = Upstream::start("permits");
    let mut gw = Gateway::start(&config(up.addr, ""));
    let alice = token("u-alice", "wechat", "wx-app-1");
    let mut ids = BTreeMap::new();
    for i in 0..12 {
        let (st, id) = get(
            &gw,
            &format!("/api/items?idcard=110101199001011234&page={i}"),
            Some(&alice),
        )
        .await;
        assert_eq!(st, 200);
        ids.insert(id, "allowed");
    }
    for _ in 0..5 {
        let (st, id) = get(&gw, "/api/items", None).await;
        assert_eq!(st, 401);
        ids.insert(id, "denied");
    }
    let (st, id) = get(&gw, "/api/items", Some("not.a-real.token-SECRETVALUE")).await;
    assert_eq!(st, 401);
    ids.insert(id, "denied");
    for _ in 0..6 {
        let (st, id) = get(&gw, "/nowhere?session=abc123", None).await;
        assert_eq!(st, 404);
        ids.insert(id, "error");
    }
    assert_eq!(gw.metric("fenfa_audit_records_dropped_total"), Some(0.0));
    stop(&mut gw);

    let dir = audit_dir(&gw);
    let recs = records(&dir);
    assert_eq!(recs.len(), ids.len(), "one record per request");
    let by_id: BTreeMap<String, &Value> = recs
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(by_id.len(), ids.len(), "no request recorded twice");
    for (id, decision) in &ids {
        let r = by_id
            .get(id)
            .unwrap_or_else(|| panic!("no record for {id}"));
        assert_eq!(r["decision"], *decision, "{r}");
    }

    let allowed = recs.iter().find(|r| r["status"] == 200).unwrap();
    assert!(
        allowed["time"].as_str().unwrap().ends_with('Z'),
        "{allowed}"
    );
    assert!(
        allowed["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{allowed}"
    );
    assert_eq!(allowed["client_ip"], "127.0.0.1");
    assert_eq!(allowed["user"], "u-alice");
    assert_eq!(allowed["channel"], "wechat");
    assert_eq!(allowed["app"], "wx-app-1");
    assert_eq!(allowed["agency"], "tax");
    assert_eq!(allowed["service"], "permits");
    assert_eq!(allowed["route"], "permits-api");
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["path"], "/api/items?idcard=***&page=***");
    assert_eq!(allowed["upstream"], up.addr.to_string());
    assert_eq!(allowed["upstream_status"], 200);
    assert!(allowed["latency_us"].as_u64().unwrap() > 0);
    assert!(allowed["bytes"].as_u64().unwrap() > 0);

    let denied = recs.iter().find(|r| r["decision"] == "denied").unwrap();
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["denied_by"], "jwt-auth");
    assert_eq!(denied["code"], "missing_token");
    assert!(denied.get("upstream").is_none(), "{denied}");

    let error = recs.iter().find(|r| r["decision"] == "error").unwrap();
    assert_eq!(error["status"], 404);
    assert_eq!(error["code"], "route_not_found");
    assert_eq!(error["path"], "/nowhere?session=***");

    // No token, secret or query value anywhere in the trail.
    for seg in segments(&dir) {
        let text = std::fs::read_to_string(seg).unwrap();
        for secret in [
            alice.as_str(),
            "SECRETVALUE",
            "110101199001011234",
            "abc123",
        ] {
            assert!(
                !text.contains(secret),
                "`{secret}` leaked into the audit trail"
            );
        }
    }
    let (ok, out) = verify(&dir);
    assert!(ok && out.starts_with("OK:"), "{out}");
    assert!(out.contains(&format!("{} records", ids.len())), "{out}");
}

#[tokio::test]
async fn audit_can_be_switched_off_for_measurements() {
    let up = Upstream::start("a");
    let mut gw = Gateway::start(&config(up.addr, "audit:\n  enabled: false\n"));
    assert_eq!(get(&gw, "/nowhere", None).await.0, 404);
    stop(&mut gw);
    assert!(!audit_dir(&gw).exists());
    assert!(gw.logs().contains("audit trail DISABLED"));
}

/// A stopped gateway whose trail has four sealed segments of three records each (seq 1..12).
async fn sealed_trail() -> (Gateway, PathBuf) {
    let up = Upstream::start("a");
    // Each 404 record is about 420 bytes with its chain tail: three fill 1000 bytes.
    let mut gw = Gateway::start(&config(up.addr, "audit:\n  segment_max_bytes: 1000\n"));
    for _ in 0..12 {
        assert_eq!(get(&gw, "/nowhere?x=1", None).await.0, 404);
    }
    stop(&mut gw);
    let dir = audit_dir(&gw);
    let segs = segments(&dir);
    assert_eq!(segs.len(), 4, "{segs:?}");
    for s in &segs {
        assert_eq!(
            std::fs::read_to_string(s).unwrap().lines().count(),
            4,
            "3 records + checkpoint"
        );
    }
    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
    (gw, dir)
}

fn seg_lines(dir: &Path, n: u64) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("audit-{n:010}.jsonl")))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_seg(dir: &Path, n: u64, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(dir.join(format!("audit-{n:010}.jsonl")), s).unwrap();
}

fn assert_broken_at(dir: &Path, place: &str, kind: &str) {
    let (ok, out) = verify(dir);
    assert!(!ok, "verify must fail: {out}");
    assert!(
        out.contains(&format!("BROKEN: {place}: {kind}")),
        "expected `{place}: {kind}`, got: {out}"
    );
}

#[tokio::test]
async fn verify_locates_a_modified_field() {
    let (_gw, dir) = sealed_trail().await;
    let mut l = seg_lines(&dir, 2);
    l[1] = l[1].replace("\"status\":404", "\"status\":200");
    write_seg(&dir, 2, &l);
    assert_broken_at(&dir, "audit-0000000002.jsonl:2", "modified");
}

#[tokio::test]
async fn verify_locates_a_deleted_line() {
    let (_gw, dir) = sealed_trail().await;
    let mut l = seg_lines(&dir, 2);
    l.remove(1);
    write_seg(&dir, 2, &l);
    assert_broken_at(&dir, "audit-0000000002.jsonl:2", "deleted");
}

#[tokio::test]
async fn verify_locates_an_inserted_line() {
    let (_gw, dir) = sealed_trail().await;
    let mut l = seg_lines(&dir, 2);
    // A forged record: a real one with another user and request id, mac left as it was.
    let forged = l[0]
        .replace("\"client_ip\":\"127.0.0.1\"", "\"client_ip\":\"10.9.9.9\"")
        .replace("\"request_id\":\"", "\"request_id\":\"f");
    l.insert(2, forged);
    write_seg(&dir, 2, &l);
    assert_broken_at(&dir, "audit-0000000002.jsonl:3", "modified");
    // A verbatim copy of a genuine record (its mac is valid) is caught by the chain.
    let mut l = seg_lines(&dir, 2);
    l.remove(2);
    let copy = seg_lines(&dir, 1)[0].clone();
    l.insert(2, copy);
    write_seg(&dir, 2, &l);
    assert_broken_at(&dir, "audit-0000000002.jsonl:3", "inserted");
}

#[tokio::test]
async fn verify_locates_reordered_lines() {
    let (_gw, dir) = sealed_trail().await;
    let mut l = seg_lines(&dir, 3);
    l.swap(0, 1);
    write_seg(&dir, 3, &l);
    assert_broken_at(&dir, "audit-0000000003.jsonl:1", "reordered");
}

#[tokio::test]
async fn verify_locates_a_truncated_tail() {
    let (_gw, dir) = sealed_trail().await;
    // Whole lines cut from the end (the last record and the checkpoint).
    let l = seg_lines(&dir, 4);
    write_seg(&dir, 4, &l[..2]);
    assert_broken_at(&dir, "audit-0000000004.jsonl:3", "truncated");
    // Cut in the middle of a line.
    let path = dir.join("audit-0000000004.jsonl");
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 40]).unwrap();
    assert_broken_at(&dir, "audit-0000000004.jsonl:2", "truncated");
}

#[tokio::test]
async fn a_tail_cut_while_the_gateway_was_stopped_stays_visible_after_it_restarts() {
    let (mut gw, dir) = sealed_trail().await;
    let l = seg_lines(&dir, 4);
    write_seg(&dir, 4, &l[..2]);
    // Restarting does not launder the cut: the gateway chains an incident before writing on.
    gw.spawn();
    gw.wait_ready();
    assert_eq!(get(&gw, "/nowhere", None).await.0, 404);
    stop(&mut gw);
    assert!(gw.logs().contains("recording an incident"), "{}", gw.logs());
    assert_broken_at(&dir, "audit-0000000004.jsonl:3", "truncated");
    let (_, out) = verify(&dir);
    assert!(out.contains("while it was stopped"), "{out}");
}

#[tokio::test]
async fn verify_locates_a_deleted_segment() {
    let (_gw, dir) = sealed_trail().await;
    std::fs::remove_file(dir.join("audit-0000000002.jsonl")).unwrap();
    assert_broken_at(&dir, "audit-0000000003.jsonl:1", "missing segment");
    let (_, out) = verify(&dir);
    assert!(out.contains("audit-0000000002.jsonl (deleted)"), "{out}");
}

#[tokio::test]
async fn verify_notices_the_newest_segment_deleted() {
    let (_gw, dir) = sealed_trail().await;
    std::fs::remove_file(dir.join("audit-0000000004.jsonl")).unwrap();
    assert_broken_at(&dir, "audit-0000000004.jsonl:1", "missing segment");
}

/// 国密: a trail switched to `chain: hmac-sm3` verifies, `audit verify` names each segment's
/// algorithm, an SM3 line's mac is what Python's gmssl (SM3 with the HMAC written out) computes,
/// and the five tampers are found in the SM3 segments as in SHA-256 ones.
#[tokio::test]
async fn an_hmac_sm3_trail_verifies_and_the_five_tampers_are_found() {
    let up = Upstream::start("a");
    let mut gw = Gateway::start(&config(up.addr, "audit:\n  segment_max_bytes: 1000\n"));
    for _ in 0..4 {
        assert_eq!(get(&gw, "/nowhere?x=1", None).await.0, 404);
    }
    stop(&mut gw);
    let dir = audit_dir(&gw);
    let sha_segments = segments(&dir).len();
    gw.write_config(&config(
        up.addr,
        "audit:\n  segment_max_bytes: 1000\n  chain: hmac-sm3\n",
    ));
    gw.spawn();
    gw.wait_ready();
    for _ in 0..8 {
        assert_eq!(get(&gw, "/nowhere?x=1", None).await.0, 404);
    }
    stop(&mut gw);
    let all = segments(&dir).len();
    assert!(all >= sha_segments + 3, "{all} segments");

    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "chained with hmac-sha256 (segments 1–{sha_segments}), hmac-sm3 (segments {}–{all})",
            sha_segments + 1
        )),
        "{out}"
    );
    // The switch is the first line of the first SM3 segment, chained to the SHA-256 one before.
    let first = sha_segments as u64 + 1;
    let header: Value = serde_json::from_str(&seg_lines(&dir, first)[0]).unwrap();
    assert_eq!(header["chain"]["alg"], "hmac-sm3", "{header}");
    assert_eq!(header["chain"]["previous"], "hmac-sha256", "{header}");
    let last_sha: Value = serde_json::from_str(seg_lines(&dir, first - 1).last().unwrap()).unwrap();
    assert_eq!(header["prev"], last_sha["mac"]);

    // An independent HMAC-SM3 of a record line (gmssl's SM3, RFC 2104 written out).
    let record = seg_lines(&dir, first)[1].clone();
    let v: Value = serde_json::from_str(&record).unwrap();
    let tail = format!(
        ",\"prev\":\"{}\",\"mac\":\"{}\"}}",
        v["prev"].as_str().unwrap(),
        v["mac"].as_str().unwrap()
    );
    let canonical = format!("{}}}", record.strip_suffix(&tail).expect("the chain tail"));
    let key = std::fs::read_to_string(gw.dir.path().join("data").join("audit.key")).unwrap();
    let script = r#"
import sys
key, prev = bytes.fromhex(sys.argv[1].strip()), bytes.fromhex(sys.argv[2])
print(hmac_sm3(key, prev + sys.stdin.buffer.read()).hex())
"#;
    let mac = python::run(
        script,
        &[&key, v["prev"].as_str().unwrap()],
        canonical.as_bytes(),
    );
    assert_eq!(mac, v["mac"]);

    // The five tampers, each on the pristine trail, in SM3 segments.
    let second = first + 1;
    let pristine: Vec<Vec<String>> = (1..=all as u64).map(|n| seg_lines(&dir, n)).collect();
    let restore = |dir: &Path| {
        for (i, l) in pristine.iter().enumerate() {
            write_seg(dir, i as u64 + 1, l);
        }
        let (ok, out) = verify(dir);
        assert!(ok, "restored: {out}");
    };
    // A flipped byte.
    let mut l = seg_lines(&dir, second);
    l[1] = l[1].replace("\"status\":404", "\"status\":405");
    write_seg(&dir, second, &l);
    assert_broken_at(&dir, &format!("audit-{second:010}.jsonl:2"), "modified");
    restore(&dir);
    // A deleted line.
    let mut l = seg_lines(&dir, second);
    l.remove(1);
    write_seg(&dir, second, &l);
    assert_broken_at(&dir, &format!("audit-{second:010}.jsonl:2"), "deleted");
    restore(&dir);
    // Swapped lines (two records).
    let mut l = seg_lines(&dir, second);
    l.swap(1, 2);
    write_seg(&dir, second, &l);
    assert_broken_at(&dir, &format!("audit-{second:010}.jsonl:2"), "reordered");
    restore(&dir);
    // A cut tail.
    let last = all as u64;
    let l = seg_lines(&dir, last);
    write_seg(&dir, last, &l[..l.len() - 2]);
    assert_broken_at(
        &dir,
        &format!("audit-{last:010}.jsonl:{}", l.len() - 1),
        "truncated",
    );
    restore(&dir);
    // A removed segment.
    std::fs::remove_file(dir.join(format!("audit-{second:010}.jsonl"))).unwrap();
    assert_broken_at(
        &dir,
        &format!("audit-{:010}.jsonl:1", second + 1),
        "missing segment",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_sigkill_what_was_written_verifies_and_the_next_start_seals_it() {
    let up = Upstream::start("a");
    let mut gw = Gateway::start(&config(up.addr, ""));
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, running) = (gw.url("/nowhere?q=1"), running.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            while running.load(SeqCst) {
                let _ = c.get(&url).send().await;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw
        .metric("fenfa_audit_records_written_total")
        .unwrap_or(0.0)
        < 300.0
    {
        assert!(Instant::now() < deadline, "load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal(Signal::SIGKILL);
    gw.wait_exit(Duration::from_secs(5));
    running.store(false, SeqCst);
    for l in load {
        let _ = l.await;
    }
    let dir = audit_dir(&gw);
    // Lost: at most what was still queued or being written (the documented loss window).
    let written = records(&dir).len();
    assert!(written >= 200, "{written}");
    let (ok, out) = verify(&dir);
    assert!(ok, "the trail a SIGKILL left must verify: {out}");

    // The next start seals the segment left open, and the chain continues across the crash.
    gw.spawn();
    gw.wait_ready();
    for _ in 0..5 {
        assert_eq!(get(&gw, "/nowhere", None).await.0, 404);
    }
    stop(&mut gw);
    let recovered = segments(&dir)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.contains("\"reason\":\"recovered\""))
        .count();
    assert!(
        recovered >= 1,
        "a segment sealed as recovered; log:\n{}",
        gw.logs()
    );
    assert_eq!(records(&dir).len(), written + 5);
    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
}

/// Makes the audit directory unusable (a file where the directory was) until `restore`.
fn break_dir(dir: &Path) -> PathBuf {
    let aside = dir.with_extension("aside");
    std::fs::rename(dir, &aside).unwrap();
    std::fs::write(dir, b"not a directory").unwrap();
    aside
}

fn restore_dir(dir: &Path, aside: &Path) {
    std::fs::remove_file(dir).unwrap();
    std::fs::rename(aside, dir).unwrap();
}

#[tokio::test]
async fn strict_mode_answers_503_rather_than_serve_unrecorded_and_recovers() {
    let up = Upstream::start("a");
    // Every record fills its segment, so each record needs a new file in the directory.
    let mut gw = Gateway::start(&config(
        up.addr,
        "audit:\n  strict: true\n  queue_capacity: 2\n  segment_max_bytes: 1\n",
    ));
    let alice = token("u-alice", "wechat", "wx-app-1");
    let mut served = Vec::new();
    let (st, id) = get(&gw, "/api/a", Some(&alice)).await;
    assert_eq!(st, 200);
    served.push(id);
    wait_for("the first record", Duration::from_secs(5), || {
        gw.metric("fenfa_audit_records_written_total") == Some(1.0)
    });
    let dir = audit_dir(&gw);
    let aside = break_dir(&dir);

    // The writer holds one record and retries; the queue fills; then requests are refused.
    let mut refused = None;
    for _ in 0..50 {
        let resp = client()
            .get(gw.url("/api/a"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        let st = resp.status().as_u16();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        if st == 503 {
            let body: Value = resp.json().await.unwrap();
            refused = Some(body);
            break;
        }
        assert_eq!(st, 200);
        served.push(id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("strict mode must answer 503 once the queue is full");
    assert_eq!(refused["error"]["code"], "audit_unavailable");
    assert!(gw.metric("fenfa_audit_rejected_total").unwrap() >= 1.0);
    assert!(
        up.hits() <= served.len(),
        "a refused request never reaches the upstream"
    );

    restore_dir(&dir, &aside);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, id) = get(&gw, "/api/a", Some(&alice)).await;
        if st == 200 {
            served.push(id);
            break;
        }
        assert!(Instant::now() < deadline, "strict mode never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(&mut gw);
    let recorded: BTreeSet<String> = records(&dir)
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    for id in &served {
        assert!(recorded.contains(id), "served request {id} has no record");
    }
    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_full_queue_drops_counts_and_logs_but_traffic_flows() {
    let up = Upstream::start("a");
    let mut gw = Gateway::start(&config(
        up.addr,
        "audit:\n  queue_capacity: 2\n  segment_max_bytes: 1\n",
    ));
    assert_eq!(get(&gw, "/nowhere", None).await.0, 404);
    wait_for("the first record", Duration::from_secs(5), || {
        gw.metric("fenfa_audit_records_written_total") == Some(1.0)
    });
    let dir = audit_dir(&gw);
    let aside = break_dir(&dir);
    for _ in 0..10 {
        assert_eq!(get(&gw, "/nowhere", None).await.0, 404, "traffic flows");
    }
    wait_for("drops", Duration::from_secs(5), || {
        gw.metric("fenfa_audit_records_dropped_total")
            .unwrap_or(0.0)
            >= 1.0
    });
    assert!(gw.logs().contains("audit queue full"), "{}", gw.logs());
    restore_dir(&dir, &aside);
    stop(&mut gw);
    let (ok, out) = verify(&dir);
    assert!(ok, "what was written still verifies: {out}");
}

/// Runs `audit query` on the trail in `dir`: the JSON lines, parsed.
fn query(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "query", "--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out) = cli(&all);
    assert!(ok, "{out}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn audit_query_filters_by_time_user_app_channel_service_status_and_decision() {
    let up = Upstream::start("a");
    let mut gw = Gateway::start(&config(up.addr, ""));
    let u1 = token("u-1", "wechat", "wx-a");
    let u2 = token("u-2", "alipay", "wx-b");
    let u3 = token("u-3", "baidu", "wx-c");
    for _ in 0..3 {
        assert_eq!(get(&gw, "/api/x", Some(&u1)).await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&gw, "/api/y", Some(&u2)).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mid = fenfa_gateway::audit::time::format(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(get(&gw, "/api/x", Some(&u1)).await.0, 200);
    assert_eq!(get(&gw, "/api/z", Some(&u3)).await.0, 200);
    for _ in 0..2 {
        assert_eq!(get(&gw, "/api/x", None).await.0, 401);
    }
    assert_eq!(get(&gw, "/elsewhere", None).await.0, 404);
    stop(&mut gw);
    let dir = audit_dir(&gw);

    let n = |args: &[&str]| query(&dir, args).len();
    assert_eq!(n(&[]), 10);
    assert_eq!(n(&["--user", "u-1"]), 4);
    assert_eq!(n(&["--app", "wx-b"]), 2);
    assert_eq!(n(&["--channel", "baidu"]), 1);
    assert_eq!(n(&["--service", "permits"]), 9);
    assert_eq!(n(&["--status", "401"]), 2);
    assert_eq!(n(&["--status", "4xx"]), 3);
    assert_eq!(n(&["--decision", "allowed"]), 7);
    assert_eq!(n(&["--decision", "denied"]), 2);
    assert_eq!(n(&["--decision", "error"]), 1);
    assert_eq!(n(&["--from", &mid]), 5);
    assert_eq!(n(&["--to", &mid]), 5);
    assert_eq!(n(&["--user", "u-1", "--from", &mid]), 1);
    assert_eq!(n(&["--limit", "3"]), 3);
    let denied = query(&dir, &["--decision", "denied"]);
    assert!(denied
        .iter()
        .all(|r| r["denied_by"] == "jwt-auth" && r["seq"].is_u64() && r["mac"].is_string()));

    let (ok, table) = cli(&[
        "audit",
        "query",
        "--dir",
        dir.to_str().unwrap(),
        "--app",
        "wx-b",
        "--format",
        "table",
    ]);
    assert!(ok, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("time")
            && lines[0].contains("request_id")
            && lines[0].contains("decision"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "header, 2 rows, count: {table}");
    assert!(
        lines[1].contains("u-2") && lines[1].contains("alipay") && lines[1].contains("allowed"),
        "{table}"
    );
    assert_eq!(lines[3], "(2 records)");

    let (ok, out) = cli(&[
        "audit",
        "query",
        "--dir",
        dir.to_str().unwrap(),
        "--status",
        "teapot",
    ]);
    assert!(!ok && out.contains("not a status"), "{out}");

    // Dates that do not exist and offsets out of range are refused, not shifted.
    for bad in ["2024-02-31", "2023-02-29", "2024-06-01T08:30:00+99:99"] {
        let (ok, out) = cli(&[
            "audit",
            "query",
            "--dir",
            dir.to_str().unwrap(),
            "--from",
            bad,
        ]);
        assert!(
            !ok && out.contains(bad) && out.contains("not a time"),
            "{bad}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_survives_a_control_plane_outage_and_a_restart_without_losing_records() {
    let up = Upstream::start("a");
    let collector = Collector::start("node-token-7");
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("node.token");
    std::fs::write(&token_file, "node-token-7\n").unwrap();
    let audit = format!(
        "audit:\n  ship:\n    url: \"{}\"\n    token_file: \"{}\"\n    batch_records: 3\n    interval: 50ms\n    backoff_max: 200ms\n",
        collector.url(),
        token_file.display()
    );
    let mut gw = Gateway::start(&config(up.addr, &audit));
    let alice = token("u-alice", "wechat", "wx-app-1");
    let mut sent = BTreeSet::new();
    let distinct = |c: &Collector| {
        c.delivered()
            .iter()
            .map(|d| d.key())
            .collect::<BTreeSet<_>>()
            .len()
    };

    for _ in 0..5 {
        sent.insert(get(&gw, "/api/a", Some(&alice)).await.1);
    }
    wait_for("5 records shipped", Duration::from_secs(10), || {
        distinct(&collector) == 5
    });

    // Outage: the control plane is down; traffic flows, records wait on disk.
    let (addr, memory) = collector.stop();
    for _ in 0..7 {
        let (st, id) = get(&gw, "/api/a", Some(&alice)).await;
        assert_eq!(st, 200);
        sent.insert(id);
    }
    wait_for("shipping failures", Duration::from_secs(10), || {
        gw.metric("fenfa_audit_ship_failures_total").unwrap_or(0.0) >= 2.0
    });
    assert_eq!(memory.delivered.lock().unwrap().len(), 5);

    // Back: everything arrives.
    let collector = Collector::start_with(addr, memory);
    wait_for("12 records shipped", Duration::from_secs(10), || {
        distinct(&collector) == 12
    });
    assert!(gw.metric("fenfa_audit_records_shipped_total").unwrap() >= 12.0);

    // Down again, and the gateway restarts meanwhile: the persisted cursor carries over.
    let (addr, memory) = collector.stop();
    for _ in 0..3 {
        sent.insert(get(&gw, "/api/a", Some(&alice)).await.1);
    }
    stop(&mut gw);
    let collector = Collector::start_with(addr, memory);
    gw.spawn();
    gw.wait_ready();
    wait_for("15 records shipped", Duration::from_secs(10), || {
        distinct(&collector) == 15
    });
    stop(&mut gw);

    let delivered = collector.delivered();
    assert_eq!(collector.memory.unauthorized.load(SeqCst), 0);
    let ids: BTreeSet<String> = delivered
        .iter()
        .map(|d| d.record["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, sent, "every request delivered, none lost");
    // Duplicates only under the same idempotency key, with the same content.
    let mut by_key: BTreeMap<_, &Value> = BTreeMap::new();
    for d in &delivered {
        if let Some(prev) = by_key.insert(d.key(), &d.record) {
            assert_eq!(prev, &d.record, "same key, same record");
        }
        assert!(!d.node.is_empty() && d.segment.starts_with("audit-"));
    }
    assert_eq!(by_key.len(), 15);
    let (ok, out) = verify(&audit_dir(&gw));
    assert!(ok, "{out}");
}

/// The stored line at (segment, 0-based line).
fn stored_line(dir: &Path, segment: &str, line: u64) -> String {
    std::fs::read_to_string(dir.join(segment))
        .unwrap()
        .lines()
        .nth(line as usize)
        .unwrap_or_else(|| panic!("{segment} has no line {line}"))
        .to_string()
}

#[tokio::test]
async fn records_export_as_otlp_logs_the_official_schema_accepts_after_a_collector_outage() {
    let up = Upstream::start("a");
    // The collector is "down" (503) for its first 3 requests.
    let otlp = OtlpReceiver::start(3);
    let audit = format!(
        "gateway:\n  node: gw-otlp-1\naudit:\n  otlp:\n    url: \"{}\"\n    headers: {{ Authorization: \"Bearer otlp-SECRET-9\" }}\n    batch_records: 4\n    interval: 50ms\n    backoff_max: 200ms\n",
        otlp.url()
    );
    let mut gw = Gateway::start(&config(up.addr, &audit));
    // The configured node name, the same in /status, the records and the OTLP resource.
    assert_eq!(gw.status_json()["node"], "gw-otlp-1");
    let alice = token("u-alice", "wechat", "wx-app-1");
    let mut sent = BTreeMap::new();
    for i in 0..6 {
        let (st, id) = get(
            &gw,
            &format!("/api/items?idcard=1101&page={i}"),
            Some(&alice),
        )
        .await;
        assert_eq!(st, 200);
        sent.insert(id, "SEVERITY_NUMBER_INFO");
    }
    for _ in 0..2 {
        let (st, id) = get(&gw, "/api/items", None).await;
        assert_eq!(st, 401);
        sent.insert(id, "SEVERITY_NUMBER_WARN");
    }
    let exported = |o: &OtlpReceiver| {
        let received = o.received();
        if let Some(e) = received.iter().find(|r| r.get("error").is_some()) {
            panic!("the OTLP schema refused a request: {e}");
        }
        received
            .iter()
            .filter(|r| r.get("record").is_some())
            .map(|r| attr(&r["record"], "fenfa.request_id"))
            .collect::<BTreeSet<_>>()
    };
    wait_for("8 records exported", Duration::from_secs(15), || {
        exported(&otlp).len() == 8
    });
    assert!(gw.metric("fenfa_audit_export_failures_total").unwrap() >= 3.0);
    assert!(gw.metric("fenfa_audit_records_exported_total").unwrap() >= 8.0);
    assert_eq!(gw.metric("fenfa_audit_export_refused_total"), Some(0.0));
    stop(&mut gw);

    let received = otlp.received();
    assert_eq!(exported(&otlp).len(), 8);
    let dir = audit_dir(&gw);
    let mut seen = BTreeSet::new();
    for r in &received {
        assert_eq!(r["auth"], "Bearer otlp-SECRET-9");
        assert_eq!(r["resource"]["service.name"], "fenfa-gateway");
        assert_eq!(r["resource"]["service.instance.id"], "gw-otlp-1");
        assert_eq!(r["scope"], "fenfa.audit");
        let rec = &r["record"];
        let id = attr(rec, "fenfa.request_id");
        assert_eq!(rec["severityNumber"], sent[id.as_str()], "{rec}");
        // The body is the stored line, byte for byte: still verifiable against the chain.
        let segment = attr(rec, "fenfa.audit.segment");
        let offset: u64 = attr(rec, "fenfa.audit.offset").parse().unwrap();
        let line = stored_line(&dir, &segment, offset);
        assert_eq!(rec["body"]["stringValue"].as_str().unwrap(), line);
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap()["node"],
            "gw-otlp-1"
        );
        let time: u64 = rec["timeUnixNano"].as_str().unwrap().parse().unwrap();
        assert_eq!(time % 1_000_000, 0, "millisecond records");
        assert!(attr(rec, "url.path").starts_with("/api/items"));
        assert!(
            !rec.to_string().contains("1101&"),
            "query values stay masked"
        );
        seen.insert(id);
    }
    assert_eq!(
        seen,
        sent.keys().cloned().collect(),
        "every request exported"
    );
    assert!(
        !gw.logs().contains("otlp-SECRET-9"),
        "the header value is never logged"
    );
    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
}

/// A string attribute of an OTLP log record (as protobuf's JSON printer writes it).
fn attr(record: &Value, key: &str) -> String {
    let a = record["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .unwrap_or_else(|| panic!("no attribute {key} in {record}"));
    let v = &a["value"];
    v["stringValue"]
        .as_str()
        .or(v["intValue"].as_str())
        .unwrap()
        .to_string()
}
