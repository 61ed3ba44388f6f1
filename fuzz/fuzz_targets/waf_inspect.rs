//! The `waf` plugin's decoders and inspection of every input kind, on arbitrary bytes.
//!
//! Properties: nothing panics (the engines' own panics included: libFuzzer aborts on any);
//! a decoder that returns its input borrowed returned it unchanged; SQL comment stripping
//! leaves no `/*`; block mode reports at most one detection and monitor mode at most 16; every
//! excerpt and location is short and holds no run of 6 or more digits (personal numbers never
//! reach the audit trail).
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use fenfa_plugins::waf::body::BodyKind;
use fenfa_plugins::waf::{decode, Detection, Waf};
use fenfa_plugins::RequestView;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    path: String,
    query: String,
    user_agent: String,
    cookie: String,
    kind: u8,
    body: Vec<u8>,
}

fn wafs() -> &'static (Waf, Waf) {
    static W: OnceLock<(Waf, Waf)> = OnceLock::new();
    W.get_or_init(|| {
        (
            Waf::from_config(&serde_json::json!({})).unwrap(),
            Waf::from_config(&serde_json::json!({"mode": "monitor", "paranoia": 4})).unwrap(),
        )
    })
}

fn has_long_digit_run(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= 6 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

fn check(found: &[Detection], max: usize) {
    assert!(found.len() <= max, "{} detections", found.len());
    for d in found {
        assert!(d.excerpt.chars().count() <= 48, "{d:?}");
        assert!(!has_long_digit_run(&d.excerpt), "{d:?}");
        assert!(!has_long_digit_run(&d.location), "{d:?}");
    }
}

fuzz_target!(|input: Input| {
    for s in [&input.query, &input.user_agent, &input.path] {
        let n = decode::normalize(s);
        if let Cow::Borrowed(b) = n {
            assert_eq!(b, s.as_str());
        }
        let f = decode::form_decode(s);
        if !s.contains(['+', '%']) {
            assert!(matches!(f, Cow::Borrowed(_)));
        }
        assert!(!decode::strip_sql_comments(s).contains("/*"));
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&input.user_agent) {
        headers.insert(http::header::USER_AGENT, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&input.cookie) {
        headers.insert(http::header::COOKIE, v);
    }
    let path = format!("/{}", input.path);
    let view = RequestView {
        method: &http::Method::POST,
        path: &path,
        query: Some(&input.query),
        headers: &headers,
        client_ip: [127, 0, 0, 1].into(),
        tls: false,
    };
    let kind = match input.kind % 5 {
        0 => BodyKind::Json,
        1 => BodyKind::Form,
        2 => BodyKind::Multipart("b".into()),
        3 => BodyKind::Text,
        _ => BodyKind::from_content_type(std::str::from_utf8(&input.body).ok()),
    };
    let (block, monitor) = wafs();
    check(&block.inspect_head(&view), 1);
    check(&block.inspect_body(&kind, &input.body), 1);
    check(&monitor.inspect_head(&view), 16);
    check(&monitor.inspect_body(&kind, &input.body), 16);
});
