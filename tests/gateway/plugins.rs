//! Plugins through the real gateway: ip-restriction with trusted proxies, CORS, request size
//! limits, the upstream signature (checked by an independent implementation) and the identity
//! headers a client must not be able to forge.

use crate::support::upstream::Seen;
use crate::support::{client, error_code, python, raw_request, status_of, Gateway, Upstream};

fn service(up: &Upstream, plugins: &str, extra: &str) -> String {
    format!(
        r#"
gateway:
  trusted_proxies: ["127.0.0.1/32"]
{extra}
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: r
    service: s
    paths: ["/*"]
    plugins: {plugins}
"#,
        up.addr
    )
}

#[tokio::test]
async fn ip_restriction_sees_the_client_behind_a_trusted_proxy() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&service(
        &up,
        r#"[{ name: ip-restriction, config: { allow: ["10.0.0.0/8"], deny: ["10.9.0.0/16"] } }]"#,
        "",
    ));
    let c = client();
    let ok = c
        .get(gw.url("/x"))
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for xff in ["10.9.1.1", "192.0.2.7", "10.1.2.3, 192.0.2.7"] {
        let (status, code, _) = error_code(
            c.get(gw.url("/x"))
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (403, "ip_denied"),
            "client from {xff}"
        );
    }
    // The upstream still learns the full chain, with the real peer appended.
    assert_eq!(
        up.last().header("x-forwarded-for"),
        Some("10.1.2.3, 127.0.0.1")
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let up = Upstream::start("a");
    // No trusted proxies: the TCP peer (127.0.0.1) is the client whatever the header says.
    let gw = Gateway::start(
        &service(
            &up,
            r#"[{ name: ip-restriction, config: { deny: ["127.0.0.1/32"] } }]"#,
            "",
        )
        .replace("trusted_proxies: [\"127.0.0.1/32\"]", "trusted_proxies: []"),
    );
    let resp = client()
        .get(gw.url("/x"))
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn cors_answers_preflights_and_decorates_responses() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&service(
        &up,
        r#"[{ name: cors, config: { allow_origins: ["https://h5.city.gov.cn"], allow_methods: ["GET", "POST"], max_age: 600 } }]"#,
        "",
    ));
    let c = client();
    let pre = c
        .request(reqwest::Method::OPTIONS, gw.url("/api/x"))
        .header("origin", "https://h5.city.gov.cn")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://h5.city.gov.cn"
    );
    assert_eq!(pre.headers()["access-control-max-age"], "600");
    assert!(pre.headers().get("x-request-id").is_some());
    assert_eq!(up.hits(), 0, "the preflight is answered by the gateway");

    let actual = c
        .get(gw.url("/api/x"))
        .header("origin", "https://h5.city.gov.cn")
        .send()
        .await
        .unwrap();
    assert_eq!(actual.status(), 200);
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://h5.city.gov.cn"
    );
    assert!(actual
        .headers()
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().contains("Origin")));

    let other = c
        .get(gw.url("/api/x"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn oversized_bodies_get_413_and_never_reach_the_upstream() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&service(
        &up,
        r#"[{ name: request-size-limit, config: { max_body_bytes: 1024 } }]"#,
        "",
    ));
    let c = client();
    assert_eq!(
        c.post(gw.url("/x"))
            .body(vec![b'a'; 1024])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, code, body) = error_code(
        c.post(gw.url("/x"))
            .body(vec![b'a'; 4096])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (413, "payload_too_large"),
        "{body}"
    );
    assert_eq!(up.hits(), 1);

    // A chunked body with no length is cut off once it passes the limit.
    let mut req =
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'b'; 0x200]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = tokio::task::spawn_blocking({
        let addr = gw.http;
        move || raw_request(addr, &req).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert!(resp.contains("payload_too_large"), "{resp}");
    assert!(
        up.seen().iter().all(|s| s.body_len <= 1024),
        "no over-limit body was delivered whole"
    );
}

/// The agency key used below: base64 of 32 bytes 0x01..=0x20.
const SECRET: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

#[tokio::test]
async fn backends_receive_a_signature_an_independent_implementation_accepts() {
    let up = Upstream::start("a");
    let body = format!(
        r#"
agencies:
  - name: tax
    signing_keys: [{{ id: k2026a, secret: "{SECRET}" }}]
services:
  - name: s
    agency: tax
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: r
    service: s
    paths: ["/svc/*"]
    strip_prefix: true
"#,
        up.addr
    );
    let gw = Gateway::start(&body);
    let resp = client()
        .get(gw.url("/svc/account/7/statement?month=2026-10&b=%20x"))
        .header("x-fenfa-user", "forged-user")
        .header("authorization", "Bearer not-checked-here")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(
        seen.header("x-fenfa-user"),
        None,
        "a client cannot forge the identity headers"
    );
    assert_eq!(seen.header("x-fenfa-key-id"), Some("k2026a"));
    let ts = seen.header("x-fenfa-timestamp").unwrap();
    let sig = seen.header("x-fenfa-signature").unwrap();
    let rid = seen.header("x-request-id").unwrap();
    // Recompute with Python's standard library from what the backend received.
    assert_eq!(python_signature("FENFA-HMAC-SHA256", &seen, ts, rid), sig);
    assert_eq!(seen.path, "/account/7/statement");
}

/// The signature a backend computes in Python from what it received (no identity headers on
/// these routes): the standard library's HMAC-SHA256, or HMAC-SM3 over gmssl's SM3.
fn python_signature(scheme: &str, seen: &Seen, ts: &str, rid: &str) -> String {
    let script = r#"
import base64, hashlib, hmac, sys
scheme, secret, ts, method, path, query, rid = sys.argv[1:8]
msg = "\n".join([scheme, ts, method, path, query, "", "", "", rid]).encode()
key = base64.b64decode(secret)
mac = hmac_sm3(key, msg) if scheme == "FENFA-HMAC-SM3" else hmac.new(key, msg, hashlib.sha256).digest()
print(base64.b64encode(mac).decode())
"#;
    let query = seen.query.as_deref().unwrap_or("");
    python::run(
        script,
        &[scheme, SECRET, ts, &seen.method, &seen.path, query, rid],
        b"",
    )
}

/// 国密: an agency set to `hmac-sm3` gets HMAC-SM3, named in a header and in the signed string,
/// which Python's `gmssl` (SM3) with the HMAC written out accepts; another agency keeps SHA-256.
#[tokio::test]
async fn backends_of_a_guomi_agency_receive_an_hmac_sm3_signature_gmssl_accepts() {
    let up = Upstream::start("a");
    let body = format!(
        r#"
agencies:
  - name: tax
    signing_keys: [{{ id: k2026a, secret: "{SECRET}" }}]
    signature_algorithm: hmac-sm3
  - name: health
    signing_keys: [{{ id: h1, secret: "{SECRET}" }}]
services:
  - name: s
    agency: tax
    upstream:
      targets: [{{ addr: "{0}" }}]
  - name: h
    agency: health
    upstream:
      targets: [{{ addr: "{0}" }}]
routes:
  - name: r
    service: s
    paths: ["/svc/*"]
    strip_prefix: true
  - name: rh
    service: h
    paths: ["/health/*"]
"#,
        up.addr
    );
    let gw = Gateway::start(&body);
    let resp = client()
        .get(gw.url("/svc/account/7?month=2026-10"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(seen.header("x-fenfa-signature-algorithm"), Some("HMAC-SM3"));
    let ts = seen.header("x-fenfa-timestamp").unwrap();
    let sig = seen.header("x-fenfa-signature").unwrap();
    let rid = seen.header("x-request-id").unwrap();
    assert_eq!(python_signature("FENFA-HMAC-SM3", &seen, ts, rid), sig);
    // The other agency's backend still gets HMAC-SHA256.
    let resp = client().get(gw.url("/health/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.last().header("x-fenfa-signature-algorithm"),
        Some("HMAC-SHA256")
    );
}

#[tokio::test]
async fn a_bad_plugin_config_names_the_field_inside_the_plugin() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&service(&up, "[]", ""));
    gw.write_config(&service(
        &up,
        r#"[{ name: ip-restriction, config: { allow: ["10.0.0.0/33"] } }]"#,
        "",
    ));
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = gw.status_json();
        if st["config"]["last_error"]["path"].is_string() {
            assert_eq!(
                st["config"]["last_error"]["path"], "routes[0].plugins[0].config.allow[0]",
                "{st}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no error reported: {st}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let unknown = service(&up, r#"[{ name: no-such-plugin }]"#, "");
    let file = gw.dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        format!("listeners: {{ http: \"127.0.0.1:1\" }}\n{unknown}"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].plugins[0].name: unknown plugin `no-such-plugin`"),
        "{err}"
    );
}

#[test]
fn a_route_cannot_switch_off_the_services_channel_publication() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bypass.yaml");
    std::fs::write(
        &file,
        r#"
services:
  - name: s
    publish: { channels: [wechat] }
    upstream: { targets: [{ addr: "127.0.0.1:1" }] }
routes:
  - name: r
    service: s
    paths: ["/*"]
    plugins: [{ name: channel-check, enabled: false }]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fenfa-gateway"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "routes[0].plugins[0].name: `channel-check` is attached by `services[0].publish`"
        ),
        "{err}"
    );
}
