//! Separation of duties (三权分立) between accounts: every role × every account-changing action ×
//! every target role (and one's own account), as docs/admin.md's table says, written here
//! independently of `authz.rs`. Two-person cells (an audit admin's account) are asked by one of
//! the system and security admins (202, nothing changes) and carried out when the other repeats
//! the request. Every refusal leaves one `authz.refused` record in the admin audit.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

const S: &str = "system-admin";
const C: &str = "security-admin";
const A: &str = "audit-admin";
const O: &str = "agency-operator";
const TARGET_PW: &str = "Target-Acct-Pass-2026";

static N: AtomicU32 = AtomicU32::new(0);

fn name() -> String {
    format!("duty{}", N.fetch_add(1, Relaxed))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Done by the actor alone, with this status.
    Alone(u16),
    /// 202 first; done (this status) when the other of system/security admin repeats it.
    TwoPerson(u16),
    Refused,
    /// Allowed, but not applicable to the target (this status).
    NotApplicable(u16),
}
use Want::*;

const ACTIONS: [&str; 9] = [
    "create",
    "change-role",
    "disable",
    "enable",
    "delete",
    "reset-password",
    "reset-totp",
    "unlock",
    "move-agency",
];

/// The specification: what `actor` gets doing `action` to an account of role `target`.
fn want(actor: &str, action: &str, target: &str) -> Want {
    if actor == A || actor == O {
        return Refused;
    }
    let aud = target == A;
    match action {
        "create" => {
            if actor == S {
                Alone(201)
            } else {
                Refused
            }
        }
        "change-role" if aud => TwoPerson(200),
        "change-role" if actor == C => Alone(200),
        "reset-totp" if aud => TwoPerson(200),
        "reset-totp" if actor == C && target == O => NotApplicable(409),
        "reset-totp" if actor == C => Alone(200),
        "disable" | "delete" | "reset-password" if aud => TwoPerson(match action {
            "disable" => 200,
            _ => 204,
        }),
        "move-agency" if actor == S && target != O => NotApplicable(422),
        "disable" | "enable" | "unlock" | "move-agency" if actor == S => Alone(200),
        "delete" | "reset-password" if actor == S => Alone(204),
        _ => Refused,
    }
}

struct World {
    tokens: Vec<(&'static str, String)>,
    ids: Vec<(&'static str, String)>,
    agency: String,
    other_agency: String,
}

impl World {
    fn token(&self, role: &str) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }
    fn own_id(&self, role: &str) -> &str {
        &self.ids.iter().find(|(r, _)| *r == role).unwrap().1
    }
}

/// A fresh account holding `role` (an admin role created by the system admin and granted by the
/// security admin).
async fn target(env: &Env, w: &World, role: &str) -> String {
    let mut body = json!({"username": name(), "role": role, "password": TARGET_PW});
    if role == O {
        body["agency_id"] = json!(w.agency);
    }
    let v = env.expect(201, "POST", "/v1/users", w.token(S), body).await;
    let id = v["id"].as_str().unwrap().to_string();
    if role != O {
        assert_eq!(v["role_granted"], false, "{v}");
        let v = env
            .expect(
                200,
                "PUT",
                &format!("/v1/users/{id}"),
                w.token(C),
                json!({"role": role}),
            )
            .await;
        assert_eq!(v["role_granted"], true, "{v}");
    }
    id
}

/// The request for `action` on account `id` (of role `target`).
fn request(w: &World, action: &str, id: &str, target: &str) -> (&'static str, String, Value) {
    let user = format!("/v1/users/{id}");
    match action {
        "create" => {
            let mut body = json!({"username": name(), "role": target, "password": TARGET_PW});
            if target == O {
                body["agency_id"] = json!(w.agency);
            }
            ("POST", "/v1/users".into(), body)
        }
        "change-role" => {
            let body = if target == O {
                json!({"role": C})
            } else {
                json!({"role": O, "agency_id": w.agency})
            };
            ("PUT", user, body)
        }
        "disable" => ("PUT", user, json!({"disabled": true})),
        "enable" => ("PUT", user, json!({"disabled": false})),
        "delete" => ("DELETE", user, Value::Null),
        "reset-password" => (
            "POST",
            format!("{user}/reset-password"),
            json!({"password": "Fresh-Reset-Pass-2027"}),
        ),
        "reset-totp" => ("POST", format!("{user}/reset-totp"), Value::Null),
        "unlock" => ("POST", format!("{user}/unlock"), Value::Null),
        "move-agency" => ("PUT", user, json!({"agency_id": w.other_agency})),
        _ => unreachable!(),
    }
}

async fn refusals(env: &Env) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) AS n FROM admin_audit WHERE action = 'authz.refused'")
        .fetch_one(&env.app.store.pool)
        .await
        .unwrap()
        .get::<i64, _>("n")
}

async fn every_role_acts_on_every_account_as_the_table_says(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let aud = env.auditor().await;
    let agency = env.agency(&sys, "duties").await;
    let other_agency = env.agency(&sys, "duties-other").await;
    let op = env.operator(&sys, "duties-op", &agency).await;
    let mut ids = Vec::new();
    for (role, tok) in [(S, &sys), (C, &sec), (A, &aud), (O, &op)] {
        ids.push((
            role,
            env.get("/v1/auth/me", tok).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let w = World {
        tokens: vec![(S, sys), (C, sec), (A, aud), (O, op)],
        ids,
        agency,
        other_agency,
    };
    // Targets for cells that must change nothing, shared.
    let mut shared = Vec::new();
    for t in [O, S, C, A] {
        shared.push((t, target(env, &w, t).await));
    }
    let mut failures = Vec::new();
    let mut refused = 0;
    let before = refusals(env).await;
    for actor in [S, C, A, O] {
        for action in ACTIONS {
            for t in [O, S, C, A] {
                let wanted = want(actor, action, t);
                let id = match wanted {
                    Refused | NotApplicable(_) => {
                        shared.iter().find(|(r, _)| *r == t).unwrap().1.clone()
                    }
                    _ if action == "create" => String::new(),
                    _ => target(env, &w, t).await,
                };
                let (m, path, body) = request(&w, action, &id, t);
                let (st, v) = env
                    .call(m, &path, Some(w.token(actor)), Some(body.clone()))
                    .await;
                let cell = format!("{actor} {action} {t}");
                match wanted {
                    Alone(code) | NotApplicable(code) => {
                        if st != code {
                            failures.push(format!("{cell}: want {code}, got {st} {v}"));
                        }
                    }
                    Refused => {
                        refused += 1;
                        if st != 403 {
                            failures.push(format!("{cell}: want 403, got {st} {v}"));
                        }
                    }
                    TwoPerson(code) => {
                        if st != 202 || v["status"] != "awaiting_approval" {
                            failures.push(format!("{cell}: want 202, got {st} {v}"));
                            continue;
                        }
                        // Nothing changed yet.
                        let now = env.get(&format!("/v1/users/{id}"), w.token(S)).await;
                        if now["role"] != t || now["disabled"] != false {
                            failures.push(format!("{cell}: changed before approval: {now}"));
                        }
                        // The same role again is not a second person.
                        let (st2, _) = env
                            .call(m, &path, Some(w.token(actor)), Some(body.clone()))
                            .await;
                        if st2 != 409 {
                            failures.push(format!("{cell}: repeated by the same role: {st2}"));
                        }
                        let other = if actor == S { C } else { S };
                        let (st3, v3) = env.call(m, &path, Some(w.token(other)), Some(body)).await;
                        if st3 != code {
                            failures.push(format!(
                                "{cell}: approved by {other}: want {code}, got {st3} {v3}"
                            ));
                        }
                    }
                }
            }
        }
        // One's own account: always refused.
        for action in ACTIONS.iter().filter(|a| **a != "create") {
            let (m, path, body) = request(&w, action, w.own_id(actor), actor);
            let (st, v) = env.call(m, &path, Some(w.token(actor)), Some(body)).await;
            refused += 1;
            if st != 403 {
                failures.push(format!("{actor} {action} self: want 403, got {st} {v}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        refusals(env).await - before,
        refused,
        "every refusal is one authz.refused record"
    );
}
both_backends!(every_role_acts_on_every_account_as_the_table_says);

async fn no_single_person_obtains_a_second_admin_role(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    // The system admin creates an audit-admin account: no TOTP secret in the answer, and it
    // cannot sign in until the security admin grants the role.
    let v = env
        .expect(
            201,
            "POST",
            "/v1/users",
            &sys,
            json!({"username": "aud2", "role": "audit-admin", "password": TARGET_PW}),
        )
        .await;
    assert!(v.get("totp").is_none(), "{v}");
    assert_eq!(v["role_granted"], false);
    assert_eq!(v["created_by"], "admin");
    let id = v["id"].as_str().unwrap().to_string();
    let (st, body) = env.try_login("aud2", TARGET_PW, None).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("bad_credentials")),
        "{body}"
    );
    // The system admin cannot grant it, nor the security admin create accounts.
    env.expect(
        403,
        "PUT",
        &format!("/v1/users/{id}"),
        &sys,
        json!({"role": "audit-admin"}),
    )
    .await;
    env.expect(
        403,
        "POST",
        "/v1/users",
        &sec,
        json!({"username": "aud3", "role": "audit-admin", "password": TARGET_PW}),
    )
    .await;
    // Nobody changes their own role.
    let me = env.get("/v1/auth/me", &sec).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.expect(
        403,
        "PUT",
        &format!("/v1/users/{me}"),
        &sec,
        json!({"role": "audit-admin"}),
    )
    .await;
    // Granted: the owner gets the TOTP secret at the first sign-in, once, and signs in with it.
    env.expect(
        200,
        "PUT",
        &format!("/v1/users/{id}"),
        &sec,
        json!({"role": "audit-admin"}),
    )
    .await;
    let (st, first) = env.try_login("aud2", TARGET_PW, None).await;
    assert_eq!(st, 200, "{first}");
    assert!(first.get("token").is_none(), "{first}");
    let secret = first["totp_enrollment"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first["totp_enrollment"]["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/Fenfa:aud2?secret="));
    let (st, again) = env.try_login("aud2", TARGET_PW, None).await;
    assert_eq!(st, 401, "the secret is shown once: {again}");
    let tok = env.login("aud2", TARGET_PW, Some(&secret)).await;
    env.get("/v1/audit/admin", &tok).await;
    // The new auditor cannot be silenced by one person.
    let (st, v) = env
        .call(
            "PUT",
            &format!("/v1/users/{id}"),
            Some(&sys),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    env.get("/v1/audit/admin", &tok).await;
}
both_backends!(no_single_person_obtains_a_second_admin_role);
