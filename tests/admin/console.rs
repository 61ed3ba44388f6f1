//! The web console (docs/console.md) in real headless Chromium, driven over WebDriver
//! (chromedriver), against the real `fenfa-admin serve --demo`: sign-in with TOTP; an agency
//! operator registers and submits a service; a system admin verifies it and publishes it on two
//! channels; a request through the gateway then succeeds; an auditor finds that request in the
//! audit search and cannot open configuration pages; a change posted from another origin is
//! refused. Every page is checked for console errors and for requests leaving 127.0.0.1, and
//! screenshotted at 1366×768 and at 390 px wide under `target/console-screenshots/`.
//!
//! One browser session for the whole test. Outside CI, a machine without `chromium` and
//! `chromedriver` skips it loudly; in CI it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::*;
use crate::serve::*;

fn browser_present() -> bool {
    let have = |b: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("chromium") && have("chromedriver") {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but chromium or chromedriver is missing (apt-get install chromium chromium-driver)");
    }
    eprintln!("\n!!! SKIPPING the console browser test: chromium or chromedriver is missing (apt-get install chromium chromium-driver)\n");
    false
}

fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let d = target.join("console-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The browser, its driver, and what every page must satisfy.
struct Browser {
    c: Client,
    driver: String,
    session: String,
    http: reqwest::Client,
    /// Pages visited: name → path, for the phone-width pass.
    visited: Vec<(String, String)>,
    base: String,
}

impl Browser {
    async fn open(path: &str, b: &mut Browser) {
        b.c.goto(&format!("{}{path}", b.base)).await.unwrap();
    }

    /// Forgets the browser's messages so far (after a page that is meant to be an error).
    async fn drain_logs(&self) {
        self.http
            .post(format!("{}/session/{}/se/log", self.driver, self.session))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap();
    }

    /// Checks the page just loaded — no console error, nothing requested outside 127.0.0.1 —
    /// and screenshots it.
    async fn check(&mut self, name: &str) {
        let logs: Value = self
            .http
            .post(format!("{}/session/{}/se/log", self.driver, self.session))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let severe: Vec<&Value> = logs["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .collect();
        assert!(severe.is_empty(), "{name}: console messages {severe:?}");
        let urls = self
            .c
            .execute(
                "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));",
                vec![],
            )
            .await
            .unwrap();
        for u in urls.as_array().unwrap() {
            let u = u.as_str().unwrap();
            assert!(
                u.starts_with("http://127.0.0.1:") || u.starts_with("data:"),
                "{name}: a request left 127.0.0.1: {u}"
            );
        }
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(shots_dir().join(format!("{name}-1366.png")), png).unwrap();
        let path = self.c.current_url().await.unwrap();
        let path =
            path.path().to_string() + &path.query().map(|q| format!("?{q}")).unwrap_or_default();
        if !self.visited.iter().any(|(n, _)| n == name) {
            self.visited.push((name.to_string(), path));
        }
    }

    /// The text of `css`, waiting up to 10 s for it to be there.
    async fn text(&self, css: &str) -> String {
        let e = self
            .c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await;
        let e = match e {
            Ok(e) => e,
            Err(e) => panic!(
                "{css}: {e}; page:\n{}",
                self.c.source().await.unwrap_or_default()
            ),
        };
        e.text().await.unwrap()
    }

    /// Waits up to 10 s for an element matching `css` to read `want` (after a click that reloads
    /// the same page).
    async fn wait_text(&self, css: &str, want: &str) {
        let t = Instant::now();
        loop {
            if let Ok(all) = self.c.find_all(Locator::Css(css)).await {
                for e in all {
                    if e.text().await.is_ok_and(|x| x == want) {
                        return;
                    }
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{css} never read {want}: {}",
                self.c.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, id: &str, value: &str) {
        let e = self
            .c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"));
        e.clear().await.ok();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, id: &str) {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn sign_in(&mut self, user: &str, pw: &str, totp_secret: Option<&str>) {
        Browser::open("/console/login", self).await;
        self.fill("username", user).await;
        self.fill("password", pw).await;
        if let Some(s) = totp_secret {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let code =
                fenfa_admin::totp::current(&fenfa_admin::totp::base32_decode(s).unwrap(), now);
            self.fill("totp", &code).await;
        }
        self.click("sign-in").await;
        let who = self.text("header .who").await;
        assert!(who.contains(user), "signed in as {who}");
    }

    /// The session cookie's value (the API session token).
    async fn session_token(&self) -> String {
        self.c
            .get_named_cookie("fenfa_console")
            .await
            .unwrap()
            .value()
            .to_string()
    }

    /// Chooses the option of `value` in the select `#id`.
    async fn choose(&self, id: &str, value: &str) {
        self.c
            .find(Locator::Css(&format!("#{id} option[value='{value}']")))
            .await
            .unwrap_or_else(|e| panic!("#{id} = {value}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Puts back a session (the cookie, through the WebDriver endpoint itself).
    async fn use_session(&self, token: &str) {
        self.c.delete_all_cookies().await.unwrap();
        let r = self
            .http
            .post(format!("{}/session/{}/cookie", self.driver, self.session))
            .json(
                &json!({"cookie": {"name": "fenfa_console", "value": token, "path": "/console",
                                     "httpOnly": true, "sameSite": "Strict"}}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_security_staff_and_auditors_work_in_the_console() {
    if !browser_present() {
        return;
    }
    // fantoccini's HTTPS support needs a process-wide rustls provider (chromedriver itself is
    // plain HTTP on loopback).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let demo = start_demo().await;
    let driver_port = free_port();
    let _driver = spawn(
        Command::new("chromedriver").arg(format!("--port={driver_port}")),
        &demo.data.join("chromedriver.log"),
    );
    let driver = format!("http://127.0.0.1:{driver_port}");
    let http = reqwest::Client::new();
    let t = Instant::now();
    while http.get(format!("{driver}/status")).send().await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1366,768", "--lang=zh-CN", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update"],
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    }))
    .unwrap();
    let c = ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&driver)
        .await
        .expect("a chromedriver session");
    let session = c.session_id().await.unwrap().unwrap().to_string();
    let mut b = Browser {
        c,
        driver,
        session,
        http: http.clone(),
        visited: Vec::new(),
        base: demo.admin.clone(),
    };
    c_size(&b, 1366, 768).await;
    eprintln!(
        "console at {} -> {:?}",
        b.base,
        http.get(format!("{}/console/login", b.base))
            .send()
            .await
            .map(|r| r.status())
    );

    // Sign-in with password and TOTP; a wrong code is refused.
    Browser::open("/console/login", &mut b).await;
    b.check("login").await;
    b.fill("username", "admin").await;
    b.fill("password", ADMIN_PW).await;
    b.fill("totp", "000000").await;
    b.click("sign-in").await;
    assert!(
        b.text("#flash").await.contains("wrong"),
        "a wrong code is refused"
    );
    b.drain_logs().await;
    b.sign_in("admin", ADMIN_PW, Some(ADMIN_TOTP)).await;
    b.check("overview").await;
    let sys = b.session_token().await;

    // The system admin registers an agency and its operator in the console.
    let env: Vec<(String, String)> = std::fs::read_to_string(demo.data.join("demo.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect();
    let var = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (echo_host, echo_port) = (var("ECHO_HOST"), var("ECHO_PORT"));
    Browser::open("/console/t/agencies", &mut b).await;
    b.click("new-toggle").await;
    b.fill("new-name", "social").await;
    b.fill("new-title", "人力资源和社会保障局").await;
    b.fill("new-path_prefixes", "/social/").await;
    b.click("new-submit").await;
    b.wait_text("td", "social").await;
    let agencies = get_json(&http, format!("{}/v1/agencies", demo.admin), &sys).await;
    let ag = agencies["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "social")
        .expect("the agency registered in the console")["id"]
        .as_str()
        .unwrap()
        .to_string();
    Browser::open("/console/t/users", &mut b).await;
    b.click("new-toggle").await;
    b.fill("new-username", "social-op").await;
    b.choose("new-role", "agency-operator").await;
    b.choose("new-agency_id", &ag).await;
    b.fill("new-password", OPERATOR_PW).await;
    b.click("new-submit").await;
    b.wait_text("td", "social-op").await;
    // A bad field is the API's 422, shown on the page, and nothing is created.
    Browser::open("/console/t/agencies", &mut b).await;
    b.click("new-toggle").await;
    b.fill("new-name", "Not A Name!").await;
    b.fill("new-title", "x").await;
    b.click("new-submit").await;
    assert!(
        b.text("#flash").await.contains("name"),
        "the refusal names the field"
    );
    b.drain_logs().await;

    // The security admin allows the agency's backend in a network policy, in the console.
    b.c.delete_all_cookies().await.unwrap();
    b.sign_in("security", SECURITY_PW, Some(SECURITY_TOTP))
        .await;
    Browser::open("/console/t/network-policies", &mut b).await;
    b.click("new-toggle").await;
    b.choose("new-agency_id", &ag).await;
    b.fill("new-name", "social-dc").await;
    b.fill("new-destination", &echo_host).await;
    b.fill("new-port", &echo_port).await;
    b.choose("new-protocol", "http").await;
    b.click("new-submit").await;
    b.wait_text("td", "social-dc").await;
    b.check("table-network-policies-security").await;
    for slug in ["alerts", "token-keys", "signing-keys", "limits", "nodes"] {
        Browser::open(&format!("/console/t/{slug}"), &mut b).await;
        b.check(&format!("table-{slug}-security")).await;
    }
    b.use_session(&sys).await;

    // Every page the system admin may open.
    for slug in [
        "services",
        "routes",
        "agencies",
        "apps",
        "network-policies",
        "token-keys",
        "signing-keys",
        "limits",
        "users",
        "nodes",
        "verifications",
        "inspections",
        "faults",
        "reports",
    ] {
        Browser::open(&format!("/console/t/{slug}"), &mut b).await;
        b.check(&format!("table-{slug}")).await;
    }
    Browser::open("/console?lang=en", &mut b).await;
    assert!(
        b.text("nav").await.contains("Overview"),
        "English is selectable"
    );
    b.check("overview-en").await;
    Browser::open("/console?lang=zh", &mut b).await;
    assert!(b.text("nav").await.contains("概览"));

    // The agency operator registers a service and its interface, and submits it.
    b.c.delete_all_cookies().await.unwrap();
    b.sign_in("social-op", OPERATOR_PW, None).await;
    b.check("operator-overview").await;
    Browser::open("/console/services/new", &mut b).await;
    b.check("service-new").await;
    b.fill("name", "pension").await;
    b.fill("title", "养老金查询").await;
    b.fill("upstream", &format!("{echo_host}:{echo_port}"))
        .await;
    b.click("create").await;
    b.wait_text("#status", "draft").await;
    // The operator edits it while it is a draft.
    b.click("edit").await;
    b.check("service-edit").await;
    b.fill("title", "养老金余额查询").await;
    b.click("create").await;
    b.wait_text("#status", "draft").await;
    assert!(b.text("main h1").await.contains("养老金余额查询"));
    b.fill("route-name", "pension-balance").await;
    b.fill("route-path", "/social/pension/balance").await;
    b.fill("route-methods", "GET").await;
    b.click("add-route").await;
    b.wait_text("td", "pension-balance").await;
    b.click("do-submit").await;
    b.wait_text("#status", "submitted").await;
    b.check("service-submitted").await;
    let svc_url = b.c.current_url().await.unwrap();
    let svc_id = svc_url.path().rsplit('/').next().unwrap().to_string();
    // An operator has no publish button, and the API refuses it anyway.
    assert!(b.c.find(Locator::Id("do-publish")).await.is_err());

    // The system admin verifies it and publishes it on two channels.
    b.use_session(&sys).await;
    Browser::open(&format!("/console/services/{svc_id}"), &mut b).await;
    b.click("do-verify").await;
    b.text("#running").await;
    let t = Instant::now();
    loop {
        Browser::open(&format!("/console/services/{svc_id}"), &mut b).await;
        if b.c.find(Locator::Id("running")).await.is_err() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the verification never finished"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.check("service-verified").await;
    b.c.find(Locator::Css("td.r-passed a"))
        .await
        .expect("a passed verification")
        .click()
        .await
        .unwrap();
    assert_eq!(b.text("#result").await, "passed");
    b.check("verification").await;
    Browser::open(&format!("/console/services/{svc_id}"), &mut b).await;
    b.click("ch-wechat").await;
    b.click("ch-alipay").await;
    b.click("do-publish").await;
    b.wait_text("#status", "published").await;
    assert_eq!(b.text("#channels").await, "wechat, alipay");
    b.check("service-published").await;

    // A request through the gateway succeeds.
    let url = format!("{}/social/pension/balance", demo.gw);
    wait_for("the published service", &demo.cp, async || {
        status_of(&http, &url, &demo.token).await == 200
    })
    .await;

    // Long operations run on with the page showing them in progress: an inspection, a report.
    for (slug, kind) in [("inspections", None), ("reports", Some("daily-inspection"))] {
        Browser::open(&format!("/console/t/{slug}"), &mut b).await;
        b.click("new-toggle").await;
        if let Some(k) = kind {
            b.choose("new-kind", k).await;
        }
        b.click("new-submit").await;
        let t = Instant::now();
        loop {
            Browser::open(&format!("/console/t/{slug}"), &mut b).await;
            let running = b.c.find(Locator::Id("running")).await.is_ok();
            if !running && b.c.find(Locator::Css("tbody tr td a")).await.is_ok() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{slug}: never finished"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        b.check(&format!("table-{slug}-done")).await;
        b.c.find(Locator::Css("tbody tr td a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.text("main h1, body h1").await;
        b.check(&format!("{slug}-one")).await;
    }

    // A change from another origin is refused, even with the admin's cookie.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_port = evil.local_addr().unwrap().port();
    let target = format!("{}/console/services/{svc_id}/offline", demo.admin);
    let page = format!(
        "<!doctype html><form id=f method=post action=\"{target}\"><input name=_csrf value=guess></form><script>document.getElementById('f').submit()</script>"
    );
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let page = page.clone();
                async move { axum::response::Html(page) }
            }),
        );
        axum::serve(evil, app).await.unwrap();
    });
    b.c.goto(&format!("http://127.0.0.1:{evil_port}/"))
        .await
        .unwrap();
    let t = Instant::now();
    while !b
        .c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&demo.admin)
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the forged form never posted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        b.c.source().await.unwrap().contains("CSRF"),
        "the forged change was refused"
    );
    let svc = get_json(&http, format!("{}/v1/services/{svc_id}", demo.admin), &sys).await;
    assert_eq!(svc["status"], "published", "nothing changed");
    // (The refusal is a 403 page: its message is meant.)
    b.drain_logs().await;

    // The auditor finds the request in the audit search and cannot open configuration pages.
    b.c.delete_all_cookies().await.unwrap();
    b.sign_in("auditor", AUDIT_PW, Some(AUDIT_TOTP)).await;
    let t = Instant::now();
    loop {
        Browser::open("/console/audit?service=pension", &mut b).await;
        if b.c.find(Locator::Css("#audit-rows tbody tr")).await.is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the request never reached the audit search"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let row = b.text("#audit-rows tbody tr").await;
    assert!(
        row.contains("/social/pension/balance") && row.contains("200"),
        "{row}"
    );
    b.check("audit-requests").await;
    Browser::open("/console/audit?trail=admin&verify=1", &mut b).await;
    assert!(b.text("#chain").await.contains("哈希链完整"));
    b.check("audit-admin").await;
    for slug in ["services", "network-policies", "token-keys", "users"] {
        Browser::open(&format!("/console/t/{slug}"), &mut b).await;
        assert!(
            b.text("main h1").await.contains("无权访问"),
            "the auditor opened {slug}"
        );
        assert!(
            !b.text("nav").await.contains("服务"),
            "no configuration in the auditor's navigation"
        );
    }
    b.drain_logs().await;
    for slug in [
        "verifications",
        "alerts",
        "inspections",
        "faults",
        "reports",
    ] {
        Browser::open(&format!("/console/t/{slug}"), &mut b).await;
        b.check(&format!("table-{slug}-auditor")).await;
    }

    // The same pages on a phone.
    b.use_session(&sys).await;
    c_size(&b, 390, 844).await;
    let visited = b.visited.clone();
    for (name, path) in visited
        .iter()
        .filter(|(n, _)| !n.starts_with("operator") && n != "login")
    {
        Browser::open(path, &mut b).await;
        let png = b.c.screenshot().await.unwrap();
        std::fs::write(shots_dir().join(format!("{name}-390.png")), png).unwrap();
        let overflow =
            b.c.execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        // A downloaded report is a printable document of its own, not a console page.
        if name != "reports-one" {
            assert_eq!(overflow, json!(true), "{name} is wider than a phone screen");
        }
    }
    b.c.close().await.unwrap();
}

async fn c_size(b: &Browser, w: u32, h: u32) {
    b.c.set_window_size(w, h).await.unwrap();
}
