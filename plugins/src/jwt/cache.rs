//! The verified-token cache of `jwt-auth`: a client that reuses its token does not pay for the
//! signature again.
//!
//! Why it looks like this: the request path takes no lock. Each worker thread keeps its own cache
//! (`thread_local!`), so a hit is a hash, a map probe and a byte comparison. Entries are keyed by
//! (plugin instance id, 64-bit keyed hash of the token) and hold the full token bytes, which are
//! compared on every hit, so a hash collision can only cost a miss, never admit a token.
//!
//! Every plugin instance gets a fresh id and a fresh random hash key. A new config snapshot builds
//! new instances, so new keys or revocations never meet an entry verified under the old ones: that
//! is how the cache is "cleared when keys change". Shards of dropped instances are swept from a
//! thread the next time it meets a new instance.
//!
//! Bound and eviction: each thread holds at most `capacity` entries per instance. When full, the
//! oldest inserted entry is evicted (FIFO). Tokens are short-lived and issued in time order, so the
//! oldest entry is the one most likely to have expired already; expired entries are not removed
//! early, they are refused on a hit (the caller re-checks `exp`/`nbf`) and age out in order.
//!
//! What it may not do: decide anything. The caller checks time and revocation on every hit.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::contract::Identity;

/// What a successful verification left behind.
#[derive(Debug, Clone)]
pub struct Entry {
    token: Box<[u8]>,
    pub identity: Identity,
    pub exp: u64,
    pub nbf: Option<u64>,
    /// The key set generation it was verified under (0: inline keys, which never change
    /// within an instance).
    pub generation: u64,
}

/// One plugin instance's handle on the per-thread caches.
#[derive(Debug)]
pub struct TokenCache {
    id: u64,
    capacity: usize,
    hasher: RandomState,
    /// Shards hold a `Weak` of this; when the instance is dropped they can be swept.
    alive: Arc<()>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl TokenCache {
    /// A cache for a new plugin instance; `capacity` 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity,
            hasher: RandomState::new(),
            alive: Arc::new(()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The keyed 64-bit hash of a token (SipHash with this instance's random key).
    pub fn hash(&self, token: &[u8]) -> u64 {
        self.hasher.hash_one(token)
    }

    /// Runs `f` on the entry for exactly this token, if this thread has one.
    pub fn lookup<R>(&self, hash: u64, token: &[u8], f: impl FnOnce(&Entry) -> R) -> Option<R> {
        if !self.enabled() {
            return None;
        }
        SHARDS
            .try_with(|shards| {
                let shards = shards.try_borrow().ok()?;
                let entry = shards.get(&self.id)?.map.get(&hash)?;
                same_bytes(&entry.token, token).then(|| f(entry))
            })
            .ok()
            .flatten()
    }

    /// Remembers a verified token on this thread, evicting the oldest entry when full.
    pub fn insert(
        &self,
        hash: u64,
        token: &[u8],
        identity: Identity,
        exp: u64,
        nbf: Option<u64>,
        generation: u64,
    ) {
        if !self.enabled() {
            return;
        }
        let entry = Entry {
            token: token.into(),
            identity,
            exp,
            nbf,
            generation,
        };
        let _ = SHARDS.try_with(|shards| {
            let Ok(mut shards) = shards.try_borrow_mut() else {
                return;
            };
            if !shards.contains_key(&self.id) {
                shards.retain(|_, shard| shard.alive.strong_count() > 0);
                shards.insert(
                    self.id,
                    Shard {
                        alive: Arc::downgrade(&self.alive),
                        map: HashMap::default(),
                        order: VecDeque::new(),
                    },
                );
            }
            let Some(shard) = shards.get_mut(&self.id) else {
                return;
            };
            shard.insert(self.capacity, hash, entry);
        });
    }

    /// Entries this thread holds for this instance.
    #[cfg(test)]
    pub fn len_on_this_thread(&self) -> usize {
        SHARDS.with(|s| s.borrow().get(&self.id).map_or(0, |sh| sh.map.len()))
    }

    /// Instances this thread holds shards for.
    #[cfg(test)]
    pub fn shards_on_this_thread() -> usize {
        SHARDS.with(|s| s.borrow().len())
    }
}

/// Keys are already keyed SipHash outputs: hash them again for nothing.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Shard {
    alive: Weak<()>,
    map: HashMap<u64, Entry, BuildHasherDefault<PassThrough>>,
    /// Insertion order of the keys in `map` (each key exactly once).
    order: VecDeque<u64>,
}

impl Shard {
    fn insert(&mut self, capacity: usize, hash: u64, entry: Entry) {
        if let Some(slot) = self.map.get_mut(&hash) {
            // Same hash: the same token re-verified, or a collision; the newer one wins the slot.
            *slot = entry;
            return;
        }
        while self.map.len() >= capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.map.insert(hash, entry);
        self.order.push_back(hash);
    }
}

thread_local! {
    static SHARDS: RefCell<HashMap<u64, Shard>> = RefCell::new(HashMap::new());
}

/// Equality without an early exit, so a hit's timing says nothing about how much of a token matched.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(n: u64) -> Identity {
        Identity {
            user: format!("u{n}"),
            channel: "wechat".into(),
            app: "wx1".into(),
            token_id: None,
            expires_at: n,
        }
    }

    #[test]
    fn a_hit_needs_the_exact_token_bytes() {
        let c = TokenCache::new(8);
        let h = c.hash(b"token-a");
        c.insert(h, b"token-a", identity(1), 1, None, 0);
        assert_eq!(c.lookup(h, b"token-a", |e| e.exp), Some(1));
        // Same hash slot, different bytes (as a collision would be): a miss.
        assert_eq!(c.lookup(h, b"token-b", |e| e.exp), None);
    }

    #[test]
    fn the_bound_holds_and_the_oldest_entry_goes_first() {
        let c = TokenCache::new(3);
        for i in 0..10u64 {
            let t = format!("t{i}");
            c.insert(c.hash(t.as_bytes()), t.as_bytes(), identity(i), i, None, 0);
            assert!(c.len_on_this_thread() <= 3);
        }
        assert_eq!(c.len_on_this_thread(), 3);
        assert!(c.lookup(c.hash(b"t0"), b"t0", |_| ()).is_none());
        assert!(c.lookup(c.hash(b"t9"), b"t9", |_| ()).is_some());
        assert!(c.lookup(c.hash(b"t7"), b"t7", |_| ()).is_some());
    }

    #[test]
    fn instances_do_not_share_entries_and_dropped_ones_are_swept() {
        let a = TokenCache::new(4);
        a.insert(a.hash(b"t"), b"t", identity(1), 1, None, 0);
        let b = TokenCache::new(4);
        assert!(b.lookup(b.hash(b"t"), b"t", |_| ()).is_none());
        assert_eq!(TokenCache::shards_on_this_thread(), 1);
        drop(a);
        b.insert(b.hash(b"t"), b"t", identity(1), 1, None, 0);
        assert_eq!(
            TokenCache::shards_on_this_thread(),
            1,
            "a's shard was swept"
        );
    }

    #[test]
    fn capacity_zero_disables_the_cache() {
        let c = TokenCache::new(0);
        c.insert(c.hash(b"t"), b"t", identity(1), 1, None, 0);
        assert!(c.lookup(c.hash(b"t"), b"t", |_| ()).is_none());
        assert_eq!(c.len_on_this_thread(), 0);
    }
}
