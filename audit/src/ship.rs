//! The shipper: a task on the background network runtime (`fenfa_net::handle`) that
//! reads the segments behind the writer and delivers their records to a [`Sink`], remembering how
//! far it got in a cursor file. Segment reads and cursor writes run on that runtime's blocking
//! pool.
//!
//! At least once: the cursor (`ship-<sink>.cursor`: node, segment, line offset, byte position)
//! moves only after the sink accepted a batch, and is written atomically. After a crash, a
//! restart or an outage the shipper resumes at the cursor and re-sends from there, with the same
//! idempotency keys. While the sink is down it retries with exponential backoff (up to
//! `backoff_max`); the segments are the spool, and retention never deletes a segment that has
//! not been shipped.
//!
//! The shipper only reads complete lines, so it never sends half a record the writer is still
//! appending. Checkpoint lines are not shipped (they count in the offsets).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::segment;
use super::sink::{Batch, Sink};
use crate::counters::SinkCounters;
use fenfa_net::ClientError;

/// Longest wait in [`Shipper::stop`] for the batch in flight.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Most bytes read from a segment per batch.
const MAX_READ: usize = 4 << 20;

/// How far shipping got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub node: String,
    /// Segment file name.
    pub segment: String,
    /// Lines of that segment already delivered (the next line's 0-based number).
    pub offset: u64,
    /// Byte position of that line.
    pub byte: u64,
}

impl Cursor {
    pub fn path(dir: &Path, sink: &str) -> PathBuf {
        dir.join(format!("ship-{sink}.cursor"))
    }

    pub fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "audit: unreadable ship cursor; shipping again from the oldest segment");
                None
            }
        }
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        fenfa_config::files::write_atomically(path, &bytes)
    }

    fn index(&self) -> u64 {
        segment::parse_name(&self.segment).unwrap_or(0)
    }
}

/// Shipping settings (from `audit.ship`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub batch_records: usize,
    /// How often to look for new records when caught up.
    pub interval: Duration,
    /// Longest wait between retries while the sink fails.
    pub backoff_max: Duration,
}

/// The running shipper.
pub struct Shipper {
    stop: tokio::sync::watch::Sender<bool>,
    /// Disconnected when the task has returned.
    done: std::sync::mpsc::Receiver<()>,
}

impl Shipper {
    /// Starts shipping the trail in `dir`. `shipped_through` is kept at the highest segment
    /// index that is fully delivered (retention reads it).
    pub fn spawn(
        dir: PathBuf,
        node: String,
        sink: Box<dyn Sink>,
        policy: Policy,
        counters: Arc<SinkCounters>,
        shipped_through: Arc<AtomicU64>,
    ) -> Result<Self, ClientError> {
        let handle = fenfa_net::handle()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let cursor_path = Cursor::path(&dir, sink.name());
        let cursor = Cursor::load(&cursor_path);
        shipped_through.store(
            cursor.as_ref().map_or(0, |c| c.index().saturating_sub(1)),
            Relaxed,
        );
        let mut run = Run {
            dir,
            node,
            sink,
            policy,
            counters,
            shipped_through,
            cursor_path,
            cursor,
            stopped,
        };
        handle.spawn(async move {
            let _done = done_tx;
            run.run().await;
        });
        Ok(Self { stop, done })
    }

    /// Stops after the batch in flight (if any), waiting for it up to 30 s.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.done.recv_timeout(STOP_WAIT);
    }
}

struct Run {
    dir: PathBuf,
    node: String,
    sink: Box<dyn Sink>,
    policy: Policy,
    counters: Arc<SinkCounters>,
    shipped_through: Arc<AtomicU64>,
    cursor_path: PathBuf,
    cursor: Option<Cursor>,
    stopped: tokio::sync::watch::Receiver<bool>,
}

/// What to do next.
enum Next {
    Send {
        records: Vec<Vec<u8>>,
        offset: u64,
        end_offset: u64,
        end_byte: u64,
    },
    /// The cursor's segment is done; move to this one.
    Advance(u64),
    /// Nothing new.
    Idle,
}

impl Run {
    /// Whether [`Shipper::stop`] was called (or the shipper dropped).
    fn stop_requested(&self) -> bool {
        *self.stopped.borrow() || self.stopped.has_changed().is_err()
    }

    /// Sleeps `d`; false if asked to stop.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stopped.wait_for(|stop| *stop) => false,
        }
    }

    async fn run(&mut self) {
        let mut failing_since: Option<Instant> = None;
        let mut backoff = self.policy.interval.min(Duration::from_millis(200));
        let mut last_warn: Option<Instant> = None;
        loop {
            if self.stop_requested() {
                return;
            }
            let next = match self.next().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "audit shipper cannot read the segments");
                    Next::Idle
                }
            };
            match next {
                Next::Idle => {
                    if !self.sleep(self.policy.interval).await {
                        return;
                    }
                }
                Next::Advance(index) => {
                    let done = self.cursor.as_ref().map_or(0, Cursor::index);
                    let c = Cursor {
                        node: self.node.clone(),
                        segment: segment::name(index),
                        offset: 0,
                        byte: 0,
                    };
                    save(&c, &self.cursor_path, "").await;
                    self.cursor = Some(c);
                    self.shipped_through
                        .store(done.max(index.saturating_sub(1)), Relaxed);
                }
                Next::Send {
                    records,
                    offset,
                    end_offset,
                    end_byte,
                } => {
                    let Some(cur) = self.cursor.clone() else {
                        continue;
                    };
                    let batch = Batch {
                        node: &self.node,
                        segment: &cur.segment,
                        offset,
                        records: &records,
                    };
                    let sent = self.sink.send(&batch).await;
                    match sent {
                        Ok(()) => {
                            self.counters
                                .delivered
                                .fetch_add(records.len() as u64, Relaxed);
                            if let Some(since) = failing_since.take() {
                                tracing::info!(after = ?since.elapsed(), "audit shipping recovered");
                            }
                            backoff = self.policy.interval.min(Duration::from_millis(200));
                            let c = Cursor {
                                offset: end_offset,
                                byte: end_byte,
                                ..cur
                            };
                            save(&c, &self.cursor_path, " (records may be sent again)").await;
                            self.cursor = Some(c);
                        }
                        Err(e) => {
                            self.counters.failures.fetch_add(1, Relaxed);
                            let since = *failing_since.get_or_insert_with(Instant::now);
                            if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                                tracing::warn!(sink = self.sink.name(), error = %e, failing_for = ?since.elapsed(), retry_in = ?backoff,
                                    "audit shipping failed; records stay on disk and will be sent when the sink is back");
                                last_warn = Some(Instant::now());
                            }
                            if !self.sleep(backoff).await {
                                return;
                            }
                            backoff = (backoff * 2).min(self.policy.backoff_max);
                        }
                    }
                }
            }
        }
    }

    /// The next batch from the cursor on (read on the blocking pool).
    async fn next(&mut self) -> std::io::Result<Next> {
        let (dir, cursor, batch_records, cursor_path, counters) = (
            self.dir.clone(),
            self.cursor.clone(),
            self.policy.batch_records,
            self.cursor_path.clone(),
            self.counters.clone(),
        );
        let (next, cursor) = tokio::task::spawn_blocking(move || {
            read_next(&dir, cursor, batch_records, &cursor_path, &counters)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.cursor = cursor;
        Ok(next)
    }
}

/// Bytes of the segments at or after `cursor` not yet delivered (all of them without one).
/// A segment that cannot be read counts as empty: the backlog is a gauge, not a check.
fn backlog_bytes(segments: &[(u64, PathBuf)], cursor: Option<&Cursor>) -> u64 {
    let (index, byte) = cursor.map_or((0, 0), |c| (c.index(), c.byte));
    segments
        .iter()
        .filter(|(i, _)| *i >= index)
        .map(|(i, path)| {
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            if *i == index {
                len.saturating_sub(byte)
            } else {
                len
            }
        })
        .sum()
}

/// The next batch after `cursor`, and the cursor to keep (moved past a sealed, shipped end).
/// Updates `counters.backlog_bytes` on the way.
fn read_next(
    dir: &Path,
    cursor: Option<Cursor>,
    batch_records: usize,
    cursor_path: &Path,
    counters: &SinkCounters,
) -> std::io::Result<(Next, Option<Cursor>)> {
    {
        let segments = segment::list(dir)?;
        counters
            .backlog_bytes
            .store(backlog_bytes(&segments, cursor.as_ref()), Relaxed);
        let Some(cur) = cursor.clone() else {
            // Never shipped: start at the oldest segment there is.
            return Ok((
                match segments.first() {
                    Some((i, _)) => Next::Advance(*i),
                    None => Next::Idle,
                },
                cursor,
            ));
        };
        let index = cur.index();
        let later = segments.iter().map(|(i, _)| *i).find(|i| *i > index);
        let path = dir.join(&cur.segment);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(l) = later {
                    tracing::error!(segment = %cur.segment, "audit: the segment being shipped is gone; continuing with the next one");
                    return Ok((Next::Advance(l), cursor));
                }
                return Ok((Next::Idle, cursor));
            }
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(cur.byte))?;
        let mut buf = Vec::new();
        file.by_ref().take(MAX_READ as u64).read_to_end(&mut buf)?;
        let mut records = Vec::new();
        let mut offset = cur.offset;
        let mut byte = cur.byte;
        let mut sealed = false;
        let mut rest: &[u8] = &buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if records.len() >= batch_records.max(1) {
                break;
            }
            let line = &rest[..nl];
            rest = &rest[nl + 1..];
            offset += 1;
            byte += nl as u64 + 1;
            if line.starts_with(b"{\"checkpoint\"") {
                sealed = true;
                break;
            }
            records.push(as_json(line));
        }
        if !records.is_empty() {
            return Ok((
                Next::Send {
                    offset: cur.offset,
                    records,
                    end_offset: offset,
                    end_byte: byte,
                },
                cursor,
            ));
        }
        if sealed || (rest.is_empty() && buf.is_empty() && later.is_some()) {
            if let Some(l) = later {
                return Ok((Next::Advance(l), cursor));
            }
            // Sealed and fully shipped, but nothing newer yet: remember the position.
            if offset != cur.offset {
                let c = Cursor {
                    offset,
                    byte,
                    ..cur
                };
                let _ = c.save(cursor_path);
                return Ok((Next::Idle, Some(c)));
            }
        }
        Ok((Next::Idle, cursor))
    }
}

/// Writes the cursor off the runtime's worker (an atomic write with fsync).
async fn save(c: &Cursor, path: &Path, what: &'static str) {
    let (c, p) = (c.clone(), path.to_path_buf());
    let saved = tokio::task::spawn_blocking(move || c.save(&p))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Err(e) = saved {
        tracing::error!(file = %path.display(), error = %e, "audit: cannot save the ship cursor{what}");
    }
}

/// The line itself if it is JSON; otherwise a JSON object carrying it as a string, so that a
/// damaged line is still delivered (and visible) rather than blocking shipping forever.
fn as_json(line: &[u8]) -> Vec<u8> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
        line.to_vec()
    } else {
        let mut out = b"{\"unparsable_line\":".to_vec();
        let _ = serde_json::to_writer(&mut out, &String::from_utf8_lossy(line));
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::chain::Key;
    use crate::sink::SinkError;
    use crate::writer::{Policy as WPolicy, Trail};

    /// (segment, offset, record) as delivered.
    type Delivered = Vec<(String, u64, Vec<u8>)>;

    /// Remembers every record by idempotency key; fails while `down`.
    #[derive(Clone, Default)]
    struct Memory {
        got: Arc<Mutex<Delivered>>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait::async_trait]
    impl Sink for Memory {
        fn name(&self) -> &str {
            "mem"
        }
        async fn send(&mut self, b: &Batch<'_>) -> Result<(), SinkError> {
            if self.down.load(Relaxed) {
                return Err(SinkError::Other("down".into()));
            }
            let mut got = self.got.lock().unwrap();
            for (k, r) in b.records.iter().enumerate() {
                got.push((b.segment.to_string(), b.offset + k as u64, r.clone()));
            }
            Ok(())
        }
    }

    fn wait(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn ships_everything_once_the_sink_is_back_and_resumes_from_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(Key::from_bytes(&[1u8; 32]).unwrap());
        let wp = WPolicy {
            max_bytes: 700,
            max_age: Duration::from_secs(3600),
            retention: Duration::from_secs(3600),
            fsync_interval: Duration::from_secs(1),
        };
        let mut t = Trail::open(dir.path(), key, "n").unwrap();
        for i in 0..7 {
            t.append(format!(r#"{{"i":{i}}}"#).as_bytes(), &wp).unwrap();
        }
        t.flush().unwrap();
        let sink = Memory::default();
        sink.down.store(true, Relaxed);
        let counters = Arc::new(SinkCounters::default());
        let policy = Policy {
            batch_records: 2,
            interval: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
        };
        let through = Arc::new(AtomicU64::new(0));
        let s = Shipper::spawn(
            dir.path().into(),
            "n".into(),
            Box::new(sink.clone()),
            policy.clone(),
            counters.clone(),
            through.clone(),
        )
        .unwrap();
        wait("failures", || counters.failures.load(Relaxed) >= 2);
        assert!(sink.got.lock().unwrap().is_empty());
        // Nothing delivered: the backlog is every segment, whole.
        let on_disk: u64 = segment::list(dir.path())
            .unwrap()
            .iter()
            .map(|(_, p)| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk > 0);
        assert_eq!(counters.backlog_bytes.load(Relaxed), on_disk);
        sink.down.store(false, Relaxed);
        wait("7 records", || sink.got.lock().unwrap().len() == 7);
        wait("no backlog", || counters.backlog_bytes.load(Relaxed) == 0);
        s.stop();
        // More records, a new shipper (a restart): only the new ones are sent.
        for i in 7..10 {
            t.append(format!(r#"{{"i":{i}}}"#).as_bytes(), &wp).unwrap();
        }
        t.seal("shutdown").unwrap();
        let s = Shipper::spawn(
            dir.path().into(),
            "n".into(),
            Box::new(sink.clone()),
            policy,
            counters.clone(),
            through.clone(),
        )
        .unwrap();
        wait("10 records", || sink.got.lock().unwrap().len() == 10);
        s.stop();
        let got = sink.got.lock().unwrap();
        let mut keys: Vec<_> = got.iter().map(|(s, o, _)| (s.clone(), *o)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 10, "every record once: {keys:?}");
        let is: Vec<i64> = got
            .iter()
            .map(|(_, _, r)| {
                serde_json::from_slice::<serde_json::Value>(r).unwrap()["i"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(is, (0..10).collect::<Vec<_>>());
        assert!(through.load(Relaxed) >= 1);
    }
}
