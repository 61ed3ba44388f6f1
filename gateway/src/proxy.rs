//! The pingora proxy: routing, plugins, upstream selection, retries and gateway errors.
//!
//! Phase by phase (pingora's `ProxyHttp`):
//! - `request_filter`: request id, framing checks, path normalisation, route lookup, plugins'
//!   request phase. Anything the gateway answers itself (400/404/405/plugin denials) ends here.
//! - `upstream_peer`: picks a target not yet tried, within the service's total time budget.
//! - `upstream_request_filter`: path rewrite, identity/trace headers, plugins' upstream phase.
//! - `upstream_response_filter` / `response_filter`: passive health, response headers, plugins.
//! - `fail_to_connect` / `error_while_proxy`: passive health and the retry decision.
//! - `fail_to_proxy`: renders the JSON error (502/503/504/400).
//! - `logging`: metrics, the plugins' log phase, the audit record and the end of the request's
//!   spans.
//!
//! With `tracing:` configured, each request carries its spans (`otel.rs`): the server span from
//! `request_filter` to `logging`, a client span per upstream attempt (from `upstream_peer`), and
//! the `traceparent` sent upstream names that client span.
//!
//! Nothing here takes a lock or waits on anything but the client and the upstream.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fenfa_plugins::{
    Flow, HeaderEdits, LogView, Reply, ReplyBody, RequestCtx, RequestView, UpstreamView,
};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};

use crate::compile::{CompiledRoute, Runtime};
use crate::config::model::HostHeader;
use crate::errors::{self, GatewayError};
use crate::gateway::Gateway;
use crate::ids;
use crate::path;
use crate::router::Lookup;
use crate::upstream::{now_ms, pool::bit, HashOn};

pub struct FenfaProxy {
    gw: Arc<Gateway>,
}

impl FenfaProxy {
    pub fn new(gw: Arc<Gateway>) -> Self {
        Self { gw }
    }
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    rt: Option<Arc<Runtime>>,
    route: Option<Arc<CompiledRoute>>,
    /// `X-Request-Id` as sent upstream and to the client (the text is `plugin.request_id`).
    request_id: HeaderValue,
    /// The client's refused `X-Request-Id`, sanitised, for the audit record.
    client_request_id: Option<String>,
    /// The `traceparent` sent upstream when tracing is off.
    traceparent: Option<HeaderValue>,
    /// This request's spans when tracing is on (`otel.rs`); then `traceparent` is unused.
    trace: Option<Box<crate::otel::RequestTrace>>,
    upstream_uri: Option<http::Uri>,
    /// The TCP peer (what `X-Forwarded-For` gets appended).
    peer_ip: Option<IpAddr>,
    /// The client: the peer, or from `X-Forwarded-For` when the peer is a trusted proxy.
    client_ip: Option<IpAddr>,
    tls: bool,
    tried: u64,
    attempts: u32,
    target: Option<usize>,
    /// When the current upstream attempt started (its target picked), until its answer's head
    /// or its failure is counted in the target's latency histogram.
    attempt_start: Option<Instant>,
    deadline: Option<Instant>,
    /// The error the gateway answered (or will answer) with, if any.
    error: Option<GatewayError>,
    /// The latest upstream failure, answered if no other target is left.
    last_upstream_error: Option<GatewayError>,
    upstream_status: Option<u16>,
    counted: bool,
    /// The next attempt retries a stale pooled connection: the same target is allowed again.
    stale_retry: bool,
    /// The request-body phases' state (see `body.rs`).
    body: crate::body::RequestBody,
    /// The response-body phase's state (see `response_body.rs`).
    resp_body: crate::response_body::ResponseBody,
    /// A plugin's answer decided after proxying began (request-body phase).
    pending_reply: Option<Reply>,
    plugin: RequestCtx,
    /// Strict audit mode: the queue place reserved for this request's record.
    audit_slot: Option<crate::audit::Slot>,
    /// On a route of an h5 service: its prefix (`crate::h5`).
    h5: Option<Box<crate::h5::H5Request>>,
}

#[async_trait]
impl ProxyHttp for FenfaProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            rt: None,
            route: None,
            request_id: HeaderValue::from_static(""),
            client_request_id: None,
            traceparent: None,
            trace: None,
            upstream_uri: None,
            peer_ip: None,
            client_ip: None,
            tls: false,
            tried: 0,
            attempts: 0,
            target: None,
            attempt_start: None,
            deadline: None,
            error: None,
            last_upstream_error: None,
            upstream_status: None,
            counted: false,
            body: Default::default(),
            resp_body: Default::default(),
            stale_retry: false,
            pending_reply: None,
            plugin: RequestCtx::default(),
            audit_slot: None,
            h5: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // From here to `logging`, what is written on the connection is this request's answer.
        // (Here rather than in `early_request_filter`, which would cost a boxed future per
        // request; nothing before this phase writes a response.)
        crate::tap::begin(session.as_downstream());
        ctx.start = Instant::now();
        // Pipelined requests (sent before the previous answer) are answered in order, one after
        // the other; without this pingora closes after the first and drops the rest unanswered.
        session.set_pipelining_enabled(true);
        if self.gw.draining.load(Relaxed) {
            session.set_keepalive(None);
        }
        ctx.counted = true;
        self.gw.metrics.in_flight.fetch_add(1, Relaxed);
        let req = session.req_header();
        let client_id = req.headers.get("x-request-id").map(|v| v.as_bytes());
        match client_id.map(|v| (v, ids::accept_request_id(v))) {
            Some((_, Some(id))) => {
                ctx.plugin.request_id = id.to_owned();
                // The client's own value, shared (it passed the safe-token check).
                ctx.request_id = req.headers["x-request-id"].clone();
            }
            refused => {
                if let Some((refused, _)) = refused {
                    ctx.client_request_id = Some(ids::sanitize_client_id(refused));
                }
                let id = ids::new_request_id();
                ctx.plugin.request_id = id.as_str().to_owned();
                ctx.request_id = id.header_value();
            }
        }
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = ctx.peer_ip;
        ctx.tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        match self.gw.traces.get() {
            Some(t) => ctx.trace = Some(t.request(req, &ctx.plugin.request_id, ctx.tls)),
            None => {
                let tp =
                    ids::next_traceparent(req.headers.get("traceparent").map(|v| v.as_bytes()));
                ctx.traceparent = Some(tp.header_value());
            }
        }
        // Strict audit mode: refuse a request whose record would have no room in the queue.
        match self.gw.audit.admit() {
            Ok(slot) => ctx.audit_slot = slot,
            Err(crate::audit::QueueFull) => {
                let err = crate::errors::AUDIT_UNAVAILABLE;
                return self.answer(session, ctx, err, err.message).await;
            }
        }

        // Pingora drops `Content-Length` when `Transfer-Encoding` is also present (RFC 9112
        // §6.3), so whether the client sent both is only visible in the raw header.
        let sent_content_length = req.headers.contains_key(http::header::CONTENT_LENGTH)
            || (req.headers.contains_key(http::header::TRANSFER_ENCODING)
                && raw_has_content_length(&session.to_h1_raw()));
        if let Err(why) = check_framing(req, sent_content_length) {
            session.set_keepalive(None);
            return self.answer(session, ctx, errors::BAD_REQUEST, why).await;
        }
        if header_bytes(req) > MAX_REQUEST_HEADER_BYTES {
            session.set_keepalive(None);
            return self
                .answer(
                    session,
                    ctx,
                    errors::BAD_REQUEST,
                    "the request headers are larger than 64 KiB",
                )
                .await;
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host must be answered with 400.
        if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
            return self
                .answer(
                    session,
                    ctx,
                    errors::BAD_REQUEST,
                    "an HTTP/1.1 request needs a Host header",
                )
                .await;
        }
        // Most paths are already normal: keep those borrowed (no allocation per request).
        let normalized: Option<String> = match path::normalize(req.uri.path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(p)) => Some(p),
            Err(e) => {
                let msg = e.to_string();
                return self.answer(session, ctx, errors::BAD_REQUEST, &msg).await;
            }
        };
        let Some(rt) = self.gw.current() else {
            return self
                .answer(session, ctx, errors::NOT_READY, errors::NOT_READY.message)
                .await;
        };
        let req = session.req_header();
        let normalized: &str = normalized.as_deref().unwrap_or(req.uri.path());
        if let (Some(peer), false) = (ctx.peer_ip, rt.trusted_proxies.is_empty()) {
            let xff = req.headers.get_all("x-forwarded-for");
            ctx.client_ip = Some(
                rt.trusted_proxies
                    .resolve_client_ip(peer, xff.iter().map(|v| v.as_bytes())),
            );
        }
        let host = req.uri.host().or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        // The mini-programs' domain verification files, before routing (`h5.rs`).
        if let Some(content) = crate::h5::file(&rt, req, host, normalized) {
            let body = (req.method != http::Method::HEAD).then(|| content.to_owned());
            let len = content.len();
            return write_text(session, ctx, len, body).await;
        }
        let (route, upstream_path) = match rt.router.lookup(host, normalized, &req.method) {
            Lookup::Found(m) => {
                let route = m.value.clone();
                let upstream_path = upstream_path(&route, normalized, &m);
                if route.h5.is_some() {
                    let prefix = normalized.get(..m.prefix_len).unwrap_or_default();
                    ctx.h5 = Some(Box::new(crate::h5::H5Request {
                        prefix: prefix.trim_end_matches('/').into(),
                    }));
                }
                (route, upstream_path)
            }
            Lookup::MethodNotAllowed => {
                return self
                    .answer(
                        session,
                        ctx,
                        errors::METHOD_NOT_ALLOWED,
                        errors::METHOD_NOT_ALLOWED.message,
                    )
                    .await
            }
            Lookup::NotFound => {
                return self
                    .answer(session, ctx, errors::NOT_FOUND, errors::NOT_FOUND.message)
                    .await
            }
        };
        if upstream_path.as_deref().unwrap_or(normalized) != req.uri.path() {
            let p = upstream_path.as_deref().unwrap_or(normalized);
            let pq = match req.uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p.to_string(),
            };
            match http::Uri::builder().path_and_query(pq).build() {
                Ok(u) => ctx.upstream_uri = Some(u),
                Err(_) => {
                    return self
                        .answer(
                            session,
                            ctx,
                            errors::BAD_REQUEST,
                            "the rewritten path is not a valid URI",
                        )
                        .await
                }
            }
        }
        ctx.deadline = Some(ctx.start + route.service.total_timeout);
        ctx.plugin.route = route.name.clone();
        ctx.plugin.service = route.service.name.clone();
        ctx.plugin.agency = route.service.agency.clone();
        ctx.plugin.client_ip = ctx.client_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Some(trace) = ctx.trace.as_mut() {
            trace.routed(
                &req.method,
                &route.name,
                &route.service.name,
                &route.service.agency,
            );
        }
        ctx.route = Some(route.clone());
        ctx.rt = Some(rt);

        if !route.plugins.is_empty() {
            let view = RequestView {
                method: &req.method,
                path: normalized,
                query: req.uri.query(),
                headers: &req.headers,
                client_ip: ctx.client_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                tls: ctx.tls,
            };
            for p in route.plugins.iter() {
                if let Flow::Respond(reply) = p.request(&view, &mut ctx.plugin) {
                    if reply.body == ReplyBody::JsonError {
                        ctx.plugin.denied_by = Some((p.name(), reply.code));
                    }
                    return self.reply(session, ctx, reply).await;
                }
            }
            if route.plugins.calls_out() {
                let answer = crate::phases::request_async(
                    &route.plugins,
                    &view,
                    &mut ctx.plugin,
                    &self.gw.metrics,
                    self.gw.traces.get().zip(ctx.trace.as_deref()),
                )
                .await;
                if let Some((name, reply)) = answer {
                    if reply.body == ReplyBody::JsonError {
                        ctx.plugin.denied_by = Some((name, reply.code));
                    }
                    return self.reply(session, ctx, reply).await;
                }
            }
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        if route.plugins.is_empty() {
            return Ok(());
        }
        if let Err(denial) = crate::body::on_request_chunk(
            &route.plugins,
            &mut ctx.body,
            &mut ctx.plugin,
            body,
            end_of_stream,
        ) {
            ctx.plugin.denied_by = Some((denial.plugin, denial.reply.code));
            let status = denial.reply.status.as_u16();
            ctx.pending_reply = Some(denial.reply);
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "denied by a plugin in the request-body phase",
            ));
        }
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        // API routes: nothing is cached, nothing else is paid.
        if ctx.h5.is_some() {
            crate::h5::cache::enable(session);
        }
        Ok(())
    }

    fn cache_key_callback(
        &self,
        session: &Session,
        ctx: &mut Ctx,
    ) -> Result<pingora::cache::CacheKey> {
        let service = ctx.route.as_ref().map_or("", |r| &*r.service.name);
        Ok(crate::h5::cache::key(service, session.req_header()))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<pingora::cache::RespCacheable> {
        Ok(crate::h5::cache::cacheable(session.req_header(), resp))
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora::cache::CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        crate::h5::cache::variance(meta, req)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            ctx.error = Some(errors::INTERNAL);
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route in context",
            ));
        };
        let svc = &route.service;
        let now = Instant::now();
        let remaining = ctx
            .deadline
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(svc.total_timeout);
        if remaining.is_zero() {
            ctx.error = Some(errors::UPSTREAM_TIMEOUT);
            return Err(Error::explain(
                ErrorType::HTTPStatus(504),
                "total upstream time budget spent",
            ));
        }
        let exclude = if std::mem::take(&mut ctx.stale_retry) {
            ctx.target.map_or(ctx.tried, |i| ctx.tried & !bit(i))
        } else {
            ctx.tried
        };
        let picked = match svc.pool.hash_on() {
            None => svc.pool.select(b"", exclude, now_ms()),
            Some(on) => {
                let header_key = match on {
                    HashOn::Header(name) => session
                        .req_header()
                        .headers
                        .get(name)
                        .map(|v| v.as_bytes().to_vec()),
                    HashOn::ClientIp => None,
                };
                let key = header_key.unwrap_or_else(|| {
                    ctx.client_ip
                        .map(|ip| ip.to_string().into_bytes())
                        .unwrap_or_default()
                });
                svc.pool.select(&key, exclude, now_ms())
            }
        };
        let Some(i) = picked else {
            let err = ctx
                .last_upstream_error
                .unwrap_or(errors::NO_HEALTHY_UPSTREAM);
            ctx.error = Some(err);
            return Err(Error::explain(
                ErrorType::HTTPStatus(err.status.as_u16()),
                "no upstream target available",
            ));
        };
        ctx.tried |= bit(i);
        ctx.attempts += 1;
        ctx.target = Some(i);
        ctx.attempt_start = Some(now);
        if let (Some(t), Some(trace)) = (self.gw.traces.get(), ctx.trace.as_mut()) {
            trace.upstream_attempt(
                t,
                &session.req_header().method,
                &svc.name,
                &svc.pool.targets()[i].authority,
                ctx.attempts,
            );
        }
        let mut peer = svc.peer(i);
        // Never let one attempt outlive the total budget.
        let cap = |d: Duration| Some(d.min(remaining).max(Duration::from_millis(1)));
        peer.options.read_timeout = cap(svc.read_timeout);
        peer.options.write_timeout = cap(svc.write_timeout);
        peer.options.connection_timeout = cap(svc.connect_timeout);
        peer.options.total_connection_timeout = cap(svc.connect_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(uri) = &ctx.upstream_uri {
            upstream.set_uri(uri.clone());
        }
        // Identity and signature headers are the gateway's to set: never pass a client's on.
        // One scan of the names tells whether there is anything to remove (almost never).
        if upstream.headers.keys().any(|k| {
            let name = k.as_str();
            name.starts_with("x-fenfa-") || name.contains('_')
        }) {
            for h in FENFA_HEADERS {
                upstream.remove_header(h);
            }
            drop_underscore_aliases(upstream);
        }
        upstream.insert_header("x-request-id", ctx.request_id.clone())?;
        match (self.gw.traces.get(), &ctx.trace, &ctx.traceparent) {
            // The current attempt's client span, exported when sampled.
            (Some(t), Some(trace), _) => trace.inject(t, upstream),
            (_, _, Some(tp)) => upstream.insert_header("traceparent", tp.clone())?,
            _ => {}
        }
        // Response-body plugins read plain bodies: ask for one (anything else is decoded).
        if ctx
            .route
            .as_ref()
            .is_some_and(|r| r.plugins.response_limit().is_some())
        {
            upstream.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
        }
        if let Some(ip) = ctx.peer_ip {
            let prev = session.req_header().headers.get_all("x-forwarded-for");
            let xff = if prev.iter().next().is_none() {
                forwarded_for(ip)
            } else {
                // Several header lines are one comma-separated list; keep all of them.
                let mut xff = String::new();
                for prev in prev {
                    if let Ok(prev) = prev.to_str() {
                        xff.push_str(prev);
                        xff.push_str(", ");
                    }
                }
                xff.push_str(&ip.to_string());
                HeaderValue::try_from(xff).map_err(|_| {
                    Error::explain(ErrorType::InvalidHTTPHeader, "invalid X-Forwarded-For")
                })?
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        let proto = HeaderValue::from_static(if ctx.tls { "https" } else { "http" });
        upstream.insert_header("x-forwarded-proto", proto)?;
        if let Some(route) = &ctx.route {
            if route.service.host_header == HostHeader::Target {
                if let Some(i) = ctx.target {
                    upstream.insert_header(
                        "host",
                        route.service.pool.targets()[i].authority.as_str(),
                    )?;
                }
            }
            if !route.plugins.is_empty() {
                let uri = upstream.uri.clone();
                let method = upstream.method.clone();
                let view = UpstreamView {
                    method: &method,
                    path: uri.path(),
                    query: uri.query(),
                };
                let mut edits = ReqEdits(upstream);
                for p in route.plugins.iter() {
                    p.upstream_request(&view, &ctx.plugin, &mut edits);
                }
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(trace) = ctx.trace.as_mut() {
            trace.upstream_status(status);
        }
        self.attempt_done(ctx);
        if let (Some(route), Some(i)) = (&ctx.route, ctx.target) {
            let t = &route.service.pool.targets()[i];
            match &route.service.pool.passive {
                Some(p) if p.unhealthy_statuses.contains(&status) => {
                    if t.record_failure(p, now_ms()) {
                        tracing::warn!(service = %route.service.name, target = %t.authority, status, "target ejected (passive check)");
                    }
                }
                _ => t.record_success(),
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Draining: this connection will not be reused, so say so (`Connection: close`), or a
        // keep-alive client sends its next request into a socket about to close.
        if self.gw.draining.load(Relaxed) {
            session.set_keepalive(None);
        }
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        if let Some(route) = &ctx.route {
            if route.plugins.response_limit().is_some() {
                crate::response_body::on_response_head(
                    &route.plugins,
                    &session.req_header().method,
                    session.req_header().version,
                    resp,
                    &mut ctx.resp_body,
                    &mut ctx.plugin,
                )
                .map_err(|e| {
                    ctx.error = Some(errors::RESPONSE_UNCHECKED);
                    Error::explain(ErrorType::HTTPStatus(502), e.to_string())
                })?;
            }
            if !route.plugins.is_empty() {
                let status = resp.status.as_u16();
                let mut edits = RespEdits(resp);
                for p in route.plugins.iter() {
                    p.response(&ctx.plugin, status, &mut edits);
                }
            }
            if let (Some(h5), Some(headers)) = (&ctx.h5, &route.h5) {
                let req = session.req_header();
                let host = req.uri.host().or_else(|| {
                    req.headers
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                });
                crate::h5::respond(
                    resp,
                    &crate::h5::Answer {
                        prefix: &h5.prefix,
                        headers,
                        channel: ctx.plugin.identity.as_ref().map(|i| i.channel.as_str()),
                        tls: ctx.tls,
                        host,
                        service: &route.service,
                        cache_status: crate::h5::cache::status(session.cache.phase()),
                    },
                );
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(route) = &ctx.route {
            if route.plugins.response_limit().is_some() {
                crate::response_body::on_response_chunk(
                    &route.plugins,
                    &mut ctx.resp_body,
                    &mut ctx.plugin,
                    body,
                    end_of_stream,
                )
                .map_err(|e| {
                    tracing::warn!(request_id = %ctx.plugin.request_id, error = %e, "response aborted");
                    // Answered as 502 if the head is not out yet; else the body is cut off.
                    ctx.error = Some(errors::RESPONSE_UNCHECKED);
                    Error::explain(ErrorType::HTTPStatus(502), e.to_string())
                })?;
            }
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let timeout = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout
        );
        let err = if timeout {
            errors::UPSTREAM_TIMEOUT
        } else {
            errors::BAD_GATEWAY
        };
        ctx.last_upstream_error = Some(err);
        if let Some(trace) = ctx.trace.as_mut() {
            trace.upstream_failed(err.code);
        }
        self.attempt_done(ctx);
        self.passive_failure(ctx);
        if self.may_retry(ctx) {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if e.esource() != &ErrorSource::Upstream {
            e.set_retry(false);
            return e;
        }
        // The upstream timed out while the client had not finished sending its body: the
        // upstream was waiting for the client. That is the client's fault (408); counting it
        // against the target would let any slow client take a healthy target out of service.
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        if timed_out && !session.is_body_done() {
            ctx.error = Some(errors::REQUEST_TIMEOUT);
            if let Some(trace) = ctx.trace.as_mut() {
                trace.upstream_failed(errors::REQUEST_TIMEOUT.code);
            }
            // Nor is the wait the target's latency.
            ctx.attempt_start = None;
            e.set_retry(false);
            return e;
        }
        let err = classify(&e);
        ctx.last_upstream_error = Some(err);
        if let Some(trace) = ctx.trace.as_mut() {
            trace.upstream_failed(err.code);
        }
        self.attempt_done(ctx);
        self.passive_failure(ctx);
        let idempotent = session.req_header().method.is_idempotent();
        let safe = idempotent
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if !safe {
            e.set_retry(false);
        } else if self.may_retry(ctx) {
            e.set_retry(true);
        } else {
            // A stale pooled connection is always worth one more try on a fresh one, even on
            // the same target (pingora opens a new connection for the retry).
            e.retry.decide_reuse(client_reused);
            if e.retry() {
                ctx.stale_retry = true;
            }
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if let Some(reply) = ctx.pending_reply.take() {
            let code = reply.status.as_u16();
            if session.response_written().is_none() {
                session.set_keepalive(None);
                let _ = self.reply(session, ctx, reply).await;
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let err = match ctx.error {
            Some(err) => Some(err),
            None => match e.esource() {
                ErrorSource::Upstream => Some(classify(e)),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    ErrorType::ReadTimedout => Some(errors::REQUEST_TIMEOUT),
                    _ => Some(errors::BAD_REQUEST),
                },
                _ => match e.etype() {
                    ErrorType::HTTPStatus(504) => Some(errors::UPSTREAM_TIMEOUT),
                    ErrorType::HTTPStatus(503) => Some(errors::NO_HEALTHY_UPSTREAM),
                    ErrorType::HTTPStatus(502) => Some(errors::BAD_GATEWAY),
                    _ => Some(errors::INTERNAL),
                },
            },
        };
        let Some(err) = err else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        ctx.error = Some(err);
        if session.response_written().is_none() {
            // The downstream connection is not reused after a proxy failure; say so in the
            // response, or a keepalive client sends its next request into a closed socket.
            session.set_keepalive(None);
            let _ = write_json_error(session, err.status, err.code, err.message, ctx, &[]).await;
        }
        FailToProxy {
            error_code: err.status.as_u16(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        crate::tap::end(session.as_downstream());
        if !ctx.counted {
            return;
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.error.map(|e| e.status.as_u16()))
            .unwrap_or(499);
        let latency_us = ctx.start.elapsed().as_micros() as u64;
        match &ctx.route {
            Some(route) => {
                route.metrics.record(status, latency_us);
                if !route.plugins.is_empty() {
                    let req = session.req_header();
                    let upstream = ctx
                        .target
                        .map(|i| route.service.pool.targets()[i].authority.as_str());
                    let view = LogView {
                        method: &req.method,
                        path: req.uri.path(),
                        status,
                        upstream,
                        upstream_status: ctx.upstream_status,
                        latency_us,
                        bytes_sent: session.body_bytes_sent() as u64,
                    };
                    for p in route.plugins.iter() {
                        p.log(&ctx.plugin, &view);
                    }
                }
            }
            None => self.gw.metrics.unrouted.record(status, latency_us),
        }
        if let Some((plugin, code)) = ctx.plugin.denied_by {
            self.gw.metrics.denials.inc(plugin, code);
        }
        for f in &ctx.plugin.findings {
            self.gw.metrics.findings.add(f);
        }
        // The audit record (never blocks). Before `in_flight` drops, so that shutdown, which
        // waits for `in_flight` to reach 0, cannot flush the trail ahead of this record.
        let req = session.req_header();
        self.gw.audit.record(
            ctx.audit_slot.take(),
            &crate::audit::Parts {
                request_id: &ctx.plugin.request_id,
                client_request_id: ctx.client_request_id.as_deref(),
                client_ip: ctx.client_ip,
                identity: ctx.plugin.identity.as_ref(),
                agency: &ctx.plugin.agency,
                service: &ctx.plugin.service,
                route: &ctx.plugin.route,
                method: req.method.as_str(),
                path: req.uri.path(),
                query: req.uri.query(),
                headers: &req.headers,
                status,
                upstream: ctx.route.as_ref().zip(ctx.target).and_then(|(r, i)| {
                    r.service
                        .pool
                        .targets()
                        .get(i)
                        .map(|t| t.authority.as_str())
                }),
                upstream_status: ctx.upstream_status,
                latency_us,
                bytes_sent: session.body_bytes_sent() as u64,
                denied_by: ctx.plugin.denied_by,
                error: ctx.error.map(|e| e.code),
                reason: None,
                body_uninspected: ctx.plugin.body_uninspected,
                findings: &ctx.plugin.findings,
            },
        );
        if let Some(trace) = ctx.trace.take() {
            trace.finish(
                status,
                ctx.plugin.identity.as_ref(),
                ctx.plugin.denied_by.map(|(plugin, _)| plugin),
                ctx.error.map(|e| e.code),
            );
        }
        self.gw.metrics.in_flight.fetch_sub(1, Relaxed);
    }
}

impl FenfaProxy {
    /// Answers with a gateway error and ends the request (`request_filter` returns true).
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        err: GatewayError,
        message: &str,
    ) -> Result<bool> {
        ctx.error = Some(err);
        write_json_error(session, err.status, err.code, message, ctx, &[]).await?;
        Ok(true)
    }

    /// Answers with a plugin's reply.
    async fn reply(&self, session: &mut Session, ctx: &mut Ctx, reply: Reply) -> Result<bool> {
        if reply.body == ReplyBody::Empty {
            write_empty(session, reply.status, ctx, &reply.headers).await?;
            return Ok(true);
        }
        ctx.error = Some(GatewayError::new(reply.status, reply.code, ""));
        write_json_error(
            session,
            reply.status,
            reply.code,
            &reply.message,
            ctx,
            &reply.headers,
        )
        .await?;
        Ok(true)
    }

    fn may_retry(&self, ctx: &Ctx) -> bool {
        let Some(route) = &ctx.route else {
            return false;
        };
        let within_budget = ctx.deadline.map(|d| Instant::now() < d).unwrap_or(true);
        ctx.attempts <= route.service.retries && within_budget
    }

    /// Counts the current attempt in its target's latency histogram
    /// (`fenfa_upstream_duration_seconds`): from picking the target to the answer's head, or to
    /// the failure. At most once per attempt; one clock read.
    fn attempt_done(&self, ctx: &mut Ctx) {
        if let (Some(start), Some(route), Some(i)) =
            (ctx.attempt_start.take(), &ctx.route, ctx.target)
        {
            if let Some(t) = route.service.pool.targets().get(i) {
                t.latency.observe_us(start.elapsed().as_micros() as u64);
            }
        }
    }

    fn passive_failure(&self, ctx: &Ctx) {
        if let (Some(route), Some(i)) = (&ctx.route, ctx.target) {
            if let Some(p) = &route.service.pool.passive {
                let t = &route.service.pool.targets()[i];
                if t.record_failure(p, now_ms()) {
                    tracing::warn!(service = %route.service.name, target = %t.authority, "target ejected (passive check)");
                }
            }
        }
    }
}

/// Maps an upstream error to the gateway error the client sees.
fn classify(e: &Error) -> GatewayError {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::HTTPStatus(504) => errors::UPSTREAM_TIMEOUT,
        ErrorType::HTTPStatus(503) => errors::NO_HEALTHY_UPSTREAM,
        _ => errors::BAD_GATEWAY,
    }
}

/// Largest request line plus header section the gateway forwards (pingora alone allows 1 MiB;
/// upstreams commonly refuse far less, and nothing legitimate needs more).
const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;

/// Size of the request line and headers as sent on HTTP/1.1 (name, `: `, value, CRLF).
fn header_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Whether a raw HTTP/1 header section has a `Content-Length` field.
fn raw_has_content_length(raw: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.split(|&b| b == b':')
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case(b"content-length"))
    })
}

/// Rejects requests whose body framing two parties could read differently (request smuggling).
/// `sent_content_length`: whether the client sent a `Content-Length` (pingora may have removed it).
fn check_framing(
    req: &RequestHeader,
    sent_content_length: bool,
) -> std::result::Result<(), &'static str> {
    let mut cls = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first_cl = cls.next();
    if let Some(first) = first_cl {
        if cls.any(|v| v != first) {
            return Err("conflicting Content-Length headers");
        }
        if first.as_bytes().is_empty() || !first.as_bytes().iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length");
        }
    }
    let mut tes = req
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .peekable();
    if tes.peek().is_some() {
        if first_cl.is_some() || sent_content_length {
            return Err("both Content-Length and Transfer-Encoding are present");
        }
        if req.version == http::Version::HTTP_10 {
            return Err("Transfer-Encoding is not allowed in HTTP/1.0");
        }
        let all: Vec<&HeaderValue> = tes.collect();
        if all.len() != 1 || !all[0].as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err("unsupported Transfer-Encoding; only `chunked` is accepted");
        }
    }
    Ok(())
}

/// The path sent upstream, if it differs from the normalised one.
fn upstream_path(
    route: &CompiledRoute,
    normalized: &str,
    m: &crate::router::RouteMatch<'_, Arc<CompiledRoute>>,
) -> Option<String> {
    let rest = normalized.get(m.prefix_len..).unwrap_or("");
    if let Some(rw) = &route.rewrite {
        let mut out = String::with_capacity(normalized.len() + 16);
        rw.apply(&m.params, rest, &mut out);
        return Some(out);
    }
    if route.strip_prefix {
        return Some(if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        });
    }
    None
}

/// `X-Forwarded-For` for a client that sent none: the peer's address. The value of the last
/// address seen is kept per proxy thread, so the requests of a keep-alive connection (and of
/// one client's connections) share one header value instead of formatting it each time.
fn forwarded_for(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((seen, value)) if *seen == ip => value.clone(),
            _ => {
                let value = HeaderValue::from_str(&ip.to_string()).expect("an address is ASCII");
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

/// Headers only the gateway may set on an upstream request.
const FENFA_HEADERS: [&str; 6] = [
    "x-fenfa-user",
    "x-fenfa-channel",
    "x-fenfa-app",
    "x-fenfa-timestamp",
    "x-fenfa-key-id",
    "x-fenfa-signature",
];

/// Headers the gateway sets on the upstream request besides [`FENFA_HEADERS`].
const GATEWAY_SET_HEADERS: [&str; 4] = [
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// Removes client headers whose name, with `_` read as `-`, is one the gateway sets or any
/// `x-fenfa-*`: CGI, PHP and WSGI backends see `X_Fenfa_User` and `X-Fenfa-User` both as
/// `HTTP_X_FENFA_USER`, so passing the first on would forge the second (nginx drops underscore
/// headers by default for this reason). Names without `_` cost one scan of the names.
fn drop_underscore_aliases(upstream: &mut RequestHeader) {
    if !upstream.headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let aliases: Vec<HeaderName> = upstream
        .headers
        .keys()
        .filter(|k| {
            let name = k.as_str();
            if !name.contains('_') {
                return false;
            }
            let dashed = name.replace('_', "-");
            dashed.starts_with("x-fenfa-") || GATEWAY_SET_HEADERS.contains(&dashed.as_str())
        })
        .cloned()
        .collect();
    for name in aliases {
        upstream.remove_header(&name);
    }
}

/// Writes a bodiless answer from a plugin (e.g. a CORS preflight's 204).
async fn write_empty(
    session: &mut Session,
    status: StatusCode,
    ctx: &Ctx,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(2 + extra.len()))?;
    if !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
    {
        resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    }
    resp.insert_header("x-request-id", ctx.request_id.clone())?;
    for (k, v) in extra {
        resp.insert_header(k.clone(), v.clone())?;
    }
    if let Some(route) = &ctx.route {
        let mut edits = RespEdits(&mut resp);
        for p in route.plugins.iter() {
            p.response(&ctx.plugin, status.as_u16(), &mut edits);
        }
    }
    session.write_response_header(Box::new(resp), true).await?;
    Ok(())
}

/// Writes a `200 text/plain` answer of `len` bytes (a domain verification file); `body` is
/// `None` for `HEAD`.
async fn write_text(
    session: &mut Session,
    ctx: &Ctx,
    len: usize,
    body: Option<String>,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    resp.insert_header("x-request-id", ctx.request_id.clone())?;
    session
        .write_response_header(Box::new(resp), body.is_none())
        .await?;
    if let Some(body) = body {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(true)
}

/// Writes a gateway error in the JSON shape and ends the response.
pub async fn write_json_error(
    session: &mut Session,
    status: StatusCode,
    code: &str,
    message: &str,
    ctx: &Ctx,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<()> {
    let request_id = ctx.plugin.request_id.as_str();
    let body = errors::json_body(code, message, request_id);
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header("x-request-id", ctx.request_id.clone())?;
    for (k, v) in extra {
        resp.insert_header(k.clone(), v.clone())?;
    }
    // Plugins see the gateway's own answers too (CORS must decorate a 401 for a browser to read it).
    if let Some(route) = &ctx.route {
        if !route.plugins.is_empty() {
            let mut edits = RespEdits(&mut resp);
            for p in route.plugins.iter() {
                p.response(&ctx.plugin, status.as_u16(), &mut edits);
            }
        }
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

struct ReqEdits<'a>(&'a mut RequestHeader);

impl HeaderEdits for ReqEdits<'_> {
    fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.0.headers.get(name)
    }
    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.0.insert_header(name, value);
    }
    fn remove(&mut self, name: &str) {
        self.0.remove_header(name);
    }
}

/// The client response's head as plugins edit it (also used by `response_body.rs`).
pub(crate) struct RespEdits<'a>(pub(crate) &'a mut ResponseHeader);

impl HeaderEdits for RespEdits<'_> {
    fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.0.headers.get(name)
    }
    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.0.insert_header(name, value);
    }
    fn remove(&mut self, name: &str) {
        self.0.remove_header(name);
    }
}
