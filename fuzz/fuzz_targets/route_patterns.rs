//! Host and path patterns from config text, as the route compiler reads them.
//!
//! Properties: parsing never panics; what parses prints back to text that parses to the same
//! pattern (so a config rendered by the control plane means what the operator wrote); a pattern
//! that parses can be added to a router and looked up with its own text.
#![no_main]

use fenfa_gateway::router::{HostPattern, Lookup, PathPattern, RouterBuilder};
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host_text, path_text) = text.split_once('\n').unwrap_or((text, "/"));
    let host = host_text.parse::<HostPattern>().ok();
    if let Some(h) = &host {
        let again: HostPattern = h
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{h} (from {host_text:?}) does not re-parse: {e}"));
        assert_eq!(&again, h);
    }
    let Ok(path) = path_text.parse::<PathPattern>() else {
        return;
    };
    let again: PathPattern = path
        .as_str()
        .parse()
        .unwrap_or_else(|e| panic!("{} does not re-parse: {e}", path.as_str()));
    assert_eq!(again.as_str(), path.as_str());
    let hosts: Vec<HostPattern> = host.clone().into_iter().collect();
    let mut b = RouterBuilder::new();
    b.add(&hosts, &path, None, 0, ())
        .expect("one route cannot conflict");
    let r = b.build();
    // A literal pattern matches its own text on its own host.
    if !path.as_str().contains('{') && !path.is_prefix() {
        let host_name = match &host {
            Some(HostPattern::Exact(h)) => Some(h.clone()),
            Some(HostPattern::Wildcard(s)) => Some(format!("a{s}")),
            None => None,
        };
        assert!(
            matches!(
                r.lookup(host_name.as_deref(), path.as_str(), &Method::GET),
                Lookup::Found(_)
            ),
            "{path_text:?} on {host_text:?} does not match itself"
        );
    }
});
