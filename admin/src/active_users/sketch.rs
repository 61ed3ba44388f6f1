//! In-process HyperLogLog++ sketches (crate `hyperloglogplus`), one per period and channel,
//! loaded from and saved to the database (`active_user_sketches`) as JSON.
//!
//! What it may not do: lose a saved sketch (a sketch not in memory is loaded and merged before
//! it is written back), or count without the database's saved part.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{keys, Counts, Seen};

/// 2^14 registers: ±0.81% standard error, as Redis's.
pub const PRECISION: u8 = 14;

/// The values inserted are already 64-bit digests ([`super::user_digest`]): used as they are.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Digest;

#[derive(Debug, Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are inserted (`write_u64`); anything else is folded in, never dropped.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

impl BuildHasher for Digest {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

pub type Sketch = HyperLogLogPlus<u64, Digest>;

pub fn new_sketch() -> Sketch {
    // PRECISION is within the crate's 4..=18.
    HyperLogLogPlus::new(PRECISION, Digest).expect("precision 14 is valid")
}

/// A sketch and whether it still has to be merged with the saved one.
struct Entry {
    sketch: Sketch,
    dirty: bool,
}

/// The sketches in memory: only those touched since they were last saved.
#[derive(Default)]
pub struct Sketches {
    live: Mutex<HashMap<(String, String), Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sketches {
    pub fn add(&self, seen: &[Seen]) {
        let mut live = lock(&self.live);
        for s in seen {
            for key in keys(s) {
                let e = live.entry(key).or_insert_with(|| Entry {
                    sketch: new_sketch(),
                    dirty: false,
                });
                e.sketch.insert(&s.user);
                e.dirty = true;
            }
        }
    }

    /// Merges every changed sketch into its saved one and writes it back. What was in memory
    /// is dropped once saved (the database holds it).
    pub async fn save(&self, pool: &sqlx::AnyPool, now: i64) -> Result<(), String> {
        let taken: Vec<((String, String), Sketch)> = {
            let mut live = lock(&self.live);
            let keys: Vec<(String, String)> = live
                .iter()
                .filter(|(_, e)| e.dirty)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| live.remove(&k).map(|e| (k, e.sketch)))
                .collect()
        };
        for ((period, channel), sketch) in taken {
            if let Err(e) = save_one(pool, &period, &channel, &sketch, now).await {
                // Put it back: the next save tries again.
                let mut live = lock(&self.live);
                let entry = live.entry((period, channel)).or_insert_with(|| Entry {
                    sketch: new_sketch(),
                    dirty: true,
                });
                let _ = entry.sketch.merge(&sketch);
                entry.dirty = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Counts for one period: the saved sketches merged with what is in memory.
    pub async fn counts(&self, pool: &sqlx::AnyPool, period: &str) -> Result<Counts, String> {
        let mut merged: BTreeMap<String, Sketch> = BTreeMap::new();
        for (channel, sketch) in load_period(pool, period).await? {
            merged.insert(channel, sketch);
        }
        {
            let live = lock(&self.live);
            for ((p, c), e) in live.iter() {
                if p == period {
                    let m = merged.entry(c.clone()).or_insert_with(new_sketch);
                    m.merge(&e.sketch)
                        .map_err(|e| format!("merging sketches: {e}"))?;
                }
            }
        }
        let mut out = Counts::new();
        let channels: BTreeSet<String> = merged.keys().cloned().collect();
        for c in channels {
            if let Some(s) = merged.get_mut(&c) {
                out.insert(c, s.count().round() as u64);
            }
        }
        Ok(out)
    }
}

async fn load_period(pool: &sqlx::AnyPool, period: &str) -> Result<Vec<(String, Sketch)>, String> {
    let rows = sqlx::query("SELECT channel, sketch FROM active_user_sketches WHERE period = $1")
        .bind(period)
        .fetch_all(pool)
        .await
        .map_err(|e| format!("reading active-user sketches: {e}"))?;
    rows.iter()
        .map(|r| {
            let channel: String = r.try_get("channel").map_err(|e| e.to_string())?;
            let text: String = r.try_get("sketch").map_err(|e| e.to_string())?;
            let sketch: Sketch = serde_json::from_str(&text)
                .map_err(|e| format!("active-user sketch {period}/{channel}: {e}"))?;
            Ok((channel, sketch))
        })
        .collect()
}

async fn save_one(
    pool: &sqlx::AnyPool,
    period: &str,
    channel: &str,
    sketch: &Sketch,
    now: i64,
) -> Result<(), String> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let row =
        sqlx::query("SELECT sketch FROM active_user_sketches WHERE period = $1 AND channel = $2")
            .bind(period)
            .bind(channel)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    let mut merged = match row {
        Some(r) => {
            let text: String = r.try_get("sketch").map_err(|e| e.to_string())?;
            serde_json::from_str::<Sketch>(&text)
                .map_err(|e| format!("active-user sketch {period}/{channel}: {e}"))?
        }
        None => new_sketch(),
    };
    merged
        .merge(sketch)
        .map_err(|e| format!("merging sketches: {e}"))?;
    let text = serde_json::to_string(&merged).map_err(|e| e.to_string())?;
    sqlx::query(
        "INSERT INTO active_user_sketches (period, channel, sketch, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (period, channel) DO UPDATE SET sketch = excluded.sketch, updated_at = excluded.updated_at",
    )
    .bind(period)
    .bind(channel)
    .bind(text)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}
