//! Identity through the real gateway, with tokens minted by PyJWT (an implementation independent
//! of the gateway's ring-based verifier): every algorithm accepted, the attacks of issue 3 refused
//! with their specific codes, revocation and key rotation by config reload, the verified-token
//! cache, channel publication and app allow-lists, and the identity the backend receives — signed
//! by the gateway and checked with Python's `hmac`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::support::tokens::{jwt_auth, Keys};
use crate::support::{client, error_code, python, Gateway, Upstream};

/// One service on `up`, one catch-all route with `plugins` (a YAML flow list).
fn single_route(up: &Upstream, plugins: &str) -> String {
    format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: r
    service: s
    paths: ["/*"]
    plugins: [{plugins}]
"#,
        up.addr
    )
}

/// GET `path` with `Authorization: Bearer <token>` when a token is given.
async fn get(gw: &Gateway, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// A refusal: (status, `error.code`, `WWW-Authenticate` or "").
async fn refusal(resp: reqwest::Response) -> (u16, String, String) {
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (status, code, body) = error_code(resp).await;
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    (status, code, www)
}

/// Reloads with `body` and waits for the next generation.
fn reload(gw: &Gateway, body: &str) {
    let next = gw.generation() + 1;
    gw.write_config(body);
    gw.signal(Signal::SIGHUP);
    gw.wait_generation(next);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const ALL_ALGS: [(&str, &str); 6] = [
    ("es-1", "ES256"),
    ("rs-1", "RS256"),
    ("ps-1", "PS256"),
    ("ed-1", "EdDSA"),
    ("hs-1", "HS256"),
    ("sm-1", "SM2"),
];

#[tokio::test]
async fn tokens_of_every_algorithm_pass_and_the_backend_gets_the_identity_not_the_token() {
    let keys = Keys::generate(&ALL_ALGS);
    let up = Upstream::start("a");
    let gw = Gateway::start(&single_route(&up, &jwt_auth(&keys.jwks(), "")));
    let channels = ["wechat", "alipay", "baidu", "wechat", "alipay", "baidu"];
    let specs: Vec<Value> = ALL_ALGS
        .iter()
        .zip(channels)
        .map(|((kid, _), chn)| {
            json!({"kid": kid, "claims": {"sub": format!("u_{kid}"), "chn": chn, "app": format!("app_{kid}")}})
        })
        .collect();
    let tokens = keys.mint(&specs);
    for (((kid, alg), chn), token) in ALL_ALGS.iter().zip(channels).zip(&tokens) {
        let resp = client()
            .get(gw.url("/api/me?x=1"))
            .bearer_auth(token)
            .header("x-fenfa-user", "forged")
            .header("x-fenfa-app", "forged")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{alg} token");
        let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let seen = up.last();
        assert_eq!(
            seen.header("x-fenfa-user"),
            Some(format!("u_{kid}").as_str()),
            "{alg}"
        );
        assert_eq!(seen.header("x-fenfa-channel"), Some(chn), "{alg}");
        assert_eq!(
            seen.header("x-fenfa-app"),
            Some(format!("app_{kid}").as_str()),
            "{alg}"
        );
        assert_eq!(seen.header("x-request-id"), Some(rid.as_str()), "{alg}");
        assert!(!rid.is_empty());
        assert_eq!(
            seen.header("authorization"),
            None,
            "{alg}: the backend never sees the token"
        );
        assert_eq!(
            seen.headers
                .iter()
                .filter(|(k, _)| k.starts_with("x-fenfa-"))
                .count(),
            3,
            "{alg}: one of each identity header, the forged ones dropped: {:?}",
            seen.headers
        );
    }
    assert_eq!(up.hits(), ALL_ALGS.len());
}

#[tokio::test]
async fn attacks_and_bad_claims_get_401_with_a_specific_code_and_a_challenge() {
    let keys = Keys::generate(&ALL_ALGS);
    // An attacker's own key pairs that claim the gateway's kids.
    let rogue = Keys::generate(&[("es-1", "ES256"), ("ed-1", "EdDSA")]);
    let up = Upstream::start("a");
    let gw = Gateway::start(&single_route(
        &up,
        &jwt_auth(&keys.jwks(), "leeway_seconds: 60"),
    ));

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "alg none",
            json!({"kid": "rs-1", "attack": "none"}),
            "unsupported_alg",
        ),
        (
            "alg none, no kid",
            json!({"kid": "es-1", "attack": "none", "header": {"kid": null}}),
            "unsupported_alg",
        ),
        (
            "HS256 keyed with the RSA public PEM",
            json!({"kid": "rs-1", "attack": "hs_with_public_pem"}),
            "alg_mismatch",
        ),
        (
            "HS256 keyed with the RSA-PSS public PEM",
            json!({"kid": "ps-1", "attack": "hs_with_public_pem"}),
            "alg_mismatch",
        ),
        (
            "HS256 keyed with the EC public PEM",
            json!({"kid": "es-1", "attack": "hs_with_public_pem"}),
            "alg_mismatch",
        ),
        (
            "HS256 keyed with the Ed25519 public PEM",
            json!({"kid": "ed-1", "attack": "hs_with_public_pem"}),
            "alg_mismatch",
        ),
        (
            "PS256 against the RS256-pinned key",
            json!({"kid": "rs-1", "alg": "PS256"}),
            "alg_mismatch",
        ),
        (
            "RS256 against the PS256-pinned key",
            json!({"kid": "ps-1", "alg": "RS256"}),
            "alg_mismatch",
        ),
        (
            "unknown kid",
            json!({"kid": "es-1", "header": {"kid": "es-2"}}),
            "unknown_kid",
        ),
        (
            "no kid",
            json!({"kid": "es-1", "header": {"kid": null}}),
            "unknown_kid",
        ),
        (
            "tampered ES256",
            json!({"kid": "es-1", "attack": "tamper"}),
            "bad_signature",
        ),
        (
            "tampered RS256",
            json!({"kid": "rs-1", "attack": "tamper"}),
            "bad_signature",
        ),
        (
            "tampered PS256",
            json!({"kid": "ps-1", "attack": "tamper"}),
            "bad_signature",
        ),
        (
            "tampered EdDSA",
            json!({"kid": "ed-1", "attack": "tamper"}),
            "bad_signature",
        ),
        (
            "tampered HS256",
            json!({"kid": "hs-1", "attack": "tamper"}),
            "bad_signature",
        ),
        (
            "tampered SM2 (signed by gmssl)",
            json!({"kid": "sm-1", "attack": "tamper"}),
            "bad_signature",
        ),
        (
            "an SM2 token under an ES256 key's kid",
            json!({"kid": "sm-1", "header": {"kid": "es-1"}}),
            "alg_mismatch",
        ),
        (
            "expired beyond the leeway",
            json!({"kid": "es-1", "exp_in": -300}),
            "token_expired",
        ),
        (
            "not yet valid beyond the leeway",
            json!({"kid": "es-1", "nbf_in": 300}),
            "token_not_yet_valid",
        ),
        (
            "wrong iss",
            json!({"kid": "es-1", "claims": {"iss": "https://id.evil.example"}}),
            "wrong_issuer",
        ),
        (
            "no iss",
            json!({"kid": "es-1", "drop": ["iss"]}),
            "wrong_issuer",
        ),
        (
            "wrong aud",
            json!({"kid": "es-1", "claims": {"aud": "other-gateway"}}),
            "wrong_audience",
        ),
        (
            "aud list without ours",
            json!({"kid": "es-1", "claims": {"aud": ["a", "b"]}}),
            "wrong_audience",
        ),
        (
            "no aud",
            json!({"kid": "es-1", "drop": ["aud"]}),
            "wrong_audience",
        ),
        (
            "no sub",
            json!({"kid": "es-1", "drop": ["sub"]}),
            "missing_claim",
        ),
        (
            "no chn",
            json!({"kid": "ed-1", "drop": ["chn"]}),
            "missing_claim",
        ),
        (
            "no app",
            json!({"kid": "hs-1", "drop": ["app"]}),
            "missing_claim",
        ),
        (
            "no exp",
            json!({"kid": "rs-1", "drop": ["exp"]}),
            "missing_claim",
        ),
        (
            "unknown channel",
            json!({"kid": "es-1", "claims": {"chn": "douyin"}}),
            "invalid_channel",
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|(_, s, _)| s.clone()).collect();
    let tokens = keys.mint(&specs);
    let mut refused: Vec<(String, String, String)> = cases
        .iter()
        .zip(tokens)
        .map(|((name, _, code), t)| (name.to_string(), t, code.to_string()))
        .collect();
    // Properly signed by PyJWT, but with keys the gateway does not have, under its kids.
    let forged = rogue.mint(&[json!({"kid": "es-1"}), json!({"kid": "ed-1"})]);
    refused.push((
        "ES256 by another key under our kid".into(),
        forged[0].clone(),
        "bad_signature".into(),
    ));
    refused.push((
        "EdDSA by another key under our kid".into(),
        forged[1].clone(),
        "bad_signature".into(),
    ));
    refused.push((
        "not a JWS".into(),
        "abc.def".into(),
        "malformed_token".into(),
    ));

    for (name, token, want) in &refused {
        let (status, code, www) = refusal(get(&gw, "/api/x", Some(token)).await).await;
        assert_eq!((status, code.as_str()), (401, want.as_str()), "{name}");
        assert!(
            www.starts_with("Bearer realm=\"fenfa\"") && www.contains("error=\"invalid_token\""),
            "{name}: WWW-Authenticate {www:?}"
        );
    }

    // No token, or not a Bearer one: a bare challenge.
    let (status, code, www) = refusal(get(&gw, "/api/x", None).await).await;
    assert_eq!(
        (status, code.as_str(), www.as_str()),
        (401, "missing_token", "Bearer realm=\"fenfa\"")
    );
    let basic = client()
        .get(gw.url("/api/x"))
        .header("authorization", "Basic dTpw")
        .send()
        .await
        .unwrap();
    let (status, code, www) = refusal(basic).await;
    assert_eq!((status, code.as_str()), (401, "missing_token"));
    assert!(www.starts_with("Bearer realm=\"fenfa\""), "{www}");
    // A good token, but in two Authorization headers: which one counts would be ambiguous.
    let good = keys.token(json!({"kid": "es-1"}));
    let two = client()
        .get(gw.url("/api/x"))
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = refusal(two).await;
    assert_eq!((status, code.as_str()), (401, "malformed_token"));
    // Longer than 8192 bytes: refused before any parsing.
    let huge = keys.token(json!({"kid": "hs-1", "claims": {"pad": "p".repeat(9000)}}));
    let (status, code, _) = refusal(get(&gw, "/api/x", Some(&huge)).await).await;
    assert_eq!((status, code.as_str()), (401, "malformed_token"));
    assert_eq!(up.hits(), 0, "no refused request reached the backend");

    // The scheme is case-insensitive.
    let lower = client()
        .get(gw.url("/api/x"))
        .header("authorization", format!("bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);

    // The edges that must pass: inside the leeway, and `aud` as a list containing ours.
    let ok = keys.mint(&[
        json!({"kid": "es-1", "nbf_in": 20}),
        json!({"kid": "rs-1", "exp_in": -10}),
        json!({"kid": "hs-1", "claims": {"aud": ["other", "fenfa"]}}),
    ]);
    for (name, token) in ["nbf 20 s ahead", "expired 10 s ago", "aud list"]
        .iter()
        .zip(&ok)
    {
        let resp = get(&gw, "/api/x", Some(token)).await;
        assert_eq!(resp.status(), 200, "{name} passes");
    }
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn revoking_a_cached_token_or_a_key_takes_effect_with_the_next_config() {
    let keys = Keys::generate(&[("es-1", "ES256"), ("rs-1", "RS256")]);
    let up = Upstream::start("a");
    let config = |extra: &str| single_route(&up, &jwt_auth(&keys.jwks(), extra));
    let gw = Gateway::start(&config(""));
    let t = keys.mint(&[
        json!({"kid": "es-1", "claims": {"jti": "jti-revoked"}}),
        json!({"kid": "es-1", "claims": {"jti": "jti-kept"}}),
        json!({"kid": "rs-1"}),
    ]);
    let (revoked, kept, rsa) = (&t[0], &t[1], &t[2]);

    // The cached path: the same token again and again, on whichever worker thread serves it.
    for _ in 0..8 {
        for token in [revoked, kept, rsa] {
            assert_eq!(get(&gw, "/x", Some(token)).await.status(), 200);
        }
    }

    reload(&gw, &config("revoked_jtis: [jti-revoked]"));
    for _ in 0..8 {
        let (status, code, www) = refusal(get(&gw, "/x", Some(revoked)).await).await;
        assert_eq!((status, code.as_str()), (401, "revoked_token"));
        assert!(www.contains("invalid_token"), "{www}");
        assert_eq!(get(&gw, "/x", Some(kept)).await.status(), 200);
        assert_eq!(get(&gw, "/x", Some(rsa)).await.status(), 200);
    }

    reload(
        &gw,
        &config("revoked_jtis: [jti-revoked], revoked_kids: [rs-1]"),
    );
    for _ in 0..8 {
        let (status, code, _) = refusal(get(&gw, "/x", Some(rsa)).await).await;
        assert_eq!((status, code.as_str()), (401, "revoked_key"));
        assert_eq!(get(&gw, "/x", Some(kept)).await.status(), 200);
    }

    // Withdrawing the revocation is configuration too.
    reload(&gw, &config(""));
    assert_eq!(get(&gw, "/x", Some(revoked)).await.status(), 200);
    assert_eq!(get(&gw, "/x", Some(rsa)).await.status(), 200);
}

#[tokio::test]
async fn key_rotation_two_kids_live_then_the_old_one_removed() {
    let keys = Keys::generate(&[("idp-2025", "ES256"), ("idp-2026", "EdDSA")]);
    let up = Upstream::start("a");
    let gw = Gateway::start(&single_route(
        &up,
        &jwt_auth(&keys.jwks_of(&["idp-2025"]), ""),
    ));
    let t = keys.mint(&[json!({"kid": "idp-2025"}), json!({"kid": "idp-2026"})]);
    let (old, new) = (&t[0], &t[1]);
    assert_eq!(get(&gw, "/x", Some(old)).await.status(), 200);
    let (status, code, _) = refusal(get(&gw, "/x", Some(new)).await).await;
    assert_eq!((status, code.as_str()), (401, "unknown_kid"));

    // Step 1: both keys live; both verify.
    reload(&gw, &single_route(&up, &jwt_auth(&keys.jwks(), "")));
    for _ in 0..4 {
        assert_eq!(get(&gw, "/x", Some(old)).await.status(), 200);
        assert_eq!(get(&gw, "/x", Some(new)).await.status(), 200);
    }

    // Step 3: the old key removed; its tokens (verified and cached before) are refused.
    reload(
        &gw,
        &single_route(&up, &jwt_auth(&keys.jwks_of(&["idp-2026"]), "")),
    );
    for _ in 0..4 {
        let (status, code, _) = refusal(get(&gw, "/x", Some(old)).await).await;
        assert_eq!((status, code.as_str()), (401, "unknown_kid"));
        assert_eq!(get(&gw, "/x", Some(new)).await.status(), 200);
    }
}

#[tokio::test]
async fn a_cached_token_expires_with_the_token() {
    let keys = Keys::generate(&[("hs-1", "HS256")]);
    let up = Upstream::start("a");
    let gw = Gateway::start(&single_route(
        &up,
        &jwt_auth(&keys.jwks(), "leeway_seconds: 0"),
    ));
    // Minting runs PyJWT in a subprocess, which can take seconds on a loaded machine: mint
    // again with a longer lifetime until the token has at least 3 s left to be used in.
    let mut lifetime = 5;
    let (exp, token) = loop {
        let exp = unix_now() + lifetime;
        let token = keys.token(json!({"kid": "hs-1", "claims": {"exp": exp}}));
        if unix_now() + 3 <= exp {
            break (exp, token);
        }
        lifetime *= 2;
    };
    let deadline = Instant::now() + Duration::from_secs(lifetime + 15);
    let mut passed = 0;
    loop {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let resp = get(&gw, "/x", Some(&token)).await;
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        if resp.status() == 200 {
            assert!(
                before.as_secs() < exp,
                "accepted at {before:?}, after exp {exp}"
            );
            passed += 1;
        } else {
            let (status, code, _) = refusal(resp).await;
            assert_eq!((status, code.as_str()), (401, "token_expired"));
            assert!(
                after.as_secs() >= exp,
                "refused at {after:?}, before exp {exp}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        passed >= 2,
        "the token was used (and cached) before it expired: {passed}"
    );
    // Refused on every worker thread, including those that cached it.
    for _ in 0..10 {
        let (status, code, _) = refusal(get(&gw, "/x", Some(&token)).await).await;
        assert_eq!((status, code.as_str()), (401, "token_expired"));
    }
}

#[tokio::test]
async fn services_are_served_only_on_their_channels_and_to_their_apps() {
    let keys = Keys::generate(&[("es-1", "ES256")]);
    let up = Upstream::start("a");
    let body = format!(
        r#"
global_plugins: [{jwt}]
services:
  - name: permits
    publish: {{ channels: [wechat, alipay] }}
    upstream:
      targets: [{{ addr: "{addr}" }}]
  - name: pension
    publish: {{ channels: [wechat, alipay, baidu], apps: [wx_gov, ali_gov] }}
    upstream:
      targets: [{{ addr: "{addr}" }}]
  - name: notices
    upstream:
      targets: [{{ addr: "{addr}" }}]
routes:
  - {{ name: permits, service: permits, paths: ["/permits/*"] }}
  - name: permits-anonymous
    service: permits
    paths: ["/permits-public/*"]
    plugins: [{{ name: jwt-auth, enabled: false }}]
  - {{ name: pension, service: pension, paths: ["/pension/*"] }}
  - {{ name: notices, service: notices, paths: ["/notices/*"] }}
"#,
        jwt = jwt_auth(&keys.jwks(), ""),
        addr = up.addr
    );
    let gw = Gateway::start(&body);
    let t = keys.mint(&[
        json!({"kid": "es-1", "claims": {"chn": "wechat", "app": "wx_gov"}}),
        json!({"kid": "es-1", "claims": {"chn": "alipay", "app": "ali_gov"}}),
        json!({"kid": "es-1", "claims": {"chn": "baidu", "app": "wx_gov"}}),
        json!({"kid": "es-1", "claims": {"chn": "wechat", "app": "wx_other"}}),
    ]);
    let (wechat, alipay, baidu, other_app) = (&t[0], &t[1], &t[2], &t[3]);

    // Published on wechat and alipay only.
    assert_eq!(get(&gw, "/permits/1", Some(wechat)).await.status(), 200);
    assert_eq!(get(&gw, "/permits/1", Some(alipay)).await.status(), 200);
    assert_eq!(up.last().header("x-fenfa-channel"), Some("alipay"));
    let (status, code, _) = refusal(get(&gw, "/permits/1", Some(baidu)).await).await;
    assert_eq!((status, code.as_str()), (403, "channel_not_published"));
    // Any app on a published channel.
    assert_eq!(get(&gw, "/permits/1", Some(other_app)).await.status(), 200);

    // Published everywhere, to two apps.
    assert_eq!(get(&gw, "/pension/1", Some(wechat)).await.status(), 200);
    assert_eq!(get(&gw, "/pension/1", Some(baidu)).await.status(), 200);
    assert_eq!(get(&gw, "/pension/1", Some(alipay)).await.status(), 200);
    let (status, code, _) = refusal(get(&gw, "/pension/1", Some(other_app)).await).await;
    assert_eq!((status, code.as_str()), (403, "app_not_allowed"));

    // Not published per channel: every verified caller.
    assert_eq!(get(&gw, "/notices/1", Some(baidu)).await.status(), 200);
    let hits = up.hits();
    assert_eq!(hits, 7);

    // No token: 401, whether jwt-auth runs or a route turned it off on a published service.
    for path in [
        "/permits/1",
        "/pension/1",
        "/notices/1",
        "/permits-public/1",
    ] {
        let (status, code, www) = refusal(get(&gw, path, None).await).await;
        assert_eq!((status, code.as_str()), (401, "missing_token"), "{path}");
        assert!(www.starts_with("Bearer realm=\"fenfa\""), "{path}: {www}");
    }
    // Without jwt-auth there is no identity, so a token does not help either.
    let (status, code, _) = refusal(get(&gw, "/permits-public/1", Some(wechat)).await).await;
    assert_eq!((status, code.as_str()), (401, "missing_token"));
    assert_eq!(up.hits(), hits, "no refused request reached the backend");
}

/// The agency key used below: base64 of 32 bytes 0x20..=0x3f.
const AGENCY_SECRET: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

#[tokio::test]
async fn the_gateway_signature_covers_the_identity_headers() {
    let keys = Keys::generate(&[("rs-1", "RS256")]);
    let up = Upstream::start("a");
    let body = format!(
        r#"
agencies:
  - name: housing-bureau
    signing_keys: [{{ id: k2026b, secret: "{AGENCY_SECRET}" }}]
services:
  - name: housing
    agency: housing-bureau
    publish: {{ channels: [alipay] }}
    upstream:
      targets: [{{ addr: "{}" }}]
    plugins: [{}]
routes:
  - name: r
    service: housing
    paths: ["/housing/*"]
"#,
        up.addr,
        jwt_auth(&keys.jwks(), "")
    );
    let gw = Gateway::start(&body);
    let token = keys.token(json!({
        "kid": "rs-1",
        "claims": {"sub": "u_8f3a2c91", "chn": "alipay", "app": "2021000123456789"}
    }));
    let resp = get(&gw, "/housing/apply/7?lang=zh-CN&b=%20x", Some(&token)).await;
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-fenfa-user"), Some("u_8f3a2c91"));
    assert_eq!(seen.header("x-fenfa-channel"), Some("alipay"));
    assert_eq!(seen.header("x-fenfa-app"), Some("2021000123456789"));
    assert_eq!(seen.header("x-fenfa-key-id"), Some("k2026b"));

    // Recompute from what the backend received, with Python's standard library, following
    // docs/upstream-signature.md; then again with each identity header altered, which must not
    // match: the identity is covered.
    let script = r#"
import base64, hashlib, hmac, json, sys
a = json.loads(sys.argv[1])
key = base64.b64decode(a["secret"])
fields = ["FENFA-HMAC-SHA256", a["ts"], a["method"].upper(), a["path"], a["query"],
          a["user"], a["channel"], a["app"], a["rid"]]
def sign(f):
    return base64.b64encode(hmac.new(key, "\n".join(f).encode(), hashlib.sha256).digest()).decode()
out = [sign(fields)]
for i in (5, 6, 7):
    g = list(fields); g[i] = g[i] + "x"; out.append(sign(g))
g = list(fields); g[5], g[6], g[7] = "", "", ""; out.append(sign(g))
print(json.dumps(out))
"#;
    let h = |n: &str| seen.header(n).unwrap_or("").to_string();
    let args = json!({
        "secret": AGENCY_SECRET,
        "ts": h("x-fenfa-timestamp"),
        "method": seen.method,
        "path": seen.path,
        "query": seen.query.clone().unwrap_or_default(),
        "user": h("x-fenfa-user"),
        "channel": h("x-fenfa-channel"),
        "app": h("x-fenfa-app"),
        "rid": h("x-request-id"),
    });
    let out = python::run(script, &[&args.to_string()], b"");
    let sigs: Vec<String> = serde_json::from_str(&out).unwrap();
    let sent = h("x-fenfa-signature");
    assert_eq!(sigs[0], sent, "the backend can verify the signature");
    assert!(
        sigs[1..].iter().all(|s| *s != sent),
        "a changed or missing identity header breaks the signature"
    );
    assert_eq!(seen.path, "/housing/apply/7");
    assert_eq!(seen.query.as_deref(), Some("lang=zh-CN&b=%20x"));
    let ts: u64 = h("x-fenfa-timestamp").parse().unwrap();
    assert!(ts.abs_diff(unix_now()) <= 5, "timestamp {ts} is now");
}
