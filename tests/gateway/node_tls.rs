//! Encrypted node traffic from the gateway's side: OTLP export over https trusting a test CA
//! (with a client certificate the collector requires), and the transport rule: plain `http://`
//! to a host that is not loopback is refused at start, before any connection, unless the config
//! says `insecure: true`, which is logged as a warning. No test here connects to anything but
//! loopback; `control-plane.invalid` never resolves (RFC 6761).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::otlp::OtlpReceiver;
use crate::support::pki::Pki;
use crate::support::{client, free_port, Gateway, Upstream};

fn config(up: std::net::SocketAddr, audit: &str) -> String {
    format!(
        "services:\n  - name: a\n    upstream:\n      targets: [{{ addr: \"{up}\" }}]\nroutes:\n  - name: a\n    service: a\n    paths: [\"/*\"]\n{audit}"
    )
}

fn wait_for(what: &str, gw: &Gateway, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen; log:\n{}",
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `fenfa-gateway ARGS` until it exits (it must, within 20 s): (success, its output).
fn run_to_exit(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("FENFA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (out.status.success(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "fenfa-gateway {args:?} kept running; output:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_export_over_https_trusting_the_test_ca_with_a_client_certificate() {
    let pki = Pki::new("otlp");
    let up = Upstream::start("a");
    // The collector serves the test certificate and requires a client certificate of the CA.
    let otlp =
        OtlpReceiver::start_tls(0, &pki.server_cert, &pki.server_key, Some(pki.ca.as_path()));
    assert!(otlp.url().starts_with("https://localhost:"));
    let audit = format!(
        "gateway:\n  node: gw-tls-1\naudit:\n  otlp:\n    url: \"{}\"\n    batch_records: 2\n    interval: 50ms\n    backoff_max: 200ms\n    tls:\n      ca: \"{}\"\n      client_cert: \"{}\"\n      client_key: \"{}\"\n",
        otlp.url(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let gw = Gateway::start(&config(up.addr, &audit));
    let http = client();
    let mut sent = BTreeSet::new();
    for i in 0..3 {
        let r = http.get(gw.url(&format!("/x/{i}"))).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        sent.insert(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    let exported = || {
        otlp.received()
            .iter()
            .filter_map(|r| {
                r["record"]["attributes"]
                    .as_array()?
                    .iter()
                    .find(|a| a["key"] == "fenfa.request_id")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .map(String::from)
            })
            .collect::<BTreeSet<_>>()
    };
    wait_for("3 records exported over https", &gw, || exported() == sent);
    assert_eq!(gw.metric("fenfa_audit_export_failures_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_to_a_server_the_ca_did_not_sign_fails_and_says_why() {
    let (pki, other) = (Pki::new("otlp"), Pki::new("other"));
    let up = Upstream::start("a");
    let otlp = OtlpReceiver::start_tls(0, &pki.server_cert, &pki.server_key, None);
    let audit = format!(
        "audit:\n  otlp:\n    url: \"{}\"\n    interval: 50ms\n    backoff_max: 200ms\n    tls:\n      ca: \"{}\"\n",
        otlp.url(),
        other.ca.display()
    );
    let gw = Gateway::start(&config(up.addr, &audit));
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_for("the refused certificate in the log", &gw, || {
        gw.logs()
            .contains("certificate verify failed: UnknownIssuer")
    });
    assert!(gw.metric("fenfa_audit_export_failures_total").unwrap() >= 1.0);
    assert!(otlp.received().is_empty(), "nothing reached the collector");
}

#[test]
fn a_plain_http_ship_url_off_loopback_stops_the_start_and_insecure_allows_it_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start("a");
    let listeners = format!(
        "listeners:\n  http: \"127.0.0.1:{}\"\n  status: \"127.0.0.1:{}\"\n",
        free_port(),
        free_port()
    );
    let ship = "audit:\n  ship:\n    url: \"http://control-plane.invalid:9180/v1/dataplane/audit\"\n    token: \"fn_secret_node_token\"\n";
    let file = dir.path().join("fenfa.yaml");
    std::fs::write(&file, format!("{listeners}{}", config(up.addr, ship))).unwrap();
    let (ok, out) = run_to_exit(&["--config", file.to_str().unwrap()], dir.path());
    assert!(!ok, "{out}");
    assert!(
        out.contains("audit.ship.url: plain http:// to `control-plane.invalid` is refused"),
        "{out}"
    );
    assert!(!out.contains("fn_secret_node_token"), "{out}");
    // `check` refuses it the same way, with the field.
    let (ok, out) = run_to_exit(&["check", "--config", file.to_str().unwrap()], dir.path());
    assert!(
        !ok && out.contains("audit.ship.url: plain http://"),
        "{out}"
    );

    // With `insecure: true` the gateway starts and says, loudly, what it allows.
    let mut gw = Gateway::start(&config(
        up.addr,
        &format!("{ship}    insecure: true\n    interval: 50ms\n"),
    ));
    wait_for("the insecure warning", &gw, || {
        gw.logs()
            .contains("INSECURE: plain http:// to a host that is not loopback")
    });
    // … at every start.
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    gw.wait_exit(Duration::from_secs(20));
    let before = gw.logs().matches("INSECURE").count();
    gw.spawn();
    gw.wait_ready();
    wait_for("the warning again after a restart", &gw, || {
        gw.logs().matches("INSECURE").count() > before
    });
}

#[test]
fn a_plain_http_control_plane_off_loopback_is_refused_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_to_exit(
        &[
            "--control-plane",
            "http://control-plane.invalid:9180",
            "--node-token",
            "fn_secret_node_token",
        ],
        dir.path(),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("--control-plane: plain http:// to `control-plane.invalid` is refused")
            && out.contains("--control-plane-insecure"),
        "{out}"
    );
    assert!(
        !out.contains("cannot connect") && !out.contains("lookup"),
        "refused before any name look-up or connection: {out}"
    );
    assert!(!out.contains("fn_secret_node_token"), "{out}");
    // A CA file that cannot be read is named by its flag, also before any connection.
    let (ok, out) = run_to_exit(
        &[
            "--control-plane",
            "https://control-plane.invalid:9180",
            "--node-token",
            "t",
            "--control-plane-ca",
            "/nonexistent/ca.pem",
        ],
        dir.path(),
    );
    assert!(
        !ok && out.contains("--control-plane-ca: cannot read `/nonexistent/ca.pem`"),
        "{out}"
    );
}
