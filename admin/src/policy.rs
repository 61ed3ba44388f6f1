//! Network policy enforcement: every upstream target of an agency's services must fall inside
//! one of that agency's policy rules (destination, port and protocol), so no route can lead to an
//! address the policy does not allow.
//!
//! Host names are matched as names (exact, or `*.domain`), never resolved here: a rule for a
//! CIDR covers targets written as addresses in it. An agency without a policy may have no
//! upstream at all.

use crate::error::FieldError;
use crate::model::{Protocol, Snapshot};

/// `host:port` (or `[v6]:port`) split; `None` when it is not that shape (the compiler reports it).
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        addr.rsplit_once(':')?
    };
    Some((host, port.parse().ok()?))
}

fn protocol_of(svc: &crate::model::Service) -> Protocol {
    match svc.upstream.scheme {
        fenfa_config::model::Scheme::Http => Protocol::Http,
        fenfa_config::model::Scheme::Https => Protocol::Https,
    }
}

/// The policy rules (policy, rule index) that admit `svc`'s upstream targets, for the reports.
pub fn admitting<'a>(
    s: &'a Snapshot,
    svc: &crate::model::Service,
) -> Vec<(&'a crate::model::NetworkPolicy, usize)> {
    let protocol = protocol_of(svc);
    let mut out = Vec::new();
    for t in &svc.upstream.targets {
        let Some((host, port)) = split_addr(&t.addr) else {
            continue;
        };
        for p in s.policies.iter().filter(|p| p.agency_id == svc.agency_id) {
            for (i, r) in p.rules.iter().enumerate() {
                if r.protocol == protocol
                    && r.port.0 == port
                    && r.destination.contains(host)
                    && !out
                        .iter()
                        .any(|(q, j): &(&crate::model::NetworkPolicy, usize)| {
                            q.id == p.id && *j == i
                        })
                {
                    out.push((p, i));
                }
            }
        }
    }
    out
}

/// Every violation in the snapshot, as `(service id, field path, message)`.
pub fn violations(s: &Snapshot) -> Vec<(String, FieldError)> {
    let mut out = Vec::new();
    for svc in &s.services {
        let agency_name = s
            .agency(&svc.agency_id)
            .map(|a| a.name.to_string())
            .unwrap_or_else(|| svc.agency_id.clone());
        let rules: Vec<_> = s
            .policies
            .iter()
            .filter(|p| p.agency_id == svc.agency_id)
            .flat_map(|p| p.rules.iter())
            .collect();
        let protocol = match svc.upstream.scheme {
            fenfa_config::model::Scheme::Http => Protocol::Http,
            fenfa_config::model::Scheme::Https => Protocol::Https,
        };
        for (i, t) in svc.upstream.targets.iter().enumerate() {
            let Some((host, port)) = split_addr(&t.addr) else {
                continue;
            };
            let allowed = rules.iter().any(|r| {
                r.protocol == protocol && r.port.0 == port && r.destination.contains(host)
            });
            if !allowed {
                out.push((
                    svc.id.clone(),
                    FieldError::new(
                        format!("upstream.targets[{i}].addr"),
                        format!(
                            "`{}` ({}) is outside the network policy of agency `{agency_name}`; ask a security admin to allow it",
                            t.addr,
                            protocol.as_str()
                        ),
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_addr("10.0.0.1:80"), Some(("10.0.0.1", 80)));
        assert_eq!(split_addr("[::1]:8443"), Some(("::1", 8443)));
        assert_eq!(
            split_addr("api.gov.example:443"),
            Some(("api.gov.example", 443))
        );
        assert_eq!(split_addr("nope"), None);
        assert_eq!(split_addr("h:99999"), None);
    }
}
