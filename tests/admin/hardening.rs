//! What an auditor and an attacker look for (issue 12): node identity on request-audit ingest,
//! refusals and exports in the admin audit, sign-in that tells a guesser nothing and cannot be
//! used to lock others out, common passwords refused, first-start accounts named at install,
//! the auditor's export columns, and `fenfa-admin audit verify` on the database alone.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use fenfa_admin::app::App;
use fenfa_admin::auth::Bootstrap;
use fenfa_admin::clock::ManualClock;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

async fn admin_audit(env: &Env, aud: &str, action: &str) -> Vec<Value> {
    env.get(&format!("/v1/audit/admin?action={action}"), aud)
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn a_node_cannot_file_records_under_another_nodes_name(env: &Env) {
    let sec = env.security().await;
    let aud = env.auditor().await;
    let vm = env
        .expect(201, "POST", "/v1/nodes", &sec, json!({"name": "vm"}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let intruder = env
        .expect(201, "POST", "/v1/nodes", &sec, json!({"name": "intruder"}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let fake: Vec<Value> = (0..5)
        .map(|i| json!({"request_id": format!("fake-{i}"), "status": 200}))
        .collect();
    let batch = |records: Vec<Value>| json!({"node": "vm", "segment": "audit-0000000001.jsonl", "offset": 0, "records": records});
    let (st, v) = env
        .call(
            "POST",
            "/v1/dataplane/audit",
            Some(&intruder),
            Some(batch(fake)),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    // The real node's records at that offset are all accepted and findable.
    let real: Vec<Value> = (0..5)
        .map(|i| json!({"request_id": format!("real-{i}"), "status": 200}))
        .collect();
    let v = env
        .expect(200, "POST", "/v1/dataplane/audit", &vm, batch(real))
        .await;
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(5), Some(0)),
        "{v}"
    );
    let found = env.get("/v1/audit/requests?request_id=real-3", &aud).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["items"][0]["node"], "vm");
    let found = env.get("/v1/audit/requests?request_id=fake-3", &aud).await;
    assert!(found["items"].as_array().unwrap().is_empty(), "{found}");
    // The attempt is in the admin audit.
    let refused = admin_audit(env, &aud, "dataplane.audit_refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"], "intruder");
    assert_eq!(refused[0]["after"]["claimed_node"], "vm");
}
both_backends!(a_node_cannot_file_records_under_another_nodes_name);

async fn refusals_and_exports_are_in_the_admin_audit(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let aud = env.auditor().await;
    let ag = env.agency(&sys, "refused").await;
    let op = env.operator(&sys, "refused-op", &ag).await;
    env.expect(
        403,
        "POST",
        "/v1/agencies",
        &op,
        json!({"name": "x", "title": "x"}),
    )
    .await;
    env.expect(403, "POST", "/v1/network-policies", &sys, json!({}))
        .await;
    // Another agency's service answers 404 as if it did not exist, and is recorded all the same.
    let other = env.agency(&sys, "refused-other").await;
    env.policy(&sec, &other, "refused-other-net").await;
    let hidden = env.service(&sys, &other, "hidden-svc").await;
    let (st, _) = env
        .call("GET", &format!("/v1/services/{hidden}"), Some(&op), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = env
        .call("GET", "/v1/services/sv_0000000000000000", Some(&op), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = env.call("GET", "/v1/audit/admin", Some(&sec), None).await;
    assert_eq!(st, 403);
    let refused = admin_audit(env, &aud, "authz.refused").await;
    let seen: Vec<(String, String, String)> = refused
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_string(),
                r["role"].as_str().unwrap().to_string(),
                r["resource_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let hidden_path = format!("GET /v1/services/{hidden}");
    assert!(
        !seen
            .iter()
            .any(|s| s.2 == "GET /v1/services/sv_0000000000000000"),
        "a resource that does not exist is not a refusal: {seen:?}"
    );
    for want in [
        ("refused-op", "agency-operator", hidden_path.as_str()),
        ("refused-op", "agency-operator", "POST /v1/agencies"),
        ("admin", "system-admin", "POST /v1/network-policies"),
        ("security", "security-admin", "GET /v1/audit/admin"),
    ] {
        assert!(
            seen.iter()
                .any(|s| (s.0.as_str(), s.1.as_str(), s.2.as_str()) == want),
            "{want:?} not in {seen:?}"
        );
    }
    assert_eq!(refused[0]["source_ip"], "127.0.0.1");
    // Exports: who took which list, in which format.
    env.call_raw("GET", "/v1/exports/accounts?format=csv", Some(&sys), None)
        .await;
    env.get("/v1/exports/network-policies", &sec).await;
    env.get("/v1/exports/interfaces", &op).await;
    let mut exports: Vec<(String, String, String)> = Vec::new();
    for report in ["accounts", "network-policies", "interfaces"] {
        for r in admin_audit(env, &aud, &format!("export.{report}")).await {
            exports.push((
                report.to_string(),
                r["actor"].as_str().unwrap().to_string(),
                r["after"]["format"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(
        exports,
        [
            (
                "accounts".to_string(),
                "admin".to_string(),
                "csv".to_string()
            ),
            ("network-policies".into(), "security".into(), "json".into()),
            ("interfaces".into(), "refused-op".into(), "json".into()),
        ]
    );
}
both_backends!(refusals_and_exports_are_in_the_admin_audit);

async fn common_and_decorated_passwords_are_refused(env: &Env) {
    let sys = env.admin().await;
    let ag = env.agency(&sys, "pwcheck").await;
    for pw in [
        "Password123!",
        "P@ssw0rd2026!",
        "Qwerty123456!",
        "Iloveyou2026!!",
    ] {
        let e = env
            .expect(
                422,
                "POST",
                "/v1/users",
                &sys,
                json!({"username": "pw-op", "role": "agency-operator", "agency_id": ag, "password": pw}),
            )
            .await;
        assert_eq!(e["error"]["fields"][0]["path"], "password", "{pw}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("common"),
            "{pw}: {e}"
        );
    }
    let op = env.operator(&sys, "pw-op", &ag).await;
    let e = env
        .expect(
            422,
            "POST",
            "/v1/auth/password",
            &op,
            json!({"current_password": OPERATOR_PW, "new_password": "Welcome2026!!"}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "new_password", "{e}");
}
both_backends!(common_and_decorated_passwords_are_refused);

async fn sign_in_answers_the_same_whatever_was_wrong(env: &Env) {
    let login = |user: &str, pw: &str, totp: Option<&str>| json!({"username": user, "password": pw, "totp": totp});
    let mut answers = Vec::new();
    for body in [
        login("admin", ADMIN_PW, None),           // right password, no code
        login("admin", ADMIN_PW, Some("000000")), // right password, wrong code
        login("admin", "Wrong-Password-2026", None),
        login("nobody-here", "Wrong-Password-2026", None),
    ] {
        env.clock.advance(30);
        let (st, _, text) = env
            .call_raw("POST", "/v1/auth/login", None, Some(body))
            .await;
        answers.push((st, text));
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "answers differ: {answers:?}"
    );
    assert_eq!(answers[0].0, 401);
    assert!(answers[0].1.contains("bad_credentials"), "{answers:?}");
}
both_backends!(sign_in_answers_the_same_whatever_was_wrong);

async fn failures_from_one_source_do_not_lock_out_another(env: &Env) {
    for _ in 0..5 {
        let (st, _) = env.try_login("security", "Wrong-Password-2026", None).await;
        assert_eq!(st, 401);
    }
    let (st, v) = env
        .try_login("security", SECURITY_PW, Some(SECURITY_TOTP))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("account_locked")),
        "{v}"
    );
    // The same for a name that does not exist: the lockout tells nothing about accounts.
    for _ in 0..5 {
        env.try_login("no-such-account", "Wrong-Password-2026", None)
            .await;
    }
    let (st, v) = env
        .try_login("no-such-account", "Wrong-Password-2026", None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("account_locked")),
        "{v}"
    );
    // The real security admin, from another address, signs in.
    let other = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    env.clock.advance(30);
    let code = fenfa_admin::totp::current(
        &fenfa_admin::totp::base32_decode(SECURITY_TOTP).unwrap(),
        env.now(),
    );
    let r = other
        .post(format!("{}/v1/auth/login", env.base))
        .json(&json!({"username": "security", "password": SECURITY_PW, "totp": code}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(st, 200, "{v}");
    // The locked-out source waits its 15 minutes.
    env.clock.advance(15 * 60);
    env.security().await;
}
both_backends!(failures_from_one_source_do_not_lock_out_another);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_accounts_can_be_named_at_install() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let mut opts = test_options(url, dir.path());
    opts.bootstrap = Bootstrap::from_lookup(|k| {
        Some(
            match k {
                "FENFA_ADMIN_USERNAME" => "ops-chief",
                "FENFA_SECURITY_USERNAME" => "sec-chief",
                "FENFA_AUDIT_USERNAME" => "audit-chief",
                "FENFA_ADMIN_PASSWORD" => ADMIN_PW,
                _ => return None,
            }
            .to_string(),
        )
    });
    let (app, issued) = App::open(opts, Arc::new(ManualClock::new(T0)))
        .await
        .unwrap();
    let names: Vec<&str> = issued.iter().map(|i| i.username.as_str()).collect();
    assert_eq!(names, ["ops-chief", "sec-chief", "audit-chief"]);
    let users = fenfa_admin::store::list_users(&app.store.pool)
        .await
        .unwrap();
    let mut names: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
    names.sort();
    assert_eq!(names, ["audit-chief", "ops-chief", "sec-chief"]);
}

async fn exports_tell_the_auditor_who_published_what_and_who_holds_which_account(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "exported").await;
    env.policy(&sec, &ag, "exported-net").await;
    let svc = env.service(&sys, &ag, "exported-svc").await;
    env.route(&sys, &svc, "exported-route", "/exported/*").await;
    env.expect(
        201,
        "POST",
        "/v1/limits",
        &sec,
        json!({"service_id": svc, "limits": [{"key": "app", "rate": 7, "per": "1s"}]}),
    )
    .await;
    env.go_live(&sys, &svc, &["wechat"]).await;
    let v = env.get("/v1/exports/interfaces", &sys).await;
    let row = &v["items"][0];
    assert_eq!(row["published_by"], "admin", "{row}");
    assert!(
        row["published_at"].as_str().unwrap().starts_with("20"),
        "{row}"
    );
    assert!(
        row["limits"].as_str().unwrap().contains("\"rate\":7"),
        "{row}"
    );
    assert!(
        row["policy"].as_str().unwrap().contains("exported-net"),
        "{row}"
    );
    let v = env.get("/v1/exports/network-policies", &sec).await;
    let row = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == "exported-net")
        .unwrap()
        .clone();
    assert_eq!(row["services"], "exported-svc", "{row}");
    env.operator(&sys, "exported-op", &ag).await;
    for _ in 0..5 {
        env.try_login("exported-op", "Wrong-Password-2026", None)
            .await;
    }
    let v = env.get("/v1/exports/accounts", &sec).await;
    let items = v["items"].as_array().unwrap();
    let op = items
        .iter()
        .find(|u| u["username"] == "exported-op")
        .unwrap();
    assert_eq!(op["created_by"], "admin", "{op}");
    assert_eq!(op["locked"], "是", "{op}");
    assert!(op["last_login"].as_str().unwrap().starts_with("20"), "{op}");
    let admin = items.iter().find(|u| u["username"] == "admin").unwrap();
    assert_eq!(admin["created_by"], "system", "{admin}");
    assert_eq!(admin["locked"], "否", "{admin}");
}
both_backends!(exports_tell_the_auditor_who_published_what_and_who_holds_which_account);

/// `fenfa-admin audit verify` reads the chain from the database alone; a row changed behind the
/// control plane's back is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_the_chain_from_the_database_and_names_a_tampered_record() {
    let env = Env::start(Backend::Sqlite).await.unwrap();
    let sys = env.admin().await;
    env.agency(&sys, "chain").await;
    env.agency(&sys, "chain-two").await;
    let db = env.app.opts.database.clone();
    let run = |db: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-admin"))
            .args(["audit", "verify", "--database", db])
            .arg("--data-dir")
            .arg(std::env::temp_dir().join("fenfa-no-such-dir"))
            .env("FENFA_MASTER_KEY", MASTER_KEY)
            .env_remove("FENFA_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&db);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("records verified"), "{text}");
    sqlx::query("UPDATE admin_audit SET actor = 'mallory' WHERE seq = 5")
        .execute(&env.app.store.pool)
        .await
        .unwrap();
    let out = run(&db);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("record 5 was altered"), "{text}");
    // A wrong key is told apart from tampering.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-admin"))
        .args(["audit", "verify", "--database", &db])
        .env("FENFA_MASTER_KEY", "ff".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master key"));
    env.finish().await;
}
