//! The plugins' async request phase: budgets, failure policies and their metrics.
//!
//! Why a module of its own: the proxy calls [`request_async`] from `request_filter` only on
//! routes whose chain has an async plugin ([`Chain::calls_out`]); everything about bounding the
//! calls lives here. Each call runs on the proxy's own runtime (the request's task awaits it; no
//! blocking thread), inside `tokio::time::timeout(budget)`: when the budget is spent the future
//! is dropped, which cancels the call. An error or a timeout applies the plugin's fallback
//! ([`fenfa_plugins::Plugin::request_fallback`]) if it has one, else its declared failure policy.
//! Every call is counted in `fenfa_plugin_calls_total{plugin,outcome}` and, with tracing on, is a
//! span of its own (`plugin {name}`, child of the request's server span, with its outcome).
//!
//! What it may not do: run anything for routes without async plugins, or let one request's
//! slow call hold up any other request (each request awaits only its own calls).

use fenfa_plugins::{Chain, Flow, OnFailure, Reply, RequestCtx, RequestView};

use crate::metrics::{CallOutcome, Metrics};
use crate::otel::{RequestTrace, Tracing};

/// Runs the async phase of every plugin in `chain` that declares one, in priority order.
/// Returns the plugin and reply that answer the request, if one does.
pub async fn request_async(
    chain: &Chain,
    view: &RequestView<'_>,
    ctx: &mut RequestCtx,
    metrics: &Metrics,
    trace: Option<(&Tracing, &RequestTrace)>,
) -> Option<(&'static str, Reply)> {
    for p in chain.iter() {
        let Some(call) = p.call_out() else {
            continue;
        };
        let span = trace.map(|(t, r)| r.plugin_call(t, p.name()));
        let outcome = tokio::time::timeout(call.budget, p.request_async(view, ctx)).await;
        if let Some(span) = span {
            let name = match &outcome {
                Ok(Ok(Flow::Continue)) => "ok",
                Ok(Ok(Flow::Respond(_))) => "denied",
                Ok(Err(_)) => "error",
                Err(_) => "timeout",
            };
            crate::otel::plugin_done(span, name);
        }
        let failed = match outcome {
            Ok(Ok(Flow::Continue)) => {
                metrics.plugin_calls.inc(p.name(), CallOutcome::Ok);
                continue;
            }
            Ok(Ok(Flow::Respond(reply))) => {
                metrics.plugin_calls.inc(p.name(), CallOutcome::Denied);
                return Some((p.name(), reply));
            }
            Ok(Err(e)) => {
                metrics.plugin_calls.inc(p.name(), CallOutcome::Error);
                tracing::warn!(plugin = p.name(), request_id = %ctx.request_id, error = %e, "plugin call failed");
                true
            }
            Err(_) => {
                metrics.plugin_calls.inc(p.name(), CallOutcome::Timeout);
                tracing::warn!(plugin = p.name(), request_id = %ctx.request_id, budget_ms = call.budget.as_millis() as u64, "plugin call ran out of its budget");
                true
            }
        };
        if failed {
            // The plugin's own fallback (e.g. local rate limits) comes before its policy.
            match p.request_fallback(view, ctx) {
                Some(Flow::Continue) => continue,
                Some(Flow::Respond(reply)) => return Some((p.name(), reply)),
                None => {}
            }
            if let OnFailure::Closed(reply) = call.on_failure {
                return Some((p.name(), reply));
            }
        }
    }
    None
}
