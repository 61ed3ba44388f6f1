//! `audit verify` on mutated trail files.
//!
//! The harness writes a real trail once (the gateway's own writer, several sealed segments of
//! twelve records: six chained with HMAC-SHA256, then six with HMAC-SM3 after a switch, so the
//! chain headers are mutated too), then each input changes its files: flips, inserts or deletes bytes, truncates,
//! removes or duplicates a file. Property: whenever the files differ from the original (and are
//! not all gone), the verifier reports a problem; it never reports OK for a trail that differs,
//! and never panics.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use fenfa_gateway::audit::chain::{Algorithm, Key};
use fenfa_gateway::audit::verify::verify;
use fenfa_gateway::audit::writer::{Policy, Trail};
use libfuzzer_sys::fuzz_target;

fn key() -> Arc<Key> {
    Arc::new(Key::from_bytes(&[7u8; 32]).expect("32-byte key"))
}

/// The original trail: file name → bytes.
fn original() -> &'static BTreeMap<String, Vec<u8>> {
    static T: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = Policy {
            max_bytes: 700,
            max_age: Duration::from_secs(3600),
            retention: Duration::from_secs(3600),
            fsync_interval: Duration::from_secs(1),
        };
        let sm3 = Arc::new(
            Key::from_bytes(&[7u8; 32])
                .expect("32-byte key")
                .with_algorithm(Algorithm::HmacSm3),
        );
        for (key, records) in [(key(), 0..6), (sm3, 6..12)] {
            let mut t = Trail::open(dir.path(), key, "fuzz").expect("open trail");
            for i in records {
                let line = format!(
                    r#"{{"time":"2026-12-04T10:00:0{}.000Z","i":{i},"path":"/api/x"}}"#,
                    i % 10
                );
                t.append(line.as_bytes(), &p).expect("append");
            }
            t.seal("shutdown").expect("seal");
        }
        read_dir(dir.path())
    })
}

fn read_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read trail dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read"))
        })
        .collect()
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Flip { file: u8, at: u16, with: u8 },
    Insert { file: u8, at: u16, byte: u8 },
    Delete { file: u8, at: u16, len: u8 },
    Truncate { file: u8, at: u16 },
    Remove { file: u8 },
    CopyOver { from: u8, to: u8 },
}

fuzz_target!(|edits: Vec<Edit>| {
    let orig = original();
    let mut files = orig.clone();
    let names: Vec<String> = orig.keys().cloned().collect();
    let pick = |i: u8| names[usize::from(i) % names.len()].clone();
    for e in edits.iter().take(4) {
        match *e {
            Edit::Flip { file, at, with } => {
                if let Some(b) = files.get_mut(&pick(file)) {
                    if !b.is_empty() {
                        let i = usize::from(at) % b.len();
                        b[i] ^= with.max(1);
                    }
                }
            }
            Edit::Insert { file, at, byte } => {
                if let Some(b) = files.get_mut(&pick(file)) {
                    let i = usize::from(at) % (b.len() + 1);
                    b.insert(i, byte);
                }
            }
            Edit::Delete { file, at, len } => {
                if let Some(b) = files.get_mut(&pick(file)) {
                    if !b.is_empty() {
                        let i = usize::from(at) % b.len();
                        let end = (i + usize::from(len.max(1))).min(b.len());
                        b.drain(i..end);
                    }
                }
            }
            Edit::Truncate { file, at } => {
                if let Some(b) = files.get_mut(&pick(file)) {
                    let i = usize::from(at) % (b.len() + 1);
                    b.truncate(i);
                }
            }
            Edit::Remove { file } => {
                files.remove(&pick(file));
            }
            Edit::CopyOver { from, to } => {
                if let Some(b) = files.get(&pick(from)).cloned() {
                    files.insert(pick(to), b);
                }
            }
        }
    }
    // Unchanged, or wiped out entirely: an empty directory is indistinguishable from a trail
    // that never started, so file-local verification cannot tell (the shipped copy and the
    // control plane's cursor can; docs/audit.md says so).
    if &files == orig || files.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    let report = verify(dir.path(), &key()).expect("verify reads the dir");
    if report.problem.is_none() {
        let changed: Vec<(&String, usize, usize)> = orig
            .iter()
            .filter(|(n, b)| files.get(*n) != Some(b))
            .map(|(n, b)| (n, b.len(), files.get(n).map_or(0, Vec::len)))
            .collect();
        panic!("a changed trail verified: {report}; edits {edits:?}; changed files (name, before, after): {changed:?}");
    }
});
