//! `/metrics` under real traffic: the per-route and per-target latency histograms, denials by
//! plugin and code, upstream health, the audit backlog gauges, and the exposition's shape (every
//! family with `# HELP` and `# TYPE`, labels only from the config). The metric reference is
//! `docs/metrics.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::{client, error_code, wait_for, Gateway, Upstream};

/// One service `s` behind route `r` (`/api/*`); route `limited` (`/limited/*`, one request an
/// hour per client IP, then `rate_limited`); route `walled` (`/walled/*`, every client denied);
/// service `flaky` behind route `f` (`/flaky/*`), ejected by its first 503.
fn config(up: &Upstream, flaky: &Upstream) -> String {
    format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{up}" }}]
  - name: flaky
    upstream:
      retries: 0
      targets: [{{ addr: "{flaky}" }}]
      health_check:
        passive: {{ max_failures: 1, cooldown: 10m, unhealthy_statuses: [503] }}
routes:
  - name: r
    service: s
    paths: ["/api/*"]
  - name: limited
    service: s
    paths: ["/limited/*"]
    plugins:
      - {{ name: rate-limit, config: {{ limits: [{{ key: ip, rate: 1, per: 1h }}] }} }}
  - name: walled
    service: s
    paths: ["/walled/*"]
    plugins:
      - {{ name: ip-restriction, config: {{ deny: ["127.0.0.0/8"] }} }}
  - name: f
    service: flaky
    paths: ["/flaky/*"]
"#,
        up = up.addr,
        flaky = flaky.addr,
    )
}

/// The samples of a scrape: series (name and labels, as written) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let v = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {l:?}: {e}"));
            (series.to_string(), v)
        })
        .collect()
}

/// The value of `series`, or a panic showing the scrape.
fn value(all: &BTreeMap<String, f64>, series: &str, text: &str) -> f64 {
    *all.get(series)
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn histograms_denials_and_health_follow_the_traffic() {
    let up = Upstream::start("up");
    let flaky = Upstream::start("flaky");
    let gw = Gateway::start(&config(&up, &flaky));
    let c = client();

    // Route `r`: four quick answers and one the upstream holds for 150 ms.
    for path in ["/api/a", "/api/b", "/api/c", "/api/d", "/api/__sleep/150"] {
        let resp = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // Denials: the rate limit lets one request through, then refuses; the wall refuses all.
    assert_eq!(
        c.get(gw.url("/limited/x")).send().await.unwrap().status(),
        200
    );
    for _ in 0..2 {
        let (status, code, _) = error_code(c.get(gw.url("/limited/x")).send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (429, "rate_limited"));
    }
    let (status, code, _) = error_code(c.get(gw.url("/walled/x")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "ip_denied"));
    // Requests that match no route, with hosts and paths no config names.
    for i in 0..3 {
        let resp = c
            .get(gw.url(&format!("/nowhere-{i}-zq")))
            .header("host", format!("h{i}-zq.example"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }

    let text = gw.settled_metrics();
    let all = samples(&text);
    let route = r#"route="r",service="s""#;
    let h = "fenfa_http_request_duration_seconds";
    assert_eq!(value(&all, &format!("{h}_count{{{route}}}"), &text), 5.0);
    assert_eq!(
        value(&all, &format!("{h}_bucket{{{route},le=\"+Inf\"}}"), &text),
        5.0
    );
    // The slow answer is in the sum and above the 0.1 s bound; the others below it.
    let sum = value(&all, &format!("{h}_sum{{{route}}}"), &text);
    assert!((0.15..10.0).contains(&sum), "sum {sum}:\n{text}");
    assert_eq!(
        value(&all, &format!("{h}_bucket{{{route},le=\"0.1\"}}"), &text),
        4.0
    );
    assert_eq!(
        value(&all, &format!("{h}_bucket{{{route},le=\"0.25\"}}"), &text),
        5.0
    );
    // Buckets are cumulative.
    let buckets: Vec<f64> = all
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{h}_bucket{{{route},")))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 15, "{text}");
    // Unrouted requests have one series, `route=""`, whatever their host and path.
    assert_eq!(
        value(
            &all,
            &format!("{h}_count{{route=\"\",service=\"\"}}"),
            &text
        ),
        3.0
    );
    assert!(!text.contains("zq"), "request data in a label:\n{text}");

    // The upstream target's histogram: the same five attempts and the limited route's one.
    let u = "fenfa_upstream_duration_seconds";
    let target = format!(r#"service="s",target="{}""#, up.addr);
    assert_eq!(value(&all, &format!("{u}_count{{{target}}}"), &text), 6.0);
    let usum = value(&all, &format!("{u}_sum{{{target}}}"), &text);
    assert!((0.15..10.0).contains(&usum), "upstream sum {usum}:\n{text}");
    assert_eq!(
        value(&all, &format!("{u}_bucket{{{target},le=\"0.1\"}}"), &text),
        5.0
    );

    // Denials by plugin and code; the routes' own counts agree.
    let d = "fenfa_denials_total";
    assert_eq!(
        value(
            &all,
            &format!("{d}{{plugin=\"rate-limit\",code=\"rate_limited\"}}"),
            &text
        ),
        2.0
    );
    assert_eq!(
        value(
            &all,
            &format!("{d}{{plugin=\"ip-restriction\",code=\"ip_denied\"}}"),
            &text
        ),
        1.0
    );
    assert_eq!(
        value(
            &all,
            r#"fenfa_http_requests_total{route="limited",service="s",status="429"}"#,
            &text
        ),
        2.0
    );

    // Upstream health: 1, then 0 once the flaky target's 503 ejects it.
    let healthy = format!(
        r#"fenfa_upstream_target_healthy{{service="flaky",target="{}"}}"#,
        flaky.addr
    );
    assert_eq!(gw.metric(&healthy), Some(1.0), "{text}");
    let resp = c.get(gw.url("/flaky/__status/503")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    wait_for(
        "the flaky target's gauge to read 0",
        Duration::from_secs(5),
        || gw.metric(&healthy) == Some(0.0),
    );
    let (status, code, _) = error_code(c.get(gw.url("/flaky/x")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (503, "no_healthy_upstream"));
    // Its failed attempt is in its histogram too.
    assert_eq!(
        gw.metric(&format!(
            r#"fenfa_upstream_duration_seconds_count{{service="flaky",target="{}"}}"#,
            flaky.addr
        )),
        Some(1.0)
    );

    // The audit backlog gauges are there (no shipping configured: 0).
    assert_eq!(gw.metric("fenfa_audit_ship_backlog_bytes"), Some(0.0));
    assert_eq!(gw.metric("fenfa_audit_export_backlog_bytes"), Some(0.0));
    assert!(gw.metric("fenfa_audit_queue_depth").is_some());
}

/// What one family declares: its `# HELP` and `# TYPE`, in order of appearance.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
}

/// The families of a scrape in the text format, checked for shape: every `# TYPE` has a
/// `# HELP` before it, each once, and every sample belongs to a declared family. Returns the
/// families by name, or what is wrong.
fn families(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or(format!("line {n}: HELP without text: {line:?}"))?;
            let f = fams.entry(name.to_string()).or_default();
            if f.help.is_some() || f.kind.is_some() {
                return Err(format!(
                    "line {n}: second HELP, or HELP after TYPE, for {name}"
                ));
            }
            if help.trim().is_empty() {
                return Err(format!("line {n}: empty HELP for {name}"));
            }
            f.help = Some(help.to_string());
            current = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or(format!("line {n}: TYPE without a type: {line:?}"))?;
            let f = fams.entry(name.to_string()).or_default();
            if f.help.is_none() {
                return Err(format!("line {n}: TYPE of {name} without a HELP before it"));
            }
            if f.kind.replace(kind.to_string()).is_some() {
                return Err(format!("line {n}: second TYPE for {name}"));
            }
            current = Some(name.to_string());
        } else if line == "# EOF" || line.is_empty() {
        } else if line.starts_with('#') {
            return Err(format!("line {n}: unknown comment {line:?}"));
        } else {
            let name = line
                .split(['{', ' '])
                .next()
                .ok_or(format!("line {n}: no name"))?;
            let fam = current
                .as_deref()
                .ok_or(format!("line {n}: sample before any family"))?;
            let kind = fams[fam].kind.as_deref().unwrap_or("");
            // Text format 0.0.4: a counter's family is named with its `_total`.
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            if !suffixes.iter().any(|s| name == format!("{fam}{s}")) {
                return Err(format!(
                    "line {n}: sample {name} is not of the family above it ({fam}, {kind})"
                ));
            }
        }
    }
    Ok(fams)
}

#[tokio::test]
async fn every_family_has_help_and_type() {
    let up = Upstream::start("up");
    let flaky = Upstream::start("flaky");
    let gw = Gateway::start(&config(&up, &flaky));
    let c = client();
    // Traffic that makes every labelled family write samples.
    for path in [
        "/api/a",
        "/limited/x",
        "/limited/x",
        "/walled/x",
        "/nowhere",
    ] {
        c.get(gw.url(path)).send().await.unwrap();
    }
    let text = gw.settled_metrics();
    let fams = families(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, f) in &fams {
        assert!(f.kind.is_some(), "{name} has a HELP but no TYPE:\n{text}");
    }
    let expected: BTreeSet<&str> = [
        ("fenfa_http_requests_total", "counter"),
        ("fenfa_http_request_duration_seconds", "histogram"),
        ("fenfa_http_requests_in_flight", "gauge"),
        ("fenfa_upstream_duration_seconds", "histogram"),
        ("fenfa_upstream_target_healthy", "gauge"),
        ("fenfa_denials_total", "counter"),
        ("fenfa_plugin_calls_total", "counter"),
        ("fenfa_findings_total", "counter"),
        ("fenfa_config_reloads_total", "counter"),
        ("fenfa_audit_queue_depth", "gauge"),
        ("fenfa_audit_ship_backlog_bytes", "gauge"),
        ("fenfa_audit_export_backlog_bytes", "gauge"),
        ("fenfa_config_info", "gauge"),
    ]
    .into_iter()
    .filter(|(name, kind)| fams.get(*name).and_then(|f| f.kind.as_deref()) != Some(*kind))
    .map(|(name, _)| name)
    .collect();
    assert!(
        expected.is_empty(),
        "missing or mistyped: {expected:?}\n{text}"
    );
    // Self-check of the parser: a TYPE without HELP, and a stray sample, are caught.

    // The route label set is the live config's: a route taken out of the config leaves
    // `/metrics`; the routes that stay keep their counts.
    let without_walled = config(&up, &flaky).replace(
        "  - name: walled\n    service: s\n    paths: [\"/walled/*\"]\n    plugins:\n      - { name: ip-restriction, config: { deny: [\"127.0.0.0/8\"] } }\n",
        "",
    );
    assert!(!without_walled.contains("walled"), "{without_walled}");
    gw.write_config(&without_walled);
    gw.wait_generation(2);
    let text = gw.metrics();
    assert!(!text.contains(r#"route="walled""#), "{text}");
    assert!(
        text.contains(r#"fenfa_http_request_duration_seconds_count{route="r",service="s"} 1"#),
        "{text}"
    );

    assert!(families("# TYPE x_total counter\nx_total 1\n").is_err());
    assert!(families("# HELP x_total X.\n# TYPE x_total counter\ny_total 1\n").is_err());
    assert!(families("# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n").is_ok());
}
