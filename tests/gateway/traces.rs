//! Traces (`tracing:`, `docs/tracing.md`): the gateway continues the caller's trace, exports a
//! server span per request and a client span per upstream call to an OTLP/HTTP collector over
//! https (the receiver checks every body against the official protobuf schema), and the upstream
//! sees a `traceparent` whose parent is the exported client span. Sampling is parent-based: at
//! ratio 0 nothing of the gateway's own is exported, and the trace id still goes upstream.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::audit::{b64url, token, SECRET};
use crate::support::otlp::OtlpReceiver;
use crate::support::pki::Pki;
use crate::support::upstream::Seen;
use crate::support::{client, free_port, wait_for, Gateway, Upstream};

/// A service behind jwt-auth (`/api/*`), one whose route calls out to an unreachable Redis
/// (`/limited/*`), and the `tracing:` section appended.
fn config(up: std::net::SocketAddr, tracing: &str) -> String {
    format!(
        r#"
gateway:
  node: gw-trace-1
agencies:
  - name: tax
services:
  - name: permits
    agency: tax
    upstream:
      targets: [{{ addr: "{up}" }}]
    plugins:
      - name: jwt-auth
        config:
          issuer: "https://id.city.example"
          audience: "fenfa"
          keys: {{ keys: [ {{ kid: "k1", alg: "HS256", kty: "oct", k: "{k}" }} ] }}
  - name: open
    upstream:
      targets: [{{ addr: "{up}" }}]
routes:
  - name: permits-api
    service: permits
    paths: ["/api/*"]
  - name: limited
    service: open
    paths: ["/limited/*"]
    plugins:
      - name: rate-limit
        config:
          store: redis
          redis: {{ url: "redis://127.0.0.1:{closed}", budget: 50ms, fallback: local, local_share: 0.5, key_prefix: "traces" }}
          limits:
            - {{ key: ip, rate: 10, per: 1m, burst: 8 }}
{tracing}
"#,
        k = b64url(&SECRET),
        closed = free_port(),
    )
}

/// A fresh W3C trace id (32 hex digits) and parent id (16).
fn ids() -> (String, String) {
    (
        format!("{:032x}", fastrand::u128(1..)),
        format!("{:016x}", fastrand::u64(1..)),
    )
}

/// Sends `GET path` with an optional bearer token and `traceparent`: (status, X-Request-Id).
async fn get(gw: &Gateway, path: &str, bearer: Option<&str>, tp: Option<&str>) -> (u16, String) {
    let mut req = client().get(gw.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(tp) = tp {
        req = req.header("traceparent", tp);
    }
    let r = req.send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    (r.status().as_u16(), id)
}

/// What the upstream received for the request with this id.
fn seen(up: &Upstream, request_id: &str) -> Seen {
    up.state
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.header("x-request-id") == Some(request_id))
        .cloned()
        .unwrap_or_else(|| panic!("the upstream never saw request {request_id}"))
}

/// The `traceparent` the upstream received, split: (trace id, parent id, flags).
fn upstream_traceparent(s: &Seen) -> (String, String, String) {
    let tp = s.header("traceparent").expect("a traceparent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// The exported spans of trace `trace`, by kind (`SPAN_KIND_SERVER`, …); one of each at most.
fn of_trace(spans: &[Value], trace: &str) -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    for s in spans.iter().filter(|s| s["span"]["trace_id"] == trace) {
        let kind = s["span"]["kind"].as_str().unwrap().to_string();
        assert!(
            by_kind.insert(kind.clone(), s.clone()).is_none(),
            "two {kind} spans in trace {trace}: {spans:#?}"
        );
    }
    by_kind
}

/// A span attribute's value as a string (`stringValue`, or `intValue` as protobuf's JSON
/// printer writes it), or `None`.
fn attr(span: &Value, key: &str) -> Option<String> {
    let v = &span["span"]["attributes"][key];
    v["stringValue"]
        .as_str()
        .or(v["intValue"].as_str())
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_and_the_upstream_sees_the_exported_client_span() {
    let pki = Pki::new("otlp-traces");
    let up = Upstream::start("permits");
    let otlp = OtlpReceiver::start_tls(0, &pki.server_cert, &pki.server_key, None);
    let tracing = format!(
        "tracing:\n  endpoint: \"{}\"\n  sample_ratio: 1.0\n  interval: 100ms\n  headers: {{ Authorization: \"Bearer trace-SECRET-7\" }}\n  tls:\n    ca: \"{}\"\n",
        otlp.traces_url(),
        pki.ca.display()
    );
    assert!(otlp.traces_url().starts_with("https://localhost:"));
    let gw = Gateway::start(&config(up.addr, &tracing));
    let alice = token("u-alice", "wechat", "wx-app-1");

    // Three calls in traces of their callers (sampled), one that starts a trace, one refused by
    // jwt-auth, one through a plugin that calls out, one that matches no route.
    let mut traced = Vec::new();
    for i in 0..3 {
        let (trace, parent) = ids();
        let tp = format!("00-{trace}-{parent}-01");
        let (st, id) = get(
            &gw,
            &format!("/api/items?page={i}"),
            Some(&alice),
            Some(&tp),
        )
        .await;
        assert_eq!(st, 200);
        traced.push((trace, parent, id));
    }
    let (st, fresh_id) = get(&gw, "/api/items", Some(&alice), None).await;
    assert_eq!(st, 200);
    let (denied_trace, denied_parent) = ids();
    let (st, _) = get(
        &gw,
        "/api/items",
        None,
        Some(&format!("00-{denied_trace}-{denied_parent}-01")),
    )
    .await;
    assert_eq!(st, 401);
    let (limited_trace, limited_parent) = ids();
    let (st, limited_id) = get(
        &gw,
        "/limited/x",
        None,
        Some(&format!("00-{limited_trace}-{limited_parent}-01")),
    )
    .await;
    assert_eq!(st, 200, "the local fallback admits it");
    let (lost_trace, lost_parent) = ids();
    let (st, _) = get(
        &gw,
        "/nowhere",
        None,
        Some(&format!("00-{lost_trace}-{lost_parent}-01")),
    )
    .await;
    assert_eq!(st, 404);

    // 3 × (server, client) + (server, client) + server + (server, plugin, client) + server.
    wait_for("13 spans exported", Duration::from_secs(20), || {
        otlp.spans().len() >= 13
    });
    let spans = otlp.spans();
    assert_eq!(spans.len(), 13, "{spans:#?}");
    for s in &spans {
        assert_eq!(s["auth"], "Bearer trace-SECRET-7");
        assert_eq!(s["resource"]["service.name"], "fenfa-gateway");
        assert_eq!(s["resource"]["service.instance.id"], "gw-trace-1");
        assert_eq!(s["scope"], "fenfa-gateway");
    }

    for (trace, parent, id) in &traced {
        let t = of_trace(&spans, trace);
        assert_eq!(t.len(), 2, "server and client span of {trace}: {t:#?}");
        let server = &t["SPAN_KIND_SERVER"];
        let client = &t["SPAN_KIND_CLIENT"];
        // The caller's trace continues: same trace id, the caller's span is the parent.
        assert_eq!(server["span"]["parent_span_id"], parent.as_str());
        assert_eq!(server["span"]["name"], "GET permits-api");
        for (key, value) in [
            ("http.request.method", "GET"),
            ("url.path", "/api/items"),
            ("url.scheme", "http"),
            ("http.route", "permits-api"),
            ("fenfa.service", "permits"),
            ("fenfa.agency", "tax"),
            ("fenfa.channel", "wechat"),
            ("fenfa.app", "wx-app-1"),
            ("http.response.status_code", "200"),
            ("fenfa.request_id", id.as_str()),
        ] {
            assert_eq!(attr(server, key).as_deref(), Some(value), "{key}: {server}");
        }
        assert_eq!(attr(server, "fenfa.user"), None, "no user id in traces");
        assert_eq!(server["span"]["status"], "STATUS_CODE_UNSET");
        // The upstream call is the server span's child…
        assert_eq!(client["span"]["parent_span_id"], server["span"]["span_id"]);
        assert_eq!(client["span"]["name"], "upstream permits");
        assert_eq!(
            attr(client, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(attr(client, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            attr(client, "server.port"),
            Some(up.addr.port().to_string())
        );
        assert_eq!(attr(client, "fenfa.attempt").as_deref(), Some("1"));
        // …and the traceparent the upstream received names it, sampled.
        let (up_trace, up_parent, flags) = upstream_traceparent(&seen(&up, id));
        assert_eq!(&up_trace, trace);
        assert_eq!(up_parent, client["span"]["span_id"].as_str().unwrap());
        assert_eq!(flags, "01");
    }

    // Without a traceparent the gateway starts the trace: a root span, and the upstream's parent
    // is again the exported client span.
    let (fresh_trace, fresh_parent, flags) = upstream_traceparent(&seen(&up, &fresh_id));
    assert_eq!(flags, "01");
    let t = of_trace(&spans, &fresh_trace);
    assert_eq!(t["SPAN_KIND_SERVER"]["span"]["parent_span_id"], "");
    assert_eq!(
        t["SPAN_KIND_CLIENT"]["span"]["span_id"],
        fresh_parent.as_str()
    );

    // Refused by jwt-auth: a server span with the plugin and status, no upstream call.
    let t = of_trace(&spans, &denied_trace);
    assert_eq!(t.len(), 1, "{t:#?}");
    let server = &t["SPAN_KIND_SERVER"];
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(attr(server, "fenfa.denied_by").as_deref(), Some("jwt-auth"));
    assert_eq!(
        server["span"]["status"], "STATUS_CODE_UNSET",
        "4xx is the caller's"
    );

    // The plugin's call-out (Redis, unreachable) is a span of its own, a failed one.
    let t = of_trace(&spans, &limited_trace);
    assert_eq!(t.len(), 3, "{t:#?}");
    let (server, plugin) = (&t["SPAN_KIND_SERVER"], &t["SPAN_KIND_INTERNAL"]);
    assert_eq!(server["span"]["name"], "GET limited");
    assert_eq!(plugin["span"]["name"], "plugin rate-limit");
    assert_eq!(plugin["span"]["parent_span_id"], server["span"]["span_id"]);
    assert_eq!(attr(plugin, "fenfa.plugin").as_deref(), Some("rate-limit"));
    let outcome = attr(plugin, "fenfa.plugin.outcome").unwrap();
    assert!(outcome == "error" || outcome == "timeout", "{plugin}");
    assert_eq!(plugin["span"]["status"], "STATUS_CODE_ERROR");
    let (_, up_parent, _) = upstream_traceparent(&seen(&up, &limited_id));
    assert_eq!(
        up_parent,
        t["SPAN_KIND_CLIENT"]["span"]["span_id"].as_str().unwrap()
    );

    // No route: the server span says so.
    let t = of_trace(&spans, &lost_trace);
    let server = &t["SPAN_KIND_SERVER"];
    assert_eq!(server["span"]["name"], "GET");
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(
        attr(server, "fenfa.code").as_deref(),
        Some("route_not_found")
    );
    assert_eq!(attr(server, "http.route"), None);

    assert!(
        !gw.logs().contains("trace-SECRET-7"),
        "the header value is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_ratio_zero_only_callers_sampled_traces_are_exported_and_trace_ids_still_go_upstream() {
    let up = Upstream::start("permits");
    // Plain http:// is allowed to a loopback collector.
    let otlp = OtlpReceiver::start(0);
    let tracing = format!(
        "tracing:\n  endpoint: \"{}\"\n  sample_ratio: 0.0\n  interval: 50ms\n",
        otlp.traces_url()
    );
    let gw = Gateway::start(&config(up.addr, &tracing));
    let alice = token("u-alice", "wechat", "wx-app-1");

    // A caller that did not sample: the trace id goes on, with a new parent and flags 00.
    let (trace, parent) = ids();
    let (st, id) = get(
        &gw,
        "/api/items",
        Some(&alice),
        Some(&format!("00-{trace}-{parent}-00")),
    )
    .await;
    assert_eq!(st, 200);
    let (up_trace, up_parent, flags) = upstream_traceparent(&seen(&up, &id));
    assert_eq!((up_trace.as_str(), flags.as_str()), (trace.as_str(), "00"));
    assert_ne!(up_parent, parent);
    // No traceparent: a new trace, not sampled at ratio 0.
    let (st, id) = get(&gw, "/api/items", Some(&alice), None).await;
    assert_eq!(st, 200);
    let (_, _, flags) = upstream_traceparent(&seen(&up, &id));
    assert_eq!(flags, "00");
    // Every span of those requests has ended (in_flight is decremented after that)…
    gw.settled_metrics();

    // …so once the spans of a caller's sampled trace, which is followed, have arrived, any of the
    // requests before would have too.
    let (sampled, sampled_parent) = ids();
    let (st, id) = get(
        &gw,
        "/api/items",
        Some(&alice),
        Some(&format!("00-{sampled}-{sampled_parent}-01")),
    )
    .await;
    assert_eq!(st, 200);
    wait_for(
        "the sampled trace exported",
        Duration::from_secs(20),
        || otlp.spans().len() >= 2,
    );
    let spans = otlp.spans();
    assert!(
        spans
            .iter()
            .all(|s| s["span"]["trace_id"] == sampled.as_str()),
        "only the caller's sampled trace: {spans:#?}"
    );
    let t = of_trace(&spans, &sampled);
    let (_, up_parent, flags) = upstream_traceparent(&seen(&up, &id));
    assert_eq!(flags, "01");
    assert_eq!(
        up_parent,
        t["SPAN_KIND_CLIENT"]["span"]["span_id"].as_str().unwrap()
    );

    // The section is read at startup: a reload that changes it says so and changes nothing.
    let generation = gw.generation();
    gw.write_config(&config(
        up.addr,
        &tracing.replace("sample_ratio: 0.0", "sample_ratio: 1.0"),
    ));
    gw.wait_generation(generation + 1);
    assert!(gw
        .logs()
        .contains("tracing settings changed; they take effect after a restart"));
    let (_, id) = get(&gw, "/api/items", Some(&alice), None).await;
    let (_, _, flags) = upstream_traceparent(&seen(&up, &id));
    assert_eq!(flags, "00", "still sampled at the ratio it started with");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_collector_outage_is_ridden_out_and_logged_once_with_its_recovery() {
    let up = Upstream::start("permits");
    // The collector answers its first two requests with 503; the exporter retries the batch.
    let otlp = OtlpReceiver::start(2);
    let tracing = format!(
        "tracing:\n  endpoint: \"{}\"\n  sample_ratio: 1.0\n  interval: 50ms\n",
        otlp.traces_url()
    );
    let gw = Gateway::start(&config(up.addr, &tracing));
    let (trace, parent) = ids();
    let (st, _) = get(
        &gw,
        "/limited/a",
        None,
        Some(&format!("00-{trace}-{parent}-01")),
    )
    .await;
    assert_eq!(st, 200);
    wait_for(
        "the spans after the outage",
        Duration::from_secs(20),
        || of_trace(&otlp.spans(), &trace).len() == 3,
    );
    wait_for("the recovery in the log", Duration::from_secs(10), || {
        gw.logs().contains("tracing: span export works again")
    });
    let logs = gw.logs();
    assert_eq!(
        logs.matches("tracing: cannot export spans").count(),
        1,
        "one warning per outage, with the reason: {logs}"
    );
    assert!(logs.contains("the collector answered 503"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_the_ca_did_not_sign_gets_nothing_the_log_says_why_and_requests_are_served() {
    let (pki, other) = (Pki::new("otlp-traces"), Pki::new("other"));
    let up = Upstream::start("permits");
    let otlp = OtlpReceiver::start_tls(0, &pki.server_cert, &pki.server_key, None);
    let tracing = format!(
        "tracing:\n  endpoint: \"{}\"\n  sample_ratio: 1.0\n  interval: 50ms\n  timeout: 1s\n  tls:\n    ca: \"{}\"\n",
        otlp.traces_url(),
        other.ca.display()
    );
    let gw = Gateway::start(&config(up.addr, &tracing));
    let alice = token("u-alice", "wechat", "wx-app-1");
    for _ in 0..5 {
        let (st, id) = get(&gw, "/api/items", Some(&alice), None).await;
        assert_eq!(st, 200);
        // The trace context still goes upstream, sampled: the gateway's decision stands even
        // when its spans cannot be delivered.
        let (_, _, flags) = upstream_traceparent(&seen(&up, &id));
        assert_eq!(flags, "01");
    }
    wait_for(
        "the refused certificate in the log",
        Duration::from_secs(20),
        || {
            gw.logs()
                .contains("certificate verify failed: UnknownIssuer")
        },
    );
    assert!(gw.logs().contains("tracing: cannot export spans"));
    assert!(otlp.received().is_empty(), "nothing reached the collector");
}

#[test]
fn check_refuses_a_bad_tracing_section_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fenfa.yaml");
    for (section, says) in [
        (
            "tracing:\n  endpoint: \"http://otel.invalid:4318/v1/traces\"\n",
            "tracing.endpoint: plain http:// to `otel.invalid` is refused",
        ),
        (
            "tracing:\n  endpoint: \"https://otel.invalid/v1/traces\"\n  sample_ratio: 2\n",
            "tracing.sample_ratio: expected a share from 0.0",
        ),
    ] {
        std::fs::write(
            &file,
            format!(
                "services:\n  - name: a\n    upstream:\n      targets: [{{ addr: \"127.0.0.1:1\" }}]\n{section}"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
            .arg("check")
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{section}: {text}");
        assert!(text.contains(says), "{section}: {text}");
    }
}
