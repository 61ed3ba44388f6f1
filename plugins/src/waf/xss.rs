//! Cross-site scripting: libinjection's HTML5 tokenizer (the `libinjectionrs` crate, see
//! [`super::sqli`] for why this crate). It parses a value in the contexts it could land in
//! (text, inside an attribute, quoted or not) and flags what executes script: `<script>`,
//! dangerous tags (`iframe`, `svg`, `object`…), event-handler attributes, `javascript:` URLs.
//!
//! libinjection also flags two things the city app's rich-text editors send every day: `style`
//! attributes (it cannot tell `color:red` from an old IE `expression()`) and `data:` image
//! URLs pasted as `<img src="data:image/png;base64,…">`. [`Xss::detect`] therefore hands it a
//! copy with harmless `style` values and `data:image/…;base64` sources removed; a style with
//! `expression(`, `url(`, `javascript`, `behavior` or `binding` stays and is judged. Plain rich
//! text (`<p><strong>…</strong><img src=…></p>`, links, tables) passes.
//!
//! A panic inside the port is caught and reported as `xss-engine-fault` (see [`super::sqli`]).

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use regex::Regex;

pub use super::sqli::Verdict;

/// The XSS engine of one plugin instance (its regular expressions are compiled once).
#[derive(Debug)]
pub struct Xss {
    style_attr: Regex,
    data_image: Regex,
    dangerous_style: Regex,
}

impl Xss {
    pub fn new() -> Result<Self, regex::Error> {
        Ok(Self {
            style_attr: Regex::new(r#"(?i)\sstyle\s*=\s*(?:"[^"<>]*"|'[^'<>]*'|[^\s"'<>]+)"#)?,
            data_image: Regex::new(
                r#"(?i)(["'])data:image/(?:png|jpe?g|gif|webp|bmp);base64,[a-z0-9+/=\s]*["']"#,
            )?,
            dangerous_style: Regex::new(
                r"(?i)expression|url\s*\(|javascript|vbscript|behavior|binding|@import|\\",
            )?,
        })
    }

    /// Whether `s` can hold markup or an attribute injection at all.
    fn worth_parsing(s: &str) -> bool {
        let b = s.as_bytes();
        memchr::memchr3(b'<', b'=', b':', b).is_some() || memchr::memchr(b'`', b).is_some()
    }

    /// Removes harmless rich-text constructs libinjection would flag (see the module doc).
    fn without_rich_text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if !s.contains('<') {
            return Cow::Borrowed(s);
        }
        let s = self.style_attr.replace_all(s, |c: &regex::Captures<'_>| {
            let whole = c.get(0).map_or("", |m| m.as_str());
            if self.dangerous_style.is_match(whole) {
                whole.to_owned()
            } else {
                String::new()
            }
        });
        match self.data_image.replace_all(&s, "${1}x${1}") {
            Cow::Borrowed(_) => s,
            Cow::Owned(o) => Cow::Owned(o),
        }
    }

    /// Runs libinjection's XSS detection on `s`.
    pub fn detect(&self, s: &str) -> Verdict {
        if !Self::worth_parsing(s) {
            return Verdict::Clean;
        }
        let text = self.without_rich_text(s);
        match catch_unwind(AssertUnwindSafe(|| {
            libinjectionrs::detect_xss(text.as_bytes()).is_injection()
        })) {
            Ok(true) => Verdict::Injection,
            Ok(false) => Verdict::Clean,
            Err(_) => Verdict::Fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_payloads() {
        let x = Xss::new().unwrap();
        for p in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "<svg onload=alert(1)>",
            "\"><script>alert(document.cookie)</script>",
            "'><svg/onload=alert(1)>",
            "<iframe src=\"javascript:alert(1)\">",
            "<body onload=alert(1)>",
            "<p style=\"width:expression(alert(1))\">x</p>",
            "<a href=\"javascript:alert(1)\">x</a>",
        ] {
            assert_eq!(x.detect(p), Verdict::Injection, "{p}");
        }
    }

    #[test]
    fn rich_text_passes() {
        let x = Xss::new().unwrap();
        for p in [
            "<p><strong>通知</strong><img src=\"https://cdn.example.gov.cn/a.png\"></p>",
            "<p style=\"text-align:center;color:#333\">居中 <span style='font-size:14px'>文字</span></p>",
            "<p><img src=\"data:image/png;base64,iVBORw0KGgo=\" alt=\"图\"></p>",
            "<ul><li>第一条</li></ul><a href=\"https://www.example.gov.cn/x?a=1\" target=\"_blank\">链接</a>",
            "<table><tr><td>1</td></tr></table>",
            "a = b",
            "time: 09:00",
        ] {
            assert_eq!(x.detect(p), Verdict::Clean, "{p}");
        }
    }
}
