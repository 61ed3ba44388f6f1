//! The trusted-proxy walk over `X-Forwarded-For`, and CIDR matching, against a plain model.
//!
//! Properties: parsing never panics; membership agrees with a per-entry check (the merged
//! ranges lose and add nothing); from an untrusted peer the client is the peer; from a trusted
//! peer the client is the peer or an address written in the header, and never a trusted address
//! unless every hop was trusted or the walk stopped at garbage.
#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use fenfa_plugins::{Cidr, CidrSet};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    entries: Vec<String>,
    probes: Vec<[u8; 17]>,
    peer: [u8; 17],
    forwarded: Vec<Vec<u8>>,
}

fn addr(b: &[u8; 17]) -> IpAddr {
    if b[0] % 2 == 0 {
        IpAddr::from([b[1], b[2], b[3], b[4]])
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[1..17]);
        IpAddr::from(a)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fuzz_target!(|input: Input| {
    let cidrs: Vec<Cidr> = input
        .entries
        .iter()
        .filter_map(|e| e.parse().ok())
        .collect();
    let set: CidrSet = cidrs.iter().copied().collect();
    for p in input.probes.iter().chain(std::iter::once(&input.peer)) {
        let ip = addr(p);
        let model = cidrs.iter().any(|c| c.contains(ip));
        assert_eq!(set.contains(ip), model, "{ip} in {cidrs:?}");
    }
    let peer = addr(&input.peer);
    let lines: Vec<&[u8]> = input.forwarded.iter().map(Vec::as_slice).collect();
    let client = set.resolve_client_ip(peer, lines.iter().copied());
    if !set.contains(peer) {
        assert_eq!(client, canonical(peer));
        return;
    }
    if client != canonical(peer) {
        let written = lines
            .iter()
            .flat_map(|l| l.split(|&b| b == b','))
            .filter_map(|e| std::str::from_utf8(e).ok())
            .map(str::trim)
            .filter_map(|e| {
                e.parse::<IpAddr>()
                    .ok()
                    .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            })
            .any(|ip| canonical(ip) == client);
        assert!(
            written,
            "client {client} is neither the peer nor in the header"
        );
    }
});
