//! Gateway ↔ control plane over https, the real binaries on loopback: `fenfa-admin serve` with a
//! certificate of a test CA, a `fenfa-gateway --control-plane https://…` trusting that CA follows
//! it and ships its request audit there (found through the audit API). With the wrong CA the
//! gateway refuses the control plane and says why: at its first start it exits with the reason,
//! and when it has a last good config it serves that and shows the reason in `/status`
//! `config.last_error`. A config over `--control-plane-max-body` is refused with a clear error.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::pki::Pki;
use crate::serve::{
    free_port, gateway_bin, get_json, login, post, register_node, spawn, wait_for, write_edge_base,
    Proc,
};

/// A client that trusts only `pki`'s CA.
fn https_client(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem()).unwrap())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn status_json(http: &reqwest::Client, port: u16) -> Option<Value> {
    http.get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until the process has exited (within 60 s); its log.
async fn exited(what: &str, proc: &mut Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = proc.0.try_wait() {
            return proc.log();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running; log:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_follows_a_control_plane_over_https_ships_its_audit_and_refuses_the_wrong_ca() {
    let (pki, wrong) = (Pki::new("fenfa"), Pki::new("wrong"));
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let admin = format!("https://localhost:{admin_port}");
    let cp = spawn(
        Command::new(env!("CARGO_BIN_EXE_fenfa-admin"))
            .arg("serve")
            .arg("--no-gateway")
            .args(["--listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--data-dir")
            .arg(dir.path().join("cp"))
            .arg("--tls-cert")
            .arg(&pki.server_cert)
            .arg("--tls-key")
            .arg(&pki.server_key)
            .env("FENFA_ADMIN_PASSWORD", ADMIN_PW)
            .env("FENFA_ADMIN_TOTP_SECRET", ADMIN_TOTP)
            .env("FENFA_SECURITY_PASSWORD", SECURITY_PW)
            .env("FENFA_SECURITY_TOTP_SECRET", SECURITY_TOTP)
            .env("FENFA_AUDIT_PASSWORD", AUDIT_PW)
            .env("FENFA_AUDIT_TOTP_SECRET", AUDIT_TOTP)
            .env("FENFA_MASTER_KEY", MASTER_KEY)
            .env("FENFA_LOG", "info"),
        &dir.path().join("cp.log"),
    );
    let http = https_client(&pki);
    wait_for("the control plane over https", &cp, async || {
        http.get(format!("{admin}/openapi.json"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    // Plain HTTP on that port gets no API.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin_port}/openapi.json"))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "the TLS listener does not answer plain HTTP"
    );

    let sec = login(&http, &admin, "security", SECURITY_PW, SECURITY_TOTP).await;
    let node = register_node(&http, &admin, &sec, "edge-tls").await;
    let token_file = dir.path().join("node.token");
    std::fs::write(&token_file, &node).unwrap();

    // The node's base file: its registered name, listeners and audit shipping to the control
    // plane over https.
    let (gw_port, status_port) = (free_port(), free_port());
    let base = dir.path().join("edge.yaml");
    write_edge_base(
        &base,
        gw_port,
        status_port,
        &format!(
            "gateway:\n  node: edge-tls\naudit:\n  ship:\n    url: \"{admin}/v1/dataplane/audit\"\n    token_file: \"{}\"\n    interval: 50ms\n    backoff_max: 200ms\n    tls:\n      ca: \"{}\"\n",
            token_file.display(),
            pki.ca.display()
        ),
    );
    let edge_cmd = |ca: &Path, data: &str, extra: &[&str]| {
        let mut cmd = Command::new(gateway_bin());
        cmd.args(["--control-plane", &admin])
            .arg("--control-plane-ca")
            .arg(ca)
            .arg("--config")
            .arg(&base)
            .arg("--data-dir")
            .arg(dir.path().join(data))
            .args(extra)
            .env("FENFA_NODE_TOKEN", &node)
            .env("FENFA_LOG", "info");
        cmd
    };
    let local = reqwest::Client::new();
    let edge = spawn(
        &mut edge_cmd(&pki.ca, "edge", &[]),
        &dir.path().join("edge.log"),
    );
    wait_for(
        "the edge on the control plane's config",
        &edge,
        async || {
            status_json(&local, status_port).await.is_some_and(|s| {
                s["config"]["source"]
                    .as_str()
                    .is_some_and(|src| src.starts_with("control-plane v"))
            })
        },
    )
    .await;
    // It follows: a commit is live on the edge.
    let sys = login(&http, &admin, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let before = status_json(&local, status_port).await.unwrap()["config"]["generation"]
        .as_u64()
        .unwrap();
    post(
        &http,
        format!("{admin}/v1/agencies"),
        &sys,
        json!({"name": "followed", "title": "followed 委办局"}),
    )
    .await;
    wait_for("the commit on the edge", &edge, async || {
        status_json(&local, status_port)
            .await
            .is_some_and(|s| s["config"]["generation"].as_u64() > Some(before))
    })
    .await;

    // Its request audit arrives at the control plane over https.
    let r = local
        .get(format!("http://127.0.0.1:{gw_port}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let aud = login(&http, &admin, "auditor", AUDIT_PW, AUDIT_TOTP).await;
    wait_for(
        "the edge's record in the request audit",
        &edge,
        async || {
            let v: Value = get_json(
                &http,
                format!("{admin}/v1/audit/requests?request_id={id}"),
                &aud,
            )
            .await;
            v["items"]
                .as_array()
                .is_some_and(|i| i.len() == 1 && i[0]["token_node"] == "edge-tls")
        },
    )
    .await;
    drop(edge);

    // The wrong CA, first start (no last good config): it refuses and exits, saying why.
    let mut fresh = spawn(
        &mut edge_cmd(&wrong.ca, "fresh", &[]),
        &dir.path().join("fresh.log"),
    );
    let log = exited("the fresh edge to refuse", &mut fresh).await;
    assert!(
        log.contains("certificate verify failed: UnknownIssuer"),
        "{log}"
    );
    assert!(!fresh.0.wait().unwrap().success());
    assert!(!log.contains(&node), "the token is never logged");

    // The wrong CA with a last good config: it serves that and shows why in /status.
    let edge = spawn(
        &mut edge_cmd(&wrong.ca, "edge", &[]),
        &dir.path().join("edge-wrong-ca.log"),
    );
    wait_for("the refusal in /status", &edge, async || {
        status_json(&local, status_port).await.is_some_and(|s| {
            s["config"]["source"] == "last-good"
                && s["config"]["last_error"]["path"] == "control_plane"
                && s["config"]["last_error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("certificate verify failed: UnknownIssuer"))
        })
    })
    .await;
    assert!(edge
        .log()
        .contains("certificate verify failed: UnknownIssuer"));
    drop(edge);

    // A config over the cap is refused, with the flag named.
    let mut capped = spawn(
        &mut edge_cmd(&pki.ca, "capped", &["--control-plane-max-body", "200"]),
        &dir.path().join("capped.log"),
    );
    let log = exited("the capped edge to refuse", &mut capped).await;
    assert!(
        log.contains("over the 200-byte limit (--control-plane-max-body)"),
        "{log}"
    );
    drop(cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_tls_keeps_the_single_node_whole_and_its_gateway_ships_over_https() {
    let pki = Pki::new("fenfa");
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, gw_port, status_port) = (free_port(), free_port(), free_port());
    let admin = format!("https://localhost:{admin_port}");
    let cp = spawn(
        Command::new(env!("CARGO_BIN_EXE_fenfa-admin"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--gateway-http", &format!("127.0.0.1:{gw_port}")])
            .args(["--gateway-status", &format!("127.0.0.1:{status_port}")])
            .arg("--tls-cert")
            .arg(&pki.server_cert)
            .arg("--tls-key")
            .arg(&pki.server_key)
            .arg("--tls-ca")
            .arg(&pki.ca)
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
    let http = https_client(&pki);
    let local = reqwest::Client::new();
    wait_for("the in-process gateway", &cp, async || {
        local
            .get(format!("http://127.0.0.1:{gw_port}/nowhere"))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 404)
    })
    .await;
    assert!(cp.log().contains(&format!(
        "Fenfa control plane on https://127.0.0.1:{admin_port}"
    )));
    let r = local
        .get(format!("http://127.0.0.1:{gw_port}/nowhere"))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let aud = login(&http, &admin, "auditor", AUDIT_PW, AUDIT_TOTP).await;
    wait_for(
        "the local gateway's record, shipped over https",
        &cp,
        async || {
            let v: Value = get_json(
                &http,
                format!("{admin}/v1/audit/requests?request_id={id}"),
                &aud,
            )
            .await;
            v["items"]
                .as_array()
                .is_some_and(|i| i.len() == 1 && i[0]["token_node"] == "local-gateway")
        },
    )
    .await;
}
