//! SQL injection: libinjection's tokenizer and fingerprint list (the `libinjectionrs` crate, a
//! memory-safe Rust port of the C library that ModSecurity and the OWASP CRS use for their
//! `@detectSQLi` operator). It parses a value as SQL in the three quoting contexts an input
//! lands in (none, inside `'…'`, inside `"…"`), for ANSI and MySQL, folds the token stream to a
//! fingerprint (`s&sos`, `1UEok`) and looks it up among the ~9,000 fingerprints of real attacks.
//! It needs no per-payload signatures and does not fire on prose (`select a time slot`,
//! `O'Brien`), which is why it is the primary SQLi engine; [`super::rules`] adds a few
//! class-level backups (`UNION SELECT`, time delays, schema tables) for what it misses.
//!
//! Why not the `libinjection` / `libinjection-rs` crates: they are bindings to the C library
//! whose build scripts clone it from GitHub at build time (no network in builds here, and C in
//! the data plane).
//!
//! The port is young (0.1.x, pinned exactly): its authors deny panicking constructs except slice
//! indexing. A panic inside it is caught here and reported as a detection (`sqli-engine-fault`):
//! an input that crashes the parser is not let through unparsed.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// What the engine says about one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Injection,
    /// The engine panicked on this input.
    Fault,
}

/// Whether a value can hold SQL at all: a value of only letters, digits, `_ . , : @` and
/// non-ASCII text is a single token to a SQL parser, so libinjection is skipped for it.
pub fn worth_parsing(s: &str) -> bool {
    // Sixteen bytes at a time without a branch per byte (about half the instructions of a
    // short-circuiting scan on long benign values: tokens, IDs, base64).
    let mut chunks = s.as_bytes().chunks_exact(16);
    let hit = |c: &[u8]| {
        c.iter()
            .fold(false, |a, &b| a | SQL_SIGNIFICANT[usize::from(b)])
    };
    chunks.any(hit) || hit(chunks.remainder())
}

/// The bytes [`worth_parsing`] looks for, as a table (one load per byte instead of five tests):
/// ASCII that is not a letter, a digit or one of `_ . , : @`.
static SQL_SIGNIFICANT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b',' | b':' | b'@'));
        b += 1;
    }
    t
};

/// Runs libinjection's SQLi detection on `s`.
pub fn detect(s: &str) -> Verdict {
    if !worth_parsing(s) {
        return Verdict::Clean;
    }
    match catch_unwind(AssertUnwindSafe(|| {
        libinjectionrs::detect_sqli(s.as_bytes()).is_injection()
    })) {
        Ok(true) => Verdict::Injection,
        Ok(false) => Verdict::Clean,
        Err(_) => Verdict::Fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_significance_table_is_the_documented_byte_set() {
        for b in 0..=255u8 {
            let expected = b.is_ascii()
                && !b.is_ascii_alphanumeric()
                && !matches!(b, b'_' | b'.' | b',' | b':' | b'@');
            assert_eq!(SQL_SIGNIFICANT[usize::from(b)], expected, "byte {b:#04x}");
        }
        assert!(!worth_parsing("张三_2024.12,05:x@y"));
        assert!(worth_parsing("1 or 1"));
        // Wherever the one significant byte stands, in chunks and in the remainder.
        for len in 1..40 {
            for at in 0..len {
                let mut v = vec![b'x'; len];
                v[at] = b'\'';
                assert!(
                    worth_parsing(std::str::from_utf8(&v).unwrap()),
                    "{len} {at}"
                );
            }
            assert!(!worth_parsing(&"x".repeat(len)));
        }
    }

    #[test]
    fn known_payloads() {
        for p in [
            "1' OR '1'='1",
            "1 OR 1=1",
            "' or 1=1--",
            "admin'--",
            "1; DROP TABLE users",
            "-1 UNION SELECT 1,2,3",
            "1' AND SLEEP(5)#",
            "' UNION SELECT username, password FROM users--",
            "1) or (1=1",
            "1' waitfor delay '0:0:5'--",
        ] {
            assert_eq!(detect(p), Verdict::Injection, "{p}");
        }
    }

    #[test]
    fn prose_and_identifiers_are_clean() {
        for p in [
            "select a time slot",
            "O'Brien",
            "drop me a line",
            "how to update my e-mail?",
            "50% off",
            "C++ 培训补贴",
            "江苏省南京市鼓楼区中山北路30号(近鼓楼地铁站)",
            "320106197810164745",
            "2024-01-01T00:00:00+08:00",
            "paid,shipped",
            "-created_at",
        ] {
            assert_eq!(detect(p), Verdict::Clean, "{p}");
        }
    }
}
