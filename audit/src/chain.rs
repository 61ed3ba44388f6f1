//! The hash chain: how each line of the trail is tied to the one before it, and the key that
//! makes the tie unforgeable.
//!
//! Every line of a segment is a JSON object whose last two members are `prev` and `mac`:
//!
//! ```text
//! {"time":"…",…,"seq":17,"prev":"<64 hex>","mac":"<64 hex>"}
//! ```
//!
//! `mac = HMAC(key, prev || canonical)` where `prev` is the previous line's `mac` (raw 32
//! bytes; the trail's first line uses 32 zero bytes, or the `prev` recorded by retention), and
//! `canonical` is the line's own bytes with the `,"prev":…,"mac":…` tail removed and `}` put back,
//! i.e. exactly the JSON object the writer chained, byte for byte. Nothing is re-serialised to
//! verify, so no JSON library version can make a good trail look bad.
//!
//! Changing any byte breaks that line's `mac`; removing, inserting or moving a line breaks the
//! next `prev`. Without the key nobody can compute a valid `mac`, so the key must be kept where
//! whoever can edit the log cannot read it (see `docs/audit.md`).
//!
//! The HMAC is HMAC-SHA256 or, with `audit.chain: hmac-sm3`, HMAC-SM3 (GB/T 32905, 国密), both
//! with 32-byte tags, so a line looks the same either way. All lines of a segment use one
//! algorithm: a segment chained with HMAC-SM3, and the first segment after a switch, opens with
//! a chained header line (`{"chain":{"alg":"hmac-sm3","previous":"hmac-sha256",…}}`, see
//! `segment::ChainHeader`) whose own mac is computed with the algorithm it names; a segment
//! without one is HMAC-SHA256 (every trail written before the setting existed). The verifier
//! reads the algorithm of each segment from there. Both algorithms use the same key bytes.
//!
//! The same sealing signs the two small state files (`head.json`, `retention.json`), with a
//! fixed per-file "prev" so that one can never be passed off as the other or as a record.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ::hmac::Mac as _;
use ring::hmac;

/// Length of the `,"prev":"…","mac":"…"}` tail of every line.
pub const TAIL_LEN: usize = PREV_TAG.len() + 64 + MAC_TAG.len() + 64 + 2;
const PREV_TAG: &[u8] = b",\"prev\":\"";
const MAC_TAG: &[u8] = b"\",\"mac\":\"";

/// A 32-byte MAC (or the zero "mac" before the first line).
pub type Mac = [u8; 32];

/// The `prev` of the very first line of a trail.
pub const GENESIS: Mac = [0; 32];

/// The MAC that chains the lines of a segment (`audit.chain` in the config).
pub use fenfa_config::model::ChainAlgorithm as Algorithm;

/// The other algorithm: a signed state file is opened with either.
fn other(alg: Algorithm) -> Algorithm {
    match alg {
        Algorithm::HmacSha256 => Algorithm::HmacSm3,
        Algorithm::HmacSm3 => Algorithm::HmacSha256,
    }
}

/// The chaining key.
pub struct Key {
    key: hmac::Key,
    /// The same key bytes for HMAC-SM3, keyed once and cloned per line.
    sm3: ::hmac::Hmac<sm3::Sm3>,
    /// What new segments are chained with.
    alg: Algorithm,
    /// Short fingerprint (first 8 hex digits of SHA-256 of the key) for messages.
    pub id: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("alg", &self.alg)
            .finish()
    }
}

impl Key {
    /// A key from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 32 {
            return Err(format!(
                "the audit key has {} bytes; at least 32 are needed",
                bytes.len()
            ));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let sm3 = <::hmac::Hmac<sm3::Sm3>>::new_from_slice(bytes)
            .map_err(|_| "the audit key cannot key HMAC-SM3".to_string())?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            sm3,
            alg: Algorithm::default(),
            id: hex(&digest.as_ref()[..4]),
        })
    }

    /// The same key, chaining new segments with `alg`.
    pub fn with_algorithm(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    /// What new segments are chained with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Reads a key file: hex text (64 or more hex digits, whitespace ignored).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the audit key {}: {e}", path.display()))?;
        let bytes = unhex(text.trim().as_bytes()).ok_or_else(|| {
            format!(
                "{}: the audit key must be hex text (64 hex digits or more)",
                path.display()
            )
        })?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the audit key file is readable by group or others; chmod 600 it");
            }
        }
        Self::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads the key at `path`, or creates it (32 random bytes, hex, mode 0600) if it does not
    /// exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        if path.exists() {
            return Self::load(path);
        }
        let rng = ring::rand::SystemRandom::new();
        let raw: [u8; 32] = ring::rand::generate(&rng)
            .map_err(|_| "no system randomness for the audit key".to_string())?
            .expose();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot create the audit key {}: {e}", path.display()))?;
        f.write_all(format!("{}\n", hex(&raw)).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write the audit key {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), "generated a new audit chain key");
        Self::from_bytes(&raw)
    }

    /// `HMAC(key, prev || canonical)` with `alg`, where `canonical = head || "}"`.
    pub fn link(&self, alg: Algorithm, prev: &Mac, head: &[u8]) -> Mac {
        let mut out = [0u8; 32];
        match alg {
            Algorithm::HmacSha256 => {
                let mut ctx = hmac::Context::with_key(&self.key);
                ctx.update(prev);
                ctx.update(head);
                ctx.update(b"}");
                out.copy_from_slice(ctx.sign().as_ref());
            }
            Algorithm::HmacSm3 => {
                let mut m = self.sm3.clone();
                m.update(prev);
                m.update(head);
                m.update(b"}");
                out.copy_from_slice(&m.finalize().into_bytes());
            }
        }
        out
    }

    /// Chains `body` (a JSON object ending in `}`) after `prev` with `alg`: returns the line
    /// (with its newline) and its mac. `extra` is inserted before the tail, e.g. `,"seq":17`.
    pub fn seal(
        &self,
        alg: Algorithm,
        prev: &Mac,
        body: &[u8],
        extra: &[u8],
        out: &mut Vec<u8>,
    ) -> Mac {
        let start = out.len();
        out.extend_from_slice(body.strip_suffix(b"}").unwrap_or(body));
        out.extend_from_slice(extra);
        let mac = self.link(alg, prev, &out[start..]);
        push_tail(out, prev, &mac);
        out.push(b'\n');
        mac
    }

    /// Checks a line's own mac under `alg` (not its link to the line before).
    pub fn check(&self, alg: Algorithm, line: &Line<'_>) -> bool {
        let want = self.link(alg, &line.prev, line.head);
        // Constant time: no early exit on the first differing byte.
        want.iter()
            .zip(line.mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Signs a standalone document (`head.json`, `retention.json`) under `domain`.
    pub fn sign_doc(&self, domain: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + TAIL_LEN + 1);
        self.seal(self.alg, &domain_prev(domain), body, b"", &mut out);
        out
    }

    /// Opens a document signed with [`Key::sign_doc`]: its canonical JSON, or why not. The
    /// bytes must be exactly what `sign_doc` wrote, final newline included: a verifier that
    /// shrugged at a missing byte would call a changed file intact.
    pub fn open_doc(&self, domain: &str, bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
        let bytes = bytes
            .strip_suffix(b"\n")
            .ok_or("not a signed document (its final newline is missing)")?;
        let line = Line::split(bytes).ok_or("not a signed document")?;
        // Signed with what chained the trail when it was written: either algorithm opens it
        // (both need the key).
        let signed = self.check(self.alg, &line) || self.check(other(self.alg), &line);
        if line.prev != domain_prev(domain) || !signed {
            return Err("its signature does not match (modified, replaced, or a different key)");
        }
        Ok(line.canonical())
    }
}

/// The fixed `prev` of a signed document kind.
fn domain_prev(domain: &str) -> Mac {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("fenfa-audit/{domain}").as_bytes(),
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn push_tail(out: &mut Vec<u8>, prev: &Mac, mac: &Mac) {
    out.extend_from_slice(PREV_TAG);
    push_hex(out, prev);
    out.extend_from_slice(MAC_TAG);
    push_hex(out, mac);
    out.extend_from_slice(b"\"}");
}

/// A line split into its chained part and its tail.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The line without the tail and without the closing `}`.
    pub head: &'a [u8],
    pub prev: Mac,
    pub mac: Mac,
}

impl<'a> Line<'a> {
    /// Splits a line (without its newline). `None` if it does not end in a well-formed tail.
    pub fn split(line: &'a [u8]) -> Option<Self> {
        if line.len() < TAIL_LEN + 2 || line[0] != b'{' {
            return None;
        }
        let (head, tail) = line.split_at(line.len() - TAIL_LEN);
        let rest = tail.strip_prefix(PREV_TAG)?;
        let (prev_hex, rest) = rest.split_at(64);
        let rest = rest.strip_prefix(MAC_TAG)?;
        let (mac_hex, rest) = rest.split_at(64);
        if rest != b"\"}" {
            return None;
        }
        Some(Self {
            head,
            prev: unhex32(prev_hex)?,
            mac: unhex32(mac_hex)?,
        })
    }

    /// The JSON object that was chained (head plus `}`).
    pub fn canonical(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.head.len() + 1);
        v.extend_from_slice(self.head);
        v.push(b'}');
        v
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    // Through a stack buffer: one capacity check per 32 bytes instead of one per digit (two
    // macs are written per record).
    for chunk in bytes.chunks(32) {
        let mut buf = [0u8; 64];
        for (pair, b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 15)];
        }
        out.extend_from_slice(&buf[..chunk.len() * 2]);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut v = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut v, bytes);
    String::from_utf8(v).unwrap_or_default()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    let s: Vec<u8> = s
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

pub fn unhex32(s: &[u8]) -> Option<Mac> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, p) in s.chunks(2).enumerate() {
        out[i] = lower_nibble(p[0])? << 4 | lower_nibble(p[1])?;
    }
    Some(out)
}

/// A hex digit as [`push_hex`] writes it (lowercase only): a `prev` or `mac` spelt any other
/// way is not what the writer wrote, so a trail with it must not verify (found by the
/// `audit_verify` fuzz target: an uppercased digit verified).
fn lower_nibble(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'F' => None,
        _ => nibble(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: Algorithm = Algorithm::HmacSha256;
    const SM3_VECTOR: &str = "80f910a2d35a9f87c2894ed5e109d3640b09b8bc73874ef7934c27184479749e";

    fn key() -> Key {
        Key::from_bytes(&[7u8; 32]).unwrap()
    }

    /// HMAC-SM3 as RFC 2104 defines HMAC, over the SM3 of GB/T 32905 (whose own vectors are
    /// checked in `fenfa-plugins`' upstream-signature tests): key `0x0b` × 32 (no padding
    /// beyond the 64-byte block), message `prev || head || "}"`; the tag was computed with
    /// Python's gmssl (`sm3.sm3_hash`) and the RFC 2104 construction written out by hand, and
    /// agrees with `openssl dgst -sm3 -mac HMAC` (OpenSSL 3).
    #[test]
    fn hmac_sm3_links_match_an_independent_implementation() {
        let k = Key::from_bytes(&[0x0b; 32]).unwrap();
        let mac = k.link(Algorithm::HmacSm3, &GENESIS, br#"{"a":1"#);
        assert_eq!(hex(&mac), SM3_VECTOR);
        assert_ne!(mac, k.link(SHA, &GENESIS, br#"{"a":1"#));
        let sm3 = Key::from_bytes(&[0x0b; 32])
            .unwrap()
            .with_algorithm(Algorithm::HmacSm3);
        let doc = sm3.sign_doc("head", br#"{"head":{}}"#);
        assert!(sm3.open_doc("head", &doc).is_ok());
        assert!(
            k.open_doc("head", &doc).is_ok(),
            "either algorithm opens a state file"
        );
    }

    #[test]
    fn a_sealed_line_is_json_and_verifies() {
        let k = key();
        let mut out = Vec::new();
        let mac = k.seal(SHA, &GENESIS, br#"{"a":1}"#, br#","seq":1"#, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let text = &out[..out.len() - 1];
        let v: serde_json::Value = serde_json::from_slice(text).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["seq"], 1);
        assert_eq!(v["mac"], hex(&mac));
        let line = Line::split(text).unwrap();
        assert!(k.check(SHA, &line));
        assert!(!k.check(Algorithm::HmacSm3, &line));
        assert_eq!(line.prev, GENESIS);
        assert_eq!(line.canonical(), br#"{"a":1,"seq":1}"#);
    }

    #[test]
    fn any_changed_byte_breaks_the_mac() {
        let k = key();
        let mut out = Vec::new();
        k.seal(SHA, &GENESIS, br#"{"status":200}"#, b"", &mut out);
        let text = String::from_utf8(out)
            .unwrap()
            .trim_end()
            .replace("200", "201");
        assert!(!k.check(SHA, &Line::split(text.as_bytes()).unwrap()));
    }

    #[test]
    fn a_different_key_does_not_verify() {
        let mut out = Vec::new();
        key().seal(SHA, &GENESIS, br#"{"a":1}"#, b"", &mut out);
        let other = Key::from_bytes(&[8u8; 32]).unwrap();
        assert!(!other.check(SHA, &Line::split(&out[..out.len() - 1]).unwrap()));
    }

    #[test]
    fn signed_documents_are_bound_to_their_kind() {
        let k = key();
        let doc = k.sign_doc("head", br#"{"head":{"segment":1}}"#);
        assert_eq!(
            k.open_doc("head", &doc).unwrap(),
            br#"{"head":{"segment":1}}"#
        );
        assert!(k.open_doc("retention", &doc).is_err());
    }

    /// Found by the `audit_verify` fuzz target: a `mac` with an uppercased hex digit verified.
    #[test]
    fn a_mac_spelt_in_uppercase_hex_is_refused() {
        let k = key();
        let doc = k.sign_doc("head", br#"{"head":{"segment":1}}"#);
        let text = String::from_utf8(doc).unwrap();
        let at = text.rfind("\"mac\":\"").unwrap() + 7;
        let tail = &text[at..];
        let i = tail
            .find(|c: char| c.is_ascii_lowercase())
            .expect("a hex letter in the mac");
        let mut upper = text.clone().into_bytes();
        upper[at + i] = upper[at + i].to_ascii_uppercase();
        assert!(k.open_doc("head", &upper).is_err());
        assert!(k.open_doc("head", text.as_bytes()).is_ok());
    }

    /// Found by the `audit_verify` fuzz target: `head.json` without its final newline verified.
    #[test]
    fn a_signed_document_missing_its_final_newline_is_refused() {
        let k = key();
        let doc = k.sign_doc("head", br#"{"head":{"segment":1}}"#);
        assert!(k.open_doc("head", &doc[..doc.len() - 1]).is_err());
        let mut extra = doc.clone();
        extra.push(b'\n');
        assert!(k.open_doc("head", &extra).is_err());
    }

    #[test]
    fn short_keys_are_refused_and_key_files_round_trip() {
        assert!(Key::from_bytes(&[1u8; 16]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let a = Key::load_or_create(&path).unwrap();
        let b = Key::load_or_create(&path).unwrap();
        assert_eq!(a.id, b.id);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
