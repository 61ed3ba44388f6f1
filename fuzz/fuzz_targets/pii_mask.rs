//! The personal-data detectors and the leak guard's patterns over upstream response bodies.
//!
//! Properties: nothing panics; every match lies on character boundaries; text masking reports
//! a count exactly when it changed something, and masking its output again changes nothing
//! (no masked value is itself detected); JSON masking walks whatever serde_json parses, leaves a
//! document without matches as it was, returns valid JSON in which nothing is detected again,
//! and keeps the length exactly when asked to;
//! the prefilter never says "nothing to mask" of a body in which masking finds something.
#![no_main]

use fenfa_plugins::leak_guard::{self, Leak};
use fenfa_plugins::pii::{self, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = Policy::default();
    let may_mask = pii::Prefilter::new(&policy).may_mask(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = leak_guard::detect(text, &Leak::ALL);
        for m in pii::scan(text) {
            assert!(text.is_char_boundary(m.range.start) && text.is_char_boundary(m.range.end));
            assert!(m.range.start < m.range.end);
        }
        let (out, counts) = pii::mask_text(text, &policy);
        assert!(may_mask || counts.total() == 0, "the prefilter skipped a text to mask");
        match out {
            None => assert_eq!(counts.total(), 0),
            Some(masked) => {
                assert!(counts.total() > 0);
                let (again, _) = pii::mask_text(&masked, &policy);
                assert_eq!(again, None, "a masked value was detected again in {masked:?}");
            }
        }
    }
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let masked = pii::mask_json(data, &policy, pii::Fit::Free)
            .expect("what serde_json parses, the masker walks as JSON");
        let counts = masked.counts;
        assert!(may_mask || counts.total() == 0, "the prefilter skipped JSON to mask");
        match &masked.body {
            None => assert_eq!(counts.total(), 0),
            Some(out) => {
                let back: serde_json::Value =
                    serde_json::from_slice(out).expect("a masked document is valid JSON");
                assert_eq!(
                    doc.as_array().map(Vec::len),
                    back.as_array().map(Vec::len),
                    "masking keeps the document's shape"
                );
                let again = pii::mask_json(out, &policy, pii::Fit::Free).expect("JSON");
                assert_eq!(again.counts.total(), 0, "a masked value was detected again");
            }
        }
        let kept = pii::mask_json(data, &policy, pii::Fit::KeepLength).expect("JSON");
        assert_eq!(kept.counts, counts);
        if let Some(out) = kept.body {
            assert_eq!(out.len(), data.len(), "a kept length is kept");
            let _: serde_json::Value =
                serde_json::from_slice(&out).expect("a length-kept document is valid JSON");
        }
    }
});
