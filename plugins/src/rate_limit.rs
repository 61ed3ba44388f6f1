//! `rate-limit` (priority 1000): GCRA request-rate limits per app, user, channel, client IP,
//! route or whole service.
//!
//! Why it exists: to keep one caller from starving the others and to cap what a fragile agency
//! backend receives. The counters live in the [`GcraStore`] owned by [`RateLimitFactory`], which
//! lives as long as the process, so a config reload (which rebuilds every plugin instance) keeps
//! every bucket where it was. This plugin only hashes the request's key and asks the store: no
//! lock, no allocation, no I/O on the request path. See `docs/plugins/rate-limit.md`.
//!
//! With `store: redis` the buckets are shared by every node instead ([`redis_store`]): the
//! request phase does nothing, the async phase ([`Plugin::request_async`], bounded by
//! `redis.budget`) runs one Lua script per request, and when Redis is slow or down the declared
//! `redis.fallback` applies: this node's own buckets at `local_share` of each limit
//! ([`Plugin::request_fallback`]), fail open, or fail closed (`503 rate_limit_unavailable`).
//!
//! # Bucket identity
//!
//! A bucket is identified by a hash of the limit's definition (key kind, rate, per, burst) and:
//!
//! | `key` | bucket per |
//! |---|---|
//! | `service` | service — shared by every route of the service that declares the same limit |
//! | `route` | route |
//! | `ip` | route × client IP |
//! | `app` / `user` / `channel` | route × identity's `app` / `sub` / `chn` (client IP without identity) |
//!
//! Changing a limit's definition therefore starts it with a full bucket; an unchanged limit keeps
//! its state across reloads. Two identical limits in one list are rejected.
//!
//! # Several limits
//!
//! All limits of the list apply. They are first checked without recording anything; if one
//! denies, the request is denied and no limit is charged. Otherwise each is charged in turn; if a
//! concurrent request took the last token in between, the limits already charged are refunded
//! (best effort) and the request is denied.

pub mod redis_store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::contract::{
    BoxFuture, CallError, CallOut, Flow, HeaderEdits, OnFailure, Plugin, PluginFactory, Reply,
    RequestCtx, RequestView, SchemaError,
};
use crate::gcra::{Decision, GcraStore, Quota, QuotaError, DEFAULT_CAPACITY};
use redis_store::{KeyBuilder, Part, RedisStore};

pub const NAME: &str = "rate-limit";
pub const PRIORITY: i32 = 1000;
/// The most limits one plugin configuration may list.
pub const MAX_LIMITS: usize = 8;

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    App,
    User,
    Channel,
    Ip,
    Route,
    Service,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    limits: Vec<LimitConfig>,
    #[serde(default)]
    store: StoreKind,
    #[serde(default)]
    redis: Option<RedisConfig>,
}

/// Where the buckets live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    /// In this node's memory ([`GcraStore`]).
    #[default]
    Local,
    /// In Redis, shared by every node ([`redis_store`]).
    Redis,
}

/// What a request gets when Redis does not answer within the budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// This node's own buckets, at `local_share` of each limit.
    #[default]
    Local,
    /// Let the request through (no limit while Redis is away).
    Open,
    /// Refuse it: `503 rate_limit_unavailable`.
    Closed,
}

/// `redis:` of a `store: redis` limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisConfig {
    url: String,
    #[serde(default)]
    cluster: bool,
    #[serde(default = "default_budget")]
    budget: Period,
    #[serde(default)]
    fallback: Fallback,
    #[serde(default = "default_local_share")]
    local_share: f64,
    #[serde(default = "default_key_prefix")]
    key_prefix: String,
    /// PEM file of the only CAs trusted for a `rediss://` server (default: the system's).
    #[serde(default)]
    ca: Option<String>,
}

fn default_budget() -> Period {
    Period(DEFAULT_BUDGET)
}

fn default_local_share() -> f64 {
    1.0
}

fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_string()
}

/// Default `redis.budget`: what one Redis round trip may take before the fallback applies.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(20);
/// Longest `redis.budget` accepted.
pub const MAX_BUDGET: Duration = Duration::from_secs(1);
/// Default `redis.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "fenfa:rl";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    key: KeyKind,
    rate: u32,
    per: Period,
    #[serde(default)]
    burst: u32,
}

/// A `per` value: `1s`, `1m`, `1h`, `500ms`, `30s`, …
#[derive(Debug, Clone, Copy)]
struct Period(Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_period(&s)
            .map(Period)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
fn parse_period(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration; expected e.g. `1s`, `1m`, `1h` or `500ms`");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("`{s}`: must be longer than 0"));
    }
    Ok(d)
}

/// One configured limit, ready to check.
#[derive(Debug, Clone, Copy)]
struct Limit {
    kind: KeyKind,
    quota: Quota,
    /// Hash of the limit's definition: the part of the bucket key fixed at build time.
    seed: u64,
}

/// Who a per-caller bucket belongs to (the variant keeps identity values and IPs apart).
#[derive(Hash)]
enum Caller<'a> {
    Id(&'a str),
    Ip(IpAddr),
}

/// The numbers for the `RateLimit-*` headers, stashed in `ctx.vars` at the request phase and
/// written at the response phase: those of the most restrictive limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

impl RateLimitStatus {
    fn from_decision(d: &Decision) -> Self {
        Self {
            limit: d.limit,
            remaining: d.remaining,
            reset: d.reset_secs(),
        }
    }

    /// Fewer remaining is tighter; on a tie, the longer reset.
    fn tighter(self, other: Self) -> Self {
        if (other.remaining, std::cmp::Reverse(other.reset))
            < (self.remaining, std::cmp::Reverse(self.reset))
        {
            other
        } else {
            self
        }
    }
}

/// A configured `rate-limit` instance.
#[derive(Debug)]
pub struct RateLimit {
    limits: Vec<Limit>,
    store: Arc<GcraStore>,
    /// `store: redis`: the shared buckets and what to do without them.
    redis: Option<RedisLimits>,
}

/// The Redis side of a `store: redis` instance.
#[derive(Debug)]
struct RedisLimits {
    store: Arc<RedisStore>,
    keys: KeyBuilder,
    call: CallOut,
    fallback: Fallback,
    /// The script's arguments: `interval_us`, `tau_us` of each limit, in the order of `limits`
    /// (made once, not per request).
    args: Vec<String>,
    /// This node's limits at `local_share` of each (used when `fallback` is `local`).
    local: Vec<Limit>,
}

impl RateLimit {
    fn bucket<'a>(&self, limit: &Limit, ctx: &'a RequestCtx) -> u64 {
        let s = &self.store;
        let (seed, agency, service, route) = (limit.seed, &*ctx.agency, &*ctx.service, &*ctx.route);
        let ip = ctx.client_ip;
        let caller = |value: Option<&'a str>| match value {
            Some(v) => Caller::Id(v),
            None => Caller::Ip(ip),
        };
        let id = ctx.identity.as_ref();
        match limit.kind {
            KeyKind::Service => s.key((seed, agency, service)),
            KeyKind::Route => s.key((seed, agency, service, route)),
            KeyKind::Ip => s.key((seed, agency, service, route, Caller::Ip(ctx.client_ip))),
            KeyKind::App => s.key((seed, agency, service, route, caller(id.map(|i| &*i.app)))),
            KeyKind::User => s.key((seed, agency, service, route, caller(id.map(|i| &*i.user)))),
            KeyKind::Channel => s.key((
                seed,
                agency,
                service,
                route,
                caller(id.map(|i| &*i.channel)),
            )),
        }
    }

    /// The Redis key of `limit`'s bucket for this request: the same identity as [`Self::bucket`]
    /// (limit definition, then service, route, caller), hashed with a fixed function so that
    /// every node finds the same key.
    fn redis_key(keys: &KeyBuilder, limit: &Limit, ctx: &RequestCtx) -> String {
        let (agency, service, route) = (&*ctx.agency, &*ctx.service, &*ctx.route);
        let (v4, v6);
        let ip: &[u8] = match ctx.client_ip {
            IpAddr::V4(a) => {
                v4 = a.octets();
                &v4
            }
            IpAddr::V6(a) => {
                v6 = a.octets();
                &v6
            }
        };
        let q = &limit.quota;
        let def = [
            Part::U64(limit.kind as u64),
            Part::U64(q.interval_us()),
            Part::U64(q.tau_us()),
            Part::Str(agency),
            Part::Str(service),
        ];
        let id = ctx.identity.as_ref();
        let who = match limit.kind {
            KeyKind::Service | KeyKind::Route | KeyKind::Ip => None,
            KeyKind::App => Some(id.map(|i| &*i.app)),
            KeyKind::User => Some(id.map(|i| &*i.user)),
            KeyKind::Channel => Some(id.map(|i| &*i.channel)),
        };
        let [a, b, c, d, e] = def;
        match (limit.kind, who) {
            (KeyKind::Service, _) => keys.key(agency, service, &[a, b, c, d, e]),
            (KeyKind::Route, _) => keys.key(agency, service, &[a, b, c, d, e, Part::Str(route)]),
            (_, Some(Some(v))) => keys.key(
                agency,
                service,
                &[a, b, c, d, e, Part::Str(route), Part::U64(0), Part::Str(v)],
            ),
            _ => keys.key(
                agency,
                service,
                &[
                    a,
                    b,
                    c,
                    d,
                    e,
                    Part::Str(route),
                    Part::U64(1),
                    Part::Bytes(ip),
                ],
            ),
        }
    }

    /// Checks every limit of `limits` in the local store, then charges them all (see the
    /// module docs).
    fn check(&self, limits: &[Limit], ctx: &RequestCtx) -> Decision {
        let store = &*self.store;
        let now = store.now();
        if let [only] = limits {
            return store.acquire(self.bucket(only, ctx), &only.quota, now);
        }
        let mut keys = [0u64; MAX_LIMITS];
        let mut denied: Option<Decision> = None;
        for (key, limit) in keys.iter_mut().zip(limits) {
            *key = self.bucket(limit, ctx);
            let d = store.peek(*key, &limit.quota, now);
            if !d.allowed && denied.is_none_or(|w| d.retry_after_us > w.retry_after_us) {
                denied = Some(d);
            }
        }
        if let Some(d) = denied {
            return d;
        }
        let mut tightest: Option<Decision> = None;
        for (i, (key, limit)) in keys.iter().zip(limits).enumerate() {
            let d = store.acquire(*key, &limit.quota, now);
            if !d.allowed {
                for (k, l) in keys.iter().zip(limits).take(i) {
                    store.refund(*k, &l.quota, now);
                }
                return d;
            }
            tightest = Some(tighter(tightest, d));
        }
        tightest.unwrap_or_default()
    }

    /// The decision from what the Redis script reported: on a denial, the limit with the
    /// longest wait; otherwise the most restrictive limit, as for the local store.
    fn decision_from_redis(&self, answer: &redis_store::Answer) -> Decision {
        let decisions = self
            .limits
            .iter()
            .zip(&answer.ahead_us)
            .map(|(l, ahead)| l.quota.decide(*ahead));
        if answer.allowed {
            decisions
                .fold(None, |t, d| Some(tighter(t, d)))
                .unwrap_or_default()
        } else {
            decisions
                .filter(|d| !d.allowed)
                .max_by_key(|d| d.retry_after_us)
                .unwrap_or_default()
        }
    }
}

/// Fewer remaining is tighter; on a tie, the longer reset.
fn tighter(t: Option<Decision>, d: Decision) -> Decision {
    match t {
        Some(t)
            if (t.remaining, std::cmp::Reverse(t.reset_us))
                <= (d.remaining, std::cmp::Reverse(d.reset_us)) =>
        {
            t
        }
        _ => d,
    }
}

/// Stashes the header numbers and answers: continue, or `429 rate_limited`.
fn conclude(ctx: &mut RequestCtx, d: &Decision) -> Flow {
    let status = RateLimitStatus::from_decision(d);
    let merged = match ctx.vars.get::<RateLimitStatus>() {
        Some(prev) => prev.tighter(status),
        None => status,
    };
    ctx.vars.insert(merged);
    if d.allowed {
        return Flow::Continue;
    }
    let retry = d.retry_after_secs();
    Flow::Respond(
        Reply::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate limit exceeded; retry after the time in Retry-After",
        )
        .with_header(http::header::RETRY_AFTER, header_value(retry))
        .with_header(RATELIMIT_LIMIT, header_value(u64::from(status.limit)))
        .with_header(
            RATELIMIT_REMAINING,
            header_value(u64::from(status.remaining)),
        )
        .with_header(RATELIMIT_RESET, header_value(status.reset)),
    )
}

fn header_value(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// The answer of `fallback: closed` while Redis is away.
fn unavailable() -> Reply {
    Reply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "rate_limit_unavailable",
        "the rate limiter is unavailable; retry shortly",
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn request(&self, _req: &RequestView<'_>, ctx: &mut RequestCtx) -> Flow {
        if self.redis.is_some() {
            // Decided in the async phase.
            return Flow::Continue;
        }
        conclude(ctx, &self.check(&self.limits, ctx))
    }

    fn call_out(&self) -> Option<CallOut> {
        self.redis.as_ref().map(|r| r.call.clone())
    }

    fn request_async<'a>(
        &'a self,
        _req: &'a RequestView<'a>,
        ctx: &'a mut RequestCtx,
    ) -> BoxFuture<'a, Result<Flow, CallError>> {
        Box::pin(async move {
            let Some(r) = &self.redis else {
                return Ok(Flow::Continue);
            };
            let keys: Vec<String> = self
                .limits
                .iter()
                .map(|l| Self::redis_key(&r.keys, l, ctx))
                .collect();
            let answer = r.store.acquire(&keys, &r.args).await?;
            Ok(conclude(ctx, &self.decision_from_redis(&answer)))
        })
    }

    fn request_fallback(&self, _req: &RequestView<'_>, ctx: &mut RequestCtx) -> Option<Flow> {
        let r = self.redis.as_ref()?;
        match r.fallback {
            Fallback::Local => Some(conclude(ctx, &self.check(&r.local, ctx))),
            // The gateway applies `on_failure`: continue, or the 503.
            Fallback::Open | Fallback::Closed => None,
        }
    }

    fn response(&self, ctx: &RequestCtx, _status: u16, headers: &mut dyn HeaderEdits) {
        if let Some(s) = ctx.vars.get::<RateLimitStatus>() {
            headers.insert(RATELIMIT_LIMIT, header_value(u64::from(s.limit)));
            headers.insert(RATELIMIT_REMAINING, header_value(u64::from(s.remaining)));
            headers.insert(RATELIMIT_RESET, header_value(s.reset));
        }
    }
}

/// What makes two Redis clients the same: `(url, cluster, ca file)`.
type RedisId = (String, bool, Option<String>);

/// The registry's name for [`RateLimitFactory`].
pub type Factory = RateLimitFactory;

/// Builds `rate-limit` instances; owns the process-wide [`GcraStore`] (made on first use).
#[derive(Debug, Default)]
pub struct RateLimitFactory {
    store: OnceLock<Arc<GcraStore>>,
    /// One Redis client per `(url, cluster, ca)`, kept across reloads (used at build time only).
    redis: Mutex<HashMap<RedisId, Arc<RedisStore>>>,
}

impl RateLimitFactory {
    /// A factory whose store (of [`DEFAULT_CAPACITY`] entries, 8 MiB) is allocated on first build.
    pub fn new() -> Self {
        Self::default()
    }

    /// A factory sharing a given store (tests, benchmarks, embedders choosing the size or clock).
    pub fn with_store(store: Arc<GcraStore>) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(store);
        Self {
            store: cell,
            redis: Mutex::default(),
        }
    }

    /// The store shared by every instance this factory builds.
    pub fn store(&self) -> &Arc<GcraStore> {
        self.store
            .get_or_init(|| Arc::new(GcraStore::new(DEFAULT_CAPACITY)))
    }
}

impl PluginFactory for RateLimitFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let cfg: Config = SchemaError::parse(config)?;
        if cfg.limits.is_empty() {
            return Err(SchemaError::new("limits", "at least one limit is required"));
        }
        if cfg.limits.len() > MAX_LIMITS {
            return Err(SchemaError::new(
                "limits",
                format!("at most {MAX_LIMITS} limits are allowed"),
            ));
        }
        let store = self.store().clone();
        let mut limits: Vec<Limit> = Vec::with_capacity(cfg.limits.len());
        for (i, l) in cfg.limits.iter().enumerate() {
            let quota = Quota::new(l.rate, l.per.0, l.burst).map_err(|e| {
                let field = match e {
                    QuotaError::ZeroRate | QuotaError::TooFast => "rate",
                    QuotaError::ZeroPeriod => "per",
                    QuotaError::WindowTooLong if l.burst == 0 => "per",
                    QuotaError::WindowTooLong => "burst",
                };
                SchemaError::new(format!("limits[{i}].{field}"), e.to_string())
            })?;
            if let Some(j) = limits
                .iter()
                .position(|o| o.kind == l.key && o.quota == quota)
            {
                return Err(SchemaError::new(
                    format!("limits[{i}]"),
                    format!("duplicates limits[{j}]"),
                ));
            }
            limits.push(Limit {
                kind: l.key,
                quota,
                seed: store.key((NAME, l.key, quota)),
            });
        }
        let redis = match (cfg.store, cfg.redis) {
            (StoreKind::Local, None) => None,
            (StoreKind::Local, Some(_)) => {
                return Err(SchemaError::new(
                    "redis",
                    "only used with `store: redis`; add it, or remove `redis`",
                ))
            }
            (StoreKind::Redis, None) => {
                return Err(SchemaError::new(
                    "redis",
                    "required with `store: redis`: at least `url`",
                ))
            }
            (StoreKind::Redis, Some(rc)) => Some(self.redis_limits(rc, &limits, &cfg.limits)?),
        };
        Ok(Arc::new(RateLimit {
            limits,
            store,
            redis,
        }))
    }
}

impl RateLimitFactory {
    /// Checks `redis:` and builds the Redis side of an instance (sharing the client of an
    /// earlier instance with the same URL).
    fn redis_limits(
        &self,
        rc: RedisConfig,
        limits: &[Limit],
        defs: &[LimitConfig],
    ) -> Result<RedisLimits, SchemaError> {
        redis_store::check_url(&rc.url).map_err(|e| SchemaError::new("redis.url", e.0))?;
        let budget = rc.budget.0;
        if budget > MAX_BUDGET {
            return Err(SchemaError::new(
                "redis.budget",
                format!("at most {}ms", MAX_BUDGET.as_millis()),
            ));
        }
        if !(rc.local_share > 0.0 && rc.local_share <= 1.0) {
            return Err(SchemaError::new(
                "redis.local_share",
                "must be more than 0 and at most 1 (e.g. 0.34 for three nodes)",
            ));
        }
        if rc.key_prefix.is_empty()
            || rc.key_prefix.len() > 64
            || !rc
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            return Err(SchemaError::new(
                "redis.key_prefix",
                "1 to 64 visible ASCII characters, without `{` or `}`",
            ));
        }
        let ca =
            match &rc.ca {
                None => None,
                Some(file) => Some(std::fs::read(file).map_err(|e| {
                    SchemaError::new("redis.ca", format!("cannot read `{file}`: {e}"))
                })?),
            };
        let store = {
            let mut clients = self.redis.lock().unwrap_or_else(|p| p.into_inner());
            let id = (rc.url.clone(), rc.cluster, rc.ca.clone());
            match clients.get(&id) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(
                        RedisStore::new(&rc.url, rc.cluster, ca.as_deref(), CONNECT_TIMEOUT)
                            .map_err(|e| match e {
                                redis_store::StoreError::Url(m) => SchemaError::new("redis.url", m),
                                redis_store::StoreError::Ca(m) => SchemaError::new("redis.ca", m),
                            })?,
                    );
                    clients.insert(id, s.clone());
                    s
                }
            }
        };
        let gcra = self.store();
        let mut local = Vec::with_capacity(limits.len());
        for (l, def) in limits.iter().zip(defs) {
            let share = |n: u32| (f64::from(n) * rc.local_share).round() as u32;
            let quota = Quota::new(share(def.rate).max(1), def.per.0, share(def.burst))
                .map_err(|e| SchemaError::new("redis.local_share", e.to_string()))?;
            local.push(Limit {
                kind: l.kind,
                quota,
                seed: gcra.key((NAME, "redis-fallback", l.kind, l.quota, quota)),
            });
        }
        let on_failure = match rc.fallback {
            Fallback::Closed => OnFailure::Closed(unavailable()),
            // `local` answers through `request_fallback`; `open` lets the request through.
            Fallback::Local | Fallback::Open => OnFailure::Open,
        };
        Ok(RedisLimits {
            store,
            keys: KeyBuilder::new(&rc.key_prefix),
            call: CallOut { budget, on_failure },
            fallback: rc.fallback,
            args: limits
                .iter()
                .flat_map(|l| [l.quota.interval_us(), l.quota.tau_us()])
                .map(|n| n.to_string())
                .collect(),
            local,
        })
    }
}

/// How long the Redis client may take to connect (in a task of its own, not within a request's
/// budget): long enough for TCP, TLS and AUTH across a network.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Identity;
    use crate::gcra::ManualClock;
    use http::{HeaderMap, Method};
    use serde_json::json;

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

    struct Harness {
        factory: RateLimitFactory,
        clock: ManualClock,
    }

    impl Harness {
        fn new() -> Self {
            let clock = ManualClock::new();
            let store = GcraStore::with_clock(1 << 12, clock.clone().into());
            Self {
                factory: RateLimitFactory::with_store(Arc::new(store)),
                clock,
            }
        }

        fn plugin(&self, config: serde_json::Value) -> Arc<dyn Plugin> {
            self.factory.build(&config).unwrap()
        }

        fn advance_ms(&self, ms: u64) {
            self.clock.advance(Duration::from_millis(ms));
        }
    }

    fn ctx(service: &str, route: &str, ip: [u8; 4], app: Option<&str>) -> RequestCtx {
        RequestCtx {
            service: Arc::from(service),
            route: Arc::from(route),
            client_ip: IpAddr::from(ip),
            identity: app.map(|a| Identity {
                user: format!("user-of-{a}"),
                channel: "wechat".into(),
                app: a.into(),
                token_id: None,
                expires_at: 0,
            }),
            ..RequestCtx::default()
        }
    }

    fn run(p: &dyn Plugin, ctx: &mut RequestCtx) -> Flow {
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            client_ip: ctx.client_ip,
            tls: false,
        };
        p.request(&req, ctx)
    }

    fn allowed(p: &dyn Plugin, c: &mut RequestCtx) -> bool {
        matches!(run(p, c), Flow::Continue)
    }

    fn fresh(c: &RequestCtx) -> RequestCtx {
        RequestCtx {
            service: c.service.clone(),
            route: c.route.clone(),
            agency: c.agency.clone(),
            client_ip: c.client_ip,
            identity: c.identity.clone(),
            ..RequestCtx::default()
        }
    }

    /// Sends one request with a fresh per-request context.
    fn send(p: &dyn Plugin, template: &RequestCtx) -> bool {
        allowed(p, &mut fresh(template))
    }

    fn header(reply: &Reply, name: &str) -> String {
        reply
            .headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn denial(p: &dyn Plugin, template: &RequestCtx) -> Reply {
        match run(p, &mut fresh(template)) {
            Flow::Respond(r) => r,
            Flow::Continue => panic!("expected a denial"),
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [{"key": "ip", "rate": 10, "per": "1s", "burst": 2}]}));
        let c = ctx("svc", "r1", [10, 0, 0, 1], None);
        for i in 0..3 {
            assert!(send(&*p, &c), "burst request {i}");
        }
        assert!(!send(&*p, &c), "burst is 2 beyond 1");
        for step in 0..10 {
            h.advance_ms(100);
            assert!(send(&*p, &c), "steady request {step}");
            assert!(!send(&*p, &c), "over the rate at step {step}");
        }
    }

    #[test]
    fn denial_is_429_rate_limited_with_retry_after_rounded_up() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [{"key": "ip", "rate": 1, "per": "10s"}]}));
        let c = ctx("svc", "r1", [10, 0, 0, 1], None);
        assert!(send(&*p, &c));
        h.advance_ms(2_500);
        let r = denial(&*p, &c);
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.code, "rate_limited");
        assert_eq!(header(&r, "retry-after"), "8"); // 7.5 s rounded up
        assert_eq!(header(&r, "ratelimit-limit"), "1");
        assert_eq!(header(&r, "ratelimit-remaining"), "0");
        assert_eq!(header(&r, "ratelimit-reset"), "8");
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [{"key": "ip", "rate": 100, "per": "1s"}]}));
        let c = ctx("svc", "r1", [10, 0, 0, 1], None);
        assert!(send(&*p, &c));
        assert_eq!(header(&denial(&*p, &c), "retry-after"), "1");
    }

    #[test]
    fn allowed_response_carries_ratelimit_headers() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [{"key": "ip", "rate": 60, "per": "1m", "burst": 9}]}));
        let mut c = ctx("svc", "r1", [10, 0, 0, 1], None);
        assert!(allowed(&*p, &mut c));
        let mut edits = Edits(HeaderMap::new());
        p.response(&c, 200, &mut edits);
        assert_eq!(edits.0["ratelimit-limit"], "10");
        assert_eq!(edits.0["ratelimit-remaining"], "9");
        assert_eq!(edits.0["ratelimit-reset"], "1"); // one token spent: full again in 1 s
    }

    #[test]
    fn headers_report_the_most_restrictive_limit() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [
            {"key": "ip", "rate": 100, "per": "1s", "burst": 99},
            {"key": "app", "rate": 10, "per": "1m", "burst": 4}
        ]}));
        let mut c = ctx("svc", "r1", [10, 0, 0, 1], Some("app-a"));
        assert!(allowed(&*p, &mut c));
        assert_eq!(
            c.vars.get::<RateLimitStatus>(),
            Some(&RateLimitStatus {
                limit: 5,
                remaining: 4,
                reset: 6
            })
        );
    }

    #[test]
    fn several_limits_on_one_route_all_apply() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [
            {"key": "ip", "rate": 1, "per": "1s", "burst": 4},
            {"key": "route", "rate": 3, "per": "1h", "burst": 2}
        ]}));
        let a = ctx("svc", "r1", [10, 0, 0, 1], None);
        let b = ctx("svc", "r1", [10, 0, 0, 2], None);
        // Per-IP burst is 5, but the route allows only 3 in total.
        assert!(send(&*p, &a));
        assert!(send(&*p, &a));
        assert!(send(&*p, &b));
        assert!(!send(&*p, &a));
        assert!(!send(&*p, &b));
    }

    #[test]
    fn request_denied_by_one_limit_does_not_consume_the_others() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [
            {"key": "route", "rate": 2, "per": "1h", "burst": 1},
            {"key": "ip", "rate": 1, "per": "1h"}
        ]}));
        let a = ctx("svc", "r1", [10, 0, 0, 1], None);
        let b = ctx("svc", "r1", [10, 0, 0, 2], None);
        assert!(send(&*p, &a));
        for _ in 0..10 {
            assert!(!send(&*p, &a), "IP a is over its own limit");
        }
        // a's denials did not spend the route's second token.
        assert!(send(&*p, &b));
        assert!(!send(&*p, &b));
    }

    #[test]
    fn service_wide_cap_is_shared_by_routes() {
        let h = Harness::new();
        let conf = json!({"limits": [{"key": "service", "rate": 3, "per": "1h", "burst": 2}]});
        // Built separately, as for two routes with their own plugin lists.
        let p1 = h.plugin(conf.clone());
        let p2 = h.plugin(conf);
        let r1 = ctx("fragile", "r1", [10, 0, 0, 1], Some("app-a"));
        let r2 = ctx("fragile", "r2", [10, 0, 0, 2], Some("app-b"));
        assert!(send(&*p1, &r1));
        assert!(send(&*p2, &r2));
        assert!(send(&*p1, &r2));
        assert!(!send(&*p2, &r1));
        assert!(!send(&*p1, &r1));
        // Another service has its own cap.
        assert!(send(&*p1, &ctx("other", "r1", [10, 0, 0, 1], None)));
    }

    #[test]
    fn ip_limits_of_two_routes_are_separate() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [{"key": "ip", "rate": 1, "per": "1h"}]}));
        let r1 = ctx("svc", "r1", [10, 0, 0, 1], None);
        let r2 = ctx("svc", "r2", [10, 0, 0, 1], None);
        assert!(send(&*p, &r1));
        assert!(!send(&*p, &r1));
        assert!(send(&*p, &r2));
    }

    #[test]
    fn two_apps_have_separate_buckets() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [{"key": "app", "rate": 1, "per": "1m"}]}));
        let a = ctx("svc", "r1", [10, 0, 0, 1], Some("app-a"));
        let b = ctx("svc", "r1", [10, 0, 0, 1], Some("app-b"));
        assert!(send(&*p, &a));
        assert!(!send(&*p, &a));
        assert!(send(&*p, &b));
        assert!(!send(&*p, &b));
    }

    #[test]
    fn user_and_channel_keys_come_from_the_identity() {
        let h = Harness::new();
        let users = h.plugin(json!({"limits": [{"key": "user", "rate": 1, "per": "1m"}]}));
        let channels = h.plugin(json!({"limits": [{"key": "channel", "rate": 1, "per": "1m"}]}));
        let a = ctx("svc", "r1", [10, 0, 0, 1], Some("app-a"));
        let b = ctx("svc", "r1", [10, 0, 0, 1], Some("app-b"));
        assert!(send(&*users, &a));
        assert!(send(&*users, &b), "different users");
        assert!(send(&*channels, &a));
        assert!(!send(&*channels, &b), "same channel");
    }

    #[test]
    fn identity_keys_fall_back_to_client_ip_without_identity() {
        let h = Harness::new();
        let p = h.plugin(json!({"limits": [{"key": "user", "rate": 1, "per": "1m"}]}));
        let anon1 = ctx("svc", "r1", [10, 0, 0, 1], None);
        let anon2 = ctx("svc", "r1", [10, 0, 0, 2], None);
        let known = ctx("svc", "r1", [10, 0, 0, 1], Some("app-a"));
        assert!(send(&*p, &anon1));
        assert!(!send(&*p, &anon1), "same IP, no identity");
        assert!(send(&*p, &anon2), "another IP");
        assert!(send(&*p, &known), "identified caller from the same IP");
    }

    #[test]
    fn store_survives_reload() {
        let h = Harness::new();
        let conf = json!({"limits": [{"key": "app", "rate": 2, "per": "1h", "burst": 1}]});
        let before = h.plugin(conf.clone());
        let c = ctx("svc", "r1", [10, 0, 0, 1], Some("app-a"));
        assert!(send(&*before, &c));
        assert!(send(&*before, &c));
        drop(before);
        // A reload builds a new instance from the same factory.
        let after = h.plugin(conf);
        assert!(!send(&*after, &c));
    }

    #[test]
    fn factory_allocates_its_default_store_once() {
        let f = RateLimitFactory::new();
        let conf = json!({"limits": [{"key": "ip", "rate": 1, "per": "1s"}]});
        let _a = f.build(&conf).unwrap();
        let _b = f.build(&conf).unwrap();
        assert_eq!(f.store().capacity(), DEFAULT_CAPACITY);
        assert_eq!(Arc::strong_count(f.store()), 3);
    }

    fn schema_error(config: serde_json::Value) -> SchemaError {
        RateLimitFactory::with_store(Arc::new(GcraStore::new(16)))
            .build(&config)
            .unwrap_err()
    }

    #[test]
    fn config_errors_name_the_field_path() {
        let e = schema_error(json!({"limits": [
            {"key": "ip", "rate": 1, "per": "1s"},
            {"key": "ip", "rate": 0, "per": "1s"}
        ]}));
        assert_eq!(e.path, "limits[1].rate");

        let e = schema_error(json!({"limits": [{"key": "ip", "rate": 1, "per": "soon"}]}));
        assert_eq!(e.path, "limits[0].per");
        assert!(e.message.contains("500ms"), "{e}");

        let e =
            schema_error(json!({"limits": [{"key": "ip", "rate": 1, "per": "1s", "brust": 1}]}));
        assert_eq!(e.path, "limits[0].brust");
        assert!(e.message.contains("unknown field"), "{e}");

        let e = schema_error(json!({"limits": [{"key": "tenant", "rate": 1, "per": "1s"}]}));
        assert_eq!(e.path, "limits[0].key");

        let e = schema_error(json!({"limits": [{"key": "ip", "rate": 2000000, "per": "1s"}]}));
        assert_eq!(e.path, "limits[0].rate");

        let e =
            schema_error(json!({"limits": [{"key": "ip", "rate": 1, "per": "1h", "burst": 1000}]}));
        assert_eq!(e.path, "limits[0].burst");

        let e = schema_error(json!({"limits": []}));
        assert_eq!(e.path, "limits");

        let e = schema_error(json!({}));
        assert!(e.message.contains("limits"), "{e}");

        let e = schema_error(json!({"limits": [
            {"key": "ip", "rate": 1, "per": "1s"},
            {"key": "ip", "rate": 60, "per": "1m"}
        ]}));
        assert_eq!(e.path, "limits[1]");
        assert!(e.message.contains("limits[0]"), "{e}");
    }

    fn redis_conf(fallback: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut redis = json!({"url": "redis://127.0.0.1:1", "fallback": fallback});
        if let (Some(r), Some(e)) = (redis.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        json!({"store": "redis", "redis": redis,
               "limits": [{"key": "ip", "rate": 4, "per": "1h", "burst": 3}]})
    }

    #[test]
    fn redis_store_config_errors_name_the_field_path() {
        let e = schema_error(json!({"store": "redis",
            "limits": [{"key": "ip", "rate": 1, "per": "1s"}]}));
        assert_eq!(e.path, "redis");
        let e = schema_error(json!({"redis": {"url": "redis://127.0.0.1"},
            "limits": [{"key": "ip", "rate": 1, "per": "1s"}]}));
        assert_eq!(e.path, "redis");
        let e = schema_error(redis_conf("local", json!({"url": "http://:pw@127.0.0.1"})));
        assert_eq!(e.path, "redis.url");
        assert!(!e.message.contains("pw"), "{e}");
        let e = schema_error(redis_conf("local", json!({"local_share": 0.0})));
        assert_eq!(e.path, "redis.local_share");
        let e = schema_error(redis_conf("local", json!({"local_share": 1.5})));
        assert_eq!(e.path, "redis.local_share");
        let e = schema_error(redis_conf("local", json!({"budget": "2s"})));
        assert_eq!(e.path, "redis.budget");
        let e = schema_error(redis_conf("local", json!({"budget": "soon"})));
        assert_eq!(e.path, "redis.budget");
        let e = schema_error(redis_conf("sideways", json!({})));
        assert_eq!(e.path, "redis.fallback");
        let e = schema_error(redis_conf("local", json!({"key_prefix": "a{b}"})));
        assert_eq!(e.path, "redis.key_prefix");
        let e = schema_error(redis_conf("local", json!({"ca": "/nonexistent/ca.pem"})));
        assert_eq!(e.path, "redis.ca");
        let e = schema_error(redis_conf("local", json!({"pasword": "x"})));
        assert_eq!(e.path, "redis.pasword");
    }

    #[test]
    fn redis_store_declares_its_budget_and_failure_policy() {
        let h = Harness::new();
        let p = h.plugin(redis_conf("closed", json!({"budget": "15ms"})));
        let call = p.call_out().expect("an async phase");
        assert_eq!(call.budget, Duration::from_millis(15));
        match call.on_failure {
            OnFailure::Closed(r) => {
                assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(r.code, "rate_limit_unavailable");
            }
            OnFailure::Open => panic!("closed must refuse"),
        }
        let p = h.plugin(redis_conf("open", json!({})));
        let call = p.call_out().unwrap();
        assert_eq!(call.budget, DEFAULT_BUDGET);
        assert!(matches!(call.on_failure, OnFailure::Open));
        // Neither has a fallback of its own: the gateway applies the policy.
        let mut c = ctx("svc", "r1", [10, 0, 0, 1], None);
        assert!(p.request_fallback(&view(&c), &mut c).is_none());
        // The request phase leaves the decision to the async phase.
        assert!(send(&*p, &c));
        assert!(send(&*p, &c));
        // A local-store instance has no async phase.
        let local = h.plugin(json!({"limits": [{"key": "ip", "rate": 1, "per": "1s"}]}));
        assert!(local.call_out().is_none());
    }

    fn view(c: &RequestCtx) -> RequestView<'static> {
        static HEADERS: OnceLock<HeaderMap> = OnceLock::new();
        RequestView {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: HEADERS.get_or_init(HeaderMap::new),
            client_ip: c.client_ip,
            tls: false,
        }
    }

    #[test]
    fn local_fallback_counts_a_share_of_each_limit_on_this_node() {
        let h = Harness::new();
        // 4 an hour with burst 3 (4 at once); at half: 2 an hour with burst 2 (3 at once).
        let p = h.plugin(redis_conf("local", json!({"local_share": 0.5})));
        let c = ctx("svc", "r1", [10, 0, 0, 1], None);
        let fallback = |c: &RequestCtx| {
            let mut c = fresh(c);
            let flow = p
                .request_fallback(&view(&c), &mut c)
                .expect("local fallback");
            (matches!(flow, Flow::Continue), c)
        };
        for i in 0..3 {
            assert!(fallback(&c).0, "request {i}");
        }
        let (allowed, after) = fallback(&c);
        assert!(!allowed);
        assert_eq!(after.vars.get::<RateLimitStatus>().unwrap().limit, 3);
        // Another address has its own share.
        assert!(fallback(&ctx("svc", "r1", [10, 0, 0, 2], None)).0);
        // The fallback buckets are not those of a local-store limit with the same definition.
        let local =
            h.plugin(json!({"limits": [{"key": "ip", "rate": 4, "per": "1h", "burst": 3}]}));
        assert!(send(&*local, &c));
    }

    #[test]
    fn redis_keys_are_the_same_on_every_node_and_follow_the_bucket_identity() {
        let conf = redis_conf("local", json!({"key_prefix": "t"}));
        let a = RateLimitFactory::new().build(&conf).unwrap();
        let _b = RateLimitFactory::new().build(&conf).unwrap();
        let keys = KeyBuilder::new("t");
        let limit = |p: &Arc<dyn Plugin>| {
            let dbg = format!("{p:?}");
            assert!(!dbg.contains("127.0.0.1:1"), "{dbg}");
        };
        limit(&a);
        let l = Limit {
            kind: KeyKind::Ip,
            quota: Quota::new(4, Duration::from_secs(3600), 3).unwrap(),
            seed: 0,
        };
        let c1 = ctx("svc", "r1", [10, 0, 0, 1], None);
        let c2 = ctx("svc", "r1", [10, 0, 0, 2], None);
        let k1 = RateLimit::redis_key(&keys, &l, &c1);
        assert_eq!(k1, RateLimit::redis_key(&keys, &l, &fresh(&c1)));
        assert_ne!(k1, RateLimit::redis_key(&keys, &l, &c2));
        let svc = Limit {
            kind: KeyKind::Service,
            ..l
        };
        let r2 = ctx("svc", "r2", [10, 0, 0, 2], None);
        assert_eq!(
            RateLimit::redis_key(&keys, &svc, &c1),
            RateLimit::redis_key(&keys, &svc, &r2),
            "a service limit is one bucket for all routes and callers"
        );
    }

    #[test]
    fn periods_parse() {
        assert_eq!(parse_period("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_period("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_period("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_period("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_period("0s").is_err());
        assert!(parse_period("s").is_err());
        assert!(parse_period("1").is_err());
        assert!(parse_period("1 s").is_err());
        assert!(parse_period("-1s").is_err());
    }
}
