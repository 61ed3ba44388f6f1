//! Personal-data detectors and masking: the library behind `response-masking`, usable on its
//! own (the control plane's go-live sensitivity scan runs it in report-only mode).
//!
//! - [`scan`] finds, in free text, resident ID numbers (GB 11643: 18 characters with a real
//!   birth date and the MOD 11-2 check character, or the old 15-digit form with a real date),
//!   mainland mobile numbers (`1[3-9]` + 9 digits, not inside a longer run of digits or
//!   letters), bank card numbers (13–19 digits, Luhn-valid, with an issuer prefix `62`/`4`/`5`/`3`
//!   or a card/bank word just before) and e-mail addresses. Look-alikes whose checksum or date
//!   does not hold (order numbers, timestamps) are not matched.
//! - [`mask_json`] walks a JSON document's bytes and masks string values (every match of
//!   [`scan`]), number values that are an ID, mobile or card number (they become masked strings),
//!   and the values of keys that name a person's name or address ([`Policy::name_keys`],
//!   [`Policy::address_keys`]); only those values change in the output, and [`Fit::KeepLength`]
//!   keeps its length. [`scan_json`] reports the same by JSON path, changing nothing. [`mask_text`] masks a text, including the values of XML
//!   elements named like those keys (`<xm>张三</xm>`).
//! - Both return [`Counts`] per [`Class`], never the values.
//!
//! Pure functions, no I/O, no allocation for a document without matches beyond the walk. See
//! `docs/plugins/response-masking.md` for what is and is not covered.

mod detect;
mod json;
mod prefilter;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::OnceLock;

use jiff::civil::Date;
use regex::Regex;

pub use detect::{bank_card, id15, id18, mobile};
pub use json::{mask_json, scan_json, Fit, Hit, Masked};
pub use prefilter::Prefilter;

/// What kind of personal data a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    IdNumber,
    Mobile,
    BankCard,
    Email,
    Name,
    Address,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::IdNumber,
        Class::Mobile,
        Class::BankCard,
        Class::Email,
        Class::Name,
        Class::Address,
    ];

    /// The name used in configs, findings and metrics (`id_number`, `mobile`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::IdNumber => "id_number",
            Class::Mobile => "mobile",
            Class::BankCard => "bank_card",
            Class::Email => "email",
            Class::Name => "name",
            Class::Address => "address",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One match of [`scan`]: its class and its byte range in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub class: Class,
    pub range: Range<usize>,
}

/// How a value of one class is masked: the first `keep_prefix` and last `keep_suffix`
/// characters stay, the rest become `*` — as many as they were, or exactly `stars` when set.
/// A value too short to keep both keeps at most all but one character of its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub keep_prefix: usize,
    pub keep_suffix: usize,
    pub stars: Option<usize>,
}

impl Format {
    pub const fn new(keep_prefix: usize, keep_suffix: usize, stars: Option<usize>) -> Self {
        Self {
            keep_prefix,
            keep_suffix,
            stars,
        }
    }

    /// The default format of each class, as Chinese government systems show them:
    /// ID `110101********1234`, mobile `138****1234`, card `622202*********0123`,
    /// e-mail `z***@example.com` (the local part), name `张*`, address `北京市朝阳区****`.
    pub const fn default_for(class: Class) -> Self {
        match class {
            Class::IdNumber => Format::new(6, 4, None),
            Class::Mobile => Format::new(3, 4, None),
            Class::BankCard => Format::new(6, 4, None),
            Class::Email => Format::new(1, 0, Some(3)),
            Class::Name => Format::new(1, 0, None),
            Class::Address => Format::new(6, 0, Some(4)),
        }
    }

    /// Masks `value` into `out`.
    pub fn apply(&self, value: &str, out: &mut String) {
        let n = value.chars().count();
        let (pre, suf) = if self.keep_prefix + self.keep_suffix < n {
            (self.keep_prefix, self.keep_suffix)
        } else {
            (self.keep_prefix.min(n.saturating_sub(1)), 0)
        };
        let hidden = n - pre - suf;
        out.extend(value.chars().take(pre));
        out.extend(std::iter::repeat_n('*', self.stars.unwrap_or(hidden)));
        out.extend(value.chars().skip(pre + hidden));
    }
}

/// Common two-character (compound) surnames: a name that starts with one keeps both
/// characters under the default name format (`欧阳**`).
const COMPOUND_SURNAMES: [&str; 24] = [
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "令狐", "独孤", "南宫", "西门", "端木", "百里", "呼延", "澹台", "公羊", "万俟",
];

/// Key names whose values are a person's name, by default (compared case-insensitively).
pub const DEFAULT_NAME_KEYS: [&str; 12] = [
    "name",
    "xm",
    "姓名",
    "realname",
    "real_name",
    "username_cn",
    "fullname",
    "full_name",
    "custname",
    "cust_name",
    "holder_name",
    "contact_name",
];

/// Key names whose values are an address, by default (compared case-insensitively).
pub const DEFAULT_ADDRESS_KEYS: [&str; 10] = [
    "address",
    "addr",
    "dz",
    "地址",
    "住址",
    "home_address",
    "homeaddress",
    "jtzz",
    "hjdz",
    "contact_address",
];

/// Words that, in a key name or just before a number in text, make a Luhn-valid digit run a
/// bank card number even without an issuer prefix (compared case-insensitively, as substrings).
pub const DEFAULT_CARD_WORDS: [&str; 6] = ["card", "bank", "卡号", "银行卡", "账号", "yhk"];

/// What [`mask_json`] and [`mask_text`] mask and how.
#[derive(Debug, Clone)]
pub struct Policy {
    enabled: [bool; 6],
    formats: [Format; 6],
    /// Lower-cased key names whose values are names.
    pub name_keys: HashSet<String>,
    /// Lower-cased key names whose values are addresses.
    pub address_keys: HashSet<String>,
    /// Lower-cased words marking a card context.
    pub card_words: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            enabled: [true; 6],
            formats: Class::ALL.map(Format::default_for),
            name_keys: DEFAULT_NAME_KEYS.iter().map(|s| s.to_string()).collect(),
            address_keys: DEFAULT_ADDRESS_KEYS.iter().map(|s| s.to_string()).collect(),
            card_words: DEFAULT_CARD_WORDS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Policy {
    /// Masks only these classes.
    pub fn only(mut self, classes: &[Class]) -> Self {
        self.enabled = Class::ALL.map(|c| classes.contains(&c));
        self
    }

    pub fn with_format(mut self, class: Class, format: Format) -> Self {
        self.formats[class.index()] = format;
        self
    }

    pub fn enabled(&self, class: Class) -> bool {
        self.enabled[class.index()]
    }

    pub fn format(&self, class: Class) -> Format {
        self.formats[class.index()]
    }

    /// The same policy with every format hiding character for character (`stars` unset): a
    /// text masked with it is never longer than it was (a hidden character becomes one byte,
    /// `*`), which is what keeping a response's length needs.
    pub fn no_growth(&self) -> Policy {
        let mut p = self.clone();
        for f in &mut p.formats {
            f.stars = None;
        }
        p
    }

    fn key_class(&self, key: &str) -> Option<Class> {
        let k = key.to_lowercase();
        if self.name_keys.contains(&k) {
            Some(Class::Name)
        } else if self.address_keys.contains(&k) {
            Some(Class::Address)
        } else {
            None
        }
    }

    fn is_card_word(&self, text: &str) -> bool {
        let t = text.to_lowercase();
        self.card_words.iter().any(|w| t.contains(w.as_str()))
    }
}

/// How many values of each class were masked (or, in report-only use, found).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u32; 6]);

impl Counts {
    pub fn get(&self, class: Class) -> u32 {
        self.0[class.index()]
    }

    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }

    fn add(&mut self, class: Class) {
        self.0[class.index()] = self.0[class.index()].saturating_add(1);
    }

    /// Classes with a non-zero count, in [`Class::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Class, u32)> + '_ {
        Class::ALL
            .into_iter()
            .map(|c| (c, self.get(c)))
            .filter(|(_, n)| *n > 0)
    }
}

/// An e-mail address. A chain `a@b.c@d.example` is one match: matched as two, masking the first
/// would leave `b.c@d.example`, which is itself an address, in the output (found by the
/// `pii_mask` fuzz target).
fn email_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"[A-Za-z0-9._%+\-]+(?:@[A-Za-z0-9._%+\-]+)*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
        )
        .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    })
}

fn digits_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"[0-9]+[Xx]?").unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    })
}

/// Today in China (UTC+8): birth dates after it are not dates of birth.
fn today() -> Date {
    jiff::tz::Offset::constant(8)
        .to_datetime(jiff::Timestamp::now())
        .date()
}

/// The class of a whole digit run (`s` is digits, possibly ending in `X`), if any.
fn classify_digits(s: &[u8], card_context: bool, today: Date) -> Option<Class> {
    if detect::id18(s, today) || detect::id15(s, today) {
        Some(Class::IdNumber)
    } else if detect::mobile(s) {
        Some(Class::Mobile)
    } else if detect::bank_card(s, card_context) {
        Some(Class::BankCard)
    } else {
        None
    }
}

/// How far before a digit run a card word may stand (bytes).
const CARD_WORD_WINDOW: usize = 24;

/// Finds ID numbers, mobile numbers, bank card numbers and e-mail addresses in `text`, in order.
/// Names and addresses are found by key ([`mask_json`]), not here.
pub fn scan(text: &str) -> Vec<Match> {
    scan_with(text, &Policy::default(), false, today())
}

/// [`scan`] with a policy's card words; `card_context`: the whole text sits under a card key.
fn scan_with(text: &str, policy: &Policy, card_context: bool, today: Date) -> Vec<Match> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    // Cheap pre-check: most strings have neither an `@` nor a digit.
    let has_at = bytes.contains(&b'@');
    if has_at {
        for m in email_re().find_iter(text) {
            out.push(Match {
                class: Class::Email,
                range: m.range(),
            });
        }
    }
    if !bytes.iter().any(u8::is_ascii_digit) {
        return out;
    }
    let emails = out.len();
    for m in digits_re().find_iter(text) {
        let r = m.range();
        // Not inside a longer run of letters or digits (an order number `NO13812345678`).
        let before = r.start.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(r.end).copied();
        if before.is_some_and(|b| b.is_ascii_alphanumeric())
            || after.is_some_and(|b| b.is_ascii_alphanumeric())
        {
            continue;
        }
        if out[..emails]
            .iter()
            .any(|e| e.range.start <= r.start && r.end <= e.range.end)
        {
            continue;
        }
        let s = &bytes[r.clone()];
        let ctx = card_context || {
            let mut from = r.start.saturating_sub(CARD_WORD_WINDOW);
            while !text.is_char_boundary(from) {
                from += 1;
            }
            policy.is_card_word(&text[from..r.start])
        };
        if let Some(class) = classify_digits(s, ctx, today) {
            out.push(Match { class, range: r });
        }
    }
    out.sort_by_key(|m| m.range.start);
    out
}

/// Masks one match's text into `out`.
fn mask_value(class: Class, value: &str, policy: &Policy, out: &mut String) {
    let fmt = policy.format(class);
    match class {
        // At the last `@`: everything before it (all of a chain's links) is masked.
        Class::Email => match value.rsplit_once('@') {
            Some((local, domain)) => {
                fmt.apply(local, out);
                out.push('@');
                out.push_str(domain);
            }
            None => fmt.apply(value, out),
        },
        Class::Name if fmt == Format::default_for(Class::Name) => {
            let keep = if value.chars().count() > 2
                && COMPOUND_SURNAMES.iter().any(|s| value.starts_with(s))
            {
                2
            } else {
                1
            };
            Format::new(keep, 0, None).apply(value, out)
        }
        _ => fmt.apply(value, out),
    }
}

/// Masks every enabled match of [`scan`] in `text`; `None` when nothing was masked.
/// Masks what [`mask_once`] finds, again on its own output until nothing more is found: a value
/// can stand inside another match and be found only once that match is masked (a card-number-like
/// run in an address's domain: `a@000000000000000.x@y.z` after its chain is masked), and no
/// response may carry a value the detectors would find (the `pii_mask` fuzz target's property).
/// Every pass turns letters or digits into `*`, so this ends; [`MAX_MASK_PASSES`] bounds it.
fn mask_str(
    text: &str,
    policy: &Policy,
    card_context: bool,
    today: Date,
    counts: &mut Counts,
) -> Option<String> {
    let mut out = mask_once(text, policy, card_context, today, counts)?;
    for _ in 1..MAX_MASK_PASSES {
        match mask_once(&out, policy, card_context, today, counts) {
            Some(again) => out = again,
            None => break,
        }
    }
    Some(out)
}

/// Passes of [`mask_str`] over one value at most (the first finds almost everything).
const MAX_MASK_PASSES: usize = 8;

fn mask_once(
    text: &str,
    policy: &Policy,
    card_context: bool,
    today: Date,
    counts: &mut Counts,
) -> Option<String> {
    let mut matches = markup_values(text, policy);
    matches.extend(scan_with(text, policy, card_context, today));
    // Stable: at the same start an element's whole value wins over a number inside it.
    matches.sort_by_key(|m| m.range.start);
    let mut out: Option<String> = None;
    let mut last = 0;
    for m in matches.iter().filter(|m| policy.enabled(m.class)) {
        if m.range.start < last {
            // Overlaps the previous match (cannot happen with the detectors above; never slice
            // backwards if it ever does).
            continue;
        }
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[last..m.range.start]);
        mask_value(m.class, &text[m.range.clone()], policy, o);
        last = m.range.end;
        counts.add(m.class);
    }
    let mut o = out?;
    o.push_str(&text[last..]);
    Some(o)
}

fn markup_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // `<ns:key attr="…">value</ns:key>`; the names are compared in code (no backreferences).
        Regex::new(
            r"<(?:[\w.\-]+:)?([\w.\-]+)(?:\s[^<>]*)?>([^<>]{1,256})</(?:[\w.\-]+:)?([\w.\-]+)\s*>",
        )
        .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
    })
}

/// Values of XML/HTML elements named like a name or address key (`<xm>张三</xm>`,
/// `<ns:address>…</ns:address>`), for text bodies. A value that already holds a `*` is taken
/// as masked by the upstream and left alone.
fn markup_values(text: &str, policy: &Policy) -> Vec<Match> {
    if !text.as_bytes().contains(&b'<') {
        return Vec::new();
    }
    markup_re()
        .captures_iter(text)
        .filter_map(|c| {
            let (open, value, close) = (c.get(1)?, c.get(2)?, c.get(3)?);
            if !open.as_str().eq_ignore_ascii_case(close.as_str()) {
                return None;
            }
            let class = policy.key_class(open.as_str())?;
            let v = value.as_str();
            if !policy.enabled(class) || v.trim().is_empty() || v.contains('*') {
                return None;
            }
            Some(Match {
                class,
                range: value.range(),
            })
        })
        .collect()
}

/// Masks a text (the plain-text fallback): ID, mobile, card numbers and e-mail addresses, and
/// the values of XML elements named like a name or address key.
/// Returns the masked text (`None` when nothing was masked) and the counts.
pub fn mask_text(text: &str, policy: &Policy) -> (Option<String>, Counts) {
    let mut counts = Counts::default();
    let out = mask_str(text, policy, false, today(), &mut counts);
    (out, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Masks a document given as a `Value` (through its bytes, as the plugin does).
    fn mask_doc(doc: &mut Value, policy: &Policy) -> Counts {
        let body = serde_json::to_vec(doc).unwrap();
        let m = mask_json(&body, policy, Fit::Free).expect("valid JSON");
        if let Some(out) = m.body {
            *doc = serde_json::from_slice(&out).expect("masked JSON stays JSON");
        }
        m.counts
    }

    const ID: &str = "11010519491231002X";
    /// Same digits with a wrong check character.
    const ID_BAD: &str = "110105194912310021";

    fn classes(text: &str) -> Vec<(&'static str, &str)> {
        scan(text)
            .into_iter()
            .map(|m| (m.class.as_str(), &text[m.range]))
            .collect()
    }

    #[test]
    fn scan_finds_each_class_in_text() {
        let t = format!(
            "身份证{ID}，手机13812345678，卡号6222021234567890128，邮箱zhang.san@example.com"
        );
        let found = classes(&t);
        assert!(found.contains(&("id_number", ID)), "{found:?}");
        assert!(found.contains(&("mobile", "13812345678")));
        assert!(found.contains(&("email", "zhang.san@example.com")));
        let card_ok = luhn::valid("6222021234567890128");
        assert_eq!(
            found.contains(&("bank_card", "6222021234567890128")),
            card_ok
        );
    }

    #[test]
    fn invalid_checksums_order_numbers_and_timestamps_are_left_alone() {
        let t = format!("id {ID_BAD} order 202412041234567890 ts 1733350000000 seq 12345678901234");
        assert_eq!(classes(&t), vec![]);
    }

    #[test]
    fn phones_inside_longer_numbers_or_codes_are_left_alone() {
        assert_eq!(classes("138123456789"), vec![]);
        assert_eq!(classes("9913812345678"), vec![]);
        assert_eq!(classes("NO13812345678"), vec![]);
        assert_eq!(classes("13812345678a"), vec![]);
        assert_eq!(classes("tel:13812345678;"), vec![("mobile", "13812345678")]);
    }

    #[test]
    fn the_15_digit_id_form_is_found() {
        assert_eq!(
            classes("旧证 110105491231002 。"),
            vec![("id_number", "110105491231002")]
        );
    }

    #[test]
    fn a_luhn_valid_number_without_prefix_needs_a_card_word() {
        // 6011… is Luhn-valid but has no 62/4/5/3 prefix.
        assert_eq!(classes("ref 6011111111111117"), vec![]);
        assert_eq!(
            classes("银行卡号 6011111111111117"),
            vec![("bank_card", "6011111111111117")]
        );
        assert_eq!(classes("visa 4111111111111112"), vec![], "Luhn fails");
    }

    #[test]
    fn a_phone_as_email_local_part_is_one_email() {
        assert_eq!(
            classes("13812345678@qq.com"),
            vec![("email", "13812345678@qq.com")]
        );
    }

    #[test]
    fn default_formats() {
        let p = Policy::default();
        let m = |c, v: &str| {
            let mut o = String::new();
            mask_value(c, v, &p, &mut o);
            o
        };
        assert_eq!(m(Class::IdNumber, ID), "110105********002X");
        assert_eq!(m(Class::Mobile, "13812345678"), "138****5678");
        assert_eq!(
            m(Class::BankCard, "6222021234567890128"),
            "622202*********0128"
        );
        assert_eq!(m(Class::Email, "zhang@example.com"), "z***@example.com");
        assert_eq!(m(Class::Name, "张三"), "张*");
        assert_eq!(m(Class::Name, "李小明"), "李**");
        assert_eq!(m(Class::Name, "欧阳娜娜"), "欧阳**");
        assert_eq!(m(Class::Name, "张"), "*");
        assert_eq!(
            m(Class::Address, "北京市朝阳区建国路88号"),
            "北京市朝阳区****"
        );
        assert_eq!(m(Class::Address, "北京"), "北****");
    }

    #[test]
    fn mask_json_masks_strings_numbers_and_keyed_names() {
        let mut v = json!({
            "data": {
                "xm": "张三",
                "sfzh": ID,
                "sjh": 13812345678u64,
                "bad": ID_BAD,
                "orderNo": 202412041234567890u64,
                "cardNo": "6011111111111117",
                "addr": "北京市朝阳区建国路88号",
                "note": "联系 13912345678 或 li@example.com",
                "names": {"姓名": ["王五", "欧阳娜娜"]},
                "ok": true, "n": null, "f": 1.5
            }
        });
        let c = mask_doc(&mut v, &Policy::default());
        let d = &v["data"];
        assert_eq!(d["xm"], "张*");
        assert_eq!(d["sfzh"], "110105********002X");
        assert_eq!(d["sjh"], "138****5678");
        assert_eq!(d["bad"], ID_BAD);
        assert_eq!(d["orderNo"], 202412041234567890u64);
        assert_eq!(d["cardNo"], "601111******1117");
        assert_eq!(d["addr"], "北京市朝阳区****");
        assert_eq!(d["note"], "联系 139****5678 或 l***@example.com");
        assert_eq!(d["names"]["姓名"], json!(["王*", "欧阳**"]));
        assert_eq!(c.get(Class::Name), 3);
        assert_eq!(c.get(Class::IdNumber), 1);
        assert_eq!(c.get(Class::Mobile), 2);
        assert_eq!(c.get(Class::BankCard), 1);
        assert_eq!(c.get(Class::Email), 1);
        assert_eq!(c.get(Class::Address), 1);
        // Report-only leaves the document alone.
        let orig = json!({"phone": "13812345678"});
        let hits = scan_json(orig.to_string().as_bytes(), &Policy::default()).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].path.as_str(), hits[0].class),
            ("$.phone", Class::Mobile)
        );
    }

    #[test]
    fn disabled_classes_and_custom_formats() {
        let p = Policy::default()
            .only(&[Class::Mobile])
            .with_format(Class::Mobile, Format::new(0, 4, Some(2)));
        let mut v = json!({"name": "张三", "m": "13812345678", "id": ID});
        let c = mask_doc(&mut v, &p);
        assert_eq!(v, json!({"name": "张三", "m": "**5678", "id": ID}));
        assert_eq!(c.total(), 1);
    }

    /// The fuzz target's properties (`fuzz/fuzz_targets/pii_mask.rs`) on a few hand-made inputs.
    #[test]
    fn masking_twice_changes_nothing_and_json_stays_valid() {
        let p = Policy::default();
        for text in [
            format!("{ID}{ID} {ID}，{ID}x 13812345678@qq.com x1@a.com13812345678"),
            "卡号 6011111111111117 / 4111111111111111 / 110105491231002 / 19912345678".into(),
            "a@b.cc a.b-c@d-e.f.gh 138-1234-5678 ①③⑧ 1381234567８".into(),
            "<xm>张</xm><addr>北京</addr><name>欧阳娜娜</name><dz> x </dz>".into(),
        ] {
            let (out, counts) = mask_text(&text, &p);
            let out = out.expect("something to mask");
            assert!(counts.total() > 0);
            assert_eq!(mask_text(&out, &p).0, None, "{out}");
        }
        let mut doc = json!([{"n": 13812345678u64, "s": [ID, {"email": "q@w.io"}], "f": 1e300}]);
        mask_doc(&mut doc, &p);
        let back: Value = serde_json::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn xml_elements_named_like_name_and_address_keys_are_masked() {
        let xml = format!(
            "<r><ns:XM a=\"1\">张三</ns:XM><dz>北京市朝阳区建国路88号</dz><sfzh>{ID}</sfzh>\
             <name>李*</name><title>张三</title><xm>王五</dz></r>"
        );
        let (out, c) = mask_text(&xml, &Policy::default());
        assert_eq!(
            out.unwrap(),
            "<r><ns:XM a=\"1\">张*</ns:XM><dz>北京市朝阳区****</dz><sfzh>110105********002X</sfzh>\
             <name>李*</name><title>张三</title><xm>王五</dz></r>"
        );
        assert_eq!(
            (
                c.get(Class::Name),
                c.get(Class::Address),
                c.get(Class::IdNumber)
            ),
            (1, 1, 1)
        );
        // Already masked upstream: left alone and not counted, in JSON too.
        let mut v = json!({"xm": "张*"});
        assert_eq!(mask_doc(&mut v, &Policy::default()).total(), 0);
    }

    #[test]
    fn numbers_it_does_not_mask_keep_their_value_through_a_rewrite() {
        let text = r#"{"n":99966666666666666666666666666666666666666666666666666666666666699999999999.0,"x":0.1000000000000000055511151231257827,"m":"13812345678"}"#;
        let m = mask_json(text.as_bytes(), &Policy::default(), Fit::Free).unwrap();
        assert_eq!(m.counts.get(Class::Mobile), 1);
        // Only the masked value changed: the numbers keep even their spelling.
        assert_eq!(
            String::from_utf8(m.body.unwrap()).unwrap(),
            text.replace("13812345678", "138****5678")
        );
    }

    #[test]
    fn a_value_found_only_after_another_is_masked_is_masked_too() {
        let text = "card yajava.lan@0.lan@000000000000000.lan@000000000000jyy0.a";
        let (out, _) = mask_text(text, &Policy::default());
        let out = out.unwrap();
        assert_eq!(mask_text(&out, &Policy::default()).0, None, "{out}");
    }

    #[test]
    fn a_chain_of_addresses_is_masked_whole_and_not_found_again() {
        let text = "x(Ba@r.ajava.lan@g.ajava.lanlana.Nu,y and a@b.cn";
        let (out, c) = mask_text(text, &Policy::default());
        let out = out.unwrap();
        assert_eq!(out, "x(B***@g.ajava.lanlana.Nu,y and ***@b.cn");
        assert_eq!(c.get(Class::Email), 2);
        assert_eq!(mask_text(&out, &Policy::default()).0, None);
    }

    #[test]
    fn mask_text_returns_none_when_nothing_matched() {
        let (out, c) = mask_text(
            "nothing to see, order 202412041234567890",
            &Policy::default(),
        );
        assert!(out.is_none());
        assert_eq!(c.total(), 0);
        let (out, c) = mask_text("<td>13812345678</td>", &Policy::default());
        assert_eq!(out.as_deref(), Some("<td>138****5678</td>"));
        assert_eq!(c.get(Class::Mobile), 1);
    }
}
