//! Active users in Redis: `PFADD` per period and channel (pipelined per batch), `PFCOUNT` to
//! read. Keys: `<prefix>:au:d:YYYY-MM-DD:<channel>` and `<prefix>:au:m:YYYY-MM:<channel>`; the
//! elements are the users' 64-bit digests in hex, never the ids. Daily keys expire after 400
//! days, monthly ones after 800 (the reports look back a year).
//!
//! What it may not do: put the URL (it may hold a password) into an error or a log.

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;

use super::{keys, Counts, Seen, CHANNELS, TOTAL};

pub struct RedisCounts {
    client: redis::Client,
    prefix: String,
    conn: tokio::sync::OnceCell<ConnectionManager>,
}

impl RedisCounts {
    /// `url`: `redis://…` or `rediss://…`; `prefix`: the key prefix (default `fenfa`).
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| {
            format!(
                "--redis: not a Redis URL ({}); expected redis://HOST:PORT[/DB]",
                redis_kind(&e)
            )
        })?;
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            conn: tokio::sync::OnceCell::new(),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, String> {
        self.conn
            .get_or_try_init(|| async {
                ConnectionManager::new(self.client.clone())
                    .await
                    .map_err(|e| format!("cannot connect to Redis: {}", redis_kind(&e)))
            })
            .await
            .cloned()
    }

    fn key(&self, period: &str, channel: &str) -> String {
        format!("{}:au:{period}:{channel}", self.prefix)
    }

    pub async fn add(&self, seen: &[Seen]) -> Result<(), String> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in seen {
            for (p, c) in keys(s) {
                by_key
                    .entry(self.key(&p, &c))
                    .or_default()
                    .push(format!("{:016x}", s.user));
            }
        }
        let mut pipe = redis::pipe();
        for (key, users) in &by_key {
            pipe.cmd("PFADD").arg(key).arg(users).ignore();
            let ttl = if key.contains(":au:d:") { 400 } else { 800 } * 86_400;
            pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("Redis PFADD: {}", redis_kind(&e)))
    }

    pub async fn counts(&self, period: &str) -> Result<Counts, String> {
        let mut conn = self.conn().await?;
        let mut out = Counts::new();
        for c in CHANNELS.iter().chain([&TOTAL]) {
            let n: u64 = redis::cmd("PFCOUNT")
                .arg(self.key(period, c))
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("Redis PFCOUNT: {}", redis_kind(&e)))?;
            if n > 0 {
                out.insert(c.to_string(), n);
            }
        }
        Ok(out)
    }
}

/// The error's category only: a Redis error's text may quote the URL.
fn redis_kind(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}
