//! The personal-data detectors and the leak guard's patterns over upstream response bodies.
//!
//! Properties: nothing panics; every match lies on character boundaries; text masking reports
//! a count exactly when it changed something, and masking its output again changes nothing
//! (no masked value is itself detected); JSON masking leaves a document without matches as it
//! was and always leaves a document that serialises to JSON which parses back to the same value;
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
    if let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let before = doc.clone();
        let counts = pii::mask_json(&mut doc, &policy);
        assert!(may_mask || counts.total() == 0, "the prefilter skipped JSON to mask");
        if counts.total() == 0 {
            assert_eq!(doc, before);
        }
        let bytes = serde_json::to_vec(&doc).expect("a masked document serialises");
        let back: serde_json::Value =
            serde_json::from_slice(&bytes).expect("a masked document is valid JSON");
        assert_eq!(back, doc);
    }
});
