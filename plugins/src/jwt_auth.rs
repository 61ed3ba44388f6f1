//! `jwt-auth` (priority 2600): verifies the unified-identity JWT of every request and turns it into
//! the caller's [`Identity`].
//!
//! Request phase: takes `Authorization: Bearer <token>`, verifies the signature against a
//! configured JWKS (the algorithm is pinned per key, so `alg: none` and HS/RS confusion are refused
//! before any cryptography runs), checks `exp`/`nbf` with leeway, `iss`, `aud`, the required Fenfa
//! claims (`sub`, `chn`, `app`, `exp`) and revocation (by `kid` and by `jti`), then sets
//! `ctx.identity`. Any failure answers `401` with a specific code and an RFC 6750
//! `WWW-Authenticate` challenge. Upstream-request phase: the backend never sees the client's token;
//! it receives `X-Fenfa-User`, `X-Fenfa-Channel` and `X-Fenfa-App` instead (client-sent copies of
//! those headers are dropped).
//!
//! With `cookie`, a request without an `Authorization` header is authenticated by the token in
//! that cookie (H5 pages in a web-view cannot set headers on navigations; docs/h5.md). With
//! `optional`, a request that carries no token at all, or only an expired one, continues without
//! an identity instead of being refused — an H5 page that also serves visitors who have not
//! signed in — while every other failure (bad signature, issuer, audience, malformed) is still a
//! `401`: a token that is present and wrong is an attack or a bug, never a visitor.
//!
//! A token that verified once is remembered per worker thread (see [`cache`]); a hit skips the
//! signature but still re-checks `exp`/`nbf` and `jti` revocation.
//!
//! Keys come inline with the config (`keys`: rotation takes effect with the next snapshot on
//! every node), or from the identity service (`jwks_uri`: fetched, refreshed and persisted in
//! the background by [`remote`]; the request path reads the current set through an atomic
//! pointer and only ever asks for an early refetch when it meets an unknown `kid`).
//!
//! What it may not do: fetch keys on the request path, block, allocate per request beyond the
//! token's own size, or put a token or a claim *value* into a message: denial messages reach
//! clients and audit records, so they name claims, never their contents.
//!
//! Layout: this file is the plugin (config, phases, decisions); [`keys`] checks the JWKS and
//! verifies signatures with ring; [`token`] splits and decodes the compact JWS; [`cache`] is the
//! verified-token cache; [`remote`] the fetched key set. The operator's page is
//! `docs/plugins/jwt-auth.md`.

#[path = "jwt/cache.rs"]
mod cache;
#[path = "jwt/keys.rs"]
mod keys;
#[path = "jwt/remote.rs"]
mod remote;
#[path = "jwt/token.rs"]
mod token;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::contract::{
    Flow, HeaderEdits, Host, Identity, Plugin, PluginFactory, Reply, RequestCtx, RequestView,
    SchemaError, UpstreamView,
};

pub use keys::Alg;

/// The name in config files.
pub const NAME: &str = "jwt-auth";
/// Runs early: in APISIX's authentication range, before limits and WAF that want the identity.
pub const PRIORITY: i32 = 2600;
/// Longer tokens are refused before any parsing (`malformed_token`).
pub const MAX_TOKEN_LEN: usize = 8192;
/// The channels a token may name in `chn`.
pub const CHANNELS: [&str; 3] = ["wechat", "alipay", "baidu"];
/// Longest `sub` / `app` accepted; both go into upstream headers.
const MAX_ID_LEN: usize = 256;
/// Largest decoded signature (RSA-8192).
const MAX_SIG_LEN: usize = 1024;

const DEFAULT_LEEWAY: u64 = 30;
const MAX_LEEWAY: u64 = 3600;
const DEFAULT_CACHE_SIZE: usize = 10_000;
const MAX_CACHE_SIZE: usize = 1_000_000;

/// Builds [`JwtAuth`] instances; register with [`crate::Registry::register`]. Owns the remote
/// key sets (`jwks_uri`), shared by instances and kept across reloads; they are fetched only
/// once a running gateway has called [`PluginFactory::start`].
#[derive(Debug, Default)]
pub struct JwtAuthFactory {
    sources: remote::Sources,
}

impl JwtAuthFactory {
    pub fn new() -> Self {
        Self::default()
    }
}

impl PluginFactory for JwtAuthFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        Ok(Arc::new(JwtAuth::from_config_with(config, &self.sources)?))
    }

    fn start(&self, host: &Host) {
        self.sources.start(host);
    }
}

/// Default bounds of a refresh on `Cache-Control: max-age`.
const DEFAULT_MIN_REFRESH: u64 = 60;
const DEFAULT_MAX_REFRESH: u64 = 3600;
/// Shortest refresh interval accepted.
const MIN_REFRESH: u64 = 1;
/// Longest refresh interval accepted (a day).
const MAX_REFRESH: u64 = 86_400;

/// The plugin's `config`, as written by an operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    issuer: token::OneOrMany,
    audience: String,
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    #[serde(default)]
    keys: Option<keys::JwksConfig>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    jwks_ca: Option<String>,
    #[serde(default)]
    jwks_refresh_seconds: Option<u64>,
    #[serde(default = "default_min_refresh")]
    jwks_min_refresh_seconds: u64,
    #[serde(default = "default_max_refresh")]
    jwks_max_refresh_seconds: u64,
    #[serde(default)]
    revoked_kids: Vec<String>,
    #[serde(default)]
    revoked_jtis: Vec<String>,
    #[serde(default = "default_cache_size")]
    cache_size: usize,
    /// The cookie the token is read from when there is no `Authorization` header.
    #[serde(default)]
    cookie: Option<String>,
    /// No token (or an expired one): continue without an identity rather than `401`.
    #[serde(default)]
    optional: bool,
}

fn default_leeway() -> u64 {
    DEFAULT_LEEWAY
}

fn default_cache_size() -> usize {
    DEFAULT_CACHE_SIZE
}

fn default_min_refresh() -> u64 {
    DEFAULT_MIN_REFRESH
}

fn default_max_refresh() -> u64 {
    DEFAULT_MAX_REFRESH
}

/// Where an instance's keys come from.
enum KeySource {
    /// `keys`: fixed for the instance's life.
    Inline(HashMap<String, keys::Key>),
    /// `jwks_uri`: the current set of a shared, background-refreshed source.
    Remote(Arc<remote::RemoteJwks>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Inline(keys) => {
                let mut kids: Vec<_> = keys.keys().collect();
                kids.sort_unstable();
                f.debug_tuple("Inline").field(&kids).finish()
            }
            KeySource::Remote(r) => f.debug_tuple("Remote").field(r).finish(),
        }
    }
}

/// A configured `jwt-auth` instance: one key set, one audience, its own token cache.
pub struct JwtAuth {
    issuers: Vec<String>,
    audience: String,
    leeway: u64,
    keys: KeySource,
    revoked_kids: HashSet<String>,
    revoked_jtis: HashSet<String>,
    cache: cache::TokenCache,
    /// `cookie`: the name of the cookie that may carry the token.
    cookie: Option<Box<str>>,
    /// `optional`: no token, or an expired one, continues without an identity.
    optional: bool,
}

impl std::fmt::Debug for JwtAuth {
    /// Key ids and policy only; never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("issuers", &self.issuers)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("keys", &self.keys)
            .field("revoked_kids", &self.revoked_kids.len())
            .field("revoked_jtis", &self.revoked_jtis.len())
            .field("cache", &self.cache)
            .field("cookie", &self.cookie)
            .field("optional", &self.optional)
            .finish()
    }
}

/// Why a token was refused: a stable machine-readable `code` and a message that names no token
/// content. Every denial is `401 Unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtError {
    code: &'static str,
    message: &'static str,
}

macro_rules! denials {
    ($($name:ident = $code:literal, $message:literal;)*) => {
        impl JwtError {
            $(const $name: JwtError = JwtError { code: $code, message: $message };)*
            #[cfg(test)]
            const ALL: &'static [JwtError] = &[$(JwtError::$name),*];
        }
    };
}

denials! {
    NO_HEADER = "missing_token", "request has no bearer token";
    NOT_BEARER = "missing_token", "Authorization header does not carry a Bearer token";
    EMPTY = "missing_token", "bearer token is empty";
    MANY_HEADERS = "malformed_token", "request has more than one Authorization header";
    MANY_COOKIES = "malformed_token", "request has more than one token cookie";
    TOO_LONG = "malformed_token", "token is longer than 8192 bytes";
    NOT_JWS = "malformed_token", "token is not three base64url segments";
    BAD_BASE64 = "malformed_token", "token segment is not unpadded base64url";
    BAD_HEADER = "malformed_token", "token header is not a valid JSON object";
    NO_ALG = "malformed_token", "token header names no alg";
    CRIT = "malformed_token", "token header has critical extensions this gateway does not support";
    BAD_PAYLOAD = "malformed_token", "token payload is not a valid JSON object";
    BAD_SUB = "malformed_token", "claim `sub` is invalid";
    BAD_CHN = "malformed_token", "claim `chn` is invalid";
    BAD_APP = "malformed_token", "claim `app` is invalid";
    BAD_ISS = "malformed_token", "claim `iss` is invalid";
    BAD_AUD = "malformed_token", "claim `aud` is invalid";
    BAD_EXP = "malformed_token", "claim `exp` is invalid";
    BAD_NBF = "malformed_token", "claim `nbf` is invalid";
    BAD_JTI = "malformed_token", "claim `jti` is invalid";
    ALG_NONE = "unsupported_alg", "unsigned tokens (alg none) are not accepted";
    UNSUPPORTED_ALG = "unsupported_alg", "token alg is not one of ES256, RS256, PS256, EdDSA, HS256";
    NO_KID = "unknown_kid", "token header names no kid";
    UNKNOWN_KID = "unknown_kid", "token kid is not in the key set";
    REVOKED_KEY = "revoked_key", "token signing key has been revoked";
    ALG_MISMATCH = "alg_mismatch", "token alg is not the alg pinned to its key";
    BAD_SIGNATURE = "bad_signature", "token signature is invalid";
    EXPIRED = "token_expired", "token has expired";
    NOT_YET_VALID = "token_not_yet_valid", "token is not valid yet";
    NO_ISS = "wrong_issuer", "token has no `iss` claim";
    WRONG_ISSUER = "wrong_issuer", "token issuer is not accepted";
    NO_AUD = "wrong_audience", "token has no `aud` claim";
    WRONG_AUDIENCE = "wrong_audience", "token audience does not include this gateway";
    NO_SUB = "missing_claim", "token has no `sub` claim";
    NO_CHN = "missing_claim", "token has no `chn` claim";
    NO_APP = "missing_claim", "token has no `app` claim";
    NO_EXP = "missing_claim", "token has no `exp` claim";
    SUB_FORMAT = "malformed_token", "claim `sub` must be 1 to 256 visible ASCII characters";
    APP_FORMAT = "malformed_token", "claim `app` must be 1 to 256 visible ASCII characters";
    INVALID_CHANNEL = "invalid_channel", "token channel is not wechat, alipay or baidu";
    REVOKED_TOKEN = "revoked_token", "token has been revoked";
}

impl JwtError {
    /// Machine-readable code, e.g. `token_expired`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Human-readable reason; never contains the token or claim values.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// The `401` answer with its `WWW-Authenticate` challenge (RFC 6750 §3): no error attributes
    /// when no token was presented, `error="invalid_token"` otherwise.
    pub fn reply(&self) -> Reply {
        let challenge = if self.code == "missing_token" {
            HeaderValue::from_static(r#"Bearer realm="fenfa""#)
        } else {
            HeaderValue::from_str(&format!(
                r#"Bearer realm="fenfa", error="invalid_token", error_description="{}""#,
                self.message
            ))
            .unwrap_or_else(|_| {
                HeaderValue::from_static(r#"Bearer realm="fenfa", error="invalid_token""#)
            })
        };
        Reply::new(StatusCode::UNAUTHORIZED, self.code, self.message)
            .with_header(WWW_AUTHENTICATE, challenge)
    }
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for JwtError {}

impl JwtAuth {
    /// Parses and checks a `jwt-auth` config. Errors name the field, e.g. `keys.keys[1].x`.
    /// A `jwks_uri` gets a source of its own that is never started (tests, checks); the
    /// factory's instances share its sources instead.
    pub fn from_config(config: &serde_json::Value) -> Result<Self, SchemaError> {
        Self::from_config_with(config, &remote::Sources::default())
    }

    fn from_config_with(
        config: &serde_json::Value,
        sources: &remote::Sources,
    ) -> Result<Self, SchemaError> {
        let cfg: Config = SchemaError::parse(config)?;
        let issuers = cfg.issuer.into_vec();
        if issuers.is_empty() {
            return Err(SchemaError::new(
                "issuer",
                "at least one issuer is required",
            ));
        }
        if let Some(i) = issuers.iter().position(String::is_empty) {
            let path = if issuers.len() == 1 {
                "issuer".to_owned()
            } else {
                format!("issuer[{i}]")
            };
            return Err(SchemaError::new(path, "must not be empty"));
        }
        if cfg.audience.is_empty() {
            return Err(SchemaError::new("audience", "must not be empty"));
        }
        if cfg.leeway_seconds > MAX_LEEWAY {
            return Err(SchemaError::new(
                "leeway_seconds",
                format!("at most {MAX_LEEWAY} seconds; a longer leeway defeats expiry"),
            ));
        }
        if cfg.cache_size > MAX_CACHE_SIZE {
            return Err(SchemaError::new(
                "cache_size",
                format!("at most {MAX_CACHE_SIZE} entries per worker thread"),
            ));
        }
        if let Some(name) = &cfg.cookie {
            let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || name.len() > 256 || !name.bytes().all(token_char) {
                return Err(SchemaError::new(
                    "cookie",
                    "expected a cookie name: 1 to 256 characters from A-Z a-z 0-9 !#$%&'*+-.^_`|~",
                ));
            }
        }
        let keys = match (cfg.keys, cfg.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(SchemaError::new(
                    "jwks_uri",
                    "give either `keys` or `jwks_uri`, not both",
                ))
            }
            (None, None) => {
                return Err(SchemaError::new(
                    "keys",
                    "required: the key set inline (`keys`), or where to fetch it (`jwks_uri`)",
                ))
            }
            (Some(jwks), None) => {
                for field in [
                    ("jwks_ca", cfg.jwks_ca.is_some()),
                    ("jwks_refresh_seconds", cfg.jwks_refresh_seconds.is_some()),
                ] {
                    if field.1 {
                        return Err(SchemaError::new(field.0, "only used with `jwks_uri`"));
                    }
                }
                KeySource::Inline(keys::parse_jwks(jwks, "keys")?)
            }
            (None, Some(uri)) => {
                let in_range = |field: &str, v: u64| {
                    if (MIN_REFRESH..=MAX_REFRESH).contains(&v) {
                        Ok(Duration::from_secs(v))
                    } else {
                        Err(SchemaError::new(
                            field,
                            format!("between {MIN_REFRESH} and {MAX_REFRESH} seconds"),
                        ))
                    }
                };
                let fixed = cfg
                    .jwks_refresh_seconds
                    .map(|v| in_range("jwks_refresh_seconds", v))
                    .transpose()?;
                let min = in_range("jwks_min_refresh_seconds", cfg.jwks_min_refresh_seconds)?;
                let max = in_range("jwks_max_refresh_seconds", cfg.jwks_max_refresh_seconds)?;
                if min > max {
                    return Err(SchemaError::new(
                        "jwks_min_refresh_seconds",
                        "must not be above jwks_max_refresh_seconds",
                    ));
                }
                KeySource::Remote(sources.get(&remote::SourceConfig {
                    uri,
                    ca: cfg.jwks_ca,
                    refresh: remote::Refresh { fixed, min, max },
                })?)
            }
        };
        Ok(Self {
            issuers,
            audience: cfg.audience,
            leeway: cfg.leeway_seconds,
            keys,
            revoked_kids: cfg.revoked_kids.into_iter().collect(),
            revoked_jtis: cfg.revoked_jtis.into_iter().collect(),
            cache: cache::TokenCache::new(cfg.cache_size),
            cookie: cfg.cookie.map(String::into_boxed_str),
            optional: cfg.optional,
        })
    }

    /// The generation of the key set tokens are verified under now (0 for inline keys).
    fn generation(&self) -> u64 {
        match &self.keys {
            KeySource::Inline(_) => 0,
            KeySource::Remote(r) => r.current().as_ref().map_or(0, |s| s.generation),
        }
    }

    /// Finds the bearer token in `headers` — the `Authorization` header, else the configured
    /// cookie — and verifies it at `now` (seconds since the epoch).
    pub fn authenticate(&self, headers: &HeaderMap, now: u64) -> Result<Identity, JwtError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let token = match (values.next(), &self.cookie) {
            (Some(value), _) => {
                if values.next().is_some() {
                    return Err(JwtError::MANY_HEADERS);
                }
                bearer_token(value.as_bytes())?
            }
            (None, Some(name)) => cookie_token(headers, name)?.ok_or(JwtError::NO_HEADER)?,
            (None, None) => return Err(JwtError::NO_HEADER),
        };
        self.verify(token, now)
    }

    /// Verifies a compact JWS at `now` (seconds since the epoch), from the cache when it can.
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TOO_LONG);
        }
        if !self.cache.enabled() {
            return self.verify_uncached(token, now).map(|v| v.identity);
        }
        let hash = self.cache.hash(token.as_bytes());
        let generation = self.generation();
        // An entry verified under another key set (a remote set rotated since) is a miss.
        if let Some(Some(verdict)) = self.cache.lookup(hash, token.as_bytes(), |e| {
            (e.generation == generation).then(|| {
                self.check_time(e.exp, e.nbf, now)?;
                self.check_jti(e.identity.token_id.as_deref())?;
                Ok(e.identity.clone())
            })
        }) {
            return verdict;
        }
        let verified = self.verify_uncached(token, now)?;
        self.cache.insert(
            hash,
            token.as_bytes(),
            verified.identity.clone(),
            verified.identity.expires_at,
            verified.nbf,
            generation,
        );
        Ok(verified.identity)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, JwtError> {
        let parts = token::split(token).ok_or(JwtError::NOT_JWS)?;
        let header = token::decode(parts.header).ok_or(JwtError::BAD_BASE64)?;
        let header: token::Header =
            serde_json::from_slice(&header).map_err(|_| JwtError::BAD_HEADER)?;
        if header.crit.is_some() {
            return Err(JwtError::CRIT);
        }
        let alg_name = header.alg.as_deref().ok_or(JwtError::NO_ALG)?;
        let alg = Alg::from_header(alg_name).ok_or(if alg_name.eq_ignore_ascii_case("none") {
            JwtError::ALG_NONE
        } else {
            JwtError::UNSUPPORTED_ALG
        })?;
        let kid = header.kid.as_deref().ok_or(JwtError::NO_KID)?;
        if self.revoked_kids.contains(kid) {
            return Err(JwtError::REVOKED_KEY);
        }
        let remote_set;
        let key = match &self.keys {
            KeySource::Inline(keys) => keys.get(kid),
            KeySource::Remote(r) => {
                remote_set = r.current();
                let key = remote_set.as_ref().and_then(|s| s.keys.get(kid));
                if key.is_none() {
                    // Perhaps a key the identity service added since: refetch soon.
                    r.unknown_kid();
                }
                key
            }
        };
        let key = key.ok_or(JwtError::UNKNOWN_KID)?;
        if key.alg != alg {
            return Err(JwtError::ALG_MISMATCH);
        }
        let mut buf = [0u8; MAX_SIG_LEN];
        let sig = token::decode_into(parts.signature, &mut buf).ok_or(JwtError::BAD_SIGNATURE)?;
        if !key.verify(parts.signing_input, sig) {
            return Err(JwtError::BAD_SIGNATURE);
        }
        // Signed by a key we trust from here on; still, claims are checked, not assumed.
        let payload = token::decode(parts.payload).ok_or(JwtError::BAD_BASE64)?;
        let claims = token::Claims::parse(&payload).map_err(|e| match e {
            token::ClaimsError::NotAnObject => JwtError::BAD_PAYLOAD,
            token::ClaimsError::BadClaim(name) => bad_claim(name),
        })?;
        self.check_claims(claims, now)
    }

    /// The claim checks, in order: time, issuer, audience, required claims, channel, revocation.
    fn check_claims(&self, c: token::Claims, now: u64) -> Result<Verified, JwtError> {
        let exp = c.exp.ok_or(JwtError::NO_EXP)?.0;
        let nbf = c.nbf.map(|n| n.0);
        self.check_time(exp, nbf, now)?;
        let iss = c.iss.as_deref().ok_or(JwtError::NO_ISS)?;
        if !self.issuers.iter().any(|i| i == iss) {
            return Err(JwtError::WRONG_ISSUER);
        }
        let aud = c.aud.as_ref().ok_or(JwtError::NO_AUD)?;
        if !aud.contains(&self.audience) {
            return Err(JwtError::WRONG_AUDIENCE);
        }
        let user = c.sub.ok_or(JwtError::NO_SUB)?;
        let channel = c.chn.ok_or(JwtError::NO_CHN)?;
        let app = c.app.ok_or(JwtError::NO_APP)?;
        if !is_header_safe_id(&user) {
            return Err(JwtError::SUB_FORMAT);
        }
        if !is_header_safe_id(&app) {
            return Err(JwtError::APP_FORMAT);
        }
        if !CHANNELS.contains(&channel.as_str()) {
            return Err(JwtError::INVALID_CHANNEL);
        }
        self.check_jti(c.jti.as_deref())?;
        Ok(Verified {
            identity: Identity {
                user,
                channel,
                app,
                token_id: c.jti,
                expires_at: exp,
            },
            nbf,
        })
    }

    /// `exp` must not have passed and `nbf` must have come, both give or take the leeway.
    fn check_time(&self, exp: u64, nbf: Option<u64>, now: u64) -> Result<(), JwtError> {
        if now >= exp.saturating_add(self.leeway) {
            return Err(JwtError::EXPIRED);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(JwtError::NOT_YET_VALID);
        }
        Ok(())
    }

    fn check_jti(&self, jti: Option<&str>) -> Result<(), JwtError> {
        match jti {
            Some(jti) if !self.revoked_jtis.is_empty() && self.revoked_jtis.contains(jti) => {
                Err(JwtError::REVOKED_TOKEN)
            }
            _ => Ok(()),
        }
    }
}

/// A verified token's identity plus what the cache needs to re-check it.
struct Verified {
    identity: Identity,
    nbf: Option<u64>,
}

fn bad_claim(name: &'static str) -> JwtError {
    match name {
        "sub" => JwtError::BAD_SUB,
        "chn" => JwtError::BAD_CHN,
        "app" => JwtError::BAD_APP,
        "iss" => JwtError::BAD_ISS,
        "aud" => JwtError::BAD_AUD,
        "exp" => JwtError::BAD_EXP,
        "nbf" => JwtError::BAD_NBF,
        "jti" => JwtError::BAD_JTI,
        _ => JwtError::BAD_PAYLOAD,
    }
}

/// `Bearer <token>`: the scheme is case-insensitive (RFC 7235 §2.1), then one or more spaces.
fn bearer_token(value: &[u8]) -> Result<&str, JwtError> {
    const SCHEME: &[u8] = b"bearer";
    let is_bearer = value.len() > SCHEME.len()
        && value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        && value[SCHEME.len()] == b' ';
    if !is_bearer {
        return Err(if value.eq_ignore_ascii_case(SCHEME) {
            JwtError::EMPTY
        } else {
            JwtError::NOT_BEARER
        });
    }
    let rest = &value[SCHEME.len()..];
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    let end = rest
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |i| i + 1);
    let token = rest.get(start..end).unwrap_or_default();
    if token.is_empty() {
        return Err(JwtError::EMPTY);
    }
    // Non-UTF-8 cannot be a JWS; `split` refuses anything outside base64url and dots anyway.
    std::str::from_utf8(token).map_err(|_| JwtError::NOT_JWS)
}

/// The value of cookie `name` from the request's `Cookie` header lines (RFC 6265 §5.4; HTTP/2
/// may split the cookies over several lines). `None` when absent; the same name twice is
/// refused, since which one a browser sends first depends on paths the gateway cannot see.
fn cookie_token<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, JwtError> {
    let mut found = None;
    for line in headers.get_all(http::header::COOKIE) {
        // A line that is not text carries no token the gateway could verify.
        let Ok(line) = line.to_str() else { continue };
        for c in cookie::Cookie::split_parse(line).flatten() {
            if c.name_raw() != Some(name) {
                continue;
            }
            if found.is_some() {
                return Err(JwtError::MANY_COOKIES);
            }
            let value = c.value_raw().unwrap_or_default().trim_matches('"');
            if value.is_empty() {
                return Err(JwtError::EMPTY);
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// `line` without the cookie `name`, or `None` when it has no such cookie. The other pairs
/// are kept as they were sent, in order, joined by `; `.
fn without_cookie(line: &str, name: &str) -> Option<String> {
    let is_it = |pair: &str| pair.split_once('=').map_or(pair, |(n, _)| n).trim() == name;
    if !line.split(';').any(is_it) {
        return None;
    }
    let kept: Vec<&str> = line
        .split(';')
        .filter(|p| !is_it(p))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    Some(kept.join("; "))
}

/// `sub` and `app` become upstream header values: visible ASCII, bounded.
fn is_header_safe_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn x_fenfa_user() -> HeaderName {
    HeaderName::from_static("x-fenfa-user")
}
fn x_fenfa_channel() -> HeaderName {
    HeaderName::from_static("x-fenfa-channel")
}
fn x_fenfa_app() -> HeaderName {
    HeaderName::from_static("x-fenfa-app")
}

impl Plugin for JwtAuth {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn request(&self, req: &RequestView<'_>, ctx: &mut RequestCtx) -> Flow {
        match self.authenticate(req.headers, now_secs()) {
            Ok(identity) => {
                ctx.identity = Some(identity);
                Flow::Continue
            }
            // `optional`: a visitor who has not signed in, or whose sign-in has lapsed.
            Err(e) if self.optional && (e.code == "missing_token" || e == JwtError::EXPIRED) => {
                Flow::Continue
            }
            // The gateway records `denied_by` from the reply's code.
            Err(e) => Flow::Respond(e.reply()),
        }
    }

    fn upstream_request(
        &self,
        _req: &UpstreamView<'_>,
        ctx: &RequestCtx,
        headers: &mut dyn HeaderEdits,
    ) {
        headers.remove(AUTHORIZATION.as_str());
        if let Some(name) = &self.cookie {
            // Nor does it see the token cookie: a backend that kept it could replay it to
            // other agencies' services. Only a request that carries it pays for the rewrite.
            let rebuilt = headers
                .get(http::header::COOKIE.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|line| without_cookie(line, name));
            match rebuilt {
                Some(rest) if rest.is_empty() => headers.remove(http::header::COOKIE.as_str()),
                Some(rest) => {
                    if let Ok(v) = HeaderValue::from_str(&rest) {
                        headers.insert(http::header::COOKIE, v);
                    }
                }
                None => {}
            }
        }
        // Whatever the client sent under these names is not ours to forward: an insert replaces
        // every value of the name, and a name with nothing to insert is removed. The request
        // phase only admits header-safe values; a value that is not is left out.
        let id = ctx.identity.as_ref();
        for (name, value) in [
            (x_fenfa_user(), id.map(|id| &id.user)),
            (x_fenfa_channel(), id.map(|id| &id.channel)),
            (x_fenfa_app(), id.map(|id| &id.app)),
        ] {
            match value.and_then(|v| HeaderValue::from_str(v).ok()) {
                Some(v) => headers.insert(name, v),
                None => headers.remove(name.as_str()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Tokens are minted here with ring, one key per algorithm: ES256, EdDSA and HS256 keys are
    //! generated per run; the RSA key is the fixed test key in `jwt/testdata/`.

    use std::net::IpAddr;
    use std::sync::OnceLock;

    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
    use base64::Engine;
    use http::Method;
    use ring::hmac;
    use ring::rand::{SecureRandom, SystemRandom};
    use ring::signature::{self as sig, KeyPair};
    use serde_json::{json, Value};

    use super::*;

    const NOW: u64 = 1_750_000_000;
    const RSA_PEM: &str = include_str!("jwt/testdata/rsa-2048.pkcs8.pem");
    const RSA_JWK: &str = include_str!("jwt/testdata/rsa-2048.jwk.json");
    const SUB: &str = "u-3f9a7c21";
    const APP: &str = "wx0123456789abcdef";

    struct TestKeys {
        rng: SystemRandom,
        es1: sig::EcdsaKeyPair,
        es2: sig::EcdsaKeyPair,
        ed: sig::Ed25519KeyPair,
        rsa: sig::RsaKeyPair,
        hs: Vec<u8>,
    }

    fn keys() -> &'static TestKeys {
        static KEYS: OnceLock<TestKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let rng = SystemRandom::new();
            let es = || {
                let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("p256 keygen");
                sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("p256 key")
            };
            let (es1, es2) = (es(), es());
            let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519 keygen");
            let ed = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed25519 key");
            let rsa = sig::RsaKeyPair::from_pkcs8(&pem_to_der(RSA_PEM)).expect("rsa test key");
            let mut hs = vec![0u8; 32];
            rng.fill(&mut hs).expect("random");
            TestKeys {
                rng,
                es1,
                es2,
                ed,
                rsa,
                hs,
            }
        })
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).expect("pem body")
    }

    fn ec_jwk(kid: &str, kp: &sig::EcdsaKeyPair) -> Value {
        let point = kp.public_key().as_ref();
        json!({"kid": kid, "alg": "ES256", "kty": "EC", "crv": "P-256",
               "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
    }

    fn rsa_jwk(kid: &str, alg: &str) -> Value {
        let c: sig::RsaPublicKeyComponents<Vec<u8>> = keys().rsa.public().into();
        json!({"kid": kid, "alg": alg, "kty": "RSA", "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
    }

    fn jwks() -> Value {
        let k = keys();
        json!({"keys": [
            ec_jwk("es-1", &k.es1),
            ec_jwk("es-2", &k.es2),
            rsa_jwk("rs-1", "RS256"),
            rsa_jwk("ps-1", "PS256"),
            {"kid": "ed-1", "alg": "EdDSA", "kty": "OKP", "crv": "Ed25519",
             "x": B64.encode(k.ed.public_key().as_ref())},
            {"kid": "hs-1", "alg": "HS256", "kty": "oct", "k": B64.encode(&k.hs)},
        ]})
    }

    fn config() -> Value {
        json!({
            "issuer": ["https://id.city.example", "https://id-backup.city.example"],
            "audience": "fenfa",
            "keys": jwks(),
        })
    }

    fn plugin_with(edit: impl FnOnce(&mut Value)) -> JwtAuth {
        let mut c = config();
        edit(&mut c);
        JwtAuth::from_config(&c).expect("test config is valid")
    }

    fn plugin() -> JwtAuth {
        plugin_with(|_| {})
    }

    fn claims() -> Value {
        json!({
            "iss": "https://id.city.example", "aud": "fenfa",
            "sub": SUB, "chn": "wechat", "app": APP,
            "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600, "jti": "t-0001",
        })
    }

    fn claims_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = claims();
        if let Value::Object(m) = &mut c {
            edit(m);
        }
        c
    }

    #[derive(Clone, Copy)]
    enum Signer {
        Es1,
        Es2,
        Rs,
        Ps,
        Ed,
        Hs,
    }

    fn sign(signer: Signer, input: &[u8]) -> Vec<u8> {
        let k = keys();
        match signer {
            Signer::Es1 => k.es1.sign(&k.rng, input).expect("sign").as_ref().to_vec(),
            Signer::Es2 => k.es2.sign(&k.rng, input).expect("sign").as_ref().to_vec(),
            Signer::Rs | Signer::Ps => {
                let pad: &dyn sig::RsaEncoding = match signer {
                    Signer::Rs => &sig::RSA_PKCS1_SHA256,
                    _ => &sig::RSA_PSS_SHA256,
                };
                let mut out = vec![0u8; k.rsa.public().modulus_len()];
                k.rsa.sign(pad, &k.rng, input, &mut out).expect("sign");
                out
            }
            Signer::Ed => k.ed.sign(input).as_ref().to_vec(),
            Signer::Hs => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k.hs), input)
                .as_ref()
                .to_vec(),
        }
    }

    fn encode(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    fn mint_raw(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!("{}.{}", encode(header, claims), B64.encode(signature))
    }

    fn mint_with(signer: Signer, header: &Value, claims: &Value) -> String {
        let input = encode(header, claims);
        let signature = sign(signer, input.as_bytes());
        format!("{input}.{}", B64.encode(signature))
    }

    /// A token signed by `signer` under its usual kid and alg.
    fn mint(signer: Signer, claims: &Value) -> String {
        let (kid, alg) = match signer {
            Signer::Es1 => ("es-1", "ES256"),
            Signer::Es2 => ("es-2", "ES256"),
            Signer::Rs => ("rs-1", "RS256"),
            Signer::Ps => ("ps-1", "PS256"),
            Signer::Ed => ("ed-1", "EdDSA"),
            Signer::Hs => ("hs-1", "HS256"),
        };
        mint_with(
            signer,
            &json!({"alg": alg, "kid": kid, "typ": "JWT"}),
            claims,
        )
    }

    fn verifications() -> u64 {
        keys::VERIFICATIONS.with(|c| c.get())
    }

    fn rejects(p: &JwtAuth, token: &str) -> JwtError {
        match p.verify(token, NOW) {
            Ok(id) => panic!("token was accepted as {id:?}"),
            Err(e) => {
                assert!(!e.message().contains(token), "message leaks the token");
                assert!(!e.message().contains(SUB), "message leaks the subject");
                e
            }
        }
    }

    fn run_request(p: &JwtAuth, authorization: &[&str]) -> (Flow, RequestCtx) {
        let mut headers = HeaderMap::new();
        for a in authorization {
            headers.append(AUTHORIZATION, HeaderValue::from_str(a).expect("header"));
        }
        let req = RequestView {
            method: &Method::GET,
            path: "/permits/42",
            query: None,
            headers: &headers,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            tls: true,
        };
        let mut ctx = RequestCtx::default();
        let flow = p.request(&req, &mut ctx);
        (flow, ctx)
    }

    fn denial(flow: Flow) -> Reply {
        match flow {
            Flow::Respond(r) => r,
            Flow::Continue => panic!("request was let through"),
        }
    }

    fn challenge(reply: &Reply) -> &str {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == WWW_AUTHENTICATE)
            .and_then(|(_, v)| v.to_str().ok())
            .expect("WWW-Authenticate")
    }

    fn real_now_claims() -> Value {
        let now = now_secs();
        claims_with(|c| {
            c.insert("nbf".into(), json!(now - 5));
            c.insert("exp".into(), json!(now + 600));
        })
    }

    // ---- accepted tokens -------------------------------------------------------------------

    #[test]
    fn the_rsa_test_key_matches_its_published_jwk() {
        let published: Value = serde_json::from_str(RSA_JWK).expect("jwk json");
        let derived = rsa_jwk("rsa-test", "RS256");
        assert_eq!(published["n"], derived["n"]);
        assert_eq!(published["e"], derived["e"]);
    }

    #[test]
    fn a_valid_es256_token_continues_and_sets_the_identity() {
        let p = plugin();
        let token = mint(Signer::Es1, &real_now_claims());
        let (flow, ctx) = run_request(&p, &[&format!("Bearer {token}")]);
        assert!(matches!(flow, Flow::Continue));
        let id = ctx.identity.expect("identity");
        assert_eq!(id.user, SUB);
        assert_eq!(id.channel, "wechat");
        assert_eq!(id.app, APP);
        assert_eq!(id.token_id.as_deref(), Some("t-0001"));
        assert!(id.expires_at > NOW);
    }

    #[test]
    fn every_supported_algorithm_verifies() {
        let p = plugin_with(|c| c["cache_size"] = json!(0));
        for signer in [
            Signer::Es1,
            Signer::Es2,
            Signer::Rs,
            Signer::Ps,
            Signer::Ed,
            Signer::Hs,
        ] {
            let token = mint(signer, &claims());
            let id = p.verify(&token, NOW).expect("valid token");
            assert_eq!(id.user, SUB);
            assert_eq!(id.expires_at, NOW + 600);
        }
    }

    #[test]
    fn several_keys_are_live_at_once_for_rotation() {
        let p = plugin();
        assert!(p.verify(&mint(Signer::Es1, &claims()), NOW).is_ok());
        assert!(p.verify(&mint(Signer::Es2, &claims()), NOW).is_ok());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let p = plugin();
        let token = mint(Signer::Ed, &real_now_claims());
        let (flow, _) = run_request(&p, &[&format!("bearer   {token}")]);
        assert!(matches!(flow, Flow::Continue));
    }

    #[test]
    fn any_listed_issuer_and_an_audience_array_are_accepted() {
        let p = plugin();
        let c = claims_with(|c| {
            c.insert("iss".into(), json!("https://id-backup.city.example"));
            c.insert("aud".into(), json!(["other", "fenfa"]));
        });
        assert!(p.verify(&mint(Signer::Hs, &c), NOW).is_ok());
    }

    #[test]
    fn expiry_and_not_before_allow_the_leeway() {
        let p = plugin(); // leeway 30 s
        let c = claims_with(|c| {
            c.insert("exp".into(), json!(NOW - 29));
            c.insert("nbf".into(), json!(NOW + 29));
        });
        assert!(p.verify(&mint(Signer::Es1, &c), NOW).is_ok());
    }

    #[test]
    fn jti_is_optional() {
        let p = plugin();
        let c = claims_with(|c| {
            c.remove("jti");
        });
        let id = p.verify(&mint(Signer::Es1, &c), NOW).expect("valid");
        assert_eq!(id.token_id, None);
    }

    // ---- one test per denial code -------------------------------------------------------------

    #[test]
    fn missing_header_is_rejected_with_a_bare_challenge() {
        let (flow, ctx) = run_request(&plugin(), &[]);
        let reply = denial(flow);
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code, "missing_token");
        assert_eq!(challenge(&reply), r#"Bearer realm="fenfa""#);
        assert!(ctx.identity.is_none());
    }

    #[test]
    fn a_non_bearer_authorization_is_a_missing_token() {
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Bearertoken"] {
            let reply = denial(run_request(&plugin(), &[value]).0);
            assert_eq!(reply.code, "missing_token", "{value:?}");
            assert_eq!(challenge(&reply), r#"Bearer realm="fenfa""#);
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let p = plugin();
        let good = mint(Signer::Es1, &claims());
        let two_parts = good
            .rsplit_once('.')
            .map(|(a, _)| a.to_owned())
            .expect("dot");
        let bad_json = format!("{}.{}.AAAA", B64.encode("{alg:"), B64.encode("{}"));
        let padded = format!("{good}=");
        let header_array = format!("{}.{}.AAAA", B64.encode("[]"), B64.encode("{}"));
        for token in [
            two_parts.as_str(),
            &bad_json,
            &padded,
            &header_array,
            "a.b.c.d",
            "é.b.c",
        ] {
            assert_eq!(rejects(&p, token).code(), "malformed_token", "{token}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(rejects(&p, &long), JwtError::TOO_LONG);
    }

    #[test]
    fn a_signed_but_non_json_payload_is_malformed() {
        let p = plugin();
        let header = B64.encode(json!({"alg": "HS256", "kid": "hs-1"}).to_string());
        let input = format!("{header}.{}", B64.encode("not json"));
        let token = format!("{input}.{}", B64.encode(sign(Signer::Hs, input.as_bytes())));
        assert_eq!(rejects(&p, &token), JwtError::BAD_PAYLOAD);
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_malformed_and_named_without_its_value() {
        let p = plugin();
        let c = claims_with(|c| {
            c.insert("sub".into(), json!(31415926));
        });
        let e = rejects(&p, &mint(Signer::Es1, &c));
        assert_eq!(e, JwtError::BAD_SUB);
        assert!(!e.message().contains("31415926"));
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let p = plugin();
        let h = json!({"alg": "ES256", "kid": "es-1", "crit": ["exp"]});
        assert_eq!(
            rejects(&p, &mint_with(Signer::Es1, &h, &claims())),
            JwtError::CRIT
        );
    }

    #[test]
    fn more_than_one_authorization_header_is_refused() {
        let token = mint(Signer::Es1, &real_now_claims());
        let auth = format!("Bearer {token}");
        let reply = denial(run_request(&plugin(), &[&auth, &auth]).0);
        assert_eq!(reply.code, "malformed_token");
    }

    #[test]
    fn alg_none_is_an_unsupported_alg() {
        let p = plugin();
        for alg in ["none", "None", "NONE"] {
            let token = mint_raw(&json!({"alg": alg, "kid": "es-1"}), &claims(), b"");
            assert_eq!(rejects(&p, &token), JwtError::ALG_NONE);
        }
        let reply = denial(
            run_request(
                &p,
                &[&format!(
                    "Bearer {}",
                    mint_raw(&json!({"alg": "none"}), &claims(), b"")
                )],
            )
            .0,
        );
        assert_eq!(reply.code, "unsupported_alg");
        assert_eq!(
            challenge(&reply),
            r#"Bearer realm="fenfa", error="invalid_token", error_description="unsigned tokens (alg none) are not accepted""#
        );
    }

    #[test]
    fn algorithms_outside_the_list_are_unsupported() {
        let p = plugin();
        for alg in ["HS512", "RS384", "ES384", "es256", "Ed25519"] {
            let token = mint_with(Signer::Hs, &json!({"alg": alg, "kid": "hs-1"}), &claims());
            assert_eq!(rejects(&p, &token).code(), "unsupported_alg", "{alg}");
        }
    }

    #[test]
    fn an_unknown_or_missing_kid_is_rejected() {
        let p = plugin();
        let unknown = mint_with(
            Signer::Es1,
            &json!({"alg": "ES256", "kid": "es-9"}),
            &claims(),
        );
        assert_eq!(rejects(&p, &unknown), JwtError::UNKNOWN_KID);
        let missing = mint_with(Signer::Es1, &json!({"alg": "ES256"}), &claims());
        assert_eq!(rejects(&p, &missing), JwtError::NO_KID);
        assert_eq!(JwtError::NO_KID.code(), "unknown_kid");
    }

    #[test]
    fn a_revoked_kid_is_rejected_even_with_a_good_signature() {
        let p = plugin_with(|c| c["revoked_kids"] = json!(["es-1"]));
        assert_eq!(
            rejects(&p, &mint(Signer::Es1, &claims())),
            JwtError::REVOKED_KEY
        );
        assert!(p.verify(&mint(Signer::Es2, &claims()), NOW).is_ok());
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_an_alg_mismatch() {
        // The HS/RS confusion attack: HMAC keyed with the (public) RSA key, sent under its kid.
        let p = plugin();
        let h = json!({"alg": "HS256", "kid": "rs-1"});
        let input = encode(&h, &claims());
        let public_der = keys().rsa.public().as_ref();
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, public_der),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", B64.encode(tag.as_ref()));
        let before = verifications();
        assert_eq!(rejects(&p, &token), JwtError::ALG_MISMATCH);
        assert_eq!(verifications(), before, "refused before any cryptography");
        // Also across asymmetric families and between RS256 and PS256 on the same modulus.
        let es_on_ed = mint_with(
            Signer::Es1,
            &json!({"alg": "ES256", "kid": "ed-1"}),
            &claims(),
        );
        assert_eq!(rejects(&p, &es_on_ed), JwtError::ALG_MISMATCH);
        let ps_on_rs = mint_with(
            Signer::Ps,
            &json!({"alg": "PS256", "kid": "rs-1"}),
            &claims(),
        );
        assert_eq!(rejects(&p, &ps_on_rs), JwtError::ALG_MISMATCH);
    }

    #[test]
    fn a_bad_signature_is_rejected_for_every_algorithm() {
        let p = plugin_with(|c| c["cache_size"] = json!(0));
        for signer in [Signer::Es1, Signer::Rs, Signer::Ps, Signer::Ed, Signer::Hs] {
            let token = mint(signer, &claims());
            let (head, sig_b64) = token.rsplit_once('.').expect("three parts");
            let (header, _) = head.split_once('.').expect("three parts");
            // Same signature, different payload (another user).
            let forged_claims = claims_with(|c| {
                c.insert("sub".into(), json!("u-admin"));
            });
            let forged = format!(
                "{header}.{}.{sig_b64}",
                B64.encode(forged_claims.to_string())
            );
            assert_eq!(rejects(&p, &forged), JwtError::BAD_SIGNATURE);
            // Right payload, truncated signature.
            let short = &token[..token.len() - 4];
            assert_eq!(rejects(&p, short).code(), "bad_signature");
        }
    }

    #[test]
    fn an_expired_token_is_rejected_beyond_the_leeway() {
        let p = plugin();
        let c = claims_with(|c| {
            c.insert("exp".into(), json!(NOW - 30));
        });
        assert_eq!(rejects(&p, &mint(Signer::Es1, &c)), JwtError::EXPIRED);
        assert_eq!(JwtError::EXPIRED.code(), "token_expired");
    }

    #[test]
    fn expired_token_is_rejected_with_401_through_the_request_phase() {
        let p = plugin();
        let now = now_secs();
        let c = claims_with(|c| {
            c.insert("nbf".into(), json!(now - 3600));
            c.insert("exp".into(), json!(now - 600));
        });
        let reply = denial(run_request(&p, &[&format!("Bearer {}", mint(Signer::Rs, &c))]).0);
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code, "token_expired");
        assert_eq!(
            challenge(&reply),
            r#"Bearer realm="fenfa", error="invalid_token", error_description="token has expired""#
        );
    }

    #[test]
    fn a_token_used_before_nbf_is_not_yet_valid() {
        let p = plugin();
        let c = claims_with(|c| {
            c.insert("nbf".into(), json!(NOW + 31));
        });
        assert_eq!(
            rejects(&p, &mint(Signer::Es1, &c)).code(),
            "token_not_yet_valid"
        );
    }

    #[test]
    fn a_foreign_or_missing_issuer_is_wrong_issuer() {
        let p = plugin();
        let c = claims_with(|c| {
            c.insert("iss".into(), json!("https://evil.example"));
        });
        assert_eq!(rejects(&p, &mint(Signer::Es1, &c)), JwtError::WRONG_ISSUER);
        let c = claims_with(|c| {
            c.remove("iss");
        });
        assert_eq!(rejects(&p, &mint(Signer::Es1, &c)).code(), "wrong_issuer");
    }

    #[test]
    fn an_audience_without_ours_is_wrong_audience() {
        let p = plugin();
        for aud in [json!("other"), json!(["a", "b"]), json!([])] {
            let c = claims_with(|c| {
                c.insert("aud".into(), aud.clone());
            });
            assert_eq!(
                rejects(&p, &mint(Signer::Es1, &c)),
                JwtError::WRONG_AUDIENCE,
                "{aud}"
            );
        }
        let c = claims_with(|c| {
            c.remove("aud");
        });
        assert_eq!(rejects(&p, &mint(Signer::Es1, &c)).code(), "wrong_audience");
    }

    #[test]
    fn each_required_claim_missing_is_named() {
        let p = plugin();
        for claim in ["sub", "chn", "app", "exp"] {
            let c = claims_with(|c| {
                c.remove(claim);
            });
            let e = rejects(&p, &mint(Signer::Es1, &c));
            assert_eq!(e.code(), "missing_claim", "{claim}");
            assert!(
                e.message().contains(&format!("`{claim}`")),
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn an_unknown_channel_is_invalid_channel() {
        let p = plugin();
        for chn in ["douyin", "WeChat", ""] {
            let c = claims_with(|c| {
                c.insert("chn".into(), json!(chn));
            });
            let e = rejects(&p, &mint(Signer::Es1, &c));
            assert_eq!(e, JwtError::INVALID_CHANNEL, "{chn}");
            assert!(chn.is_empty() || !e.message().contains(chn));
        }
    }

    #[test]
    fn a_revoked_jti_is_revoked_token() {
        let p = plugin_with(|c| c["revoked_jtis"] = json!(["t-0001"]));
        assert_eq!(
            rejects(&p, &mint(Signer::Es1, &claims())).code(),
            "revoked_token"
        );
        let other = claims_with(|c| {
            c.insert("jti".into(), json!("t-0002"));
        });
        assert!(p.verify(&mint(Signer::Es1, &other), NOW).is_ok());
    }

    #[test]
    fn ids_that_cannot_be_header_values_are_refused() {
        let p = plugin();
        for sub in ["", "has space", "line\nbreak", "用户"] {
            let c = claims_with(|c| {
                c.insert("sub".into(), json!(sub));
            });
            assert_eq!(
                rejects(&p, &mint(Signer::Es1, &c)),
                JwtError::SUB_FORMAT,
                "{sub:?}"
            );
        }
        let c = claims_with(|c| {
            c.insert("app".into(), json!("x".repeat(MAX_ID_LEN + 1)));
        });
        assert_eq!(rejects(&p, &mint(Signer::Es1, &c)), JwtError::APP_FORMAT);
    }

    #[test]
    fn every_message_is_a_valid_error_description() {
        // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E; no token content exists
        // in a `&'static str`, which is the point.
        for e in JwtError::ALL {
            assert!(
                e.message()
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
                "{}",
                e.message()
            );
            let reply = e.reply();
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            let expected = if e.code() == "missing_token" {
                r#"Bearer realm="fenfa""#.to_owned()
            } else {
                format!(
                    r#"Bearer realm="fenfa", error="invalid_token", error_description="{}""#,
                    e.message()
                )
            };
            assert_eq!(challenge(&reply), expected);
        }
    }

    // ---- upstream request ---------------------------------------------------------------------

    struct Edits(HeaderMap);

    impl HeaderEdits for Edits {
        fn get(&self, name: &str) -> Option<&HeaderValue> {
            self.0.get(name)
        }
        fn insert(&mut self, name: HeaderName, value: HeaderValue) {
            self.0.insert(name, value);
        }
        fn remove(&mut self, name: &str) {
            self.0.remove(name);
        }
    }

    #[test]
    fn the_backend_gets_identity_headers_instead_of_the_token() {
        let p = plugin();
        let token = mint(Signer::Es1, &real_now_claims());
        let (flow, ctx) = run_request(&p, &[&format!("Bearer {token}")]);
        assert!(matches!(flow, Flow::Continue));
        let mut edits = Edits(HeaderMap::new());
        edits.0.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("hv"),
        );
        edits
            .0
            .append("x-fenfa-user", HeaderValue::from_static("spoofed-admin"));
        edits
            .0
            .append("x-fenfa-user", HeaderValue::from_static("spoofed-again"));
        edits.0.insert("x-other", HeaderValue::from_static("kept"));
        let up = UpstreamView {
            method: &Method::GET,
            path: "/permits/42",
            query: None,
        };
        p.upstream_request(&up, &ctx, &mut edits);
        let h = &edits.0;
        assert!(h.get(AUTHORIZATION).is_none());
        assert_eq!(h.get_all("x-fenfa-user").iter().collect::<Vec<_>>(), [SUB]);
        assert_eq!(
            h.get("x-fenfa-channel").and_then(|v| v.to_str().ok()),
            Some("wechat")
        );
        assert_eq!(
            h.get("x-fenfa-app").and_then(|v| v.to_str().ok()),
            Some(APP)
        );
        assert_eq!(h.get("x-other").and_then(|v| v.to_str().ok()), Some("kept"));
    }

    #[test]
    fn without_an_identity_no_identity_headers_are_forwarded() {
        let mut edits = Edits(HeaderMap::new());
        edits
            .0
            .insert("x-fenfa-user", HeaderValue::from_static("spoofed"));
        let up = UpstreamView {
            method: &Method::GET,
            path: "/",
            query: None,
        };
        plugin().upstream_request(&up, &RequestCtx::default(), &mut edits);
        assert!(edits.0.is_empty());
    }

    // ---- the token in a cookie, and optional authentication --------------------------------

    fn run_with(p: &JwtAuth, headers: &[(&str, &str)]) -> (Flow, RequestCtx) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("header"),
            );
        }
        let req = RequestView {
            method: &Method::GET,
            path: "/h5/a/",
            query: None,
            headers: &map,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            tls: true,
        };
        let mut ctx = RequestCtx::default();
        let flow = p.request(&req, &mut ctx);
        (flow, ctx)
    }

    fn cookie_plugin(optional: bool) -> JwtAuth {
        plugin_with(|c| {
            c["cookie"] = json!("fenfa_token");
            c["optional"] = json!(optional);
        })
    }

    #[test]
    fn the_token_is_read_from_the_cookie_when_there_is_no_authorization() {
        let p = cookie_plugin(false);
        let token = mint(Signer::Es1, &real_now_claims());
        let line = format!("theme=dark; fenfa_token={token}; lang=zh");
        let (flow, ctx) = run_with(&p, &[("cookie", &line)]);
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(ctx.identity.expect("identity").user, SUB);
        // Split over two lines (HTTP/2), quoted.
        let quoted = format!("fenfa_token=\"{token}\"");
        let (flow, ctx) = run_with(&p, &[("cookie", "theme=dark"), ("cookie", &quoted)]);
        assert!(matches!(flow, Flow::Continue));
        assert!(ctx.identity.is_some());
        // Authorization wins over the cookie.
        let (flow, _) = run_with(&p, &[("authorization", "Bearer x.y.z"), ("cookie", &line)]);
        assert_eq!(denial(flow).code, "malformed_token");
    }

    #[test]
    fn a_cookie_is_not_read_unless_configured() {
        let token = mint(Signer::Es1, &real_now_claims());
        let line = format!("fenfa_token={token}");
        assert_eq!(
            denial(run_with(&plugin(), &[("cookie", &line)]).0).code,
            "missing_token"
        );
        // A cookie of another name is no token.
        let other = format!("other={token}");
        assert_eq!(
            denial(run_with(&cookie_plugin(false), &[("cookie", &other)]).0).code,
            "missing_token"
        );
    }

    #[test]
    fn two_token_cookies_and_an_empty_one_are_refused() {
        let p = cookie_plugin(true);
        let token = mint(Signer::Es1, &real_now_claims());
        let two = format!("fenfa_token={token}; fenfa_token={token}");
        assert_eq!(
            denial(run_with(&p, &[("cookie", &two)]).0).code,
            "malformed_token"
        );
        // Empty: a missing token, which `optional` lets through without an identity.
        let (flow, ctx) = run_with(&p, &[("cookie", "fenfa_token=")]);
        assert!(matches!(flow, Flow::Continue));
        assert!(ctx.identity.is_none());
    }

    #[test]
    fn optional_lets_missing_and_expired_tokens_through_without_an_identity() {
        let p = cookie_plugin(true);
        let (flow, ctx) = run_with(&p, &[]);
        assert!(matches!(flow, Flow::Continue));
        assert!(ctx.identity.is_none());
        let now = now_secs();
        let expired = mint(
            Signer::Es1,
            &claims_with(|c| {
                c.insert("iat".into(), json!(now - 7200));
                c.insert("exp".into(), json!(now - 3600));
            }),
        );
        let (flow, ctx) = run_with(&p, &[("cookie", &format!("fenfa_token={expired}"))]);
        assert!(matches!(flow, Flow::Continue));
        assert!(ctx.identity.is_none());
        // Without `optional` the same requests are refused.
        assert_eq!(
            denial(run_with(&cookie_plugin(false), &[]).0).code,
            "missing_token"
        );
    }

    #[test]
    fn optional_still_refuses_a_token_that_is_present_and_wrong() {
        let p = cookie_plugin(true);
        let good = mint(Signer::Es1, &real_now_claims());
        let (head, _) = good.rsplit_once('.').expect("three parts");
        let bad_sig = format!("{head}.{}", B64.encode([7u8; 64]));
        for (token, code) in [
            (bad_sig.as_str(), "bad_signature"),
            ("not-a-token", "malformed_token"),
        ] {
            let (flow, _) = run_with(&p, &[("cookie", &format!("fenfa_token={token}"))]);
            assert_eq!(denial(flow).code, code, "{token}");
        }
        let wrong_iss = mint(
            Signer::Es1,
            &claims_with(|c| {
                let now = now_secs();
                c.insert("exp".into(), json!(now + 600));
                c.insert("iss".into(), json!("https://evil.example"));
            }),
        );
        let (flow, _) = run_with(&p, &[("cookie", &format!("fenfa_token={wrong_iss}"))]);
        assert_eq!(denial(flow).code, "wrong_issuer");
    }

    #[test]
    fn the_backend_never_gets_the_token_cookie() {
        let p = cookie_plugin(true);
        let up = UpstreamView {
            method: &Method::GET,
            path: "/",
            query: None,
        };
        let mut edits = Edits(HeaderMap::new());
        edits.0.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; fenfa_token=x.y.z; b=2"),
        );
        edits
            .0
            .insert("x-fenfa-user", HeaderValue::from_static("forged"));
        p.upstream_request(&up, &RequestCtx::default(), &mut edits);
        assert_eq!(edits.0.get("cookie").unwrap(), "a=1; b=2");
        assert!(edits.0.get("x-fenfa-user").is_none());
        let mut edits = Edits(HeaderMap::new());
        edits.0.insert(
            http::header::COOKIE,
            HeaderValue::from_static("fenfa_token=x.y.z"),
        );
        p.upstream_request(&up, &RequestCtx::default(), &mut edits);
        assert!(edits.0.get("cookie").is_none());
    }

    #[test]
    fn the_cookie_name_is_checked() {
        for bad in ["", "a b", "a;b", "a=b"] {
            let e = JwtAuth::from_config(&{
                let mut c = config();
                c["cookie"] = json!(bad);
                c
            })
            .unwrap_err();
            assert_eq!(e.path, "cookie", "{bad:?}");
        }
    }

    // ---- the verified-token cache -------------------------------------------------------------

    #[test]
    fn a_cached_token_skips_the_signature() {
        let p = plugin();
        let token = mint(Signer::Rs, &claims());
        let before = verifications();
        let first = p.verify(&token, NOW).expect("valid");
        assert_eq!(verifications(), before + 1);
        let again = p.verify(&token, NOW + 1).expect("valid");
        assert_eq!(
            verifications(),
            before + 1,
            "second use came from the cache"
        );
        assert_eq!(first, again);
    }

    #[test]
    fn with_cache_size_zero_every_use_is_verified() {
        let p = plugin_with(|c| c["cache_size"] = json!(0));
        let token = mint(Signer::Ed, &claims());
        let before = verifications();
        for _ in 0..3 {
            p.verify(&token, NOW).expect("valid");
        }
        assert_eq!(verifications(), before + 3);
    }

    #[test]
    fn a_cached_token_still_expires() {
        let p = plugin();
        let token = mint(Signer::Es1, &claims()); // exp NOW + 600, leeway 30
        p.verify(&token, NOW).expect("valid");
        let before = verifications();
        assert_eq!(p.verify(&token, NOW + 629).map(|_| ()), Ok(()));
        assert_eq!(p.verify(&token, NOW + 630), Err(JwtError::EXPIRED));
        assert_eq!(verifications(), before, "both answered from the cache");
    }

    #[test]
    fn a_cached_token_is_not_valid_before_its_nbf() {
        let p = plugin();
        let c = claims_with(|c| {
            c.insert("nbf".into(), json!(NOW + 20));
        });
        let token = mint(Signer::Es1, &c);
        p.verify(&token, NOW).expect("within leeway");
        assert_eq!(p.verify(&token, NOW - 100), Err(JwtError::NOT_YET_VALID));
    }

    #[test]
    fn a_revoked_jti_is_rejected_on_a_cache_hit() {
        let p = plugin_with(|c| c["revoked_jtis"] = json!(["t-0001"]));
        let token = mint(Signer::Es1, &claims());
        // As if it had been verified before the jti was revoked.
        let identity = Identity {
            user: SUB.into(),
            channel: "wechat".into(),
            app: APP.into(),
            token_id: Some("t-0001".into()),
            expires_at: NOW + 600,
        };
        p.cache.insert(
            p.cache.hash(token.as_bytes()),
            token.as_bytes(),
            identity,
            NOW + 600,
            None,
            0,
        );
        let before = verifications();
        assert_eq!(p.verify(&token, NOW), Err(JwtError::REVOKED_TOKEN));
        assert_eq!(verifications(), before, "decided on the cache hit");
    }

    #[test]
    fn a_new_instance_does_not_trust_the_old_instances_cache() {
        let token = mint(Signer::Es1, &claims());
        let old = plugin();
        old.verify(&token, NOW).expect("valid");
        // The next snapshot revokes the key: its instance must verify afresh and refuse.
        let new = plugin_with(|c| c["revoked_kids"] = json!(["es-1"]));
        assert_eq!(new.verify(&token, NOW), Err(JwtError::REVOKED_KEY));
        let fresh = plugin();
        let before = verifications();
        fresh.verify(&token, NOW).expect("valid");
        assert_eq!(
            verifications(),
            before + 1,
            "a new instance starts with an empty cache"
        );
    }

    #[test]
    fn failed_tokens_are_not_cached() {
        let p = plugin();
        let c = claims_with(|c| {
            c.insert("chn".into(), json!("douyin"));
        });
        let token = mint(Signer::Hs, &c);
        let before = verifications();
        rejects(&p, &token);
        rejects(&p, &token);
        assert_eq!(verifications(), before + 2);
        assert_eq!(p.cache.len_on_this_thread(), 0);
    }

    #[test]
    fn the_cache_bound_holds() {
        let p = plugin_with(|c| c["cache_size"] = json!(4));
        let tokens: Vec<String> = (0..10)
            .map(|i| {
                let c = claims_with(|c| {
                    c.insert("jti".into(), json!(format!("t-{i}")));
                });
                mint(Signer::Hs, &c)
            })
            .collect();
        for t in &tokens {
            p.verify(t, NOW).expect("valid");
            assert!(p.cache.len_on_this_thread() <= 4);
        }
        assert_eq!(p.cache.len_on_this_thread(), 4);
        let before = verifications();
        p.verify(&tokens[9], NOW).expect("valid");
        assert_eq!(verifications(), before, "newest is cached");
        p.verify(&tokens[0], NOW).expect("valid");
        assert_eq!(verifications(), before + 1, "oldest was evicted");
    }

    // ---- configuration ------------------------------------------------------------------------

    fn config_error(edit: impl FnOnce(&mut Value)) -> SchemaError {
        let mut c = config();
        edit(&mut c);
        JwtAuth::from_config(&c).expect_err("config must be refused")
    }

    #[test]
    fn the_factory_builds_through_the_registry() {
        let r = crate::builtin();
        assert!(r.names().contains(&"jwt-auth"));
        let p = r.build("jwt-auth", &config()).expect("builds");
        assert_eq!(p.name(), "jwt-auth");
        assert_eq!(p.priority(), 2600);
    }

    #[test]
    fn keys_come_inline_or_from_a_jwks_uri_never_both_or_neither() {
        let e = config_error(|c| c["jwks_uri"] = json!("https://id.city.example/jwks.json"));
        assert_eq!(e.path, "jwks_uri");
        let e = config_error(|c| {
            c.as_object_mut().unwrap().remove("keys");
        });
        assert_eq!(e.path, "keys");
        let e = config_error(|c| c["jwks_refresh_seconds"] = json!(60));
        assert_eq!(e.path, "jwks_refresh_seconds");
        let remote = |edit: &dyn Fn(&mut Value)| {
            let mut c = config();
            c.as_object_mut().unwrap().remove("keys");
            c["jwks_uri"] = json!("https://id.city.example/jwks.json");
            edit(&mut c);
            JwtAuth::from_config(&c)
        };
        let p = remote(&|_| {}).expect("a remote key set");
        // Not started: no key yet, every token is an unknown kid.
        let token = mint(Signer::Es1, &claims());
        assert_eq!(p.verify(&token, NOW), Err(JwtError::UNKNOWN_KID));
        let e = remote(&|c| c["jwks_uri"] = json!("http://id.city.example/jwks.json")).unwrap_err();
        assert_eq!(e.path, "jwks_uri");
        assert!(e.message.contains("loopback"), "{e}");
        assert!(remote(&|c| c["jwks_uri"] = json!("http://127.0.0.1:9/jwks.json")).is_ok());
        let e = remote(&|c| c["jwks_min_refresh_seconds"] = json!(0)).unwrap_err();
        assert_eq!(e.path, "jwks_min_refresh_seconds");
        let e = remote(&|c| {
            c["jwks_min_refresh_seconds"] = json!(600);
            c["jwks_max_refresh_seconds"] = json!(60);
        })
        .unwrap_err();
        assert_eq!(e.path, "jwks_min_refresh_seconds");
        let e = remote(&|c| c["jwks_ca"] = json!("/nonexistent/ca.pem")).unwrap_err();
        assert_eq!(e.path, "jwks_ca");
    }

    #[test]
    fn a_bad_key_is_refused_with_the_path_of_its_field() {
        let e = config_error(|c| c["keys"]["keys"][1]["x"] = json!("AAAA"));
        assert_eq!(e.path, "keys.keys[1].x");
        let e = config_error(|c| c["keys"]["keys"][2]["n"] = json!("not base64!"));
        assert_eq!(e.path, "keys.keys[2].n");
        let e = config_error(|c| c["keys"]["keys"][4]["crv"] = json!("Ed448"));
        assert_eq!(e.path, "keys.keys[4].crv");
    }

    #[test]
    fn the_algorithm_is_pinned_and_must_fit_the_key_type() {
        let e = config_error(|c| c["keys"]["keys"][2]["alg"] = json!("HS256"));
        assert_eq!(e.path, "keys.keys[2].kty");
        let e = config_error(|c| c["keys"]["keys"][0]["alg"] = json!("none"));
        assert_eq!(e.path, "keys.keys[0].alg");
        let e = config_error(|c| {
            if let Some(k) = c["keys"]["keys"][0].as_object_mut() {
                k.remove("alg");
            }
        });
        assert_eq!(e.path, "keys.keys[0]");
        assert!(e.message.contains("alg"), "{e}");
    }

    #[test]
    fn kids_are_required_and_unique() {
        let e = config_error(|c| c["keys"]["keys"][1]["kid"] = json!("es-1"));
        assert_eq!(e.path, "keys.keys[1].kid");
        let e = config_error(|c| {
            if let Some(k) = c["keys"]["keys"][3].as_object_mut() {
                k.remove("kid");
            }
        });
        assert_eq!(e.path, "keys.keys[3]");
    }

    #[test]
    fn other_config_errors_name_their_field() {
        assert_eq!(
            config_error(|c| c["audiences"] = json!("x")).path,
            "audiences"
        );
        assert_eq!(config_error(|c| c["audience"] = json!("")).path, "audience");
        assert_eq!(config_error(|c| c["issuer"] = json!([])).path, "issuer");
        assert_eq!(
            config_error(|c| c["issuer"] = json!(["a", 3])).path,
            "issuer[1]"
        );
        assert_eq!(
            config_error(|c| c["leeway_seconds"] = json!(86_400)).path,
            "leeway_seconds"
        );
        assert_eq!(
            config_error(|c| c["leeway_seconds"] = json!(-1)).path,
            "leeway_seconds"
        );
        assert_eq!(
            config_error(|c| c["revoked_jtis"] = json!("t-1")).path,
            "revoked_jtis"
        );
        assert_eq!(
            config_error(|c| c["keys"] = json!({"keys": []})).path,
            "keys.keys"
        );
        assert_eq!(
            config_error(|c| c["keys"]["extra"] = json!(1)).path,
            "keys.extra"
        );
        let missing = JwtAuth::from_config(&json!({"audience": "fenfa", "keys": jwks()}))
            .expect_err("issuer is required");
        assert!(missing.message.contains("issuer"), "{missing}");
    }

    #[test]
    fn a_single_issuer_string_and_defaults_are_accepted() {
        let p = JwtAuth::from_config(&json!({
            "issuer": "https://id.city.example", "audience": "fenfa", "keys": jwks(),
        }))
        .expect("valid");
        assert_eq!(p.leeway, 30);
        assert!(p.cache.enabled());
        assert!(p.verify(&mint(Signer::Es1, &claims()), NOW).is_ok());
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let shown = format!("{:?}", plugin());
        assert!(!shown.contains(&B64.encode(&keys().hs)));
        assert!(shown.contains("hs-1"));
    }
}
