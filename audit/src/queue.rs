//! The bounded hand-off between the proxy and the audit writer.
//!
//! Each proxy thread writes its records straight into its own *lane*: a byte buffer that only
//! that thread and the writer ever lock. Every [`super::writer::POLL`] the writer swaps each
//! lane's buffer for an empty one and writes out what it took. So a record costs the proxy one
//! relaxed atomic update (the bound), one lock nobody else is holding (the writer takes it for a
//! swap once per poll), and the encoding itself, done in place: no allocation, no channel slot,
//! no memory handed from one thread to another to be freed there. In a lane a record is framed
//! as its length (4 bytes, little-endian) followed by its JSON.
//!
//! The proxy never waits here: a record either fits under the bound (`queue_capacity` records
//! waiting for the writer) or is dropped and counted (`fenfa_audit_records_dropped_total`, plus
//! a warning at most once a second). In strict mode the request phase reserves a place first
//! ([`Queue::admit`]); when there is none the gateway answers 503 `audit_unavailable` instead of
//! serving a request it could not record. A reserved place is always there when the log phase
//! comes, so in strict mode no request that reached an upstream goes unrecorded for lack of room.
//!
//! `queued` (the `fenfa_audit_queue_depth` gauge) counts records waiting in lanes plus reserved
//! places; the writer takes a batch's records off it once they are written.
//!
//! At shutdown the writer's last drain also closes every lane (and the list of lanes), under
//! their locks: a record that comes later is counted as dropped, never left unwritten unseen.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::counters::AuditCounters;

/// Bytes in front of each record in a lane: its length.
const FRAME: usize = 4;
/// A drained lane buffer larger than this is freed rather than kept for reuse (a burst, or a
/// writer that was stalled, should not pin its memory for good).
const KEEP_AT_MOST: usize = 4 << 20;

/// Tells queues apart in the threads' lane lists (tests run several in one process).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's lane in each queue it has recorded into: (queue id, lane).
    static LANES: RefCell<Vec<(u64, Arc<Lane>)>> = const { RefCell::new(Vec::new()) };
}

pub struct Queue {
    id: u64,
    capacity: u64,
    strict: bool,
    counters: Arc<AuditCounters>,
    lanes: Mutex<Lanes>,
    /// A shutdown request: the writer answers on it once everything is written and sealed.
    stop: Mutex<Option<Sender<()>>>,
    /// Milliseconds since the epoch of the last "queue full" warning.
    last_warned: AtomicU64,
    /// Drops not yet reported in a warning.
    unreported: AtomicU64,
}

#[derive(Default)]
struct Lanes {
    all: Vec<Arc<Lane>>,
    closed: bool,
}

/// One thread's records, waiting for the writer.
#[derive(Default)]
struct Lane(Mutex<Pending>);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    records: u64,
    closed: bool,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing is left half-done under this lock (see [`Frame`]), so a poisoned one is usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A record being written into a lane. Should the encoder panic, dropping the unfinished frame
/// takes its bytes back out and counts the record as dropped, so the lane stays readable.
struct Frame<'a> {
    queue: &'a Queue,
    p: MutexGuard<'a, Pending>,
    start: usize,
    done: bool,
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.p.bytes.truncate(self.start);
            self.queue.counters.queued.fetch_sub(1, Relaxed);
            self.queue.dropped(1);
        }
    }
}

/// What one drain took from one lane: framed records (read them with [`records`]).
pub struct Batch {
    pub bytes: Vec<u8>,
    pub records: u64,
}

/// A place reserved in the queue (strict mode). Dropping it unused gives the place back.
#[must_use]
pub struct Slot {
    queue: Option<Arc<Queue>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            q.counters.queued.fetch_sub(1, Relaxed);
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit::Slot")
    }
}

impl Queue {
    /// A queue for `capacity` records.
    pub fn new(capacity: usize, strict: bool, counters: Arc<AuditCounters>) -> Arc<Self> {
        counters.queued.store(0, Relaxed);
        Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Relaxed),
            capacity: capacity.max(1) as u64,
            strict,
            counters,
            lanes: Mutex::default(),
            stop: Mutex::default(),
            last_warned: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        })
    }

    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Takes one place if there is one.
    fn take_place(&self) -> bool {
        self.counters
            .queued
            .fetch_update(Relaxed, Relaxed, |n| (n < self.capacity).then_some(n + 1))
            .is_ok()
    }

    /// Strict mode: reserves a place for this request's record, or `None` when the queue is
    /// full (the caller answers 503). Not strict: `Some` of an empty slot, always.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        if !self.strict {
            return Some(Slot { queue: None });
        }
        if self.take_place() {
            Some(Slot {
                queue: Some(self.clone()),
            })
        } else {
            self.counters.rejected.fetch_add(1, Relaxed);
            None
        }
    }

    /// Queues one record, which `encode` appends to the buffer it is given (one JSON object, no
    /// newline). Uses the place `slot` reserved, or takes a free one; with none, or once the
    /// writer has stopped, the record is dropped and counted. Never waits for the writer's
    /// work: the only lock is this thread's lane, which the writer holds just long enough to
    /// swap a buffer (and, on a thread's first record, the list of lanes).
    pub fn push(&self, slot: Option<Slot>, encode: impl FnOnce(&mut Vec<u8>)) {
        if !self.reserve(slot) {
            return;
        }
        let written = self.with_lane(|lane| {
            let p = lane.lock();
            if p.closed {
                return false;
            }
            let start = p.bytes.len();
            let mut frame = Frame {
                queue: self,
                p,
                start,
                done: false,
            };
            frame.p.bytes.extend_from_slice(&[0; FRAME]);
            encode(&mut frame.p.bytes);
            let len = (frame.p.bytes.len() - start - FRAME) as u32;
            frame.p.bytes[start..start + FRAME].copy_from_slice(&len.to_le_bytes());
            frame.p.records += 1;
            frame.done = true;
            true
        });
        if !written {
            self.counters.queued.fetch_sub(1, Relaxed);
            self.dropped(1);
        }
    }

    /// Whether a record can be queued now (a reserved slot, or free room).
    fn reserve(&self, slot: Option<Slot>) -> bool {
        match slot {
            Some(mut s) if s.queue.is_some() => {
                // Keep the place: the record will fill it.
                s.queue = None;
                true
            }
            _ => {
                self.take_place() || {
                    self.dropped(1);
                    false
                }
            }
        }
    }

    /// Runs `f` on this thread's lane, making one on first use.
    fn with_lane<R>(&self, f: impl FnOnce(&Lane) -> R) -> R {
        LANES.with(|mine| {
            let mut mine = mine.borrow_mut();
            let at = match mine.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    // Forget lanes of queues that are gone (only this thread still holds them).
                    mine.retain(|(_, lane)| Arc::strong_count(lane) > 1);
                    mine.push((self.id, self.new_lane()));
                    mine.len() - 1
                }
            };
            f(&mine[at].1)
        })
    }

    fn new_lane(&self) -> Arc<Lane> {
        let lane = Arc::new(Lane::default());
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lane.lock().closed = lanes.closed;
        lanes.all.push(lane.clone());
        lane
    }

    /// Writer: takes what every lane holds, giving each an empty buffer from `spare` in
    /// exchange, and appends the non-empty batches to `out`. With `close`, also closes every
    /// lane (records pushed afterwards are dropped and counted): the last drain at shutdown.
    pub fn drain(&self, out: &mut Vec<Batch>, spare: &mut Vec<Vec<u8>>, close: bool) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.closed |= close;
        lanes.all.retain(|lane| {
            let mut p = lane.lock();
            p.closed |= close;
            if p.records > 0 {
                let bytes = std::mem::replace(&mut p.bytes, spare.pop().unwrap_or_default());
                out.push(Batch {
                    bytes,
                    records: std::mem::take(&mut p.records),
                });
            }
            // A lane only the list still holds belongs to a thread that has exited: nothing can
            // write to it again. Asked while the lane is still locked, so that a record its
            // thread pushed between the take above and its exit cannot be dropped with it.
            let alive = Arc::strong_count(lane) > 1;
            drop(p);
            alive
        });
    }

    /// Writer: `batch` is written; its records leave the queue and its buffer goes back to
    /// `spare` for the next drain.
    pub fn written(&self, batch: Batch, spare: &mut Vec<Vec<u8>>) {
        self.counters.queued.fetch_sub(batch.records, Relaxed);
        let mut bytes = batch.bytes;
        if bytes.capacity() <= KEEP_AT_MOST {
            bytes.clear();
            spare.push(bytes);
        }
    }

    /// Asks the writer to write everything, seal, and answer on `ack`.
    pub fn request_stop(&self, ack: Sender<()>) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(ack);
    }

    /// Writer: a pending shutdown request.
    pub fn stop_requested(&self) -> Option<Sender<()>> {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn dropped(&self, n: u64) {
        self.counters.dropped.fetch_add(n, Relaxed);
        self.unreported.fetch_add(n, Relaxed);
        let now = super::time::unix_ms(std::time::SystemTime::now()) as u64;
        let last = self.last_warned.load(Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_warned
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let n = self.unreported.swap(0, Relaxed);
            tracing::warn!(
                dropped = n,
                total = self.counters.dropped.load(Relaxed),
                capacity = self.capacity,
                "audit queue full or writer stopped: records dropped (see fenfa_audit_records_dropped_total; `audit.strict: true` answers 503 instead)"
            );
        }
    }
}

/// The records in a drained batch, in the order they were pushed.
pub fn records(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = bytes.split_first_chunk::<FRAME>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (record, rest) = rest.split_at(len.min(rest.len()));
        bytes = rest;
        Some(record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_all(q: &Queue, close: bool) -> Vec<Vec<u8>> {
        let (mut out, mut spare) = (Vec::new(), Vec::new());
        q.drain(&mut out, &mut spare, close);
        let mut all = Vec::new();
        for b in out {
            all.extend(records(&b.bytes).map(<[u8]>::to_vec));
            q.written(b, &mut spare);
        }
        all
    }

    fn push(q: &Queue, slot: Option<Slot>, body: &[u8]) {
        q.push(slot, |out| out.extend_from_slice(body));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let counters = Arc::new(AuditCounters::default());
        let q = Queue::new(2, false, counters.clone());
        for i in 0..5u8 {
            push(&q, q.admit(), &[b'0' + i]);
        }
        assert_eq!(counters.dropped.load(Relaxed), 3);
        assert_eq!(counters.queued.load(Relaxed), 2);
        assert_eq!(drain_all(&q, false), [b"0", b"1"]);
        assert_eq!(counters.queued.load(Relaxed), 0);
        // Room again once the writer has taken them.
        push(&q, q.admit(), b"5");
        assert_eq!(drain_all(&q, false), [b"5"]);
        assert_eq!(counters.dropped.load(Relaxed), 3);
    }

    #[test]
    fn strict_mode_refuses_admission_when_full_and_reserved_places_always_fit() {
        let counters = Arc::new(AuditCounters::default());
        let q = Queue::new(2, true, counters.clone());
        let a = q.admit().expect("room for the first");
        let b = q.admit().expect("room for the second");
        assert!(q.admit().is_none(), "third request must be refused (503)");
        assert_eq!(counters.rejected.load(Relaxed), 1);
        // A record without a reservation (the 503's own record) does not take a reserved place.
        push(&q, None, b"refused");
        push(&q, Some(a), b"served");
        drop(b); // a request that never logged gives its place back
        assert_eq!(counters.queued.load(Relaxed), 1);
        assert!(q.admit().is_some());
        assert_eq!(drain_all(&q, false), [b"served"]);
        assert_eq!(counters.dropped.load(Relaxed), 1);
    }

    #[test]
    fn every_thread_writes_its_own_lane_and_the_writer_gets_every_record_in_order_per_thread() {
        let counters = Arc::new(AuditCounters::default());
        let q = Queue::new(100_000, false, counters.clone());
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u32 {
                        push(&q, None, format!("{t}:{i}").as_bytes());
                    }
                })
            })
            .collect();
        // Drain while they write, then once more after.
        let mut got = Vec::new();
        while !threads.iter().all(|t| t.is_finished()) {
            got.extend(drain_all(&q, false));
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        got.extend(drain_all(&q, false));
        assert_eq!(got.len(), 20_000);
        let mut next = [0u32; 4];
        for r in &got {
            let s = std::str::from_utf8(r).unwrap();
            let (t, i) = s.split_once(':').unwrap();
            let (t, i): (usize, u32) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s records out of order");
            next[t] += 1;
        }
        assert_eq!(counters.queued.load(Relaxed), 0);
        assert_eq!(counters.dropped.load(Relaxed), 0);
        // The exited threads' lanes are gone from the list.
        assert!(q.lanes.lock().unwrap().all.is_empty());
    }

    #[test]
    fn after_the_last_drain_records_are_dropped_and_counted_not_left_unwritten() {
        let counters = Arc::new(AuditCounters::default());
        let q = Queue::new(10, false, counters.clone());
        push(&q, None, b"before");
        assert_eq!(drain_all(&q, true), [b"before"]);
        // This thread's lane is closed, and so is a lane another thread makes now.
        push(&q, None, b"after");
        let q2 = q.clone();
        std::thread::spawn(move || push(&q2, None, b"elsewhere"))
            .join()
            .unwrap();
        assert_eq!(counters.dropped.load(Relaxed), 2);
        assert_eq!(counters.queued.load(Relaxed), 0);
        assert!(drain_all(&q, true).is_empty());
    }

    #[test]
    fn a_record_whose_encoding_panicked_is_skipped_and_the_lane_still_works() {
        let counters = Arc::new(AuditCounters::default());
        let q = Queue::new(10, false, counters.clone());
        push(&q, None, b"one");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.push(None, |out| {
                out.extend_from_slice(b"half");
                panic!("encoder bug");
            })
        }));
        assert!(caught.is_err());
        push(&q, None, b"two");
        assert_eq!(drain_all(&q, false), [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(counters.dropped.load(Relaxed), 1);
        assert_eq!(counters.queued.load(Relaxed), 0);
    }
}
