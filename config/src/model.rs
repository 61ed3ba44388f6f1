//! The declarative configuration as written by an operator (YAML or JSON).
//!
//! These types mirror the file one to one and are only checked for shape here (unknown fields are
//! errors, so a typo never silently disables a setting). Meaning is checked by the compiler
//! ([`crate::check`]), which checks a [`Config`] completely or names the offending field.
//! `docs/config.md` documents every field; keep the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// A whole gateway configuration: one snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Free-form version label, shown in `/status` and metrics. Defaults to a content hash.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub listeners: Listeners,
    #[serde(default)]
    pub gateway: GatewaySettings,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Plugins that run on every route, before service and route plugins of the same name.
    #[serde(default)]
    pub global_plugins: Vec<PluginRef>,
    /// The agencies that own services; each may have keys to sign what its backends receive.
    #[serde(default)]
    pub agencies: Vec<Agency>,
    /// The audit trail (`docs/audit.md`). Read at startup; changes need a restart.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Traces: a span per request, exported to an OpenTelemetry collector over OTLP/HTTP
    /// (`docs/tracing.md`). Absent: no spans, no export. Read at startup; changes need a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSettings>,
    /// The shared H5 domain: its host names and the channels' domain verification files
    /// (`docs/h5.md`). Hot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5: Option<H5Settings>,
    /// A config with no services and no routes is refused (an empty or truncated file is the
    /// commonest damage) unless it says `allow_empty: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
}

impl Config {
    /// Refuses a config without services and routes unless it allows that explicitly.
    pub fn check_not_empty(&self) -> Result<(), super::ConfigError> {
        if self.services.is_empty() && self.routes.is_empty() && !self.allow_empty {
            return Err(super::ConfigError::at(
                "",
                "the config has no services and no routes (an empty or truncated file?); \
                 set `allow_empty: true` to run without any",
            ));
        }
        Ok(())
    }
}

/// An agency (委办局) that owns services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    pub name: String,
    /// Keys for the gateway signature its backends receive; the first one signs, the others stay
    /// listed during a rotation. See `docs/upstream-signature.md`.
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
    /// The MAC of that signature: `hmac-sha256` (default) or `hmac-sm3` (国密 SM3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_algorithm: Option<SignatureAlgorithm>,
}

/// The upstream signature's MAC (`docs/upstream-signature.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    HmacSha256,
    HmacSm3,
}

impl SignatureAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::HmacSha256 => "hmac-sha256",
            SignatureAlgorithm::HmacSm3 => "hmac-sm3",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub id: String,
    /// Base64 of at least 32 random bytes.
    pub secret: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `audit:` — one record per request, hash-chained, in segment files; see `docs/audit.md`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Off only to measure what auditing costs; a production node keeps it on.
    pub enabled: bool,
    /// Segment directory; default `<data-dir>/audit`.
    pub dir: Option<String>,
    /// Chain key file (hex); default `<data-dir>/audit.key`, generated on first start (0600).
    pub key_file: Option<String>,
    /// A segment is sealed once it reaches this many bytes…
    pub segment_max_bytes: u64,
    /// …or this age.
    pub segment_max_age: HumanDuration,
    /// Sealed segments older than this are deleted (once shipped, when shipping is on).
    pub retention_days: u32,
    /// Records waiting for the writer; beyond this they are dropped (or 503 when `strict`).
    pub queue_capacity: usize,
    /// Answer 503 `audit_unavailable` rather than serve a request whose record has no room.
    pub strict: bool,
    /// How often the active segment is fsynced (also on seal and shutdown); `head.json`, the
    /// signed end of the trail, is rewritten after each.
    pub fsync_interval: HumanDuration,
    /// Request headers copied into each record (by name). Empty by default.
    pub headers: Vec<String>,
    /// Headers whose values are recorded as `***` even when listed in `headers`.
    pub mask_headers: Vec<String>,
    /// Query keys whose values are recorded verbatim; every other query value is `***`.
    pub keep_query_values: Vec<String>,
    /// Ship records to the control plane.
    pub ship: Option<AuditShip>,
    /// Also export records as OpenTelemetry logs (OTLP/HTTP, JSON) to a collector.
    pub otlp: Option<AuditOtlp>,
    /// The MAC that chains the trail: `hmac-sha256` (default) or `hmac-sm3` (国密,
    /// `docs/guomi.md`). Takes effect with the next segment the writer opens (at the next
    /// start), which records the switch as its first line.
    pub chain: ChainAlgorithm,
}

/// `audit.chain`: the MAC of the request audit chain (`fenfa_audit::chain`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainAlgorithm {
    /// HMAC-SHA256 (RFC 2104, FIPS 180-4): the default, and every trail before the setting.
    #[default]
    HmacSha256,
    /// HMAC-SM3 (RFC 2104 over SM3, GB/T 32905-2016), for 商用密码 assessments.
    HmacSm3,
}

impl ChainAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainAlgorithm::HmacSha256 => "hmac-sha256",
            ChainAlgorithm::HmacSm3 => "hmac-sm3",
        }
    }
}

impl std::fmt::Display for ChainAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            key_file: None,
            segment_max_bytes: 64 << 20,
            segment_max_age: HumanDuration::from_secs(3600),
            retention_days: 180,
            queue_capacity: 65_536,
            strict: false,
            fsync_interval: HumanDuration::from_secs(1),
            headers: Vec::new(),
            mask_headers: [
                "authorization",
                "proxy-authorization",
                "cookie",
                "x-api-key",
            ]
            .map(String::from)
            .to_vec(),
            keep_query_values: Vec::new(),
            ship: None,
            otlp: None,
            chain: ChainAlgorithm::default(),
        }
    }
}

/// `audit.ship`: the control plane's ingest endpoint.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditShip {
    /// `http://host:port/path`; batches are POSTed here.
    pub url: String,
    /// The node token, inline. Prefer `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the node token.
    #[serde(default)]
    pub token_file: Option<String>,
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// How often to look for new records when everything is shipped.
    #[serde(default = "default_ship_interval")]
    pub interval: HumanDuration,
    /// Connect, send and answer timeout per batch.
    #[serde(default = "default_ship_timeout")]
    pub timeout: HumanDuration,
    /// Longest pause between retries while the endpoint fails.
    #[serde(default = "default_ship_backoff_max")]
    pub backoff_max: HumanDuration,
    /// TLS to an `https://` endpoint: trusted CA, client certificate.
    #[serde(default)]
    pub tls: ClientTls,
    /// Allow plain `http://` to a host that is not loopback (logged as a warning at every start).
    #[serde(default)]
    pub insecure: bool,
    /// Longest answer body read from the endpoint.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

/// TLS settings of a client the gateway runs in the background (`audit.ship.tls`,
/// `audit.otlp.tls`; for the control plane the `--control-plane-ca` … flags).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM file of the only CAs trusted for the server's certificate (default: the system's).
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM certificate (chain) presented to the server (mutual TLS); needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
}

impl std::fmt::Debug for AuditShip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditShip")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("batch_records", &self.batch_records)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("backoff_max", &self.backoff_max)
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// `audit.otlp`: an OpenTelemetry collector's OTLP/HTTP logs endpoint.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditOtlp {
    /// `http://host:4318/v1/logs`; batches are POSTed here as OTLP JSON.
    pub url: String,
    /// Extra request headers, e.g. the collector's `Authorization` (values never logged).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// How often to look for new records when everything is exported.
    #[serde(default = "default_ship_interval")]
    pub interval: HumanDuration,
    /// Connect, send and answer timeout per batch.
    #[serde(default = "default_ship_timeout")]
    pub timeout: HumanDuration,
    /// Longest pause between retries while the collector fails.
    #[serde(default = "default_ship_backoff_max")]
    pub backoff_max: HumanDuration,
    /// TLS to an `https://` collector: trusted CA, client certificate.
    #[serde(default)]
    pub tls: ClientTls,
    /// Allow plain `http://` to a host that is not loopback (logged as a warning at every start).
    #[serde(default)]
    pub insecure: bool,
    /// Longest answer body read from the collector.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

impl std::fmt::Debug for AuditOtlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditOtlp")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("batch_records", &self.batch_records)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("backoff_max", &self.backoff_max)
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// `tracing:` — spans of every request, exported as OTLP/HTTP (protobuf) to a collector's traces
/// endpoint; see `docs/tracing.md`. Checked by [`crate::traces::check`].
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP traces endpoint, `https://collector:4318/v1/traces` (plain
    /// `http://` only to a loopback address, or anywhere with `insecure`).
    pub endpoint: String,
    /// Share of new traces recorded and exported, 0.0 to 1.0. A request that arrives with a
    /// `traceparent` follows its caller's decision (the sampled flag) instead.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Extra request headers, e.g. the collector's `Authorization` (values never logged).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS to an `https://` collector: trusted CA, client certificate.
    #[serde(default)]
    pub tls: ClientTls,
    /// Allow plain `http://` to a host that is not loopback (logged as a warning at every start).
    #[serde(default)]
    pub insecure: bool,
    /// Longest wait for a batch to go out (retries included); past it the batch is dropped.
    #[serde(default = "default_trace_timeout")]
    pub timeout: HumanDuration,
    /// How often finished spans are sent when fewer than `batch_spans` are waiting.
    #[serde(default = "default_trace_interval")]
    pub interval: HumanDuration,
    /// Spans per export request; a full batch goes out at once.
    #[serde(default = "default_batch_spans")]
    pub batch_spans: usize,
    /// Finished spans waiting for export; past this, new spans are dropped (never waited for).
    #[serde(default = "default_queue_spans")]
    pub queue_spans: usize,
}

impl std::fmt::Debug for TracingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingSettings")
            .field("endpoint", &self.endpoint)
            .field("sample_ratio", &self.sample_ratio)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .field("interval", &self.interval)
            .field("batch_spans", &self.batch_spans)
            .field("queue_spans", &self.queue_spans)
            .finish()
    }
}

/// 10%: enough traces to see every route's behaviour at city scale, at a tenth of the cost of
/// tracing everything (BENCHMARKS.md measures tracing at 10% against off).
fn default_sample_ratio() -> f64 {
    0.1
}
fn default_trace_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_trace_interval() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_batch_spans() -> usize {
    512
}
fn default_queue_spans() -> usize {
    8192
}

fn default_max_response_bytes() -> u64 {
    1 << 20
}

fn default_batch_records() -> usize {
    500
}
fn default_ship_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_ship_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_ship_backoff_max() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// Where a service is published: channels, and optionally which apps may call it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// `wechat`, `alipay`, `baidu`.
    pub channels: Vec<String>,
    /// Mini-program app ids allowed to call; empty = any app on a published channel.
    #[serde(default)]
    pub apps: Vec<String>,
}

/// Listening addresses. Changing these needs a restart; everything else reloads hot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    /// Plain HTTP proxy listener.
    pub http: Option<String>,
    /// HTTPS proxy listener (needs `tls.certificates`).
    pub https: Option<String>,
    /// Status listener: `/healthz`, `/readyz`, `/status`, `/metrics`.
    pub status: Option<String>,
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            http: Some("0.0.0.0:9080".into()),
            https: None,
            status: Some("127.0.0.1:9091".into()),
        }
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Proxy worker threads (pingora). Needs a restart.
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests. Needs a restart.
    pub shutdown_grace: HumanDuration,
    /// Idle upstream connections kept per process. Needs a restart.
    pub upstream_keepalive_pool_size: usize,
    /// Node name in logs and audit records; defaults to the host name.
    pub node: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs). The client IP is the right-most
    /// address in that header not in this list; from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub tls: TlsSettings,
    /// Bytes of response bodies the H5 static-asset cache may hold (default 64 MiB; `0` turns
    /// the cache off). Needs a restart. Absent from the serialised form when unset, so that the
    /// content hash of configs without it does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_cache_bytes: Option<u64>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            threads: 1,
            shutdown_grace: HumanDuration::from_secs(10),
            upstream_keepalive_pool_size: 128,
            node: None,
            trusted_proxies: Vec::new(),
            tls: TlsSettings::default(),
            h5_cache_bytes: None,
        }
    }
}

/// Certificates served on the HTTPS listener, chosen by SNI.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    #[serde(default)]
    pub certificates: Vec<Certificate>,
}

/// One certificate chain and key (PEM files). The names it serves are taken from `snis` or,
/// when empty, from the certificate's subject alternative names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub snis: Vec<String>,
    /// Served when the client sends no SNI or an unknown name. At most one.
    #[serde(default)]
    pub default: bool,
}

/// An agency backend: where requests go and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// The owning agency (a name from `agencies`); its signing keys sign upstream requests.
    #[serde(default)]
    pub agency: Option<String>,
    /// Channel publication. When present, only verified callers (jwt-auth) from these channels
    /// (and apps) reach the service; others get 403 `channel_not_published`.
    #[serde(default)]
    pub publish: Option<Publish>,
    /// `api` (default) or `h5`: web pages opened in the mini-programs' web-view, served under a
    /// path prefix of the shared H5 domain (`docs/h5.md`).
    #[serde(default, skip_serializing_if = "ServiceKind::is_api")]
    pub kind: ServiceKind,
    /// Overrides of an `h5` service's security headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5: Option<H5Service>,
    pub upstream: Upstream,
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
}

/// What a service serves: an API (the default) or H5 pages.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    #[default]
    Api,
    H5,
}

impl ServiceKind {
    pub fn is_api(&self) -> bool {
        *self == ServiceKind::Api
    }
}

/// `services[].h5`: the security headers of an `h5` service's answers, when the defaults do not
/// fit (`docs/h5.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct H5Service {
    /// `Content-Security-Policy` without `frame-ancestors` (that part comes per channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csp: Option<String>,
    /// The `frame-ancestors` sources per caller channel.
    #[serde(default)]
    pub frame_ancestors: FrameAncestors,
}

/// `frame-ancestors` source lists by channel; absent ones keep the default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FrameAncestors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alipay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baidu: Option<String>,
}

/// `h5:` — the shared H5 domain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct H5Settings {
    /// Host names of the H5 domain; verification files are served on these only (empty: on
    /// every host).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Files the mini-program platforms ask for at the domain's root to prove it.
    #[serde(default)]
    pub verification_files: Vec<VerificationFile>,
}

/// One domain verification file, served at `/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerificationFile {
    /// `wechat`, `alipay` or `baidu`: whose file it is (for operators; any caller gets it).
    pub channel: String,
    /// The file name, e.g. `MP_verify_abc123.txt`.
    pub name: String,
    /// The file's content, as the platform gave it.
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default)]
    pub scheme: Scheme,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub balance: Balance,
    /// For `balance: consistent_hash`: `client_ip` or `header:<Name>`.
    #[serde(default)]
    pub hash_on: Option<String>,
    #[serde(default)]
    pub tls: UpstreamTls,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Extra attempts on another target. Only connect failures, or any failure of an
    /// idempotent request before a response started, are retried.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How long an idle upstream connection stays in the keepalive pool.
    #[serde(default = "default_keepalive")]
    pub keepalive_timeout: HumanDuration,
    /// Host header sent upstream: `pass` (the client's) or `target` (the target address).
    #[serde(default)]
    pub host_header: HostHeader,
    #[serde(default)]
    pub health_check: HealthCheck,
}

fn default_retries() -> u32 {
    1
}
fn default_keepalive() -> HumanDuration {
    HumanDuration::from_secs(60)
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    ConsistentHash,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    #[default]
    Pass,
    Target,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`. Host names are resolved when the config compiles.
    pub addr: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// Verify the target's certificate chain and name. On by default.
    pub verify: bool,
    /// Server name sent in SNI and checked against the certificate. Defaults to the target host.
    pub sni: Option<String>,
    /// PEM bundle of trusted CAs for this upstream, instead of the system roots.
    pub ca: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self {
            verify: true,
            sni: None,
            ca: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP (and TLS) connection establishment to one target.
    pub connect: HumanDuration,
    /// Longest wait for any read from the target (including the response head).
    pub read: HumanDuration,
    /// Longest wait for any write to the target.
    pub write: HumanDuration,
    /// Budget for the whole upstream exchange, retries included.
    pub total: HumanDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: HumanDuration::from_secs(2),
            read: HumanDuration::from_secs(30),
            write: HumanDuration::from_secs(30),
            total: HumanDuration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub active: Option<ActiveHealthCheck>,
    #[serde(default)]
    pub passive: Option<PassiveHealthCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthCheck {
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_hc_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_two")]
    pub healthy_threshold: u32,
    #[serde(default = "default_three")]
    pub unhealthy_threshold: u32,
    /// Statuses counted as healthy; default 200–399.
    #[serde(default)]
    pub healthy_statuses: Vec<u16>,
    /// Host header for the probe; defaults to the target address.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// Consecutive failures (connect errors, timeouts, or an `unhealthy_statuses` answer) that eject.
    #[serde(default = "default_three")]
    pub max_failures: u32,
    /// How long an ejected target is left out before it gets traffic again.
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,
    /// Upstream statuses counted as failures; default 502, 503, 504.
    #[serde(default = "default_unhealthy_statuses")]
    pub unhealthy_statuses: Vec<u16>,
}

fn default_hc_interval() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_hc_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_cooldown() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_two() -> u32 {
    2
}
fn default_three() -> u32 {
    3
}
fn default_unhealthy_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}

/// An interface: which requests go to which service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    pub service: String,
    /// `api.example.com` or `*.example.com`; empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `/exact`, `/users/{id}`, `/prefix/*`.
    pub paths: Vec<String>,
    /// Empty = any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Breaks ties between equally specific routes; higher wins.
    #[serde(default)]
    pub priority: i32,
    /// Remove the literal prefix of a `/*` path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replace the path sent upstream; `{name}` inserts a captured segment, `{*}` the rest of a
    /// prefix match.
    #[serde(default)]
    pub rewrite: Option<String>,
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
}

/// A plugin instance: its name and its configuration, checked by the plugin's own schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

/// Parses YAML (JSON is YAML too) into a [`Config`], naming the field on error.
///
/// The parser is `serde-saphyr`, which deserializes straight from the parser's events. The
/// parser used before (`yaml_serde`) first loaded every event of the document into a list: for
/// a 100k-route config (8 MiB of text) that list peaked at 240 MiB, held beside the running
/// snapshot on every reload, more than the snapshot itself (BENCHMARKS.md, "Reload memory,
/// round two").
/// `serde-saphyr` peaks at 47 MiB on the same file, of which 43 MiB is the parsed config.
///
/// Limits: YAML aliases stay bounded by the parser's defaults (alias bombs), nesting to 64
/// levels; the counts that grow with the number of routes are raised to [`MAX_NODES`].
pub fn parse(text: &str) -> Result<Config, super::ConfigError> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = MAX_NODES;
    budget.max_nodes = MAX_NODES;
    budget.max_total_scalar_bytes = MAX_TEXT_BYTES;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    };
    let mut path = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    parsed.map_err(|e| {
        let e = e.without_snippet();
        let location = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        // serde_path_to_error ends the path with `?` where it did not know the key yet.
        let path = path.trim_end_matches('?').trim_end_matches('.');
        let (path, msg) = match e {
            serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => (
                if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                },
                format!("duplicate key `{key}`: each key may appear once"),
            ),
            serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => (
                path.to_string(),
                "duplicate key: each key may appear once".to_string(),
            ),
            _ => (path.to_string(), strip_location(&e.to_string())),
        };
        super::ConfigError::at(path, format!("{msg}{location}"))
    })
}

/// Largest number of YAML nodes (and parser events) a config may have: ~25 per route, so room
/// for well over a million routes.
pub const MAX_NODES: usize = 64 << 20;

/// Largest total of scalar text in a config.
pub const MAX_TEXT_BYTES: usize = 256 << 20;

/// The YAML parser appends "at line X, column Y" to messages; we print the location once, our way.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "services:\n  - name: s\n    upstream:\n      targets:\n        - addr: \"127.0.0.1:1\"\n";

    #[test]
    fn a_minimal_config_parses() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.services.len(), 1);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path_and_line() {
        let text = MINIMAL.replace("    upstream:", "    colour: red\n    upstream:");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.path, "services[0].colour");
        assert!(
            e.message.contains("unknown field `colour`") && e.message.contains("line 3"),
            "{e}"
        );
    }

    /// A service whose plugin config (free-form, checked later by the plugin) is `value`.
    fn with_plugin_config(value: &str) -> String {
        format!("{MINIMAL}    plugins:\n      - name: p\n        config: {value}\n")
    }

    #[test]
    fn an_alias_bomb_is_refused_not_expanded() {
        // Nine levels of nine aliases each, inside a plugin's config: 9^9 (387 million) strings
        // if expanded.
        let mut levels = vec!["a0: &a0 [x, x, x, x, x, x, x, x, x]".to_string()];
        for i in 1..=9 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            levels.push(format!("a{i}: &a{i} [{refs}]"));
        }
        let text = with_plugin_config(&format!("{{{}}}", levels.join(", ")));
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("budget breached"), "{e}");
    }

    #[test]
    fn nesting_deeper_than_64_is_refused() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = parse(&with_plugin_config(&deep)).unwrap_err();
        assert!(e.message.contains("depth"), "{e}");
        parse(&with_plugin_config(&format!(
            "{}{}",
            "[".repeat(20),
            "]".repeat(20)
        )))
        .expect("20 levels are fine");
    }

    #[test]
    fn duplicate_keys_are_refused_not_overwritten() {
        let text = MINIMAL.replace("  - name: s\n", "  - name: s\n    name: t\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.path, "services[0].name");
        assert!(e.message.contains("duplicate key `name`"), "{e}");
    }
}
