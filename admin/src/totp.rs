//! TOTP (RFC 6238) with HMAC-SHA1, 30-second steps, 6 digits — what authenticator apps speak —
//! and the RFC 4648 base32 its secrets are exchanged in.
//!
//! Verification accepts the current step and one on either side (clock drift), and returns the
//! step that matched so the caller can refuse a code that was already used.

use ring::hmac;

pub const STEP: i64 = 30;
pub const DIGITS: u32 = 6;

/// The code for `secret` at unix time `t` with `digits` digits (RFC 6238 §4, RFC 4226 §5.3).
pub fn code_at(secret: &[u8], t: i64, digits: u32) -> u32 {
    hotp(secret, (t.max(0) / STEP) as u64, digits)
}

fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let h = tag.as_ref();
    let off = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[off] & 0x7f) << 24)
        | (u32::from(h[off + 1]) << 16)
        | (u32::from(h[off + 2]) << 8)
        | u32::from(h[off + 3]);
    bin % 10u32.pow(digits)
}

/// The 6-digit code at `t`, zero-padded, as an app shows it.
pub fn current(secret: &[u8], t: i64) -> String {
    format!("{:06}", code_at(secret, t, DIGITS))
}

/// The step (`t / 30`) whose code `code` is, within ±1 step of `t`; `None` if it matches none.
pub fn verify(secret: &[u8], code: &str, t: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let want: u32 = code.parse().ok()?;
    let step = t / STEP;
    let mut found = None;
    for s in [step - 1, step, step + 1] {
        // Check every candidate, so timing does not tell which one matched.
        if s >= 0 && hotp(secret, s as u64, DIGITS) == want {
            found = Some(s);
        }
    }
    found
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buf: u64 = 0;
    let mut bits = 0;
    for &b in bytes {
        buf = (buf << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive; padding, spaces and dashes ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buf: u64 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        if matches!(c, b'=' | b' ' | b'-') {
            continue;
        }
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase())? as u64;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://` URI authenticator apps scan.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits=6&period=30",
        base32_encode(secret)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the 20-byte ASCII seed and 8-digit codes.
    #[test]
    fn rfc6238_sha1_test_vectors() {
        let seed = b"12345678901234567890";
        let vectors = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (t, want) in vectors {
            assert_eq!(code_at(seed, t, 8), want, "T = {t}");
        }
        // Six digits are the last six of the eight.
        assert_eq!(current(seed, 59), "287082");
    }

    #[test]
    fn verify_accepts_adjacent_steps_only() {
        let seed = b"12345678901234567890";
        let t = 1_111_111_111;
        let now = current(seed, t);
        assert_eq!(verify(seed, &now, t), Some(t / 30));
        assert_eq!(verify(seed, &current(seed, t - 30), t), Some(t / 30 - 1));
        assert_eq!(verify(seed, &current(seed, t + 30), t), Some(t / 30 + 1));
        assert_eq!(verify(seed, &current(seed, t - 90), t), None);
        assert_eq!(verify(seed, "12345", t), None);
        assert_eq!(verify(seed, "abcdef", t), None);
    }

    #[test]
    fn base32_round_trips_rfc4648_vectors() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        assert!(base32_decode("1!").is_none());
        let seed = b"12345678901234567890";
        assert_eq!(base32_decode(&base32_encode(seed)).unwrap(), seed);
    }
}
