//! Admin audit: every mutation recorded (actor, role, time, source IP, action, resource, before
//! and after), hash-chained, queryable by the audit admin with filters and pagination, and
//! impossible to edit or delete through the API.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::*;

async fn every_mutation_is_recorded_with_before_and_after(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let aud = env.auditor().await;
    let ag = env.agency(&sys, "police").await;
    env.expect(
        200,
        "PUT",
        &format!("/v1/agencies/{ag}"),
        &sys,
        json!({"name": "police", "title": "公安局"}),
    )
    .await;
    env.expect(
        201,
        "POST",
        "/v1/signing-keys",
        &sec,
        json!({"agency_id": ag, "key_id": "police-1"}),
    )
    .await;
    let v = env
        .get(&format!("/v1/audit/admin?agency_id={ag}"), &aud)
        .await;
    let items = v["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["signing-key.create", "agency.update", "agency.create"],
        "newest first"
    );
    let upd = &items[1];
    assert_eq!(upd["actor"], "admin");
    assert_eq!(upd["role"], "system-admin");
    assert_eq!(upd["source_ip"], "127.0.0.1");
    assert_eq!(upd["resource_kind"], "agency");
    assert_eq!(upd["resource_id"], ag.as_str());
    assert_eq!(upd["before"]["title"], "police 委办局");
    assert_eq!(upd["after"]["title"], "公安局");
    assert!(upd["at"].as_i64().unwrap() >= T0);
    assert_eq!(items[2]["before"], Value::Null);
    // The secret is never in the trail.
    let key = &items[0];
    assert_eq!(key["actor"], "security");
    assert!(
        !key.to_string().contains("sealed") && key["after"].get("secret").is_none(),
        "{key}"
    );
    // Sign-ins are recorded too.
    let (st, _) = env
        .try_login("admin", "Wrong-Password-1", Some(ADMIN_TOTP))
        .await;
    assert_eq!(st, 401);
    let v = env
        .get("/v1/audit/admin?action=auth.login_failed", &aud)
        .await;
    assert_eq!(v["items"][0]["actor"], "admin");
}
both_backends!(every_mutation_is_recorded_with_before_and_after);

async fn the_chain_verifies_and_detects_tampering(env: &Env) {
    let sys = env.admin().await;
    let aud = env.auditor().await;
    for i in 0..3 {
        env.agency(&sys, &format!("ag{i}")).await;
    }
    let v = env.get("/v1/audit/admin/verify", &aud).await;
    assert_eq!(v["ok"], true, "{v}");
    let n = v["records"].as_i64().unwrap();
    assert!(n >= 8, "{v}");
    // Each record links to the previous one.
    let page = env.get("/v1/audit/admin?limit=2", &aud).await;
    assert_eq!(page["items"][0]["prev_hash"], page["items"][1]["hash"]);
    // Someone with database access rewrites history: the chain says where.
    use sqlx::Row;
    let original: String = sqlx::query("SELECT actor FROM admin_audit WHERE seq = 3")
        .fetch_one(&env.app.store.pool)
        .await
        .unwrap()
        .get("actor");
    sqlx::query("UPDATE admin_audit SET actor = 'mallory' WHERE seq = 3")
        .execute(&env.app.store.pool)
        .await
        .unwrap();
    let v = env.get("/v1/audit/admin/verify", &aud).await;
    assert_eq!(
        (v["ok"].as_bool(), v["first_bad_seq"].as_i64()),
        (Some(false), Some(3)),
        "{v}"
    );
    sqlx::query("UPDATE admin_audit SET actor = $1 WHERE seq = 3")
        .bind(original)
        .execute(&env.app.store.pool)
        .await
        .unwrap();
    let restored = env.get("/v1/audit/admin/verify", &aud).await;
    assert_eq!(restored["ok"], true, "{restored}");
    // Removing the newest record is detected as well.
    sqlx::query(&format!(
        "DELETE FROM admin_audit WHERE seq = {}",
        restored["records"]
    ))
    .execute(&env.app.store.pool)
    .await
    .unwrap();
    let v = env.get("/v1/audit/admin/verify", &aud).await;
    assert_eq!(v["ok"], false, "{v}");
}
both_backends!(the_chain_verifies_and_detects_tampering);

async fn audit_admin_pages_and_filters_and_nobody_edits(env: &Env) {
    let sys = env.admin().await;
    let aud = env.auditor().await;
    for i in 0..5 {
        env.agency(&sys, &format!("page{i}")).await;
    }
    let mut seen = Vec::new();
    let mut url = "/v1/audit/admin?action=agency.create&limit=2".to_string();
    loop {
        let v = env.get(&url, &aud).await;
        for r in v["items"].as_array().unwrap() {
            seen.push(r["seq"].as_i64().unwrap());
        }
        match v["next_before"].as_i64() {
            Some(b) => url = format!("/v1/audit/admin?action=agency.create&limit=2&before={b}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    let v = env
        .get(
            &format!(
                "/v1/audit/admin?actor=admin&from={}&to={}",
                T0,
                env.now() + 1
            ),
            &aud,
        )
        .await;
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["actor"] == "admin"));
    let v = env.get("/v1/audit/admin?actor=nobody", &aud).await;
    assert!(v["items"].as_array().unwrap().is_empty());
    let one = env.get(&format!("/v1/audit/admin/{}", seen[0]), &aud).await;
    assert_eq!(one["seq"].as_i64(), Some(seen[0]));
    // No one may change or delete a record: the methods do not exist.
    for token in [&aud, &sys] {
        for m in ["PUT", "PATCH", "DELETE"] {
            let (st, v) = env
                .call(
                    m,
                    &format!("/v1/audit/admin/{}", seen[0]),
                    Some(token),
                    Some(json!({"actor": "x"})),
                )
                .await;
            assert_eq!(st, 405, "{m}: {v}");
            assert_eq!(v["error"]["code"], "method_not_allowed");
        }
        let (st, _) = env
            .call("POST", "/v1/audit/admin", Some(token), Some(json!({})))
            .await;
        assert_eq!(st, 405);
        let (st, _) = env
            .call("DELETE", "/v1/audit/admin", Some(token), None)
            .await;
        assert_eq!(st, 405);
    }
    // Only the audit admin reads the trail.
    let (st, _) = env.call("GET", "/v1/audit/admin", Some(&sys), None).await;
    assert_eq!(st, 403);
}
both_backends!(audit_admin_pages_and_filters_and_nobody_edits);
