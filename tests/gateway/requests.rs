//! Request handling before routing: malformed requests, path normalisation, request ids, trace
//! context and forwarding headers.
//!
//! Malformed requests are sent as raw bytes (an HTTP client would refuse to send them or would
//! "fix" them first); each test asserts what the client gets back and that the upstream never saw
//! the request.
//!
//! Every 400 has the JSON error shape, code `bad_request`. Requests pingora refuses while parsing
//! (a bad request line, conflicting `Content-Length` values, a final `Transfer-Encoding` other
//! than `chunked`, two `Host` headers, more than 256 header lines, a header section over
//! pingora's 1 MiB limit) never reach the gateway's phases: the connection's tap (`tap.rs`)
//! answers them with the JSON error in place of pingora's empty `400` and the connection is
//! closed (their audit records are tested in `hardening.rs`). Everything that parses is answered
//! by the gateway itself (`Content-Length` together with `Transfer-Encoding`, any
//! `Transfer-Encoding` but plain `chunked`, headers over 64 KiB, HTTP/1.1 without `Host`, paths
//! that cannot be normalised safely).

use crate::support::{client, error_code, raw_request, status_of, Gateway, Upstream};

/// A raw HTTP response, split up.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

/// Shows at most the first 600 characters of head and body, so that a failure echoing a 100 KiB
/// header stays readable.
impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |s: &str| s.chars().take(600).collect::<String>();
        f.debug_struct("Raw")
            .field("status", &self.status)
            .field("head", &cut(&self.head))
            .field("body", &cut(&self.body))
            .finish()
    }
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// `(code, request_id)` of a gateway JSON error; panics if the body is not one.
    fn json_error(&self) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {self:?}"));
        let field = |f: &str| v["error"][f].as_str().unwrap_or_default().to_owned();
        (field("code"), field("request_id"))
    }

    /// Asserts a gateway-produced `400` with code `bad_request` whose request id is in both the
    /// header and the body.
    fn assert_bad_request_json(&self, what: &str) {
        assert_eq!(self.status, 400, "{what}: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{what}: {self:?}"
        );
        let (code, id) = self.json_error();
        assert_eq!(code, "bad_request", "{what}: {self:?}");
        assert!(!id.is_empty(), "{what}: no request id in body: {self:?}");
        assert_eq!(self.header("x-request-id"), Some(id.as_str()), "{what}");
    }
}

/// Sends raw bytes and splits the answer. A connection closed without any answer is status 0.
fn send_raw(gw: &Gateway, bytes: &[u8]) -> Raw {
    let text = raw_request(gw.http, bytes).unwrap_or_default();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Raw {
        status: status_of(&text),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET target` exactly as written (no client-side normalisation), on a fresh connection.
fn get_raw(gw: &Gateway, target: &str) -> Raw {
    send_raw(
        gw,
        format!("GET {target} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// A gateway with one catch-all route to `up`.
fn single(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: all
    service: s
    paths: ["/*"]
"#,
        up.addr
    ))
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

// ---------------------------------------------------------------------------------------------
// Malformed requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unparseable_request_line_is_400_json_and_never_forwarded() {
    let up = Upstream::start("up");
    let gw = single(&up);
    for bad in [
        &b"GET\r\n\r\n"[..],
        b"GET /a HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /a HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"G\x01T /a HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = send_raw(&gw, bad);
        // Refused by pingora's parser; the tap answers with the JSON error and closes.
        r.assert_bad_request_json(&String::from_utf8_lossy(bad));
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    }
    assert_eq!(up.hits(), 0);
    // The gateway is still serving.
    assert_eq!(get_raw(&gw, "/ok").status, 200);
}

#[tokio::test]
async fn ambiguous_host_or_too_many_headers_is_400_json_and_never_forwarded() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (what, bad) in [
        (
            "two Host headers",
            "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_owned(),
        ),
        (
            "absolute-form target naming another host",
            "GET http://other.example/a HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        ),
        (
            "more than 256 header lines",
            format!("GET /a HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
        ),
    ] {
        let r = send_raw(&gw, bad.as_bytes());
        r.assert_bad_request_json(what);
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn http11_request_without_host_is_400_json_and_never_forwarded() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let r = send_raw(&gw, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n");
    r.assert_bad_request_json("HTTP/1.1 without Host");
    assert_eq!(up.hits(), 0);
    // HTTP/1.0 has no such rule.
    let r = send_raw(&gw, b"GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn oversized_header_is_400_json_and_never_forwarded() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let big = "a".repeat(100 * 1024);
    let r = send_raw(
        &gw,
        format!("GET /a HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    r.assert_bad_request_json("one 100 KiB header");
    // Many small headers adding up to too much are the same thing.
    let many: String = (0..200)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(500)))
        .collect();
    let r = send_raw(
        &gw,
        format!("GET /a HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    );
    r.assert_bad_request_json("200 headers of 500 bytes");
    assert_eq!(up.hits(), 0);
    // An ordinary large header (8 KiB) is fine.
    let r = send_raw(
        &gw,
        format!(
            "GET /a HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            "c".repeat(8 * 1024)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn header_section_over_pingoras_limit_is_400() {
    let up = Upstream::start("up");
    let gw = single(&up);
    // Over pingora's 1 MiB header buffer: pingora refuses it before the gateway sees it.
    let huge = "a".repeat(1100 * 1024);
    let r = send_raw(
        &gw,
        format!("GET /a HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n").as_bytes(),
    );
    // The client may still be writing when the connection closes: then it sees no answer.
    assert!(r.status == 400 || r.status == 0, "{r:?}");
    if r.status == 400 {
        r.assert_bad_request_json("header section over 1 MiB");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_json_and_never_forwarded() {
    let up = Upstream::start("up");
    let gw = single(&up);
    for (what, framing) in [
        (
            "CL then TE",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
        (
            "CL 0 with TE",
            "content-length: 0\r\ntransfer-encoding: chunked\r\n",
        ),
    ] {
        let r = send_raw(
            &gw,
            format!("POST /a HTTP/1.1\r\nHost: x\r\n{framing}\r\n5\r\nhello\r\n0\r\n\r\n")
                .as_bytes(),
        );
        r.assert_bad_request_json(what);
        // The connection is not kept for another (possibly smuggled) request.
        assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn two_different_content_lengths_are_400_and_never_forwarded() {
    let up = Upstream::start("up");
    let gw = single(&up);
    for framing in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 6\r\n",
    ] {
        let r = send_raw(
            &gw,
            format!("POST /a HTTP/1.1\r\nHost: x\r\n{framing}\r\nhello!").as_bytes(),
        );
        // Rejected by pingora while parsing; the tap answers with the JSON error and closes.
        r.assert_bad_request_json(framing);
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    }
    assert_eq!(up.hits(), 0);
    // Identical duplicates are one length (RFC 9110 §8.6) and pass.
    let r = send_raw(
        &gw,
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().body_len, 5);
}

#[tokio::test]
async fn transfer_encoding_other_than_plain_chunked_is_400_json_and_never_forwarded() {
    let up = Upstream::start("up");
    let gw = single(&up);
    for te in ["gzip, chunked", "chunked, chunked", "identity, chunked"] {
        let r = send_raw(
            &gw,
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        r.assert_bad_request_json(te);
    }
    // Two Transfer-Encoding lines are the same as a list.
    let r = send_raw(
        &gw,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    r.assert_bad_request_json("two TE lines");
    // Chunked last but not only, or not chunked at all, is refused by pingora's parser.
    let r = send_raw(
        &gw,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    r.assert_bad_request_json("chunked, gzip");
    assert_eq!(up.hits(), 0);
    // Plain chunked is forwarded.
    let r = send_raw(
        &gw,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().body_len, 5);
}

// ---------------------------------------------------------------------------------------------
// Path normalisation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn encoded_and_dotted_paths_reach_the_route_of_their_normalised_path() {
    let (api, admin, other) = (
        Upstream::start("api"),
        Upstream::start("admin"),
        Upstream::start("other"),
    );
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: api
    upstream:
      targets: [{{ addr: "{}" }}]
  - name: admin
    upstream:
      targets: [{{ addr: "{}" }}]
  - name: other
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: api
    service: api
    paths: ["/api/*"]
  - name: admin
    service: admin
    paths: ["/admin/*"]
  - name: other
    service: other
    paths: ["/*"]
"#,
        api.addr, admin.addr, other.addr
    ));
    // (raw target, upstream that must get it, path it must see)
    let cases: &[(&str, &Upstream, &str)] = &[
        ("/api/%2e%2e/admin", &admin, "/admin"),
        ("/api/%2E%2e/admin/users", &admin, "/admin/users"),
        ("/api/../admin", &admin, "/admin"),
        ("/api/x/../../admin/y", &admin, "/admin/y"),
        ("/api/./x", &api, "/api/x"),
        ("//api//x", &api, "/api/x"),
        ("/%61pi/x", &api, "/api/x"),
        ("/%61%64%6d%69%6e/keys", &admin, "/admin/keys"),
        ("/api/caf%c3%a9", &api, "/api/caf%C3%A9"),
    ];
    for &(target, up, path) in cases {
        let before = (api.hits(), admin.hits(), other.hits());
        let r = get_raw(&gw, target);
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(
            r.header("x-upstream"),
            Some(up.state.name.as_str()),
            "{target}"
        );
        assert_eq!(up.last().path, path, "{target}");
        let after = (api.hits(), admin.hits(), other.hits());
        let moved = [after.0 - before.0, after.1 - before.1, after.2 - before.2];
        assert_eq!(moved.iter().sum::<usize>(), 1, "{target}: {moved:?}");
    }
    // The query is not part of the path and is passed on as sent.
    let r = get_raw(&gw, "/api/./q?a=%2e%2e&b=..%2F");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = api.last();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/api/q", Some("a=%2e%2e&b=..%2F"))
    );
    // Nothing ever fell through to the catch-all.
    assert_eq!(other.hits(), 0);
}

#[tokio::test]
async fn paths_that_cannot_be_normalised_safely_are_400_json_and_never_forwarded() {
    let (api, admin, other) = (
        Upstream::start("api"),
        Upstream::start("admin"),
        Upstream::start("other"),
    );
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: api
    upstream:
      targets: [{{ addr: "{}" }}]
  - name: admin
    upstream:
      targets: [{{ addr: "{}" }}]
  - name: other
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: api
    service: api
    paths: ["/api/*"]
  - name: admin
    service: admin
    paths: ["/admin/*"]
  - name: other
    service: other
    paths: ["/*"]
"#,
        api.addr, admin.addr, other.addr
    ));
    for target in [
        "/api/..%2F..%2Fetc",
        "/api/..%2fadmin",
        "/a%2Fb",
        "/a%00b",
        "/a%5Cb",
        "/api/..%5cadmin",
        "/../etc",
        "/api/../../etc",
        "/%2e%2e/admin",
        "/a%zz",
        "/a%",
    ] {
        get_raw(&gw, target).assert_bad_request_json(target);
    }
    // A raw backslash gets through pingora's parser and is refused by the gateway.
    get_raw(&gw, "/api/..\\admin").assert_bad_request_json("raw backslash");
    assert_eq!((api.hits(), admin.hits(), other.hits()), (0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_request_id_is_propagated_upstream_and_returned() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let id = "client-id_123.abc:XYZ";
    let resp = client()
        .get(gw.url("/a"))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], id);
    assert_eq!(up.last().header("x-request-id"), Some(id));
    // Exactly one id reaches the upstream.
    let ids = up
        .last()
        .headers
        .iter()
        .filter(|(k, _)| k == "x-request-id")
        .count();
    assert_eq!(ids, 1);
}

#[tokio::test]
async fn missing_request_id_is_generated_sent_upstream_and_returned() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = client().get(gw.url("/a")).send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(is_hex32(&id), "{id:?}");
        assert_eq!(up.last().header("x-request-id"), Some(id.as_str()));
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids repeat: {ids:?}");
}

#[tokio::test]
async fn malformed_request_id_is_replaced() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let too_long = "a".repeat(129);
    for bad in ["has spaces in it", too_long.as_str(), "tab\there"] {
        let resp = client()
            .get(gw.url("/a"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(is_hex32(&id), "{bad:?} -> {id:?}");
        assert_eq!(up.last().header("x-request-id"), Some(id.as_str()));
    }
    // 128 characters is still accepted.
    let max = "b".repeat(128);
    let resp = client()
        .get(gw.url("/a"))
        .header("x-request-id", &max)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], max.as_str());
}

#[tokio::test]
async fn every_gateway_error_carries_the_request_id_in_header_and_body() {
    let up = Upstream::start("up");
    let dead = crate::support::free_port();
    let gw = Gateway::start(&format!(
        r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
  - name: dead
    upstream:
      targets: [{{ addr: "127.0.0.1:{dead}" }}]
      retries: 0
routes:
  - name: get-only
    service: s
    paths: ["/get-only"]
    methods: [GET]
  - name: dead
    service: dead
    paths: ["/dead/*"]
"#,
        up.addr
    ));
    // Gateway errors reachable with an ordinary client: (method, path, status, code).
    let cases = [
        ("GET", "/nowhere", 404, "route_not_found"),
        ("DELETE", "/get-only", 405, "method_not_allowed"),
        ("GET", "/dead/x", 502, "upstream_error"),
    ];
    for (method, path, status, code) in cases {
        for sent in [None, Some("my-trace-1")] {
            let mut req = client().request(method.parse().unwrap(), gw.url(path));
            if let Some(id) = sent {
                req = req.header("x-request-id", id);
            }
            let resp = req.send().await.unwrap();
            let header = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            let (st, c, body) = error_code(resp).await;
            assert_eq!((st, c.as_str()), (status, code), "{method} {path}");
            assert_eq!(
                body["error"]["request_id"],
                header.as_str(),
                "{method} {path}"
            );
            match sent {
                Some(id) => assert_eq!(header, id),
                None => assert!(is_hex32(&header), "{header:?}"),
            }
        }
    }
    // 400s from the gateway (bad path, bad framing) too.
    let r = send_raw(
        &gw,
        b"GET /a%2Fb HTTP/1.1\r\nHost: x\r\nX-Request-Id: bad-path-1\r\nConnection: close\r\n\r\n",
    );
    r.assert_bad_request_json("bad path");
    assert_eq!(r.json_error().1, "bad-path-1");
    let r = send_raw(
        &gw,
        b"POST /get-only HTTP/1.1\r\nHost: x\r\nX-Request-Id: bad-te-1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    );
    r.assert_bad_request_json("bad framing");
    assert_eq!(r.json_error().1, "bad-te-1");
    assert_eq!(up.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Trace context and forwarding headers
// ---------------------------------------------------------------------------------------------

/// `(trace id, parent id, flags)` of a well-formed version-00 `traceparent`.
fn parse_traceparent(v: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && s.bytes().any(|b| b != b'0')
    };
    match parts.as_slice() {
        ["00", trace, parent, flags] if hex(trace, 32) && hex(parent, 16) && flags.len() == 2 => {
            Some((trace.to_string(), parent.to_string(), flags.to_string()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn valid_traceparent_keeps_its_trace_id_with_a_new_parent_id() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client()
        .get(gw.url("/a"))
        .header("traceparent", incoming)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = up
        .last()
        .header("traceparent")
        .unwrap_or_default()
        .to_owned();
    let (trace, parent, flags) =
        parse_traceparent(&sent).unwrap_or_else(|| panic!("bad traceparent upstream: {sent:?}"));
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(parent, "00f067aa0ba902b7");
    assert_eq!(flags, "01");
}

#[tokio::test]
async fn missing_or_invalid_traceparent_starts_a_new_valid_trace() {
    let up = Upstream::start("up");
    let gw = single(&up);
    let mut traces = Vec::new();
    for incoming in [
        None,
        Some("garbage"),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
    ] {
        let mut req = client().get(gw.url("/a"));
        if let Some(tp) = incoming {
            req = req.header("traceparent", tp);
        }
        assert_eq!(req.send().await.unwrap().status(), 200);
        let sent = up
            .last()
            .header("traceparent")
            .unwrap_or_default()
            .to_owned();
        let (trace, _, _) = parse_traceparent(&sent)
            .unwrap_or_else(|| panic!("{incoming:?}: bad traceparent upstream: {sent:?}"));
        traces.push(trace);
    }
    traces.dedup();
    assert_eq!(traces.len(), 3, "trace ids repeat: {traces:?}");
}

#[tokio::test]
async fn upstream_receives_forwarded_for_and_proto() {
    let up = Upstream::start("up");
    let gw = single(&up);
    assert_eq!(
        client().get(gw.url("/a")).send().await.unwrap().status(),
        200
    );
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));

    // Clients on other addresses, in turn, each get their own (the gateway keeps the value of
    // the last address it formatted and must not hand it to the next client).
    for from in ["127.0.0.2", "127.0.0.1", "127.0.0.3", "127.0.0.3"] {
        let c = reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        assert_eq!(c.get(gw.url("/a")).send().await.unwrap().status(), 200);
        assert_eq!(up.last().header("x-forwarded-for"), Some(from));
    }

    // An incoming chain gets the client's address appended.
    let resp = client()
        .get(gw.url("/a"))
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.2, 127.0.0.1")
    );
    // The client cannot claim TLS on a plain-HTTP listener.
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(k, _)| k == "x-forwarded-for")
            .count(),
        1
    );

    // Several header lines are one list (RFC 9110 §5.3): none of them is dropped.
    let r = send_raw(
        &gw,
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        up.last().header("x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.2, 127.0.0.1")
    );
}
