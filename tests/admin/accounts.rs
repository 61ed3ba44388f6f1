//! Accounts: initial accounts, TOTP (RFC 6238) for the admin roles, lockout after 5 failures for
//! 15 minutes, sessions that idle out after 30 minutes, argon2id passwords under a complexity
//! rule, and exactly one role per account.

use std::sync::Arc;

use fenfa_admin::app::App;
use fenfa_admin::auth::Bootstrap;
use fenfa_admin::clock::ManualClock;
use fenfa_admin::totp;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

async fn admin_roles_need_a_totp_code_which_works_once(env: &Env) {
    // No code: the same answer as any other failure (a guesser learns nothing).
    let (st, v) = env.try_login("admin", ADMIN_PW, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("bad_credentials")),
        "{v}"
    );
    let (st, v) = env
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PW, "totp": "000000"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("bad_credentials")),
        "{v}"
    );
    env.clock.advance(60);
    let code = totp::current(&totp::base32_decode(ADMIN_TOTP).unwrap(), env.now());
    let body = json!({"username": "admin", "password": ADMIN_PW, "totp": code});
    let (st, v) = env
        .call("POST", "/v1/auth/login", None, Some(body.clone()))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["user"]["role"], "system-admin");
    assert_eq!(v["idle_timeout_seconds"], 1800);
    // The same code again is a replay.
    let (st, _) = env.call("POST", "/v1/auth/login", None, Some(body)).await;
    assert_eq!(st, 401);
    // Agency operators sign in with a password alone.
    let sys = env.admin().await;
    let ag = env.agency(&sys, "civil").await;
    let op = env.operator(&sys, "civil-op", &ag).await;
    let me = env.get("/v1/auth/me", &op).await;
    assert_eq!(
        (me["role"].as_str(), me["agency_id"].as_str()),
        (Some("agency-operator"), Some(ag.as_str()))
    );
}
both_backends!(admin_roles_need_a_totp_code_which_works_once);

async fn five_failures_lock_the_account_for_fifteen_minutes(env: &Env) {
    let sys = env.admin().await;
    let ag = env.agency(&sys, "health").await;
    env.operator(&sys, "health-op", &ag).await;
    for i in 0..5 {
        let (st, v) = env.try_login("health-op", "Wrong-Password-123", None).await;
        assert_eq!(st, 401, "attempt {i}: {v}");
    }
    let (st, headers, body) = env
        .call_raw(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "health-op", "password": OPERATOR_PW})),
        )
        .await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("account_locked"), "{body}");
    let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((800..=900).contains(&retry), "{retry}");
    env.clock.advance(14 * 60);
    let (st, _) = env.try_login("health-op", OPERATOR_PW, None).await;
    assert_eq!(st, 403, "still locked");
    env.clock.advance(60);
    env.login("health-op", OPERATOR_PW, None).await;
    // A system admin can lift a lockout early.
    for _ in 0..5 {
        env.try_login("health-op", "Wrong-Password-123", None).await;
    }
    let id = env.get("/v1/users", &env.admin().await).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "health-op")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sys = env.admin().await;
    let v = env
        .expect(
            200,
            "POST",
            &format!("/v1/users/{id}/unlock"),
            &sys,
            Value::Null,
        )
        .await;
    assert_eq!(v["locked"], false);
    env.login("health-op", OPERATOR_PW, None).await;
    // Wrong TOTP codes count too: five of them lock an admin.
    for _ in 0..5 {
        let (st, _) = env
            .call(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"username": "auditor", "password": AUDIT_PW, "totp": "123456"})),
            )
            .await;
        assert_eq!(st, 401);
    }
    let (st, _) = env.try_login("auditor", AUDIT_PW, Some(AUDIT_TOTP)).await;
    assert_eq!(st, 403);
}
both_backends!(five_failures_lock_the_account_for_fifteen_minutes);

async fn sessions_expire_after_thirty_idle_minutes(env: &Env) {
    let sys = env.admin().await;
    env.clock.advance(29 * 60);
    env.get("/v1/auth/me", &sys).await;
    env.clock.advance(29 * 60);
    env.get("/v1/auth/me", &sys).await;
    env.clock.advance(30 * 60 + 1);
    let (st, v) = env.call("GET", "/v1/auth/me", Some(&sys), None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("session_expired")),
        "{v}"
    );
    let (st, _) = env.call("GET", "/v1/auth/me", Some(&sys), None).await;
    assert_eq!(st, 401);
    // Logout ends a session at once.
    let sys = env.admin().await;
    let (st, _) = env.call("POST", "/v1/auth/logout", Some(&sys), None).await;
    assert_eq!(st, 204);
    let (st, _) = env.call("GET", "/v1/auth/me", Some(&sys), None).await;
    assert_eq!(st, 401);
    let (st, _) = env.call("GET", "/v1/auth/me", Some("made-up"), None).await;
    assert_eq!(st, 401);
}
both_backends!(sessions_expire_after_thirty_idle_minutes);

async fn passwords_follow_the_rule_and_are_stored_as_argon2id(env: &Env) {
    let sys = env.admin().await;
    let ag = env.agency(&sys, "edu").await;
    for (pw, why) in [
        ("Short-1a", "12"),
        ("alllowercaseletters", "three"),
        ("Edu-Operator-2026", "user name"),
    ] {
        let e = env
            .expect(422, "POST", "/v1/users", &sys, json!({"username": "edu-operator", "role": "agency-operator", "agency_id": ag, "password": pw}))
            .await;
        assert_eq!(e["error"]["fields"][0]["path"], "password");
        assert!(
            e["error"]["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{e}"
        );
    }
    env.operator(&sys, "edu-op", &ag).await;
    use sqlx::Row;
    let row = sqlx::query("SELECT password_hash FROM users WHERE username = 'edu-op'")
        .fetch_one(&env.app.store.pool)
        .await
        .unwrap();
    let hash: String = row.get("password_hash");
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!hash.contains(OPERATOR_PW));
    // Changing one's own password: the current one is needed, and the rule applies.
    let op = env.login("edu-op", OPERATOR_PW, None).await;
    env.expect(
        422,
        "POST",
        "/v1/auth/password",
        &op,
        json!({"current_password": "nope", "new_password": "New-Passw0rd-2027"}),
    )
    .await;
    env.expect(
        422,
        "POST",
        "/v1/auth/password",
        &op,
        json!({"current_password": OPERATOR_PW, "new_password": "weak"}),
    )
    .await;
    let (st, _) = env
        .call(
            "POST",
            "/v1/auth/password",
            Some(&op),
            Some(json!({"current_password": OPERATOR_PW, "new_password": "New-Passw0rd-2027"})),
        )
        .await;
    assert_eq!(st, 204);
    env.login("edu-op", "New-Passw0rd-2027", None).await;
}
both_backends!(passwords_follow_the_rule_and_are_stored_as_argon2id);

async fn an_account_holds_exactly_one_role(env: &Env) {
    let sys = env.admin().await;
    let ag = env.agency(&sys, "water").await;
    let pw = "Strong-Passw0rd-2026";
    let e = env
        .expect(
            422,
            "POST",
            "/v1/users",
            &sys,
            json!({"username": "x1", "role": ["system-admin", "audit-admin"], "password": pw}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "role");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/users",
            &sys,
            json!({"username": "x1", "role": "security-admin", "agency_id": ag, "password": pw}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "agency_id");
    let e = env
        .expect(
            422,
            "POST",
            "/v1/users",
            &sys,
            json!({"username": "x1", "role": "agency-operator", "password": pw}),
        )
        .await;
    assert_eq!(e["error"]["fields"][0]["path"], "agency_id");
    // A new admin, once the security admin grants the role, gets a TOTP secret at its first
    // sign-in (never in the create answer), and needs it from then on.
    let v = env
        .expect(
            201,
            "POST",
            "/v1/users",
            &sys,
            json!({"username": "sec2", "role": "security-admin", "password": pw}),
        )
        .await;
    assert!(v.get("totp").is_none(), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let sec = env.security().await;
    env.expect(
        200,
        "PUT",
        &format!("/v1/users/{id}"),
        &sec,
        json!({"role": "security-admin"}),
    )
    .await;
    let (st, v) = env.try_login("sec2", pw, None).await;
    assert_eq!(st, 200, "{v}");
    let secret = v["totp_enrollment"]["secret"].as_str().unwrap().to_string();
    assert!(env
        .get(&format!("/v1/users/{id}"), &sys)
        .await
        .get("totp")
        .is_none());
    let (st, _) = env.try_login("sec2", pw, None).await;
    assert_eq!(st, 401);
    let tok = env.login("sec2", pw, Some(&secret)).await;
    assert_eq!(env.get("/v1/auth/me", &tok).await["role"], "security-admin");
    // Disabling ends its sessions.
    env.expect(
        200,
        "PUT",
        &format!("/v1/users/{id}"),
        &sys,
        json!({"disabled": true}),
    )
    .await;
    let (st, _) = env.call("GET", "/v1/auth/me", Some(&tok), None).await;
    assert_eq!(st, 401);
}
both_backends!(an_account_holds_exactly_one_role);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_without_env_prints_one_time_credentials_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let mut opts = test_options(url, dir.path());
    opts.bootstrap = Bootstrap::default();
    let clock = ManualClock::new(T0);
    let (app, issued) = App::open(opts.clone(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let roles: Vec<&str> = issued.iter().map(|i| i.role.as_str()).collect();
    assert_eq!(roles, ["system-admin", "security-admin", "audit-admin"]);
    for i in &issued {
        let pw = i.password.as_deref().unwrap();
        fenfa_admin::password::check_complexity(pw, &i.username).unwrap();
        assert!(i.otpauth().unwrap().starts_with("otpauth://totp/Fenfa:"));
    }
    drop(app);
    // The second start finds the accounts and prints nothing.
    let (_, again) = App::open(opts, Arc::new(clock)).await.unwrap();
    assert!(again.is_empty());
    // From the environment: passwords must pass the rule.
    let weak =
        Bootstrap::from_lookup(|k| (k == "FENFA_ADMIN_PASSWORD").then(|| "weak".to_string()));
    assert_eq!(weak.accounts[0].password.as_deref(), Some("weak"));
    let dir2 = tempfile::tempdir().unwrap();
    let mut opts = test_options(
        format!("sqlite://{}?mode=rwc", dir2.path().join("a.db").display()),
        dir2.path(),
    );
    opts.bootstrap = weak;
    let err = App::open(opts, Arc::new(ManualClock::new(T0)))
        .await
        .err()
        .unwrap();
    assert!(err.contains("admin"), "{err}");
}
