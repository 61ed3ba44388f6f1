//! The plugin contract: phases, what each sees, and what its return value means.
//!
//! Phases run in this order for every request that reaches a route (like pingora's
//! `ProxyHttp`, each phase says when it runs, what its return means and what happens on error):
//!
//! 1. [`Plugin::request`] — after routing, before anything is sent upstream. Sees the normalised
//!    request head. Returns [`Flow::Continue`] or [`Flow::Respond`]; a response ends the request
//!    there: later plugins' `request` phase does not run and nothing reaches the upstream.
//!    Plugins run in descending [`Plugin::priority`].
//!    [`Plugin::request_async`] — then, for plugins that declare [`Plugin::call_out`], an async
//!    phase that may await I/O within a declared time budget and failure policy, both enforced
//!    by the gateway.
//! 2. [`Plugin::upstream_request`] — just before the request head is sent upstream (once per
//!    attempt). May add or remove headers; cannot deny.
//! 3. [`Plugin::request_body`] — for every chunk of the request body as it streams in (bytes,
//!    running total, end flag); may answer (e.g. 413), which ends the request: the upstream
//!    connection is dropped and the client gets the reply.
//!    [`Plugin::request_body_buffered`] — once, with the whole body, for a plugin whose
//!    [`Plugin::request_body_need`] is [`BodyNeed::Buffer`]: the gateway holds the body back
//!    (up to the chain's largest declared limit), calls the plugin with the exact bytes, then
//!    forwards them unchanged. May answer, like `request_body`. Routes whose plugins need no
//!    body never buffer.
//!    Note: pingora sends the request head upstream before it reads the body, so the body
//!    phases run after [`Plugin::upstream_request`]; what a plugin learns from the body can go
//!    into the client's response ([`Plugin::response`], through [`RequestCtx::vars`]) or deny
//!    the request, but not into the upstream request's headers.
//! 4. [`Plugin::response_body_head`] — for plugins with a [`Plugin::response_body_need`], when
//!    the gateway will buffer this upstream response's body: before the head is sent (pingora
//!    sends it before the body is in), so a plugin sets here what its body rewrite implies for
//!    the head. Then [`Plugin::response`] — when the response head is ready to go to the
//!    client, whether it came from the upstream or from the gateway itself. May add or remove
//!    headers. Later, once the body is complete, [`Plugin::response_body`] may rewrite it.
//! 5. [`Plugin::log`] — once, after the response is finished or the client went away. Read-only.
//!
//! Errors in a plugin are not possible by construction: a plugin that cannot decide denies with a
//! [`Reply`] carrying status and a machine-readable code, and the gateway renders it in the JSON
//! error shape. A panicking plugin is a bug: pingora ends that request (the client sees the
//! connection close) and the process goes on.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// A boxed, `Send` future: what [`Plugin::request_async`] returns (no async runtime is named
/// here; the gateway polls it on the proxy's own runtime).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a plugin's async phase is bounded ([`Plugin::call_out`]). Both are enforced by the
/// gateway, not by the plugin: the call is dropped when `budget` is spent.
#[derive(Debug, Clone)]
pub struct CallOut {
    /// The most the call may take; past it the call is cancelled and counts as a timeout.
    pub budget: Duration,
    /// What happens when the call fails or times out.
    pub on_failure: OnFailure,
}

/// What the gateway does when an async call fails or runs out of its budget.
#[derive(Debug, Clone)]
pub enum OnFailure {
    /// Fail open: go on as if the plugin had said [`Flow::Continue`].
    Open,
    /// Fail closed: answer the client with this reply (e.g. 503).
    Closed(Reply),
}

/// Why an async call failed (the gateway applies [`CallOut::on_failure`] and logs this).
/// Messages must not contain secrets (connection strings with passwords, tokens).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service}: {message}")]
pub struct CallError {
    /// What was called (`redis`, `jwks`).
    pub service: &'static str,
    pub message: String,
}

impl CallError {
    pub fn new(service: &'static str, message: impl Into<String>) -> Self {
        Self {
            service,
            message: message.into(),
        }
    }
}

/// Whether a plugin needs the request body's bytes in one piece ([`Plugin::request_body_need`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyNeed {
    /// No: the body streams through untouched (per-chunk [`Plugin::request_body`] still runs).
    #[default]
    None,
    /// Yes, up to `limit` bytes: the gateway buffers the body and calls
    /// [`Plugin::request_body_buffered`] once with the exact bytes before forwarding them.
    /// A body longer than `limit` follows `over_limit`.
    Buffer { limit: usize, over_limit: OverLimit },
}

/// What happens to a request whose body is longer than a plugin's [`BodyNeed::Buffer`] limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Answer `413 payload_too_large` (nothing more is read; the upstream request is abandoned).
    Reject,
    /// Forward the body without calling the plugin, and mark the request's audit record
    /// `body_uninspected` ([`RequestCtx::body_uninspected`]).
    PassUninspected,
}

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
    /// Set by the gateway when a buffering plugin did not see the body because it was longer
    /// than the plugin's limit ([`OverLimit::PassUninspected`]); recorded in the audit record.
    pub body_uninspected: bool,
    /// What inspecting plugins found (WAF detections, masked personal data), in the order they
    /// found it; written into the audit record and counted in metrics. Empty (and unallocated)
    /// on almost every request.
    pub findings: Vec<Finding>,
    /// Per-plugin, per-request state (e.g. CORS remembers the request's `Origin` for the
    /// response phase; a concurrency limit remembers it holds a slot until the log phase).
    pub vars: http::Extensions,
}

impl Default for RequestCtx {
    fn default() -> Self {
        // Made for every request: the three empty names share one allocation per thread
        // (`Arc::from("")` allocates each time), until routing sets the route's own.
        thread_local! {
            static EMPTY: Arc<str> = Arc::from("");
        }
        let empty = EMPTY.with(Arc::clone);
        Self {
            request_id: String::new(),
            route: empty.clone(),
            service: empty.clone(),
            agency: empty,
            client_ip: IpAddr::from([0, 0, 0, 0]),
            identity: None,
            denied_by: None,
            body_uninspected: false,
            findings: Vec::new(),
            vars: http::Extensions::new(),
        }
    }
}

/// In [`RequestCtx::vars`] when the gateway kept the upstream's `Content-Length` for this
/// response (the value): every body plugin promised to keep the body's length
/// ([`Plugin::response_body_keeps_length`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptLength(pub usize);

/// Something an inspecting plugin found in a request or its response: a WAF detection, personal
/// data it masked, an upstream error page it replaced. The gateway writes each into the request's
/// audit record (`"findings":[…]`, at most [`Finding::MAX_PER_REQUEST`]) and counts it in
/// `fenfa_findings_total{plugin,class,action}`.
///
/// Never put a raw value here: `excerpt` must already be redacted by the plugin (personal data
/// and secrets replaced), and is cut to [`Finding::MAX_EXCERPT`] bytes (on a character boundary) by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The plugin's name, as in config files (`waf`, `response-masking`).
    pub plugin: &'static str,
    /// What kind of thing was found (`sqli`, `xss`, `id_number`, `stack_trace`, …): a small,
    /// fixed vocabulary per plugin, used as a metrics label.
    pub class: &'static str,
    /// The rule or detector that matched, when the plugin has rule ids.
    pub rule: Option<&'static str>,
    /// Where: `query:id`, `body:$.user.name`, `header:user-agent`, `path`, `response`.
    pub location: String,
    pub action: FindingAction,
    /// How many times (masking counts values; a WAF finding is usually 1).
    pub count: u32,
    /// A short, redacted excerpt of what matched, for the security team.
    pub excerpt: Option<String>,
}

impl Finding {
    /// Findings kept in one audit record; more are counted in metrics only, and the record says
    /// `"findings_dropped":N`.
    pub const MAX_PER_REQUEST: usize = 16;
    /// Longest excerpt kept, in bytes.
    pub const MAX_EXCERPT: usize = 64;
}

/// What the plugin did about a [`Finding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingAction {
    /// The request was refused because of it.
    Blocked,
    /// Recorded only (a WAF in `monitor` mode, a detection below the blocking threshold).
    Logged,
    /// The value was masked in the response.
    Masked,
    /// The response body was replaced (an upstream error page that leaked internals).
    Replaced,
}

impl FindingAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingAction::Blocked => "blocked",
            FindingAction::Logged => "logged",
            FindingAction::Masked => "masked",
            FindingAction::Replaced => "replaced",
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
    /// Whether this plugin has an async phase, and its budget and failure policy. Asked once
    /// when the chain is compiled; `None` (the default) means [`Plugin::request_async`] is never
    /// called.
    fn call_out(&self) -> Option<CallOut> {
        None
    }
    /// Async request phase, for plugins that must call out (Redis, HTTP): runs after every
    /// plugin's [`Plugin::request`] passed, in priority order, on the proxy's own runtime (the
    /// future must not block a thread: use async clients). The gateway bounds it by
    /// [`CallOut::budget`] (the future is dropped when it is spent) and applies
    /// [`CallOut::on_failure`] on an error or a timeout; both are counted in
    /// `fenfa_plugin_calls_total{plugin,outcome}`. `Ok(Flow::Respond)` answers the client like
    /// the request phase does. Other routes' requests are never held up by it.
    fn request_async<'a>(
        &'a self,
        _req: &'a RequestView<'a>,
        _ctx: &'a mut RequestCtx,
    ) -> BoxFuture<'a, Result<Flow, CallError>> {
        Box::pin(async { Ok(Flow::Continue) })
    }
    /// What the async phase answers instead of [`CallOut::on_failure`] when this plugin's call
    /// failed or ran out of its budget: `Some(flow)` is used as the plugin's answer (e.g. a
    /// cluster-wide rate limit falls back to this node's own counters); `None` (the default)
    /// applies `on_failure`. The failure is still counted as `error` or `timeout`. Runs
    /// synchronously right after the failure, so it must be as cheap as a request phase: no
    /// I/O, no blocking.
    fn request_fallback(&self, _req: &RequestView<'_>, _ctx: &mut RequestCtx) -> Option<Flow> {
        None
    }
    /// Request-body phase, streaming: called for each chunk of the request body as it arrives
    /// from the client (`chunk` is that chunk's bytes, `total` counts all bytes so far
    /// including this chunk, `end` is true on the last call, possibly with an empty chunk).
    /// Runs on every route that has plugins; must be cheap. [`Flow::Respond`] stops reading,
    /// abandons the upstream request and answers the client (e.g. 413).
    fn request_body(&self, _ctx: &mut RequestCtx, _chunk: &[u8], _total: u64, _end: bool) -> Flow {
        Flow::Continue
    }
    /// Whether this plugin needs the whole request body ([`BodyNeed`]). Asked once when the
    /// chain is compiled, never per request: return a constant of the instance's config.
    fn request_body_need(&self) -> BodyNeed {
        BodyNeed::None
    }
    /// Request-body phase, buffered: for a plugin whose [`Plugin::request_body_need`] is
    /// [`BodyNeed::Buffer`], called once per request with the complete body (the exact bytes
    /// the client sent, de-chunked; empty for a request without a body) when it fits the
    /// plugin's limit. The gateway forwards the same bytes unchanged afterwards.
    /// [`Flow::Respond`] answers the client instead (the upstream request is abandoned).
    /// Not called when the body is over the limit (see [`OverLimit`]).
    fn request_body_buffered(&self, _ctx: &mut RequestCtx, _body: &Bytes) -> Flow {
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
    /// Whether this plugin reads or rewrites the upstream's response body ([`BodyNeed`]; asked
    /// once when the chain is compiled). For a response it is [`BodyNeed::Buffer`] or nothing:
    /// see [`Plugin::response_body`].
    fn response_body_need(&self) -> BodyNeed {
        BodyNeed::None
    }
    /// Response-body phase: for a plugin whose [`Plugin::response_body_need`] is
    /// [`BodyNeed::Buffer`], called once with the complete upstream response body, decoded
    /// (`gzip`, `deflate` and `br` are decoded by the gateway; the client then receives it
    /// without `Content-Encoding`), when it fits the chain's largest limit. The plugin may
    /// rewrite `body` in place; the gateway sends the result chunked (no `Content-Length`),
    /// unless every body plugin of the chain keeps this response's length
    /// ([`Plugin::response_body_keeps_length`]): then the upstream's `Content-Length` is kept
    /// and [`KeptLength`] is in [`RequestCtx::vars`], and the plugin must leave `body` exactly
    /// as long as it found it.
    /// Never called for `HEAD`, `204`, `304`, `1xx`/`101` (upgrade) responses or the gateway's
    /// own answers: those pass untouched.
    /// Over the limit: [`OverLimit::PassUninspected`] streams the rest unread and sets
    /// [`RequestCtx::body_uninspected`]; [`OverLimit::Reject`] aborts the response (the client
    /// sees a truncated, unterminated chunked body, never unchecked data) — the status and
    /// headers are already sent, so no 413 is possible. An encoded body over the limit is
    /// always aborted (its `Content-Encoding` was already dropped). The plugin's own limit
    /// counts, not only the chain's largest: a body within the chain's limit but over this
    /// plugin's follows this plugin's `over_limit` (it is not called either way).
    fn response_body(&self, _ctx: &mut RequestCtx, _status: u16, _body: &mut Vec<u8>) {}
    /// Response-body phase, head part: for a plugin whose [`Plugin::response_body_need`] is
    /// [`BodyNeed::Buffer`], called once **before the response head goes to the client**, when
    /// the gateway has decided to buffer this response's body (the same responses
    /// [`Plugin::response_body`] may see: not `HEAD`, `204`, `304`, `1xx`, not an encoding the
    /// gateway cannot read). Sees the status and the head as it will be sent (`Content-Length`
    /// and a decoded `Content-Encoding` already removed); runs before every plugin's
    /// [`Plugin::response`] phase.
    ///
    /// Pingora sends the head as soon as it has it, before the body is complete, so whatever a
    /// body rewrite implies for the head must be decided here: a plugin that will replace the
    /// body sets its `Content-Type` now, and a plugin that treats bodies by type remembers the
    /// `Content-Type` in [`RequestCtx::vars`] for [`Plugin::response_body`]. The default does
    /// nothing: a new default method, so [`API_VERSION`](crate::API_VERSION) stays 2 and
    /// plugins written before it are unaffected.
    fn response_body_head(
        &self,
        _ctx: &mut RequestCtx,
        _status: u16,
        _headers: &mut dyn HeaderEdits,
    ) {
    }
    /// Response-body phase, framing: asked right after [`Plugin::response_body_head`], for a
    /// response that arrived with a `Content-Length`, unencoded and within the limit. `true`
    /// promises that [`Plugin::response_body`] leaves this response's body exactly as long as
    /// it was (padding what it shortened in a way its content type allows, as `response-masking`
    /// pads JSON with spaces). When every body plugin of the chain promises it, the gateway
    /// keeps the upstream's `Content-Length` and puts [`KeptLength`] in [`RequestCtx::vars`]:
    /// the head then goes out with the body in one write, instead of chunked framing's three
    /// (head, chunk, last chunk). A body that changed length anyway is not sent (the response
    /// is aborted, as for an over-limit body under [`OverLimit::Reject`]). The default, `false`,
    /// keeps the chunked framing that any rewrite fits.
    fn response_body_keeps_length(&self, _ctx: &RequestCtx, _status: u16) -> bool {
        false
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
    /// Called once by a running gateway, before it compiles its first config; never by config
    /// checks (`fenfa-gateway check`, the control plane's validation), which only
    /// [`PluginFactory::build`]. A factory that works in the background (fetching a key set) or
    /// keeps state on disk starts doing so only after this call; until then its instances must
    /// work without it. The default does nothing.
    fn start(&self, _host: &Host) {}
}

/// What a running gateway gives a plugin factory ([`PluginFactory::start`]).
#[derive(Debug, Clone)]
pub struct Host {
    /// This plugin kind's own directory for state that must survive restarts:
    /// `<data dir>/plugins/<name>/`, inside the gateway's private (0700) data dir. It may not
    /// exist yet; [`Host::write_private`] creates it.
    pub data_dir: std::path::PathBuf,
    /// Writes a file atomically (a crash leaves the old or the new content) and owner-only
    /// (0600), creating its directory: the gateway's own writer, so plugins persist state the
    /// way the gateway does.
    pub write_private: fn(&std::path::Path, &[u8]) -> std::io::Result<()>,
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
