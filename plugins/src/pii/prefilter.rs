//! A cheap test, on a raw body, of whether [`super::mask_json`] or [`super::mask_text`] could
//! find anything at all — so that a response with nothing personal in it (most of them) is
//! neither parsed nor walked.
//!
//! Every detector needs one of these in the raw bytes:
//! - a run of at least [`MIN_DIGITS`] ASCII digits (mobile numbers have 11, ID numbers 15 or 18,
//!   bank cards 13–19; a JSON integer is such a run too);
//! - an `@` (e-mail addresses);
//! - a name or address key of the policy (the walk compares keys lower-cased): as a JSON key —
//!   a quoted string followed by `:`, found from each `:` — or, in a body with a `<`, anywhere
//!   (`<xm>…</xm>` in text and in JSON strings);
//! - `\u` — a JSON escape could spell any of the above, so a body with one takes the full path.
//!
//! Why not one Aho-Corasick search for the keys over the whole body: case-insensitive and with a
//! few dozen keys it has no prefilter and costs ~16 instructions per byte (measured with
//! `benches/harness/instr_cost.py`: 18 000 per 1 KiB response, more than the rest of the
//! request's masking); looking only at what precedes each `:` costs a few per key.
//!
//! So "no" is exact (nothing would be masked) and "yes" only means the full path runs. A policy
//! with a key that has non-ASCII upper or lower case (the walk lower-cases with Unicode rules)
//! answers "yes" always rather than be wrong.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::{Class, Policy};

/// JSON keys longer than this are not compared (no default or sensible key is this long): the
/// body takes the full path.
const MAX_KEY: usize = 64;

/// The shortest digit run any digit class matches (a mobile number).
pub const MIN_DIGITS: usize = 11;

/// Built once per policy (plugin instance), used per response.
#[derive(Debug, Clone)]
pub struct Prefilter {
    /// Name and address keys, lower-cased.
    keys: HashSet<String>,
    /// The same keys, for bodies with markup; `None` when there are none.
    markup: Option<AhoCorasick>,
    /// The policy has a key this filter cannot match exactly: never skip.
    always: bool,
}

impl Prefilter {
    pub fn new(policy: &Policy) -> Self {
        let mut keys: Vec<&str> = Vec::new();
        if policy.enabled(Class::Name) {
            keys.extend(policy.name_keys.iter().map(String::as_str));
        }
        if policy.enabled(Class::Address) {
            keys.extend(policy.address_keys.iter().map(String::as_str));
        }
        let always = keys.iter().any(|k| {
            k.chars()
                .any(|c| !c.is_ascii() && (c.is_lowercase() || c.is_uppercase()))
        });
        let markup = (!keys.is_empty() && !always)
            .then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&keys)
                    .ok()
            })
            .flatten();
        let keys = keys.into_iter().map(str::to_owned).collect();
        Self {
            keys,
            markup,
            always,
        }
    }

    /// Whether masking `body` could change anything (`false` is exact; see the module doc).
    pub fn may_mask(&self, body: &[u8]) -> bool {
        self.always
            || memchr::memchr(b'@', body).is_some()
            || memchr::memmem::find(body, b"\\u").is_some()
            || has_digit_run(body, MIN_DIGITS)
            || self.has_json_key(body)
            || (memchr::memchr(b'<', body).is_some()
                && self.markup.as_ref().is_some_and(|k| k.is_match(body)))
    }

    /// Whether a quoted string right before a `:` is one of the keys (or cannot be compared).
    fn has_json_key(&self, body: &[u8]) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let mut lower = [0u8; MAX_KEY];
        memchr::memchr_iter(b':', body).any(|colon| {
            let before = body[..colon].trim_ascii_end();
            let Some(inner) = before.strip_suffix(b"\"") else {
                return false;
            };
            let Some(open) = memchr::memrchr(b'"', inner) else {
                return false;
            };
            let key = &inner[open + 1..];
            let escaped_quote = open.checked_sub(1).is_some_and(|i| inner[i] == b'\\');
            if key.len() > MAX_KEY || escaped_quote || key.contains(&b'\\') {
                // Cannot be compared here: take the full path.
                return true;
            }
            let lower = &mut lower[..key.len()];
            lower.copy_from_slice(key);
            lower.make_ascii_lowercase();
            std::str::from_utf8(lower).is_ok_and(|k| self.keys.contains(k))
        })
    }
}

/// Whether `b` holds `n` or more consecutive ASCII digits. Looks at every `n`-th byte only while
/// it finds no digit: any run of `n` covers one of those positions.
fn has_digit_run(b: &[u8], n: usize) -> bool {
    debug_assert!(n > 0);
    let mut i = n - 1;
    while let Some(c) = b.get(i) {
        if !c.is_ascii_digit() {
            i += n;
            continue;
        }
        let start = b[..i]
            .iter()
            .rposition(|c| !c.is_ascii_digit())
            .map_or(0, |p| p + 1);
        let end = b[i..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |p| i + p);
        if end - start >= n {
            return true;
        }
        // `b[end]` is not a digit: a run long enough starts after it and covers `end + n`.
        i = end + n;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_digit_run(b: &[u8], n: usize) -> bool {
        b.split(|c| !c.is_ascii_digit()).any(|run| run.len() >= n)
    }

    #[test]
    fn digit_runs_are_found_wherever_they_stand() {
        // Every placement and length of one run in a text of letters, and two runs.
        for len in 0..40 {
            for run in 1..16 {
                for at in 0..len {
                    let mut b = vec![b'x'; len];
                    for c in b.iter_mut().skip(at).take(run) {
                        *c = b'7';
                    }
                    assert_eq!(
                        has_digit_run(&b, MIN_DIGITS),
                        naive_digit_run(&b, MIN_DIGITS),
                        "len {len}, run {run} at {at}"
                    );
                    let mut two = b.clone();
                    two.extend_from_slice(b"-1234567890");
                    two.extend_from_slice(&b);
                    assert_eq!(
                        has_digit_run(&two, MIN_DIGITS),
                        naive_digit_run(&two, MIN_DIGITS),
                        "two runs: len {len}, run {run} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_body_with_nothing_to_mask_is_skipped_and_each_trigger_is_seen() {
        let f = Prefilter::new(&Policy::default());
        assert!(!f.may_mask(br#"{"code":0,"message":"ok","data":{"id":"bench","items":"xxxx"}}"#));
        assert!(!f.may_mask("订单 2024-12-05 共 3 件，金额 1234567890 分".as_bytes()));
        // A key's name inside a value, or a value before a `:`, is not a key.
        assert!(!f.may_mask(br#"{"t":"name: x", "a":"xm" , "b": "time: 09:00"}"#));
        assert!(!f.may_mask(br#"{"username":"u1","nickname":"n"}"#));
        for body in [
            r#"{"m":"13812345678"}"#,
            r#"{"m":13812345678}"#,
            r#"{"e":"a@b.cn"}"#,
            r#"{"NAME":"x"}"#,
            r#"{"姓名":"张三"}"#,
            "<p><Addr>北京</Addr></p>",
            r#"{"\u0078m":"张三"}"#,
            r#"{"a" : 1, "Xm" :"张三"}"#,
            r#"{"x\"y": 1}"#,
            r#"{"t":"<p>地址: <dz>北京</dz></p>"}"#,
        ] {
            assert!(f.may_mask(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn keys_of_disabled_classes_do_not_trigger_and_cased_unicode_keys_always_do() {
        let only_mobile = Policy::default().only(&[Class::Mobile]);
        assert!(!Prefilter::new(&only_mobile).may_mask(br#"{"name":"x"}"#));
        let mut cyrillic = Policy::default();
        cyrillic.name_keys.insert("имя".into());
        assert!(Prefilter::new(&cyrillic).may_mask(b"{}"));
    }
}
