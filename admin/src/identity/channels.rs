//! Code exchanges with the three channels' platforms, each exactly as that platform documents
//! it (the fakes in `tests/admin/signin.rs` check every parameter):
//!
//! - WeChat `jscode2session`: `GET {base}/sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code`
//!   → `{"openid","session_key","unionid"?}` or `{"errcode","errmsg"}`.
//! - Alipay `alipay.system.oauth.token`: `POST {gateway}` (a form) with the common parameters
//!   (`app_id, method, format, charset, sign_type=RSA2, timestamp` in Beijing time`, version`),
//!   `grant_type=authorization_code, code`, and `sign`: RSA-SHA256 (PKCS#1 v1.5) with the app's
//!   private key over every other parameter sorted by name, `k=v` joined with `&`
//!   → `{"alipay_system_oauth_token_response":{"user_id"|"open_id",…},"sign"}` or
//!   `{"error_response":{"code","msg","sub_code","sub_msg"}}`.
//! - Baidu `jscode2sessionkey`: `POST {base}/oauth/jscode2sessionkey` (a form) with
//!   `code, client_id` (the App Key) `, sk` (the App Secret) → `{"openid","session_key"}` or
//!   `{"error","error_description"}` (or `{"errno","errmsg"}`).
//!
//! Only the channel's user id (and WeChat's union id) is kept from an answer: session keys and
//! the channels' access tokens are dropped here, unlogged.
//!
//! HTTP goes through `fenfa_net` (TLS with the system's roots, no redirects, plain `http://`
//! only to loopback, capped answers), one client per endpoint, kept for the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Channel;

pub const WECHAT_BASE: &str = "https://api.weixin.qq.com";
pub const ALIPAY_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";
pub const BAIDU_BASE: &str = "https://spapi.baidu.com";

/// An app's sign-in credentials, as sealed in [`crate::model::App::sealed_signin`].
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// WeChat AppSecret; Baidu App Secret (`sk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Baidu App Key (`client_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_key: Option<String>,
    /// Alipay: the app's RSA private key, PKCS#8 (PEM, or the base64 Alipay's key tool prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

fn visible(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses an RSA private key (PKCS#8 PEM, or bare base64 of the DER).
fn rsa_key(text: &str) -> Result<RsaKeyPair, String> {
    let text = text.trim();
    let der = if text.starts_with("-----BEGIN") {
        PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| format!("not a PKCS#8 PEM private key ({e}); a `BEGIN RSA PRIVATE KEY` (PKCS#1) key converts with `openssl pkcs8 -topk8 -nocrypt`"))?
            .secret_pkcs8_der()
            .to_vec()
    } else {
        let compact: String = text.split_whitespace().collect();
        STANDARD
            .decode(compact)
            .map_err(|_| "expected a PKCS#8 PEM block or the base64 of a PKCS#8 key".to_string())?
    };
    RsaKeyPair::from_pkcs8(&der).map_err(|e| {
        format!("not a usable RSA private key ({e}); expected RSA 2048 bits or more, PKCS#8")
    })
}

impl Credentials {
    /// Checks the credentials a channel needs; the error names the field.
    pub fn check(&self, channel: Channel) -> Result<(), (&'static str, String)> {
        let need = |v: &Option<String>, f: &'static str, what: &str| match v {
            Some(s) if visible(s, 256) => Ok(()),
            Some(_) => Err((
                f,
                format!("{what}: expected 1 to 256 visible ASCII characters"),
            )),
            None => Err((
                f,
                format!("{what} is required for {} apps", channel.as_str()),
            )),
        };
        let not = |v: &Option<String>, f: &'static str| match v {
            Some(_) => Err((f, format!("not used by {} apps", channel.as_str()))),
            None => Ok(()),
        };
        match channel {
            Channel::Wechat => {
                need(&self.secret, "secret", "the AppSecret")?;
                not(&self.app_key, "app_key")?;
                not(&self.private_key, "private_key")
            }
            Channel::Baidu => {
                need(&self.secret, "secret", "the App Secret")?;
                need(&self.app_key, "app_key", "the App Key")?;
                not(&self.private_key, "private_key")
            }
            Channel::Alipay => {
                not(&self.secret, "secret")?;
                not(&self.app_key, "app_key")?;
                match &self.private_key {
                    None => Err((
                        "private_key",
                        "the app's RSA private key is required for alipay apps".into(),
                    )),
                    Some(k) => rsa_key(k).map(|_| ()).map_err(|e| ("private_key", e)),
                }
            }
        }
    }
}

/// Who the channel says the user is.
pub struct ChannelUser {
    /// WeChat/Baidu `openid`, Alipay `user_id` (or `open_id`).
    pub subject: String,
    /// WeChat `unionid`, when the app is bound to an open platform account.
    pub union: Option<String>,
}

/// Why an exchange failed, as the client will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The channel says the code is not valid (wrong, expired, for another app).
    InvalidCode,
    /// The channel says the code was already used.
    CodeUsed,
    /// The channel refuses because of its own rate limit.
    RateLimited,
    /// The channel refuses the app's credentials: the platform is misconfigured.
    Credentials(String),
    /// The channel could not be reached, timed out, or answered something unusable.
    Unavailable(String),
}

fn client(url: &str) -> Result<fenfa_net::Endpoint, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, fenfa_net::Endpoint>>> = OnceLock::new();
    let map = CLIENTS.get_or_init(Default::default);
    if let Some(ep) = map.lock().unwrap_or_else(|e| e.into_inner()).get(url) {
        return Ok(ep.clone());
    }
    let ep = fenfa_net::Endpoint::new(&fenfa_net::Settings {
        url,
        tls: fenfa_net::ClientTls::default(),
        insecure: false,
        connect_timeout: std::time::Duration::from_secs(3),
        max_body: 64 * 1024,
        names: fenfa_net::Names::section("signin_endpoint"),
    })
    .map_err(|e| e.to_string())?;
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(url.to_string(), ep.clone());
    Ok(ep)
}

/// Checks an endpoint override (`signin_endpoint`): https, or http to loopback.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    fenfa_net::check_url(url, false, &fenfa_net::Names::section("signin_endpoint"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn call(
    url: fenfa_net::Url,
    method: Method,
    form: Option<String>,
) -> Result<Value, ChannelError> {
    let base = url.origin().ascii_serialization();
    let ep = client(&base).map_err(ChannelError::Unavailable)?;
    let mut headers = HeaderMap::new();
    let body = match form {
        Some(f) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded;charset=utf-8"),
            );
            f.into_bytes()
        }
        None => Vec::new(),
    };
    let answer = ep
        .request(method, url, headers, body, super::CHANNEL_DEADLINE)
        .await
        .map_err(|e| ChannelError::Unavailable(safe(&e)))?;
    if answer.status >= 500 {
        return Err(ChannelError::Unavailable(format!(
            "answered {}",
            answer.status
        )));
    }
    serde_json::from_slice(&answer.body).map_err(|_| {
        ChannelError::Unavailable(format!(
            "answered {} with a body that is not JSON",
            answer.status
        ))
    })
}

/// What went wrong, without the request's URL (WeChat's carries the app secret).
fn safe(e: &fenfa_net::ClientError) -> String {
    use fenfa_net::ClientError as E;
    match e {
        E::Connect { host, .. } => format!("cannot connect to {host}"),
        E::Certificate { host, reason } => {
            format!("TLS with {host}: certificate refused ({reason})")
        }
        E::Tls { host, .. } => format!("TLS with {host} failed"),
        E::Timeout { host, after } => format!("no answer from {host} within {after:?}"),
        E::TooLarge { host, .. } => format!("the answer from {host} is too large"),
        E::Request { host, .. } => format!("request to {host} failed"),
        _ => "request failed".to_string(),
    }
}

fn text(v: &Value, k: &str) -> Option<String> {
    match v.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Exchanges `code` for the channel's user id.
pub async fn exchange(
    channel: Channel,
    app_id: &str,
    creds: &Credentials,
    endpoint: Option<&str>,
    code: &str,
    now: i64,
) -> Result<ChannelUser, ChannelError> {
    match channel {
        Channel::Wechat => wechat(app_id, creds, endpoint.unwrap_or(WECHAT_BASE), code).await,
        Channel::Alipay => {
            alipay(app_id, creds, endpoint.unwrap_or(ALIPAY_GATEWAY), code, now).await
        }
        Channel::Baidu => baidu(creds, endpoint.unwrap_or(BAIDU_BASE), code).await,
    }
}

fn join(base: &str, path: &str) -> Result<fenfa_net::Url, ChannelError> {
    fenfa_net::Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
        .map_err(|e| ChannelError::Unavailable(format!("bad endpoint: {e}")))
}

async fn wechat(
    app_id: &str,
    creds: &Credentials,
    base: &str,
    code: &str,
) -> Result<ChannelUser, ChannelError> {
    let mut url = join(base, "/sns/jscode2session")?;
    url.query_pairs_mut()
        .append_pair("appid", app_id)
        .append_pair("secret", creds.secret.as_deref().unwrap_or_default())
        .append_pair("js_code", code)
        .append_pair("grant_type", "authorization_code");
    let v = call(url, Method::GET, None).await?;
    match v.get("errcode").and_then(Value::as_i64).unwrap_or(0) {
        0 => {}
        40029 => return Err(ChannelError::InvalidCode),
        40163 => return Err(ChannelError::CodeUsed),
        45011 => return Err(ChannelError::RateLimited),
        c @ (40013 | 40125 | 40226 | 41002 | 41004) => {
            return Err(ChannelError::Credentials(format!("WeChat errcode {c}")))
        }
        c => return Err(ChannelError::Unavailable(format!("WeChat errcode {c}"))),
    }
    let subject = text(&v, "openid")
        .ok_or_else(|| ChannelError::Unavailable("WeChat answered without an openid".into()))?;
    Ok(ChannelUser {
        subject,
        union: text(&v, "unionid"),
    })
}

/// The string Alipay signs: every parameter but `sign`, sorted by name, `k=v` joined by `&`
/// (values as they are, not URL-encoded; empty values left out).
pub fn alipay_sign_content(params: &BTreeMap<&str, String>) -> String {
    params
        .iter()
        .filter(|(k, v)| **k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

async fn alipay(
    app_id: &str,
    creds: &Credentials,
    gateway: &str,
    code: &str,
    now: i64,
) -> Result<ChannelUser, ChannelError> {
    let key = rsa_key(creds.private_key.as_deref().unwrap_or_default())
        .map_err(ChannelError::Credentials)?;
    let mut params: BTreeMap<&str, String> = BTreeMap::new();
    params.insert("app_id", app_id.to_string());
    params.insert("method", "alipay.system.oauth.token".into());
    params.insert("format", "JSON".into());
    params.insert("charset", "utf-8".into());
    params.insert("sign_type", "RSA2".into());
    params.insert("timestamp", crate::local_time::display(now));
    params.insert("version", "1.0".into());
    params.insert("grant_type", "authorization_code".into());
    params.insert("code", code.to_string());
    let content = alipay_sign_content(&params);
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        content.as_bytes(),
        &mut sig,
    )
    .map_err(|_| ChannelError::Credentials("cannot sign with the app's private key".into()))?;
    params.insert("sign", STANDARD.encode(&sig));
    let form = serde_urlencoded::to_string(&params)
        .map_err(|e| ChannelError::Unavailable(format!("cannot encode the request: {e}")))?;
    let url = fenfa_net::Url::parse(gateway)
        .map_err(|e| ChannelError::Unavailable(format!("bad endpoint: {e}")))?;
    let v = call(url, Method::POST, Some(form)).await?;
    if let Some(err) = v.get("error_response") {
        let sub = err.get("sub_code").and_then(Value::as_str).unwrap_or("");
        let code = err.get("code").and_then(Value::as_str).unwrap_or("");
        return Err(match sub {
            "isv.code-invalid" | "isv.auth-code-invalid" => ChannelError::InvalidCode,
            "isv.code-used" => ChannelError::CodeUsed,
            "aop.ACQ.SYSTEM_ERROR" | "isp.unknow-error" => {
                ChannelError::Unavailable(format!("Alipay {code} {sub}"))
            }
            s if s.starts_with("isv.invalid-signature")
                || s.starts_with("isv.invalid-app-id")
                || s.starts_with("isv.missing-signature") =>
            {
                ChannelError::Credentials(format!("Alipay {code} {sub}"))
            }
            _ if code == "20000" => ChannelError::Unavailable(format!("Alipay {code} {sub}")),
            _ => ChannelError::InvalidCode,
        });
    }
    let resp = v.get("alipay_system_oauth_token_response").ok_or_else(|| {
        ChannelError::Unavailable("Alipay answered neither a token nor an error".into())
    })?;
    let subject = text(resp, "user_id")
        .or_else(|| text(resp, "open_id"))
        .ok_or_else(|| ChannelError::Unavailable("Alipay answered without a user id".into()))?;
    Ok(ChannelUser {
        subject,
        union: None,
    })
}

async fn baidu(creds: &Credentials, base: &str, code: &str) -> Result<ChannelUser, ChannelError> {
    let url = join(base, "/oauth/jscode2sessionkey")?;
    let form = serde_urlencoded::to_string([
        ("code", code),
        ("client_id", creds.app_key.as_deref().unwrap_or_default()),
        ("sk", creds.secret.as_deref().unwrap_or_default()),
    ])
    .map_err(|e| ChannelError::Unavailable(format!("cannot encode the request: {e}")))?;
    let v = call(url, Method::POST, Some(form)).await?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(match err {
            "invalid_grant" | "invalid_code" => ChannelError::InvalidCode,
            "invalid_client" | "unauthorized_client" => {
                ChannelError::Credentials(format!("Baidu {err}"))
            }
            _ => ChannelError::Unavailable(format!("Baidu {err}")),
        });
    }
    if let Some(n) = v.get("errno").and_then(Value::as_i64).filter(|n| *n != 0) {
        return Err(ChannelError::Unavailable(format!("Baidu errno {n}")));
    }
    let subject = text(&v, "openid")
        .ok_or_else(|| ChannelError::Unavailable("Baidu answered without an openid".into()))?;
    Ok(ChannelUser {
        subject,
        union: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alipays_sign_content_is_sorted_without_sign_or_empty_values() {
        let mut p = BTreeMap::new();
        p.insert("method", "alipay.system.oauth.token".to_string());
        p.insert("app_id", "2021".to_string());
        p.insert("sign", "xyz".to_string());
        p.insert("code", String::new());
        p.insert("charset", "utf-8".to_string());
        assert_eq!(
            alipay_sign_content(&p),
            "app_id=2021&charset=utf-8&method=alipay.system.oauth.token"
        );
    }

    #[test]
    fn each_channel_names_the_credential_it_lacks() {
        let c = Credentials::default();
        assert_eq!(c.check(Channel::Wechat).unwrap_err().0, "secret");
        assert_eq!(c.check(Channel::Alipay).unwrap_err().0, "private_key");
        let c = Credentials {
            secret: Some("s".into()),
            ..Default::default()
        };
        assert_eq!(c.check(Channel::Baidu).unwrap_err().0, "app_key");
        assert_eq!(c.check(Channel::Alipay).unwrap_err().0, "secret");
        let c = Credentials {
            private_key: Some("bm90IGEga2V5".into()),
            ..Default::default()
        };
        assert!(c.check(Channel::Alipay).unwrap_err().1.contains("RSA"));
    }
}
