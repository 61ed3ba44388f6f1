//! The GCRA store: lock-free, fixed-size, O(1) rate-limit state shared by every `rate-limit`
//! plugin instance of the process.
//!
//! Why it exists: plugin instances are rebuilt on every config reload, but counters must survive
//! reloads, and a city-scale gateway sees millions of distinct keys (users, IPs) a day. This store
//! keeps one 64-bit word per key in a table whose size is fixed when the store is made, so memory
//! stays flat whatever the key churn, and a check is a handful of atomic loads and one
//! compare-exchange — no lock, no allocation, no I/O.
//!
//! Why not `governor`: its keyed limiter keeps a map entry per key that grows with key churn
//! until pruned, and takes a shard lock to insert; this store is fixed-size and lock-free.
//!
//! What it may not do: grow, block, or read the wall clock (time comes from a monotonic [`Clock`],
//! which tests replace with a [`ManualClock`]).
//!
//! # Algorithm
//!
//! GCRA (generic cell rate algorithm, the "virtual scheduling" form): each key has a theoretical
//! arrival time (TAT). With emission interval `T = per / rate` and tolerance `τ = burst · T`, a
//! request at `now` conforms when `max(TAT, now) − now ≤ τ`; it then sets
//! `TAT = max(TAT, now) + T`. So `burst + 1` requests pass at once and then one every `T`.
//!
//! # Layout and trade-offs
//!
//! The table is a power-of-two number of `AtomicU64` entries grouped in sets of [`WAYS`] (4)
//! consecutive entries (32 bytes; the table is aligned so that two sets share a cache line and
//! none straddles two). The low bits of a key's
//! 64-bit hash choose the set; its top [`TAG_BITS`] (16) bits are the entry's tag; the low
//! [`TIME_BITS`] (48) bits of an entry hold the TAT in microseconds since the store's clock started.
//!
//! - **Tag collisions.** Two live keys that land in the same set with the same tag share one
//!   bucket: for one key, the chance is about `WAYS · 2⁻¹⁶` ≈ 1 in 16 000 while its set is full of
//!   other live keys (only ever *stricter* for the two keys, never looser).
//! - **Eviction.** A key with no entry takes the entry of its set with the oldest TAT: an expired
//!   entry (TAT in the past — semantically identical to "no entry") if there is one, else the
//!   live entry closest to expiry. So idle keys are evicted naturally, and a busy key is only
//!   evicted — its bucket reset to full — when four keys newer than it hash into its set before it
//!   comes back: this needs a live key population well above the table size (extreme churn).
//! - **Races.** Two threads inserting the same new key at the same instant may create two entries
//!   for it in one set; the later one is found first by nobody and ages out. Between the two
//!   entries the key is allowed at most one extra burst once.
//! - **Clock wrap.** 48 bits of microseconds is 8.9 years. Arithmetic wraps; a TAT more than
//!   [`MAX_WINDOW_US`] ahead of `now` can only be an entry idle for ~8.9 years and is treated as
//!   expired.
//!
//! Memory: `capacity × 8` bytes plus 64 bytes of alignment padding (8 MiB for the default 2²⁰
//! entries), allocated once.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries per set.
pub const WAYS: usize = 4;
/// Bits of an entry holding the TAT (microseconds, wrapping).
pub const TIME_BITS: u32 = 48;
/// Bits of an entry holding the key's tag.
pub const TAG_BITS: u32 = 64 - TIME_BITS;
/// Default number of entries: 2²⁰ (8 MiB).
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// The longest window a [`Quota`] may have: `(burst + 1) · T` ≤ 2⁴⁰ µs (about 12.7 days).
pub const MAX_WINDOW_US: u64 = 1 << 40;

const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const CACHE_LINE: usize = 64;
/// Extra entries so that the table can start on a cache-line boundary.
const PAD_ENTRIES: usize = CACHE_LINE / std::mem::size_of::<AtomicU64>();

/// Where the store's time comes from. Microseconds since the clock was made.
#[derive(Clone, Debug)]
pub enum Clock {
    /// `Instant`-based: monotonic, unaffected by wall-clock changes.
    Monotonic(Instant),
    /// Moved by hand (tests, benchmarks).
    Manual(ManualClock),
}

impl Clock {
    pub fn monotonic() -> Self {
        Clock::Monotonic(Instant::now())
    }

    pub fn now_us(&self) -> u64 {
        match self {
            Clock::Monotonic(start) => {
                u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
            }
            Clock::Manual(m) => m.now_us(),
        }
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at 0 µs.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn advance(&self, by: Duration) {
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.0.fetch_add(us, Ordering::Relaxed);
    }
}

impl From<ManualClock> for Clock {
    fn from(m: ManualClock) -> Self {
        Clock::Manual(m)
    }
}

/// One limit's parameters: `rate` requests per `per`, plus `burst` extra at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    interval_us: u64,
    tau_us: u64,
    limit: u32,
}

/// Why a [`Quota`] cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("must be greater than 0")]
    ZeroRate,
    #[error("must be greater than 0")]
    ZeroPeriod,
    #[error("more than one request per microsecond cannot be limited; use a longer `per` or a lower `rate`")]
    TooFast,
    #[error("(burst + 1) × per / rate must not exceed 12 days")]
    WindowTooLong,
}

impl Quota {
    /// `rate` requests per `per`, and up to `burst` requests beyond one at once.
    pub fn new(rate: u32, per: Duration, burst: u32) -> Result<Self, QuotaError> {
        if rate == 0 {
            return Err(QuotaError::ZeroRate);
        }
        let per_us = u64::try_from(per.as_micros()).map_err(|_| QuotaError::WindowTooLong)?;
        if per_us == 0 {
            return Err(QuotaError::ZeroPeriod);
        }
        let rate = u64::from(rate);
        if per_us < rate {
            return Err(QuotaError::TooFast);
        }
        // Round to the nearest microsecond: the error is below 1 µs per request.
        let interval_us = (per_us + rate / 2) / rate;
        let tau_us = interval_us
            .checked_mul(u64::from(burst))
            .ok_or(QuotaError::WindowTooLong)?;
        if tau_us.saturating_add(interval_us) > MAX_WINDOW_US {
            return Err(QuotaError::WindowTooLong);
        }
        Ok(Self {
            interval_us,
            tau_us,
            limit: burst.saturating_add(1),
        })
    }

    /// The emission interval `T`, in microseconds.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// Requests that pass at once from a full bucket: `burst + 1`.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The tolerance `τ = burst · T`, in microseconds.
    pub fn tau_us(&self) -> u64 {
        self.tau_us
    }

    /// The decision for a key whose TAT is `ahead` µs after now (0 if in the past). Also used
    /// by the Redis store, whose script reports `ahead` for each bucket.
    pub fn decide(&self, ahead: u64) -> Decision {
        if ahead > self.tau_us {
            return Decision {
                allowed: false,
                limit: self.limit,
                remaining: 0,
                reset_us: ahead,
                retry_after_us: ahead - self.tau_us,
            };
        }
        let new = ahead + self.interval_us;
        let remaining = if new > self.tau_us {
            0
        } else {
            (self.tau_us - new) / self.interval_us + 1
        };
        Decision {
            allowed: true,
            limit: self.limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_us: new,
            retry_after_us: 0,
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `burst + 1`: requests a full bucket lets through at once.
    pub limit: u32,
    /// Requests that would pass right now (after this one, if it was allowed).
    pub remaining: u32,
    /// Time until the bucket is full again, in microseconds.
    pub reset_us: u64,
    /// When denied: time until a request would pass, in microseconds (0 when allowed).
    pub retry_after_us: u64,
}

impl Decision {
    /// [`Self::reset_us`] in whole seconds, rounded up.
    pub fn reset_secs(&self) -> u64 {
        self.reset_us.div_ceil(1_000_000)
    }

    /// [`Self::retry_after_us`] in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_us.div_ceil(1_000_000).max(1)
    }
}

/// The fixed-size GCRA table. See the module docs for layout and trade-offs.
pub struct GcraStore {
    /// `capacity` entries from `base`, plus up to one cache line of padding before them.
    slots: Box<[AtomicU64]>,
    /// First entry of set 0: chosen so that no set straddles two cache lines.
    base: usize,
    set_mask: u64,
    clock: Clock,
    hasher: ahash::RandomState,
}

impl fmt::Debug for GcraStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcraStore")
            .field("capacity", &self.capacity())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Default for GcraStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl GcraStore {
    /// A store of `capacity` entries (rounded up to a power of two, at least [`WAYS`]) on the
    /// monotonic clock.
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, Clock::monotonic())
    }

    pub fn with_clock(capacity: usize, clock: Clock) -> Self {
        let capacity = capacity.max(WAYS).next_power_of_two();
        let slots: Box<[AtomicU64]> = (0..capacity + PAD_ENTRIES)
            .map(|_| AtomicU64::new(0))
            .collect();
        // Align set 0 (and so every set: 32 bytes each) to a cache line.
        let misalign = (slots.as_ptr() as usize) % CACHE_LINE;
        let base = ((CACHE_LINE - misalign) % CACHE_LINE) / std::mem::size_of::<AtomicU64>();
        Self {
            set_mask: (capacity / WAYS) as u64 - 1,
            base,
            slots,
            clock,
            hasher: ahash::RandomState::new(),
        }
    }

    /// Number of entries (fixed for the store's life).
    pub fn capacity(&self) -> usize {
        self.slots.len() - PAD_ENTRIES
    }

    /// Bytes held by the table (fixed for the store's life).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// The current time on the store's clock, in microseconds.
    pub fn now(&self) -> u64 {
        self.clock.now_us()
    }

    /// Hashes anything into a key for this store (keyed per process: not predictable from outside).
    pub fn key<K: Hash>(&self, k: K) -> u64 {
        self.hasher.hash_one(k)
    }

    /// What [`Self::acquire`] would decide, without changing anything.
    pub fn peek(&self, key: u64, quota: &Quota, now: u64) -> Decision {
        self.check(key, quota, now, false)
    }

    /// Checks one request for `key` at `now`; if allowed, records it.
    pub fn acquire(&self, key: u64, quota: &Quota, now: u64) -> Decision {
        self.check(key, quota, now, true)
    }

    /// Gives back one request recorded by [`Self::acquire`] (used when another limit denied the
    /// request after this one had allowed it). Best effort: a no-op if the entry is gone.
    pub fn refund(&self, key: u64, quota: &Quota, now: u64) {
        let now = now & TIME_MASK;
        let tag = key >> TIME_BITS;
        let set = self.set(key);
        'retry: loop {
            for slot in set {
                let v = slot.load(Ordering::Relaxed);
                if v >> TIME_BITS != tag {
                    continue;
                }
                let ahead = ahead_of(v, now);
                if ahead <= 0 {
                    return;
                }
                let back = (ahead as u64).saturating_sub(quota.interval_us);
                let new = (tag << TIME_BITS) | (now.wrapping_add(back) & TIME_MASK);
                if slot
                    .compare_exchange_weak(v, new, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue 'retry;
            }
            return;
        }
    }

    /// Entries whose TAT is still ahead of `now` (O(capacity); for tests and diagnostics).
    pub fn live_entries(&self, now: u64) -> usize {
        let now = now & TIME_MASK;
        self.slots[self.base..self.base + self.capacity()]
            .iter()
            .filter(|s| ahead_of(s.load(Ordering::Relaxed), now) > 0)
            .count()
    }

    fn set(&self, key: u64) -> &[AtomicU64] {
        let start = self.base + ((key & self.set_mask) as usize) * WAYS;
        &self.slots[start..start + WAYS]
    }

    fn check(&self, key: u64, quota: &Quota, now: u64, commit: bool) -> Decision {
        // Relaxed is enough: each entry is the whole state of its key, and nothing else is
        // published through it.
        let now = now & TIME_MASK;
        let tag = key >> TIME_BITS;
        let set = self.set(key);
        loop {
            let mut found = None;
            // (way, value, age score): the lowest score is the oldest TAT.
            let mut victim = (0, 0, i64::MAX);
            for (i, slot) in set.iter().enumerate() {
                let v = slot.load(Ordering::Relaxed);
                if v >> TIME_BITS == tag {
                    found = Some((i, v));
                    break;
                }
                let score = ahead_of(v, now);
                if score < victim.2 {
                    victim = (i, v, score);
                }
            }
            let (way, old, ahead) = match found {
                Some((i, v)) => (i, v, ahead_of(v, now).max(0) as u64),
                None => (victim.0, victim.1, 0),
            };
            let d = quota.decide(ahead);
            if !d.allowed || !commit {
                return d;
            }
            let tat = now.wrapping_add(ahead + quota.interval_us) & TIME_MASK;
            let new = (tag << TIME_BITS) | tat;
            if set[way]
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return d;
            }
        }
    }
}

/// How far the entry's TAT is ahead of `now`, in µs: negative when in the past. A TAT that looks
/// more than [`MAX_WINDOW_US`] ahead can only be a wrapped, ancient entry: it counts as oldest.
fn ahead_of(entry: u64, now: u64) -> i64 {
    let d = (entry & TIME_MASK).wrapping_sub(now) & TIME_MASK;
    // Sign-extend the 48-bit difference.
    let signed = ((d << TAG_BITS) as i64) >> TAG_BITS;
    if signed > MAX_WINDOW_US as i64 {
        i64::MIN
    } else {
        signed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn quota(rate: u32, per_secs: u64, burst: u32) -> Quota {
        Quota::new(rate, Duration::from_secs(per_secs), burst).unwrap()
    }

    #[test]
    fn burst_then_steady_rate() {
        let store = GcraStore::new(1024);
        let q = quota(10, 1, 4); // T = 100 ms, 5 at once
        let k = store.key("k");
        for i in 0..5 {
            let d = store.acquire(k, &q, 0);
            assert!(d.allowed, "request {i} of the burst");
            assert_eq!(d.remaining, 4 - i);
        }
        assert!(!store.acquire(k, &q, 0).allowed, "burst exhausted");
        // Then one per 100 ms.
        for step in 1..=20u64 {
            let now = step * 100_000;
            assert!(store.acquire(k, &q, now).allowed, "steady request {step}");
            assert!(
                !store.acquire(k, &q, now).allowed,
                "second in the same slot {step}"
            );
        }
    }

    #[test]
    fn denied_request_reports_time_until_next_token() {
        let store = GcraStore::new(1024);
        let q = quota(1, 10, 0); // one per 10 s
        let k = store.key("k");
        assert!(store.acquire(k, &q, 0).allowed);
        let d = store.acquire(k, &q, 2 * SEC + 500_000);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, 7 * SEC + 500_000);
        assert_eq!(d.retry_after_secs(), 8);
        assert_eq!(d.reset_secs(), 8);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.limit, 1);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let q = quota(100, 1, 0); // T = 10 ms
        let store = GcraStore::new(1024);
        let k = store.key("k");
        assert!(store.acquire(k, &q, 0).allowed);
        let d = store.acquire(k, &q, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, 10_000);
        assert_eq!(d.retry_after_secs(), 1);
    }

    #[test]
    fn peek_changes_nothing() {
        let store = GcraStore::new(1024);
        let q = quota(1, 1, 0);
        let k = store.key("k");
        for _ in 0..10 {
            assert!(store.peek(k, &q, 0).allowed);
        }
        assert!(store.acquire(k, &q, 0).allowed);
        assert!(!store.peek(k, &q, 0).allowed);
    }

    #[test]
    fn refund_gives_back_one_request() {
        let store = GcraStore::new(1024);
        let q = quota(1, 1, 0);
        let k = store.key("k");
        assert!(store.acquire(k, &q, 0).allowed);
        store.refund(k, &q, 0);
        assert!(store.acquire(k, &q, 0).allowed);
        assert!(!store.acquire(k, &q, 0).allowed);
    }

    #[test]
    fn keys_are_isolated() {
        let store = GcraStore::new(1024);
        let q = quota(1, 60, 0);
        let (a, b) = (store.key("app-a"), store.key("app-b"));
        assert!(store.acquire(a, &q, 0).allowed);
        assert!(!store.acquire(a, &q, 0).allowed);
        assert!(store.acquire(b, &q, 0).allowed);
    }

    #[test]
    fn memory_is_bounded_under_two_million_distinct_keys() {
        let store = GcraStore::new(DEFAULT_CAPACITY);
        let bytes = store.memory_bytes();
        assert_eq!(
            bytes,
            (8 << 20) + 64,
            "8 MiB and one cache line of alignment padding"
        );
        let q = quota(1, 3600, 0); // every key stays live for an hour
        let n: u64 = 2_000_000;
        for i in 0..n {
            // 1 µs apart, so older keys have older TATs.
            store.acquire(store.key(i), &q, i);
        }
        let now = n;
        assert_eq!(store.capacity(), DEFAULT_CAPACITY);
        assert_eq!(store.memory_bytes(), bytes);
        assert!(store.live_entries(now) <= DEFAULT_CAPACITY);
        // The most recent keys are still limited. A recent key loses its state only when four
        // newer keys land in its set (262 144 sets of 4 here), or when it shared an older key's
        // entry by a tag collision and that entry aged out: with a random hash seed, 14 runs of
        // 5 000 lost one or two of the last 10 000 keys. So a few are allowed; evicting anything
        // but the oldest entries would lose thousands.
        let lost: Vec<u64> = (n - 10_000..n)
            .filter(|&i| store.acquire(store.key(i), &q, now).allowed)
            .collect();
        assert!(
            lost.len() <= 10,
            "{} of the 10 000 most recent keys lost their state: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        // One set of 4 ways.
        let store = GcraStore::new(WAYS);
        let long = quota(1, 3600, 0);
        let short = quota(1000, 1, 0); // T = 1 ms
        let live = store.key("live");
        assert!(store.acquire(live, &long, 0).allowed);
        // Many short-lived keys churn through the other ways.
        for i in 0..1000u64 {
            store.acquire(store.key(("churn", i)), &short, i * 2_000);
        }
        assert!(
            !store.acquire(live, &long, 2 * SEC).allowed,
            "the live key kept its entry"
        );
    }

    #[test]
    fn quota_rejects_impossible_parameters() {
        assert_eq!(
            Quota::new(0, Duration::from_secs(1), 0),
            Err(QuotaError::ZeroRate)
        );
        assert_eq!(
            Quota::new(1, Duration::ZERO, 0),
            Err(QuotaError::ZeroPeriod)
        );
        assert_eq!(
            Quota::new(2_000_000, Duration::from_secs(1), 0),
            Err(QuotaError::TooFast)
        );
        assert_eq!(
            Quota::new(1, Duration::from_secs(3600), 1000),
            Err(QuotaError::WindowTooLong)
        );
        assert_eq!(
            Quota::new(3, Duration::from_secs(1), 0)
                .unwrap()
                .interval_us(),
            333_333
        );
    }

    #[test]
    fn wrapped_clock_keeps_working() {
        let store = GcraStore::new(1024);
        let q = quota(1, 1, 0);
        let k = store.key("k");
        let near_wrap = TIME_MASK - 100;
        assert!(store.acquire(k, &q, near_wrap).allowed);
        // 0.5 s later the clock has wrapped past 2^48.
        assert!(!store.acquire(k, &q, near_wrap + 500_000).allowed);
        assert!(store.acquire(k, &q, near_wrap + SEC).allowed);
    }

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let m = ManualClock::new();
        let store = GcraStore::with_clock(16, m.clone().into());
        assert_eq!(store.now(), 0);
        m.advance(Duration::from_millis(1500));
        assert_eq!(store.now(), 1_500_000);
    }
}
