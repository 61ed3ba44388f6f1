//! The bounded hand-off between the proxy and the audit writer.
//!
//! The proxy never waits here: a record either fits in the queue or is dropped and counted
//! (`fenfa_audit_records_dropped_total`, plus a warning at most once a second). In strict mode the
//! request phase reserves a place first ([`Queue::admit`]); when there is none the gateway
//! answers 503 `audit_unavailable` instead of serving a request it could not record. A reserved
//! place is always there when the log phase comes, so in strict mode no request that reached an
//! upstream goes unrecorded for lack of room.
//!
//! `queued` (the `fenfa_audit_queue_depth` gauge) counts records in the channel plus reserved
//! places; the writer takes one off for every record it receives.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::AuditCounters;

/// Room kept in the channel beyond `capacity` for control messages.
const CONTROL_ROOM: usize = 8;

/// What the writer thread receives.
pub enum Msg {
    /// One encoded record (a JSON object without `seq`/`prev`/`mac`).
    Record(Vec<u8>),
    /// Write everything, seal the active segment, fsync, answer, and stop.
    Shutdown(std::sync::mpsc::Sender<()>),
}

pub struct Queue {
    tx: SyncSender<Msg>,
    capacity: u64,
    strict: bool,
    counters: Arc<AuditCounters>,
    /// Milliseconds since the epoch of the last "queue full" warning.
    last_warned: AtomicU64,
    /// Drops not yet reported in a warning.
    unreported: AtomicU64,
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
    /// A queue for `capacity` records and the receiving end for the writer.
    pub fn new(
        capacity: usize,
        strict: bool,
        counters: Arc<AuditCounters>,
    ) -> (Arc<Self>, Receiver<Msg>) {
        let capacity = capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity + CONTROL_ROOM);
        counters.queued.store(0, Relaxed);
        (
            Arc::new(Self {
                tx,
                capacity: capacity as u64,
                strict,
                counters,
                last_warned: AtomicU64::new(0),
                unreported: AtomicU64::new(0),
            }),
            rx,
        )
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

    /// Whether a record can be queued now (a reserved slot, or free room).
    pub fn reserve(&self, slot: Option<Slot>) -> bool {
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

    /// Sends a record into a place taken by [`Queue::reserve`]. Never blocks.
    pub fn send_reserved(&self, record: Vec<u8>) {
        match self.tx.try_send(Msg::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Relaxed);
                self.dropped(1);
            }
        }
    }

    /// The writer took a record off the queue.
    pub fn taken(counters: &AuditCounters) {
        counters.queued.fetch_sub(1, Relaxed);
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

    /// Sends a control message, waiting at most `timeout` for room.
    pub fn control(&self, msg: Msg, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = msg;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let counters = Arc::new(AuditCounters::default());
        let (q, rx) = Queue::new(2, false, counters.clone());
        for _ in 0..5 {
            let slot = q.admit();
            if q.reserve(slot) {
                q.send_reserved(b"{}".to_vec());
            }
        }
        assert_eq!(counters.dropped.load(Relaxed), 3);
        assert_eq!(counters.queued.load(Relaxed), 2);
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn strict_mode_refuses_admission_when_full_and_reserved_places_always_fit() {
        let counters = Arc::new(AuditCounters::default());
        let (q, rx) = Queue::new(2, true, counters.clone());
        let a = q.admit().expect("room for the first");
        let b = q.admit().expect("room for the second");
        assert!(q.admit().is_none(), "third request must be refused (503)");
        assert_eq!(counters.rejected.load(Relaxed), 1);
        // A record without a reservation (the 503's own record) does not take a reserved place.
        assert!(!q.reserve(None));
        assert!(q.reserve(Some(a)));
        q.send_reserved(b"{}".to_vec());
        drop(b); // a request that never logged gives its place back
        assert_eq!(counters.queued.load(Relaxed), 1);
        assert!(q.admit().is_some());
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(counters.dropped.load(Relaxed), 1);
    }
}
