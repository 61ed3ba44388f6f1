//! The resources the control plane keeps, and their inputs.
//!
//! Parse, don't validate: inputs are `#[serde(deny_unknown_fields)]` structs whose field types
//! ([`Name`], [`Channel`], [`Destination`], …) cannot hold a bad value, so a request body that
//! deserializes is well-formed, and a failure names the field (`rules[1].destination`). What
//! only the whole picture can tell (an upstream outside the network policy, a route clashing
//! with another) is checked when the change is rendered and compiled (`crate::commit`).
//!
//! Stored resources keep secrets only sealed (`v1:…`, see `crate::crypto`); the `view` of a
//! resource, which is what the API returns, never includes them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use fenfa_config::model::Upstream;
use fenfa_plugins::Cidr;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The four roles. An account holds exactly one, so no account holds two admin roles.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    SystemAdmin,
    SecurityAdmin,
    AuditAdmin,
    AgencyOperator,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::SystemAdmin,
        Role::SecurityAdmin,
        Role::AuditAdmin,
        Role::AgencyOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SystemAdmin => "system-admin",
            Role::SecurityAdmin => "security-admin",
            Role::AuditAdmin => "audit-admin",
            Role::AgencyOperator => "agency-operator",
        }
    }

    /// The three admin roles need a second factor (TOTP).
    pub fn is_admin(self) -> bool {
        !matches!(self, Role::AgencyOperator)
    }

    /// Chinese label used in exports.
    pub fn label_zh(self) -> &'static str {
        match self {
            Role::SystemAdmin => "系统管理员",
            Role::SecurityAdmin => "安全管理员",
            Role::AuditAdmin => "审计管理员",
            Role::AgencyOperator => "委办局操作员",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role"))
    }
}

/// A mini-program host channel.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Wechat,
    Alipay,
    Baidu,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Wechat => "wechat",
            Channel::Alipay => "alipay",
            Channel::Baidu => "baidu",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Api,
    H5,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Api => "api",
            ServiceKind::H5 => "h5",
        }
    }
}

/// draft → submitted → (verified) published ⇄ offline; a failed verification sends a submitted
/// service back to its agency as `returned` (see `docs/admin.md`, `docs/verification.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    Draft,
    Submitted,
    Returned,
    Published,
    Offline,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Draft => "draft",
            Lifecycle::Submitted => "submitted",
            Lifecycle::Returned => "returned",
            Lifecycle::Published => "published",
            Lifecycle::Offline => "offline",
        }
    }
}

/// A resource name: 1–64 of `a-z 0-9 - _ .`, starting with a letter or digit. Names become
/// gateway names, metric labels and audit fields, so they are kept boring.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", example = "social-security")]
pub struct Name(String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok_first = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.is_empty() || s.len() > 64 || !ok_first {
            return Err(format!(
                "`{s}` is not a name: 1 to 64 characters, starting with a lower-case letter or digit"
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "`{s}` is not a name: only lower-case letters, digits, `-`, `_` and `.`"
            ));
        }
        Ok(Name(s))
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Free text shown to people (titles, descriptions): 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text(String);

impl TryFrom<String> for Text {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let n = s.chars().count();
        if n == 0 || n > 200 || s.trim().is_empty() {
            return Err("expected 1 to 200 characters".into());
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Text(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.0
    }
}

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A path prefix an agency owns (`/social/`): starts with `/`, visible ASCII without `*`, `{`,
/// `}`, `?` or `#`, at most 200 characters. It covers itself and everything below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = r#"^/[!"$-)+->@-z|~]{0,199}$"#, example = "/social/")]
pub struct PathPrefix(String);

impl TryFrom<String> for PathPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !s.starts_with('/')
            || s.len() > 200
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"*{}?#".contains(&b))
        {
            return Err(format!(
                "`{s}` is not a path prefix: `/` then visible ASCII without `*`, `{{`, `}}`, `?` or `#`"
            ));
        }
        Ok(PathPrefix(s))
    }
}

impl From<PathPrefix> for String {
    fn from(p: PathPrefix) -> String {
        p.0
    }
}

impl PathPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A host an agency owns: a name (`social.city.example`) or `*.domain` (any deeper name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "*.social.city.example")]
pub struct HostPattern(String);

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match Destination::try_from(s.clone()) {
            Ok(Destination::Host(h)) => Ok(HostPattern(h)),
            Ok(Destination::Wildcard(h)) => Ok(HostPattern(format!("*.{h}"))),
            _ => Err(format!("`{s}` is neither a host name nor `*.domain`")),
        }
    }
}

impl From<HostPattern> for String {
    fn from(h: HostPattern) -> String {
        h.0
    }
}

impl HostPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A system admin's permission for a route to overlap another agency's routes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverlapAllowance {
    pub reason: Text,
    /// The system admin who allowed it.
    pub by: String,
    pub at: i64,
}

/// `allow_overlap` in a route input (system admins only).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverlapRequest {
    /// Why the overlap is wanted; kept on the route and in the admin audit.
    pub reason: Text,
}

/// Where a network policy allows upstream traffic to: a CIDR (`10.20.0.0/16`, a single address
/// is `/32`), an exact host name, or a wildcard (`*.gov.example`, any deeper name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Destination {
    Cidr(Cidr),
    Host(String),
    Wildcard(String),
}

impl TryFrom<String> for Destination {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            return Cidr::new(ip, prefix)
                .map(Destination::Cidr)
                .map_err(|e| e.to_string());
        }
        if s.contains('/') {
            return s
                .parse::<Cidr>()
                .map(Destination::Cidr)
                .map_err(|e| e.to_string());
        }
        let (wild, host) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
            return Err(format!(
                "`{s}` is neither a CIDR, an IP address, a host name nor `*.domain`"
            ));
        }
        let host = host.to_ascii_lowercase();
        Ok(if wild {
            Destination::Wildcard(host)
        } else {
            Destination::Host(host)
        })
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Cidr(c) => write!(f, "{c}"),
            Destination::Host(h) => f.write_str(h),
            Destination::Wildcard(h) => write!(f, "*.{h}"),
        }
    }
}

impl Destination {
    /// Whether the target host (an address or a name, as written in `host:port`) is inside.
    pub fn contains(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match (self, host.parse::<IpAddr>()) {
            (Destination::Cidr(c), Ok(ip)) => c.contains(ip),
            (Destination::Cidr(_), Err(_)) => false,
            (_, Ok(_)) => false,
            (Destination::Host(h), Err(_)) => h.eq_ignore_ascii_case(host),
            (Destination::Wildcard(h), Err(_)) => {
                let host = host.to_ascii_lowercase();
                host.len() > h.len() + 1
                    && host.ends_with(h.as_str())
                    && host.as_bytes()[host.len() - h.len() - 1] == b'.'
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// One allowed upstream destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub destination: Destination,
    pub port: Port,
    pub protocol: Protocol,
}

/// A TCP port, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Port(pub u16);

impl TryFrom<u32> for Port {
    type Error = String;
    fn try_from(p: u32) -> Result<Self, String> {
        match u16::try_from(p) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(format!("{p} is not a port (1 to 65535)")),
        }
    }
}

impl From<Port> for u32 {
    fn from(p: Port) -> u32 {
        u32::from(p.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Retired,
}

// Schemas of the types that parse themselves (`TryFrom<String>`), for the OpenAPI document.

fn string_schema(
    description: &str,
    pattern: Option<&str>,
    max_length: Option<usize>,
    example: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .min_length(Some(1))
        .max_length(max_length)
        .examples([serde_json::json!(example)])
        .into()
}

impl utoipa::PartialSchema for Text {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        // Not blank, no control characters; the length (1 to 200 characters) is checked too.
        string_schema(
            "Text shown to people: 1 to 200 characters, not blank, no control characters",
            Some(
                r"^[^\S\u0000-\u001f\u007f-\u009f]{0,199}[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]{0,199}$",
            ),
            Some(200),
            "养老金查询",
        )
    }
}
impl utoipa::ToSchema for Text {}

impl utoipa::PartialSchema for Destination {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            "A CIDR (`10.20.0.0/16`), an IP address, a host name, or `*.domain`",
            None,
            Some(253),
            "10.20.0.0/16",
        )
    }
}
impl utoipa::ToSchema for Destination {}

impl utoipa::PartialSchema for Port {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(65535))
            .examples([serde_json::json!(8080)])
            .into()
    }
}
impl utoipa::ToSchema for Port {}

// ---------------------------------------------------------------------------------------------
// Stored resources

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agency {
    pub id: String,
    pub name: Name,
    pub title: Text,
    #[serde(default)]
    pub contact: Option<Text>,
    /// Path prefixes of its own; when set, its routes' paths must lie inside them.
    #[serde(default)]
    pub path_prefixes: Vec<PathPrefix>,
    /// Hosts of its own; when set, its routes must name hosts inside them.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// The upstream signature its backends get, over the platform's
    /// `algorithms.upstream_signature` (国密 agencies: `hmac-sm3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_algorithm: Option<MacAlgorithm>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Service {
    pub id: String,
    pub agency_id: String,
    pub name: Name,
    pub title: Text,
    pub kind: ServiceKind,
    #[serde(default)]
    pub description: Option<Text>,
    /// The gateway's own upstream model: targets, balancing, timeouts, health checks.
    #[schema(value_type = Object, example = json!({"targets": [{"addr": "10.20.1.5:8080"}]}))]
    pub upstream: Upstream,
    pub status: Lifecycle,
    /// Channels it is published on (empty unless published).
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// App ids allowed to call it; empty = any app on a published channel.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Why it was sent back: a system admin's rejection, or a failed verification's reasons.
    #[serde(default)]
    pub review_note: Option<String>,
    /// The load the agency declares its backend carries, requests per second: the go-live load
    /// test never goes above it (default [`DEFAULT_CAPACITY_RPS`]).
    #[serde(default)]
    pub capacity_rps: Option<u32>,
    /// The `response-masking` plugin's config for this service's answers (`None`: no masking).
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"classes": ["id_number", "mobile"]}))]
    pub masking: Option<Value>,
    /// The last verification of this service, set by the control plane.
    #[serde(default)]
    pub verification: Option<Verdict>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Requests per second a service is load-tested up to when its agency declares nothing.
pub const DEFAULT_CAPACITY_RPS: u32 = 10;
/// The highest capacity an agency may declare (the go-live load test's ceiling).
pub const MAX_CAPACITY_RPS: u32 = 10_000;

/// The outcome of a verification (`docs/verification.md`), kept on what it verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// The verification's id (`GET /v1/verifications/{id}`).
    pub id: String,
    /// SHA-256 of the definition it verified: a change to the upstream, masking, capacity or
    /// routes makes it stale.
    pub digest: String,
    pub result: VerdictResult,
    pub at: i64,
    /// Why a security admin let a failed verification go live (and who).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerdictResult {
    Passed,
    Failed,
    /// Failed, and a security admin allowed it to go live with a written reason.
    Overridden,
}

impl VerdictResult {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictResult::Passed => "passed",
            VerdictResult::Failed => "failed",
            VerdictResult::Overridden => "overridden",
        }
    }
}

/// A sample request the agency declares for an interface: what verification and inspection send
/// to the upstream, and the status it must answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleDecl {
    #[serde(default = "default_method")]
    #[schema(example = "GET")]
    pub method: String,
    /// Path and query as the upstream receives it; absent: the route's first path with its
    /// parameters filled (`docs/verification.md`).
    #[serde(default)]
    #[schema(example = "/pension/balance?id=1")]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    /// The status the interface must answer; absent: any status below 500.
    #[serde(default)]
    pub expect_status: Option<u16>,
}

fn default_method() -> String {
    "GET".into()
}

/// A change to a published service, edited while the published definition keeps serving, then
/// verified and applied in one step (`docs/verification.md`, "Revisions").
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub id: String,
    pub service_id: String,
    pub status: RevisionStatus,
    #[schema(value_type = Object)]
    pub upstream: Upstream,
    #[serde(default)]
    pub capacity_rps: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub masking: Option<Value>,
    /// The service's interfaces as they will be: matched to the live routes by name.
    pub routes: Vec<RevisionRoute>,
    #[serde(default)]
    pub verification: Option<Verdict>,
    #[serde(default)]
    pub review_note: Option<String>,
    /// The digest of the live definition it was opened from: applying it over a service changed
    /// since is refused.
    pub base_digest: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// draft → submitted → applied, or returned by a failed verification, or discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RevisionStatus {
    Draft,
    Submitted,
    Returned,
    Applied,
    Discarded,
}

impl RevisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionStatus::Draft => "draft",
            RevisionStatus::Submitted => "submitted",
            RevisionStatus::Returned => "returned",
            RevisionStatus::Applied => "applied",
            RevisionStatus::Discarded => "discarded",
        }
    }

    /// Still being worked on (at most one open revision per service).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RevisionStatus::Draft | RevisionStatus::Submitted | RevisionStatus::Returned
        )
    }
}

/// One interface of a revision: a route without its id and times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevisionRoute {
    pub name: Name,
    #[serde(default)]
    pub description: Option<Text>,
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub rewrite: Option<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub samples: Vec<SampleDecl>,
}

/// What an agency edits in a revision.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevisionInput {
    #[schema(value_type = Object)]
    pub upstream: Upstream,
    #[serde(default)]
    pub capacity_rps: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub masking: Option<Value>,
    pub routes: Vec<RevisionRoute>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    pub id: String,
    pub service_id: String,
    pub name: Name,
    #[serde(default)]
    pub description: Option<Text>,
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub rewrite: Option<String>,
    #[serde(default)]
    pub priority: i32,
    /// Set by a system admin: this route may overlap other agencies' routes.
    #[serde(default)]
    pub allow_overlap: Option<OverlapAllowance>,
    /// Sample requests for verification and inspection (at most [`MAX_SAMPLES`]).
    #[serde(default)]
    pub samples: Vec<SampleDecl>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct App {
    pub id: String,
    pub channel: Channel,
    pub app_id: AppId,
    pub name: Text,
    /// The app's channel credentials for sign-in (`docs/signin.md`), sealed JSON
    /// ([`crate::identity::channels::Credentials`]); never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub sealed_signin: Option<String>,
    /// Where this app's channel platform is called for sign-in (default: the channel's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin_endpoint: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A key the platform signs its unified tokens with (ES256; `docs/signin.md`). The private
/// key is sealed; the public JWK is served at `/.well-known/jwks.json` and rendered into every
/// gateway's `jwt-auth`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityKey {
    pub id: String,
    pub kid: String,
    /// The public JWK (`kty`, `crv`, `x`, `y`, `kid`, `alg`, `use`).
    #[schema(value_type = Object)]
    pub jwk: serde_json::Map<String, Value>,
    /// PKCS#8 of the private key, base64, sealed.
    #[schema(ignore)]
    pub sealed_private: String,
    /// `active` (published; the newest active key signs), `retired` (gone from the key set),
    /// `revoked` (tokens it signed are refused everywhere).
    pub status: KeyStatus,
    /// After a rotation: when this (old) key leaves the key set.
    #[serde(default)]
    pub retire_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A mini-program app id as the host channel issues it (`wx1234…`, `2021…`): 1–64 visible ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[!-~]{1,64}$", example = "wx1234567890abcdef")]
pub struct AppId(String);

impl TryFrom<String> for AppId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("expected 1 to 64 visible ASCII characters".into());
        }
        Ok(AppId(s))
    }
}

impl From<AppId> for String {
    fn from(a: AppId) -> String {
        a.0
    }
}

impl AppId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkPolicy {
    pub id: String,
    pub agency_id: String,
    pub name: Name,
    #[serde(default)]
    pub description: Option<Text>,
    pub rules: Vec<Rule>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An entry of the token JWKS (the unified identity service's verification keys).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenKey {
    pub id: String,
    pub kid: String,
    pub alg: String,
    /// The JWK's public members (for `oct` keys, without `k`).
    #[schema(value_type = Object)]
    pub jwk: serde_json::Map<String, Value>,
    /// `k` of an `oct` (HS256) key, sealed.
    #[serde(default)]
    #[schema(ignore)]
    pub sealed_k: Option<String>,
    pub status: KeyStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A key an agency's backends use to check the gateway signature.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SigningKey {
    pub id: String,
    pub agency_id: String,
    pub key_id: Name,
    /// Base64 of the secret, sealed.
    #[schema(ignore)]
    pub sealed_secret: String,
    pub status: KeyStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Request-rate limits of one service (the `rate-limit` plugin's `limits`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Limit {
    pub id: String,
    pub service_id: String,
    #[schema(value_type = Vec<Object>)]
    pub limits: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Platform settings owned by the security admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Accepted `iss` of client tokens.
    pub token_issuer: String,
    /// Required `aud` of client tokens.
    pub token_audience: String,
    /// Cryptographic algorithms of the platform (国密, `docs/guomi.md`); absent: the defaults.
    #[serde(
        default,
        deserialize_with = "crate::api::object",
        skip_serializing_if = "Option::is_none"
    )]
    pub algorithms: Option<Algorithms>,
    /// Channel sign-in (`docs/signin.md`); absent: the platform signs no one in itself.
    #[serde(
        default,
        deserialize_with = "crate::api::object",
        skip_serializing_if = "Option::is_none"
    )]
    pub signin: Option<SigninSettings>,
    /// The shared H5 domain (`docs/h5.md`): its host names and the channels' domain
    /// verification files, served at its root by every gateway.
    #[serde(
        default,
        deserialize_with = "crate::api::object",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>)]
    pub h5: Option<fenfa_config::model::H5Settings>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            token_issuer: "https://id.city.example".into(),
            token_audience: "fenfa".into(),
            algorithms: None,
            signin: None,
            h5: None,
        }
    }
}

/// How the platform signs users in (`docs/signin.md`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigninSettings {
    /// How gateways reach this control plane's sign-in endpoints (an upstream, as a service's).
    #[schema(value_type = Object)]
    pub upstream: fenfa_config::model::Upstream,
    /// Lifetime of a unified access token, seconds (60 to 3600; default 900).
    #[serde(default = "default_access_ttl")]
    pub access_ttl: i64,
    /// Lifetime of a refresh token, seconds (3600 to 90 days; default 30 days).
    #[serde(default = "default_refresh_ttl")]
    pub refresh_ttl: i64,
    /// Lifetime of an H5 session cookie, seconds (300 to 86400; default 7200).
    #[serde(default = "default_session_ttl")]
    pub session_ttl: i64,
    /// Sign-in calls each client address may make per minute at a gateway (default 30).
    #[serde(default = "default_login_per_minute")]
    pub login_per_minute: u32,
}

// The gateway's `Upstream` has no `PartialEq`; settings compare by their stored form.
impl PartialEq for SigninSettings {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

fn default_access_ttl() -> i64 {
    900
}
fn default_refresh_ttl() -> i64 {
    30 * 86400
}
fn default_session_ttl() -> i64 {
    7200
}
fn default_login_per_minute() -> u32 {
    30
}

impl Settings {
    /// The cipher of secrets at rest.
    pub fn secret_cipher(&self) -> crate::crypto::SecretCipher {
        self.algorithms
            .as_ref()
            .map_or(Default::default(), |a| a.secrets)
    }

    /// The upstream signature of agencies without their own.
    pub fn upstream_signature(&self) -> MacAlgorithm {
        self.algorithms
            .as_ref()
            .map_or(MacAlgorithm::HmacSha256, |a| a.upstream_signature)
    }

    /// The admin audit chain's algorithm.
    pub fn audit_chain(&self) -> fenfa_config::model::ChainAlgorithm {
        self.algorithms
            .as_ref()
            .map_or(MacAlgorithm::HmacSha256, |a| a.audit_chain)
            .into()
    }
}

/// `settings.algorithms`: which algorithms protect what (`docs/guomi.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Algorithms {
    /// The MAC of the admin audit chain (a change is itself a chained record) and of the
    /// in-process gateway's request trail (`audit.chain`, from its next start; a node
    /// configured from a file sets its own `audit.chain`).
    pub audit_chain: MacAlgorithm,
    /// The cipher new secrets are sealed with at rest; `POST /v1/secrets/re-encrypt` re-seals
    /// the stored ones.
    pub secrets: crate::crypto::SecretCipher,
    /// The `X-Fenfa-Signature` agencies' backends get, unless an agency sets its own.
    pub upstream_signature: MacAlgorithm,
}

/// An HMAC: `hmac-sha256` (default) or `hmac-sm3` (GB/T 32905).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MacAlgorithm {
    #[default]
    HmacSha256,
    HmacSm3,
}

impl From<MacAlgorithm> for fenfa_config::model::ChainAlgorithm {
    fn from(a: MacAlgorithm) -> Self {
        match a {
            MacAlgorithm::HmacSha256 => Self::HmacSha256,
            MacAlgorithm::HmacSm3 => Self::HmacSm3,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgencyInput {
    pub name: Name,
    pub title: Text,
    #[serde(default)]
    pub contact: Option<Text>,
    /// Path prefixes of its own (`["/social/"]`); none = no restriction.
    #[serde(default)]
    pub path_prefixes: Vec<PathPrefix>,
    /// Hosts of its own (`["social.city.example", "*.social.city.example"]`); none = any.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// `hmac-sha256` or `hmac-sm3`: the `X-Fenfa-Signature` its backends get; absent or null:
    /// the platform's `algorithms.upstream_signature`.
    #[serde(default)]
    pub signature_algorithm: Option<MacAlgorithm>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    /// Optional for agency operators (their own agency); required for the system admin.
    #[serde(default)]
    pub agency_id: Option<String>,
    pub name: Name,
    pub title: Text,
    pub kind: ServiceKind,
    #[serde(default)]
    pub description: Option<Text>,
    /// The gateway's upstream model (`docs/upstreams.md`): `targets`, `balance`, `timeouts`, …
    #[schema(value_type = Object, example = json!({"targets": [{"addr": "10.20.1.5:8080"}]}))]
    pub upstream: Upstream,
    /// Requests per second the backend carries (the go-live load test's ceiling), 1–10000.
    #[serde(default)]
    pub capacity_rps: Option<u32>,
    /// `response-masking` config for the service's answers (`docs/plugins/response-masking.md`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub masking: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    /// Channels to add to those the service is published on.
    pub channels: Vec<Channel>,
    /// Apps to add to the service's app list (empty list = any app on its channels).
    #[serde(default)]
    pub apps: Vec<AppId>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectInput {
    #[serde(default)]
    pub reason: Option<Text>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineInput {
    /// Channels to withdraw. When neither `channels` nor `apps` is given, all channels.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    /// Apps to withdraw (the service stays on its channels for the other listed apps).
    #[serde(default)]
    pub apps: Option<Vec<AppId>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteInput {
    pub service_id: String,
    pub name: Name,
    #[serde(default)]
    pub description: Option<Text>,
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub rewrite: Option<String>,
    #[serde(default)]
    pub priority: i32,
    /// System admins only: allow this route to overlap other agencies' routes.
    #[serde(default, deserialize_with = "crate::api::object")]
    pub allow_overlap: Option<OverlapRequest>,
    /// Sample requests for verification and inspection (at most [`MAX_SAMPLES`]).
    #[serde(default)]
    pub samples: Vec<SampleDecl>,
}

/// Most sample requests one route may declare.
pub const MAX_SAMPLES: usize = 8;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppInput {
    pub channel: Channel,
    pub app_id: AppId,
    pub name: Text,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    pub agency_id: String,
    pub name: Name,
    #[serde(default)]
    pub description: Option<Text>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenKeyInput {
    /// One JWK with `kid` and `alg` (public members only; `k` for HS256).
    #[schema(value_type = Object, example = json!({"kty": "EC", "crv": "P-256", "kid": "id-2026", "alg": "ES256", "x": "…", "y": "…"}))]
    pub jwk: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyInput {
    pub agency_id: String,
    /// Defaults to `<agency>-<date>-<random>`.
    #[serde(default)]
    pub key_id: Option<Name>,
    /// Base64 of ≥ 32 bytes; generated when absent (and then shown once).
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitInput {
    pub service_id: String,
    /// The `rate-limit` plugin's `limits`: `[{key, rate, per, burst}]`.
    #[schema(value_type = Vec<Object>, example = json!([{"key": "app", "rate": 100, "per": "1s", "burst": 20}]))]
    pub limits: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> Destination {
        Destination::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn destinations_parse_and_match() {
        assert!(dest("10.20.0.0/16").contains("10.20.3.4"));
        assert!(!dest("10.20.0.0/16").contains("10.21.0.1"));
        assert!(dest("127.0.0.1").contains("127.0.0.1"));
        assert!(dest("api.gov.example").contains("API.gov.example"));
        assert!(!dest("api.gov.example").contains("x.api.gov.example"));
        assert!(dest("*.gov.example").contains("a.b.gov.example"));
        assert!(!dest("*.gov.example").contains("gov.example"));
        assert!(!dest("*.gov.example").contains("evilgov.example"));
        assert!(!dest("10.0.0.0/8").contains("internal.example"));
        assert!(dest("::1").contains("[::1]"));
        assert!(Destination::try_from("10.1.0.0/8".to_string()).is_err());
        assert!(Destination::try_from("bad host!".to_string()).is_err());
    }

    #[test]
    fn names_are_boring() {
        assert!(Name::try_from("social-security".to_string()).is_ok());
        assert!(Name::try_from("Social".to_string()).is_err());
        assert!(Name::try_from("-x".to_string()).is_err());
        assert!(Name::try_from(String::new()).is_err());
    }
}

/// Every configuration resource at one moment: what a commit reads, changes and renders.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub agencies: Vec<Agency>,
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub apps: Vec<App>,
    pub policies: Vec<NetworkPolicy>,
    pub token_keys: Vec<TokenKey>,
    pub signing_keys: Vec<SigningKey>,
    pub limits: Vec<Limit>,
    pub settings: Settings,
    /// Temporary denies of client IPs (`crate::alerts::respond`).
    pub blocks: Vec<Block>,
    /// Changes to published services (`crate::revisions`).
    pub revisions: Vec<Revision>,
    /// The platform's own token signing keys (`crate::identity`).
    pub identity_keys: Vec<IdentityKey>,
}

/// A client IP every gateway refuses until `expires_at` (rendered into a global
/// `ip-restriction` deny list): set by an alert rule's automatic response, lifted when it
/// expires or by a security admin.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub id: String,
    /// An IPv4 or IPv6 address.
    pub ip: String,
    /// The alert that caused it.
    pub alert_id: Option<String>,
    pub rule: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Snapshot {
    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agencies.iter().find(|a| a.id == id)
    }

    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    /// The agency a resource belongs to, for scoping (`None` for platform-wide resources).
    pub fn agency_of(&self, kind: &str, id: &str) -> Option<String> {
        match kind {
            "agency" => Some(id.to_string()),
            "service" => self.service(id).map(|s| s.agency_id.clone()),
            "route" => self
                .routes
                .iter()
                .find(|r| r.id == id)
                .and_then(|r| self.service(&r.service_id))
                .map(|s| s.agency_id.clone()),
            "network-policy" => self
                .policies
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.agency_id.clone()),
            "signing-key" => self
                .signing_keys
                .iter()
                .find(|k| k.id == id)
                .map(|k| k.agency_id.clone()),
            "limit" => self
                .limits
                .iter()
                .find(|l| l.id == id)
                .and_then(|l| self.service(&l.service_id))
                .map(|s| s.agency_id.clone()),
            "revision" => self
                .revisions
                .iter()
                .find(|r| r.id == id)
                .and_then(|r| self.service(&r.service_id))
                .map(|s| s.agency_id.clone()),
            _ => None,
        }
    }
}
