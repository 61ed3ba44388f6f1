//! Channel sign-in on the real platform (`fenfa-admin serve --demo`: control plane, in-process
//! gateway, echo upstream) against fakes of the three channels' platforms, each of which checks
//! the exact request its platform expects and answers in its documented shapes: WeChat's
//! `jscode2session` query, Alipay's RSA2-signed form (the signature checked with the `rsa`
//! crate, not the platform's ring), Baidu's `jscode2sessionkey` form.
//!
//! Through the gateway: code → unified token → API call with `X-Fenfa-User` = the platform
//! user id; a code used twice is refused; refresh rotates and a reused refresh token is
//! refused (and revokes its sign-in); a key rotation keeps old tokens valid while new ones
//! carry the new `kid`; the JWKS has both; H5 tickets are single use and become an
//! `HttpOnly` cookie for the page's prefix; the sign-in audit names users, never channel ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::serve::{get_json, login, start_demo, wait_for};

/// A fake channel platform on a loopback port; what it saw, for the test to check.
struct Fake {
    url: String,
    state: Shared,
}

impl Fake {
    /// Every request's parameters, in order.
    fn seen(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().unwrap().seen.clone()
    }
}

#[derive(Default)]
struct FakeState {
    used: HashSet<String>,
    seen: Vec<BTreeMap<String, String>>,
}

type Shared = Arc<Mutex<FakeState>>;

async fn serve(router: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await });
    format!("http://{addr}")
}

/// A code the fake "issued": `code-<openid>[~<unionid>][.<nonce>]`; `quota` means the
/// platform is limiting the caller.
fn decode_code(code: &str) -> Option<(String, Option<String>)> {
    let rest = code.strip_prefix("code-")?;
    let rest = rest.split('.').next().unwrap_or(rest);
    Some(match rest.split_once('~') {
        Some((o, u)) => (o.to_string(), Some(u.to_string())),
        None => (rest.to_string(), None),
    })
}

/// WeChat's `GET /sns/jscode2session` for apps with these secrets.
async fn wechat_fake(secrets: HashMap<&'static str, &'static str>) -> Fake {
    let state: Shared = Default::default();
    let handler = {
        let state = state.clone();
        move |Query(q): Query<BTreeMap<String, String>>| {
            let state = state.clone();
            let secrets = secrets.clone();
            async move {
                let mut st = state.lock().unwrap();
                st.seen.push(q.clone());
                let keys: Vec<&str> = q.keys().map(String::as_str).collect();
                if keys != ["appid", "grant_type", "js_code", "secret"]
                    || q["grant_type"] != "authorization_code"
                {
                    return Json(json!({"errcode": 40002, "errmsg": "invalid grant_type"}));
                }
                if secrets.get(q["appid"].as_str()) != Some(&q["secret"].as_str()) {
                    return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
                }
                let code = &q["js_code"];
                if code == "quota" {
                    return Json(
                        json!({"errcode": 45011, "errmsg": "api minute-quota reach limit"}),
                    );
                }
                let Some((openid, union)) = decode_code(code) else {
                    return Json(json!({"errcode": 40029, "errmsg": "invalid code"}));
                };
                if !st.used.insert(code.clone()) {
                    return Json(json!({"errcode": 40163, "errmsg": "code been used"}));
                }
                let mut v = json!({"openid": openid, "session_key": "c2Vzc2lvbi1rZXktc2VjcmV0"});
                if let Some(u) = union {
                    v["unionid"] = json!(u);
                }
                Json(v)
            }
        }
    };
    let url = serve(Router::new().route("/sns/jscode2session", get(handler))).await;
    Fake { url, state }
}

/// Alipay's gateway for one app whose public key is `public_pem`: checks the common
/// parameters and the RSA2 signature over the sorted parameters.
async fn alipay_fake(app_id: &'static str, public_pem: String) -> Fake {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let key = rsa::RsaPublicKey::from_public_key_pem(&public_pem).unwrap();
    let verifier = VerifyingKey::<rsa::sha2::Sha256>::new(key);
    let state: Shared = Default::default();
    let handler = {
        let state = state.clone();
        move |Form(f): Form<BTreeMap<String, String>>| {
            let state = state.clone();
            let verifier = verifier.clone();
            async move {
                let mut st = state.lock().unwrap();
                st.seen.push(f.clone());
                let err = |sub: &str, msg: &str| {
                    Json(
                        json!({"error_response": {"code": "40002", "msg": "Invalid Arguments", "sub_code": sub, "sub_msg": msg}, "sign": "ERITJKEIJKJHKKKKKKKHJEREEEEEEEEEEE"}),
                    )
                };
                let want = [
                    ("method", "alipay.system.oauth.token"),
                    ("format", "JSON"),
                    ("charset", "utf-8"),
                    ("sign_type", "RSA2"),
                    ("version", "1.0"),
                    ("grant_type", "authorization_code"),
                    ("app_id", app_id),
                ];
                for (k, v) in want {
                    if f.get(k).map(String::as_str) != Some(v) {
                        return err("isv.missing-parameter", k);
                    }
                }
                // `yyyy-MM-dd HH:mm:ss`
                let ts = f.get("timestamp").cloned().unwrap_or_default();
                let shape = ts.len() == 19
                    && ts.bytes().enumerate().all(|(i, b)| match i {
                        4 | 7 => b == b'-',
                        10 => b == b' ',
                        13 | 16 => b == b':',
                        _ => b.is_ascii_digit(),
                    });
                if !shape {
                    return err("isv.invalid-timestamp", "timestamp");
                }
                let content = f
                    .iter()
                    .filter(|(k, v)| k.as_str() != "sign" && !v.is_empty())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&");
                let sig = STANDARD.decode(f.get("sign").cloned().unwrap_or_default());
                let ok = sig
                    .ok()
                    .and_then(|s| Signature::try_from(s.as_slice()).ok())
                    .is_some_and(|s| verifier.verify(content.as_bytes(), &s).is_ok());
                if !ok {
                    return err("isv.invalid-signature", "验签出错");
                }
                let code = f.get("code").cloned().unwrap_or_default();
                let Some((user, _)) = decode_code(&code) else {
                    return err("isv.code-invalid", "授权码code无效");
                };
                if !st.used.insert(code) {
                    return err("isv.code-invalid", "授权码code无效");
                }
                Json(json!({"alipay_system_oauth_token_response": {
                    "user_id": user, "access_token": "authusrB2f3c", "expires_in": "3600",
                    "refresh_token": "authusrB9d8e", "re_expires_in": "3600"},
                    "sign": "ERITJKEIJKJHKKKKKKKHJEREEEEEEEEEEE"}))
            }
        }
    };
    let url = serve(Router::new().route("/gateway.do", post(handler))).await;
    Fake {
        url: format!("{url}/gateway.do"),
        state,
    }
}

/// Baidu's `POST /oauth/jscode2sessionkey` for one App Key and Secret.
async fn baidu_fake(app_key: &'static str, secret: &'static str) -> Fake {
    let state: Shared = Default::default();
    let handler = {
        let state = state.clone();
        move |Form(f): Form<BTreeMap<String, String>>| {
            let state = state.clone();
            async move {
                let mut st = state.lock().unwrap();
                st.seen.push(f.clone());
                let keys: Vec<&str> = f.keys().map(String::as_str).collect();
                if keys != ["client_id", "code", "sk"]
                    || f["client_id"] != app_key
                    || f["sk"] != secret
                {
                    return Json(
                        json!({"error": "invalid_client", "error_description": "unknown client id"}),
                    );
                }
                let code = f["code"].clone();
                let Some((openid, _)) = decode_code(&code) else {
                    return Json(
                        json!({"error": "invalid_grant", "error_description": "invalid code"}),
                    );
                };
                if !st.used.insert(code) {
                    return Json(
                        json!({"error": "invalid_grant", "error_description": "code has been used"}),
                    );
                }
                Json(json!({"openid": openid, "session_key": "YmFpZHUtc2Vzc2lvbi1rZXk="}))
            }
        }
    };
    let url = serve(Router::new().route("/oauth/jscode2sessionkey", post(handler))).await;
    Fake { url, state }
}

/// An RSA key pair made by openssl: (PKCS#8 PEM private key, SPKI PEM public key).
fn rsa_pair(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("alipay-app.key");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        std::fs::read_to_string(&key).unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method, &url);
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

/// The `error.code` of an answer.
fn code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

/// The first field a `422` names.
fn field(v: &Value) -> Option<&str> {
    v["error"]["fields"][0]["path"].as_str()
}

fn kid_of(token: &str) -> String {
    let head = token.split('.').next().unwrap();
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
    v["kid"].as_str().unwrap().to_string()
}

fn claims_of(token: &str) -> Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

const WX_SECRET: &str = "wx-app-secret-0123456789abcdef";
const WX2_SECRET: &str = "wx-second-secret-fedcba9876543210";
const BD_KEY: &str = "bd-app-key-4a5b";
const BD_SECRET: &str = "bd-app-secret-6c7d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_channels_sign_in_to_one_identity_with_rotating_refresh_and_keys() {
    let demo = start_demo().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = async |m: Method, url: String, bearer: Option<&str>, body: Option<Value>| {
        send(&http, m, url, bearer, body).await
    };
    let (admin, gw) = (demo.admin.clone(), demo.gw.clone());
    let sys = login(&http, &admin, "admin", ADMIN_PW, ADMIN_TOTP).await;
    let sec = login(&http, &admin, "security", SECURITY_PW, SECURITY_TOTP).await;
    let aud = login(&http, &admin, "auditor", AUDIT_PW, AUDIT_TOTP).await;

    let wechat = wechat_fake(HashMap::from([
        ("wx-demo-app", WX_SECRET),
        ("wx-second-app", WX2_SECRET),
    ]))
    .await;
    let (private_pem, public_pem) = rsa_pair(dir.path());
    let alipay = alipay_fake("2021000000000001", public_pem).await;
    let baidu = baidu_fake(BD_KEY, BD_SECRET).await;

    // Sign-in on: gateways reach this control plane; a first key; apps with credentials.
    let mut settings = get_json(&http, format!("{admin}/v1/settings"), &sec).await;
    let cp_addr = admin.trim_start_matches("http://");
    settings["signin"] = json!({"upstream": {"targets": [{"addr": cp_addr}]}, "access_ttl": 300});
    let (st, v) = api(
        Method::PUT,
        format!("{admin}/v1/settings"),
        Some(&sec),
        Some(settings.clone()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let mut bad = settings.clone();
    bad["signin"]["access_ttl"] = json!(5);
    let (st, v) = api(
        Method::PUT,
        format!("{admin}/v1/settings"),
        Some(&sec),
        Some(bad),
    )
    .await;
    assert_eq!((st, field(&v)), (422, Some("signin.access_ttl")), "{v}");

    let (st, first_key) = api(
        Method::POST,
        format!("{admin}/v1/identity-keys/rotate"),
        Some(&sec),
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 201, "{first_key}");
    assert!(
        first_key.get("sealed_private").is_none(),
        "the private key is never shown"
    );

    let apps = get_json(&http, format!("{admin}/v1/apps"), &sys).await;
    let wx_app = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app_id"] == "wx-demo-app")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut app_ids = HashMap::new();
    for (channel, app_id) in [
        ("wechat", "wx-second-app"),
        ("alipay", "2021000000000001"),
        ("baidu", "bd-000001"),
    ] {
        let (st, v) = api(
            Method::POST,
            format!("{admin}/v1/apps"),
            Some(&sys),
            Some(json!({"channel": channel, "app_id": app_id, "name": "城市服务"})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        app_ids.insert(app_id, v["id"].as_str().unwrap().to_string());
    }
    let put_creds = async |id: &str, body: Value| {
        api(
            Method::PUT,
            format!("{admin}/v1/apps/{id}/signin"),
            Some(&sec),
            Some(body),
        )
        .await
    };
    // Bad input names the field and changes nothing.
    let (st, v) = put_creds(
        &app_ids["bd-000001"],
        json!({"secret": BD_SECRET, "endpoint": baidu.url}),
    )
    .await;
    assert_eq!((st, field(&v)), (422, Some("app_key")), "{v}");
    let (st, v) = put_creds(
        &app_ids["2021000000000001"],
        json!({"private_key": "not a key", "endpoint": alipay.url}),
    )
    .await;
    assert_eq!((st, field(&v)), (422, Some("private_key")), "{v}");
    let (st, v) = put_creds(
        &wx_app,
        json!({"secret": WX_SECRET, "endpoint": "http://10.1.2.3/"}),
    )
    .await;
    assert_eq!(
        (st, field(&v)),
        (422, Some("endpoint")),
        "plain http off loopback: {v}"
    );

    for (id, body) in [
        (
            wx_app.clone(),
            json!({"secret": WX_SECRET, "endpoint": wechat.url}),
        ),
        (
            app_ids["wx-second-app"].clone(),
            json!({"secret": WX2_SECRET, "endpoint": wechat.url}),
        ),
        (
            app_ids["2021000000000001"].clone(),
            json!({"private_key": private_pem, "endpoint": alipay.url}),
        ),
        (
            app_ids["bd-000001"].clone(),
            json!({"app_key": BD_KEY, "secret": BD_SECRET, "endpoint": baidu.url}),
        ),
    ] {
        let (st, v) = put_creds(&id, body).await;
        assert_eq!(st, 200, "{v}");
        assert!(
            v.get("sealed_signin").is_none() && !v.to_string().contains("secret-"),
            "credentials are never shown: {v}"
        );
    }

    // The gateway serves sign-in once the commit reached it.
    let login_at = |channel: &str| format!("{gw}/v1/login/{channel}");
    let sign_in = async |channel: &str, app_id: &str, code: &str| {
        let body = json!({"app_id": app_id, "code": code});
        api(Method::POST, login_at(channel), None, Some(body)).await
    };
    let code_n = std::sync::atomic::AtomicU32::new(0);
    // A new code each time, as `wx.login` gives.
    let fresh = |openid: &str| {
        format!(
            "code-{openid}.{}",
            code_n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    };
    wait_for("sign-in on the gateway", &demo.cp, async || {
        let (st, _) = sign_in("wechat", "wx-demo-app", "not-a-code").await;
        st == 401
    })
    .await;

    // code → unified token → API call through jwt-auth with the platform user id.
    let first_code = fresh("oWx-alice-1");
    let (st, t) = sign_in("wechat", "wx-demo-app", &first_code).await;
    assert_eq!(st, 200, "{t}");
    let (access, refresh, user) = (
        t["access_token"].as_str().unwrap().to_string(),
        t["refresh_token"].as_str().unwrap().to_string(),
        t["user_id"].as_str().unwrap().to_string(),
    );
    assert_eq!(t["expires_in"], 300);
    let c = claims_of(&access);
    assert_eq!(
        (c["sub"].as_str(), c["chn"].as_str(), c["app"].as_str()),
        (Some(user.as_str()), Some("wechat"), Some("wx-demo-app"))
    );
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    assert_eq!(kid_of(&access), first_key["kid"].as_str().unwrap());
    let echo = get_json(&http, &demo.url, &access).await;
    assert_eq!(echo["headers"]["x-fenfa-user"], user.as_str(), "{echo}");
    assert_eq!(echo["headers"]["x-fenfa-channel"], "wechat");
    assert_eq!(echo["headers"]["x-fenfa-app"], "wx-demo-app");
    {
        let seen = wechat.seen();
        let q = seen
            .iter()
            .find(|q| q.get("js_code") == Some(&first_code))
            .expect("the fake saw the exchange");
        assert_eq!(q["appid"], "wx-demo-app");
        assert_eq!(q["secret"], WX_SECRET);
    }

    // The same code twice is refused; so are unknown codes, apps and channels.
    let (st, v) = sign_in("wechat", "wx-demo-app", &first_code).await;
    assert_eq!((st, code(&v)), (401, Some("code_used")), "{v}");
    let (st, v) = sign_in("wechat", "wx-nobody", &fresh("x")).await;
    assert_eq!((st, code(&v)), (404, Some("unknown_app")), "{v}");
    let (st, v) = api(
        Method::POST,
        login_at("wechat"),
        None,
        Some(json!({"app_id": "wx-demo-app"})),
    )
    .await;
    assert_eq!((st, field(&v)), (422, Some("code")), "{v}");
    let (st, v) = sign_in("wechat", "wx-demo-app", "quota").await;
    assert_eq!((st, code(&v)), (503, Some("channel_rate_limited")), "{v}");

    // The same person in a second WeChat app of the account (same union id) is the same user;
    // a different person is not.
    let (_, a1) = sign_in("wechat", "wx-demo-app", &fresh("oWx-bob-1~uBob")).await;
    let (_, a2) = sign_in("wechat", "wx-second-app", &fresh("oWx-bob-2~uBob")).await;
    assert_eq!(a1["user_id"], a2["user_id"], "{a1} {a2}");
    assert_ne!(a1["user_id"], json!(user));
    let (_, again) = sign_in("wechat", "wx-demo-app", &fresh("oWx-alice-1")).await;
    assert_eq!(
        again["user_id"],
        json!(user),
        "a second sign-in is the same user"
    );

    // Alipay (RSA2-signed, checked by the fake with the rsa crate) and Baidu.
    let (st, v) = sign_in("alipay", "2021000000000001", &fresh("2088102104794936")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["chn"],
        "alipay"
    );
    assert!(alipay.seen().iter().all(|f| f.contains_key("sign")));
    let (st, v) = sign_in("baidu", "bd-000001", &fresh("bd-open-1")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["chn"],
        "baidu"
    );
    assert!(!baidu.seen().is_empty());
    let (st, v) = sign_in("baidu", "bd-000001", "garbage").await;
    assert_eq!((st, code(&v)), (401, Some("invalid_code")), "{v}");
    // The channel's platform down: 502, and sign-in works again once it is back.
    let closed = crate::serve::free_port();
    let (st, _) = put_creds(
        &app_ids["bd-000001"],
        json!({"app_key": BD_KEY, "secret": BD_SECRET, "endpoint": format!("http://127.0.0.1:{closed}")}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = sign_in("baidu", "bd-000001", &fresh("bd-open-1")).await;
    assert_eq!((st, code(&v)), (502, Some("channel_unavailable")), "{v}");
    let (st, _) = put_creds(
        &app_ids["bd-000001"],
        json!({"app_key": BD_KEY, "secret": BD_SECRET, "endpoint": baidu.url}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = sign_in("baidu", "bd-000001", &fresh("bd-open-1")).await;
    assert_eq!(st, 200, "{v}");

    // Refresh rotates: the new pair works, the old refresh token is refused and revokes its
    // sign-in, so the newest refresh token stops working too.
    let refresh_at = format!("{gw}/v1/token/refresh");
    let refresh_with = async |app_id: &str, token: Value| {
        let body = json!({"app_id": app_id, "refresh_token": token});
        api(Method::POST, refresh_at.clone(), None, Some(body)).await
    };
    let (st, r1) = refresh_with("wx-demo-app", json!(refresh)).await;
    assert_eq!(st, 200, "{r1}");
    assert_ne!(r1["refresh_token"], json!(refresh));
    assert_eq!(r1["user_id"], json!(user));
    assert_eq!(
        get_json(&http, &demo.url, r1["access_token"].as_str().unwrap()).await["headers"]
            ["x-fenfa-user"],
        user.as_str()
    );
    let (st, v) = refresh_with("wx-second-app", json!(r1["refresh_token"])).await;
    assert_eq!(
        (st, code(&v)),
        (401, Some("invalid_refresh_token")),
        "bound to its app: {v}"
    );
    let (st, v) = refresh_with("wx-demo-app", json!(refresh)).await;
    assert_eq!((st, code(&v)), (401, Some("refresh_token_reused")), "{v}");
    let (st, v) = refresh_with("wx-demo-app", json!(r1["refresh_token"])).await;
    assert_eq!(
        (st, code(&v)),
        (401, Some("invalid_refresh_token")),
        "the family is revoked: {v}"
    );

    // Key rotation with overlap: tokens of the old key still verify; new ones carry the new kid.
    let old_access = access.clone();
    let (st, v) = api(
        Method::POST,
        format!("{admin}/v1/identity-keys/rotate"),
        Some(&sec),
        Some(json!({"overlap": 60})),
    )
    .await;
    assert_eq!(
        (st, field(&v)),
        (422, Some("overlap")),
        "shorter than a token's life: {v}"
    );
    let (st, second_key) = api(
        Method::POST,
        format!("{admin}/v1/identity-keys/rotate"),
        Some(&sec),
        Some(json!({"overlap": 600})),
    )
    .await;
    assert_eq!(st, 201, "{second_key}");
    let new_kid = second_key["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, first_key["kid"].as_str().unwrap());
    let mut new_access = String::new();
    wait_for(
        "a token of the new key through the gateway",
        &demo.cp,
        async || {
            let (st, v) = sign_in("wechat", "wx-demo-app", &fresh("oWx-alice-1")).await;
            assert_eq!(st, 200, "{v}");
            new_access = v["access_token"].as_str().unwrap().to_string();
            assert_eq!(kid_of(&new_access), new_kid);
            let (st, _) = api(Method::GET, demo.url.clone(), Some(&new_access), None).await;
            st == 200
        },
    )
    .await;
    let echo = get_json(&http, &demo.url, &old_access).await;
    assert_eq!(
        echo["headers"]["x-fenfa-user"],
        user.as_str(),
        "the old key's token still verifies: {echo}"
    );
    let (st, jwks) = api(
        Method::GET,
        format!("{gw}/.well-known/jwks.json"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let kids: HashSet<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(
        kids,
        HashSet::from([new_kid.as_str(), first_key["kid"].as_str().unwrap()]),
        "{jwks}"
    );
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("d").is_none()));
    // A revoked key's tokens are refused on the gateway.
    let (st, _) = api(
        Method::POST,
        format!(
            "{admin}/v1/identity-keys/{}/revoke",
            first_key["id"].as_str().unwrap()
        ),
        Some(&sec),
        None,
    )
    .await;
    assert_eq!(st, 200);
    wait_for("the revoked key's token refused", &demo.cp, async || {
        api(Method::GET, demo.url.clone(), Some(&old_access), None)
            .await
            .0
            == 401
    })
    .await;

    // H5: a ticket (single use) becomes an HttpOnly cookie for the page's prefix.
    let (st, tk) = api(
        Method::POST,
        format!("{gw}/v1/h5/ticket"),
        Some(&new_access),
        None,
    )
    .await;
    assert_eq!(st, 200, "{tk}");
    let ticket = tk["ticket"].as_str().unwrap();
    let enter = format!("{gw}/v1/h5/enter?ticket={ticket}&to=/h5/agency-a/index.html");
    let r = http.get(&enter).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], "/h5/agency-a/index.html");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("fenfa_session="), "{cookie}");
    for attr in ["Path=/h5/agency-a;", "HttpOnly", "Secure", "SameSite=Lax"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let session = cookie
        .trim_start_matches("fenfa_session=")
        .split(';')
        .next()
        .unwrap();
    assert_eq!(claims_of(session)["sub"], user.as_str());
    assert_eq!(
        claims_of(session)["aud"],
        format!("{}:h5", settings["token_audience"].as_str().unwrap())
    );
    let r = http.get(&enter).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "a ticket is single use");
    let (st, _) = api(
        Method::GET,
        format!("{gw}/v1/h5/enter?ticket=x&to=https://evil.example/"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 422, "no open redirect");
    let (st, _) = api(
        Method::POST,
        format!("{gw}/v1/h5/ticket"),
        Some(session),
        None,
    )
    .await;
    assert_eq!(st, 401, "a session cookie is not an access token");

    // The sign-in audit names platform users and outcomes, never channel ids; nothing logs them.
    let events = get_json(&http, format!("{admin}/v1/audit/signins?limit=100"), &aud).await;
    let items = events["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|e| e["event"] == "login" && e["outcome"] == "ok" && e["user_id"] == user.as_str()));
    assert!(items.iter().any(|e| e["outcome"] == "code_used"));
    assert!(items
        .iter()
        .any(|e| e["event"] == "refresh" && e["outcome"] == "refresh_token_reused"));
    let text = events.to_string();
    let log = demo.cp.log();
    for secret in [
        "oWx-alice-1",
        "uBob",
        "2088102104794936",
        WX_SECRET,
        BD_SECRET,
        "c2Vzc2lvbi1rZXktc2VjcmV0",
        &refresh,
        &access,
    ] {
        assert!(!text.contains(secret), "{secret} in the sign-in audit");
        assert!(!log.contains(secret), "{secret} in the log");
    }

    // H5: the shared domain's verification files and an agency's pages, managed here, served
    // by the gateway; the ticket's cookie makes the page's backend see the user.
    let mut with_h5 = get_json(&http, format!("{admin}/v1/settings"), &sec).await;
    with_h5["h5"] = json!({"hosts": ["h5.city.example"], "verification_files": [
        {"channel": "wechat", "name": "MP_verify_Wx8aB3.txt", "content": "Wx8aB3"},
        {"channel": "alipay", "name": "alipay_verify_2021.txt", "content": "alipay-2021000000000001"},
        {"channel": "baidu", "name": "baidu_verify_codeva-Bd7.html", "content": "bd7-verify"},
    ]});
    let (st, v) = api(
        Method::PUT,
        format!("{admin}/v1/settings"),
        Some(&sec),
        Some(with_h5),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let services = get_json(&http, format!("{admin}/v1/services"), &sys).await;
    let echo_svc = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "demo-echo")
        .unwrap()
        .clone();
    let (st, h5) = api(Method::POST, format!("{admin}/v1/services"), Some(&sys), Some(json!({
        "agency_id": echo_svc["agency_id"], "name": "agency-a-pages", "title": "办事指南 (H5)", "kind": "h5",
        "upstream": echo_svc["upstream"],
    }))).await;
    assert_eq!(st, 201, "{h5}");
    let h5_id = h5["id"].as_str().unwrap();
    let (st, v) = api(Method::POST, format!("{admin}/v1/routes"), Some(&sys), Some(json!({
        "service_id": h5_id, "name": "agency-a-h5", "paths": ["/h5/agency-a/*"], "strip_prefix": true,
    }))).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = api(
        Method::POST,
        format!("{admin}/v1/services/{h5_id}/submit"),
        Some(&sys),
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, ver) = api(
        Method::POST,
        format!("{admin}/v1/services/{h5_id}/verifications"),
        Some(&sec),
        Some(json!({"load": {"step_ms": 200}})),
    )
    .await;
    assert_eq!(st, 201, "{ver}");
    if ver["result"] == "failed" {
        let (st, v) = api(
            Method::POST,
            format!(
                "{admin}/v1/verifications/{}/override",
                ver["id"].as_str().unwrap()
            ),
            Some(&sec),
            Some(json!({"reason": "test fixture: the echo backend is not a web page"})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = api(
        Method::POST,
        format!("{admin}/v1/services/{h5_id}/publish"),
        Some(&sys),
        Some(json!({"channels": ["wechat", "alipay", "baidu"]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let page = format!("{gw}/h5/agency-a/index.html");
    wait_for("the H5 page on the gateway", &demo.cp, async || {
        http.get(&page).send().await.unwrap().status().as_u16() == 200
    })
    .await;
    for (name, content) in [
        ("MP_verify_Wx8aB3.txt", "Wx8aB3"),
        ("alipay_verify_2021.txt", "alipay-2021000000000001"),
        ("baidu_verify_codeva-Bd7.html", "bd7-verify"),
    ] {
        let r = http
            .get(format!("{gw}/{name}"))
            .header("host", "h5.city.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{name}");
        assert_eq!(r.text().await.unwrap(), content);
    }
    // Without a session the page is served, to nobody in particular (a forged header is dropped).
    let anon: Value = http
        .get(&page)
        .header("x-fenfa-user", "u_forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anon["path"], "/index.html", "{anon}");
    assert!(anon["headers"].get("x-fenfa-user").is_none(), "{anon}");
    // With the ticket's cookie the backend sees the user, and never the cookie itself.
    let (st, tk) = api(
        Method::POST,
        format!("{gw}/v1/h5/ticket"),
        Some(&new_access),
        None,
    )
    .await;
    assert_eq!(st, 200, "{tk}");
    let r = http
        .get(format!(
            "{gw}/v1/h5/enter?ticket={}&to=/h5/agency-a/index.html",
            tk["ticket"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let seen: Value = http
        .get(&page)
        .header("cookie", format!("theme=dark; {cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["headers"]["x-fenfa-user"], user.as_str(), "{seen}");
    assert_eq!(seen["headers"]["x-fenfa-channel"], "wechat");
    assert_eq!(
        seen["headers"]["cookie"], "theme=dark",
        "the page's own cookies pass: {seen}"
    );
    assert!(
        !seen.to_string().contains("fenfa_session"),
        "the backend never sees the session cookie: {seen}"
    );
    // An access token is not a session cookie.
    let wrong: u16 = http
        .get(&page)
        .header("cookie", format!("fenfa_session={new_access}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(wrong, 401);

    // 国密: a rotation to SM2. Its tokens pass every gateway's jwt-auth, verify with an
    // implementation that is not Fenfa's (Python gmssl), and a tampered one is refused.
    let (st, v) = api(
        Method::POST,
        format!("{admin}/v1/identity-keys/rotate"),
        Some(&sec),
        Some(json!({"alg": "SM3"})),
    )
    .await;
    assert_eq!((st, field(&v)), (422, Some("alg")), "{v}");
    let (st, sm2_key) = api(
        Method::POST,
        format!("{admin}/v1/identity-keys/rotate"),
        Some(&sec),
        Some(json!({"alg": "SM2", "overlap": 600})),
    )
    .await;
    assert_eq!(st, 201, "{sm2_key}");
    assert_eq!(
        (
            sm2_key["jwk"]["crv"].as_str(),
            sm2_key["jwk"]["alg"].as_str()
        ),
        (Some("SM2"), Some("SM2"))
    );
    let sm2_kid = sm2_key["kid"].as_str().unwrap().to_string();
    let mut sm2_access = String::new();
    wait_for("an SM2 token through the gateway", &demo.cp, async || {
        let (st, v) = sign_in("wechat", "wx-demo-app", &fresh("oWx-alice-1")).await;
        assert_eq!(st, 200, "{v}");
        sm2_access = v["access_token"].as_str().unwrap().to_string();
        api(Method::GET, demo.url.clone(), Some(&sm2_access), None)
            .await
            .0
            == 200
    })
    .await;
    let head: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(sm2_access.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (head["alg"].as_str(), head["kid"].as_str()),
        (Some("SM2"), Some(sm2_kid.as_str()))
    );
    assert_eq!(
        get_json(&http, &demo.url, &sm2_access).await["headers"]["x-fenfa-user"],
        user.as_str()
    );
    let gmssl = r#"
import sys, base64
from gmssl import sm2
def d(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
signed, sig = sys.stdin.read().strip().rsplit(".", 1)
key = sm2.CryptSM2(private_key="", public_key=(d(sys.argv[1]) + d(sys.argv[2])).hex())
print("valid" if key.verify_with_sm3(d(sig).hex(), signed.encode()) else "invalid")
"#;
    let (x, y) = (
        sm2_key["jwk"]["x"].as_str().unwrap(),
        sm2_key["jwk"]["y"].as_str().unwrap(),
    );
    assert_eq!(
        crate::python::run(gmssl, &[x, y], sm2_access.as_bytes()),
        "valid"
    );
    let mut parts: Vec<String> = sm2_access.split('.').map(str::to_string).collect();
    let mut claims = claims_of(&sm2_access);
    claims["sub"] = json!("u_someone_else");
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = parts.join(".");
    assert_eq!(
        crate::python::run(gmssl, &[x, y], forged.as_bytes()),
        "invalid"
    );
    assert_eq!(
        api(Method::GET, demo.url.clone(), Some(&forged), None)
            .await
            .0,
        401
    );
    // The control plane checks SM2 tokens too (a ticket for an H5 page).
    let (st, v) = api(
        Method::POST,
        format!("{gw}/v1/h5/ticket"),
        Some(&sm2_access),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = api(
        Method::POST,
        format!("{gw}/v1/h5/ticket"),
        Some(&forged),
        None,
    )
    .await;
    assert_eq!(st, 401);
}

/// The sign-in store on SQLite and on PostgreSQL: one user per channel identity (union ids
/// link apps; two first sign-ins at once get one user), refresh rotation with reuse
/// detection, single-use tickets that expire, the sign-in audit.
async fn the_sign_in_store_keeps_one_user_and_uses_tokens_once(env: &Env) {
    use fenfa_admin::identity::{tokens, users};
    use fenfa_admin::model::Channel;
    let (pool, master, now) = (&env.app.store.pool, &env.app.master, env.now());
    let p = |app: &str, sub: &str, union: Option<&str>| {
        users::pseudonyms(master, Channel::Wechat, app, sub, union)
    };
    let first = p("wx1", "o-1", Some("un-1"));
    let (a, b) = tokio::join!(
        users::link(pool, Channel::Wechat, "wx1", &first, now),
        users::link(pool, Channel::Wechat, "wx1", &first, now),
    );
    let u1 = a.unwrap();
    assert_eq!(b.unwrap(), u1, "two first sign-ins at once are one user");
    assert!(
        !p("wx1", "o-1", None).subject.contains("o-1"),
        "stored as a pseudonym"
    );
    let same_union = users::link(
        pool,
        Channel::Wechat,
        "wx2",
        &p("wx2", "o-2", Some("un-1")),
        now,
    )
    .await
    .unwrap();
    assert_eq!(same_union, u1);
    let other = users::link(pool, Channel::Wechat, "wx1", &p("wx1", "o-3", None), now)
        .await
        .unwrap();
    assert_ne!(other, u1);
    // The same id on another channel is another identity.
    let alipay = users::pseudonyms(master, Channel::Alipay, "wx1", "o-1", None);
    assert_ne!(
        users::link(pool, Channel::Alipay, "wx1", &alipay, now)
            .await
            .unwrap(),
        u1
    );

    let h = tokens::Holder {
        user: u1.clone(),
        channel: "wechat".into(),
        app_id: "wx1".into(),
    };
    let r1 = tokens::issue_refresh(pool, &h, None, now, 3600)
        .await
        .unwrap();
    let (held, family) = tokens::use_refresh(pool, &r1, "wx1", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.user, u1);
    let r2 = tokens::issue_refresh(pool, &h, Some(&family), now, 3600)
        .await
        .unwrap();
    assert_eq!(
        tokens::use_refresh(pool, &r1, "wx1", now)
            .await
            .unwrap()
            .unwrap_err(),
        tokens::RefreshRefused::Reused
    );
    assert_eq!(
        tokens::use_refresh(pool, &r2, "wx1", now)
            .await
            .unwrap()
            .unwrap_err(),
        tokens::RefreshRefused::Invalid,
        "the family is revoked"
    );
    let r3 = tokens::issue_refresh(pool, &h, None, now, 3600)
        .await
        .unwrap();
    assert_eq!(
        tokens::use_refresh(pool, &r3, "wx1", now + 3600)
            .await
            .unwrap()
            .unwrap_err(),
        tokens::RefreshRefused::Invalid,
        "expired"
    );

    let t = tokens::issue_ticket(pool, &h, now).await.unwrap();
    assert_eq!(
        tokens::redeem_ticket(pool, &t, now + 59)
            .await
            .unwrap()
            .map(|h| h.user),
        Some(u1.clone())
    );
    assert!(
        tokens::redeem_ticket(pool, &t, now + 59)
            .await
            .unwrap()
            .is_none(),
        "single use"
    );
    let late = tokens::issue_ticket(pool, &h, now).await.unwrap();
    assert!(
        tokens::redeem_ticket(pool, &late, now + 60)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );

    let e = users::Event {
        event: "login",
        channel: "wechat",
        app_id: "wx1",
        user_id: Some(&u1),
        outcome: "ok",
    };
    users::record(pool, &e, now).await.unwrap();
    let rows = users::recent(pool, 10).await.unwrap();
    assert_eq!(rows[0]["user_id"], u1.as_str());
    assert_eq!(rows[0]["time"], fenfa_admin::local_time::display(now));
}

crate::both_backends!(the_sign_in_store_keeps_one_user_and_uses_tokens_once);
