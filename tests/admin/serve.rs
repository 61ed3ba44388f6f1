//! The real binaries: `fenfa-admin serve --demo` (control plane + in-process gateway + echo
//! upstream) prints a curl that works, a change is live on its gateway within a second, and a
//! separate `fenfa-gateway --control-plane` process follows it within a second too, and keeps
//! serving when the control plane is gone; the in-process gateway's request audit arrives in the
//! control plane.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fenfa_admin::totp;
use serde_json::{json, Value};

use crate::harness::*;

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
pub(crate) struct Proc(pub(crate) Child, PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// `Some(success)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<bool> {
        self.0.try_wait().ok().flatten().map(|st| st.success())
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

pub(crate) fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn");
    Proc(child, log.to_path_buf())
}

/// The `fenfa-gateway` binary of this build (built on demand when only the admin tests run).
pub(crate) fn gateway_bin() -> PathBuf {
    let admin = PathBuf::from(env!("CARGO_BIN_EXE_fenfa-admin"));
    let gw = admin.with_file_name("fenfa-gateway");
    if !gw.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "fenfa-gateway", "--bin", "fenfa-gateway"])
            .status()
            .expect("cargo build fenfa-gateway");
        assert!(st.success());
    }
    gw
}

pub(crate) async fn wait_for(what: &str, proc: &Proc, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen in time; log:\n{}", proc.log());
}

pub(crate) async fn status_of(http: &reqwest::Client, url: &str, token: &str) -> u16 {
    match http.get(url).bearer_auth(token).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// How long until `url` answers 200 (polling every 20 ms, for at most 5 s).
async fn time_to_live(http: &reqwest::Client, url: &str, token: &str) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if status_of(http, url, token).await == 200 {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never went live");
}

pub(crate) async fn login(
    http: &reqwest::Client,
    admin: &str,
    user: &str,
    pw: &str,
    secret: &str,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let code = totp::current(&totp::base32_decode(secret).unwrap(), now);
    let v: Value = http
        .post(format!("{admin}/v1/auth/login"))
        .json(&json!({"username": user, "password": pw, "totp": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login {user}: {v}"))
        .to_string()
}

/// The demo client's token and URL, from the curl line `serve --demo` prints.
pub(crate) async fn demo_curl(cp: &Proc) -> (String, String) {
    let mut curl = String::new();
    wait_for("the demo curl line", cp, async || {
        curl = cp
            .log()
            .lines()
            .find(|l| l.contains("curl -i"))
            .unwrap_or("")
            .to_string();
        !curl.is_empty()
    })
    .await;
    let token = curl
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let url = curl.rsplit(' ').next().unwrap().to_string();
    (token, url)
}

/// Registers a gateway node as the security admin; its token.
pub(crate) async fn register_node(
    http: &reqwest::Client,
    admin: &str,
    sec: &str,
    name: &str,
) -> String {
    post(
        http,
        format!("{admin}/v1/nodes"),
        sec,
        json!({"name": name}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `GET url` with a bearer token, as JSON.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: &str,
) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The id of the first service the control plane lists (the demo's).
pub(crate) async fn first_service(http: &reqwest::Client, admin: &str, token: &str) -> String {
    let services: Value = get_json(http, format!("{admin}/v1/services"), token).await;
    services["items"][0]["id"].as_str().unwrap().to_string()
}

/// A remote gateway's base file with its own listeners (`extra`: more YAML, at the top level).
pub(crate) fn write_edge_base(path: &Path, http_port: u16, status_port: u16, extra: &str) {
    std::fs::write(
        path,
        format!(
            "listeners:\n  http: \"127.0.0.1:{http_port}\"\n  status: \"127.0.0.1:{status_port}\"\n{extra}"
        ),
    )
    .unwrap();
}

pub(crate) async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let r = http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{url}");
    r.json().await.unwrap()
}

/// `fenfa-admin serve --demo` on free ports with the harness's accounts, its demo call live.
pub(crate) struct Demo {
    pub cp: Proc,
    /// `http://127.0.0.1:<port>` of the control plane.
    pub admin: String,
    /// `http://127.0.0.1:<port>` of the in-process gateway.
    pub gw: String,
    /// The demo client's token and URL.
    pub token: String,
    pub url: String,
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

pub(crate) async fn start_demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, gw_port, status_port, echo_port) =
        (free_port(), free_port(), free_port(), free_port());
    let data = dir.path().join("data");
    let cp = spawn(
        Command::new(env!("CARGO_BIN_EXE_fenfa-admin"))
            .arg("serve")
            .arg("--demo")
            .args(["--listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--data-dir")
            .arg(&data)
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
    let (token, url) = demo_curl(&cp).await;
    let http = reqwest::Client::new();
    wait_for("the demo call", &cp, async || {
        status_of(&http, &url, &token).await == 200
    })
    .await;
    Demo {
        cp,
        admin: format!("http://127.0.0.1:{admin_port}"),
        gw: format!("http://127.0.0.1:{gw_port}"),
        token,
        url,
        data,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_prints_a_working_curl_and_changes_go_live_within_a_second() {
    let demo = start_demo().await;
    let dir = tempfile::tempdir().unwrap();
    let (admin, token, url, cp) = (
        demo.admin.clone(),
        demo.token.clone(),
        demo.url.clone(),
        demo.cp,
    );
    assert_eq!(url, format!("{}/demo/hello", demo.gw));
    let http = reqwest::Client::new();
    let echo: Value = get_json(&http, &url, &token).await;
    assert_eq!(echo["headers"]["x-fenfa-app"], "wx-demo-app");
    assert_eq!(echo["headers"]["x-fenfa-channel"], "wechat");
    assert_eq!(echo["path"], "/hello");
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the backend never sees the token"
    );
    assert_eq!(status_of(&http, &url, "not-a-token").await, 401);

    // The in-process gateway ships its request audit to the control plane.
    let aud = login(&http, &admin, "auditor", AUDIT_PW, AUDIT_TOTP).await;
    wait_for("the demo call in the request audit", &cp, async || {
        let v: Value = get_json(
            &http,
            format!("{admin}/v1/audit/requests?service=demo-echo&status=200"),
            &aud,
        )
        .await;
        v["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;

    // A change is live on the in-process gateway within a second.
    let sys = login(&http, &admin, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let svc = first_service(&http, &admin, &sys).await;
    post(
        &http,
        format!("{admin}/v1/routes"),
        &sys,
        json!({"service_id": svc, "name": "demo-two", "paths": ["/two/*"], "strip_prefix": true}),
    )
    .await;
    let took = time_to_live(&http, &format!("{}/two/x", demo.gw), &token).await;
    assert!(
        took < Duration::from_secs(1),
        "in-process gateway took {took:?}"
    );

    // A separate gateway process follows the control plane.
    let sec = login(&http, &admin, "security", SECURITY_PW, SECURITY_TOTP).await;
    let node = register_node(&http, &admin, &sec, "edge-1").await;
    let (gw2_port, gw2_status) = (free_port(), free_port());
    let base = dir.path().join("edge.yaml");
    write_edge_base(&base, gw2_port, gw2_status, "");
    let edge_args = |cmd: &mut Command| {
        cmd.args(["--control-plane", &admin])
            .args(["--node-token", &node])
            .arg("--config")
            .arg(&base)
            .arg("--data-dir")
            .arg(dir.path().join("edge"))
            .env("FENFA_LOG", "info");
    };
    let mut cmd = Command::new(gateway_bin());
    edge_args(&mut cmd);
    let edge = spawn(&mut cmd, &dir.path().join("edge.log"));
    let edge_url = |p: &str| format!("http://127.0.0.1:{gw2_port}{p}");
    wait_for("the edge gateway", &edge, async || {
        status_of(&http, &edge_url("/demo/hello"), &token).await == 200
    })
    .await;
    post(&http, format!("{admin}/v1/routes"), &sys, json!({"service_id": svc, "name": "demo-three", "paths": ["/three/*"], "strip_prefix": true})).await;
    let took = time_to_live(&http, &edge_url("/three/x"), &token).await;
    assert!(
        took < Duration::from_secs(1),
        "separate gateway took {took:?}; log:\n{}",
        edge.log()
    );

    // The control plane goes away (and with it the demo echo upstream it hosts): the edge keeps
    // its config — the route still matches and is proxied, so the answer is the upstream's
    // absence (502), not an unknown route (404) — also across its own restart.
    drop(cp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let code = |v: Value| v["error"]["code"].as_str().unwrap_or("").to_string();
    let r = http
        .get(edge_url("/three/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(code(r.json().await.unwrap()), "upstream_error");
    drop(edge);
    let mut cmd = Command::new(gateway_bin());
    edge_args(&mut cmd);
    let edge = spawn(&mut cmd, &dir.path().join("edge2.log"));
    wait_for(
        "the restarted edge on its last good config",
        &edge,
        async || status_of(&http, &edge_url("/three/x"), &token).await == 502,
    )
    .await;
    let r = http
        .get(edge_url("/nowhere"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r.json().await.unwrap()), "route_not_found");
}
