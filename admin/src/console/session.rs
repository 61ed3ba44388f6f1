//! The console session: the API session token in a cookie, the CSRF token derived from it, and
//! the cross-origin checks every change passes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::i18n::Lang;

/// The session cookie (the API's bearer session token, `HttpOnly`, `SameSite=Strict`).
pub const COOKIE: &str = "fenfa_console";
/// The language cookie (`zh` or `en`).
pub const LANG_COOKIE: &str = "fenfa_lang";

/// Marks a request that came over TLS (inserted by the TLS listener's router): cookies are then
/// `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// What a console request carries.
#[derive(Debug, Clone)]
pub struct Visit {
    pub token: Option<String>,
    pub peer: Option<SocketAddr>,
    pub lang: Lang,
    pub secure: bool,
    headers: HeaderMap,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

impl<S: Send + Sync> FromRequestParts<S> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let lang = if q.split('&').any(|kv| kv == "lang=en") {
            Lang::En
        } else if q.split('&').any(|kv| kv == "lang=zh") {
            Lang::Zh
        } else {
            match cookie(&parts.headers, LANG_COOKIE) {
                Some("en") => Lang::En,
                _ => Lang::Zh,
            }
        };
        Ok(Visit {
            token: cookie(&parts.headers, COOKIE).map(str::to_string),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            lang,
            secure: parts.extensions.get::<OverTls>().is_some(),
            headers: parts.headers.clone(),
        })
    }
}

impl Visit {
    /// The CSRF token of this session: a digest of the session token, so only a page the
    /// console rendered for this session knows it.
    pub fn csrf(&self) -> String {
        self.token.as_deref().map(csrf_of).unwrap_or_default()
    }

    /// Whether a change may proceed: sent by a console page of this origin, with this session's
    /// CSRF token.
    pub fn may_change(&self, csrf: Option<&str>) -> bool {
        if !self.same_origin() {
            return false;
        }
        let want = self.csrf();
        match csrf {
            Some(got) if !want.is_empty() => same(got.as_bytes(), want.as_bytes()),
            _ => false,
        }
    }

    /// Whether the browser says the request came from this origin (or says nothing: a request
    /// that is not a browser's cross-site one).
    pub fn same_origin(&self) -> bool {
        if let Some(site) = self
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
        {
            if site != "same-origin" && site != "none" {
                return false;
            }
        }
        if let Some(origin) = self
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        {
            let host = self
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o == host);
            if !same {
                return false;
            }
        }
        true
    }

    /// `Set-Cookie` for a new session token (`None`: end it).
    pub fn session_cookie(&self, token: Option<&str>) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        match token {
            Some(t) => format!("{COOKIE}={t}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
            None => {
                format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
            }
        }
    }

    /// `Set-Cookie` keeping the chosen language.
    pub fn lang_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{LANG_COOKIE}={}; Path=/console; SameSite=Strict; Max-Age=31536000{secure}",
            self.lang.code()
        )
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn csrf_of(token: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("fenfa-console-csrf\0{token}").as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
