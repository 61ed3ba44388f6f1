//! The walk-through of `docs/admin.md` is pasteable: `docs/walkthrough.sh` is exactly its shell
//! blocks, and run against a fresh `fenfa-admin serve --demo` (the real binary) it registers an
//! agency and a service, publishes it, and ends with a proxied call that the demo's echo
//! backend answers.
//!
//! Needs `bash`, `curl`, `jq` and `oathtool` (`.ci/run` installs them). Outside CI a missing one
//! skips the run loudly; with `CI` set it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The ```sh blocks of the walk-through section of docs/admin.md, joined by blank lines.
fn doc_blocks() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/admin.md")).unwrap();
    let start = doc
        .find("## Walk-through: register, publish and call a service")
        .expect("the walk-through section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("a closed block")])
        .collect();
    assert!(blocks.len() >= 4, "the walk-through has its blocks");
    blocks.join("\n")
}

#[test]
fn walkthrough_script_is_exactly_the_docs_blocks() {
    let script =
        std::fs::read_to_string(repo().join("docs/walkthrough.sh")).expect("docs/walkthrough.sh");
    assert!(script.starts_with("#!/usr/bin/env bash\n"));
    let body = script
        .split_once("set -euo pipefail\n\n")
        .map(|(_, b)| b)
        .expect("the script's header ends with `set -euo pipefail` and a blank line");
    assert_eq!(
        body,
        doc_blocks(),
        "docs/walkthrough.sh and the walk-through in docs/admin.md differ: edit them together"
    );
}

/// Whether every tool the walk-through uses is here; in CI they must be.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["bash", "curl", "jq", "oathtool"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the walk-through's tools are missing: {missing:?}");
    }
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        format!("\n!!! SKIPPING the admin walk-through run: missing {missing:?} (apt-get install curl jq oathtool)\n\n")
            .as_bytes(),
    );
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
struct Proc(Child, PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file(path: &Path, needle: &str, proc: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} never held {needle}; log:\n{}",
        path.display(),
        std::fs::read_to_string(&proc.1).unwrap_or_default()
    );
}

#[test]
fn walkthrough_runs_against_serve_demo_and_ends_with_a_proxied_call() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin_port = free_port();
    let log = dir.path().join("admin.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fenfa-admin"))
        .arg("serve")
        .arg("--demo")
        .args(["--listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--data-dir")
        .arg(&data)
        .args(["--gateway-http", &format!("127.0.0.1:{}", free_port())])
        .args(["--gateway-status", &format!("127.0.0.1:{}", free_port())])
        .args(["--demo-upstream", &format!("127.0.0.1:{}", free_port())])
        .env_remove("FENFA_ADMIN_PASSWORD")
        .env_remove("FENFA_ADMIN_TOTP_SECRET")
        .env_remove("FENFA_SECURITY_PASSWORD")
        .env_remove("FENFA_SECURITY_TOTP_SECRET")
        .env_remove("FENFA_MASTER_KEY")
        .env_remove("FENFA_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn fenfa-admin");
    let proc = Proc(child, log.clone());
    wait_for_file(&data.join("demo.env"), "DEMO_TOKEN=", &proc);
    // The control plane listens before it writes demo.env; make sure of it all the same.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the control plane never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let run = Command::new("bash")
        .arg(repo().join("docs/walkthrough.sh"))
        .env("FENFA_DATA_DIR", &data)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the walk-through failed ({}):\n{stdout}\n{stderr}\nadmin log:\n{}",
        run.status,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // It ends with the proxied call, answered by the demo's echo backend for the new route.
    let last = stdout.rsplit_once("\n{").map_or(&*stdout, |(_, l)| l);
    assert!(
        last.contains("\"echo\": \"hello from the demo agency backend\"")
            && last.contains("\"path\": \"/social/pension/balance\"")
            && last.contains("\"channel\": \"wechat\""),
        "the last answer is the echo of the proxied call:\n{stdout}"
    );
    drop(proc);
}
