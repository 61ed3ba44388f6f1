//! The plugin contract: phases, what each sees, and what its return value means.
//!
//! Phases run in this order for every request that reaches a route:
//!
//! 1. [`Plugin::request`] — after routing, before anything is sent upstream. Sees the normalised
//!    request. Returns [`Flow::Continue`] or [`Flow::Respond`]; a response ends the request there:
//!    later plugins' `request` phase does not run and nothing reaches the upstream. Plugins run in
//!    descending [`Plugin::priority`].
//!    [`Plugin::request_body`] then runs per body chunk, and may still answer (e.g. 413).
//! 2. [`Plugin::upstream_request`] — just before the request is sent upstream (once per attempt).
//!    May add or remove headers; cannot deny.
//! 3. [`Plugin::response`] — when the response head is ready to go to the client, whether it came
//!    from the upstream or from the gateway itself. May add or remove headers.
//! 4. [`Plugin::log`] — once, after the response is finished or the client went away. Read-only.
//!
//! Errors in a plugin are not possible by construction: a plugin that cannot decide denies with a
//! [`Reply`] carrying status and a machine-readable code, and the gateway renders it in the JSON
//! error shape of `shared/DESIGN.md`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// What a plugin's `request` phase decides.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next plugin, then the upstream.
    Continue,
    /// Answer the client now with this reply (an error, or a bodiless answer such as a CORS
    /// preflight's 204; see [`ReplyBody`]); nothing is sent upstream.
    Respond(Reply),
}

/// An answer produced by a plugin: an error in the JSON shape (e.g. 401, 403, 429), or — for the
/// rare plugin that answers a request itself, such as a CORS preflight — a bodiless response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// Machine-readable code, e.g. `rate_limited`. For a [`ReplyBody::Empty`] reply it is not
    /// sent; it only names the answer in the log and audit record (e.g. `cors_preflight`).
    pub code: &'static str,
    /// Human-readable message. Must not contain secrets, tokens or personal data.
    pub message: Cow<'static, str>,
    /// Extra response headers (e.g. `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What the gateway writes as the body.
    pub body: ReplyBody,
}

/// The body of a [`Reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyBody {
    /// The JSON error shape, `{"error":{"code","message","request_id"}}`, with
    /// `content-type: application/json`. What [`Reply::new`] makes.
    #[default]
    JsonError,
    /// No body and no `content-type`: the status and [`Reply::headers`] only (plus the gateway's
    /// own `x-request-id`), with `content-length: 0` where the status allows one. What
    /// [`Reply::empty`] makes. It is an answer, not a denial.
    Empty,
}

impl Reply {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            body: ReplyBody::JsonError,
        }
    }

    /// A bodiless answer (e.g. `204 No Content` to a CORS preflight). `code` names it in the
    /// log and audit record only.
    pub fn empty(status: StatusCode, code: &'static str) -> Self {
        Self {
            status,
            code,
            message: Cow::Borrowed(""),
            headers: Vec::new(),
            body: ReplyBody::Empty,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// The request as a plugin sees it at the request phase. The path is already normalised.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The client address, after trusted-proxy resolution.
    pub client_ip: IpAddr,
    /// True when the request came over the HTTPS listener.
    pub tls: bool,
}

/// Header changes a plugin may make to the upstream request or the client response.
pub trait HeaderEdits {
    fn get(&self, name: &str) -> Option<&HeaderValue>;
    fn insert(&mut self, name: HeaderName, value: HeaderValue);
    fn remove(&mut self, name: &str);
}

/// Per-request state shared by all plugins of one request.
#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: String,
    pub route: Arc<str>,
    pub service: Arc<str>,
    /// The agency that owns the service (empty when the service names none).
    pub agency: Arc<str>,
    /// The client address, after trusted-proxy resolution.
    pub client_ip: IpAddr,
    /// Verified caller identity, set by an authentication plugin (`jwt-auth`).
    pub identity: Option<Identity>,
    /// Which plugin denied the request and with which code, for the log phase and audit.
    pub denied_by: Option<(&'static str, &'static str)>,
    /// Per-plugin, per-request state (e.g. CORS remembers the request's `Origin` for the
    /// response phase; a concurrency limit remembers it holds a slot until the log phase).
    pub vars: http::Extensions,
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self {
            request_id: String::new(),
            route: Arc::from(""),
            service: Arc::from(""),
            agency: Arc::from(""),
            client_ip: IpAddr::from([0, 0, 0, 0]),
            identity: None,
            denied_by: None,
            vars: http::Extensions::new(),
        }
    }
}

/// Who is calling, as vouched for by the unified identity service's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`: pseudonymous user id.
    pub user: String,
    /// `chn`: `wechat`, `alipay` or `baidu`.
    pub channel: String,
    /// `app`: mini-program app id.
    pub app: String,
    /// `jti`, if the token had one.
    pub token_id: Option<String>,
    /// `exp` (seconds since the epoch).
    pub expires_at: u64,
}

/// The request as it will be sent upstream (after rewrites), for the upstream-request phase.
#[derive(Debug)]
pub struct UpstreamView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// What the log phase sees of a finished request.
#[derive(Debug)]
pub struct LogView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub status: u16,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub latency_us: u64,
    pub bytes_sent: u64,
}

/// A configured plugin instance. Built once per snapshot by its [`PluginFactory`] (identical
/// configurations share one instance); shared by all requests on the routes that list it, so it
/// must be `Send + Sync` and must not block. A new snapshot builds new instances: state that
/// must survive reloads (rate-limit counters) lives in a store the factory owns.
pub trait Plugin: Send + Sync + std::fmt::Debug {
    /// The name used in config files.
    fn name(&self) -> &'static str;
    /// Higher runs earlier. Fixed per plugin kind (like APISIX), not per instance.
    fn priority(&self) -> i32;
    /// Request phase: continue, or answer now.
    fn request(&self, _req: &RequestView<'_>, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }
    /// Request-body phase: called for each chunk of the request body as it streams in
    /// (`total` counts all bytes so far). May answer (e.g. 413) to stop reading.
    fn request_body(&self, _ctx: &mut RequestCtx, _total: u64, _end: bool) -> Flow {
        Flow::Continue
    }
    /// Upstream-request phase: edit the headers the upstream receives. Runs once per attempt.
    fn upstream_request(
        &self,
        _req: &UpstreamView<'_>,
        _ctx: &RequestCtx,
        _headers: &mut dyn HeaderEdits,
    ) {
    }
    /// Response phase: edit the headers the client receives.
    fn response(&self, _ctx: &RequestCtx, _status: u16, _headers: &mut dyn HeaderEdits) {}
    /// Log phase: observe the finished request.
    fn log(&self, _ctx: &RequestCtx, _view: &LogView<'_>) {}
}

/// Builds plugin instances from configuration, checking it against the plugin's schema.
pub trait PluginFactory: Send + Sync {
    fn name(&self) -> &'static str;
    /// Parse and check `config`. Errors name the offending field relative to the plugin's config.
    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError>;
}

/// A plugin configuration that does not fit the plugin's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct SchemaError {
    /// Path of the offending field inside the plugin's `config` (empty for the whole config).
    pub path: String,
    pub message: String,
}

impl SchemaError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Builds a config struct with serde, reporting the failing field's path.
    pub fn parse<T: serde::de::DeserializeOwned>(config: &serde_json::Value) -> Result<T, Self> {
        let value = if config.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            config.clone()
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Self::new(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })
    }
}
