//! A set of IP networks (`10.0.0.0/8`, `2001:db8::/32`, single addresses) and a fast membership
//! test.
//!
//! Used by `ip-restriction` for its allow and deny lists, and by the gateway for
//! `trusted_proxies` ([`CidrSet::resolve_client_ip`] finds the client behind them). A
//! [`CidrSet`] is valid once it exists: entries are parsed and checked at the config boundary (a
//! set deserializes from a list of strings, and a bad entry is reported with its index), then
//! aggregated into sorted, non-overlapping networks so that [`CidrSet::contains`] is a binary
//! search with no allocation.
//!
//! The syntax and the network arithmetic are `ipnet`'s. Fenfa's own policy is what stays here:
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) are the IPv4 address they carry, both as
//! entries and as lookups (a dual-stack listener reports IPv4 clients that way, and an operator
//! who writes `10.0.0.0/8` means them too); host bits must be zero (a typo is refused with a
//! suggestion, not silently widened); and the `X-Forwarded-For` walk.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// One network: an address and a prefix length. Host bits are always zero. `Debug` and
/// `Display` both print `10.0.0.0/8`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network `{input}`: {reason}")]
pub struct CidrError {
    /// The text that failed to parse (an address range, never a secret).
    pub input: String,
    pub reason: String,
}

impl CidrError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

impl Cidr {
    /// A network from an address and prefix length. IPv4-mapped IPv6 networks of prefix ≥ 96
    /// become the IPv4 network they denote.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let net = IpNet::new(addr, prefix).map_err(|_| {
            CidrError::new(
                &format!("{addr}/{prefix}"),
                format!("prefix length {prefix} is larger than {}", max_prefix(addr)),
            )
        })?;
        let net = match net {
            IpNet::V6(v6) if prefix >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => IpNet::new(IpAddr::V4(v4), prefix - 96).unwrap_or(net),
                None => net,
            },
            _ => net,
        };
        if net.trunc() != net {
            return Err(CidrError::new(
                &net.to_string(),
                format!("host bits are set; did you mean `{}`?", net.trunc()),
            ));
        }
        Ok(Self(net))
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length (0–32 for IPv4, 0–128 for IPv6).
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// True if `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`192.0.2.7`, `2001:db8::1`).
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(CidrError::new(
                s,
                "empty; expected e.g. `10.0.0.0/8` or `2001:db8::/32`",
            ));
        }
        let (addr_text, prefix_text) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr = IpAddr::from_str(addr_text).map_err(|_| {
            CidrError::new(
                s,
                format!(
                    "`{addr_text}` is not an IPv4 or IPv6 address; expected e.g. `10.0.0.0/8` \
                     or `2001:db8::/32` (host names are not allowed)"
                ),
            )
        })?;
        let prefix = match prefix_text {
            None => max_prefix(addr),
            // One to three digits: `u8::from_str` alone would take `+8` and `0008`.
            Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad_prefix(s, p, addr))?
            }
            Some(p) => return Err(bad_prefix(s, p, addr)),
        };
        Self::new(addr, prefix).map_err(|e| CidrError::new(s, e.reason))
    }
}

fn bad_prefix(input: &str, prefix: &str, addr: IpAddr) -> CidrError {
    CidrError::new(
        input,
        format!(
            "prefix length `{prefix}` is not a number from 0 to {}",
            max_prefix(addr)
        ),
    )
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address or network such as `10.0.0.0/8`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cidr, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A set of networks with a fast [`contains`](CidrSet::contains).
///
/// Deserializes from a list of strings (`["10.0.0.0/8", "2001:db8::1"]`) and serializes back to
/// the entries as given (normalised). Equality compares the entries, not the address space.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    entries: Vec<Cidr>,
    /// `ipnet`'s aggregate of the entries per family, as sorted, disjoint inclusive ranges
    /// (IPv4 widened to `u128`, so one binary search serves both).
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

impl CidrSet {
    /// The empty set: contains nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses every entry; the error names the first bad one (and its index in `index`).
    pub fn parse<I, S>(items: I) -> Result<Self, (usize, CidrError)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut entries = Vec::new();
        for (i, s) in items.into_iter().enumerate() {
            entries.push(s.as_ref().parse::<Cidr>().map_err(|e| (i, e))?);
        }
        Ok(entries.into_iter().collect())
    }

    /// True if no entry was given.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, as given (normalised, duplicates kept).
    pub fn entries(&self) -> &[Cidr] {
        &self.entries
    }

    /// True if `ip` is inside any entry. IPv4-mapped IPv6 addresses are looked up as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => in_ranges(&self.v4, u128::from(u32::from(a))),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    /// The client address of a request from `peer`, with this set as the trusted proxies.
    ///
    /// From a peer outside the set, `X-Forwarded-For` is ignored and the peer is the client.
    /// From a trusted peer, the header's entries (all lines, in order, comma-separated) are read
    /// from the right: trusted addresses are skipped and the first untrusted one is the client.
    /// If every entry is trusted, the left-most is the client. An entry that is not an address
    /// (`unknown`, garbage) ends the walk: nothing left of it can be believed, so the client is
    /// the last address read (the peer if it is the right-most entry). Empty entries are skipped.
    /// Entries may carry a port (`192.0.2.1:5678`, `[2001:db8::1]:443`). IPv4-mapped IPv6
    /// results are returned as IPv4.
    pub fn resolve_client_ip<'a, I>(&self, peer: IpAddr, forwarded_for: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: DoubleEndedIterator,
    {
        let peer = canonical(peer);
        if self.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for line in forwarded_for.into_iter().rev() {
            for entry in line.rsplit(|&b| b == b',') {
                if entry.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Some(ip) = parse_forwarded_entry(entry) else {
                    return client;
                };
                client = canonical(ip);
                if !self.contains(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port.
fn parse_forwarded_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

fn in_ranges(ranges: &[(u128, u128)], x: u128) -> bool {
    // Index of the first range starting after x; the candidate is the one before it.
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && x <= ranges[i - 1].1
}

/// Inclusive `u128` bounds of an aggregated network.
fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        let entries: Vec<Cidr> = iter.into_iter().collect();
        let nets: Vec<IpNet> = entries.iter().map(|c| c.0).collect();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        // `aggregate` returns sorted, non-overlapping networks, IPv4 before IPv6.
        for net in IpNet::aggregate(&nets) {
            match net {
                IpNet::V4(_) => v4.push(bounds(&net)),
                IpNet::V6(_) => v6.push(bounds(&net)),
            }
        }
        Self { entries, v4, v6 }
    }
}

impl fmt::Debug for CidrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl serde::Serialize for CidrSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for CidrSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Element by element, so a path-tracking deserializer names the bad index.
        Ok(Vec::<Cidr>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(items: &[&str]) -> CidrSet {
        CidrSet::parse(items).unwrap()
    }

    #[test]
    fn ipv4_network_contains_its_addresses_and_nothing_else() {
        let s = set(&["10.0.0.0/8"]);
        assert!(s.contains(ip("10.0.0.0")));
        assert!(s.contains(ip("10.255.255.255")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("9.255.255.255")));
    }

    #[test]
    fn ipv6_network_contains_its_addresses_and_nothing_else() {
        let s = set(&["2001:db8::/32"]);
        assert!(s.contains(ip("2001:db8::1")));
        assert!(s.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!s.contains(ip("2001:db9::")));
        assert!(!s.contains(ip("10.0.0.1")));
    }

    #[test]
    fn single_address_is_a_full_length_prefix() {
        let s = set(&["192.0.2.7", "2001:db8::7"]);
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(s.contains(ip("2001:db8::7")));
        assert!(!s.contains(ip("2001:db8::8")));
        assert_eq!(s.entries()[0].to_string(), "192.0.2.7/32");
    }

    #[test]
    fn ipv4_mapped_ipv6_client_is_matched_as_ipv4() {
        let s = set(&["10.0.0.0/8"]);
        assert!(s.contains(ip("::ffff:10.1.2.3")));
        assert!(!s.contains(ip("::ffff:11.1.2.3")));
    }

    #[test]
    fn ipv4_mapped_ipv6_entry_is_an_ipv4_network() {
        let s = set(&["::ffff:10.0.0.0/104"]);
        assert_eq!(s.entries()[0].to_string(), "10.0.0.0/8");
        assert!(s.contains(ip("10.9.9.9")));
        assert!(s.contains(ip("::ffff:10.9.9.9")));
    }

    #[test]
    fn ipv4_entry_does_not_match_non_mapped_ipv6() {
        let s = set(&["0.0.0.0/0"]);
        assert!(s.contains(ip("203.0.113.9")));
        assert!(!s.contains(ip("2001:db8::1")));
    }

    #[test]
    fn zero_prefix_matches_every_address_of_its_family() {
        let s = set(&["::/0"]);
        assert!(s.contains(ip("2001:db8::1")));
        assert!(s.contains(ip("::")));
        assert!(!s.contains(ip("10.0.0.1")));
    }

    #[test]
    fn empty_set_contains_nothing() {
        let s = CidrSet::new();
        assert!(s.is_empty());
        assert!(!s.contains(ip("10.0.0.1")));
        assert!(!s.contains(ip("::1")));
    }

    #[test]
    fn overlapping_and_adjacent_entries_merge_without_losing_addresses() {
        let s = set(&[
            "10.0.1.0/24",
            "10.0.0.0/24",
            "10.0.0.0/16",
            "192.168.0.0/24",
            "192.168.1.0/24",
            "255.255.255.255",
        ]);
        assert_eq!(s.v4.len(), 3);
        assert_eq!(s.entries().len(), 6);
        for a in [
            "10.0.0.0",
            "10.0.255.255",
            "192.168.0.0",
            "192.168.1.255",
            "255.255.255.255",
        ] {
            assert!(s.contains(ip(a)), "{a}");
        }
        for a in ["10.1.0.0", "192.168.2.0", "255.255.255.254"] {
            assert!(!s.contains(ip(a)), "{a}");
        }
    }

    #[test]
    fn many_entries_are_all_found() {
        let items: Vec<String> = (0..=255)
            .step_by(2)
            .map(|i| format!("10.{i}.0.0/16"))
            .collect();
        let s = CidrSet::parse(&items).unwrap();
        for i in 0..=255u8 {
            assert_eq!(
                s.contains(IpAddr::from([10, i, 3, 4])),
                i % 2 == 0,
                "10.{i}.3.4"
            );
        }
    }

    #[test]
    fn host_bits_set_is_rejected_with_a_suggestion() {
        let e = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid network `10.1.2.3/8`: host bits are set; did you mean `10.0.0.0/8`?"
        );
    }

    #[test]
    fn too_long_prefix_is_rejected() {
        let e = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert!(e.reason.contains("larger than 32"), "{e}");
        let e = "::/129".parse::<Cidr>().unwrap_err();
        assert!(e.reason.contains("larger than 128"), "{e}");
    }

    #[test]
    fn non_numeric_prefix_is_rejected() {
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "10.0.0.0/8/8",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.reason.contains("prefix length"), "{bad}: {e}");
        }
    }

    #[test]
    fn host_names_and_garbage_are_rejected_naming_the_input() {
        let e = "gateway.local/24".parse::<Cidr>().unwrap_err();
        assert_eq!(e.input, "gateway.local/24");
        assert!(e.reason.contains("not an IPv4 or IPv6 address"), "{e}");
        assert!("".parse::<Cidr>().unwrap_err().reason.starts_with("empty"));
        assert!("fe80::1%eth0".parse::<Cidr>().is_err());
    }

    #[test]
    fn parse_reports_the_index_of_the_bad_entry() {
        let (i, e) = CidrSet::parse(["10.0.0.0/8", "2001:db8::/32", "nope"]).unwrap_err();
        assert_eq!(i, 2);
        assert_eq!(e.input, "nope");
    }

    #[test]
    fn deserializing_names_the_bad_entry_by_path() {
        let v = serde_json::json!(["10.0.0.0/8", "10.0.0.1/8"]);
        let e = serde_path_to_error::deserialize::<_, CidrSet>(v).unwrap_err();
        assert_eq!(e.path().to_string(), "[1]");
        assert!(e.inner().to_string().contains("did you mean `10.0.0.0/8`"));
    }

    fn resolve(trusted: &[&str], peer: &str, xff: &[&str]) -> IpAddr {
        let lines: Vec<&[u8]> = xff.iter().map(|l| l.as_bytes()).collect();
        set(trusted).resolve_client_ip(ip(peer), lines)
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        assert_eq!(
            resolve(&["10.0.0.0/8"], "192.0.2.1", &["203.0.113.9"]),
            ip("192.0.2.1")
        );
        assert_eq!(resolve(&[], "192.0.2.1", &["203.0.113.9"]), ip("192.0.2.1"));
    }

    #[test]
    fn client_is_the_right_most_untrusted_forwarded_address() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            resolve(
                &trusted,
                "10.0.0.1",
                &["198.51.100.7, 203.0.113.9, 10.0.0.2"]
            ),
            ip("203.0.113.9")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            resolve(
                &trusted,
                "10.0.0.1",
                &["198.51.100.7", "203.0.113.9, 10.0.0.2"]
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn client_is_the_left_most_address_when_every_hop_is_trusted() {
        assert_eq!(
            resolve(&["10.0.0.0/8"], "10.0.0.1", &["10.9.9.9, 10.0.0.2"]),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn trusted_peer_without_forwarded_for_is_the_client() {
        assert_eq!(resolve(&["10.0.0.0/8"], "10.0.0.1", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn garbage_forwarded_entry_stops_the_walk_at_the_last_believed_address() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            resolve(&trusted, "10.0.0.1", &["203.0.113.9, unknown"]),
            ip("10.0.0.1")
        );
        assert_eq!(
            resolve(&trusted, "10.0.0.1", &["203.0.113.9, nonsense, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        // Empty entries are not garbage.
        assert_eq!(
            resolve(&trusted, "10.0.0.1", &["203.0.113.9, ", ""]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_entries_with_ports_and_mapped_addresses_are_understood() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            resolve(
                &trusted,
                "::ffff:10.0.0.1",
                &["[2001:db8::9]:443, 10.0.0.2:80"]
            ),
            ip("2001:db8::9")
        );
        assert_eq!(
            resolve(&trusted, "10.0.0.1", &["::ffff:203.0.113.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(resolve(&[], "::ffff:192.0.2.1", &[]), ip("192.0.2.1"));
    }

    #[test]
    fn serializes_back_to_normalised_entries() {
        let s = set(&["10.0.0.0/8", "2001:DB8::1", " 192.0.2.1 "]);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!(["10.0.0.0/8", "2001:db8::1/128", "192.0.2.1/32"])
        );
        assert_eq!(
            format!("{s:?}"),
            "[10.0.0.0/8, 2001:db8::1/128, 192.0.2.1/32]"
        );
    }
}
