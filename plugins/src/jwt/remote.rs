//! The remote key set of `jwt-auth` (`jwks_uri`): fetched from the identity service in the
//! background, swapped in atomically, persisted so that a restart survives an outage.
//!
//! Why it looks like this: the request path must not wait for, lock on, or even notice a fetch.
//! The current set sits behind an [`ArcSwapOption`] — a request loads it (no lock) and looks up
//! its `kid`. A task on the background network runtime (`fenfa_net::handle`, never the proxy's)
//! refreshes it: on the interval the operator fixed, else on the answer's `Cache-Control:
//! max-age` bounded by a minimum and a maximum; sooner when a request met a `kid` the set does
//! not have (at most once per [`UNKNOWN_KID_REFETCH`]). A set is only ever replaced by one that
//! passes every check inline keys pass (`keys::parse_jwks`): bad JSON, an empty set, a weak or
//! malformed key, a private key — the whole answer is refused and the last good set stays, as it
//! does when the identity service is down. Each new good set is written to the plugin's data dir
//! (atomically, owner-only) and read back at the next start, before the first fetch.
//!
//! Sources are shared: one per `(uri, settings)` for the whole process (the factory keeps them
//! weakly), so a config reload does not refetch, and a source no config names any more stops.
//!
//! What it may not do: fetch on the request path, fetch before the gateway is running (config
//! checks only build), follow redirects or speak plain http to a non-loopback host (fenfa-net's
//! rules), or log key material.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use fenfa_net::{ClientTls, Endpoint, Names, Settings};

use super::keys::{self, Key};
use crate::contract::{Host, SchemaError};

/// How long a request-triggered refetch (unknown `kid`) waits after the previous one.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);
/// Largest key set document accepted.
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// Deadline of one fetch.
const FETCH_DEADLINE: Duration = Duration::from_secs(10);

/// A checked key set, with a generation number (cached tokens verified under another generation
/// are verified again).
pub struct KeySet {
    pub keys: HashMap<String, Key>,
    pub generation: u64,
    /// SHA-256 of the document it came from (an unchanged answer keeps the generation).
    digest: [u8; 32],
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// When to refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refresh {
    /// A fixed interval (`jwks_refresh_seconds`), ignoring `Cache-Control`.
    pub fixed: Option<Duration>,
    /// Bounds of a `Cache-Control: max-age` (and the interval when there is none: `max`).
    pub min: Duration,
    pub max: Duration,
}

impl Refresh {
    /// The wait until the next refresh after an answer with this `max-age`.
    pub fn after(&self, max_age: Option<u64>) -> Duration {
        if let Some(f) = self.fixed {
            return f;
        }
        max_age
            .map(Duration::from_secs)
            .unwrap_or(self.max)
            .clamp(self.min, self.max)
    }

    /// The wait before retrying after a failed fetch.
    pub fn retry(&self) -> Duration {
        self.fixed.unwrap_or(self.min).min(self.min)
    }
}

/// `max-age` of a `Cache-Control` value (`no-store`/`no-cache` count as 0).
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let d = directive.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(0);
        }
        if let Some((name, value)) = d.split_once('=') {
            if name.trim().eq_ignore_ascii_case("max-age") {
                age = value.trim().trim_matches('"').parse().ok();
            }
        }
    }
    age
}

/// Checks a fetched (or persisted) document exactly as inline keys are checked.
pub fn parse_document(body: &[u8]) -> Result<KeySet, SchemaError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| SchemaError::new("", format!("not JSON: {e}")))?;
    let cfg: keys::JwksConfig = SchemaError::parse(&value)?;
    let keys = keys::parse_jwks(cfg, "jwks")?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
    Ok(KeySet {
        keys,
        generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        digest,
    })
}

/// The gateway's atomic, owner-only file writer ([`Host::write_private`]).
type Writer = fn(&Path, &[u8]) -> std::io::Result<()>;

/// One identity service's key set, shared by every instance that names it.
pub struct RemoteJwks {
    uri: String,
    endpoint: Endpoint,
    refresh: Refresh,
    current: ArcSwapOption<KeySet>,
    /// Wakes the refresher early (unknown `kid`).
    wake: Arc<tokio::sync::Notify>,
    started: AtomicBool,
    clock: Instant,
    /// When the last early refetch was asked for (ms since `clock`, +1; 0: never).
    poked_ms: AtomicU64,
    /// Where the last good set is kept, once the gateway runs.
    file: OnceLock<(PathBuf, Writer)>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        let mut kids: Vec<&String> = current.iter().flat_map(|s| s.keys.keys()).collect();
        kids.sort_unstable();
        f.debug_struct("RemoteJwks")
            .field("uri", &self.uri)
            .field("refresh", &self.refresh)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

/// The settings a source is made from (also its identity in the factory's table).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceConfig {
    pub uri: String,
    pub ca: Option<String>,
    pub refresh: Refresh,
}

fn names() -> Names {
    Names {
        url: "jwks_uri".into(),
        ca: "jwks_ca".into(),
        client_cert: "jwks_ca".into(),
        client_key: "jwks_ca".into(),
        insecure: "jwks_uri".into(),
        max_body: "jwks_uri".into(),
    }
}

/// Checks the URI and CA file with fenfa-net's rules (https, or http to loopback only).
pub fn check(c: &SourceConfig) -> Result<(), SchemaError> {
    fenfa_net::validate(&settings(c)).map_err(schema_error)
}

fn schema_error(e: fenfa_net::ClientError) -> SchemaError {
    match e {
        fenfa_net::ClientError::Setting { field, message } if message.contains("plain http://") => {
            SchemaError::new(
                field,
                "plain http:// is only allowed to a loopback address; use https://",
            )
        }
        fenfa_net::ClientError::Setting { field, message } => SchemaError::new(field, message),
        other => SchemaError::new("jwks_uri", other.to_string()),
    }
}

fn settings(c: &SourceConfig) -> Settings<'_> {
    Settings {
        url: &c.uri,
        tls: ClientTls {
            ca: c.ca.as_deref(),
            client_cert: None,
            client_key: None,
        },
        insecure: false,
        connect_timeout: Duration::from_secs(5),
        max_body: MAX_JWKS_BYTES,
        names: names(),
    }
}

impl RemoteJwks {
    fn new(c: &SourceConfig) -> Result<Self, SchemaError> {
        let endpoint = Endpoint::new(&settings(c)).map_err(schema_error)?;
        Ok(Self {
            uri: c.uri.clone(),
            endpoint,
            refresh: c.refresh,
            current: ArcSwapOption::empty(),
            wake: Arc::new(tokio::sync::Notify::new()),
            started: AtomicBool::new(false),
            clock: Instant::now(),
            poked_ms: AtomicU64::new(0),
            file: OnceLock::new(),
        })
    }

    /// The current key set (`None` before the first good one). No lock.
    pub fn current(&self) -> arc_swap::Guard<Option<Arc<KeySet>>> {
        self.current.load()
    }

    /// A request met a `kid` the set does not have: refetch soon, at most once per
    /// [`UNKNOWN_KID_REFETCH`]. Two atomics; never waits.
    pub fn unknown_kid(&self) {
        let now = self.clock.elapsed().as_millis() as u64 + 1;
        let last = self.poked_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < UNKNOWN_KID_REFETCH.as_millis() as u64 {
            return;
        }
        if self
            .poked_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.wake.notify_one();
        }
    }

    /// Starts keeping the set fresh (once): loads the persisted set, then runs the refresher.
    fn start(self: &Arc<Self>, host: &Host) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(self.uri.as_bytes());
        let name: String = digest.finish().as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = host.data_dir.join(format!("jwks-{name}.json"));
        if self.current.load().is_none() {
            match std::fs::read(&path) {
                Ok(body) => match parse_document(&body) {
                    Ok(set) => {
                        tracing::info!(uri = %self.uri, kids = set.keys.len(), file = %path.display(),
                            "jwt-auth: key set loaded from the last good copy");
                        self.current.store(Some(Arc::new(set)));
                    }
                    Err(e) => tracing::warn!(uri = %self.uri, file = %path.display(), error = %e,
                        "jwt-auth: the saved key set is not valid; ignored"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "jwt-auth: cannot read the saved key set"),
            }
        }
        let _ = self.file.set((path, host.write_private));
        let handle = match fenfa_net::handle() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "jwt-auth: cannot start the key set refresher");
                return;
            }
        };
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        handle.spawn(refresher(weak, wake));
    }

    /// One fetch; on success swaps the set in and returns the answer's `max-age`.
    async fn fetch(&self) -> Result<Option<u64>, String> {
        let answer = self
            .endpoint
            .request(
                http::Method::GET,
                self.endpoint.url.clone(),
                http::HeaderMap::new(),
                Vec::new(),
                FETCH_DEADLINE,
            )
            .await
            .map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(format!("answered {}", answer.status));
        }
        let set = parse_document(&answer.body).map_err(|e| format!("key set refused: {e}"))?;
        let age = answer.header("cache-control").and_then(max_age);
        let unchanged = self
            .current
            .load()
            .as_ref()
            .is_some_and(|c| c.digest == set.digest);
        if !unchanged {
            let kids = {
                let mut k: Vec<&str> = set.keys.keys().map(String::as_str).collect();
                k.sort_unstable();
                k.join(",")
            };
            tracing::info!(uri = %self.uri, kids = %kids, "jwt-auth: new key set");
            self.current.store(Some(Arc::new(set)));
            if let Some((path, write)) = self.file.get() {
                if let Err(e) = write(path, &answer.body) {
                    tracing::warn!(file = %path.display(), error = %e,
                        "jwt-auth: cannot save the key set (a restart would need the identity service)");
                }
            }
        }
        Ok(age)
    }
}

/// Refreshes while some instance still uses the source.
async fn refresher(weak: Weak<RemoteJwks>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let Some(me) = weak.upgrade() else { return };
        let wait = match me.fetch().await {
            Ok(age) => me.refresh.after(age),
            Err(e) => {
                let retry = me.refresh.retry();
                tracing::warn!(uri = %me.uri, error = %e, retry_in_s = retry.as_secs(),
                    "jwt-auth: key set refresh failed; keeping the last good set");
                retry
            }
        };
        drop(me);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

/// The factory's table of sources: weak, so that a source no instance uses any more stops.
#[derive(Default)]
pub struct Sources {
    table: Mutex<HashMap<SourceConfig, Weak<RemoteJwks>>>,
    host: OnceLock<Host>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("started", &self.host.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Sources {
    /// The source for `c`, shared with earlier instances; started if the gateway runs.
    pub fn get(&self, c: &SourceConfig) -> Result<Arc<RemoteJwks>, SchemaError> {
        check(c)?;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, w| w.strong_count() > 0);
        let source = match table.get(c).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                let s = Arc::new(RemoteJwks::new(c)?);
                table.insert(c.clone(), Arc::downgrade(&s));
                s
            }
        };
        if let Some(host) = self.host.get() {
            source.start(host);
        }
        Ok(source)
    }

    /// The gateway runs: start every source made so far, and every later one.
    pub fn start(&self, host: &Host) {
        let _ = self.host.set(host.clone());
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for s in table.values().filter_map(Weak::upgrade) {
            s.start(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=300"), Some(300));
        assert_eq!(max_age("max-age=\"60\""), Some(60));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn refresh_follows_max_age_within_bounds_or_a_fixed_interval() {
        let r = Refresh {
            fixed: None,
            min: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        };
        assert_eq!(r.after(Some(300)), Duration::from_secs(300));
        assert_eq!(r.after(Some(1)), Duration::from_secs(30));
        assert_eq!(r.after(Some(86_400)), Duration::from_secs(3600));
        assert_eq!(r.after(None), Duration::from_secs(3600));
        let fixed = Refresh {
            fixed: Some(Duration::from_secs(90)),
            ..r
        };
        assert_eq!(fixed.after(Some(5)), Duration::from_secs(90));
    }

    #[test]
    fn documents_are_checked_like_inline_keys() {
        assert!(parse_document(b"not json").is_err());
        assert!(parse_document(br#"{"keys": []}"#).is_err());
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let good = serde_json::json!({"keys": [
            {"kid": "a", "alg": "ES256", "kty": "EC", "crv": "P-256", "x": x, "y": y}]});
        let set = parse_document(good.to_string().as_bytes()).unwrap();
        assert!(set.keys.contains_key("a"));
        let off_curve = serde_json::json!({"keys": [
            {"kid": "a", "alg": "ES256", "kty": "EC", "crv": "P-256", "x": x, "y": x}]});
        let e = parse_document(off_curve.to_string().as_bytes())
            .err()
            .expect("off-curve key refused");
        assert_eq!(e.path, "jwks.keys[0].x");
        let private = serde_json::json!({"keys": [
            {"kid": "a", "alg": "ES256", "kty": "EC", "crv": "P-256", "x": x, "y": y, "d": "AA"}]});
        assert!(parse_document(private.to_string().as_bytes()).is_err());
    }

    #[test]
    fn uris_follow_the_network_rules() {
        let c = |uri: &str| SourceConfig {
            uri: uri.into(),
            ca: None,
            refresh: Refresh {
                fixed: None,
                min: Duration::from_secs(60),
                max: Duration::from_secs(3600),
            },
        };
        assert!(check(&c("https://id.city.example/jwks.json")).is_ok());
        assert!(check(&c("http://127.0.0.1:8080/jwks.json")).is_ok());
        let e = check(&c("http://id.city.example/jwks.json")).unwrap_err();
        assert_eq!(e.path, "jwks_uri");
        assert!(check(&c("ftp://127.0.0.1/jwks.json")).is_err());
    }
}
