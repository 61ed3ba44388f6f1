//! The writer thread: takes records off the queue, chains them and appends them to the active
//! segment; rotates, seals, keeps `head.json` current and applies retention.
//!
//! Flush policy (what a crash can lose): every [`POLL`] (20 ms) the writer drains whatever is
//! queued, writes it with one `write` call, and goes back to sleep, so a record reaches the file
//! within about 20 ms. The file is fsynced every `fsync_interval` (default 1 s), when a segment is
//! sealed, and at shutdown; `head.json` is rewritten right after each of those. So a SIGKILL loses
//! what is still in the queue (at most the last ~20 ms of records); a power loss can also lose
//! what was written since the last fsync. Both are documented in `docs/audit.md`.
//!
//! Each line is sealed straight into the active segment's buffer, which is written out at line
//! boundaries only (at the end of a drain, or once it holds 1 MiB). A torn final line (a power
//! loss, or a write cut short) is cut off (and logged) at the next start, and the segment is
//! sealed as `recovered`.
//!
//! A write that fails (disk full, directory gone) is retried with backoff, holding the record;
//! meanwhile the queue fills and further records are dropped and counted, or in strict mode
//! requests are answered 503. Nothing is skipped silently.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::chain::{self, Algorithm, Key, Mac};
use super::queue::{self, Queue};
use super::segment::{self, ChainHeader, Checkpoint, Head};
use crate::counters::AuditCounters;

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Pending lines are written out once they reach this many bytes, or at the end of a drain.
const WRITE_AT: usize = 1 << 20;

/// Writer settings (from `audit:` in the config).
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_bytes: u64,
    pub max_age: Duration,
    pub retention: Duration,
    pub fsync_interval: Duration,
}

/// The chain state and the active segment.
pub struct Trail {
    dir: PathBuf,
    key: Arc<Key>,
    node: String,
    prev: Mac,
    seq: u64,
    next_index: u64,
    active: Option<Active>,
    /// What the newest segment is chained with; a new segment chained otherwise opens with a
    /// [`ChainHeader`] that records the switch.
    chain_alg: Algorithm,
    /// What `head.json` will vouch for: (segment, lines written to it). Its mac is `prev` and
    /// its seq is `seq`, so only these two are kept, and the hex is made only when it is written.
    head_at: (u64, u64),
}

struct Active {
    index: u64,
    /// What every line of this segment is chained with.
    alg: Algorithm,
    out: SegmentFile,
    bytes: u64,
    lines: u64,
    records: u64,
    first_seq: u64,
    opened: Instant,
    opened_at: String,
    /// The checkpoint is written (into the buffer at least); only flush and close remain.
    sealed: bool,
    /// Data written since the last fsync.
    unsynced: bool,
}

impl Active {
    /// Seals one line (`body` plus `extra` members) into the segment's buffer, chained to
    /// `prev`, which becomes the line's mac.
    fn chain(&mut self, key: &Key, prev: &mut Mac, body: &[u8], extra: &[u8]) {
        let before = self.out.pending.len();
        *prev = key.seal(self.alg, prev, body, extra, &mut self.out.pending);
        self.lines += 1;
        self.bytes += (self.out.pending.len() - before) as u64;
    }
}

/// A segment file and the whole lines not yet written to it. Lines are sealed straight into
/// `pending` (no copy between a line buffer and a file buffer) and written out together.
struct SegmentFile {
    file: File,
    pending: Vec<u8>,
}

impl SegmentFile {
    fn new(file: File) -> Self {
        Self {
            file,
            pending: Vec::new(),
        }
    }

    /// Writes the pending lines (no fsync). On an error, what did get written leaves `pending`
    /// and the rest stays for the next attempt.
    fn flush(&mut self) -> std::io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.pending.len() {
                break Ok(());
            }
            match self.file.write(&self.pending[done..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..done);
        result
    }

    /// Writes the pending lines and fsyncs data and metadata.
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.file.sync_all()
    }
}

impl Trail {
    /// Opens the trail in `dir`: continues the chain after the newest segment, sealing it first
    /// if the last run did not (a crash).
    pub fn open(dir: &Path, key: Arc<Key>, node: &str) -> Result<Self, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the audit dir {}: {e}", dir.display()))?;
        let (first, prev, seq) = segment::start(dir, &key)
            .map_err(|e| format!("{}: {e}", dir.join(segment::RETENTION_FILE).display()))?;
        let mut trail = Self {
            dir: dir.to_path_buf(),
            key,
            node: node.to_string(),
            prev,
            seq,
            next_index: first,
            active: None,
            chain_alg: Algorithm::default(),
            head_at: (first.saturating_sub(1), 0),
        };
        let io = |e: std::io::Error| format!("audit dir {}: {e}", dir.display());
        // What the last run vouched for, read before anything is rewritten.
        let previous_head = segment::read_head(dir, &trail.key);
        let had_segments = !segment::list(dir).map_err(io)?.is_empty();
        let mut newest: Option<(u64, u64)> = None;
        loop {
            let segments = segment::list(dir).map_err(io)?;
            let Some((index, path)) = segments.last().cloned() else {
                break;
            };
            let tail = segment::scan(&path).map_err(io)?;
            if tail.torn > 0 {
                tracing::warn!(file = %path.display(), bytes = tail.torn, "audit: cutting off a torn final line (incomplete write before a crash)");
                segment::cut_torn_tail(&path, tail.good_len).map_err(io)?;
            }
            if tail.lines == 0 {
                // Created, then the process died before the first line: nothing to keep.
                std::fs::remove_file(&path).map_err(io)?;
                continue;
            }
            newest = Some((index, tail.lines));
            trail.next_index = index + 1;
            trail.seq = tail.last_seq.unwrap_or(trail.seq);
            trail.prev = match tail.last_mac {
                Some(m) => m,
                None => {
                    tracing::error!(file = %path.display(), "audit: the last line of the newest segment is not a chained line; `fenfa-gateway audit verify` will report it. Continuing the chain from scratch");
                    chain::GENESIS
                }
            };
            trail.head_at = (index, tail.lines);
            trail.chain_alg = tail.alg;
            if !tail.sealed && tail.last_mac.is_some() {
                let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
                trail.active = Some(Active {
                    index,
                    alg: tail.alg,
                    out: SegmentFile::new(file),
                    bytes: tail.good_len,
                    lines: tail.lines,
                    records: tail.records,
                    first_seq: tail.first_seq.unwrap_or(trail.seq + 1),
                    opened: Instant::now(),
                    opened_at: tail.opened_at.unwrap_or_default(),
                    sealed: false,
                    unsynced: false,
                });
                tracing::info!(file = %path.display(), records = tail.records, "audit: sealing the segment a previous run left open");
                trail.seal("recovered").map_err(io)?;
            }
            break;
        }
        if let Some(incident) = incident(previous_head, had_segments, newest, first) {
            tracing::error!(kind = %incident.kind, segment = incident.segment, head_lines = incident.head_lines,
                found_lines = incident.found_lines, detail = %incident.detail,
                "audit: the trail is not as the last run left it (cut, deleted or edited while the gateway was stopped); recording an incident in the chain");
            trail.note(&incident).map_err(io)?;
        }
        trail.write_head(true).map_err(io)?;
        Ok(trail)
    }

    /// Chains an incident line (no `seq`) into the active segment and makes it durable.
    fn note(&mut self, incident: &Incident) -> std::io::Result<()> {
        if self.active.is_none() {
            self.open_next()?;
        }
        let Some(a) = self.active.as_mut() else {
            return Err(std::io::Error::other("no active segment"));
        };
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            incident: &'a Incident,
        }
        let body = serde_json::to_vec(&Doc { incident }).map_err(std::io::Error::other)?;
        a.chain(&self.key, &mut self.prev, &body, b"");
        self.head_at = (a.index, a.lines);
        a.out.sync_all()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The segment being written, or the next one.
    pub fn active_index(&self) -> u64 {
        self.active.as_ref().map_or(self.next_index, |a| a.index)
    }

    /// Chains and appends one record (a JSON object without `seq`).
    pub fn append(&mut self, body: &[u8], policy: &Policy) -> std::io::Result<()> {
        if self.due_for_size(policy) {
            self.seal("size")?;
        }
        if self.active.is_none() {
            self.open_next()?;
        }
        let Some(a) = self.active.as_mut() else {
            return Err(std::io::Error::other("no active segment"));
        };
        if a.out.pending.len() >= WRITE_AT {
            // Before the record is committed: on failure it is retried whole.
            a.out.flush()?;
        }
        let seq = self.seq + 1;
        // `,"seq":N` without a heap allocation: this runs once per request.
        let mut extra = [0u8; 32];
        let tag = b",\"seq\":";
        let mut digits = itoa::Buffer::new();
        let n = digits.format(seq).as_bytes();
        extra[..tag.len()].copy_from_slice(tag);
        extra[tag.len()..tag.len() + n.len()].copy_from_slice(n);
        let extra = &extra[..tag.len() + n.len()];
        // Committed: the line is sealed straight into the file's buffer, in order.
        a.chain(&self.key, &mut self.prev, body, extra);
        self.seq = seq;
        if a.records == 0 {
            a.first_seq = seq;
        }
        a.records += 1;
        a.unsynced = true;
        self.head_at = (a.index, a.lines);
        if a.bytes >= policy.max_bytes {
            // The record is committed whatever happens here; a failed seal is retried before
            // the next record and by the writer loop.
            let _ = self.seal("size");
        }
        Ok(())
    }

    /// The active segment is full (or its seal was interrupted).
    fn due_for_size(&self, policy: &Policy) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.sealed || (a.records > 0 && a.bytes >= policy.max_bytes))
    }

    fn open_next(&mut self) -> std::io::Result<()> {
        let index = self.next_index;
        let path = self.dir.join(segment::name(index));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        self.next_index = index + 1;
        let alg = self.key.algorithm();
        let opened_at = super::time::format(SystemTime::now());
        let a = self.active.insert(Active {
            index,
            alg,
            out: SegmentFile::new(file),
            bytes: 0,
            lines: 0,
            records: 0,
            first_seq: self.seq + 1,
            opened: Instant::now(),
            opened_at: opened_at.clone(),
            sealed: false,
            unsynced: false,
        });
        if alg != Algorithm::HmacSha256 || alg != self.chain_alg {
            let header = ChainHeader {
                alg,
                previous: (self.prev != chain::GENESIS).then_some(self.chain_alg),
                segment: index,
                node: self.node.clone(),
                at: opened_at,
            };
            if alg != self.chain_alg {
                tracing::info!(from = %self.chain_alg, to = %alg, segment = index, "audit: the chain algorithm changes with this segment; the switch is its first line");
            }
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                chain: &'a ChainHeader,
            }
            let body =
                serde_json::to_vec(&Doc { chain: &header }).map_err(std::io::Error::other)?;
            a.chain(&self.key, &mut self.prev, &body, b"");
            a.unsynced = true;
            self.head_at = (index, a.lines);
        }
        self.chain_alg = alg;
        Ok(())
    }

    /// Appends the checkpoint, flushes, fsyncs and closes the active segment (if it has records).
    /// Safe to call again after an error: the checkpoint is written once.
    pub fn seal(&mut self, reason: &str) -> std::io::Result<()> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if a.lines == 0 && !a.sealed {
            // Never written to: remove the empty file so no segment is only a checkpoint.
            let index = a.index;
            self.active = None;
            let _ = std::fs::remove_file(self.dir.join(segment::name(index)));
            self.next_index = index;
            return Ok(());
        }
        if !a.sealed {
            let cp = Checkpoint {
                segment: a.index,
                node: self.node.clone(),
                records: a.records,
                first_seq: a.first_seq,
                last_seq: self.seq,
                opened_at: a.opened_at.clone(),
                sealed_at: super::time::format(SystemTime::now()),
                reason: reason.to_string(),
            };
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                checkpoint: &'a Checkpoint,
            }
            let body =
                serde_json::to_vec(&Doc { checkpoint: &cp }).map_err(std::io::Error::other)?;
            a.chain(&self.key, &mut self.prev, &body, b"");
            a.sealed = true;
            self.head_at = (a.index, a.lines);
        }
        a.out.sync_all()?;
        self.active = None;
        segment::fsync_dir(&self.dir);
        self.write_head(true)
    }

    /// Writes buffered lines to the file (no fsync).
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.active.as_mut() {
            Some(a) => a.out.flush(),
            None => Ok(()),
        }
    }

    /// fsyncs the active segment if it has unsynced data.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some(a) = self.active.as_mut() {
            if a.unsynced {
                a.out.flush()?;
                a.out.file.sync_data()?;
                a.unsynced = false;
            }
        }
        Ok(())
    }

    /// Rewrites `head.json` for what has been flushed. Call after [`Trail::flush`].
    pub fn write_head(&self, durable: bool) -> std::io::Result<()> {
        let head = Head {
            segment: self.head_at.0,
            lines: self.head_at.1,
            last_mac: chain::hex(&self.prev),
            seq: self.seq,
        };
        segment::write_head(&self.dir, &self.key, &head, durable)
    }

    fn due_for_age(&self, max_age: Duration) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.records > 0 && a.opened.elapsed() >= max_age)
    }

    fn retention(&self, policy: &Policy, shipped_through: u64) {
        if let Err(e) = segment::apply_retention(
            &self.dir,
            &self.key,
            policy.retention,
            self.active_index(),
            shipped_through,
        ) {
            tracing::error!(dir = %self.dir.display(), error = %e, "audit retention failed; will retry");
        }
    }
}

/// Compares what the last run's `head.json` vouched for with what is on disk at startup.
/// `newest` is the newest segment and its complete lines; `first` where the trail starts.
fn incident(
    previous: Result<Option<Head>, String>,
    had_segments: bool,
    newest: Option<(u64, u64)>,
    first: u64,
) -> Option<Incident> {
    let at = super::time::format(SystemTime::now());
    let head = match previous {
        Err(e) => {
            return Some(Incident {
                kind: "head_invalid".into(),
                segment: 0,
                head_lines: 0,
                found_lines: 0,
                detail: format!("head.json: {e}"),
                at,
            })
        }
        Ok(None) if had_segments => {
            return Some(Incident {
                kind: "head_missing".into(),
                segment: 0,
                head_lines: 0,
                found_lines: 0,
                detail: "head.json was missing".into(),
                at,
            })
        }
        Ok(None) => return None,
        Ok(Some(h)) => h,
    };
    if head.lines == 0 || head.segment < first {
        return None;
    }
    let found = match newest {
        // A newer segment than the head names: the head was just not updated yet.
        Some((i, _)) if i > head.segment => return None,
        Some((i, lines)) if i == head.segment => lines,
        _ => 0,
    };
    (found < head.lines).then(|| Incident {
        kind: "shorter_than_head".into(),
        segment: head.segment,
        head_lines: head.lines,
        found_lines: found,
        detail: format!(
            "{} had {found} of the {} lines head.json vouched for",
            segment::name(head.segment),
            head.lines
        ),
        at,
    })
}

/// A chained note that the trail was found damaged at startup; `verify` reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Incident {
    /// `shorter_than_head`, `head_invalid` or `head_missing`.
    pub kind: String,
    pub segment: u64,
    pub head_lines: u64,
    pub found_lines: u64,
    pub detail: String,
    pub at: String,
}

/// How often the writer drains the queue. The default queue (65,536 records) holds this long at
/// over 3 million requests per second; a SIGKILL loses at most about this much (docs/audit.md).
pub const POLL: Duration = Duration::from_millis(20);

/// Runs the writer until [`Queue::request_stop`] (answered once everything is written and
/// sealed), or until nobody else holds the queue.
pub fn run(
    mut trail: Trail,
    queue: Arc<Queue>,
    policy: Policy,
    counters: Arc<AuditCounters>,
    shipped: Vec<Arc<AtomicU64>>,
) {
    let mut last_sync = Instant::now();
    let mut last_retention = Instant::now();
    let mut head_dirty = false;
    let mut errors = ErrorLog::default();
    let mut batches = Vec::new();
    let mut spare = Vec::new();
    trail.retention(&policy, shipped_through(&shipped));
    loop {
        // Poll instead of being woken per record: waking a parked thread costs the sender a
        // futex syscall on the proxy's request path. Draining in batches keeps senders
        // syscall-free and makes each write to the segment one large one. A shutdown request
        // unparks the writer at once.
        std::thread::park_timeout(POLL);
        let stop = queue.stop_requested();
        let last = stop.is_some() || Arc::strong_count(&queue) == 1;
        // The last drain also closes the lanes: what comes after it is counted as dropped.
        queue.drain(&mut batches, &mut spare, last);
        for batch in batches.drain(..) {
            for body in queue::records(&batch.bytes) {
                write_with_retry(&mut trail, body, &policy, &counters, &mut errors);
            }
            head_dirty = true;
            queue.written(batch, &mut spare);
        }
        if let Err(e) = trail.flush() {
            counters.write_errors.fetch_add(1, Relaxed);
            errors.log("cannot write audit records; retrying", &e);
        }
        if last {
            finish(&mut trail, &mut errors);
            if let Some(ack) = stop {
                let _ = ack.send(());
            }
            return;
        }
        // `head.json` follows the fsync: it then never vouches for lines that a power loss could
        // still take (which would look like a cut tail at the next start).
        let synced = last_sync.elapsed() >= policy.fsync_interval;
        if synced {
            if let Err(e) = trail.sync() {
                errors.log("cannot fsync the audit segment", &e);
            }
            last_sync = Instant::now();
        }
        if head_dirty && synced {
            match trail.write_head(false) {
                Ok(()) => head_dirty = false,
                Err(e) => errors.log("cannot write audit head.json", &e),
            }
        }
        if trail.due_for_size(&policy) || trail.due_for_age(policy.max_age) {
            let reason = if trail.due_for_size(&policy) {
                "size"
            } else {
                "age"
            };
            if let Err(e) = trail.seal(reason) {
                errors.log("cannot seal the audit segment; retrying", &e);
            }
        }
        if last_retention.elapsed() >= RETENTION_EVERY {
            trail.retention(&policy, shipped_through(&shipped));
            last_retention = Instant::now();
        }
    }
}

/// The newest segment every sink has delivered: retention deletes nothing after it. Without
/// sinks, nothing holds retention back.
fn shipped_through(shipped: &[Arc<AtomicU64>]) -> u64 {
    shipped
        .iter()
        .map(|s| s.load(Relaxed))
        .min()
        .unwrap_or(u64::MAX)
}

fn write_with_retry(
    trail: &mut Trail,
    body: &[u8],
    policy: &Policy,
    counters: &AuditCounters,
    errors: &mut ErrorLog,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        match trail.append(body, policy) {
            Ok(()) => {
                counters.written.fetch_add(1, Relaxed);
                return;
            }
            Err(e) => {
                counters.write_errors.fetch_add(1, Relaxed);
                errors.log("cannot write an audit record; holding it and retrying (the queue fills meanwhile)", &e);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn finish(trail: &mut Trail, errors: &mut ErrorLog) {
    for attempt in 0..3 {
        match trail.seal("shutdown") {
            Ok(()) => {
                tracing::info!(seq = trail.seq(), "audit trail flushed and sealed");
                return;
            }
            Err(e) => {
                errors.log("cannot seal the audit segment at shutdown", &e);
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
        }
    }
}

/// Logs write errors at most once every 5 seconds.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn log(&mut self, what: &str, e: &std::io::Error) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            self.suppressed += 1;
            return;
        }
        tracing::error!(error = %e, suppressed = self.suppressed, "{what}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn policy(max_bytes: u64) -> Policy {
        Policy {
            max_bytes,
            max_age: Duration::from_secs(3600),
            retention: Duration::from_secs(3600),
            fsync_interval: Duration::from_secs(1),
        }
    }

    fn key() -> Arc<Key> {
        Arc::new(Key::from_bytes(&[9u8; 32]).unwrap())
    }

    #[test]
    fn records_rotate_by_size_and_every_sealed_segment_ends_in_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Trail::open(dir.path(), key(), "n").unwrap();
        let p = policy(400);
        for i in 0..10 {
            t.append(format!(r#"{{"i":{i}}}"#).as_bytes(), &p).unwrap();
        }
        t.seal("shutdown").unwrap();
        let segs = segment::list(dir.path()).unwrap();
        assert!(segs.len() >= 3, "{segs:?}");
        for (_, path) in &segs {
            let tail = segment::scan(path).unwrap();
            assert!(tail.sealed, "{}", path.display());
        }
        assert_eq!(t.seq(), 10);
    }

    #[test]
    fn retention_waits_for_the_slowest_sink() {
        assert_eq!(shipped_through(&[]), u64::MAX);
        let http = Arc::new(AtomicU64::new(7));
        let otlp = Arc::new(AtomicU64::new(3));
        assert_eq!(shipped_through(&[http.clone(), otlp.clone()]), 3);
        otlp.store(9, Relaxed);
        assert_eq!(shipped_through(&[http, otlp]), 7);
    }

    #[test]
    fn a_failed_write_keeps_every_pending_line_for_the_next_attempt() {
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut out = SegmentFile::new(full);
        out.pending.extend_from_slice(b"{\"a\":1}\n{\"b\":2}\n");
        let err = out.flush().expect_err("/dev/full refuses every write");
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
        assert_eq!(out.pending, b"{\"a\":1}\n{\"b\":2}\n");
        // The disk is back: everything pending arrives, once, in order.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        out.file = File::create(&path).unwrap();
        out.flush().unwrap();
        assert!(out.pending.is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn reopening_continues_the_chain_and_seals_a_segment_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(1 << 20);
        {
            let mut t = Trail::open(dir.path(), key(), "n").unwrap();
            for i in 0..3 {
                t.append(format!(r#"{{"i":{i}}}"#).as_bytes(), &p).unwrap();
            }
            t.flush().unwrap();
            // Dropped without sealing: a crash.
        }
        let path = dir.path().join(segment::name(1));
        // A torn line, as a power loss could leave.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"i":3,"se"#).unwrap();
        let mut t = Trail::open(dir.path(), key(), "n").unwrap();
        let tail = segment::scan(&path).unwrap();
        assert!(tail.sealed && tail.torn == 0 && tail.records == 3);
        t.append(br#"{"i":4}"#, &p).unwrap();
        assert_eq!(t.seq(), 4);
        assert_eq!(t.active_index(), 2);
    }
}
