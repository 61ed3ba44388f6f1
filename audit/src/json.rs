//! Writing JSON text by hand, for the one object the proxy writes per request.
//!
//! The audit record is a flat object of strings and numbers with a fixed field order. Writing it
//! straight into one buffer costs a fraction of going through `serde_json` (no intermediate
//! strings, no formatting machinery for numbers and addresses), and the record is written on the
//! proxy thread for every request. The output is byte for byte what `serde_json` writes for the
//! same values (the tests in `record.rs` compare the two), so readers of the trail see no change.
//! Why not `serde_json`: `cargo bench --bench audit` (`encode`) measured 1.28 µs through it and
//! 0.41 µs here, on every request.

use std::io::Write;
use std::net::IpAddr;

/// Appends `s` as a JSON string (quoted, escaped exactly as `serde_json` does).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if needs_escape(s.as_bytes()) {
        push_escaped(out, s.as_bytes());
    } else {
        out.extend_from_slice(s.as_bytes());
    }
    out.push(b'"');
}

/// Appends the bytes of a UTF-8 string with JSON escapes, without quotes.
pub fn push_escaped(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            super::chain::push_hex(out, &[b]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// Whether [`push_escaped`] would change `s`: any control byte, `"` or `\\`. Eight bytes at a
/// time (most strings need no escape, and most are short).
pub fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is zero (exact for "is there any": a false mark only ever sits above a true one).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let has_special = |x: u64| {
        x.wrapping_sub(0x20 * ONES) & !x & HIGH != 0 // a byte below 0x20
            || has_zero(x ^ (b'"' as u64 * ONES))
            || has_zero(x ^ (b'\\' as u64 * ONES))
    };
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        if has_special(u64::from_le_bytes(b)) {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends an address as a JSON string (`"203.0.113.7"`, `"2001:db8::1"`).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        // Rare on this platform's edge; the standard formatting is exact and short.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote\" backslash\\ slash/".into(),
            "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}".into(),
            "中文 é 😀 \u{2028}".into(),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "a\"\\\u{0}\u{1}\n\t/é中😀\u{7f} ".chars().collect();
        for _ in 0..500 {
            let len = rng.usize(0..24);
            samples.push(
                (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect(),
            );
        }
        for s in samples {
            let mut out = Vec::new();
            push_str(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
            let mut raw = Vec::new();
            push_escaped(&mut raw, s.as_bytes());
            assert_eq!(needs_escape(s.as_bytes()), raw != s.as_bytes(), "{s:?}");
        }
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_byte_at_a_time_one() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        // Every byte value at every position of a word, amid fillers that stress the borrows.
        for filler in [b'a', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff] {
            for at in 0..17 {
                for b in 0..=255u8 {
                    let mut s = vec![filler; 17];
                    s[at] = b;
                    assert_eq!(
                        needs_escape(&s),
                        naive(&s),
                        "filler {filler:#x}, {b:#x} at {at}"
                    );
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20_000 {
            let s: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(0x1c..)).collect();
            assert_eq!(needs_escape(&s), naive(&s), "{s:?}");
        }
    }

    #[test]
    fn numbers_and_addresses_match_serde_json() {
        for n in [0, 7, 10, 999, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
        for ip in [
            "0.0.0.0",
            "203.0.113.7",
            "255.255.255.255",
            "::1",
            "2001:db8::8:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, serde_json::to_vec(&ip).unwrap());
        }
    }
}
