//! The real `fenfa-admin` binary on its data dir and on a shared PostgreSQL: files holding
//! secrets are private (and made so at start), the in-process gateway is the node
//! `local-gateway` everywhere, the first-start accounts take the names given at install, a
//! process whose master key does not match the database refuses to start, and a process's
//! in-process gateway follows commits made through another process. Faults: three gateway
//! processes on two control-plane processes take a change made through either within 2 s, and
//! the loss of one gateway (SIGKILL, under load) costs the others nothing; with PostgreSQL cut
//! off the gateways keep serving, the API answers 503, and everything recovers by itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::*;
use crate::serve::{
    demo_curl, first_service, free_port, gateway_bin, get_json, login, post, register_node, spawn,
    status_of, wait_for, write_edge_base, Proc,
};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

struct Ports {
    admin: u16,
    gw: u16,
    status: u16,
    echo: u16,
}

fn serve_cmd(data: &Path, p: &Ports, demo: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fenfa-admin"));
    c.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", p.admin)])
        .arg("--data-dir")
        .arg(data)
        .args(["--gateway-http", &format!("127.0.0.1:{}", p.gw)])
        .args(["--gateway-status", &format!("127.0.0.1:{}", p.status)])
        .args(["--demo-upstream", &format!("127.0.0.1:{}", p.echo)])
        .env("FENFA_ADMIN_PASSWORD", ADMIN_PW)
        .env("FENFA_ADMIN_TOTP_SECRET", ADMIN_TOTP)
        .env("FENFA_SECURITY_PASSWORD", SECURITY_PW)
        .env("FENFA_SECURITY_TOTP_SECRET", SECURITY_TOTP)
        .env("FENFA_AUDIT_PASSWORD", AUDIT_PW)
        .env("FENFA_AUDIT_TOTP_SECRET", AUDIT_TOTP)
        .env_remove("FENFA_MASTER_KEY")
        .env_remove("FENFA_DATABASE_URL")
        .env("FENFA_LOG", "info");
    if demo {
        c.arg("--demo");
    }
    c
}

fn ports() -> Ports {
    Ports {
        admin: free_port(),
        gw: free_port(),
        status: free_port(),
        echo: free_port(),
    }
}

/// The demo client token from the printed curl line.
async fn demo_token(cp: &Proc) -> String {
    demo_curl(cp).await.0
}

/// A schema of its own in the test database (`prefix_<random>`), and a connection to drop it.
async fn fresh_schema(base: &str, prefix: &str) -> (sqlx::AnyConnection, String) {
    let schema = format!(
        "{prefix}_{}",
        fenfa_admin::crypto::hex(&fenfa_admin::crypto::random_array::<6>())
    );
    fenfa_admin::store::install_drivers();
    let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(base)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut c)
        .await
        .unwrap();
    (c, schema)
}

/// `url` with `schema` as its search path.
fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]={schema}")
}

async fn drop_schema(c: &mut sqlx::AnyConnection, schema: &str) {
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(c)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_secrets_private_and_its_gateway_is_local_gateway_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gw_dir = data.join("gateway");
    // An install made before: a world-readable data dir, master key and gateway audit key.
    std::fs::create_dir_all(&gw_dir).unwrap();
    set_mode(&data, 0o755);
    set_mode(&gw_dir, 0o755);
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    std::fs::write(data.join("master.key"), key).unwrap();
    std::fs::write(gw_dir.join("audit.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    set_mode(&data.join("master.key"), 0o644);
    set_mode(&gw_dir.join("audit.key"), 0o644);
    let p = ports();
    let admin = format!("http://127.0.0.1:{}", p.admin);
    let cp = spawn(
        &mut serve_cmd(&data, &p, true),
        &dir.path().join("admin.log"),
    );
    let token = demo_token(&cp).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/demo/hello", p.gw);
    wait_for("the demo call", &cp, async || {
        status_of(&http, &url, &token).await == 200
    })
    .await;
    let sys = login(&http, &admin, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let nodes: Value = get_json(&http, format!("{admin}/v1/nodes"), &sys).await;
    assert!(
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "local-gateway"),
        "{nodes}"
    );
    let status: Value = http
        .get(format!("http://127.0.0.1:{}/status", p.status))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["node"], "local-gateway", "{status}");
    // Its request audit is found under that name.
    let aud = login(&http, &admin, "auditor", AUDIT_PW, AUDIT_TOTP).await;
    wait_for("the demo call under ?node=local-gateway", &cp, async || {
        let v: Value = get_json(
            &http,
            format!("{admin}/v1/audit/requests?node=local-gateway"),
            &aud,
        )
        .await;
        v["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    wait_for("the last good config", &cp, async || {
        gw_dir.join("last-good.yaml").exists()
    })
    .await;
    for (path, want) in [
        (data.clone(), 0o700),
        (gw_dir.clone(), 0o700),
        (data.join("fenfa-admin.db"), 0o600),
        (data.join("master.key"), 0o600),
        (data.join("gateway.yaml"), 0o600),
        (data.join("local-node.token"), 0o600),
        (gw_dir.join("last-good.yaml"), 0o600),
        (gw_dir.join("audit.key"), 0o600),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    for wal in ["fenfa-admin.db-wal", "fenfa-admin.db-shm"] {
        let f = data.join(wal);
        if f.exists() {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_names_the_first_start_accounts_as_told_at_install() {
    let dir = tempfile::tempdir().unwrap();
    let p = ports();
    let admin = format!("http://127.0.0.1:{}", p.admin);
    let mut cmd = serve_cmd(&dir.path().join("data"), &p, false);
    cmd.arg("--no-gateway")
        .args(["--admin-username", "ops-chief"])
        .env("FENFA_AUDIT_USERNAME", "audit-chief");
    let cp = spawn(&mut cmd, &dir.path().join("admin.log"));
    let http = reqwest::Client::new();
    wait_for("the control plane", &cp, async || {
        http.get(format!("{admin}/healthz")).send().await.is_ok()
    })
    .await;
    let sys = login(&http, &admin, "ops-chief", ADMIN_PW, ADMIN_TOTP).await;
    let users: Value = get_json(&http, format!("{admin}/v1/users"), &sys).await;
    let mut names: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["audit-chief", "ops-chief", "security"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_share_the_key_and_follow_each_others_commits() {
    let Some(base) = postgres_url() else {
        return;
    };
    let (mut c, schema) = fresh_schema(&base, "fenfa_c").await;
    let db = in_schema(&base, &schema);
    let dir = tempfile::tempdir().unwrap();
    let key_b = "11".repeat(32);

    let p1 = ports();
    let admin1 = format!("http://127.0.0.1:{}", p1.admin);
    let mut cmd = serve_cmd(&dir.path().join("one"), &p1, true);
    cmd.args(["--database", &db])
        .env("FENFA_MASTER_KEY", MASTER_KEY);
    let one = spawn(&mut cmd, &dir.path().join("one.log"));
    let token = demo_token(&one).await;

    // Another key: a clear refusal to start, not a healthy process that answers 500.
    let p2 = ports();
    let mut cmd = serve_cmd(&dir.path().join("two"), &p2, false);
    cmd.args(["--database", &db])
        .env("FENFA_MASTER_KEY", &key_b);
    let mut two = spawn(&mut cmd, &dir.path().join("two.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = None;
    while exited.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        exited = two.exited();
    }
    let text = two.log();
    assert_eq!(exited, Some(false), "it must fail: {text}");
    assert!(text.contains("master key does not match"), "{text}");

    // The same key: a second process whose in-process gateway follows the first's commits.
    let p3 = ports();
    let mut cmd = serve_cmd(&dir.path().join("three"), &p3, false);
    cmd.args(["--database", &db])
        .env("FENFA_MASTER_KEY", MASTER_KEY);
    let three = spawn(&mut cmd, &dir.path().join("three.log"));
    let http = reqwest::Client::new();
    let gw3 = |path: &str| format!("http://127.0.0.1:{}{path}", p3.gw);
    wait_for("the second process's gateway", &three, async || {
        status_of(&http, &gw3("/demo/hello"), &token).await == 200
    })
    .await;
    let sys = login(&http, &admin1, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let svc = first_service(&http, &admin1, &sys).await;
    post(
        &http,
        format!("{admin1}/v1/routes"),
        &sys,
        json!({"service_id": svc, "name": "cluster-route", "paths": ["/cluster/*"], "strip_prefix": true}),
    )
    .await;
    let t = Instant::now();
    while status_of(&http, &gw3("/cluster/x"), &token).await != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the second process's gateway never took the commit; log:\n{}",
            three.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(three);
    drop(one);
    drop_schema(&mut c, &schema).await;
}

/// A TCP relay to PostgreSQL that the test can cut (every open connection dropped, new ones
/// closed at once) and heal: the network between a control plane and its database failing.
struct Relay {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(to: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue; // dropped: closed at once
                }
                let mut watch = watch.clone();
                let to = to.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }
}

/// What a request with `token` gets from `url`: the status and the JSON error code, if any.
async fn status_and_code(http: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    match http.get(url).bearer_auth(token).send().await {
        Ok(r) => {
            let st = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (st, v["error"]["code"].as_str().unwrap_or("").to_string())
        }
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_leaves_the_gateway_serving_answers_503_and_heals_by_itself() {
    let Some(base) = postgres_url() else {
        return;
    };
    let (mut c, schema) = fresh_schema(&base, "fenfa_o").await;
    // The control plane reaches PostgreSQL only through the relay.
    let mut url = reqwest::Url::parse(&base).unwrap();
    let pg = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let relay = Relay::start(pg).await;
    url.set_port(Some(relay.addr.port())).unwrap();
    let db = in_schema(url.as_str(), &schema);

    let dir = tempfile::tempdir().unwrap();
    let p = ports();
    let admin = format!("http://127.0.0.1:{}", p.admin);
    let mut cmd = serve_cmd(&dir.path().join("cp"), &p, true);
    cmd.args(["--database", &db])
        .env("FENFA_MASTER_KEY", MASTER_KEY);
    let cp = spawn(&mut cmd, &dir.path().join("cp.log"));
    let token = demo_token(&cp).await;
    let http = reqwest::Client::new();
    let gw = |path: &str| format!("http://127.0.0.1:{}{path}", p.gw);
    wait_for("the gateway", &cp, async || {
        status_of(&http, &gw("/demo/hello"), &token).await == 200
    })
    .await;
    let sys = login(&http, &admin, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let svc = first_service(&http, &admin, &sys).await;

    relay.cut();
    // The gateway keeps serving its last good config: every request succeeds.
    let mut failed = 0;
    for _ in 0..50 {
        if status_of(&http, &gw("/demo/hello"), &token).await != 200 {
            failed += 1;
        }
    }
    eprintln!("database cut: {failed} of 50 proxied requests failed");
    assert_eq!(failed, 0, "the gateway must not depend on the database");
    // The API answers 503 with a code that says why (within the pool's 5 s wait, plus slack).
    let t = Instant::now();
    let (st, code) = status_and_code(&http, &format!("{admin}/v1/services"), &sys).await;
    assert_eq!(
        (st, code.as_str()),
        (503, "database_unavailable"),
        "log:\n{}",
        cp.log()
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let (st, code) = status_and_code(&http, &format!("{admin}/healthz"), "").await;
    assert_eq!((st, code.as_str()), (503, "database_unavailable"));

    relay.heal();
    // Both recover by themselves: a commit goes through, and the gateway takes it.
    let t = Instant::now();
    loop {
        let r = http
            .post(format!("{admin}/v1/routes"))
            .bearer_auth(&sys)
            .json(&json!({"service_id": svc, "name": "after-outage", "paths": ["/after/*"], "strip_prefix": true}))
            .send()
            .await;
        match r.map(|r| r.status().as_u16()) {
            Ok(201) => break,
            Ok(503) | Err(_) => {}
            Ok(other) => panic!(
                "a commit after the outage answered {other}; log:\n{}",
                cp.log()
            ),
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the control plane did not recover; log:\n{}",
            cp.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t = Instant::now();
    while status_of(&http, &gw("/after/x"), &token).await != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the gateway never took the commit made after the outage; log:\n{}",
            cp.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(cp);
    drop_schema(&mut c, &schema).await;
}

/// Polls every URL until each answers 200; how long each took from `from`.
async fn live_times(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    from: Instant,
) -> Vec<Duration> {
    let mut took: Vec<Option<Duration>> = vec![None; urls.len()];
    while took.iter().any(Option::is_none) {
        assert!(
            from.elapsed() < Duration::from_secs(20),
            "never live: {:?}",
            urls.iter()
                .zip(&took)
                .filter(|(_, t)| t.is_none())
                .map(|(u, _)| u)
                .collect::<Vec<_>>()
        );
        for (url, t) in urls.iter().zip(took.iter_mut()) {
            if t.is_none() && status_of(http, url, token).await == 200 {
                *t = Some(from.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_two_control_planes_follow_either_and_survive_losing_one() {
    let Some(base) = postgres_url() else {
        return;
    };
    let (mut c, schema) = fresh_schema(&base, "fenfa_t").await;
    let db = in_schema(&base, &schema);
    let dir = tempfile::tempdir().unwrap();

    // Control plane A hosts the demo (and its echo upstream); B shares the database and key.
    let (pa, pb) = (ports(), ports());
    let (admin_a, admin_b) = (
        format!("http://127.0.0.1:{}", pa.admin),
        format!("http://127.0.0.1:{}", pb.admin),
    );
    let mut cmd = serve_cmd(&dir.path().join("a"), &pa, true);
    cmd.args(["--database", &db])
        .env("FENFA_MASTER_KEY", MASTER_KEY);
    let cp_a = spawn(&mut cmd, &dir.path().join("a.log"));
    let token = demo_token(&cp_a).await;
    let mut cmd = serve_cmd(&dir.path().join("b"), &pb, false);
    cmd.args(["--database", &db])
        .env("FENFA_MASTER_KEY", MASTER_KEY);
    let cp_b = spawn(&mut cmd, &dir.path().join("b.log"));
    let http = reqwest::Client::new();
    wait_for("control plane B", &cp_b, async || {
        status_of(&http, &format!("{admin_b}/healthz"), "").await == 200
    })
    .await;

    // Three gateway processes: two follow A, one follows B.
    let sec = login(&http, &admin_a, "security", SECURITY_PW, SECURITY_TOTP).await;
    let mut gateways = Vec::new();
    let mut urls = Vec::new();
    for (i, cp) in [&admin_a, &admin_a, &admin_b].into_iter().enumerate() {
        let node = register_node(&http, &admin_a, &sec, &format!("node-{i}")).await;
        let (port, status) = (free_port(), free_port());
        let conf = dir.path().join(format!("node-{i}.yaml"));
        write_edge_base(&conf, port, status, "");
        let mut cmd = Command::new(gateway_bin());
        cmd.args(["--control-plane", cp])
            .args(["--node-token", &node])
            .arg("--config")
            .arg(&conf)
            .arg("--data-dir")
            .arg(dir.path().join(format!("node-{i}")))
            .env("FENFA_LOG", "info");
        gateways.push(spawn(&mut cmd, &dir.path().join(format!("node-{i}.log"))));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    for (g, url) in gateways.iter().zip(&urls) {
        wait_for("a gateway node", g, async || {
            status_of(&http, &format!("{url}/demo/hello"), &token).await == 200
        })
        .await;
    }

    // A change through either control plane reaches every gateway within 2 s.
    // One sign-in (a TOTP code is good once): sessions live in the shared database, so the
    // token works on both control planes.
    let sys = login(&http, &admin_a, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let svc = first_service(&http, &admin_a, &sys).await;
    for (name, admin) in [("via-a", &admin_a), ("via-b", &admin_b)] {
        post(
            &http,
            format!("{admin}/v1/routes"),
            &sys,
            json!({"service_id": svc, "name": name, "paths": [format!("/{name}/*")], "strip_prefix": true}),
        )
        .await;
        let committed = Instant::now();
        let targets: Vec<String> = urls.iter().map(|u| format!("{u}/{name}/x")).collect();
        let took = live_times(&http, &targets, &token, committed).await;
        eprintln!("change {name}: live on the three gateways after {took:?}");
        for (t, g) in took.iter().zip(&gateways) {
            assert!(
                *t < Duration::from_secs(2),
                "{name} took {t:?} on a gateway; log:\n{}",
                g.log()
            );
        }
    }

    // Under load on gateways 2 and 3, gateway 1 is killed: they do not notice.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for url in &urls[1..] {
        for _ in 0..2 {
            let (http, url, token, stop) = (
                http.clone(),
                format!("{url}/demo/hello"),
                token.clone(),
                stop.clone(),
            );
            load.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if status_of(&http, &url, &token).await == 200 {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = gateways.remove(0);
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in load {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }
    eprintln!("gateway 1 killed under load: the other two answered {ok} requests, {failed} failed");
    assert!(ok > 0, "no load reached the other gateways");
    assert_eq!(failed, 0, "the other gateways must not notice");
    assert_ne!(
        status_of(&http, &format!("{}/demo/hello", urls[0]), &token).await,
        200,
        "gateway 1 is gone"
    );

    drop(gateways);
    drop(cp_b);
    drop(cp_a);
    drop_schema(&mut c, &schema).await;
}
