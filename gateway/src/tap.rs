//! Requests pingora refuses before any gateway code runs: recorded and answered like the rest.
//!
//! pingora-proxy answers a request head its HTTP/1 parser rejects (conflicting `Content-Length`,
//! a NUL in a header, `Transfer-Encoding :`, method `G@T`…) with a canned empty `400` and closes,
//! without calling a single `ProxyHttp` hook: no audit record, no count, no request id. So the
//! proxy service is wrapped ([`TappedProxy`]) and every HTTP/1 connection's stream is a [`Tap`]:
//!
//! - Read side: while no `ProxyHttp` request owns the connection, the first [`CAPTURE`] bytes of
//!   the next request head are copied into a fixed buffer in the tap (no allocation).
//! - The proxy marks the connection owned from `request_filter` to `logging` ([`begin`],
//!   [`end`]): everything written in between is the gateway's own answer.
//! - Write side: a response head written while no request owns the connection, starting with
//!   `HTTP/1.x 400 ` (or `405`, pingora's refusal of `CONNECT`) and carrying no `x-request-id`,
//!   can only be pingora's canned answer. The tap writes the gateway's JSON error in its place
//!   (fresh request id, `Connection: close`), reports pingora's bytes as written, and records the
//!   request: audit record (peer address, what of the request line parses, the reason) and
//!   `fenfa_http_requests_total{route="",service=""}`.
//!
//! The reason comes from running `httparse` (the parser pingora uses) on the captured bytes, and
//! for heads it accepts, from the checks pingora adds (`Content-Length`, `Transfer-Encoding`,
//! `Host`). Only fixed phrases and the sanitised request line are recorded, never the raw bytes.
//!
//! HTTP/2 connections are not tapped: h2 answers malformed frames and headers itself (stream or
//! connection reset, no HTTP response to replace). Over TLS the tap wraps the decrypted stream.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gateway::Gateway;
use crate::proxy::FenfaProxy;

/// How much of a request head the tap keeps: enough for the request line and the first headers.
pub const CAPTURE: usize = 512;

/// pingora's limit on a request head (`MAX_HEADER_SIZE` in pingora-core's HTTP/1 code).
const PINGORA_MAX_HEAD: usize = 1_048_575;

/// The proxy service with every HTTP/1 connection tapped.
pub struct TappedProxy {
    proxy: Arc<HttpProxy<FenfaProxy>>,
    gw: Arc<Gateway>,
}

impl TappedProxy {
    pub fn new(proxy: HttpProxy<FenfaProxy>, gw: Arc<Gateway>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            gw,
        }
    }
}

#[async_trait]
impl ServerApp for TappedProxy {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let tapped = (*stream).as_any().is::<Tap>()
            || matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let stream: Stream = if tapped {
            stream
        } else {
            Box::new(Tap::new(stream, self.gw.clone()))
        };
        self.proxy.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await
    }
}

/// Marks the connection as owned by a `ProxyHttp` request (from `request_filter`, the first
/// phase that can answer).
#[inline]
pub fn begin(session: &ServerSession) {
    if let Some(tap) = of(session) {
        tap.in_proxy.store(true, Relaxed);
    }
}

/// The `ProxyHttp` request is over (from `logging`): the next bytes read start a new request.
#[inline]
pub fn end(session: &ServerSession) {
    if let Some(tap) = of(session) {
        tap.in_proxy.store(false, Relaxed);
        tap.ended.store(true, Relaxed);
    }
}

#[inline]
fn of(session: &ServerSession) -> Option<&Tap> {
    session.stream()?.as_any().downcast_ref::<Tap>()
}

/// A connection's stream, watched for pingora's canned answers (see the module docs).
pub struct Tap {
    inner: Stream,
    gw: Arc<Gateway>,
    /// A `ProxyHttp` request owns the connection: nothing it writes is looked at.
    in_proxy: AtomicBool,
    /// A `ProxyHttp` request ended: the captured head is stale.
    ended: AtomicBool,
    head: [u8; CAPTURE],
    head_len: usize,
    /// Bytes read since the current request began (beyond the captured ones too).
    read_total: usize,
    /// When the first byte of the current request was read.
    started: Option<Instant>,
    write: Write,
}

enum Write {
    /// Writes go to the stream.
    Pass,
    /// Writing the gateway's answer in place of pingora's; `at` bytes of it are out.
    Replacing { answer: Vec<u8>, at: usize },
    /// The answer is out; pingora's further writes on this (closing) connection are dropped.
    Done,
}

impl fmt::Debug for Tap {
    // pingora logs the stream with `{:?}` on parse errors: never the captured bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap").field("inner", &self.inner).finish()
    }
}

impl Tap {
    pub fn new(inner: Stream, gw: Arc<Gateway>) -> Self {
        Self {
            inner,
            gw,
            in_proxy: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            head: [0; CAPTURE],
            head_len: 0,
            read_total: 0,
            started: None,
            write: Write::Pass,
        }
    }

    /// Bytes just read from the client.
    #[inline]
    fn saw(&mut self, bytes: &[u8]) {
        if self.ended.load(Relaxed) {
            self.ended.store(false, Relaxed);
            self.head_len = 0;
            self.read_total = 0;
            self.started = None;
        }
        if self.in_proxy.load(Relaxed) {
            return;
        }
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.read_total = self.read_total.saturating_add(bytes.len());
        let n = bytes.len().min(CAPTURE - self.head_len);
        self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
        self.head_len += n;
    }

    /// pingora's canned answer is about to be written: record the request and make the
    /// gateway's answer.
    fn refuse(&mut self, canned: &[u8], status: u16) -> Vec<u8> {
        // After a proxied request with no read since: the head came pipelined, unseen.
        let head: &[u8] = if self.ended.load(Relaxed) {
            &[]
        } else {
            &self.head[..self.head_len]
        };
        let found = diagnose(head, self.read_total);
        let (err, reason) = match status {
            405 => (crate::errors::METHOD_NOT_ALLOWED, "CONNECT is not proxied"),
            _ => (crate::errors::BAD_REQUEST, found.reason),
        };
        let request_id = crate::ids::new_request_id();
        let request_id = request_id.as_str();
        let message = match status {
            405 => reason.to_string(),
            _ => format!("{}: {reason}", err.message),
        };
        let body = crate::errors::json_body(err.code, &message, request_id);
        let answer = render(&canned[..8], err.status, request_id, &body);
        let latency_us = self
            .started
            .map_or(Duration::ZERO, |s| s.elapsed())
            .as_micros() as u64;
        let client_ip = peer_ip(self.inner.get_socket_digest().as_deref());
        self.gw.metrics.unrouted.record(status, latency_us);
        self.gw.audit.record(
            None,
            &crate::audit::Parts {
                request_id,
                client_request_id: None,
                client_ip,
                identity: None,
                agency: "",
                service: "",
                route: "",
                method: found.method,
                path: found.path,
                query: found.query,
                headers: &http::HeaderMap::new(),
                status,
                upstream: None,
                upstream_status: None,
                latency_us,
                bytes_sent: body.len() as u64,
                denied_by: None,
                error: Some(err.code),
                reason: Some(reason),
                body_uninspected: false,
                findings: &[],
            },
        );
        tracing::debug!(
            ?client_ip,
            status,
            reason,
            request_id,
            "request refused by the HTTP/1 parser"
        );
        answer
    }
}

fn peer_ip(digest: Option<&SocketDigest>) -> Option<IpAddr> {
    digest?.peer_addr()?.as_inet().map(|a| a.ip())
}

/// The gateway's JSON error as a complete HTTP/1 response that closes the connection.
fn render(version: &[u8], status: http::StatusCode, request_id: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + request_id.len() + body.len());
    out.extend_from_slice(version);
    out.push(b' ');
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\ncache-control: private, no-store\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// The status of pingora's canned answer, if `buf` is one: a response head with status 400 or
/// 405 and no `x-request-id` (every answer of the gateway's own carries one).
fn canned_status(buf: &[u8]) -> Option<u16> {
    let status = match buf.get(..13)? {
        b"HTTP/1.1 400 " | b"HTTP/1.0 400 " => 400,
        b"HTTP/1.1 405 " | b"HTTP/1.0 405 " => 405,
        _ => return None,
    };
    let name = b"x-request-id";
    let carries_id = buf
        .windows(name.len())
        .any(|w| w.eq_ignore_ascii_case(name));
    (!carries_id).then_some(status)
}

/// What could be read from a refused request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// Why it was refused: a fixed phrase.
    pub reason: &'static str,
    /// The method, if printable ASCII (`""` otherwise).
    pub method: &'a str,
    /// The request target's path, if the request line came whole (`""` otherwise); printable
    /// ASCII only, cut at the first other byte.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Names why pingora refused `head` (the first bytes of the request, `total` bytes read in all).
pub fn diagnose(head: &[u8], total: usize) -> Found<'_> {
    let (method, path, query) = request_line(head);
    Found {
        reason: reason(head, total),
        method,
        path,
        query,
    }
}

fn printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Method, path and query of the request line, as far as they are printable ASCII.
fn request_line(head: &[u8]) -> (&str, &str, Option<&str>) {
    let Some(eol) = head.iter().position(|&b| b == b'\n') else {
        return ("", "", None);
    };
    let line = head[..eol].strip_suffix(b"\r").unwrap_or(&head[..eol]);
    let mut parts = line.split(|&b| b == b' ');
    let method = parts
        .next()
        .filter(|m| !m.is_empty() && m.len() <= 24 && m.iter().all(|&b| printable(b)))
        .unwrap_or(b"");
    let target = parts.next().unwrap_or(b"");
    let end = target
        .iter()
        .position(|&b| !printable(b))
        .unwrap_or(target.len());
    let target = &target[..end];
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    };
    (text(method), text(path), query.map(text))
}

/// Printable ASCII as text (always valid UTF-8).
fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

fn reason(head: &[u8], total: usize) -> &'static str {
    if head.is_empty() {
        return "malformed request head (pipelined behind an earlier request)";
    }
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Err(httparse::Error::Token) => {
            let method = head.split(|&b| b == b' ').next().unwrap_or(b"");
            if method.is_empty() || !method.iter().all(|&b| tchar(b)) {
                "invalid method"
            } else {
                "invalid request target"
            }
        }
        Err(httparse::Error::Version) => "invalid HTTP version",
        Err(httparse::Error::HeaderName) => "invalid header name",
        Err(httparse::Error::HeaderValue) => "invalid header value",
        Err(httparse::Error::NewLine) => "invalid line ending",
        Err(httparse::Error::TooManyHeaders) => "too many headers",
        Err(httparse::Error::Status) => "invalid request line",
        Ok(httparse::Status::Partial) if total > PINGORA_MAX_HEAD => {
            "request head larger than 1 MiB"
        }
        Ok(httparse::Status::Partial) => "malformed request head (past the first 512 bytes)",
        Ok(httparse::Status::Complete(_)) => framing(&req),
    }
}

/// RFC 9110 `tchar`: what a method may be made of.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// For a head `httparse` accepts: the check of pingora's that refused it.
fn framing(req: &httparse::Request<'_, '_>) -> &'static str {
    let named = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    if named("host").count() > 1 {
        return "multiple Host headers";
    }
    let target = req.path.unwrap_or("");
    if !target.starts_with('/') && target != "*" {
        return "invalid request target authority";
    }
    if let Some(te) = named("transfer-encoding").next_back() {
        // With Transfer-Encoding, pingora ignores Content-Length.
        if req.version == Some(0) {
            return "Transfer-Encoding in an HTTP/1.0 request";
        }
        let last = te.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
        if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return "Transfer-Encoding does not end in chunked";
        }
        return "malformed request";
    }
    let mut length: Option<&[u8]> = None;
    for h in named("content-length") {
        for v in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return "invalid Content-Length";
            }
            match length {
                Some(l) if l != v => return "conflicting Content-Length values",
                _ => length = Some(v),
            }
        }
    }
    if length.is_some_and(|l| l.len() > 19) {
        return "invalid Content-Length";
    }
    "malformed request"
}

impl AsyncRead for Tap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                this.saw(read);
            }
        }
        polled
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match &mut this.write {
                Write::Pass => {
                    if this.in_proxy.load(Relaxed) {
                        return Pin::new(&mut this.inner).poll_write(cx, buf);
                    }
                    let Some(status) = canned_status(buf) else {
                        return Pin::new(&mut this.inner).poll_write(cx, buf);
                    };
                    let answer = this.refuse(buf, status);
                    this.write = Write::Replacing { answer, at: 0 };
                }
                Write::Replacing { answer, at } => {
                    while *at < answer.len() {
                        match Pin::new(&mut this.inner).poll_write(cx, &answer[*at..]) {
                            Poll::Ready(Ok(0)) => {
                                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
                            }
                            Poll::Ready(Ok(n)) => *at += n,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    this.write = Write::Done;
                    // pingora's canned head counts as written, whole.
                    return Poll::Ready(Ok(buf.len()));
                }
                Write::Done => return Poll::Ready(Ok(buf.len())),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.write, Write::Pass) && this.in_proxy.load(Relaxed) {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Tap {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Tap {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Tap {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Tap {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Tap {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Tap {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Tap {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(head: &[u8]) -> &'static str {
        diagnose(head, head.len()).reason
    }

    #[test]
    fn each_refusal_has_its_reason() {
        assert_eq!(
            why(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            "conflicting Content-Length values"
        );
        assert_eq!(
            why(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n"),
            "conflicting Content-Length values"
        );
        assert_eq!(
            why(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
            "invalid Content-Length"
        );
        assert_eq!(
            why(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Note: a\0b\r\n\r\n"),
            "invalid header value"
        );
        assert_eq!(
            why(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"),
            "invalid header name"
        );
        assert_eq!(why(b"G@T /a HTTP/1.1\r\nHost: x\r\n\r\n"), "invalid method");
        assert_eq!(
            why(b"GET /a HTTP/7.1\r\nHost: x\r\n\r\n"),
            "invalid HTTP version"
        );
        assert_eq!(
            why(b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "Transfer-Encoding in an HTTP/1.0 request"
        );
        assert_eq!(
            why(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            "Transfer-Encoding does not end in chunked"
        );
        assert_eq!(
            why(b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
            "multiple Host headers"
        );
        let long = [b"GET /a HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 600]].concat();
        assert_eq!(
            why(&long[..CAPTURE]),
            "malformed request head (past the first 512 bytes)"
        );
        assert_eq!(
            diagnose(&long[..CAPTURE], 2 << 20).reason,
            "request head larger than 1 MiB"
        );
        assert_eq!(
            why(b""),
            "malformed request head (pipelined behind an earlier request)"
        );
    }

    #[test]
    fn the_request_line_is_kept_only_as_printable_ascii() {
        let f = diagnose(
            b"POST /a/b?token=s&x=1 HTTP/1.1\r\nHost: x\r\nX: \0\r\n\r\n",
            9,
        );
        assert_eq!(
            (f.method, f.path, f.query),
            ("POST", "/a/b", Some("token=s&x=1"))
        );
        let f = diagnose(b"G@T /a HTTP/1.1\r\n\r\n", 9);
        assert_eq!((f.method, f.path), ("G@T", "/a"));
        let f = diagnose(b"GE\x01T /a\xff\xfe/b HTTP/1.1\r\n\r\n", 9);
        assert_eq!((f.method, f.path, f.query), ("", "/a", None));
        // No whole request line: nothing.
        let f = diagnose(b"GET /very-long-target", 9);
        assert_eq!((f.method, f.path), ("", ""));
    }

    #[test]
    fn only_a_head_without_a_request_id_is_pingoras() {
        let canned = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(canned_status(canned), Some(400));
        assert_eq!(
            canned_status(b"HTTP/1.0 405 Method Not Allowed\r\n\r\n"),
            Some(405)
        );
        assert_eq!(
            canned_status(b"HTTP/1.1 400 Bad Request\r\nX-Request-Id: abc\r\n\r\n"),
            None
        );
        assert_eq!(canned_status(b"HTTP/1.1 404 Not Found\r\n\r\n"), None);
        assert_eq!(canned_status(b"HTTP/1.1 400"), None);
        assert_eq!(canned_status(b"{\"a\":1}"), None);
    }

    /// Through a pipe that takes 16 bytes at a time: pingora's canned head is replaced whole,
    /// reported written, and the request counted.
    #[tokio::test]
    async fn pingoras_answer_is_replaced_through_short_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(16);
        let dir = std::env::temp_dir();
        let gw = Arc::new(Gateway::new(dir, "n".into(), fenfa_plugins::builtin()));
        let mut tap = Tap::new(Box::new(server), gw.clone());
        let bad = b"G@T /a?k=v HTTP/1.1\r\nHost: x\r\n\r\n";
        let canned = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nContent-Length: 0\r\n\r\n";
        let talk = async {
            client.write_all(bad).await.unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            out
        };
        let serve = async {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while !buf[..n].ends_with(b"\r\n\r\n") {
                n += tap.read(&mut buf[n..]).await.unwrap();
            }
            // What pingora does: write_all, flush, shut down.
            tap.write_all(canned).await.unwrap();
            tap.flush().await.unwrap();
            AsyncWriteExt::shutdown(&mut tap).await.unwrap();
        };
        let (out, ()) = tokio::join!(talk, serve);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(head.contains("connection: close"), "{text}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
        assert_eq!(
            v["error"]["message"],
            "the request is malformed: invalid method"
        );
        assert!(head.contains(v["error"]["request_id"].as_str().unwrap()));
        assert_eq!(gw.metrics.unrouted.statuses.get(400), 1);
    }

    /// While a request owns the connection, even a bodiless 400 head is passed on untouched.
    #[tokio::test]
    async fn the_gateways_own_writes_pass_untouched() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(4096);
        let dir = std::env::temp_dir();
        let gw = Arc::new(Gateway::new(dir, "n".into(), fenfa_plugins::builtin()));
        let mut tap = Tap::new(Box::new(server), gw.clone());
        tap.in_proxy.store(true, Relaxed);
        let head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        tap.write_all(head).await.unwrap();
        AsyncWriteExt::shutdown(&mut tap).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, head);
        assert_eq!(gw.metrics.unrouted.statuses.get(400), 0);
    }

    #[test]
    fn the_answer_is_a_complete_response() {
        let body = crate::errors::json_body("bad_request", "m", "id1");
        let out = render(b"HTTP/1.1", http::StatusCode::BAD_REQUEST, "id1", &body);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("x-request-id: id1"));
        assert!(head.contains("connection: close"));
        assert_eq!(rest.as_bytes(), &body[..]);
    }
}
