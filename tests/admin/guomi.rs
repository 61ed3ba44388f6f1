//! 国密 in the control plane: the admin audit chain switched to HMAC-SM3 by the security admin's
//! `settings.algorithms.audit_chain`; the switch is a chained record; the chain verifies record
//! by record across algorithms, an SM3 hash is what Python's gmssl computes, and tampering with
//! an SM3 record or with the switch itself is named. See `docs/guomi.md`.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{Env, MASTER_KEY};
use crate::python;

/// HMAC-SM3 of `prev || "\n" || canonical` under the admin audit key (HMAC-SHA256 of the label
/// under the master key), the canonical JSON array built by Python's `json`, the MAC by gmssl's
/// SM3 with RFC 2104 written out (`crate::python`): nothing of Fenfa's.
const PY_ADMIN_MAC: &str = r#"
import hashlib, hmac, json, sys
master, row = bytes.fromhex(sys.argv[1]), json.loads(sys.stdin.read())
key = hmac.new(master, b"fenfa-admin audit chain v1", hashlib.sha256).digest()
canonical = json.dumps([row[k] for k in ["seq", "at", "actor", "role", "source_ip", "action",
    "resource_kind", "resource_id", "agency_id", "before", "after"]],
    separators=(",", ":"), ensure_ascii=False)
print(hmac_sm3(key, row["prev_hash"].encode() + b"\n" + canonical.encode()).hex())
"#;

/// The stored row `seq` as the chain saw it (`before`/`after` as their stored text).
async fn raw_row(env: &Env, aud: &str, seq: i64) -> Value {
    let v = env.get(&format!("/v1/audit/admin/{seq}"), aud).await;
    let text = |k: &str| match &v[k] {
        Value::Null => Value::Null,
        other => Value::String(other.to_string()),
    };
    json!({
        "seq": v["seq"], "at": v["at"], "actor": v["actor"], "role": v["role"],
        "source_ip": v["source_ip"], "action": v["action"], "resource_kind": v["resource_kind"],
        "resource_id": v["resource_id"], "agency_id": v["agency_id"],
        "before": text("before"), "after": text("after"),
        "prev_hash": v["prev_hash"], "hash": v["hash"],
    })
}

fn gmssl_hmac_sm3(row: &Value) -> String {
    python::run(PY_ADMIN_MAC, &[MASTER_KEY], row.to_string().as_bytes())
}

async fn chain(env: &Env, aud: &str) -> Value {
    env.get("/v1/audit/admin/verify", aud).await
}

async fn the_admin_audit_chain_switches_to_hmac_sm3_as_a_chained_record(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let aud = env.auditor().await;
    env.agency(&sys, "before-switch").await;
    let settings = env.get("/v1/settings", &sec).await;

    // A bad algorithm is refused, naming the field, and changes nothing.
    let mut bad = settings.clone();
    bad["algorithms"] = json!({"audit_chain": "hmac-md5"});
    let e = env.expect(422, "PUT", "/v1/settings", &sec, bad).await;
    assert_eq!(
        e["error"]["fields"][0]["path"], "algorithms.audit_chain",
        "{e}"
    );
    let mut bad = settings.clone();
    bad["algorithms"] = json!(["hmac-sm3"]);
    env.expect(422, "PUT", "/v1/settings", &sec, bad).await;

    let mut sm3 = settings.clone();
    sm3["algorithms"] = json!({"audit_chain": "hmac-sm3"});
    env.expect(200, "PUT", "/v1/settings", &sec, sm3).await;
    // Changing the token settings without `algorithms` keeps them.
    let mut issuer_only = settings.clone();
    issuer_only["token_issuer"] = json!("https://id2.city.example");
    issuer_only.as_object_mut().unwrap().remove("algorithms");
    env.expect(200, "PUT", "/v1/settings", &sec, issuer_only)
        .await;
    let got = env.get("/v1/settings", &sec).await;
    assert_eq!(got["algorithms"]["audit_chain"], "hmac-sm3", "{got}");
    assert_eq!(got["token_issuer"], "https://id2.city.example", "{got}");
    // The in-process gateway's request trail follows the platform (from its next start).
    let cfg = env.get("/v1/config", &sec).await;
    assert_eq!(cfg["config"]["audit"]["chain"], "hmac-sm3", "{cfg}");
    env.agency(&sys, "after-switch").await;

    // The switch is a record of its own, right after the settings change.
    let list = env.get("/v1/audit/admin?limit=10", &aud).await;
    let items = list["items"].as_array().unwrap();
    let switch = items
        .iter()
        .find(|r| r["action"] == "audit.chain-algorithm")
        .unwrap_or_else(|| panic!("no switch record: {list}"));
    assert_eq!(switch["before"]["alg"], "hmac-sha256", "{switch}");
    assert_eq!(switch["after"]["alg"], "hmac-sm3", "{switch}");
    assert_eq!(switch["actor"], "security", "{switch}");
    let at = switch["seq"].as_i64().unwrap();
    let settings_record = items.iter().find(|r| r["seq"] == at - 1).unwrap();
    assert_eq!(settings_record["action"], "settings.update");

    let v = chain(env, &aud).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["algorithms"],
        json!([[1, "hmac-sha256"], [at, "hmac-sm3"]]),
        "{v}"
    );
    // An independent HMAC-SM3 agrees with the switch and with the record after it.
    for seq in [at, at + 1] {
        let row = raw_row(env, &aud, seq).await;
        assert_eq!(gmssl_hmac_sm3(&row), row["hash"].as_str().unwrap(), "{row}");
    }

    // Tampering with an SM3 record, or passing the switch off as SHA-256, is named.
    let pool = &env.app.store.pool;
    let original: (String,) = sqlx::query_as("SELECT actor FROM admin_audit WHERE seq = $1")
        .bind(at + 1)
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE admin_audit SET actor = 'mallory' WHERE seq = $1")
        .bind(at + 1)
        .execute(pool)
        .await
        .unwrap();
    let v = chain(env, &aud).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_seq"], at + 1, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("altered (hmac-sm3)"),
        "{v}"
    );
    sqlx::query("UPDATE admin_audit SET actor = $1 WHERE seq = $2")
        .bind(&original.0)
        .bind(at + 1)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(chain(env, &aud).await["ok"], true);
    sqlx::query("UPDATE admin_audit SET after_json = $1 WHERE seq = $2")
        .bind(r#"{"alg":"hmac-sha256"}"#)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    let v = chain(env, &aud).await;
    assert_eq!(
        (v["ok"].clone(), v["first_bad_seq"].clone()),
        (json!(false), json!(at)),
        "{v}"
    );
    sqlx::query("UPDATE admin_audit SET after_json = $1 WHERE seq = $2")
        .bind(r#"{"alg":"hmac-sm3"}"#)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();

    // Back to SHA-256: a second switch; the whole chain still verifies.
    let mut back = settings.clone();
    back["algorithms"] = json!({"audit_chain": "hmac-sha256"});
    env.expect(200, "PUT", "/v1/settings", &sec, back).await;
    // Saving the same settings again writes no switch.
    let before = chain(env, &aud).await["records"].as_i64().unwrap();
    let mut same = settings.clone();
    same["algorithms"] = json!({"audit_chain": "hmac-sha256"});
    env.expect(200, "PUT", "/v1/settings", &sec, same).await;
    let v = chain(env, &aud).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["records"].as_i64().unwrap(),
        before + 1,
        "only the settings record"
    );
    let algs = v["algorithms"].as_array().unwrap();
    assert_eq!(algs.len(), 3, "{v}");
    assert_eq!(algs[2][1], "hmac-sha256", "{v}");
}
both_backends!(the_admin_audit_chain_switches_to_hmac_sm3_as_a_chained_record);

/// Every sealed value in the database: (where, prefix up to the first `:`).
async fn sealed_values(env: &Env) -> Vec<(String, String)> {
    use sqlx::Row;
    let pool = &env.app.store.pool;
    let mut out = Vec::new();
    for r in
        sqlx::query("SELECT id, body FROM resources WHERE kind IN ('signing-key', 'token-key')")
            .fetch_all(pool)
            .await
            .unwrap()
    {
        let body: Value = serde_json::from_str(&r.get::<String, _>("body")).unwrap();
        for field in ["sealed_secret", "sealed_k"] {
            if let Some(s) = body[field].as_str() {
                out.push((
                    format!("{} {field}", r.get::<String, _>("id")),
                    s.to_string(),
                ));
            }
        }
    }
    for r in sqlx::query("SELECT id, sealed_totp FROM users WHERE sealed_totp IS NOT NULL")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        out.push((
            format!("user {}", r.get::<String, _>("id")),
            r.get::<String, _>("sealed_totp"),
        ));
    }
    let cfg = sqlx::query("SELECT config FROM config_state WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap();
    out.push(("config".into(), cfg.get::<String, _>("config")));
    out.into_iter()
        .map(|(at, s)| (at, s.split(':').next().unwrap_or_default().to_string()))
        .collect()
}

async fn secrets_are_sealed_with_sm4_gcm_once_selected_and_re_encrypted_online(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let ag = env.agency(&sys, "sm4-agency").await;
    env.expect(
        201,
        "POST",
        "/v1/signing-keys",
        &sec,
        json!({"agency_id": ag, "key_id": "before-sm4"}),
    )
    .await;
    let hs = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
    env.expect(
        201,
        "POST",
        "/v1/token-keys",
        &sec,
        json!({"jwk": {"kty": "oct", "kid": "hs-sm4", "alg": "HS256", "k": hs}}),
    )
    .await;
    assert!(sealed_values(env).await.iter().all(|(_, p)| p == "v1"));

    let mut settings = env.get("/v1/settings", &sec).await;
    settings["algorithms"] = json!({"secrets": "sm4-gcm"});
    env.expect(200, "PUT", "/v1/settings", &sec, settings.clone())
        .await;
    // A secret sealed from now on is SM4-GCM; the older ones still open (the config renders).
    let created = env
        .expect(
            201,
            "POST",
            "/v1/signing-keys",
            &sec,
            json!({"agency_id": ag, "key_id": "after-sm4"}),
        )
        .await;
    let prefixes = sealed_values(env).await;
    assert!(
        prefixes.contains(&(
            format!("{} sealed_secret", created["id"].as_str().unwrap()),
            "sm4".into()
        )),
        "{prefixes:?}"
    );
    assert!(prefixes.iter().any(|(_, p)| p == "v1"), "{prefixes:?}");

    // Only the security admin re-encrypts.
    env.expect(403, "POST", "/v1/secrets/re-encrypt", &sys, json!({}))
        .await;
    let r = env
        .expect(200, "POST", "/v1/secrets/re-encrypt", &sec, json!({}))
        .await;
    assert_eq!(r["cipher"], "sm4-gcm", "{r}");
    assert_eq!(r["re_encrypted"]["signing_keys"], 1, "{r}");
    assert_eq!(r["re_encrypted"]["token_keys"], 1, "{r}");
    assert!(
        r["re_encrypted"]["totp_secrets"].as_u64().unwrap() >= 3,
        "{r}"
    );
    let left: Vec<_> = sealed_values(env)
        .await
        .into_iter()
        .filter(|(_, p)| p != "sm4")
        .collect();
    assert!(left.is_empty(), "not re-sealed: {left:?}");

    // Everything still opens: sign-in with TOTP, the rendered config with both secrets.
    let sec = env.security().await;
    let cfg = env.get("/v1/config", &sec).await;
    assert_eq!(
        cfg["config"]["agencies"][0]["signing_keys"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{cfg}"
    );
    let (version, text) = fenfa_admin::commit::current_text(&env.app).await.unwrap();
    assert!(version > 0 && text.contains("after-sm4") && text.contains("before-sm4"));
    assert!(text.contains(hs), "the HMAC token key reaches the gateway");
    // Idempotent, and on the admin audit trail.
    let again = env
        .expect(200, "POST", "/v1/secrets/re-encrypt", &sec, json!({}))
        .await;
    assert_eq!(again["re_encrypted"]["signing_keys"], 0, "{again}");
    assert_eq!(again["re_encrypted"]["totp_secrets"], 0, "{again}");
    let aud = env.auditor().await;
    let list = env
        .get("/v1/audit/admin?action=secrets.re-encrypt", &aud)
        .await;
    assert!(list["items"].as_array().unwrap().len() >= 2, "{list}");

    // Back to AES-256-GCM, re-encrypted again: no SM4 left.
    settings["algorithms"] = json!({"secrets": "aes-256-gcm"});
    env.expect(200, "PUT", "/v1/settings", &sec, settings).await;
    env.expect(200, "POST", "/v1/secrets/re-encrypt", &sec, json!({}))
        .await;
    assert!(sealed_values(env).await.iter().all(|(_, p)| p == "v1"));
    env.security().await;
}
both_backends!(secrets_are_sealed_with_sm4_gcm_once_selected_and_re_encrypted_online);

/// `algorithms.upstream_signature` is the platform's default; an agency may set its own.
async fn agencies_sign_for_their_backends_with_the_platforms_algorithm_or_their_own(env: &Env) {
    let sys = env.admin().await;
    let sec = env.security().await;
    let follows = env.agency(&sys, "follows-platform").await;
    let own = env
        .expect(
            201,
            "POST",
            "/v1/agencies",
            &sys,
            json!({"name": "keeps-sha256", "title": "自定", "signature_algorithm": "hmac-sha256"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (ag, key) in [(&follows, "f1"), (&own, "o1")] {
        env.expect(
            201,
            "POST",
            "/v1/signing-keys",
            &sec,
            json!({"agency_id": ag, "key_id": key}),
        )
        .await;
    }
    let e = env
        .expect(
            422,
            "PUT",
            &format!("/v1/agencies/{own}"),
            &sys,
            json!({"name": "keeps-sha256", "title": "自定", "signature_algorithm": "sm3"}),
        )
        .await;
    assert_eq!(
        e["error"]["fields"][0]["path"], "signature_algorithm",
        "{e}"
    );
    let algorithm = |cfg: &Value, name: &str| {
        cfg["config"]["agencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {cfg}"))["signature_algorithm"]
            .clone()
    };
    let cfg = env.get("/v1/config", &sec).await;
    assert_eq!(algorithm(&cfg, "follows-platform"), Value::Null, "{cfg}");

    let mut settings = env.get("/v1/settings", &sec).await;
    settings["algorithms"] = json!({"upstream_signature": "hmac-sm3"});
    env.expect(200, "PUT", "/v1/settings", &sec, settings).await;
    let cfg = env.get("/v1/config", &sec).await;
    assert_eq!(algorithm(&cfg, "follows-platform"), "hmac-sm3", "{cfg}");
    assert_eq!(algorithm(&cfg, "keeps-sha256"), Value::Null, "{cfg}");
    // The agency switches to SM3 on its own too, and back to following the platform.
    env.expect(
        200,
        "PUT",
        &format!("/v1/agencies/{own}"),
        &sys,
        json!({"name": "keeps-sha256", "title": "自定", "signature_algorithm": "hmac-sm3"}),
    )
    .await;
    let cfg = env.get("/v1/config", &sec).await;
    assert_eq!(algorithm(&cfg, "keeps-sha256"), "hmac-sm3", "{cfg}");
}
both_backends!(agencies_sign_for_their_backends_with_the_platforms_algorithm_or_their_own);
