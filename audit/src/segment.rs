//! Segment files, the two signed state files beside them, rotation bookkeeping and retention.
//!
//! Layout of the audit directory:
//!
//! ```text
//! audit-0000000001.jsonl   sealed: records, then one checkpoint line
//! audit-0000000002.jsonl   the active segment (no checkpoint yet)
//! head.json                signed: how far the writer has written (segment, lines, last mac)
//! retention.json           signed: which segments retention deleted, and the mac they ended on
//! ship-http.cursor         the shipper's position (not part of the trail)
//! ```
//!
//! Segment numbers only grow and never repeat; a gap is a deleted segment. A segment is sealed
//! when it reaches `segment_max_bytes` or `segment_max_age`, at shutdown, and at the next start
//! after a crash: the writer appends a checkpoint line (chained like a record) and fsyncs.
//! Retention deletes the oldest sealed segments once they are older than `retention_days` (and,
//! when shipping is on, shipped), writing `retention.json` first so the verifier knows where the
//! trail now starts.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::chain::{self, Algorithm, Key, Line, Mac, GENESIS};

pub const HEAD_FILE: &str = "head.json";
pub const RETENTION_FILE: &str = "retention.json";

/// The file name of segment `index`.
pub fn name(index: u64) -> String {
    format!("audit-{index:010}.jsonl")
}

/// The index in a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(i) = entry.file_name().to_str().and_then(parse_name) {
            out.push((i, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(i, _)| *i);
    Ok(out)
}

/// The checkpoint that seals a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub segment: u64,
    pub node: String,
    /// Record lines in the segment (the checkpoint excluded).
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub opened_at: String,
    pub sealed_at: String,
    /// `size`, `age`, `shutdown` or `recovered` (sealed at the next start after a crash).
    pub reason: String,
}

/// The first line of a segment chained with HMAC-SM3, or of the first segment after the
/// algorithm changed: `{"chain":{…}}`, chained (its mac under `alg`) like any line, so a switch
/// is itself on the record and cannot be added, removed or altered unnoticed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainHeader {
    /// The algorithm of this line and every later line of the segment.
    pub alg: Algorithm,
    /// The algorithm of the segment before (`None` where the trail starts).
    pub previous: Option<Algorithm>,
    pub segment: u64,
    pub node: String,
    pub at: String,
}

/// How the verifier and the writer see a line's chained JSON.
#[derive(Debug, Default, Deserialize)]
pub struct LineInfo {
    pub seq: Option<u64>,
    pub checkpoint: Option<Checkpoint>,
    pub incident: Option<super::writer::Incident>,
    pub chain: Option<ChainHeader>,
}

impl LineInfo {
    pub fn of(line: &Line<'_>) -> Option<Self> {
        serde_json::from_slice(&line.canonical()).ok()
    }
}

/// `head.json`: the writer's last durable position.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    pub segment: u64,
    /// Lines (records and checkpoint) of that segment written so far.
    pub lines: u64,
    /// Hex mac of line `lines` (or the previous segment's last mac when `lines` is 0).
    pub last_mac: String,
    pub seq: u64,
}

/// `retention.json`: the trail starts at `first_segment`, whose first line links to `prev`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Retention {
    pub first_segment: u64,
    pub prev: String,
    pub last_seq: u64,
    pub at: String,
}

#[derive(Serialize, Deserialize)]
struct HeadDoc {
    head: Head,
}

#[derive(Serialize, Deserialize)]
struct RetentionDoc {
    retention: Retention,
}

/// Writes the signed head (temp file + rename; `durable` adds fsyncs).
pub fn write_head(dir: &Path, key: &Key, head: &Head, durable: bool) -> std::io::Result<()> {
    let body =
        serde_json::to_vec(&HeadDoc { head: head.clone() }).map_err(std::io::Error::other)?;
    write_file(&dir.join(HEAD_FILE), &key.sign_doc("head", &body), durable)
}

/// Reads the signed head: `Ok(None)` if there is none, `Err` if it does not verify.
pub fn read_head(dir: &Path, key: &Key) -> Result<Option<Head>, String> {
    read_doc::<HeadDoc>(dir, HEAD_FILE, "head", key).map(|d| d.map(|d| d.head))
}

pub fn write_retention(dir: &Path, key: &Key, r: &Retention) -> std::io::Result<()> {
    let body = serde_json::to_vec(&RetentionDoc {
        retention: r.clone(),
    })
    .map_err(std::io::Error::other)?;
    write_file(
        &dir.join(RETENTION_FILE),
        &key.sign_doc("retention", &body),
        true,
    )
}

pub fn read_retention(dir: &Path, key: &Key) -> Result<Option<Retention>, String> {
    read_doc::<RetentionDoc>(dir, RETENTION_FILE, "retention", key).map(|d| d.map(|d| d.retention))
}

fn read_doc<T: serde::de::DeserializeOwned>(
    dir: &Path,
    file: &str,
    domain: &str,
    key: &Key,
) -> Result<Option<T>, String> {
    let bytes = match std::fs::read(dir.join(file)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let canonical = key.open_doc(domain, &bytes)?;
    serde_json::from_slice(&canonical)
        .map(Some)
        .map_err(|e| format!("unexpected content: {e}"))
}

fn write_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    if durable {
        return fenfa_config::files::write_atomically(path, bytes);
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub fn fsync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What the writer needs to know about the newest segment at startup.
#[derive(Debug, Default)]
pub struct Tail {
    /// Complete lines.
    pub lines: u64,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Mac of the last complete line, if it has a well-formed tail.
    pub last_mac: Option<Mac>,
    /// Whether the last line is a checkpoint.
    pub sealed: bool,
    /// Length up to the end of the last complete line.
    pub good_len: u64,
    /// Bytes after the last newline (a torn write).
    pub torn: u64,
    pub opened_at: Option<String>,
    /// What the segment is chained with (its header's, else HMAC-SHA256).
    pub alg: Algorithm,
}

/// Scans a segment for its last complete line and counts.
pub fn scan(path: &Path) -> std::io::Result<Tail> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let good_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut t = Tail {
        good_len: good_len as u64,
        torn: (bytes.len() - good_len) as u64,
        ..Tail::default()
    };
    for raw in bytes[..good_len].split(|&b| b == b'\n') {
        if raw.is_empty() {
            continue;
        }
        t.lines += 1;
        let Some(line) = Line::split(raw) else {
            t.last_mac = None;
            t.sealed = false;
            continue;
        };
        t.last_mac = Some(line.mac);
        let info = LineInfo::of(&line).unwrap_or_default();
        if let (1, Some(h)) = (t.lines, &info.chain) {
            t.alg = h.alg;
        }
        t.sealed = info.checkpoint.is_some();
        if let Some(seq) = info.seq {
            t.records += 1;
            t.first_seq.get_or_insert(seq);
            t.last_seq = Some(seq);
            if t.opened_at.is_none() {
                t.opened_at = serde_json::from_slice::<serde_json::Value>(&line.canonical())
                    .ok()
                    .and_then(|v| v["time"].as_str().map(str::to_owned));
            }
        }
        if let Some(c) = info.checkpoint {
            t.last_seq = Some(c.last_seq);
        }
    }
    Ok(t)
}

/// Removes a torn final line (bytes after the last newline) so that new lines start clean.
pub fn cut_torn_tail(path: &Path, good_len: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(good_len)?;
    f.sync_all()
}

/// Reads the last line's mac of a sealed segment (its checkpoint).
pub fn last_mac(path: &Path) -> std::io::Result<Option<(Mac, u64)>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let back = len.min(64 * 1024);
    f.seek(SeekFrom::Start(len - back))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let last = text.rsplit(|&b| b == b'\n').next().unwrap_or_default();
    Ok(Line::split(last).and_then(|l| {
        let seq = LineInfo::of(&l)?.checkpoint?.last_seq;
        Some((l.mac, seq))
    }))
}

/// Deletes the oldest sealed segments older than `keep`, never `active` or later, never one
/// after `shipped_through`, and never leaving a gap. Returns how many were deleted.
pub fn apply_retention(
    dir: &Path,
    key: &Key,
    keep: Duration,
    active: u64,
    shipped_through: u64,
) -> std::io::Result<usize> {
    let now = SystemTime::now();
    let segments = list(dir)?;
    let mut doomed = Vec::new();
    for (i, path) in &segments {
        if *i >= active || *i > shipped_through {
            break;
        }
        let modified = std::fs::metadata(path)?.modified()?;
        if now.duration_since(modified).unwrap_or_default() < keep {
            break;
        }
        doomed.push((*i, path.clone()));
    }
    let Some((last_i, last_path)) = doomed.last().cloned() else {
        return Ok(0);
    };
    let Some((mac, last_seq)) = last_mac(&last_path)? else {
        tracing::error!(file = %last_path.display(), "retention: segment is not sealed by a checkpoint; keeping it");
        return Ok(0);
    };
    write_retention(
        dir,
        key,
        &Retention {
            first_segment: last_i + 1,
            prev: chain::hex(&mac),
            last_seq,
            at: super::time::format(now),
        },
    )?;
    for (_, path) in &doomed {
        std::fs::remove_file(path)?;
    }
    fsync_dir(dir);
    tracing::info!(
        deleted = doomed.len(),
        through = %name(last_i),
        "audit retention: deleted segments older than the retention period"
    );
    Ok(doomed.len())
}

/// Where the trail starts: from `retention.json`, else segment 1 after [`GENESIS`].
pub fn start(dir: &Path, key: &Key) -> Result<(u64, Mac, u64), String> {
    match read_retention(dir, key)? {
        Some(r) => {
            let prev = chain::unhex32(r.prev.as_bytes())
                .ok_or("retention.json: `prev` is not 64 hex digits")?;
            Ok((r.first_segment, prev, r.last_seq))
        }
        None => Ok((1, GENESIS, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse_back() {
        assert_eq!(name(3), "audit-0000000003.jsonl");
        assert_eq!(parse_name(&name(42)), Some(42));
        assert_eq!(parse_name("audit-3.jsonl"), None);
        assert_eq!(parse_name("head.json"), None);
        assert!(name(9) < name(10));
    }

    #[test]
    fn head_round_trips_and_a_forged_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_bytes(&[3u8; 32]).unwrap();
        let head = Head {
            segment: 2,
            lines: 5,
            last_mac: chain::hex(&[1u8; 32]),
            seq: 9,
        };
        write_head(dir.path(), &key, &head, false).unwrap();
        assert_eq!(read_head(dir.path(), &key).unwrap(), Some(head));
        let text = std::fs::read_to_string(dir.path().join(HEAD_FILE)).unwrap();
        std::fs::write(
            dir.path().join(HEAD_FILE),
            text.replace("\"lines\":5", "\"lines\":4"),
        )
        .unwrap();
        assert!(read_head(dir.path(), &key).is_err());
    }
}
