//! Masking a JSON document where it lies.
//!
//! The walk ([`jiter`], an iterator over the raw bytes that reports where it is) finds each
//! string and integer value with its byte range and the key it sits under, and the output is
//! the input with only the masked values replaced: key order, duplicate keys, number spellings
//! (`1e5`, `1.50`), whitespace and escapes everywhere else stay exactly as the upstream wrote
//! them. The length changes only by what the masks change, which is what lets the gateway keep
//! an upstream's `Content-Length` ([`Fit::KeepLength`]).
//!
//! What it may not do: allocate for a document with nothing to mask beyond the walk's own
//! string buffer; accept what is not one JSON value (trailing bytes, invalid UTF-8, nesting
//! deeper than [`MAX_DEPTH`]): those return `None` and the caller treats the body as text.

use std::ops::Range;

use jiff::civil::Date;
use jiter::{Jiter, Peek};

use super::{classify_digits, mask_str, mask_value, today, Class, Counts, Policy};

/// Nesting deeper than this is not walked: the body is then not treated as JSON (serde_json
/// refuses more than 128 levels; the same limit keeps the walk's recursion bounded).
pub const MAX_DEPTH: usize = 128;

/// Whether the masked document must keep the input's length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Any length (the response is re-framed).
    Free,
    /// Exactly the input's length: a document the masks would make longer has those values
    /// replaced by `*` of the same length instead (a masked number keeps its quotes inside its
    /// length: `13812345678` → `"*********"`), and one they made shorter is padded with spaces
    /// after the closing bracket, which JSON allows.
    KeepLength,
}

/// A masked JSON document.
#[derive(Debug, Default)]
pub struct Masked {
    /// The rewritten document; `None` when nothing was masked (the input is to be sent as is).
    pub body: Option<Vec<u8>>,
    pub counts: Counts,
}

/// One value that a detector found, for report-only use ([`scan_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Where, as a JSONPath: `$.data.list[0].sfzh`, keys that are not plain names quoted
    /// (`$["姓名"]`).
    pub path: String,
    pub class: Class,
    /// How many values of this class the one value held (a text with two phone numbers: 2).
    pub count: u32,
}

/// Masks a JSON document (see the module doc). `None`: `body` is not a JSON document.
pub fn mask_json(body: &[u8], policy: &Policy, fit: Fit) -> Option<Masked> {
    let mut walk = Walk::new(policy, false);
    walk.document(body)?;
    let counts = walk.counts;
    if walk.edits.is_empty() {
        return Some(Masked { body: None, counts });
    }
    let mut edits = walk.edits;
    if fit == Fit::KeepLength {
        let grown: isize = edits
            .iter()
            .map(|e| e.text.len() as isize - e.range.len() as isize)
            .sum();
        if grown > 0 {
            for e in edits.iter_mut().filter(|e| e.text.len() > e.range.len()) {
                e.text.clear();
                e.text.push('"');
                e.text
                    .extend(std::iter::repeat_n('*', e.range.len().saturating_sub(2)));
                e.text.push('"');
            }
        }
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut last = 0;
    for e in &edits {
        out.extend_from_slice(&body[last..e.range.start]);
        out.extend_from_slice(e.text.as_bytes());
        last = e.range.end;
    }
    out.extend_from_slice(&body[last..]);
    if fit == Fit::KeepLength {
        out.resize(body.len(), b' ');
    }
    Some(Masked {
        body: Some(out),
        counts,
    })
}

/// What [`mask_json`] would mask, by JSON path and class, leaving the document alone
/// (report-only mode: the go-live sensitivity scan). `None`: not a JSON document.
pub fn scan_json(body: &[u8], policy: &Policy) -> Option<Vec<Hit>> {
    let mut walk = Walk::new(policy, true);
    walk.document(body)?;
    Some(walk.hits)
}

/// One value to replace: its byte range in the input and its JSON text.
#[derive(Debug)]
struct Edit {
    range: Range<usize>,
    text: String,
}

#[derive(Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Why a walk stopped early: the input is not a JSON document the masker handles.
struct NotJson;

impl From<jiter::JiterError> for NotJson {
    fn from(_: jiter::JiterError) -> Self {
        NotJson
    }
}

struct Walk<'p> {
    policy: &'p Policy,
    today: Date,
    counts: Counts,
    edits: Vec<Edit>,
    /// The current path, kept only when reporting hits.
    path: Option<Vec<Seg>>,
    hits: Vec<Hit>,
}

/// What the key a value sits under says about it.
#[derive(Debug, Clone, Copy)]
struct Under {
    /// A name or address key: the whole value is that class.
    class: Option<Class>,
    /// A card word in the key: a Luhn-valid run is a card number even without an issuer prefix.
    card: bool,
}

impl<'p> Walk<'p> {
    fn new(policy: &'p Policy, report: bool) -> Self {
        Self {
            policy,
            today: today(),
            counts: Counts::default(),
            edits: Vec::new(),
            path: report.then(Vec::new),
            hits: Vec::new(),
        }
    }

    fn document(&mut self, body: &[u8]) -> Option<()> {
        let mut it = Jiter::new(body);
        let top = Under {
            class: None,
            card: false,
        };
        let walked = it
            .peek()
            .map_err(NotJson::from)
            .and_then(|peek| self.value(&mut it, peek, top, 0))
            .and_then(|()| it.finish().map_err(NotJson::from));
        walked.ok()
    }

    fn value(
        &mut self,
        it: &mut Jiter<'_>,
        peek: Peek,
        under: Under,
        depth: usize,
    ) -> Result<(), NotJson> {
        if depth > MAX_DEPTH {
            return Err(NotJson);
        }
        match peek {
            Peek::Object => {
                let mut key = it.known_object()?.map(|k| self.under(k));
                while let Some((inner, seg)) = key {
                    self.push(seg);
                    let peek = it.peek()?;
                    self.value(it, peek, inner, depth + 1)?;
                    self.pop();
                    key = it.next_key()?.map(|k| self.under(k));
                }
            }
            Peek::Array => {
                let mut next = it.known_array()?;
                let mut i = 0;
                while let Some(peek) = next {
                    self.push_index(i);
                    self.value(it, peek, under, depth + 1)?;
                    self.pop();
                    i += 1;
                    next = it.array_step()?;
                }
            }
            Peek::String => {
                let start = it.current_index();
                let s = it.known_str()?;
                let before = self.counts;
                let masked = self.string(s, under);
                let end = it.current_index();
                if let Some(m) = masked {
                    self.edit(start..end, &m, before);
                }
            }
            p if p.is_num() => {
                let start = it.current_index();
                let raw = it.next_number_bytes()?;
                let before = self.counts;
                let masked = self.integer(raw, under);
                let end = it.current_index();
                if let Some(m) = masked {
                    self.edit(start..end, &m, before);
                }
            }
            p => it.known_skip(p)?,
        }
        Ok(())
    }

    /// The masked text of a string value, if anything in it is masked.
    fn string(&mut self, s: &str, under: Under) -> Option<String> {
        if let Some(class) = under.class.filter(|c| self.policy.enabled(*c)) {
            // A `*` in it: already masked by the upstream; not counted again.
            if s.trim().is_empty() || s.contains('*') {
                return None;
            }
            let mut out = String::with_capacity(s.len());
            mask_value(class, s, self.policy, &mut out);
            self.counts.add(class);
            return Some(out);
        }
        mask_str(s, self.policy, under.card, self.today, &mut self.counts)
    }

    /// The masked text of an integer that is an ID, mobile or card number (numbers with a
    /// fraction or an exponent are never one).
    fn integer(&mut self, raw: &[u8], under: Under) -> Option<String> {
        if !raw.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let class =
            classify_digits(raw, under.card, self.today).filter(|c| self.policy.enabled(*c))?;
        let digits = std::str::from_utf8(raw).ok()?;
        let mut out = String::with_capacity(raw.len());
        mask_value(class, digits, self.policy, &mut out);
        self.counts.add(class);
        Some(out)
    }

    /// Records a replacement (`masked` is the value's new content, JSON-encoded here) and, when
    /// reporting, what it found.
    fn edit(&mut self, range: Range<usize>, masked: &str, before: Counts) {
        let text = serde_json::to_string(masked).unwrap_or_else(|_| "\"\"".into());
        self.edits.push(Edit { range, text });
        if let Some(path) = &self.path {
            let at = render_path(path);
            for (class, n) in self.counts.iter() {
                let new = n - before.get(class);
                if new > 0 {
                    self.hits.push(Hit {
                        path: at.clone(),
                        class,
                        count: new,
                    });
                }
            }
        }
    }

    fn under(&self, key: &str) -> (Under, Option<String>) {
        let under = Under {
            class: self.policy.key_class(key),
            card: self.policy.is_card_word(key),
        };
        (under, self.path.as_ref().map(|_| key.to_owned()))
    }

    fn push(&mut self, key: Option<String>) {
        if let (Some(path), Some(k)) = (&mut self.path, key) {
            path.push(Seg::Key(k));
        }
    }

    fn push_index(&mut self, i: usize) {
        if let Some(path) = &mut self.path {
            path.push(Seg::Index(i));
        }
    }

    fn pop(&mut self) {
        if let Some(path) = &mut self.path {
            path.pop();
        }
    }
}

fn render_path(path: &[Seg]) -> String {
    let mut out = String::from("$");
    for seg in path {
        match seg {
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Seg::Key(k)
                if !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !k.as_bytes()[0].is_ascii_digit() =>
            {
                out.push('.');
                out.push_str(k);
            }
            Seg::Key(k) => {
                out.push('[');
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(']');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "11010519491231002X";

    fn mask(body: &str, fit: Fit) -> (String, Counts) {
        let m = mask_json(body.as_bytes(), &Policy::default(), fit).expect("JSON");
        let out = m
            .body
            .map_or(body.to_owned(), |b| String::from_utf8(b).unwrap());
        (out, m.counts)
    }

    #[test]
    fn only_the_masked_values_change() {
        let body = format!(
            r#"{{ "z": 1e5, "a": [1.50, -0, "x\/y"], "sfzh": "{ID}", "m": 13812345678,
                 "m": "\u0031\u0033\u0039\u0031\u0032\u0033\u0034\u0035\u0036\u0037\u0038" }}"#
        );
        let (out, c) = mask(&body, Fit::Free);
        assert_eq!(
            out,
            r#"{ "z": 1e5, "a": [1.50, -0, "x\/y"], "sfzh": "110105********002X", "m": "138****5678",
                 "m": "139****5678" }"#
        );
        assert_eq!((c.get(Class::IdNumber), c.get(Class::Mobile)), (1, 2));
    }

    #[test]
    fn keep_length_pads_a_shorter_document_and_over_masks_a_longer_one() {
        let body = r#"{"xm":"张三","note":"x"}"#;
        let (out, _) = mask(body, Fit::KeepLength);
        assert_eq!(out.len(), body.len());
        assert_eq!(out.trim_end(), r#"{"xm":"张*","note":"x"}"#);
        // A masked number gains its quotes: the document would grow by 2, so the number's own
        // 11 bytes become a string of 9 stars.
        let body = r#"{"m":13812345678}"#;
        let (out, c) = mask(body, Fit::KeepLength);
        assert_eq!(out, r#"{"m":"*********"}"#);
        assert_eq!(c.get(Class::Mobile), 1);
        // Growth elsewhere may pay for it: the name shrinks by 2 bytes.
        let body = r#"{"m":13812345678,"xm":"张三"}"#;
        let (out, _) = mask(body, Fit::KeepLength);
        assert_eq!(out, r#"{"m":"138****5678","xm":"张*"}"#);
        assert_eq!(out.len(), body.len());
        for (body, _) in [(body, ()), (r#"{"m":13812345678}"#, ())] {
            let (out, _) = mask(body, Fit::KeepLength);
            serde_json::from_str::<serde_json::Value>(&out).expect("still JSON");
        }
    }

    #[test]
    fn what_is_not_one_json_document_is_refused() {
        let p = Policy::default();
        for body in [
            &b"{\"a\":1} x"[..],
            b"{\"a\":",
            b"\"\xff\"",
            b"",
            b"13812345678 13812345678",
        ] {
            assert!(mask_json(body, &p, Fit::Free).is_none(), "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert!(mask_json(deep.as_bytes(), &p, Fit::Free).is_none());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(mask_json(ok.as_bytes(), &p, Fit::Free).is_some());
    }

    #[test]
    fn scan_reports_paths_and_classes_and_changes_nothing() {
        let body = format!(
            r#"{{"data":{{"list":[{{"sfzh":"{ID}"}},{{"姓名":"张三","note":"13812345678 或 13912345678"}}]}}}}"#
        );
        let hits = scan_json(body.as_bytes(), &Policy::default()).unwrap();
        let got: Vec<(&str, &str, u32)> = hits
            .iter()
            .map(|h| (h.path.as_str(), h.class.as_str(), h.count))
            .collect();
        assert_eq!(
            got,
            vec![
                ("$.data.list[0].sfzh", "id_number", 1),
                ("$.data.list[1][\"姓名\"]", "name", 1),
                ("$.data.list[1].note", "mobile", 2),
            ]
        );
    }
}
