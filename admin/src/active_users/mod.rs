//! Active users per channel (日活 / 月活): how many distinct identities called through each
//! channel (`wechat`, `alipay`, `baidu`) and in total, per local day and per local month
//! (Asia/Shanghai), counted with HyperLogLog.
//!
//! Where the identities come from: the `user` (and `channel`) of each request audit record the
//! gateways ship (`crate::dataplane::ingest`). The gateways already write and ship those records
//! in batches off the request path, so counting adds nothing to a request: no lock, allocation
//! or system call on the proxy thread. Ingest hands the new records to [`ActiveUsers::feed`],
//! which never waits (a full queue drops the batch for counting only, counted and logged); one
//! task adds them to the sketches.
//!
//! Two stores, one interface ([`sketch::Sketches`] and [`redis_store::RedisCounts`]):
//! - with a Redis (`serve --redis`): `PFADD`/`PFCOUNT` on keys shared by every control-plane
//!   process, so a cluster counts each user once;
//! - without: HyperLogLog++ sketches in this process (precision 14, ±0.81% standard error, the
//!   same as Redis), saved to the database every few seconds and on demand, so a restart loses
//!   at most the last seconds.
//!
//! A user id is never stored: each is reduced to 64 bits of its SHA-256 first.
//!
//! What it may not do: block ingest, or keep a user id in clear.

pub mod api;
pub mod redis_store;
pub mod sketch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::app::App;

/// Batches waiting to be counted before new ones are dropped (for counting only).
pub const QUEUE_BATCHES: usize = 256;
/// How often in-process sketches that changed are saved to the database.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);
/// The total over all channels.
pub const TOTAL: &str = "all";
/// The channels reported, besides [`TOTAL`].
pub const CHANNELS: [&str; 3] = ["wechat", "alipay", "baidu"];

/// One sighting: when (unix seconds), through which channel, and the user's 64-bit digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub at: i64,
    pub channel: Option<String>,
    pub user: u64,
}

impl Seen {
    /// From a request audit record: `None` without a user or a readable time.
    pub fn from_record(r: &Value) -> Option<Seen> {
        let user = r.get("user")?.as_str().filter(|u| !u.is_empty())?;
        let at = crate::local_time::parse_record_time(r.get("time")?.as_str()?)?;
        let channel = r
            .get("channel")
            .and_then(Value::as_str)
            .filter(|c| CHANNELS.contains(c))
            .map(str::to_string);
        Some(Seen {
            at,
            channel,
            user: user_digest(user),
        })
    }
}

/// The first 64 bits of SHA-256 of a user id: what the sketches see instead of the id.
pub fn user_digest(user: &str) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, user.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// The periods and channels one sighting counts in: its day and month, its channel and the
/// total.
pub fn keys(s: &Seen) -> Vec<(String, String)> {
    let periods = [
        format!("d:{}", crate::local_time::day(s.at)),
        format!("m:{}", crate::local_time::month(s.at)),
    ];
    let mut out = Vec::with_capacity(4);
    for p in periods {
        if let Some(c) = &s.channel {
            out.push((p.clone(), c.clone()));
        }
        out.push((p, TOTAL.to_string()));
    }
    out
}

/// Estimated distinct users per channel (and [`TOTAL`]) for one period.
pub type Counts = BTreeMap<String, u64>;

/// Where the counts live.
pub enum Counter {
    Memory(sketch::Sketches),
    Redis(Box<redis_store::RedisCounts>),
}

impl Counter {
    pub async fn add(&self, seen: &[Seen]) -> Result<(), String> {
        match self {
            Counter::Memory(m) => {
                m.add(seen);
                Ok(())
            }
            Counter::Redis(r) => r.add(seen).await,
        }
    }

    /// `period`: `d:YYYY-MM-DD` or `m:YYYY-MM`.
    pub async fn counts(&self, pool: &sqlx::AnyPool, period: &str) -> Result<Counts, String> {
        match self {
            Counter::Memory(m) => m.counts(pool, period).await,
            Counter::Redis(r) => r.counts(period).await,
        }
    }

    /// Saves changed in-process sketches (nothing to do with Redis).
    pub async fn save(&self, pool: &sqlx::AnyPool, now: i64) -> Result<(), String> {
        match self {
            Counter::Memory(m) => m.save(pool, now).await,
            Counter::Redis(_) => Ok(()),
        }
    }
}

/// Part of [`App`]: the queue ingest feeds, and the counter.
pub struct ActiveUsers {
    tx: mpsc::Sender<Vec<Seen>>,
    pub counter: Arc<Counter>,
    dropped: AtomicU64,
}

impl ActiveUsers {
    pub fn new(counter: Counter) -> (ActiveUsers, mpsc::Receiver<Vec<Seen>>) {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        (
            ActiveUsers {
                tx,
                counter: Arc::new(counter),
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Hands the identities of newly stored records to the counting task, without waiting.
    pub fn feed(&self, records: &[Value]) {
        let seen: Vec<Seen> = records.iter().filter_map(Seen::from_record).collect();
        if seen.is_empty() {
            return;
        }
        if self.tx.try_send(seen).is_err() {
            let n = self.dropped.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped_batches = n,
                    "active-user counting is behind; a batch was stored but not counted"
                );
            }
        }
    }
}

/// Starts the counting task (and, for in-process sketches, the saving loop); both end with the
/// app.
pub fn start(app: &Arc<App>, rx: mpsc::Receiver<Vec<Seen>>) {
    tokio::spawn(run(
        Arc::downgrade(app),
        app.active_users.counter.clone(),
        rx,
    ));
    if matches!(*app.active_users.counter, Counter::Memory(_)) {
        tokio::spawn(save_loop(Arc::downgrade(app)));
    }
}

async fn run(app: Weak<App>, counter: Arc<Counter>, mut rx: mpsc::Receiver<Vec<Seen>>) {
    while let Some(batch) = rx.recv().await {
        if app.strong_count() == 0 {
            return;
        }
        if let Err(e) = counter.add(&batch).await {
            tracing::warn!(error = %e, records = batch.len(), "cannot count active users");
        }
    }
}

async fn save_loop(app: Weak<App>) {
    loop {
        tokio::time::sleep(SAVE_EVERY).await;
        let Some(app) = app.upgrade() else {
            return;
        };
        if let Err(e) = app
            .active_users
            .counter
            .save(&app.store.pool, app.now())
            .await
        {
            tracing::warn!(error = %e, "cannot save the active-user sketches");
        }
    }
}
