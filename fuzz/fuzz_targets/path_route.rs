//! Path normalisation, then the router's decision on the result.
//!
//! Properties: normalisation is idempotent; a normal path has no dot segments (with or without a
//! `;` parameter), no empty inner segments, no encoded separators or NULs and no backslash; the
//! borrowed fast path is taken only when nothing changed; the router never panics and matches
//! only normal paths it was given.
#![no_main]

use std::sync::OnceLock;

use fenfa_gateway::path::normalize;
use fenfa_gateway::router::{HostPattern, Lookup, PathPattern, Router, RouterBuilder};
use http::Method;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router<u32> {
    static R: OnceLock<Router<u32>> = OnceLock::new();
    R.get_or_init(|| {
        let mut b = RouterBuilder::new();
        let routes: [(&[&str], &str, Option<&[Method]>, u32); 6] = [
            (&[], "/api/*", None, 1),
            (&[], "/api/users/{id}", Some(&[Method::GET]), 2),
            (&["api.city.example"], "/social/pension/*", None, 3),
            (&["*.city.example"], "/h5/{agency}/*", None, 4),
            (&[], "/", None, 5),
            (&[], "/exact/path/", Some(&[Method::POST]), 6),
        ];
        for (hosts, path, methods, v) in routes {
            let hosts: Vec<HostPattern> = hosts.iter().map(|h| h.parse().unwrap()).collect();
            let path: PathPattern = path.parse().unwrap();
            b.add(&hosts, &path, methods, 0, v).unwrap();
        }
        b.build()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let (host, raw) = match raw.split_once('\n') {
        Some((h, p)) => (Some(h), p),
        None => (None, raw),
    };
    let Ok(norm) = normalize(raw) else {
        return;
    };
    let borrowed = matches!(norm, std::borrow::Cow::Borrowed(_));
    let norm: &str = &norm;
    assert!(
        !borrowed || norm == raw,
        "borrowed but changed: {raw:?} -> {norm:?}"
    );
    match normalize(norm) {
        Ok(again) => assert_eq!(&*again, norm, "not idempotent for {raw:?}"),
        Err(e) => panic!("normal path {norm:?} (from {raw:?}) refused: {e}"),
    }
    assert!(norm.starts_with('/'), "{norm:?}");
    let lower = norm.to_ascii_lowercase();
    for bad in ["%2f", "%5c", "%00", "\\", "//"] {
        assert!(
            !lower.contains(bad),
            "{norm:?} contains {bad:?} (from {raw:?})"
        );
    }
    let segments: Vec<&str> = norm[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        assert!(
            *s != "." && *s != "..",
            "dot segment in {norm:?} (from {raw:?})"
        );
        assert!(
            !s.is_empty() || i + 1 == segments.len(),
            "empty segment in {norm:?} (from {raw:?})"
        );
    }
    for method in [Method::GET, Method::POST] {
        if let Lookup::Found(m) = router().lookup(host, norm, &method) {
            // A prefix match never ends inside a segment; a parameter is one whole segment.
            let rest = norm
                .get(m.prefix_len..)
                .expect("prefix_len inside the path");
            assert!(rest.is_empty() || rest.starts_with('/'), "{norm:?}");
            for (_, v) in m.params.iter() {
                assert!(!v.is_empty() && !v.contains('/'), "{norm:?}: {v:?}");
            }
        }
    }
});
