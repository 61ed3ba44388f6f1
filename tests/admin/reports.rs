//! Reports (docs/reports.md) from eight days of synthetic request records shipped through the
//! ingest endpoint, plus admin events (publish, offline, a policy change) and an inspection:
//! each report's HTML opens in headless Chromium without errors and without any request leaving
//! it, and every number in its HTML equals the CSV's — which equal figures the test computes from
//! its own dataset.

use serde_json::{json, Value};

use crate::harness::*;

const CHANNELS: [&str; 3] = ["wechat", "alipay", "baidu"];
const SERVICES: [(&str, &str); 3] = [
    ("pension", "pension-balance"),
    ("fund", "fund-balance"),
    ("permits", "permit-status"),
];
/// One slot every 20 minutes for 8 days, three records per slot.
const SLOT: i64 = 1200;
const DAYS: i64 = 8;

/// The synthetic record `k` of slot `t`: statuses, denials and findings vary by index, so every
/// report has something to count.
fn record(i: u64, t: i64, k: usize) -> Value {
    let (service, route) = SERVICES[(i as usize / 3) % 3];
    let channel = CHANNELS[k];
    let (status, denied_by, findings): (u16, Option<&str>, Value) = match i % 20 {
        0 => (503, None, json!([])),
        1 => (401, Some("jwt-auth"), json!([])),
        2 => (429, Some("rate-limit"), json!([])),
        3 => (
            403,
            Some("waf"),
            json!([{"plugin": "waf", "class": "sqli", "where": "query", "action": "blocked", "count": 1}]),
        ),
        4 => (
            200,
            None,
            json!([{"plugin": "response-masking", "class": "id_card", "where": "body", "action": "masked", "count": 2}]),
        ),
        _ => (200, None, json!([])),
    };
    let mut r = json!({
        "time": fenfa_admin::local_time::record_time(t), "request_id": format!("req-{i}"),
        "node": "gw-r", "agency": "city", "service": service, "route": route, "channel": channel,
        "app": "app1", "user": format!("user-{}", i % 50), "method": "GET", "path": "/x",
        "status": status, "latency_us": 1000 + (i % 97) * 1000, "bytes": 10, "seq": i,
        "findings": findings,
    });
    if let Some(d) = denied_by {
        r["denied_by"] = json!(d);
        r["decision"] = json!("denied");
    }
    r
}

fn dataset(end: i64) -> Vec<(i64, Value)> {
    let start = end - DAYS * 86_400;
    let mut out = Vec::new();
    let mut i = 0u64;
    let mut t = start;
    while t < end {
        for k in 0..3 {
            out.push((t, record(i, t, k)));
            i += 1;
        }
        t += SLOT;
    }
    out
}

/// Minimal RFC 4180 reader for the test (quoted fields, doubled quotes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').expect("a byte-order mark");
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The rows of every `<table>` in the page: cell texts (`<th>` or `<td>`).
fn html_tables(html: &str) -> Vec<Vec<Vec<String>>> {
    let mut tables = Vec::new();
    for t in html.split("<table").skip(1) {
        let t = t.split("</table>").next().unwrap();
        let mut rows = Vec::new();
        for r in t.split("<tr>").skip(1) {
            let r = r.split("</tr>").next().unwrap();
            let mut cells = Vec::new();
            for c in r.split("<t").skip(1) {
                let Some(gt) = c.find('>') else { continue };
                let Some(end) = c.find("</t") else { continue };
                cells.push(unescape(&c[gt + 1..end]));
            }
            rows.push(cells);
        }
        tables.push(rows);
    }
    tables
}

/// The CSV's blocks: the key figures (`指标,数值` then rows) and each section (title, header, rows).
fn csv_blocks(rows: &[Vec<String>]) -> Vec<Vec<Vec<String>>> {
    let mut blocks = vec![Vec::new()];
    for r in rows {
        if r.len() == 1 && r[0].is_empty() {
            blocks.push(Vec::new());
        } else {
            blocks.last_mut().unwrap().push(r.clone());
        }
    }
    blocks
}

/// The HTML's tables hold exactly the CSV's numbers and texts; returns the key figures.
fn same_numbers(html: &str, csv: &str) -> std::collections::BTreeMap<String, String> {
    let rows = parse_csv(csv);
    let blocks = csv_blocks(&rows);
    let tables = html_tables(html);
    // Block 0: title, period, generated; block 1: the key figures; then one per section.
    let summary_csv = &blocks[1][1..];
    assert_eq!(&tables[0], &summary_csv.to_vec(), "key figures");
    assert_eq!(tables.len(), blocks.len() - 1, "one table per section");
    for (i, t) in tables.iter().enumerate().skip(1) {
        let b = &blocks[i + 1];
        let body: Vec<Vec<String>> = b[1..].to_vec();
        if body.len() == 1 && t.len() == 2 && t[1] == vec!["无".to_string()] {
            assert_eq!(t[0], body[0], "empty section header");
            continue;
        }
        assert_eq!(t, &body, "section {}", b[0][0]);
    }
    summary_csv
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

/// Opens the page in headless Chromium with every name unresolvable and a dead proxy: the page
/// must render (its title in the DOM) and log no error (a blocked or failed load is logged).
fn opens_in_chromium(html: &str, name: &str) {
    // `FENFA_REPORT_EXAMPLES=DIR` keeps the pages (docs/reports/ holds examples made so).
    if let Ok(d) = std::env::var("FENFA_REPORT_EXAMPLES") {
        std::fs::write(format!("{d}/{name}.html"), html).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.html"));
    std::fs::write(&file, html).unwrap();
    let profile = dir.path().join("profile");
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &format!("file://{}", file.display()),
        ])
        .output()
        .expect("run chromium (apt-get install chromium)");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    assert!(dom.contains("<h1>"), "rendered DOM: {dom}");
    // The page has no script: any console message is the browser reporting on the page (a
    // blocked or failed load, a CSP violation).
    for line in log.lines() {
        for bad in ["CONSOLE", "Refused to", "Failed to load"] {
            assert!(!line.contains(bad), "chromium logged for {name}: {line}");
        }
    }
    // Nothing in the page refers to anything outside it (the SVG namespace is a name, never
    // fetched).
    let rest = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    let outside = ["http://", "https://", "src=", "href=", "url(", "@import"]
        .iter()
        .any(|x| rest.contains(x));
    assert!(!outside, "{name} refers to something outside the page");
    assert!(!html.contains("<script"), "{name} needs no script");
}

async fn download(env: &Env, token: &str, id: &str, format: &str) -> (String, String) {
    let (st, headers, body) = env
        .call_raw(
            "GET",
            &format!("/v1/reports/{id}?format={format}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (ct, body)
}

async fn every_report_from_a_week_of_records(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    // Admin events: a service registered, submitted, published, taken offline; a policy changed.
    let ag = env.agency(&sys, "city").await;
    let pol = env.policy(&sec, &ag, "city-backends").await;
    let svc = env.service(&sys, &ag, "pension").await;
    env.route(&sys, &svc, "pension-balance", "/city/pension/balance")
        .await;
    env.go_live(&sys, &svc, &["wechat", "alipay"]).await;
    env.expect(
        200,
        "PUT",
        &format!("/v1/network-policies/{pol}"),
        &sec,
        json!({"agency_id": ag, "name": "city-backends", "rules": [
            {"destination": "127.0.0.1", "port": UPSTREAM_PORT, "protocol": "http"},
            {"destination": "127.0.0.2", "port": UPSTREAM_PORT, "protocol": "http"}
        ]}),
    )
    .await;
    // An inspection (its backend is down: one fault).
    env.expect(201, "POST", "/v1/inspections", &sys, json!({}))
        .await;
    env.expect(
        200,
        "POST",
        &format!("/v1/services/{svc}/offline"),
        &sys,
        json!({}),
    )
    .await;

    // Eight days of records up to the start of today (local), shipped as a gateway would.
    let today = fenfa_admin::local_time::day_start(env.now());
    let data = dataset(today);
    let node = env
        .expect(201, "POST", "/v1/nodes", &sec, json!({"name": "gw-r"}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    for (n, chunk) in data.chunks(2000).enumerate() {
        let records: Vec<&Value> = chunk.iter().map(|(_, r)| r).collect();
        env.expect(
            200,
            "POST",
            "/v1/dataplane/audit",
            &node,
            json!({"node": "gw-r", "segment": "seg", "offset": n * 2000, "records": records}),
        )
        .await;
    }

    // The weekly report: the seven days before today.
    let week: Vec<&Value> = data
        .iter()
        .filter(|(t, _)| *t >= today - 7 * 86_400)
        .map(|(_, r)| r)
        .collect();
    let errors = week
        .iter()
        .filter(|r| r["status"].as_u64().unwrap() >= 500)
        .count();
    let sys = env.admin().await;
    let w = env
        .expect(
            201,
            "POST",
            "/v1/reports",
            &sys,
            json!({"kind": "weekly-status"}),
        )
        .await;
    let (ct, html) = download(env, &sys, w["id"].as_str().unwrap(), "html").await;
    assert_eq!(ct, "text/html; charset=utf-8");
    let (ct, csv) = download(env, &sys, w["id"].as_str().unwrap(), "csv").await;
    assert_eq!(ct, "text/csv; charset=utf-8");
    let figures = same_numbers(&html, &csv);
    assert_eq!(figures["请求总数"], week.len().to_string());
    assert_eq!(figures["错误数(5xx)"], errors.to_string());
    let avail = 100.0 * (week.len() - errors) as f64 / week.len() as f64;
    assert_eq!(figures["系统可用率(%)"], format!("{avail:.2}"));
    assert_eq!(
        figures["是否达标"],
        if avail >= 99.0 { "达标" } else { "未达标" }
    );
    // Per channel: a third each.
    let rows = parse_csv(&csv);
    for (zh, c) in [("微信", "wechat"), ("支付宝", "alipay"), ("百度", "baidu")] {
        let want = week
            .iter()
            .filter(|r| r["channel"] == c)
            .count()
            .to_string();
        assert!(
            rows.iter().any(|r| r[0] == zh && r[1] == want),
            "channel {zh}: {want} requests"
        );
    }
    // JSON: the same numbers.
    let j = env
        .get(
            &format!("/v1/reports/{}?format=json", w["id"].as_str().unwrap()),
            &sys,
        )
        .await;
    assert_eq!(j["report"]["title"], "系统运行状态监控分析报告");
    assert_eq!(
        j["report"]["summary"][0],
        json!(["请求总数", week.len().to_string()])
    );
    opens_in_chromium(&html, "weekly-status");

    // The security report of the month of the records.
    let month_start = fenfa_admin::local_time::day(today - 8 * 86_400);
    let from = format!("{}-01", &month_start[..7]);
    let s = env
        .expect(201, "POST", "/v1/reports", &sec, json!({"kind": "security-monthly", "from": from, "to": fenfa_admin::local_time::day(today + 86_400)}))
        .await;
    let (_, html) = download(env, &sec, s["id"].as_str().unwrap(), "html").await;
    let (_, csv) = download(env, &sec, s["id"].as_str().unwrap(), "csv").await;
    let figures = same_numbers(&html, &csv);
    let count = |f: &dyn Fn(&Value) -> bool| data.iter().filter(|(_, r)| f(r)).count().to_string();
    assert_eq!(
        figures["认证失败次数"],
        count(&|r| r["denied_by"] == "jwt-auth")
    );
    assert_eq!(figures["限流拦截次数"], count(&|r| r["status"] == 429));
    assert_eq!(figures["WAF 命中次数"], count(&|r| r["denied_by"] == "waf"));
    let masked: u64 = data
        .iter()
        .filter(|(_, r)| r["findings"][0]["action"] == "masked")
        .count() as u64
        * 2;
    assert_eq!(figures["脱敏字段数"], masked.to_string());
    assert_eq!(
        figures["密钥与策略变更次数"], "3",
        "policy create, policy update, node token"
    );
    opens_in_chromium(&html, "security-monthly");

    // The go-live records: every service event with who and when — including kinds this
    // report does not know, such as a go-live verification recorded against its own resource.
    let w = fenfa_admin::commit::begin_write(&env.app).await.unwrap();
    w.finish(
        &fenfa_admin::commit::Actor {
            name: "security".into(),
            role: "security-admin".into(),
            source_ip: "127.0.0.1".into(),
        },
        "verification.override",
        fenfa_admin::commit::AuditTarget {
            kind: "verification".into(),
            id: "ver_1".into(),
            after: Some(json!({"service_id": svc, "result": "pass"})),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let g = env
        .expect(
            201,
            "POST",
            "/v1/reports",
            &sys,
            json!({"kind": "go-live-records"}),
        )
        .await;
    let (_, html) = download(env, &sys, g["id"].as_str().unwrap(), "html").await;
    let (_, csv) = download(env, &sys, g["id"].as_str().unwrap(), "csv").await;
    let figures = same_numbers(&html, &csv);
    assert_eq!(figures["发布上线次数"], "1");
    assert_eq!(figures["下线次数"], "1");
    let rows = parse_csv(&csv);
    let publish = rows
        .iter()
        .find(|r| r.len() > 5 && r[5] == "service.publish")
        .expect("the publish event");
    assert_eq!(publish[1], "pension");
    assert_eq!(publish[6], "admin");
    assert_eq!(publish[9], "wechat alipay");
    let verification = rows
        .iter()
        .find(|r| r.len() > 5 && r[5] == "verification.override")
        .expect("the verification event");
    assert_eq!(verification[1], "pension");
    assert_eq!(verification[6], "security");
    opens_in_chromium(&html, "go-live-records");

    // The daily inspection report: today's inspection and its fault.
    let d = env
        .expect(
            201,
            "POST",
            "/v1/reports",
            &sys,
            json!({"kind": "daily-inspection"}),
        )
        .await;
    let (_, html) = download(env, &sys, d["id"].as_str().unwrap(), "html").await;
    let (_, csv) = download(env, &sys, d["id"].as_str().unwrap(), "csv").await;
    let figures = same_numbers(&html, &csv);
    assert_eq!(figures["巡检次数"], "1");
    assert_eq!(figures["新增故障数"], "1");
    assert!(csv.contains("连接被拒绝"), "{csv}");
    opens_in_chromium(&html, "daily-inspection");

    // Kept and listed; the audit admin may read but not generate; bad input changes nothing.
    let aud = env.auditor().await;
    let list = env.get("/v1/reports", &aud).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    env.expect(
        403,
        "POST",
        "/v1/reports",
        &aud,
        json!({"kind": "weekly-status"}),
    )
    .await;
    let e = env
        .expect(422, "POST", "/v1/reports", &sys, json!({"kind": "yearly"}))
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "kind");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/reports",
            &sys,
            json!({"kind": "weekly-status", "from": "2027-02-30"}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "from");
    assert_eq!(
        env.get("/v1/reports", &aud).await["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// Without the process's own schedule loop: the test's one inspection is the day's only one.
mod every_report_from_a_week_of_records {
    use crate::harness::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let env = Env::start_with(Backend::Sqlite, |o| o.schedule = None)
            .await
            .unwrap();
        super::every_report_from_a_week_of_records(&env).await;
        env.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(env) = Env::start_with(Backend::Postgres, |o| o.schedule = None).await {
            super::every_report_from_a_week_of_records(&env).await;
            env.finish().await;
        }
    }
}

/// The schedule makes the reports that are due: the daily one after each daily inspection, the
/// weekly one on Mondays, the monthly ones on the 1st.
async fn the_schedule_makes_the_reports_that_are_due(env: &Env) {
    // 2027-02-01 (a Monday) 08:30 local.
    let t = fenfa_admin::local_time::midnight(
        fenfa_admin::local_time::parse_day("2027-02-01").unwrap(),
    ) + 8 * 3600
        + 30 * 60;
    env.clock.set(t);
    assert!(fenfa_admin::inspection::tick(&env.app)
        .await
        .unwrap()
        .is_some());
    let aud = env.auditor().await;
    let list = env.get("/v1/reports", &aud).await;
    let mut kinds: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "daily-inspection",
            "go-live-records",
            "security-monthly",
            "weekly-status"
        ]
    );
    let sec = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "security-monthly")
        .unwrap();
    assert_eq!(
        sec["period_start"], "2026-12-31T16:00:00Z",
        "January, local"
    );
    assert_eq!(sec["generated_by"], "schedule");
    // The next day: only the daily one.
    env.clock.advance(86_400);
    assert!(fenfa_admin::inspection::tick(&env.app)
        .await
        .unwrap()
        .is_some());
    let aud = env.auditor().await;
    assert_eq!(
        env.get("/v1/reports", &aud).await["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

mod scheduled {
    use crate::harness::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let env = Env::start_with(Backend::Sqlite, |o| o.schedule = None)
            .await
            .unwrap();
        super::the_schedule_makes_the_reports_that_are_due(&env).await;
        env.finish().await;
    }
}
