//! Hot reload: atomic swaps under load, invalid configs rejected with the field path, and the
//! last good snapshot used at boot.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{client, wait_for, Gateway, Upstream};

fn config(version: &str, target: std::net::SocketAddr) -> String {
    format!(
        r#"
version: "{version}"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{target}" }}]
routes:
  - name: r
    service: s
    paths: ["/api/*"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_steady_load_lose_no_request() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&config("v0", a.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, url) = (stop.clone(), ok.clone(), gw.url("/api/load"));
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            while !stop.load(SeqCst) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, SeqCst);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("error {e}")),
                }
            }
            failures
        }));
    }
    let mut generation = gw.generation();
    for i in 1..=50 {
        let target = if i % 2 == 0 { a.addr } else { b.addr };
        gw.write_config(&config(&format!("v{i}"), target));
        gw.signal(Signal::SIGHUP);
        generation += 1;
        gw.wait_generation(generation);
        generation = gw.generation();
    }
    stop.store(true, SeqCst);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests during reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(SeqCst) > 200,
        "too little load to mean anything: {}",
        ok.load(SeqCst)
    );
    assert!(a.hits() > 0 && b.hits() > 0, "both configs served traffic");
    assert_eq!(gw.status_json()["config"]["version"], "v50");
}

/// Nothing keeps a replaced config once no request runs on it. The first config used to be held
/// for the life of the process (for 100k routes, 200 MiB that every reload kept).
#[tokio::test]
async fn a_replaced_config_is_freed_after_a_reload() {
    let a = Upstream::start("a");
    let gw = Gateway::start(&config("v1", a.addr));
    assert_eq!(gw.metric("fenfa_config_snapshots"), Some(1.0));
    for v in 2..=3 {
        let g = gw.generation();
        gw.write_config(&config(&format!("v{v}"), a.addr));
        gw.signal(Signal::SIGHUP);
        gw.wait_generation(g + 1);
        let resp = client().get(gw.url("/api/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        wait_for(
            &format!("config v{v}: fenfa_config_snapshots back to 1 (the replaced one freed)"),
            Duration::from_secs(10),
            || gw.metric("fenfa_config_snapshots") == Some(1.0),
        );
    }
}

#[tokio::test]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&config("v1", a.addr));
    let g = gw.generation();
    gw.write_config(&config("v2", b.addr));
    gw.wait_generation(g + 1);
    let resp = client().get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.headers()["x-upstream"], "b");
}

#[tokio::test]
async fn invalid_config_is_rejected_with_the_field_path_and_the_running_config_stays() {
    let a = Upstream::start("a");
    let gw = Gateway::start(&config("good", a.addr));
    let cases = [
        (
            config("bad", a.addr).replace("service: s", "service: nope"),
            "routes[0].service",
            "no service named `nope`",
        ),
        (
            config("bad", a.addr).replace("targets:", "timeouts: { connect: 5 }\n      targets:"),
            "services[0].upstream.timeouts.connect",
            "no unit",
        ),
        (
            config("bad", a.addr).replace("/api/*", "api"),
            "routes[0].paths[0]",
            "",
        ),
        (
            config("bad", a.addr).replace("name: s\n", "name: s\n    colour: blue\n"),
            "services[0].colour",
            "unknown field `colour`",
        ),
    ];
    for (i, (text, path, needle)) in cases.iter().enumerate() {
        let failures_before = gw
            .metric("fenfa_config_reload_failures_total")
            .unwrap_or(0.0);
        gw.write_config(text);
        gw.signal(Signal::SIGHUP);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = gw.status_json();
            let err = &st["config"]["last_error"];
            if err["path"] == *path {
                assert!(
                    err["message"].as_str().unwrap().contains(needle),
                    "case {i}: {err}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "case {i}: error for `{path}` never reported: {st}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gw.metric("fenfa_config_reload_failures_total").unwrap() > failures_before);
        assert!(
            gw.logs().contains(path),
            "case {i}: the log names the field `{path}`"
        );
        assert_eq!(gw.status_json()["config"]["version"], "good");
        let resp = client().get(gw.url("/api/still")).send().await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "case {i}: the running config still serves"
        );
    }
}

#[tokio::test]
async fn last_good_config_is_used_at_boot_when_the_file_is_broken_or_missing() {
    let a = Upstream::start("a");
    let mut gw = Gateway::start(&config("good", a.addr));
    gw.signal(Signal::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(15)).success());

    // Broken file: boots on the last good snapshot, loudly.
    gw.write_raw_config("listeners: [this is not a config");
    gw.spawn();
    gw.wait_ready();
    assert!(
        gw.logs().contains("STARTING ON THE LAST GOOD CONFIG"),
        "{}",
        gw.logs()
    );
    assert_eq!(gw.status_json()["config"]["version"], "good");
    assert_eq!(
        client()
            .get(gw.url("/api/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.signal(Signal::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(15)).success());

    // Missing file: same.
    std::fs::remove_file(&gw.config_path).unwrap();
    gw.spawn();
    gw.wait_ready();
    assert_eq!(
        client()
            .get(gw.url("/api/y"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn without_any_config_the_gateway_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
        .arg("--config")
        .arg(dir.path().join("missing.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("no last good config"),
        "{err}"
    );
}

#[tokio::test]
async fn check_command_reports_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "services:\n  - name: s\n    upstream:\n      targets: [{ addr: \"127.0.0.1:1\", weight: 0 }]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("services[0].upstream.targets[0].weight: expected 1 to 65535"),
        "{err}"
    );
}
