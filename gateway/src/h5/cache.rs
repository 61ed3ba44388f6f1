//! The static-asset cache of h5 routes, on pingora's HTTP cache (`pingora-cache`).
//!
//! **What is cached.** Only `GET`/`HEAD` requests on routes of `kind: h5` services, and of
//! their answers only those RFC 9111 lets a shared cache store *and* that say how long they stay
//! good or how to check them: an explicit freshness (`Cache-Control: max-age`/`s-maxage`, or
//! `Expires`) or a validator (`ETag`, `Last-Modified`). Never `private` or `no-store`, never an
//! answer with `Set-Cookie` (it belongs to one browser), never `Vary: *`; other `Vary` headers
//! are honoured (a variant per value of the named request headers). An answer with only a
//! validator is stored stale: every use revalidates it with the origin (`If-None-Match` /
//! `If-Modified-Since`), and a `304` refreshes the entry. A request with `Authorization` is
//! stored only when the answer allows it (`public`, `s-maxage`, `must-revalidate`). The key is
//! the service, the host, the path and the query; the request's `Cookie` is not in it, because
//! only answers public by the rules above are stored. API routes never enable the cache: their
//! requests pay one `Option` check in `request_cache_filter` and nothing else.
//!
//! **Storage.** pingora-cache's `MemCache` (a hash map in memory, documented "for testing":
//! it has no bound of its own) behind pingora-cache's `simple_lru` eviction manager with a byte
//! budget (`gateway.h5_cache_bytes`, default 64 MiB; a restart applies a change): each stored
//! body is admitted to the LRU, and what the LRU evicts is purged from the map. The budget
//! counts bodies only (headers and bookkeeping add a few hundred bytes per entry), and a single
//! body larger than an eighth of the budget is not stored. Entries are not shared between
//! processes and do not survive a restart. `MemCache` panics if an entry's metadata is updated
//! after the entry was evicted; [`Bounded`] answers "not updated" instead when the entry is
//! gone (a 304 that races its own entry's eviction still serves the stale body once).
//! Writing a storage of our own was not worth it for static assets of a few agencies' pages:
//! this one is small, bounded, and its limits are the ones above.
//!
//! No cache lock: two misses of one asset at once both go to the origin.

use std::any::Any;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::cache::eviction::simple_lru;
use pingora::cache::filters::resp_cacheable;
use pingora::cache::key::HashBinary;
use pingora::cache::storage::{HitHandler, MissHandler, PurgeOutcome, PurgeTarget};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CachePhase, MemCache, NoCacheReason, PurgeType,
    RespCacheable, Storage, VarianceBuilder,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

/// Default `gateway.h5_cache_bytes`.
pub const DEFAULT_BYTES: u64 = 64 << 20;

struct Cache {
    storage: &'static Bounded,
    eviction: &'static simple_lru::Manager,
    max_object: usize,
}

static CACHE: OnceLock<Option<Cache>> = OnceLock::new();

/// Sets the byte budget once per process (later calls change nothing: a restart applies it).
/// `0` turns the cache off.
pub fn init(bytes: Option<u64>) {
    CACHE.get_or_init(|| {
        let bytes = usize::try_from(bytes.unwrap_or(DEFAULT_BYTES)).unwrap_or(usize::MAX);
        (bytes > 0).then(|| Cache {
            storage: Box::leak(Box::new(Bounded(Box::leak(Box::new(MemCache::new()))))),
            eviction: Box::leak(Box::new(simple_lru::Manager::new(bytes))),
            max_object: (bytes / 8).max(1),
        })
    });
}

/// Enables the cache for this (h5) request when it is a `GET` or `HEAD` and the cache is on.
pub fn enable(session: &mut Session) {
    if !matches!(
        session.req_header().method,
        http::Method::GET | http::Method::HEAD
    ) {
        return;
    }
    let Some(Some(c)) = CACHE.get() else { return };
    session
        .cache
        .enable(c.storage, Some(c.eviction), None, None, None);
    session.cache.set_max_file_size_bytes(c.max_object);
}

/// The key: service, host, path and query, each length-prefixed so no two differ only in
/// where one ends.
pub fn key(service: &str, req: &RequestHeader) -> CacheKey {
    let host = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut primary = Vec::with_capacity(service.len() + host.len() + pq.len() + 24);
    for part in [service, host, pq] {
        primary.extend_from_slice(&(part.len() as u64).to_be_bytes());
        primary.extend_from_slice(part.as_bytes());
    }
    CacheKey::new(primary, "")
}

/// Answers with an explicit freshness: stored for as long as it says.
const EXPLICIT: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);
/// Answers with only a validator: stored stale, revalidated on every use.
const VALIDATE: CacheMetaDefaults = CacheMetaDefaults::new(|_| Some(Duration::ZERO), 0, 0);

/// Whether an answer may be stored, and its metadata (see the module docs for the rules).
pub fn cacheable(req: &RequestHeader, resp: &ResponseHeader) -> RespCacheable {
    let no = |why: &'static str| RespCacheable::Uncacheable(NoCacheReason::Custom(why));
    if !matches!(resp.status.as_u16(), 200 | 203 | 301 | 308 | 404 | 410) {
        return no("status");
    }
    let h = &resp.headers;
    if h.contains_key(http::header::SET_COOKIE) {
        return no("set-cookie");
    }
    if h.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|n| n.trim_ascii() == b"*")
    }) {
        return no("vary *");
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc.as_ref().is_some_and(|c| c.private() || c.no_store()) {
        return no("private");
    }
    let explicit = h.contains_key(http::header::EXPIRES)
        || cc.as_ref().is_some_and(|c| c.fresh_duration().is_some());
    let validator =
        h.contains_key(http::header::ETAG) || h.contains_key(http::header::LAST_MODIFIED);
    if !explicit && !validator {
        return no("no freshness or validator");
    }
    let defaults = if explicit { &EXPLICIT } else { &VALIDATE };
    let authorized = req.headers.contains_key(http::header::AUTHORIZATION);
    resp_cacheable(cc.as_ref(), resp.clone(), authorized, defaults)
}

/// The variant of a stored answer with `Vary`: the values of the request headers it names.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = meta
        .headers()
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    let mut v = VarianceBuilder::new();
    for n in names {
        let value = req
            .headers
            .get_all(n.as_str())
            .iter()
            .flat_map(|x| x.as_bytes().iter().copied().chain([b',']))
            .collect::<Vec<u8>>();
        v.add_owned_name_value(n, value);
    }
    v.finalize()
}

/// `X-Cache-Status` for an h5 answer.
pub fn status(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        _ => "BYPASS",
    }
}

/// `MemCache`, with an `update_meta` that does not panic on an entry evicted meanwhile.
struct Bounded(&'static MemCache);

#[async_trait]
impl Storage for Bounded {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.0.lookup(key, trace).await
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.0.lookup_streaming_write(key, tag, trace).await
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<MissHandler> {
        self.0.get_miss_handler(key, meta, trace).await
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        self.0.purge(target, purge_type, trace).await
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<bool> {
        if self.0.lookup(key, trace).await?.is_none() {
            return Ok(false);
        }
        self.0.update_meta(key, meta, trace).await
    }

    fn support_streaming_partial_write(&self) -> bool {
        self.0.support_streaming_partial_write()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
