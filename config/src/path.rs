//! Request path normalisation.
//!
//! Every request path is normalised exactly once, before routing, so that the router, the
//! plugins and the upstream all see the same canonical path and cannot be told apart by
//! `/admin` vs `/%61dmin` vs `/x/../admin`. This module only rewrites or rejects paths; it
//! never decides what a path *means* (that is the router's job) and it never sees the query.
//!
//! The rules, applied left to right:
//!
//! * the path must start with `/` ([`PathError::NotAbsolute`]);
//! * raw control bytes (`< 0x20`, `0x7F`) are rejected ([`PathError::ControlCharacter`]),
//!   and so is a raw `\` ([`PathError::Backslash`]);
//! * `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every other
//!   escape is kept with its hex digits uppercased (`%c3%a9` → `%C3%A9`);
//!   `%2F` ([`PathError::EncodedSlash`]), `%00` ([`PathError::EncodedNul`]) and `%5C`
//!   ([`PathError::Backslash`]) are rejected, and a `%` not followed by two hex digits is
//!   [`PathError::InvalidPercentEncoding`];
//! * runs of `/` collapse to one;
//! * a `.` or `..` segment carrying a `;` parameter (`..;`, `.;x`, `%2e%2e;y`) is
//!   [`PathError::DotSegmentParameters`]: servlet containers drop the parameter and then resolve
//!   the dot segment, so the backend would see another path than the router decided on;
//! * `.` and `..` segments (including those spelt `%2e`) are removed as in RFC 3986 §5.2.4,
//!   except that a `..` which would climb above the root is [`PathError::ClimbsAboveRoot`]
//!   rather than silently dropped;
//! * a trailing slash is kept (`/a/b/` stays `/a/b/`, `/a/.` becomes `/a/`, `/a/..` becomes `/`).
//!
//! Already-normal paths — the overwhelmingly common case — are checked in one pass and
//! returned as [`Cow::Borrowed`] without allocating. The output is a fixed point:
//! `normalize(normalize(p)) == normalize(p)`.
//!
//! Bytes outside ASCII are passed through untouched (`http::Uri` never produces them).
//!
//! Why by hand: these are security rules, not URL syntax. The `url` crate's WHATWG
//! normalisation turns `\` into `/` and climbs silently above the root, exactly what this module
//! must refuse; and the common case here allocates nothing.

use std::borrow::Cow;

/// Why a request path was rejected. Each variant maps to a `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path does not start with '/'")]
    NotAbsolute,
    /// A `%` is not followed by two hexadecimal digits.
    #[error("invalid percent-encoding in path ('%' must be followed by two hex digits)")]
    InvalidPercentEncoding,
    /// `%2F` would smuggle a segment separator past the router.
    #[error("encoded slash (%2F) in path")]
    EncodedSlash,
    /// `%00` truncates paths in too many upstreams to be allowed.
    #[error("encoded NUL (%00) in path")]
    EncodedNul,
    /// A raw `\` or `%5C`, which some upstreams treat as a separator.
    #[error("backslash ('\\' or %5C) in path")]
    Backslash,
    /// A `..` segment would go above `/`.
    #[error("'..' in path climbs above the root")]
    ClimbsAboveRoot,
    /// A raw byte below 0x20 or 0x7F (DEL).
    #[error("control character in path")]
    ControlCharacter,
    /// A `.` or `..` segment carrying a path parameter (`..;x`, `.;jsessionid=1`): Tomcat and
    /// Spring resolve `/a/..;/b` to `/b` on the backend, after the router saw `/a/..;/b`.
    #[error("'.' or '..' segment with a ';' parameter in path")]
    DotSegmentParameters,
}

/// Normalises the path part of a request target (no query string).
///
/// Returns the input unchanged and borrowed when it is already normal, a newly built string
/// when something had to be rewritten, or the first problem found, reading left to right.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    if is_normal(rest) {
        return Ok(Cow::Borrowed(raw));
    }
    rewrite(rest).map(Cow::Owned)
}

/// Fast check: `true` only if [`rewrite`] would return the path unchanged.
///
/// Anything doubtful (including every error) answers `false` and is left to [`rewrite`],
/// which is the single source of truth for errors and their order.
fn is_normal(rest: &str) -> bool {
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last)
            || segment == "."
            || segment == ".."
            || segment.starts_with(".;")
            || segment.starts_with("..;")
        {
            return false;
        }
        let bytes = segment.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return false;
                };
                let (Some(h), Some(l)) = (upper_hex_value(hi), upper_hex_value(lo)) else {
                    return false;
                };
                let value = (h << 4) | l;
                if is_unreserved(value) || is_forbidden_escape(value) {
                    return false;
                }
                i += 3;
            } else if is_control(b) || b == b'\\' {
                return false;
            } else {
                i += 1;
            }
        }
    }
    true
}

/// Slow path: builds the normal form of `/` + `rest`, or reports the first error.
fn rewrite(rest: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(rest.len() + 1);
    // Whether the output should end with `/`: set by empty, `.` and `..` segments,
    // cleared by any ordinary segment after them.
    let mut trailing_slash = false;
    for segment in rest.split('/') {
        if segment.is_empty() {
            trailing_slash = true;
            continue;
        }
        let start = out.len();
        out.push('/');
        decode_segment(segment, &mut out)?;
        let decoded = out.get(start + 1..).unwrap_or_default();
        if decoded.starts_with(".;") || decoded.starts_with("..;") {
            return Err(PathError::DotSegmentParameters);
        }
        match out.get(start + 1..) {
            Some(".") => {
                out.truncate(start);
                trailing_slash = true;
            }
            Some("..") => {
                out.truncate(start);
                let Some(parent) = out.rfind('/') else {
                    return Err(PathError::ClimbsAboveRoot);
                };
                out.truncate(parent);
                trailing_slash = true;
            }
            _ => trailing_slash = false,
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Appends the normal form of one segment (no `/` inside) to `out`.
fn decode_segment(segment: &str, out: &mut String) -> Result<(), PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = segment.as_bytes();
    // Start of the run of bytes that are copied verbatim. Runs always start and end next to
    // ASCII bytes, so slicing `segment` at these indices is on char boundaries.
    let mut run_start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(h), Some(l)) = (hi, lo) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            out.push_str(segment.get(run_start..i).unwrap_or_default());
            match (h << 4) | l {
                0x00 => return Err(PathError::EncodedNul),
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::Backslash),
                value if is_unreserved(value) => out.push(char::from(value)),
                _ => {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(h)]));
                    out.push(char::from(HEX[usize::from(l)]));
                }
            }
            i += 3;
            run_start = i;
        } else if is_control(b) {
            return Err(PathError::ControlCharacter);
        } else if b == b'\\' {
            return Err(PathError::Backslash);
        } else {
            i += 1;
        }
    }
    out.push_str(segment.get(run_start..).unwrap_or_default());
    Ok(())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Escapes that are errors rather than kept: `%00`, `%2F`, `%5C`.
fn is_forbidden_escape(b: u8) -> bool {
    matches!(b, 0x00 | b'/' | b'\\')
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Like [`hex_value`] but only for the canonical (uppercase) spelling.
fn upper_hex_value(b: u8) -> Option<u8> {
    match b {
        b'a'..=b'f' => None,
        _ => hex_value(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(table: &[(&str, Result<&str, PathError>)]) {
        for &(input, expected) in table {
            let got = normalize(input);
            assert_eq!(got.as_deref().map_err(|e| *e), expected, "input {input:?}");
        }
    }

    #[test]
    fn normal_paths_are_returned_borrowed() {
        for path in [
            "/",
            "/a",
            "/a/b/",
            "/api/v1/users/42",
            "/caf%C3%A9",
            "/a%20b",
            "/%25",
            "/a.b/c..d/.e/..f",
            "/~user/-x_",
            "/a:b@c!$&'()*+,;=",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path:?} should be borrowed unchanged"
            );
        }
    }

    #[test]
    fn rewritten_paths_are_owned() {
        assert!(matches!(normalize("/a//b"), Ok(Cow::Owned(_))));
        assert!(matches!(normalize("/%7e"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn path_must_be_absolute() {
        check(&[
            ("", Err(PathError::NotAbsolute)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("*", Err(PathError::NotAbsolute)),
            ("%2F", Err(PathError::NotAbsolute)),
        ]);
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        check(&[
            ("/%41", Ok("/A")),
            ("/%7e", Ok("/~")),
            ("/%7E", Ok("/~")),
            ("/%2d%5f%2E", Ok("/-_.")),
            ("/%61dmin", Ok("/admin")),
            ("/%c3%a9", Ok("/%C3%A9")),
            ("/%C3%a9", Ok("/%C3%A9")),
            ("/a%20b", Ok("/a%20b")),
            ("/%3f%23", Ok("/%3F%23")),
            ("/%25", Ok("/%25")),
            ("/%2541", Ok("/%2541")),
            ("/%7f", Ok("/%7F")),
            ("/é", Ok("/é")),
        ]);
    }

    #[test]
    fn forbidden_escapes_are_rejected() {
        check(&[
            ("/a%2Fb", Err(PathError::EncodedSlash)),
            ("/a%2fb", Err(PathError::EncodedSlash)),
            ("/%00", Err(PathError::EncodedNul)),
            ("/a%5Cb", Err(PathError::Backslash)),
            ("/a%5cb", Err(PathError::Backslash)),
            ("/a\\b", Err(PathError::Backslash)),
            ("/\\", Err(PathError::Backslash)),
        ]);
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        check(&[
            ("/%zz", Err(PathError::InvalidPercentEncoding)),
            ("/%4", Err(PathError::InvalidPercentEncoding)),
            ("/a%", Err(PathError::InvalidPercentEncoding)),
            ("/%%41", Err(PathError::InvalidPercentEncoding)),
            ("/%4g", Err(PathError::InvalidPercentEncoding)),
            ("/%/a", Err(PathError::InvalidPercentEncoding)),
            ("/%é", Err(PathError::InvalidPercentEncoding)),
        ]);
    }

    #[test]
    fn dot_segments_with_parameters_are_rejected() {
        check(&[
            ("/a/..;/b", Err(PathError::DotSegmentParameters)),
            ("/a/..;x=1/b", Err(PathError::DotSegmentParameters)),
            ("/a/.;jsessionid=1", Err(PathError::DotSegmentParameters)),
            ("/a/%2e%2e;/b", Err(PathError::DotSegmentParameters)),
            ("/a/.%2E;/b", Err(PathError::DotSegmentParameters)),
            ("/a/;/b", Ok("/a/;/b")),
            ("/a/b;v=1/c", Ok("/a/b;v=1/c")),
            ("/a/...;/b", Ok("/a/...;/b")),
        ]);
    }

    #[test]
    fn control_characters_are_rejected() {
        check(&[
            ("/a\tb", Err(PathError::ControlCharacter)),
            ("/a\nb", Err(PathError::ControlCharacter)),
            ("/\0", Err(PathError::ControlCharacter)),
            ("/a\x7f", Err(PathError::ControlCharacter)),
            ("/a\x1f/", Err(PathError::ControlCharacter)),
        ]);
    }

    #[test]
    fn slash_runs_collapse() {
        check(&[
            ("//", Ok("/")),
            ("///", Ok("/")),
            ("/a//b", Ok("/a/b")),
            ("//a///b//", Ok("/a/b/")),
            ("/a/b//", Ok("/a/b/")),
        ]);
    }

    #[test]
    fn dot_segments_are_removed() {
        check(&[
            ("/.", Ok("/")),
            ("/./", Ok("/")),
            ("/a/.", Ok("/a/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/..", Ok("/")),
            ("/a/../", Ok("/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/../c", Ok("/a/c")),
            ("/a/b/../../c/", Ok("/c/")),
            ("/a/./../b", Ok("/b")),
            ("/a//../b", Ok("/b")),
            ("/a/.../b", Ok("/a/.../b")),
            ("/a/.b/..c", Ok("/a/.b/..c")),
        ]);
    }

    #[test]
    fn encoded_dot_segments_are_removed() {
        check(&[
            ("/a/%2e%2e/b", Ok("/b")),
            ("/a/%2E/b", Ok("/a/b")),
            ("/a/.%2e/b", Ok("/b")),
            ("/a/%2e./b", Ok("/b")),
            ("/a%2eb", Ok("/a.b")),
            ("/a/%2e%2e%2e", Ok("/a/...")),
        ]);
    }

    #[test]
    fn climbing_above_root_is_rejected() {
        check(&[
            ("/..", Err(PathError::ClimbsAboveRoot)),
            ("/../a", Err(PathError::ClimbsAboveRoot)),
            ("/%2E%2e/etc", Err(PathError::ClimbsAboveRoot)),
            ("/a/b/../../..", Err(PathError::ClimbsAboveRoot)),
            ("/a/../../b", Err(PathError::ClimbsAboveRoot)),
            ("/./..", Err(PathError::ClimbsAboveRoot)),
        ]);
    }

    #[test]
    fn first_error_from_the_left_is_reported() {
        check(&[
            ("/../%zz", Err(PathError::ClimbsAboveRoot)),
            ("/%zz/..", Err(PathError::InvalidPercentEncoding)),
            ("/a\\b/%2F", Err(PathError::Backslash)),
            ("/%2F\\", Err(PathError::EncodedSlash)),
        ]);
    }

    #[test]
    fn errors_have_human_messages() {
        assert_eq!(
            PathError::EncodedSlash.to_string(),
            "encoded slash (%2F) in path"
        );
        assert_eq!(
            PathError::ClimbsAboveRoot.to_string(),
            "'..' in path climbs above the root"
        );
    }

    /// xorshift64: deterministic pseudo-random numbers without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            // n is a small table length, so the modulo bias is irrelevant here.
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    fn random_path(rng: &mut XorShift) -> String {
        const TOKENS: &[&str] = &[
            "/", "/", "/", "/", ".", "..", "a", "b", "Z", "~", "-", "e", "%2e", "%2E", "%2f",
            "%41", "%7e", "%61", "%c3%a9", "%C3%A9", "%25", "%20", "%", "%4", "%zz", "%5c", "%00",
            "\\", "\t", "é", "%2", "2e",
        ];
        let mut path = String::new();
        if rng.below(20) != 0 {
            path.push('/');
        }
        for _ in 0..rng.below(12) {
            path.push_str(TOKENS[rng.below(TOKENS.len())]);
        }
        path
    }

    fn assert_is_normal_form(out: &str, input: &str) {
        assert!(out.starts_with('/'), "{input:?} -> {out:?}: not absolute");
        assert!(!out.contains("//"), "{input:?} -> {out:?}: contains //");
        assert!(!out.contains('\\'), "{input:?} -> {out:?}: contains \\");
        let upper = out.to_ascii_uppercase();
        assert!(!upper.contains("%2F"), "{input:?} -> {out:?}: contains %2F");
        assert!(
            out.split('/').all(|s| s != "." && s != ".."),
            "{input:?} -> {out:?}: contains a dot segment"
        );
    }

    #[test]
    fn random_paths_normalise_to_a_fixed_point() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..5_000 {
            let input = random_path(&mut rng);
            let Ok(out) = normalize(&input) else {
                continue;
            };
            accepted += 1;
            assert_is_normal_form(&out, &input);
            match normalize(&out) {
                Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out, "input {input:?}"),
                other => panic!("{input:?} -> {out:?} -> {other:?}: not a fixed point"),
            }
        }
        assert!(accepted > 500, "generator too hostile: {accepted} accepted");
    }

    #[test]
    fn fast_path_agrees_with_slow_path() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..5_000 {
            let input = random_path(&mut rng);
            let Some(rest) = input.strip_prefix('/') else {
                continue;
            };
            if is_normal(rest) {
                assert_eq!(rewrite(rest).as_deref(), Ok(input.as_str()));
            }
        }
    }
}
