//! Traces: OpenTelemetry spans of every request, exported over OTLP/HTTP to a collector
//! (`tracing:` in the config; `docs/tracing.md`).
//!
//! Per request, with tracing on:
//! - a **server span** (kind `Server`), started in `request_filter` as the child of the incoming
//!   `traceparent` when it is valid (the W3C propagator of `opentelemetry_sdk`), else as the root
//!   of a new trace; named `{method} {route}` once routed (`{method}` before); ended in `logging`
//!   with the status;
//! - a **client span** (kind `Client`) per upstream attempt, from the moment its target is picked
//!   (so it covers the connection) to its failure, the next attempt or the end of the response.
//!   The `traceparent` sent upstream names this span (and carries its sampled flag), so a sampled
//!   upstream call's parent is always a span that is exported;
//! - an **internal span per plugin call-out** (the async plugin phase: `rate-limit` with its Redis
//!   store), with its outcome.
//!
//! Sampling is `ParentBased(TraceIdRatioBased(sample_ratio))`: a caller's sampled flag is
//! followed, and new traces are kept at `sample_ratio`. A span that is not sampled costs its ids
//! and nothing else; its `traceparent` still goes upstream, with the trace id kept and flag `00`.
//!
//! Export: the SDK's batch span processor (one thread of its own; the request path only hands a
//! finished span to a bounded queue, and a full queue drops the span) and the OTLP/HTTP protobuf
//! exporter of `opentelemetry-otlp`, whose HTTP client is [`Collector`]: the workspace's
//! `fenfa-net` client (reqwest 0.12, rustls with ring, the CA and client certificate of
//! `tracing.tls`, no redirects, no system proxy, capped answers) running on `fenfa-net`'s own
//! runtime. `opentelemetry-otlp`'s own reqwest client (0.13, a second TLS stack) is not built:
//! its features are off. The exporter's retry policy (exponential backoff within
//! `tracing.timeout`) applies.
//!
//! With no `tracing:` section nothing here runs: the request path is the one without tracing
//! (`ids::next_traceparent`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderMap;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;

use crate::config::model::TracingSettings;

/// The tracer of a running gateway: started once from the config it starts with.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Checks `settings`, builds the exporter and starts the batch processor's thread. `node` is
    /// the resource's `service.instance.id` (the node name of `/status` and the audit records).
    pub fn start(settings: &TracingSettings, node: &str) -> Result<Self, String> {
        let headers = crate::config::traces::check(settings).map_err(|e| e.to_string())?;
        let endpoint = fenfa_net::Endpoint::new(&crate::config::traces::net_settings(settings))
            .map_err(|e| e.to_string())?;
        let collector = Collector {
            endpoint,
            headers,
            timeout: settings.timeout.0,
            rt: fenfa_net::handle().map_err(|e| e.to_string())?,
            failing: Arc::new(AtomicBool::new(false)),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(collector)
            .with_endpoint(settings.endpoint.clone())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(settings.timeout.0)
            .build()
            .map_err(|e| format!("tracing: cannot build the OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(settings.queue_spans)
            .with_max_export_batch_size(settings.batch_spans)
            .with_scheduled_delay(settings.interval.0)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        // Only what the config says: `Resource::builder_empty` reads no OTEL_* variables.
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "fenfa-gateway"),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", node.to_string()),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("fenfa-gateway")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(endpoint = %settings.endpoint, sample_ratio = settings.sample_ratio,
            "tracing on: spans exported over OTLP/HTTP");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts a request's server span: the child of the request's `traceparent` when it is
    /// valid, else the root of a new trace.
    pub fn request(&self, req: &RequestHeader, request_id: &str, tls: bool) -> Box<RequestTrace> {
        let parent = self.propagator.extract_with_context(
            &Context::new(),
            &opentelemetry_http::HeaderExtractor(&req.headers),
        );
        let method = method_name(&req.method);
        let mut server = SpanBuilder::from_name(method.clone())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        // Attributes only for a span that is recorded: one not sampled costs its ids alone.
        if server.is_recording() {
            server.set_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.path", req.uri.path().to_string()),
                KeyValue::new("url.scheme", if tls { "https" } else { "http" }),
                KeyValue::new("fenfa.request_id", request_id.to_string()),
            ]);
        }
        Box::new(RequestTrace {
            server,
            upstream: None,
        })
    }

    /// Exports what is queued and stops the processor's thread, within `timeout`. Spans that end
    /// later are dropped.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "tracing: spans still queued at shutdown may be lost");
        }
    }
}

/// One request's spans, kept in the proxy's per-request context.
pub struct RequestTrace {
    server: Span,
    /// The current upstream attempt's client span, until it ends.
    upstream: Option<Span>,
}

impl RequestTrace {
    /// The request found its route: the span's name and the route's attributes.
    pub fn routed(
        &mut self,
        method: &http::Method,
        route: &Arc<str>,
        service: &Arc<str>,
        agency: &Arc<str>,
    ) {
        if !self.server.is_recording() {
            return;
        }
        self.server
            .update_name(format!("{} {route}", method.as_str()));
        self.server
            .set_attribute(KeyValue::new("http.route", route.clone()));
        self.server
            .set_attribute(KeyValue::new("fenfa.service", service.clone()));
        if !agency.is_empty() {
            self.server
                .set_attribute(KeyValue::new("fenfa.agency", agency.clone()));
        }
    }

    /// A child of the server span, named `name` if it is recorded (`placeholder` until then).
    fn child(
        &self,
        tracing: &Tracing,
        placeholder: &'static str,
        name: impl FnOnce() -> String,
        kind: SpanKind,
    ) -> Span {
        let parent = Context::new().with_remote_span_context(self.server.span_context().clone());
        let mut span = SpanBuilder::from_name(placeholder)
            .with_kind(kind)
            .start_with_context(&tracing.tracer, &parent);
        if span.is_recording() {
            span.update_name(name());
        }
        span
    }

    /// An upstream attempt begins (its target is picked): a client span, ending the previous
    /// attempt's if it is still open.
    pub fn upstream_attempt(
        &mut self,
        tracing: &Tracing,
        method: &http::Method,
        service: &Arc<str>,
        target: &str,
        attempt: u32,
    ) {
        if let Some(mut previous) = self.upstream.take() {
            previous.end();
        }
        let mut span = self.child(
            tracing,
            "upstream",
            || format!("upstream {service}"),
            SpanKind::Client,
        );
        if span.is_recording() {
            let (host, port) = match target.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<i64>().ok()),
                None => (target, None),
            };
            span.set_attributes([
                KeyValue::new("http.request.method", method_name(method)),
                KeyValue::new("server.address", host.trim_matches(['[', ']']).to_string()),
                KeyValue::new("fenfa.service", service.clone()),
                KeyValue::new("fenfa.upstream", target.to_string()),
                KeyValue::new("fenfa.attempt", i64::from(attempt)),
            ]);
            if let Some(p) = port {
                span.set_attribute(KeyValue::new("server.port", p));
            }
        }
        self.upstream = Some(span);
    }

    /// The current attempt failed with the gateway error `code` (`upstream_error`, …): its span
    /// ends as an error.
    pub fn upstream_failed(&mut self, code: &'static str) {
        if let Some(mut span) = self.upstream.take() {
            span.set_attribute(KeyValue::new("error.type", code));
            span.set_status(Status::error(code));
            span.end();
        }
    }

    /// The upstream answered with `status` (the span stays open while the body streams).
    pub fn upstream_status(&mut self, status: u16) {
        if let Some(span) = self.upstream.as_mut() {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 400 {
                span.set_status(Status::error(format!("upstream answered {status}")));
            }
        }
    }

    /// Sets `traceparent` (and `tracestate`, if the trace has one) on the upstream request,
    /// naming the current attempt's client span (the server span if there is none).
    pub fn inject(&self, tracing: &Tracing, upstream: &mut RequestHeader) {
        let sc = match &self.upstream {
            Some(span) => span.span_context(),
            None => self.server.span_context(),
        };
        let cx = Context::new().with_remote_span_context(sc.clone());
        tracing
            .propagator
            .inject_context(&cx, &mut UpstreamHeaders(upstream));
    }

    /// A span for plugin `name`'s call-out; end it with [`plugin_done`].
    pub fn plugin_call(&self, tracing: &Tracing, name: &'static str) -> Span {
        let mut span = self.child(
            tracing,
            "plugin",
            || format!("plugin {name}"),
            SpanKind::Internal,
        );
        span.set_attribute(KeyValue::new("fenfa.plugin", name));
        span
    }

    /// Ends the request: the status and who the caller was. `denied_by` is the plugin that
    /// answered, `error` the gateway's error code, if any.
    pub fn finish(
        mut self: Box<Self>,
        status: u16,
        identity: Option<&fenfa_plugins::Identity>,
        denied_by: Option<&'static str>,
        error: Option<&'static str>,
    ) {
        if let Some(mut span) = self.upstream.take() {
            span.end();
        }
        let span = &mut self.server;
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if let Some(id) = identity {
                span.set_attribute(KeyValue::new("fenfa.channel", id.channel.clone()));
                span.set_attribute(KeyValue::new("fenfa.app", id.app.clone()));
            }
            if let Some(plugin) = denied_by {
                span.set_attribute(KeyValue::new("fenfa.denied_by", plugin));
            }
            if let Some(code) = error {
                span.set_attribute(KeyValue::new("fenfa.code", code));
            }
            // Server spans: 5xx are errors, 4xx are the client's (OpenTelemetry's HTTP conventions).
            if status >= 500 {
                let code = error.unwrap_or("server_error");
                span.set_attribute(KeyValue::new("error.type", code));
                span.set_status(Status::error(code));
            }
        }
        span.end();
    }
}

/// The method as a span name or attribute: the standard ones without an allocation.
fn method_name(m: &http::Method) -> Cow<'static, str> {
    use http::Method;
    Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return Cow::Owned(m.as_str().to_string()),
    })
}

/// Ends a plugin call's span with its outcome (`ok`, `denied`, `error`, `timeout`).
pub fn plugin_done(mut span: Span, outcome: &'static str) {
    span.set_attribute(KeyValue::new("fenfa.plugin.outcome", outcome));
    if matches!(outcome, "error" | "timeout") {
        span.set_status(Status::error(outcome));
    }
    span.end();
}

/// The upstream request's head as the W3C propagator writes it.
struct UpstreamHeaders<'a>(&'a mut RequestHeader);

impl Injector for UpstreamHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let Err(e) = self.0.insert_header(key.to_string(), value) {
            tracing::debug!(header = key, error = %e, "cannot set a trace context header");
        }
    }
}

/// The exporter's HTTP client: `fenfa-net` on its own runtime, with the configured headers.
/// Logs when export starts failing (once, with the reason) and when it works again.
#[derive(Debug)]
struct Collector {
    endpoint: fenfa_net::Endpoint,
    /// `tracing.headers`, values marked sensitive.
    headers: HeaderMap,
    timeout: Duration,
    rt: tokio::runtime::Handle,
    failing: Arc<AtomicBool>,
}

impl Collector {
    fn failed(&self, why: &str) {
        if !self.failing.swap(true, Relaxed) {
            tracing::warn!(endpoint = %self.endpoint.url, error = why,
                "tracing: cannot export spans to the collector; retrying (spans past tracing.queue_spans are dropped)");
        }
    }

    fn worked(&self) {
        if self.failing.swap(false, Relaxed) {
            tracing::info!(endpoint = %self.endpoint.url, "tracing: span export works again");
        }
    }
}

#[async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut headers = parts.headers;
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        let endpoint = self.endpoint.clone();
        let url = endpoint.url.clone();
        let timeout = self.timeout;
        // The SDK's processor thread awaits this without a tokio runtime: the request runs on
        // fenfa-net's, and only its outcome crosses over.
        let sent = self
            .rt
            .spawn(async move {
                endpoint
                    .request(parts.method, url, headers, body.to_vec(), timeout)
                    .await
            })
            .await;
        let answer = match sent {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                return Err(Box::new(e));
            }
            Err(e) => {
                let why = format!("the export task failed: {e}");
                self.failed(&why);
                return Err(why.into());
            }
        };
        if (200..300).contains(&answer.status) {
            self.worked();
        } else {
            self.failed(&format!(
                "the collector answered {}: {}",
                answer.status,
                answer.excerpt()
            ));
        }
        let mut response = Response::builder()
            .status(answer.status)
            .body(Bytes::from(answer.body))?;
        *response.headers_mut() = answer.headers;
        Ok(response)
    }
}
