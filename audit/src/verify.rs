//! `fenfa-gateway audit verify DIR`: checks that a trail is whole and unchanged, and names the
//! first place where it is not.
//!
//! Walking the segments in order, each line must (1) end in a well-formed `prev`/`mac` tail,
//! (2) match its own mac under the key (else it was changed or forged), (3) link to the line
//! before it (else a line was deleted, inserted or moved; `seq` tells which), and (4) a
//! checkpoint must count its segment's records and be the segment's last line. Segment numbers
//! must be consecutive from where the trail starts (segment 1, or the one `retention.json` names),
//! every segment but the newest must be sealed, and the newest must reach at least as far as the
//! signed `head.json` says the writer wrote (else the tail was cut).
//!
//! Each segment's algorithm (HMAC-SHA256 or HMAC-SM3) is read from its first line: a chain
//! header (`segment::ChainHeader`) names it, and its own mac must verify under it; a segment
//! without one is HMAC-SHA256. A header anywhere else is an inserted line. The report lists
//! which segments use which algorithm.
//!
//! What a chain cannot show on its own: an attacker who holds the key, or who rolls the whole
//! directory back to an older copy (head included). Shipping to the control plane covers the
//! latter; keeping the key out of reach covers the former.

use std::fmt;
use std::path::Path;

use super::chain::{self, Algorithm, Key, Line, Mac};
use super::segment::{self, LineInfo};

/// Where and how a trail is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name inside the audit dir.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    pub kind: Kind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The line's content does not match its mac.
    Modified,
    /// Lines are missing before this one.
    Deleted,
    /// This line is not where the chain says it should be.
    Reordered,
    /// This line does not belong here (a copy, or anything after a checkpoint).
    Inserted,
    /// The trail ends earlier than it should (cut, torn, or missing checkpoint).
    Truncated,
    /// A whole segment is missing.
    MissingSegment,
    /// Not an audit line at all.
    Malformed,
    /// A signed state file does not verify.
    BadStateFile,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Modified => "modified",
            Kind::Deleted => "deleted",
            Kind::Reordered => "reordered",
            Kind::Inserted => "inserted",
            Kind::Truncated => "truncated",
            Kind::MissingSegment => "missing segment",
            Kind::Malformed => "malformed",
            Kind::BadStateFile => "bad state file",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file,
            self.line,
            self.kind.as_str(),
            self.detail
        )
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub segments: u64,
    pub sealed: u64,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub key_id: String,
    /// Runs of consecutive segments chained with one algorithm: (first, last, algorithm).
    pub algorithms: Vec<(u64, u64, Algorithm)>,
    /// The first problem; `None` means the trail verifies.
    pub problem: Option<Problem>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Some(p) => write!(f, "BROKEN: {p}"),
            None => {
                write!(
                    f,
                    "OK: {} segments ({} sealed), {} records",
                    self.segments, self.sealed, self.records
                )?;
                if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
                    write!(f, ", seq {a}..{b}")?;
                }
                write!(f, ", key {}", self.key_id)?;
                for (i, (a, b, alg)) in self.algorithms.iter().enumerate() {
                    let sep = if i == 0 { "; chained with" } else { "," };
                    if a == b {
                        write!(f, "{sep} {alg} (segment {a})")?;
                    } else {
                        write!(f, "{sep} {alg} (segments {a}–{b})")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Verifies the trail in `dir` with `key`. `Err` only for I/O trouble reading the directory.
pub fn verify(dir: &Path, key: &Key) -> std::io::Result<Report> {
    let mut report = Report {
        key_id: key.id.clone(),
        ..Report::default()
    };
    report.problem = walk(dir, key, &mut report)?;
    Ok(report)
}

fn problem(file: &str, line: u64, kind: Kind, detail: impl Into<String>) -> Option<Problem> {
    Some(Problem {
        file: file.to_string(),
        line,
        kind,
        detail: detail.into(),
    })
}

fn walk(dir: &Path, key: &Key, report: &mut Report) -> std::io::Result<Option<Problem>> {
    let (mut expect_index, mut prev, last_seq) = match segment::start(dir, key) {
        Ok(s) => s,
        Err(e) => return Ok(problem(segment::RETENTION_FILE, 1, Kind::BadStateFile, e)),
    };
    let head = match segment::read_head(dir, key) {
        Ok(h) => h,
        Err(e) => return Ok(problem(segment::HEAD_FILE, 1, Kind::BadStateFile, e)),
    };
    let mut expect_seq = last_seq + 1;
    let segments: Vec<_> = segment::list(dir)?
        .into_iter()
        .filter(|(i, _)| *i >= expect_index)
        .collect();
    let last_index = segments.last().map(|(i, _)| *i);
    // Lines of the segment the head names, and the mac of its line `head.lines`.
    let mut at_head: Option<(u64, Option<Mac>)> = None;

    for (index, path) in &segments {
        let file = segment::name(*index);
        if *index != expect_index {
            let missing = if *index == expect_index + 1 {
                segment::name(expect_index)
            } else {
                format!(
                    "{} … {}",
                    segment::name(expect_index),
                    segment::name(index - 1)
                )
            };
            return Ok(problem(
                &file,
                1,
                Kind::MissingSegment,
                format!("the segment(s) before this one are gone: {missing} (deleted)"),
            ));
        }
        let bytes = std::fs::read(path)?;
        report.segments += 1;
        let mut records = 0u64;
        let mut checkpoint_at: Option<u64> = None;
        let mut n = 0u64;
        let head_here = head.as_ref().filter(|h| h.segment == *index);
        let mut head_mac = None;
        let mut alg = Algorithm::HmacSha256;
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            n += 1;
            let (raw, torn) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let raw = &rest[..i];
                    rest = &rest[i + 1..];
                    (raw, false)
                }
                None => {
                    let raw = rest;
                    rest = &[];
                    (raw, true)
                }
            };
            if torn {
                return Ok(problem(&file, n, Kind::Truncated, format!(
                    "the last line is incomplete ({} bytes, no newline): the file was cut or a write was torn", raw.len()
                )));
            }
            if let Some(cp) = checkpoint_at {
                return Ok(problem(&file, n, Kind::Inserted, format!(
                    "a line after the checkpoint on line {cp}; a sealed segment ends with its checkpoint"
                )));
            }
            let Some(line) = Line::split(raw) else {
                return Ok(problem(
                    &file,
                    n,
                    Kind::Malformed,
                    "not an audit line (no `prev`/`mac` tail): inserted or damaged",
                ));
            };
            let info = LineInfo::of(&line).unwrap_or_default();
            if let (1, Some(h)) = (n, &info.chain) {
                alg = h.alg;
            }
            if !key.check(alg, &line) {
                return Ok(problem(&file, n, Kind::Modified, format!(
                    "the line does not match its {alg} mac: it was changed, or forged and inserted (or this is not the trail's key)")));
            }
            if line.prev != prev {
                let (kind, detail) = match (info.seq, &info.checkpoint) {
                    (Some(seq), _) if seq > expect_seq && has_seq(rest, expect_seq) => (Kind::Reordered, format!(
                        "does not link to the line before it: seq {seq} comes before seq {expect_seq}, which is further down (lines moved)")),
                    (Some(seq), _) if seq > expect_seq => (Kind::Deleted, if seq == expect_seq + 1 {
                        format!("does not link to the line before it: the record with seq {expect_seq} is missing (deleted)")
                    } else {
                        format!("does not link to the line before it: the records with seq {expect_seq}..{} are missing (deleted)", seq - 1)
                    }),
                    (Some(seq), _) if seq < expect_seq => (Kind::Inserted, format!(
                        "does not link to the line before it: a copy of the earlier record with seq {seq} (seq {expect_seq} was expected)")),
                    (Some(_), _) if n == 1 => (Kind::Reordered,
                        "does not link to the last line of the previous segment (segments replaced or renamed)".to_string()),
                    (_, Some(_)) => (Kind::Deleted,
                        "the checkpoint does not link to the line before it: the segment's last record(s) are missing".to_string()),
                    _ => (Kind::Inserted, "does not link to the line before it".to_string()),
                };
                return Ok(problem(&file, n, kind, detail));
            }
            if let Some(inc) = info.incident {
                let noted = format!("noted by the gateway at {} in {file}:{n}", inc.at);
                return Ok(match inc.kind.as_str() {
                    "shorter_than_head" => problem(&segment::name(inc.segment), inc.found_lines + 1, Kind::Truncated, format!(
                        "when the gateway started, {}; the tail was cut or the segment deleted while it was stopped ({noted})", inc.detail)),
                    _ => problem(segment::HEAD_FILE, 1, Kind::BadStateFile, format!(
                        "when the gateway started, {} ({noted})", inc.detail)),
                });
            }
            match (info.seq, info.checkpoint) {
                (None, None) if info.chain.is_some() => {
                    let segment = info.chain.as_ref().map_or(0, |h| h.segment);
                    if n != 1 {
                        return Ok(problem(
                            &file,
                            n,
                            Kind::Inserted,
                            "a chain header where only the first line of a segment may have one",
                        ));
                    }
                    if segment != *index {
                        return Ok(problem(&file, n, Kind::Reordered, format!(
                            "the chain header opens segment {segment} but this file is segment {index} (renamed)")));
                    }
                }
                (Some(seq), None) => {
                    if seq != expect_seq {
                        return Ok(problem(
                            &file,
                            n,
                            Kind::Reordered,
                            format!("seq {seq} where {expect_seq} was expected"),
                        ));
                    }
                    report.first_seq.get_or_insert(seq);
                    report.last_seq = Some(seq);
                    expect_seq += 1;
                    records += 1;
                }
                (None, Some(cp)) => {
                    if cp.segment != *index {
                        return Ok(problem(&file, n, Kind::Reordered, format!(
                            "the checkpoint seals segment {} but this file is segment {index} (renamed)", cp.segment)));
                    }
                    if cp.records != records {
                        return Ok(problem(
                            &file,
                            n,
                            Kind::Deleted,
                            format!(
                                "the checkpoint counts {} records, the segment has {records}",
                                cp.records
                            ),
                        ));
                    }
                    checkpoint_at = Some(n);
                }
                _ => {
                    return Ok(problem(
                        &file,
                        n,
                        Kind::Malformed,
                        "neither a record (`seq`) nor a checkpoint",
                    ))
                }
            }
            prev = line.mac;
            if head_here.is_some_and(|h| h.lines == n) {
                head_mac = Some(line.mac);
            }
        }
        report.records += records;
        match report.algorithms.last_mut() {
            Some((_, last, a)) if *a == alg => *last = *index,
            _ => report.algorithms.push((*index, *index, alg)),
        }
        if checkpoint_at.is_some() {
            report.sealed += 1;
        } else if Some(*index) != last_index {
            return Ok(problem(&file, n + 1, Kind::Truncated,
                "the segment ends without its checkpoint but a newer segment follows: its tail was cut"));
        }
        if head_here.is_some() {
            at_head = Some((n, head_mac));
        }
        expect_index += 1;
    }

    if let Some(h) = &head {
        if h.lines > 0 && h.segment >= expect_index {
            return Ok(problem(&segment::name(h.segment), 1, Kind::MissingSegment, format!(
                "head.json says the writer reached line {} of this segment, but it is gone (the newest segment(s) were deleted)", h.lines)));
        }
        if let Some((lines, mac)) = at_head {
            let file = segment::name(h.segment);
            if lines < h.lines {
                return Ok(problem(&file, lines + 1, Kind::Truncated, format!(
                    "head.json says the writer wrote {} lines here; only {lines} remain (the tail was cut)", h.lines)));
            }
            if h.lines > 0 && mac.map(|m| chain::hex(&m)) != Some(h.last_mac.clone()) {
                return Ok(problem(
                    &file,
                    h.lines,
                    Kind::Modified,
                    "does not match the mac head.json recorded for it",
                ));
            }
        }
    } else if !segments.is_empty() {
        return Ok(problem(
            segment::HEAD_FILE,
            1,
            Kind::BadStateFile,
            "head.json is missing: the end of the trail cannot be vouched for (deleted?)",
        ));
    }
    Ok(None)
}

/// Whether a record with `seq` is somewhere in `rest` (the lines after the current one).
fn has_seq(rest: &[u8], seq: u64) -> bool {
    let needle = format!(",\"seq\":{seq},\"prev\":\"");
    rest.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::writer::{Policy, Trail};

    fn key() -> Arc<Key> {
        Arc::new(Key::from_bytes(&[5u8; 32]).unwrap())
    }

    /// A trail of `n` records in segments of about 3 records each, sealed.
    fn trail(n: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Trail::open(dir.path(), key(), "n").unwrap();
        let p = Policy {
            max_bytes: 600,
            max_age: std::time::Duration::from_secs(3600),
            retention: std::time::Duration::from_secs(3600),
            fsync_interval: std::time::Duration::from_secs(1),
        };
        for i in 0..n {
            t.append(
                format!(r#"{{"time":"t","i":{i},"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#)
                    .as_bytes(),
                &p,
            )
            .unwrap();
        }
        t.seal("shutdown").unwrap();
        dir
    }

    fn lines(dir: &Path, seg: u64) -> Vec<String> {
        std::fs::read_to_string(dir.join(segment::name(seg)))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(dir: &Path, seg: u64, lines: &[String]) {
        let mut s = lines.join("\n");
        s.push('\n');
        std::fs::write(dir.join(segment::name(seg)), s).unwrap();
    }

    fn broken(dir: &Path) -> Problem {
        let r = verify(dir, &key()).unwrap();
        r.problem
            .clone()
            .unwrap_or_else(|| panic!("expected a problem, got {r}"))
    }

    /// `trail(n)` written on: the trail reopened with `key` chaining new segments, `n` more.
    fn continue_with(dir: &Path, key: Key, from: usize, n: usize) {
        let mut t = Trail::open(dir, Arc::new(key), "n").unwrap();
        let p = Policy {
            max_bytes: 600,
            max_age: std::time::Duration::from_secs(3600),
            retention: std::time::Duration::from_secs(3600),
            fsync_interval: std::time::Duration::from_secs(1),
        };
        for i in from..from + n {
            t.append(format!(r#"{{"time":"t","i":{i}}}"#).as_bytes(), &p)
                .unwrap();
        }
        t.seal("shutdown").unwrap();
    }

    fn sm3_key() -> Key {
        Key::from_bytes(&[5u8; 32])
            .unwrap()
            .with_algorithm(Algorithm::HmacSm3)
    }

    #[test]
    fn a_switch_to_hmac_sm3_and_back_is_chained_and_each_segment_verifies_with_its_own() {
        let dir = trail(6);
        let before = segment::list(dir.path()).unwrap().len() as u64;
        continue_with(dir.path(), sm3_key(), 6, 6);
        let after_sm3 = segment::list(dir.path()).unwrap().len() as u64;
        continue_with(dir.path(), Key::from_bytes(&[5u8; 32]).unwrap(), 12, 2);
        let all = segment::list(dir.path()).unwrap().len() as u64;

        // Every SM3 segment opens with a header; the first names the switch.
        let first_sm3 = lines(dir.path(), before + 1);
        let header: serde_json::Value = serde_json::from_str(&first_sm3[0]).unwrap();
        assert_eq!(header["chain"]["alg"], "hmac-sm3", "{header}");
        assert_eq!(header["chain"]["previous"], "hmac-sha256", "{header}");
        let second_sm3: serde_json::Value =
            serde_json::from_str(&lines(dir.path(), before + 2)[0]).unwrap();
        assert_eq!(second_sm3["chain"]["previous"], "hmac-sm3");
        // Back to SHA-256: one header for the switch back.
        let back: serde_json::Value =
            serde_json::from_str(&lines(dir.path(), after_sm3 + 1)[0]).unwrap();
        assert_eq!(back["chain"]["alg"], "hmac-sha256");
        assert_eq!(back["chain"]["previous"], "hmac-sm3");

        // Either key object verifies: the algorithm is read per segment, not configured.
        for k in [key(), Arc::new(sm3_key())] {
            let r = verify(dir.path(), &k).unwrap();
            assert!(r.problem.is_none(), "{r}");
            assert_eq!(r.records, 14);
            assert_eq!(
                r.algorithms,
                vec![
                    (1, before, Algorithm::HmacSha256),
                    (before + 1, after_sm3, Algorithm::HmacSm3),
                    (after_sm3 + 1, all, Algorithm::HmacSha256)
                ]
            );
            assert!(r.to_string().contains("hmac-sm3 (segments"), "{r}");
        }
    }

    #[test]
    fn an_sm3_segment_passed_off_as_sha256_or_a_header_moved_is_found() {
        let dir = trail(3);
        let before = segment::list(dir.path()).unwrap().len() as u64;
        continue_with(dir.path(), sm3_key(), 3, 6);
        let seg = before + 1;
        let good = lines(dir.path(), seg);
        // The header's algorithm changed: its mac no longer matches.
        let mut l = good.clone();
        l[0] = l[0].replace("\"alg\":\"hmac-sm3\"", "\"alg\":\"hmac-sha256\"");
        write(dir.path(), seg, &l);
        assert_eq!(broken(dir.path()).kind, Kind::Modified);
        // The header removed: the records are checked as HMAC-SHA256 and fail.
        write(dir.path(), seg, &good[1..]);
        let p = broken(dir.path());
        assert_eq!((p.line, p.kind), (1, Kind::Modified), "{p}");
        // The header moved below a record.
        let mut l = good.clone();
        l.swap(0, 1);
        write(dir.path(), seg, &l);
        assert_eq!(broken(dir.path()).line, 1);
        write(dir.path(), seg, &good);
        assert!(verify(dir.path(), &key()).unwrap().problem.is_none());
    }

    #[test]
    fn a_clean_trail_verifies() {
        let dir = trail(10);
        let r = verify(dir.path(), &key()).unwrap();
        assert!(r.problem.is_none(), "{r}");
        assert_eq!(r.records, 10);
        assert!(r.segments >= 3);
        assert_eq!(r.segments, r.sealed);
    }

    #[test]
    fn a_modified_field_is_reported_at_its_line() {
        let dir = trail(10);
        let mut l = lines(dir.path(), 2);
        l[1] = l[1].replace("\"i\":", "\"i\":1");
        write(dir.path(), 2, &l);
        let p = broken(dir.path());
        assert_eq!(
            (p.file.as_str(), p.line, p.kind),
            ("audit-0000000002.jsonl", 2, Kind::Modified),
            "{p}"
        );
    }

    #[test]
    fn a_deleted_line_is_reported_where_the_gap_is() {
        let dir = trail(10);
        let mut l = lines(dir.path(), 1);
        l.remove(1);
        write(dir.path(), 1, &l);
        let p = broken(dir.path());
        assert_eq!((p.line, p.kind), (2, Kind::Deleted), "{p}");
    }

    #[test]
    fn swapped_lines_are_reported_at_the_first_one() {
        let dir = trail(10);
        let mut l = lines(dir.path(), 1);
        l.swap(0, 1);
        write(dir.path(), 1, &l);
        let p = broken(dir.path());
        assert_eq!(
            (p.file.as_str(), p.line, p.kind),
            ("audit-0000000001.jsonl", 1, Kind::Reordered),
            "{p}"
        );
    }

    #[test]
    fn a_copied_line_is_reported_as_inserted_or_reordered() {
        let dir = trail(10);
        let mut l = lines(dir.path(), 1);
        let copy = l[0].clone();
        l.insert(2, copy);
        write(dir.path(), 1, &l);
        let p = broken(dir.path());
        assert_eq!((p.line, p.kind), (3, Kind::Inserted), "{p}");
    }

    #[test]
    fn a_cut_tail_is_reported_after_the_last_line_left() {
        let dir = trail(10);
        let last = segment::list(dir.path()).unwrap().last().unwrap().0;
        let l = lines(dir.path(), last);
        write(dir.path(), last, &l[..1]);
        let p = broken(dir.path());
        assert_eq!(
            (p.file.clone(), p.line, p.kind),
            (segment::name(last), 2, Kind::Truncated),
            "{p}"
        );
    }

    #[test]
    fn a_deleted_segment_is_reported_at_the_next_one() {
        let dir = trail(10);
        std::fs::remove_file(dir.path().join(segment::name(2))).unwrap();
        let p = broken(dir.path());
        assert_eq!(
            (p.file.as_str(), p.line, p.kind),
            ("audit-0000000003.jsonl", 1, Kind::MissingSegment),
            "{p}"
        );
        assert!(p.detail.contains("audit-0000000002.jsonl"), "{p}");
    }

    #[test]
    fn deleting_the_newest_segment_is_caught_by_the_head() {
        let dir = trail(10);
        let last = segment::list(dir.path()).unwrap().last().unwrap().0;
        std::fs::remove_file(dir.path().join(segment::name(last))).unwrap();
        let p = broken(dir.path());
        assert_eq!(
            (p.file.clone(), p.kind),
            (segment::name(last), Kind::MissingSegment),
            "{p}"
        );
    }

    #[test]
    fn a_tail_cut_while_stopped_stays_visible_after_the_next_start() {
        let dir = trail(10);
        let last = segment::list(dir.path()).unwrap().last().unwrap().0;
        let l = lines(dir.path(), last);
        write(dir.path(), last, &l[..1]);
        // The gateway starts again on the cut trail, seals it and writes on.
        let mut t = Trail::open(dir.path(), key(), "n").unwrap();
        t.append(br#"{"i":99}"#, &crate::writer::tests::policy(1 << 20))
            .unwrap();
        t.seal("shutdown").unwrap();
        let p = broken(dir.path());
        assert_eq!(
            (p.file, p.line, p.kind),
            (segment::name(last), 2, Kind::Truncated)
        );
        assert!(p.detail.contains("while it was stopped"), "{}", p.detail);
    }

    #[test]
    fn the_wrong_key_fails_on_the_first_line() {
        let dir = trail(3);
        let other = Key::from_bytes(&[6u8; 32]).unwrap();
        let r = verify(dir.path(), &other).unwrap();
        assert!(r.problem.is_some());
    }

    #[test]
    fn retention_moves_the_start_and_the_rest_still_verifies() {
        let dir = trail(10);
        let k = key();
        let n = segment::apply_retention(dir.path(), &k, std::time::Duration::ZERO, 3, u64::MAX)
            .unwrap();
        assert_eq!(n, 2);
        let r = verify(dir.path(), &k).unwrap();
        assert!(r.problem.is_none(), "{r}");
        // Deleting the new oldest segment without a retention record is caught.
        std::fs::remove_file(dir.path().join(segment::name(3))).unwrap();
        assert_eq!(broken(dir.path()).kind, Kind::MissingSegment);
    }
}
