//! Authorization, table-driven: every endpoint × every role (and no session at all).
//!
//! The table below is the specification, written independently of `authz.rs`: which roles may
//! call each endpoint, and whether an agency operator is confined to its own agency there (its
//! own resource works, another agency's answers 404). A test checks that the table lists
//! exactly the endpoints the router serves.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

const S: &str = "system-admin";
const C: &str = "security-admin";
const A: &str = "audit-admin";
const O: &str = "agency-operator";
const PUBLIC: &[&str] = &[S, C, A, O, "anonymous"];
const ANY: &[&str] = &[S, C, A, O];
const NODE: &[&str] = &[];
/// Sign-in endpoints: public, authenticated by a channel code, a refresh token, an access
/// token or a ticket — never by a session; their answers are tested in `signin.rs`.
const SIGNIN: &[&str] = &["signin"];

struct Case {
    method: &'static str,
    path: &'static str,
    allowed: &'static [&'static str],
    /// An agency operator may use it only on its own agency's resources.
    scoped: bool,
    body: &'static str,
}

const SVC_BODY: &str = r#"{"agency_id":"{agency}","name":"{rand}","title":"t","kind":"api","upstream":{"targets":[{"addr":"127.0.0.1:18000"}]}}"#;
const ROUTE_BODY: &str = r#"{"service_id":"{service}","name":"{rand}","paths":["/{rand}"]}"#;
const REVISION_BODY: &str = r#"{"upstream":{"targets":[{"addr":"127.0.0.1:18000"}]},"routes":[{"name":"{rand}","paths":["/{rand}"]}]}"#;
const OVERRIDE_BODY: &str = r#"{"reason":"accepted by the security office for the test"}"#;

macro_rules! case {
    ($m:literal, $p:literal, $allowed:expr) => {
        Case {
            method: $m,
            path: $p,
            allowed: $allowed,
            scoped: false,
            body: "{}",
        }
    };
    ($m:literal, $p:literal, $allowed:expr, scoped) => {
        Case {
            method: $m,
            path: $p,
            allowed: $allowed,
            scoped: true,
            body: "{}",
        }
    };
    ($m:literal, $p:literal, $allowed:expr, body $body:expr) => {
        Case {
            method: $m,
            path: $p,
            allowed: $allowed,
            scoped: false,
            body: $body,
        }
    };
    ($m:literal, $p:literal, $allowed:expr, scoped, $body:expr) => {
        Case {
            method: $m,
            path: $p,
            allowed: $allowed,
            scoped: true,
            body: $body,
        }
    };
}

fn table() -> Vec<Case> {
    vec![
        case!("GET", "/healthz", PUBLIC),
        case!("GET", "/openapi.json", PUBLIC),
        case!("POST", "/v1/auth/login", PUBLIC),
        case!("POST", "/v1/auth/logout", ANY),
        case!("GET", "/v1/auth/me", ANY),
        case!("POST", "/v1/auth/password", ANY),
        case!("GET", "/v1/agencies", &[S, C, O]),
        case!("POST", "/v1/agencies", &[S]),
        case!("GET", "/v1/agencies/{agency}", &[S, C, O], scoped),
        case!("PUT", "/v1/agencies/{agency}", &[S]),
        case!("DELETE", "/v1/agencies/{agency}", &[S]),
        case!("GET", "/v1/services", &[S, C, O]),
        case!("POST", "/v1/services", &[S, O], scoped, SVC_BODY),
        case!("GET", "/v1/services/{service}", &[S, C, O], scoped),
        case!("PUT", "/v1/services/{service}", &[S, O], scoped, SVC_BODY),
        case!("DELETE", "/v1/services/{service}", &[S, O], scoped),
        case!("POST", "/v1/services/{service}/submit", &[S, O], scoped),
        case!("POST", "/v1/services/{service}/publish", &[S]),
        case!("POST", "/v1/services/{service}/offline", &[S]),
        case!("POST", "/v1/services/{service}/reject", &[S]),
        case!("POST", "/v1/services/{service}/verifications", &[S, C]),
        case!("POST", "/v1/services/{service}/revisions", &[S, O], scoped),
        case!("GET", "/v1/revisions", &[S, C, O]),
        case!("GET", "/v1/revisions/{revision}", &[S, C, O], scoped),
        case!(
            "PUT",
            "/v1/revisions/{revision}",
            &[S, O],
            scoped,
            REVISION_BODY
        ),
        case!("POST", "/v1/revisions/{revision}/submit", &[S, O], scoped),
        case!("POST", "/v1/revisions/{revision}/verifications", &[S, C]),
        case!("POST", "/v1/revisions/{revision}/apply", &[S]),
        case!("POST", "/v1/revisions/{revision}/discard", &[S, O], scoped),
        case!("GET", "/v1/verifications", &[S, C, A, O]),
        case!(
            "GET",
            "/v1/verifications/{verification}",
            &[S, C, A, O],
            scoped
        ),
        case!("POST", "/v1/verifications/{verification}/override", &[C], body OVERRIDE_BODY),
        case!("GET", "/v1/routes", &[S, C, O]),
        case!("POST", "/v1/routes", &[S, O], scoped, ROUTE_BODY),
        case!("GET", "/v1/routes/{route}", &[S, C, O], scoped),
        case!("PUT", "/v1/routes/{route}", &[S, O], scoped, ROUTE_BODY),
        case!("DELETE", "/v1/routes/{route}", &[S, O], scoped),
        case!("GET", "/v1/apps", &[S, C, O]),
        case!("POST", "/v1/apps", &[S]),
        case!("GET", "/v1/apps/{app}", &[S, C, O]),
        case!("PUT", "/v1/apps/{app}", &[S]),
        case!("DELETE", "/v1/apps/{app}", &[S]),
        case!("GET", "/v1/network-policies", &[S, C, O]),
        case!("POST", "/v1/network-policies", &[C]),
        case!("GET", "/v1/network-policies/{policy}", &[S, C, O], scoped),
        case!("PUT", "/v1/network-policies/{policy}", &[C]),
        case!("DELETE", "/v1/network-policies/{policy}", &[C]),
        case!("GET", "/v1/token-keys", &[S, C]),
        case!("POST", "/v1/token-keys", &[C]),
        case!("GET", "/v1/token-keys/{tkey}", &[S, C]),
        case!("DELETE", "/v1/token-keys/{tkey}", &[C]),
        case!("POST", "/v1/token-keys/{tkey}/revoke", &[C]),
        case!("GET", "/v1/signing-keys", &[S, C, O]),
        case!("POST", "/v1/signing-keys", &[C]),
        case!("GET", "/v1/signing-keys/{skey}", &[S, C, O], scoped),
        case!("DELETE", "/v1/signing-keys/{skey}", &[C]),
        case!("POST", "/v1/signing-keys/{skey}/retire", &[C]),
        case!("GET", "/v1/limits", &[S, C, O]),
        case!("POST", "/v1/limits", &[C]),
        case!("GET", "/v1/limits/{limit}", &[S, C, O], scoped),
        case!("PUT", "/v1/limits/{limit}", &[C]),
        case!("DELETE", "/v1/limits/{limit}", &[C]),
        case!("GET", "/v1/settings", &[S, C]),
        case!("PUT", "/v1/settings", &[C]),
        case!("POST", "/v1/secrets/re-encrypt", &[C]),
        case!("GET", "/v1/config", &[S, C]),
        case!("GET", "/v1/users", &[S, C]),
        case!("POST", "/v1/users", &[S]),
        case!("GET", "/v1/users/{user}", &[S, C]),
        // Account on account, in full: duties.rs. Here the target is an audit admin's account.
        case!("PUT", "/v1/users/{user}", &[S, C]),
        case!("DELETE", "/v1/users/{user}", &[S, C]),
        case!("POST", "/v1/users/{user}/reset-password", &[S, C]),
        case!("POST", "/v1/users/{user}/reset-totp", &[S, C]),
        case!("POST", "/v1/users/{user}/unlock", &[S]),
        case!("GET", "/v1/nodes", &[S, C]),
        case!("POST", "/v1/nodes", &[C]),
        case!("DELETE", "/v1/nodes/{node}", &[C]),
        case!("GET", "/v1/audit/admin", &[A]),
        case!("GET", "/v1/audit/admin/verify", &[A]),
        case!("GET", "/v1/audit/admin/{seq}", &[A]),
        case!("GET", "/v1/audit/requests", &[A]),
        case!("GET", "/v1/exports/interfaces", &[S, O]),
        case!("GET", "/v1/exports/network-policies", &[S, C]),
        case!("GET", "/v1/exports/accounts", &[S, C]),
        case!("GET", "/v1/alerts", &[C, A]),
        case!("GET", "/v1/alerts/{alert}", &[C, A]),
        case!("POST", "/v1/alerts/{alert}/acknowledge", &[C]),
        case!("POST", "/v1/alerts/{alert}/resolve", &[C]),
        case!("GET", "/v1/alert-settings", &[C, A]),
        case!("PUT", "/v1/alert-settings", &[C]),
        case!("GET", "/v1/alert-destinations", &[C, A]),
        case!("POST", "/v1/alert-destinations", &[C]),
        case!("DELETE", "/v1/alert-destinations/{destination}", &[C]),
        case!("GET", "/v1/alert-blocks", &[C, A]),
        case!("DELETE", "/v1/alert-blocks/{block}", &[C]),
        case!("POST", "/v1/inspections", &[S]),
        case!("GET", "/v1/inspections", &[S, C, A]),
        case!("GET", "/v1/inspections/{inspection}", &[S, C, A]),
        case!("GET", "/v1/faults", &[S, C, A]),
        case!("GET", "/v1/faults/{fault}", &[S, C, A]),
        case!("POST", "/v1/faults/{fault}/close", &[S]),
        case!("GET", "/v1/inspection-settings", &[S, C, A]),
        case!("PUT", "/v1/inspection-settings", &[S]),
        case!("GET", "/v1/active-users", &[S, C, A]),
        case!("POST", "/v1/reports", &[S, C]),
        case!("GET", "/v1/reports", &[S, C, A]),
        case!("GET", "/v1/reports/{report}", &[S, C, A]),
        case!("PUT", "/v1/apps/{app}/signin", &[C]),
        case!("DELETE", "/v1/apps/{app}/signin", &[C]),
        case!("GET", "/v1/identity-keys", &[S, C]),
        case!("POST", "/v1/identity-keys/rotate", &[C]),
        case!("POST", "/v1/identity-keys/{ikey}/revoke", &[C]),
        case!("GET", "/v1/audit/signins", &[A]),
        case!("POST", "/v1/login/{channel}", SIGNIN),
        case!("POST", "/v1/token/refresh", SIGNIN),
        case!("POST", "/v1/token/revoke", SIGNIN),
        case!("GET", "/.well-known/jwks.json", SIGNIN),
        case!("POST", "/v1/h5/ticket", SIGNIN),
        case!("GET", "/v1/h5/enter", SIGNIN),
        case!("GET", "/v1/dataplane/watch", NODE),
        case!("POST", "/v1/dataplane/audit", NODE),
    ]
}

/// `/v1/services/{service}` → `/v1/services/{id}`, as the router writes it.
fn router_path(p: &str) -> String {
    let mut out = Vec::new();
    for seg in p.split('/') {
        out.push(if seg.starts_with('{') {
            if seg == "{seq}" || seg == "{channel}" {
                seg
            } else {
                "{id}"
            }
        } else {
            seg
        });
    }
    out.join("/")
}

#[test]
fn the_table_covers_every_endpoint_the_router_serves() {
    let served: BTreeSet<(String, String)> = fenfa_admin::api::endpoints()
        .iter()
        .map(|(e, _)| (e.method.to_string(), e.path.to_string()))
        .collect();
    let specified: BTreeSet<(String, String)> = table()
        .iter()
        .map(|c| (c.method.to_string(), router_path(c.path)))
        .collect();
    assert_eq!(served, specified);
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn rand_name() -> String {
    format!("x{}", COUNTER.fetch_add(1, Relaxed))
}

struct World {
    tokens: HashMap<&'static str, String>,
    sys: String,
    sec: String,
    /// Shared fixtures per agency ("own" = the operator's agency, "other").
    own: HashMap<&'static str, String>,
    other: HashMap<&'static str, String>,
}

impl World {
    async fn new(env: &Env) -> World {
        let sys = env.admin().await;
        let sec = env.security().await;
        let aud = env.auditor().await;
        let mut own = HashMap::new();
        let mut other = HashMap::new();
        for (name, map) in [("own-agency", &mut own), ("other-agency", &mut other)] {
            let ag = env.agency(&sys, name).await;
            map.insert("agency", ag.clone());
            fresh_agency_fixtures(env, &sys, &sec, &ag, map).await;
            live_fixtures(env, &sys, &ag, map).await;
        }
        let op = env.operator(&sys, "matrix-op", &own["agency"]).await;
        let mut tokens = HashMap::new();
        tokens.insert(S, sys.clone());
        tokens.insert(C, sec.clone());
        tokens.insert(A, aud);
        tokens.insert(O, op);
        let mut w = World {
            tokens,
            sys,
            sec,
            own,
            other,
        };
        let platform = w.fresh_platform(env).await;
        w.own.extend(platform.clone());
        w.other.extend(platform);
        w
    }

    async fn fresh_platform(&self, env: &Env) -> HashMap<&'static str, String> {
        let (sys, sec) = (&self.sys, &self.sec);
        let mut m = HashMap::new();
        let v = env
            .expect(
                201,
                "POST",
                "/v1/apps",
                sys,
                json!({"channel": "wechat", "app_id": rand_name(), "name": "app"}),
            )
            .await;
        m.insert("app", v["id"].as_str().unwrap().to_string());
        let k = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
        let v = env
            .expect(
                201,
                "POST",
                "/v1/token-keys",
                sec,
                json!({"jwk": {"kty": "oct", "alg": "HS256", "kid": rand_name(), "k": k}}),
            )
            .await;
        m.insert("tkey", v["id"].as_str().unwrap().to_string());
        let v = env
            .expect(201, "POST", "/v1/identity-keys/rotate", sec, json!({}))
            .await;
        m.insert("ikey", v["id"].as_str().unwrap().to_string());
        let v = env
            .expect(201, "POST", "/v1/nodes", sec, json!({"name": rand_name()}))
            .await;
        m.insert("node", v["id"].as_str().unwrap().to_string());
        m.insert("node_token", v["token"].as_str().unwrap().to_string());
        let v = env
            .expect(201, "POST", "/v1/users", sys, json!({"username": rand_name(), "role": "audit-admin", "password": "Some-Passw0rd-2026"}))
            .await;
        m.insert("user", v["id"].as_str().unwrap().to_string());
        m.insert("seq", "1".to_string());
        let v = env
            .expect(201, "POST", "/v1/alert-destinations", sec, json!({"name": rand_name(), "kind": "webhook", "url": "https://soc.example.invalid/hook", "secret": "0123456789abcdef0123"}))
            .await;
        m.insert("destination", v["id"].as_str().unwrap().to_string());
        // An alert and a temporary deny, as the detectors would raise them.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let signal = fenfa_admin::alerts::detect::Signal {
            rule: fenfa_admin::alerts::rules::RuleName::Waf,
            severity: fenfa_admin::alerts::rules::Severity::Critical,
            subject_kind: "client_ip",
            subject: format!("2001:db8::{n:x}"),
            service: None,
            at: env.now(),
            summary: "test".into(),
            evidence: json!({"count": 5}),
            auto_deny: None,
        };
        let alert = match fenfa_admin::alerts::store::raise(&env.app, &signal, 3600)
            .await
            .unwrap()
        {
            fenfa_admin::alerts::store::Raised::Opened(a) => a.id,
            other => panic!("{other:?}"),
        };
        fenfa_admin::alerts::respond::deny(&env.app, &signal.subject, 3600, &alert, "waf")
            .await
            .unwrap()
            .unwrap();
        let snap = fenfa_admin::commit::snapshot(&env.app).await.unwrap();
        let block = snap
            .blocks
            .iter()
            .find(|b| b.alert_id.as_deref() == Some(alert.as_str()))
            .unwrap();
        m.insert("block", block.id.clone());
        m.insert("alert", alert);
        // An inspection, a fault record and a report, as the schedule would make them.
        let run = fenfa_admin::inspection::run(&env.app, "manual", "test")
            .await
            .unwrap();
        m.insert("inspection", run.id.clone());
        let finding = fenfa_admin::inspection::faults::Finding {
            service_id: rand_name(),
            service: "matrix".into(),
            route: None,
            target: Some("127.0.0.1:18000".into()),
            cause: "refused",
            detail: "refused".into(),
        };
        let mut tx = env.app.store.begin_write().await.unwrap();
        let changes = fenfa_admin::inspection::faults::reconcile(
            &mut tx,
            &run.id,
            env.now(),
            &Default::default(),
            &[finding],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        m.insert("fault", changes.opened[0].clone());
        let report = fenfa_admin::reports::generate(
            &env.app,
            "daily-inspection",
            env.now() - 86_400,
            env.now(),
            "test",
        )
        .await
        .unwrap();
        m.insert("report", report["id"].as_str().unwrap().to_string());
        m
    }
}

async fn fresh_agency_fixtures(
    env: &Env,
    sys: &str,
    sec: &str,
    ag: &str,
    m: &mut HashMap<&'static str, String>,
) {
    m.insert("policy", env.policy(sec, ag, &rand_name()).await);
    let svc = env.service(sys, ag, &rand_name()).await;
    m.insert(
        "route",
        env.route(sys, &svc, &rand_name(), &format!("/{}", rand_name()))
            .await,
    );
    let v = env
        .expect(
            201,
            "POST",
            "/v1/limits",
            sec,
            json!({"service_id": svc, "limits": [{"key": "app", "rate": 10, "per": "1s"}]}),
        )
        .await;
    m.insert("limit", v["id"].as_str().unwrap().to_string());
    m.insert("service", svc);
    let v = env
        .expect(
            201,
            "POST",
            "/v1/signing-keys",
            sec,
            json!({"agency_id": ag}),
        )
        .await;
    m.insert("skey", v["id"].as_str().unwrap().to_string());
}

/// A published service of the agency (gone live through a verification) and an open revision
/// of it.
async fn live_fixtures(env: &Env, sys: &str, ag: &str, m: &mut HashMap<&'static str, String>) {
    let svc = env.service(sys, ag, &rand_name()).await;
    env.route(sys, &svc, &rand_name(), &format!("/{}", rand_name()))
        .await;
    let v = env.go_live(sys, &svc, &["wechat"]).await;
    m.insert(
        "verification",
        v["verification"]["id"].as_str().unwrap().to_string(),
    );
    let r = env
        .expect(
            201,
            "POST",
            &format!("/v1/services/{svc}/revisions"),
            sys,
            json!({}),
        )
        .await;
    m.insert("revision", r["id"].as_str().unwrap().to_string());
}

fn fill(template: &str, ids: &HashMap<&'static str, String>) -> String {
    let mut out = template.replace("{rand}", &rand_name());
    for (k, v) in ids {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

async fn every_endpoint_answers_every_role_as_specified(env: &Env) {
    let w = World::new(env).await;
    let mut failures = Vec::new();
    for case in table() {
        if case.method == "POST" && case.path == "/v1/auth/logout" {
            continue; // below: it needs throwaway sessions
        }
        if case.allowed == SIGNIN {
            continue;
        }
        // No session at all.
        if !case.allowed.contains(&"anonymous") {
            let (st, v) = env
                .call(
                    case.method,
                    &fill(case.path, &w.own),
                    None,
                    Some(serde_json::from_str(&fill(case.body, &w.own)).unwrap()),
                )
                .await;
            if st != 401 {
                failures.push(format!("{} {} anonymous: {st} {v}", case.method, case.path));
            }
        }
        for role in [S, C, A, O] {
            let token = &w.tokens[role];
            let allowed = case.allowed.contains(&role);
            let mut attempts = vec![("own", true)];
            if role == O && case.scoped && allowed {
                attempts.push(("other", false));
            }
            for (which, expect_ok) in attempts {
                let mut ids = if which == "own" {
                    w.own.clone()
                } else {
                    w.other.clone()
                };
                if allowed && expect_ok && case.method != "GET" {
                    // A mutation gets fresh targets, so earlier cases cannot have used them up.
                    let ag = ids["agency"].clone();
                    fresh_agency_fixtures(env, &w.sys, &w.sec, &ag, &mut ids).await;
                    if case.path.contains("{revision}") || case.path.contains("{verification}") {
                        live_fixtures(env, &w.sys, &ag, &mut ids).await;
                    }
                    ids.extend(w.fresh_platform(env).await);
                    if case.method == "DELETE" && case.path == "/v1/agencies/{agency}" {
                        ids.insert("agency", env.agency(&w.sys, &rand_name()).await);
                    }
                }
                let path = fill(case.path, &ids);
                let body: Value = serde_json::from_str(&fill(case.body, &ids)).unwrap();
                let (st, v) = env.call(case.method, &path, Some(token), Some(body)).await;
                let ok = if case.allowed == NODE {
                    st == 401
                } else if !allowed {
                    st == 403
                } else if expect_ok {
                    ![401, 403, 404, 405].contains(&st)
                } else {
                    st == 404
                };
                if !ok {
                    failures.push(format!(
                        "{} {} as {role} ({which}): {st} {v}",
                        case.method, case.path
                    ));
                }
            }
        }
    }
    // Node endpoints take node tokens, not sessions.
    let node = w.own["node_token"].clone();
    let (st, _) = env
        .call(
            "GET",
            "/v1/dataplane/watch?version=0&timeout=0",
            Some(&node),
            None,
        )
        .await;
    assert_eq!(st, 200);
    // Logout: every role may end its own session.
    for (role, user, pw, secret) in [
        (S, "admin", ADMIN_PW, Some(ADMIN_TOTP)),
        (C, "security", SECURITY_PW, Some(SECURITY_TOTP)),
        (A, "auditor", AUDIT_PW, Some(AUDIT_TOTP)),
        (O, "matrix-op", OPERATOR_PW, None),
    ] {
        let t = env.login(user, pw, secret).await;
        let (st, _) = env.call("POST", "/v1/auth/logout", Some(&t), None).await;
        if st != 204 {
            failures.push(format!("POST /v1/auth/logout as {role}: {st}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
both_backends!(every_endpoint_answers_every_role_as_specified);
