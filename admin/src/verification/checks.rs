//! The connectivity, sensitivity and baseline checks: each reads the probes of one pass over
//! the definition's sample requests ([`probe_samples`]), plus one probe per target for a path
//! that does not exist ([`probe_missing`]).

use std::time::Duration;

use serde_json::json;

use fenfa_config::model::Scheme;
use fenfa_plugins::leak_guard::{self, Leak};
use fenfa_plugins::pii::{self, Fit, Policy};

use super::{Check, Definition, Grade, Item};
use crate::inspection::probe::{self, Answer, Cause, Limits, Outcome};
use crate::inspection::sample::{self, Sample};
use crate::model::Snapshot;

/// Probes running at the same time.
const PARALLEL: usize = 16;

/// One sample request sent to one target.
#[derive(Debug)]
pub struct Probed {
    pub interface: String,
    /// Index of the sample among the interface's.
    pub sample: usize,
    pub request: Sample,
    pub outcome: Outcome,
}

/// Sends every interface's samples to every target.
pub async fn probe_samples(def: &Definition, limits: Limits, now: i64) -> Vec<Probed> {
    let mut jobs = Vec::new();
    for r in &def.routes {
        for (i, s) in sample::of(r, &r.samples).into_iter().enumerate() {
            for t in &def.upstream().targets {
                jobs.push((
                    r.name.to_string(),
                    r.hosts.first().cloned(),
                    i,
                    s.clone(),
                    t.addr.clone(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for chunk in jobs.chunks(PARALLEL) {
        let mut set = tokio::task::JoinSet::new();
        for (k, (_, host, _, s, target)) in chunk.iter().enumerate() {
            let (up, host, s, target) = (
                def.upstream().clone(),
                host.clone(),
                s.clone(),
                target.clone(),
            );
            set.spawn(async move {
                (
                    k,
                    probe::probe(&up, &target, host.as_deref(), &s, limits, now).await,
                )
            });
        }
        let mut done: Vec<(usize, Outcome)> = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(x) = r {
                done.push(x);
            }
        }
        done.sort_by_key(|(k, _)| *k);
        for (k, outcome) in done {
            let (iface, _, i, s, _) = &chunk[k];
            out.push(Probed {
                interface: iface.clone(),
                sample: *i,
                request: s.clone(),
                outcome,
            });
        }
    }
    out
}

/// The path the baseline asks every target for: one no interface serves.
pub const MISSING_PATH: &str = "/.fenfa-verification-no-such-path";

/// Asks every target for [`MISSING_PATH`], to see its error answer.
pub async fn probe_missing(def: &Definition, limits: Limits, now: i64) -> Vec<Outcome> {
    let s = Sample {
        method: "GET".into(),
        path: MISSING_PATH.into(),
        headers: Vec::new(),
        body: None,
        expect_status: None,
    };
    let host = def.routes.iter().find_map(|r| r.hosts.first().cloned());
    let mut out = Vec::new();
    for t in &def.upstream().targets {
        out.push(probe::probe(def.upstream(), &t.addr, host.as_deref(), &s, limits, now).await);
    }
    out
}

/// Causes that only warn: the interface answered as it should.
fn warns_only(c: &Cause) -> bool {
    matches!(c, Cause::Slow | Cause::CertificateExpiring)
}

/// Whether a probe counts as answered correctly (warnings allowed).
pub fn answered(o: &Outcome) -> bool {
    o.causes.iter().all(warns_only)
}

/// DNS, TCP, TLS and each sample's expected answer within the timeout.
pub fn connectivity(probes: &[Probed]) -> Check {
    let items = probes
        .iter()
        .map(|p| {
            let o = &p.outcome;
            let result = if o.causes.is_empty() {
                Grade::Pass
            } else if answered(o) {
                Grade::Warn
            } else {
                Grade::Fail
            };
            let detail = match (o.status, o.latency_ms) {
                (Some(st), Some(ms)) if o.detail.is_empty() => {
                    format!("answered {st} in {ms} ms")
                }
                (Some(st), Some(ms)) => format!("answered {st} in {ms} ms: {}", o.detail),
                _ => o.detail.clone(),
            };
            Item {
                result,
                interface: Some(p.interface.clone()),
                target: Some(o.target.clone()),
                what: format!("{} {}", p.request.method, p.request.path),
                detail,
                evidence: json!({
                    "status": o.status,
                    "latency_ms": o.latency_ms,
                    "cert_days_left": o.cert_days_left,
                    "causes": o.causes,
                }),
            }
        })
        .collect();
    Check::new("connectivity", items)
}

/// Personal data left in one answer once `masking` (the service's) had masked it: by JSON path
/// (or `(text)`) and class, with counts — never the values.
pub fn unmasked(answer: &Answer, masking: Option<&Policy>) -> Vec<(String, &'static str, u32)> {
    let body = &answer.body[..];
    let content_type = answer.headers.get(http::header::CONTENT_TYPE);
    let is_json_type = content_type
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let m = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            m == "application/json" || m == "text/json" || m.ends_with("+json")
        })
        .unwrap_or(false);
    let looks_json = matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    if is_json_type || looks_json {
        let masked;
        let doc: &[u8] = match masking.and_then(|p| pii::mask_json(body, p, Fit::Free)) {
            Some(m) => {
                masked = m.body;
                masked.as_deref().unwrap_or(body)
            }
            None => body,
        };
        if let Some(hits) = pii::scan_json(doc, &Policy::default()) {
            return hits
                .into_iter()
                .map(|h| (h.path, h.class.as_str(), h.count))
                .collect();
        }
    }
    // Text, or JSON that did not parse (cut at the kept length): the text detectors.
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let text = match masking {
        Some(p) => pii::mask_text(text, p)
            .0
            .unwrap_or_else(|| text.to_string()),
        None => text.to_string(),
    };
    let mut counts: Vec<(String, &'static str, u32)> = Vec::new();
    for m in pii::scan(&text) {
        match counts.iter_mut().find(|c| c.1 == m.class.as_str()) {
            Some(c) => c.2 += 1,
            None => counts.push(("(text)".into(), m.class.as_str(), 1)),
        }
    }
    counts
}

/// The sample answers scanned for personal data the masking policy leaves visible.
pub fn sensitivity(probes: &[Probed], masking: Option<&Policy>) -> Check {
    let mut items = Vec::new();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for p in probes {
        let Some(a) = &p.outcome.answer else { continue };
        // One answer per sample: the targets serve the same interface.
        if seen.contains(&(p.interface.as_str(), p.sample)) {
            continue;
        }
        seen.push((p.interface.as_str(), p.sample));
        let found = unmasked(a, masking);
        let what = format!("{} {}", p.request.method, p.request.path);
        let item = if found.is_empty() {
            Item {
                result: if a.truncated {
                    Grade::Warn
                } else {
                    Grade::Pass
                },
                interface: Some(p.interface.clone()),
                target: None,
                what,
                detail: if a.truncated {
                    format!(
                        "no personal data outside the masking policy in the first {} KiB; the rest of the answer was not scanned",
                        probe::BODY_KEPT >> 10
                    )
                } else {
                    "no personal data outside the masking policy".into()
                },
                evidence: serde_json::Value::Null,
            }
        } else {
            let fields: Vec<String> = found
                .iter()
                .map(|(path, class, n)| format!("{path} ({class} ×{n})"))
                .collect();
            Item {
                result: Grade::Fail,
                interface: Some(p.interface.clone()),
                target: None,
                what,
                detail: format!(
                    "personal data not covered by the service's masking: {}",
                    fields.join(", ")
                ),
                evidence: json!({
                    "fields": found.iter().map(|(path, class, n)| json!({"path": path, "class": class, "count": n})).collect::<Vec<_>>(),
                }),
            }
        };
        items.push(item);
    }
    Check::new("sensitivity", items)
}

/// Error answers without leaks, no banners, and the transport the policy admits.
pub fn baseline(
    def: &Definition,
    snapshot: &Snapshot,
    probes: &[Probed],
    missing: &[Outcome],
) -> Check {
    let mut items = Vec::new();
    // The error answer of each target, and any sample that answered an error.
    let errors = missing
        .iter()
        .map(|o| (None, MISSING_PATH.to_string(), o))
        .chain(
            probes
                .iter()
                .filter(|p| p.outcome.status.is_some_and(|s| s >= 400))
                .map(|p| {
                    (
                        Some(p.interface.clone()),
                        p.request.path.clone(),
                        &p.outcome,
                    )
                }),
        );
    for (iface, path, o) in errors {
        let Some(a) = &o.answer else { continue };
        if a.status < 400 {
            items.push(Item {
                result: Grade::Pass,
                interface: iface,
                target: Some(o.target.clone()),
                what: format!("error answer of GET {path}"),
                detail: format!(
                    "answered {} for a path no interface serves: no error page to check",
                    a.status
                ),
                evidence: json!({"status": a.status}),
            });
            continue;
        }
        let text = String::from_utf8_lossy(&a.body);
        let leak = leak_guard::detect(&text, &Leak::ALL);
        items.push(Item {
            result: if leak.is_some() { Grade::Fail } else { Grade::Pass },
            interface: iface,
            target: Some(o.target.clone()),
            what: format!("error answer of GET {path} ({})", a.status),
            detail: match leak {
                Some(k) => format!(
                    "the error answer shows internals ({}); the agency's backend must not send them",
                    k.as_str()
                ),
                None => "no stack trace, SQL error or debug page".into(),
            },
            evidence: json!({"status": a.status, "leak": leak.map(Leak::as_str)}),
        });
    }
    // Banners in any answer, once per target and header.
    let mut banners: Vec<(String, String, String)> = Vec::new();
    let answers = missing.iter().chain(probes.iter().map(|p| &p.outcome));
    for o in answers {
        let Some(a) = &o.answer else { continue };
        for h in leak_guard::BANNERS {
            if let Some(v) = a.headers.get(h).and_then(|v| v.to_str().ok()) {
                if !banners.iter().any(|b| b.0 == o.target && b.1 == h) {
                    banners.push((o.target.clone(), h.to_string(), v.to_string()));
                }
            }
        }
    }
    for (target, header, value) in banners {
        items.push(Item {
            result: Grade::Warn,
            interface: None,
            target: Some(target),
            what: format!("`{header}` banner"),
            detail: format!(
                "the backend announces `{header}: {value}`; the gateway's leak guard removes it, but the backend should not send it"
            ),
            evidence: json!({"header": header, "value": value}),
        });
    }
    items.push(transport(def, snapshot));
    Check::new("baseline", items)
}

/// HTTPS where the network policy asks for it: the policy rules admitting the targets decide
/// the protocol; a certificate that is not verified warns.
fn transport(def: &Definition, snapshot: &Snapshot) -> Item {
    let up = def.upstream();
    let rules: Vec<String> = crate::policy::admitting(snapshot, &def.service)
        .iter()
        .map(|(p, i)| format!("{}#{i}", p.name))
        .collect();
    let (result, detail) = match (up.scheme, up.tls.verify) {
        (Scheme::Https, true) => (
            Grade::Pass,
            "HTTPS to the upstream, certificate verified".to_string(),
        ),
        (Scheme::Https, false) => (
            Grade::Warn,
            "HTTPS to the upstream, but `tls.verify` is off: the certificate is not checked"
                .to_string(),
        ),
        (Scheme::Http, _) if rules.is_empty() => (
            Grade::Fail,
            "plain HTTP, and no network policy rule admits it".to_string(),
        ),
        (Scheme::Http, _) => (
            Grade::Pass,
            format!(
                "plain HTTP, as the agency's network policy admits ({}); traffic to this upstream is not encrypted",
                rules.join(", ")
            ),
        ),
    };
    Item {
        result,
        interface: None,
        target: None,
        what: "transport".into(),
        detail,
        evidence: json!({
            "scheme": match up.scheme { Scheme::Http => "http", Scheme::Https => "https" },
            "tls_verify": up.tls.verify,
            "policy_rules": rules,
        }),
    }
}

/// The inspection settings' limits, as verification applies them.
pub fn limits(s: &crate::inspection::settings::Settings) -> Limits {
    Limits {
        timeout: Duration::from_millis(s.timeout_ms),
        slow: Duration::from_millis(s.slow_ms),
        cert_warn_days: s.cert_warn_days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(ct: &str, body: &str) -> Answer {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        Answer {
            status: 200,
            headers,
            body: body.to_string().into(),
            truncated: false,
        }
    }

    #[test]
    fn unmasked_names_paths_and_classes_and_the_masking_covers_them() {
        let a = answer(
            "application/json",
            r#"{"data":{"sfzh":"11010519491231002X","sjh":"13812345678","note":"ok"}}"#,
        );
        let found = unmasked(&a, None);
        assert_eq!(
            found,
            vec![
                ("$.data.sfzh".to_string(), "id_number", 1),
                ("$.data.sjh".to_string(), "mobile", 1)
            ]
        );
        // The answer holds no value: only paths and classes.
        assert!(!format!("{found:?}").contains("13812345678"));
        let only_ids =
            fenfa_plugins::response_masking::policy_of(&json!({"classes": ["id_number"]})).unwrap();
        assert_eq!(
            unmasked(&a, Some(&only_ids)),
            vec![("$.data.sjh".to_string(), "mobile", 1)]
        );
        let all = fenfa_plugins::response_masking::policy_of(&json!({})).unwrap();
        assert!(unmasked(&a, Some(&all)).is_empty());
    }

    #[test]
    fn text_answers_are_scanned_as_text() {
        let a = answer("text/plain", "联系电话 13812345678，备用 13912345678");
        assert_eq!(
            unmasked(&a, None),
            vec![("(text)".to_string(), "mobile", 2)]
        );
    }
}
