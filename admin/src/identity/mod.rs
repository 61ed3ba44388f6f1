//! Channel sign-in: the platform's own identity service (`docs/signin.md`).
//!
//! A mini-program gets a one-time code from its channel (WeChat `wx.login`, Alipay
//! `my.getAuthCode`, Baidu `swan.getLoginCode`) and posts it to `POST /v1/login/{channel}` on
//! a gateway. The gateway forwards the call here — the sign-in routes are rendered into every
//! gateway's config as a service of their own, rate limited per client address
//! ([`crate::render`]) — and this module exchanges the code with the channel's platform
//! ([`channels`]), maps the channel identity to one platform user id ([`users`]) and answers
//! with the unified token: ES256, signed by a platform key with a `kid` ([`keys`]), short
//! lived, with a rotating refresh token bound to the app ([`tokens`]). H5 pages get the same
//! identity through a one-time ticket exchanged for an `HttpOnly` session cookie.
//!
//! Why here and not in the gateway: sign-in needs durable state (who is who, which refresh
//! tokens are live) and the platform's private keys. The control plane already holds the store
//! and the master key; gateways hold neither. So channel secrets and signing keys never leave
//! the control plane, and a gateway needs nothing more than the public keys, which reach it in
//! its rendered `jwt-auth` (a rotation is a commit like any other, so every gateway follows it
//! with no config edit).
//!
//! What it may not do: store or log a channel's raw user id, session key or secret (ids are
//! kept as HMACs under a key derived from the master key, tokens and tickets as digests); sign
//! with a key that is not the newest active one; accept a refresh token or ticket twice.

pub mod api;
pub mod channels;
pub mod keys;
pub mod tokens;
pub mod users;

/// How long a channel's platform may take to answer a code exchange.
pub const CHANNEL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long an H5 ticket stays valid.
pub const TICKET_TTL: i64 = 60;
/// The H5 session cookie's name.
pub const SESSION_COOKIE: &str = "fenfa_session";
/// Suffix of the audience of H5 session tokens (`<token_audience>:h5`): a session cookie is
/// not an API token, and an API token is not a session cookie.
pub const H5_AUDIENCE_SUFFIX: &str = ":h5";
