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
    /// Held while sketches are being saved, and while counting: a sketch taken out of memory
    /// for saving is not in the database yet, and must not be missed by a count.
    saving: tokio::sync::Mutex<()>,
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
        let _saving = self.saving.lock().await;
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
        let _saving = self.saving.lock().await;
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

/// Merges `sketch` into the saved one. Another process may save the same sketch at the same
/// time: the write only lands if the saved text is still the one read (compare and swap), else
/// it reads again.
async fn save_one(
    pool: &sqlx::AnyPool,
    period: &str,
    channel: &str,
    sketch: &Sketch,
    now: i64,
) -> Result<(), String> {
    for _ in 0..10 {
        let row = sqlx::query(
            "SELECT sketch FROM active_user_sketches WHERE period = $1 AND channel = $2",
        )
        .bind(period)
        .bind(channel)
        .fetch_optional(pool)
        .await
        .map_err(|e| e.to_string())?;
        let old: Option<String> = row
            .map(|r| r.try_get("sketch"))
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut merged = match &old {
            Some(text) => serde_json::from_str::<Sketch>(text)
                .map_err(|e| format!("active-user sketch {period}/{channel}: {e}"))?,
            None => new_sketch(),
        };
        merged
            .merge(sketch)
            .map_err(|e| format!("merging sketches: {e}"))?;
        let text = serde_json::to_string(&merged).map_err(|e| e.to_string())?;
        let done = match &old {
            None => sqlx::query(
                "INSERT INTO active_user_sketches (period, channel, sketch, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (period, channel) DO NOTHING",
            )
            .bind(period)
            .bind(channel)
            .bind(&text)
            .bind(now)
            .execute(pool)
            .await,
            Some(old) => sqlx::query(
                "UPDATE active_user_sketches SET sketch = $1, updated_at = $2 \
                 WHERE period = $3 AND channel = $4 AND sketch = $5",
            )
            .bind(&text)
            .bind(now)
            .bind(period)
            .bind(channel)
            .bind(old)
            .execute(pool)
            .await,
        }
        .map_err(|e| e.to_string())?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
    }
    Err(format!(
        "active-user sketch {period}/{channel}: changed by another process ten times in a row"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(from: u64, to: u64) -> Sketch {
        let mut s = new_sketch();
        for i in from..to {
            s.insert(&super::super::user_digest(&format!("u{i}")));
        }
        s
    }

    #[test]
    fn merged_and_saved_sketches_count_the_union() {
        let mut a = filled(0, 200_000);
        let a_count = a.count();
        let text = serde_json::to_string(&a).unwrap();
        let mut back: Sketch = serde_json::from_str(&text).unwrap();
        assert!(
            (back.count() - a_count).abs() < 1.0,
            "{} vs {a_count}",
            back.count()
        );
        let b = filled(200_000, 400_000);
        back.merge(&b).unwrap();
        let n = back.count();
        assert!((n - 400_000.0).abs() < 8_000.0, "{n}");
        let mut fresh = new_sketch();
        fresh.merge(&back).unwrap();
        let m = fresh.count();
        assert!((m - 400_000.0).abs() < 8_000.0, "{m}");
    }
}
