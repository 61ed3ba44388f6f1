//! The Redis store of `rate-limit` (`store: redis`): cluster-wide GCRA buckets shared by every
//! gateway node that points at the same Redis.
//!
//! Why it exists: the local store ([`crate::gcra`]) counts per node, so N nodes admit N times a
//! limit. Here every bucket is one Redis string (its TAT), and one Lua script (`gcra.lua`)
//! checks and charges all of a request's buckets atomically, on Redis's clock: one round trip
//! per request (`EVALSHA`; `EVAL` once when the server does not know the script yet, e.g. after
//! a restart or on a new cluster node).
//!
//! Connections: one client per distinct `(url, cluster)` for the whole process, shared by every
//! plugin instance and kept across config reloads (the factory owns them). The connection is
//! made on first use, on the proxy's runtime; afterwards redis's `ConnectionManager` (or the
//! cluster client) reconnects by itself. After a failed connect, requests do not try again for
//! [`RECONNECT_PAUSE`]: they fail at once and take the configured fallback.
//!
//! Keys: `<prefix>:{<service tag>}:<bucket>`, where both parts are hex digests (SHA-256) of the
//! limit's definition and of who it counts — no user id, app id or address is stored in clear.
//! The `{…}` hash tag puts every bucket of one service in one cluster slot, so a request's
//! buckets can be checked atomically in one script call on Redis Cluster too.
//!
//! What it may not do: block a thread, or put the URL (it may hold a password) into an error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fenfa_plugin_api::CallError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError};

/// The script, and its SHA-1 for `EVALSHA`.
const SCRIPT: &str = include_str!("gcra.lua");

/// How long requests skip connecting after a failed connection attempt.
pub const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// What Redis answered for one request: whether all buckets conform, and how far each bucket's
/// TAT was ahead of Redis's clock before the request (µs), in the order of the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub allowed: bool,
    pub ahead_us: Vec<u64>,
}

/// Where to connect.
enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

// One per Redis deployment, cloned per request (handles over shared channels); boxing the
// larger variant would only add an allocation to each clone.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One Redis (or Redis Cluster) deployment, shared by every instance that names it.
pub struct RedisStore {
    target: Target,
    timeout: Duration,
    conn: tokio::sync::OnceCell<Conn>,
    sha: String,
    started: Instant,
    /// When the last connection attempt failed (ms since `started`, +1; 0: never).
    failed_at_ms: AtomicU64,
    /// Whether a connection attempt is under way (only one at a time).
    connecting: AtomicBool,
    /// Woken when a connection attempt ends.
    ready: tokio::sync::Notify,
    /// Why the last attempt failed (read only when one did, never on the fast path).
    last_error: Mutex<Option<CallError>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisStore")
            .field("cluster", &matches!(self.target, Target::Cluster(_)))
            .field("connected", &self.conn.initialized())
            .finish_non_exhaustive()
    }
}

/// Why a store cannot be made: its URL or its CA file (messages never repeat the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Url(String),
    #[error("{0}")]
    Ca(String),
}

/// Why a Redis URL is refused (the message never repeats the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// Checks the URL's scheme: `redis://` or `rediss://` (TLS). The password, if any, stays inside.
pub fn check_url(url: &str) -> Result<(), UrlError> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "redis" | "rediss" => {}
        _ => {
            return Err(UrlError(
                "expected a redis:// or rediss:// URL (redis://[:password@]host:port[/db])".into(),
            ))
        }
    }
    redis::parse_redis_url(url)
        .ok_or_else(|| UrlError("not a valid redis:// or rediss:// URL".into()))?;
    Ok(())
}

fn call_error(what: &str, e: &RedisError) -> CallError {
    // `kind()` and the server's code name the failure without echoing anything of the URL.
    let detail = match e.code() {
        Some(code) => format!("{:?} ({code})", e.kind()),
        None => format!("{:?}", e.kind()),
    };
    CallError::new("redis", format!("{what}: {detail}"))
}

impl RedisStore {
    /// A store for `url`; connects to nothing yet. `timeout` bounds connecting and each answer
    /// inside the client (the gateway's budget bounds each request's wait anyway); it should be
    /// long enough for a TLS handshake.
    pub fn new(
        url: &str,
        cluster: bool,
        ca: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        check_url(url).map_err(|e| StoreError::Url(e.0))?;
        let tls = url.starts_with("rediss://");
        if ca.is_some() && !tls {
            return Err(StoreError::Ca("only used with a rediss:// URL".into()));
        }
        if let Some(pem) = ca {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Ca(format!("not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(StoreError::Ca("holds no certificate".into()));
            }
        }
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.map(<[u8]>::to_vec),
        };
        let ca_error = |e: RedisError| StoreError::Ca(format!("cannot use these CAs: {e}"));
        let bad = |_| StoreError::Url("not a valid redis:// or rediss:// URL".into());
        let target = if cluster {
            let mut b = redis::cluster::ClusterClient::builder(vec![url])
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1);
            if ca.is_some() {
                b = b.certs(certs());
            }
            Target::Cluster(
                b.build()
                    .map_err(|e| if ca.is_some() { ca_error(e) } else { bad(e) })?,
            )
        } else if ca.is_some() {
            let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(bad)?;
            Target::Single(redis::Client::build_with_tls(info, certs()).map_err(ca_error)?)
        } else {
            Target::Single(redis::Client::open(url).map_err(bad)?)
        };
        Ok(Self {
            target,
            timeout,
            conn: tokio::sync::OnceCell::new(),
            sha: redis::Script::new(SCRIPT).get_hash().to_string(),
            started: Instant::now(),
            failed_at_ms: AtomicU64::new(0),
            connecting: AtomicBool::new(false),
            ready: tokio::sync::Notify::new(),
            last_error: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    // Few, short retries: requests take the fallback meanwhile, and the next
                    // attempt comes after RECONNECT_PAUSE anyway.
                    .set_number_of_retries(1)
                    .set_factor(50)
                    .set_max_delay(500);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Conn::Single)
            }
            Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// The connection, made on first use by a task of its own (so that a request's budget,
    /// which may be shorter than a TLS handshake, never cancels it); the request waits for it
    /// within its budget. After a failure, no new attempt for [`RECONNECT_PAUSE`].
    async fn connection(self: &Arc<Self>) -> Result<Conn, CallError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let ready = self.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let failed = self.failed_at_ms.load(Ordering::Relaxed);
        let paused = failed != 0
            && self.now_ms().saturating_sub(failed) < RECONNECT_PAUSE.as_millis() as u64;
        if paused {
            return Err(CallError::new(
                "redis",
                "not connected (retrying in the background)",
            ));
        }
        if !self.connecting.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                match me.connect().await {
                    Ok(c) => {
                        let _ = me.conn.set(c);
                        me.failed_at_ms.store(0, Ordering::Relaxed);
                    }
                    Err(e) => {
                        me.failed_at_ms.store(me.now_ms(), Ordering::Relaxed);
                        *me.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(call_error("cannot connect", &e));
                    }
                }
                me.connecting.store(false, Ordering::Release);
                me.ready.notify_waiters();
            });
        }
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        ready.await;
        match self.conn.get() {
            Some(c) => Ok(c.clone()),
            None => Err(self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| CallError::new("redis", "cannot connect"))),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Checks and (if all conform) charges the buckets `keys`; `args` holds `interval_us`,
    /// `tau_us` of each, in order (see `gcra.lua`). One round trip.
    pub async fn acquire(
        self: &Arc<Self>,
        keys: &[String],
        args: &[String],
    ) -> Result<Answer, CallError> {
        if args.len() != keys.len() * 2 {
            return Err(CallError::new("redis", "two arguments per key expected"));
        }
        let conn = self.connection().await?;
        let reply = match conn {
            Conn::Single(mut c) => self.eval(&mut c, keys, args).await,
            Conn::Cluster(mut c) => self.eval(&mut c, keys, args).await,
        }
        .map_err(|e| call_error("GCRA script failed", &e))?;
        parse_reply(&reply, keys.len())
    }

    /// The script's arguments for `(interval_us, tau_us)` pairs (tests).
    #[cfg(test)]
    fn args(quotas: &[(u64, u64)]) -> Vec<String> {
        quotas
            .iter()
            .flat_map(|(i, t)| [i.to_string(), t.to_string()])
            .collect()
    }

    /// `EVALSHA`, and `EVAL` (which also caches the script) when Redis does not know it.
    async fn eval<C: ConnectionLike>(
        &self,
        conn: &mut C,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<i64>, RedisError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys).arg(args);
        match cmd.query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(SCRIPT).arg(keys.len()).arg(keys).arg(args);
                cmd.query_async(conn).await
            }
            other => other,
        }
    }
}

fn parse_reply(reply: &[i64], keys: usize) -> Result<Answer, CallError> {
    let bad = || CallError::new("redis", "GCRA script returned an unexpected reply");
    let (&flag, ahead) = reply.split_first().ok_or_else(bad)?;
    if ahead.len() != keys || !(flag == 0 || flag == 1) || ahead.iter().any(|a| *a < 0) {
        return Err(bad());
    }
    Ok(Answer {
        allowed: flag == 1,
        ahead_us: ahead.iter().map(|a| *a as u64).collect(),
    })
}

/// Builds bucket keys: `<prefix>:{<service tag>}:<bucket digest>`.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    prefix: Arc<str>,
}

/// One part of a bucket's identity, hashed with its length so parts cannot run together.
pub enum Part<'a> {
    Str(&'a str),
    U64(u64),
    Bytes(&'a [u8]),
}

impl KeyBuilder {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: Arc::from(prefix),
        }
    }

    /// The key of the bucket identified by `parts`, in the slot of `(agency, service)`.
    pub fn key(&self, agency: &str, service: &str, parts: &[Part<'_>]) -> String {
        let tag = digest(&[Part::Str(agency), Part::Str(service)]);
        let bucket = digest(parts);
        let mut k = String::with_capacity(self.prefix.len() + 2 + 16 + 3 + 32);
        k.push_str(&self.prefix);
        k.push_str(":{");
        hex(&tag.as_ref()[..8], &mut k);
        k.push_str("}:");
        hex(&bucket.as_ref()[..16], &mut k);
        k
    }
}

fn digest(parts: &[Part<'_>]) -> ring::digest::Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        let (tag, bytes): (u8, std::borrow::Cow<'_, [u8]>) = match p {
            Part::Str(s) => (b's', s.as_bytes().into()),
            Part::U64(n) => (b'n', n.to_be_bytes().to_vec().into()),
            Part::Bytes(b) => (b'b', (*b).into()),
        };
        ctx.update(&[tag]);
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(&bytes);
    }
    ctx.finish()
}

fn hex(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    //! The script against a real Redis (`FENFA_TEST_REDIS_URL`; CI sets it, elsewhere these
    //! tests are skipped with a loud message).
    use super::*;

    fn redis_url() -> Option<String> {
        match std::env::var("FENFA_TEST_REDIS_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "CI is set but FENFA_TEST_REDIS_URL is not: the Redis tests must run in CI"
                    );
                }
                eprintln!(
                    "\n!!! SKIPPING a Redis GCRA test: FENFA_TEST_REDIS_URL is not set\n!!! (e.g. FENFA_TEST_REDIS_URL=redis://127.0.0.1:6379; CI sets it)\n"
                );
                None
            }
        }
    }

    fn unique_prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("fenfa:test:{test}:{}:{nanos}", std::process::id())
    }

    const SEC: u64 = 1_000_000;

    #[test]
    fn urls_are_checked_without_echoing_them() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("redis://:s3cret@127.0.0.1:6379/2").is_ok());
        assert!(check_url("rediss://user:s3cret@redis.example:6380").is_ok());
        let e = check_url("http://:s3cret@127.0.0.1:6379").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(check_url("127.0.0.1:6379").is_err());
    }

    #[test]
    fn keys_are_digests_in_the_service_slot() {
        let kb = KeyBuilder::new("fenfa:rl");
        let a = kb.key("ag", "svc", &[Part::Str("ip"), Part::Bytes(&[10, 0, 0, 1])]);
        let b = kb.key("ag", "svc", &[Part::Str("ip"), Part::Bytes(&[10, 0, 0, 2])]);
        let c = kb.key(
            "ag",
            "svc2",
            &[Part::Str("ip"), Part::Bytes(&[10, 0, 0, 1])],
        );
        assert!(a.starts_with("fenfa:rl:{"), "{a}");
        assert_eq!(a.len(), "fenfa:rl:{".len() + 16 + 2 + 32);
        assert_ne!(a, b);
        let slot = |k: &str| k[..k.find('}').unwrap()].to_string();
        assert_eq!(slot(&a), slot(&b), "same service, same slot");
        assert_ne!(slot(&a), slot(&c));
        // Parts are length-prefixed: "ab"+"c" is not "a"+"bc".
        assert_ne!(
            kb.key("", "", &[Part::Str("ab"), Part::Str("c")]),
            kb.key("", "", &[Part::Str("a"), Part::Str("bc")])
        );
    }

    #[test]
    fn replies_are_checked() {
        assert_eq!(
            parse_reply(&[1, 0, 5], 2).unwrap(),
            Answer {
                allowed: true,
                ahead_us: vec![0, 5]
            }
        );
        assert!(parse_reply(&[1, 0], 2).is_err());
        assert!(parse_reply(&[2, 0], 1).is_err());
        assert!(parse_reply(&[0, -1], 1).is_err());
        assert!(parse_reply(&[], 0).is_err());
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn script_admits_burst_plus_one_then_denies() {
        let Some(url) = redis_url() else { return };
        let prefix = unique_prefix("burst");
        rt().block_on(async {
            let store =
                Arc::new(RedisStore::new(&url, false, None, Duration::from_secs(2)).unwrap());
            let key = vec![format!("{prefix}:a")];
            // 1 per 10 s, burst 2: three pass at once, the fourth waits ~10 s.
            let q = [(10 * SEC, 20 * SEC)];
            for i in 0..3 {
                let a = store.acquire(&key, &RedisStore::args(&q)).await.unwrap();
                assert!(a.allowed, "request {i}");
            }
            let a = store.acquire(&key, &RedisStore::args(&q)).await.unwrap();
            assert!(!a.allowed);
            let ahead = a.ahead_us[0];
            assert!(ahead > 29 * SEC && ahead <= 30 * SEC, "{ahead}");
            // A denied request charged nothing.
            let again = store.acquire(&key, &RedisStore::args(&q)).await.unwrap();
            assert!(!again.allowed);
            assert!(again.ahead_us[0] <= ahead);
        });
    }

    #[test]
    fn script_charges_all_buckets_or_none() {
        let Some(url) = redis_url() else { return };
        let prefix = unique_prefix("all-or-none");
        rt().block_on(async {
            let store =
                Arc::new(RedisStore::new(&url, false, None, Duration::from_secs(2)).unwrap());
            let route = format!("{prefix}:route");
            let ip_a = format!("{prefix}:ip-a");
            let ip_b = format!("{prefix}:ip-b");
            let route_q = (1800 * SEC, 1800 * SEC); // 2 per hour, burst 1: two at once
            let ip_q = (3600 * SEC, 0); // 1 per hour
            let two = |ip: &str| vec![route.clone(), ip.to_string()];
            let a = store
                .acquire(&two(&ip_a), &RedisStore::args(&[route_q, ip_q]))
                .await
                .unwrap();
            assert!(a.allowed);
            for _ in 0..5 {
                let a = store
                    .acquire(&two(&ip_a), &RedisStore::args(&[route_q, ip_q]))
                    .await
                    .unwrap();
                assert!(!a.allowed, "ip a is over its own limit");
            }
            // ip a's denials did not spend the route's second token.
            let b = store
                .acquire(&two(&ip_b), &RedisStore::args(&[route_q, ip_q]))
                .await
                .unwrap();
            assert!(b.allowed);
            assert_eq!(b.ahead_us[1], 0, "ip b's bucket was fresh");
            let b = store
                .acquire(&two(&ip_b), &RedisStore::args(&[route_q, ip_q]))
                .await
                .unwrap();
            assert!(!b.allowed);
        });
    }

    #[test]
    fn script_paces_at_the_rate_on_the_servers_clock() {
        let Some(url) = redis_url() else { return };
        let prefix = unique_prefix("pace");
        rt().block_on(async {
            let store =
                Arc::new(RedisStore::new(&url, false, None, Duration::from_secs(2)).unwrap());
            let key = vec![format!("{prefix}:k")];
            // 20 per second, no burst: over 1 s of hammering, about 20 pass.
            let q = [(SEC / 20, 0)];
            let start = Instant::now();
            let mut passed = 0;
            while start.elapsed() < Duration::from_millis(1000) {
                if store
                    .acquire(&key, &RedisStore::args(&q))
                    .await
                    .unwrap()
                    .allowed
                {
                    passed += 1;
                }
            }
            assert!((19..=22).contains(&passed), "{passed}");
        });
    }

    #[test]
    fn evalsha_falls_back_to_eval_after_script_flush() {
        let Some(url) = redis_url() else { return };
        let prefix = unique_prefix("flush");
        rt().block_on(async {
            let store =
                Arc::new(RedisStore::new(&url, false, None, Duration::from_secs(2)).unwrap());
            let key = vec![format!("{prefix}:k")];
            let q = [(SEC, 0)];
            assert!(
                store
                    .acquire(&key, &RedisStore::args(&q))
                    .await
                    .unwrap()
                    .allowed
            );
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(
                !store
                    .acquire(&key, &RedisStore::args(&q))
                    .await
                    .unwrap()
                    .allowed
            );
        });
    }

    /// Redis Cluster: optional (`FENFA_TEST_REDIS_CLUSTER_URL`, any node of a cluster), skipped
    /// with a message when unset, CI included (CI runs no cluster).
    #[test]
    fn on_a_cluster_a_requests_buckets_share_a_slot_and_the_script_runs_once() {
        let url = match std::env::var("FENFA_TEST_REDIS_CLUSTER_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                eprintln!("\n!!! SKIPPING the Redis Cluster test: FENFA_TEST_REDIS_CLUSTER_URL is not set\n");
                return;
            }
        };
        let kb = KeyBuilder::new(&unique_prefix("cluster"));
        rt().block_on(async {
            let store =
                Arc::new(RedisStore::new(&url, true, None, Duration::from_secs(2)).unwrap());
            // Many services: their slots spread over the shards; each request's two buckets
            // (route and ip) share one slot, so the script runs atomically on one shard.
            for svc in 0..20 {
                let svc = format!("svc-{svc}");
                let keys = vec![
                    kb.key("ag", &svc, &[Part::Str("route")]),
                    kb.key("ag", &svc, &[Part::Str("ip"), Part::Bytes(&[10, 0, 0, 1])]),
                ];
                let args = RedisStore::args(&[(3600 * SEC, 0), (3600 * SEC, SEC * 3600)]);
                assert!(store.acquire(&keys, &args).await.unwrap().allowed, "{svc}");
                let again = store.acquire(&keys, &args).await.unwrap();
                assert!(!again.allowed, "{svc}: the route allows one an hour");
            }
        });
    }

    /// `rediss://` with a private CA: optional (`FENFA_TEST_REDISS_URL` and
    /// `FENFA_TEST_REDISS_CA`, a PEM file), skipped with a message when unset.
    #[test]
    fn rediss_with_a_private_ca_runs_the_script() {
        let (Ok(url), Ok(ca)) = (
            std::env::var("FENFA_TEST_REDISS_URL"),
            std::env::var("FENFA_TEST_REDISS_CA"),
        ) else {
            eprintln!(
                "\n!!! SKIPPING the rediss:// test: FENFA_TEST_REDISS_URL / _CA are not set\n"
            );
            return;
        };
        let ca = std::fs::read(ca).unwrap();
        let prefix = unique_prefix("tls");
        rt().block_on(async {
            let store =
                Arc::new(RedisStore::new(&url, false, Some(&ca), Duration::from_secs(2)).unwrap());
            let key = vec![format!("{prefix}:k")];
            let args = RedisStore::args(&[(SEC, 0)]);
            assert!(store.acquire(&key, &args).await.unwrap().allowed);
            assert!(!store.acquire(&key, &args).await.unwrap().allowed);
            // Without the CA, the server's certificate is not trusted.
            let untrusted =
                Arc::new(RedisStore::new(&url, false, None, Duration::from_secs(2)).unwrap());
            assert!(untrusted.acquire(&key, &args).await.is_err());
        });
    }

    #[test]
    fn a_ca_is_only_for_rediss_and_must_be_pem() {
        let e = RedisStore::new("redis://127.0.0.1:1", false, Some(b"x"), SEC_D).unwrap_err();
        assert!(matches!(e, StoreError::Ca(_)), "{e}");
        let e =
            RedisStore::new("rediss://127.0.0.1:1", false, Some(b"not pem"), SEC_D).unwrap_err();
        assert!(matches!(e, StoreError::Ca(_)), "{e}");
    }

    const SEC_D: Duration = Duration::from_secs(1);

    #[test]
    fn a_closed_port_fails_fast_and_then_pauses_reconnects() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        rt().block_on(async {
            let url = format!("redis://127.0.0.1:{port}");
            let store =
                Arc::new(RedisStore::new(&url, false, None, Duration::from_millis(200)).unwrap());
            let key = vec!["k".to_string()];
            let t = Instant::now();
            let e = store
                .acquire(&key, &RedisStore::args(&[(SEC, 0)]))
                .await
                .unwrap_err();
            assert_eq!(e.service, "redis");
            let e2 = store
                .acquire(&key, &RedisStore::args(&[(SEC, 0)]))
                .await
                .unwrap_err();
            assert!(e2.message.contains("not connected"), "{e2}");
            assert!(t.elapsed() < Duration::from_secs(2));
        });
    }
}
