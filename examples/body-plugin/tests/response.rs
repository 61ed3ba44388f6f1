//! End to end: response-body rewriting by `body-digest` through `fenfa-example-gateway`, in
//! front of a raw-socket upstream that frames its answers exactly as each test needs
//! (`Content-Length`, chunked, gzip/deflate/br, HEAD/204/304).

#[path = "../../../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use support::{client, Gateway};

const LIMIT: usize = 2048;
const PLAIN: &str = "name=Li Lei; id=SECRET; phone=SECRET; done";
const MASKED: &str = "name=Li Lei; id=[masked]; phone=[masked]; done";

/// An HTTP/1.1 upstream on a raw socket: one request per connection, answered by path suffix.
struct RawUpstream {
    addr: SocketAddr,
    /// `Accept-Encoding` of every request (empty when absent).
    accept_encoding: Arc<Mutex<Vec<String>>>,
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn br(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(b).unwrap();
    }
    out
}

fn big() -> String {
    format!("{}SECRET", "x".repeat(LIMIT + 100))
}

fn answer(path: &str) -> Vec<u8> {
    let with_len = |extra: &str, body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    if path.ends_with("/cl") {
        with_len("", PLAIN.as_bytes())
    } else if path.ends_with("/chunked") {
        // The mask is split across chunk boundaries.
        let mut r =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        let (a, b) = PLAIN.split_at(17);
        for part in [a, b] {
            r.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    } else if path.ends_with("/gzip") {
        with_len("Content-Encoding: gzip\r\n", &gzip(PLAIN.as_bytes()))
    } else if path.ends_with("/deflate") {
        with_len("Content-Encoding: deflate\r\n", &zlib(PLAIN.as_bytes()))
    } else if path.ends_with("/br") {
        with_len("Content-Encoding: br\r\n", &br(PLAIN.as_bytes()))
    } else if path.ends_with("/big") {
        with_len("", big().as_bytes())
    } else if path.ends_with("/204") {
        b"HTTP/1.1 204 No Content\r\nX-Kept: yes\r\nConnection: close\r\n\r\n".to_vec()
    } else if path.ends_with("/304") {
        b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n".to_vec()
    } else {
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    }
}

impl RawUpstream {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let seen = seen2.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = head.split("\r\n");
                    let line = lines.next().unwrap_or_default().to_string();
                    let ae = lines
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("accept-encoding")
                                .then(|| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    seen.lock().unwrap().push(ae);
                    let mut parts = line.split(' ');
                    let method = parts.next().unwrap_or_default();
                    let path = parts.next().unwrap_or_default();
                    let mut resp = answer(path);
                    if method == "HEAD" {
                        // A HEAD answer is the GET answer's head only.
                        if let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                            resp.truncate(i + 4);
                        }
                    }
                    let _ = s.write_all(&resp);
                });
            }
        });
        Self {
            addr,
            accept_encoding: seen,
        }
    }
}

fn gateway(up: &RawUpstream) -> Gateway {
    Gateway::start_bin(
        env!("CARGO_BIN_EXE_fenfa-example-gateway"),
        &format!(
            r#"
services:
  - name: s
    upstream:
      targets: [{{ addr: "{}" }}]
routes:
  - name: pass
    service: s
    paths: ["/pass/*"]
    plugins:
      - name: body-digest
        config: {{ max_bytes: 64, response_max_bytes: {LIMIT}, response_over_limit: pass }}
  - name: strict
    service: s
    paths: ["/strict/*"]
    plugins:
      - name: body-digest
        config: {{ max_bytes: 64, response_max_bytes: {LIMIT}, response_over_limit: reject }}
  - name: plain
    service: s
    paths: ["/plain/*"]
"#,
            up.addr
        ),
    )
}

#[tokio::test]
async fn response_rewrite_is_correct_for_content_length_chunked_and_encoded_upstreams() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    for kind in ["cl", "chunked", "gzip", "deflate", "br"] {
        let resp = client()
            .get(gw.url(&format!("/pass/{kind}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{kind}");
        assert!(
            resp.headers().get("content-encoding").is_none(),
            "{kind}: the client gets the decoded body"
        );
        assert!(
            resp.headers().get("content-length").is_none(),
            "{kind}: the stale length is dropped"
        );
        assert_eq!(resp.text().await.unwrap(), MASKED, "{kind}");
    }
    // An HTTP/1.0 client gets no chunked framing: the body ends with the connection.
    let raw = support::raw_request(
        gw.http,
        b"GET /pass/chunked HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .expect("HTTP/1.0 request");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    assert!(head.contains(" 200 "), "{raw}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{raw}"
    );
    assert_eq!(body, MASKED, "{raw}");
    // The upstream was asked for plain bodies.
    assert!(up
        .accept_encoding
        .lock()
        .unwrap()
        .iter()
        .all(|ae| ae == "identity"));
}

#[tokio::test]
async fn head_204_and_304_pass_untouched() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let c = client();
    let head = c.head(gw.url("/pass/cl")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers().get("content-length").unwrap(),
        &PLAIN.len().to_string(),
        "HEAD keeps the upstream's Content-Length"
    );
    assert!(head.headers().get("transfer-encoding").is_none());
    let r = c.get(gw.url("/pass/204")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers().get("x-kept").unwrap(), "yes");
    assert!(r.headers().get("transfer-encoding").is_none());
    assert_eq!(r.text().await.unwrap(), "");
    let r = c.get(gw.url("/pass/304")).send().await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers().get("etag").unwrap(), "\"v1\"");
    assert!(r.headers().get("transfer-encoding").is_none());
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn response_over_the_limit_passes_unread_or_is_aborted_by_policy() {
    let up = RawUpstream::start();
    let gw = gateway(&up);
    let c = client();
    // `pass`: the body arrives complete and unchanged (the mask past the limit is not rewritten).
    let r = c.get(gw.url("/pass/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("x-body-inspected")
            .map(|v| v.to_str().unwrap()),
        None,
        "the head went out before the body was over the limit"
    );
    assert_eq!(r.text().await.unwrap(), big());
    // `reject`: never a complete body. If the head had not gone out yet the gateway answers
    // 502 `response_unchecked`; else the body is cut off (an unterminated chunked body).
    let r = c.get(gw.url("/strict/big")).send().await.unwrap();
    if r.status() == 502 {
        let (_, code, _) = support::error_code(r).await;
        assert_eq!(code, "response_unchecked");
    } else {
        assert_eq!(r.status(), 200);
        assert!(
            r.text().await.is_err(),
            "an over-limit body under `reject` must not arrive complete"
        );
    }
    // Under the limit, the strict route rewrites like the other.
    let r = c.get(gw.url("/strict/cl")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), MASKED);
    // A route without response plugins is not touched at all.
    let r = c.get(gw.url("/plain/cl")).send().await.unwrap();
    assert_eq!(
        r.headers().get("content-length").unwrap(),
        &PLAIN.len().to_string()
    );
    assert_eq!(r.text().await.unwrap(), PLAIN);
}
