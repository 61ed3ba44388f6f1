//! Undoing what attackers hide payloads behind, before the engines look at a value.
//!
//! - [`form_decode`]: one round of `application/x-www-form-urlencoded` decoding (`+` is a space,
//!   `%XX` a byte), what the application itself will do to a query or form value.
//! - [`normalize`]: what a lenient backend, a second decoding layer or a browser may still do:
//!   further rounds of `%XX` (double and triple encoding, `%%32%65`), IIS `%uXXXX`, overlong
//!   UTF-8 (`%c0%ae` is `.`), JavaScript escapes (`\u0065`, `\x3c`), look-alike characters (full-width `．／`, `∕`, `∖`, IIS's `%uEFC8`), HTML entities (`&lt;`, `&#x3c;`, `&#60`), and NUL bytes
//!   (dropped). Rounds repeat until nothing changes (at most [`MAX_ROUNDS`]).
//! - [`strip_sql_comments`]: `/**/` between keywords (`UNION/**/SELECT`) becomes a space;
//!   MySQL's executable comments `/*!50000UNION*/` keep their content.
//!
//! Mixed case needs no decoding: every rule is case-insensitive, and libinjection folds case.
//!
//! Every function returns [`Cow::Borrowed`] when the input has nothing to decode, so the common
//! value (`page=2`, `张三`) costs a scan and no allocation.
//!
//! Why by hand rather than `percent-encoding`/`html-escape`: those decode one standard layer
//! correctly, and a WAF needs the non-standard ones too (`%u`, overlong UTF-8, entities without
//! `;`, `%` left alone when not followed by hex), in one pass that never fails.

use std::borrow::Cow;

/// How many decoding rounds [`normalize`] applies at most (`%25252e` is three).
pub const MAX_ROUNDS: usize = 4;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One round of form decoding: `+` → space, `%XX` → byte; invalid escapes stay as they are,
/// invalid UTF-8 becomes U+FFFD.
pub fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(into_string(out))
}

/// Bytes to text: overlong UTF-8 forms of ASCII characters (`C0 AE` = `.`) are folded to the
/// character a lenient decoder would see; what is still not UTF-8 becomes U+FFFD.
fn into_string(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let bytes = fold_overlong(&e.into_bytes());
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// Folds overlong encodings (2 to 6 bytes) of ASCII code points to the ASCII byte.
fn fold_overlong(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let len = match b {
            0xC0 | 0xC1 => 2,
            0xE0 => 3,
            0xF0 => 4,
            0xF8 => 5,
            0xFC => 6,
            _ => 0,
        };
        if len == 2 {
            // IIS-style: a C0/C1 lead before a plain ASCII byte, or before a byte whose low six
            // bits spell `.`, `/` or `\` (`%c0%2e`, `%c0%ee`), stands for that character.
            match bytes.get(i + 1) {
                Some(&next) if next < 0x80 && !matches!(next & 0x3F, 0x2E | 0x2F) => {
                    i += 1;
                    continue;
                }
                Some(&next) if next & 0xC0 != 0x80 && matches!(next & 0x3F, 0x2E | 0x2F) => {
                    out.push(next & 0x3F);
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        if len > 0 {
            if let Some(seq) = bytes.get(i..i + len) {
                let cont = seq.get(1..).unwrap_or_default();
                if cont.iter().all(|c| c & 0xC0 == 0x80) {
                    // The payload bits of the last two bytes (an overlong ASCII char fits in 7).
                    let mut cp: u32 = u32::from(b & (0x7F >> len));
                    for c in cont {
                        cp = cp << 6 | u32::from(c & 0x3F);
                    }
                    if cp < 0x80 {
                        out.push(cp as u8);
                        i += len;
                        continue;
                    }
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Whether [`url_round`] would change `s`.
fn has_escape(s: &[u8]) -> bool {
    s.windows(3).any(|w| {
        w.first() == Some(&b'%')
            && ((w.get(1).copied().and_then(hex).is_some()
                && w.get(2).copied().and_then(hex).is_some())
                || matches!(w.get(1), Some(b'u' | b'U')))
    })
}

/// One round of `%XX` and `%uXXXX` decoding (no `+`).
fn url_round(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if matches!(bytes.get(i + 1), Some(b'u' | b'U')) {
                let digits = bytes.get(i + 2..i + 6).unwrap_or_default();
                if digits.len() == 4 && digits.iter().all(|d| hex(*d).is_some()) {
                    let cp = digits
                        .iter()
                        .fold(0u32, |acc, d| acc << 4 | u32::from(hex(*d).unwrap_or(0)));
                    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += 6;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    into_string(out)
}

/// One round of `%XX` and `%uXXXX` decoding, borrowed when there is none.
pub fn url_decode_once(s: &str) -> Cow<'_, str> {
    if has_escape(s.as_bytes()) {
        Cow::Owned(url_round(s))
    } else {
        Cow::Borrowed(s)
    }
}

/// Characters that lenient servers (IIS, some Java and .NET decoders) map to `.`, `/` or `\`:
/// full-width forms, division and set-minus signs, and IIS's private-use slashes.
fn lookalike(c: char) -> Option<char> {
    match c {
        '\u{FF0E}' | '\u{2024}' | '\u{FE52}' => Some('.'),
        '\u{FF0F}' | '\u{2215}' | '\u{2044}' | '\u{EFC8}' | '\u{F025}' => Some('/'),
        '\u{FF3C}' | '\u{2216}' | '\u{FE68}' => Some('\\'),
        '\u{FF1C}' | '\u{FE64}' => Some('<'),
        '\u{FF1E}' | '\u{FE65}' => Some('>'),
        _ => None,
    }
}

fn fold_lookalikes(s: &str) -> Cow<'_, str> {
    if s.is_ascii() || !s.chars().any(|c| lookalike(c).is_some()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| lookalike(c).unwrap_or(c)).collect())
}

/// JavaScript string escapes a browser undoes in script: `\u0065` and `\x65` (`al\u0065rt`).
fn js_unescape(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let is_escape = |i: usize| {
        b.get(i) == Some(&b'\\')
            && match b.get(i + 1) {
                Some(b'u') => b
                    .get(i + 2..i + 6)
                    .is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit)),
                Some(b'x') => b
                    .get(i + 2..i + 4)
                    .is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit)),
                _ => false,
            }
    };
    if !(0..b.len()).any(is_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if is_escape(i) {
            let len = if b.get(i + 1) == Some(&b'u') { 4 } else { 2 };
            let digits = s.get(i + 2..i + 2 + len).unwrap_or_default();
            let c = u32::from_str_radix(digits, 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            out.push(c);
            i += 2 + len;
        } else {
            let c = s
                .get(i..)
                .and_then(|r| r.chars().next())
                .unwrap_or('\u{FFFD}');
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    Cow::Owned(out)
}

/// Named entities worth decoding: the ones that spell markup and quotes, plus the JavaScript-URL
/// tricks (`&colon;`, `&Tab;`, `&NewLine;`).
const ENTITIES: &[(&str, char)] = &[
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("amp", '&'),
    ("colon", ':'),
    ("sol", '/'),
    ("bsol", '\\'),
    ("lpar", '('),
    ("rpar", ')'),
    ("semi", ';'),
    ("equals", '='),
    ("grave", '`'),
    ("tab", '\t'),
    ("newline", '\n'),
    ("nbsp", ' '),
    ("period", '.'),
];

/// Whether `s` may hold an HTML entity.
fn has_entity(s: &[u8]) -> bool {
    s.windows(2).any(|w| {
        w.first() == Some(&b'&')
            && w.get(1)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'#')
    })
}

/// Decodes HTML entities: numeric (`&#60;`, `&#x3C;`, with or without `;`, any number of
/// leading zeros) and the named ones in [`ENTITIES`] (case-insensitive, `;` required).
fn entity_round(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        if let Some((c, used)) = decode_entity(after) {
            out.push(c);
            rest = after.get(used..).unwrap_or_default();
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the entity at the start of `s` (after the `&`): the character and bytes consumed.
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let b = s.as_bytes();
    if b.first() == Some(&b'#') {
        let (radix, start) = match b.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = b
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|d| (radix == 16 && d.is_ascii_hexdigit()) || d.is_ascii_digit())
            .count();
        if digits == 0 || digits > 10 {
            return None;
        }
        let text = s.get(start..start + digits)?;
        let cp = u32::from_str_radix(text, radix).ok()?;
        let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
        let mut used = start + digits;
        if b.get(used) == Some(&b';') {
            used += 1;
        }
        return Some((c, used));
    }
    let name_len = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    if b.get(name_len) != Some(&b';') {
        return None;
    }
    let name = s.get(..name_len)?;
    ENTITIES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| (*c, name_len + 1))
}

/// Decodes everything [`normalize`] knows until a round changes nothing: `%XX`/`%uXXXX`
/// (repeatedly), overlong UTF-8, HTML entities, NUL bytes dropped.
pub fn normalize(s: &str) -> Cow<'_, str> {
    // Every round needs one of these to change anything: `%` (URL escapes), `&` (entities),
    // `\` (JavaScript escapes), a non-ASCII character (look-alikes) or NUL. Most values have
    // none, and this check is vectorised (a few instructions per 16 bytes).
    let b = s.as_bytes();
    if b.is_ascii()
        && memchr::memchr3(b'%', b'&', b'\\', b).is_none()
        && memchr::memchr(0, b).is_none()
    {
        return Cow::Borrowed(s);
    }
    let mut cur: Cow<'_, str> = Cow::Borrowed(s);
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        if has_escape(cur.as_bytes()) {
            cur = Cow::Owned(url_round(&cur));
            changed = true;
        }
        if has_entity(cur.as_bytes()) {
            let next = entity_round(&cur);
            if next != *cur {
                cur = Cow::Owned(next);
                changed = true;
            }
        }
        if let Cow::Owned(unescaped) = js_unescape(&cur) {
            cur = Cow::Owned(unescaped);
            changed = true;
        }
        if let Cow::Owned(folded) = fold_lookalikes(&cur) {
            cur = Cow::Owned(folded);
            changed = true;
        }
        if cur.contains('\0') {
            cur = Cow::Owned(cur.replace('\0', ""));
            changed = true;
        }
        if !changed {
            break;
        }
    }
    cur
}

/// Replaces SQL block comments with a space (`UNION/**/SELECT` → `UNION SELECT`); the content
/// of MySQL executable comments (`/*!50000SELECT*/`) is kept, without the version number.
pub fn strip_sql_comments(s: &str) -> Cow<'_, str> {
    if !s.contains("/*") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(rest.get(..i).unwrap_or_default());
        let inner = rest.get(i + 2..).unwrap_or_default();
        let (body, after) = match inner.find("*/") {
            Some(j) => (
                inner.get(..j).unwrap_or_default(),
                inner.get(j + 2..).unwrap_or_default(),
            ),
            None => (inner, ""),
        };
        out.push(' ');
        if let Some(exec) = body.strip_prefix('!') {
            // A nested `/*` in the content is not a comment start either.
            out.push_str(
                &exec
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .replace("/*", " "),
            );
            out.push(' ');
        }
        rest = after;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_borrowed() {
        for s in ["page", "张三", "13800138000", "50% off", "a & b", "O'Brien"] {
            assert!(matches!(normalize(s), Cow::Borrowed(_)), "{s}");
        }
        assert!(matches!(form_decode("abc"), Cow::Borrowed(_)));
        assert!(matches!(strip_sql_comments("a*b/c"), Cow::Borrowed(_)));
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%2B"), "a b c+");
        assert_eq!(form_decode("%E5%BC%A0%E4%B8%89"), "张三");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn double_and_triple_url_encoding() {
        assert_eq!(normalize("%252e%252e%252f"), "../");
        assert_eq!(normalize("%25252e"), ".");
        assert_eq!(normalize("%%32%65%%32%65/"), "../");
    }

    #[test]
    fn iis_unicode_and_overlong_utf8() {
        assert_eq!(normalize("%u003cscript%u003e"), "<script>");
        assert_eq!(normalize("%c0%ae%c0%ae%c0%af"), "../");
        assert_eq!(normalize("%e0%80%ae"), ".");
        assert_eq!(normalize("%f8%80%80%80%ae"), ".");
        assert_eq!(normalize("%c1%9c"), "\\");
        assert_eq!(normalize("%c0%2e%c0%2e%c0%2f"), "../");
        assert_eq!(normalize("%c0%ee%c0%6e"), "..");
        assert_eq!(normalize("%uff0e%uff0e%u2215"), "../");
        assert_eq!(normalize("..%u2216..%uEFC8"), "..\\../");
        // Not overlong: a real two-byte character stays.
        assert_eq!(normalize("%c3%a9"), "é");
        assert_eq!(normalize("%ff"), "\u{FFFD}");
    }

    #[test]
    fn html_entities() {
        assert_eq!(normalize("&lt;script&gt;"), "<script>");
        assert_eq!(normalize("&#60;&#x3C;&#0000060&#X3c;"), "<<<<");
        assert_eq!(
            normalize("javascript&colon;alert&lpar;1&rpar;"),
            "javascript:alert(1)"
        );
        assert_eq!(normalize("%26lt%3Bsvg%26gt%3B"), "<svg>");
        assert_eq!(normalize("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(normalize("AT&T and &unknown;"), "AT&T and &unknown;");
    }

    #[test]
    fn javascript_escapes() {
        assert_eq!(normalize("al\\u0065rt(1)"), "alert(1)");
        assert_eq!(normalize("\\x3cscript\\x3e"), "<script>");
        assert_eq!(normalize("C:\\users\\x"), "C:\\users\\x");
        assert!(matches!(normalize("a\\b"), Cow::Borrowed(_)));
    }

    #[test]
    fn nul_bytes_are_dropped() {
        assert_eq!(normalize("../etc/passwd%00.jpg"), "../etc/passwd.jpg");
        assert_eq!(normalize("a\0b"), "ab");
    }

    #[test]
    fn sql_comments() {
        assert_eq!(strip_sql_comments("UNION/**/SELECT"), "UNION SELECT");
        assert_eq!(strip_sql_comments("/*!50000UNION*/SELECT"), " UNION SELECT");
        assert_eq!(strip_sql_comments("1/*unterminated"), "1 ");
        for s in ["/*!/*x*/", "/*!//**", "a//*b*/*c", "/*/*/**/*/"] {
            assert!(!strip_sql_comments(s).contains("/*"), "{s}");
        }
    }

    #[test]
    fn decoding_terminates_on_hostile_input() {
        let s = "%25".repeat(10_000);
        let _ = normalize(&s);
        let s = "&".repeat(10_000) + &"&#".repeat(10_000);
        let _ = normalize(&s);
    }
}
