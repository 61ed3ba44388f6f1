//! Request-body bytes for plugins: the streaming per-chunk phase and the opt-in buffered phase.
//!
//! Why a module of its own: the proxy (`proxy.rs`) calls [`on_request_chunk`] from pingora's
//! `request_body_filter` and keeps no body logic itself. When a route's chain declares
//! [`BodyNeed::Buffer`](fenfa_plugins::BodyNeed) (its [`Chain::body_limit`] is set), the chunks
//! are held back (pingora is handed empty chunks, which it does not send) until the body ends or
//! grows past the limit; then the buffering plugins see the exact bytes and the whole body is
//! forwarded unchanged in one piece (pingora re-frames it for the upstream: `Content-Length` is
//! kept, chunked stays chunked). Over the limit the chain's policy applies: 413 if any buffering
//! plugin declared `Reject`, else everything held back is forwarded, the rest streams, and the
//! request is marked `body_uninspected`.
//!
//! What it may not do: allocate, copy or hold anything on a route whose chain buffers nothing
//! (then only the per-chunk `request_body` calls run, as before), wait on anything, or change a
//! byte of the body.

use bytes::{Bytes, BytesMut};
use fenfa_plugins::{BodyNeed, Chain, Flow, OverLimit, Reply, RequestCtx};
use http::StatusCode;

/// Per-request body state (lives in the proxy's `Ctx`; empty and allocation-free until a
/// buffering chain sees its first chunk).
#[derive(Debug, Default)]
pub struct RequestBody {
    /// Bytes received so far.
    total: u64,
    /// Bytes held back for the buffering plugins.
    held: BytesMut,
    /// The body outgrew the limit and now streams through uninspected.
    passing: bool,
}

/// A plugin answered during the body phases: which plugin, and its reply.
#[derive(Debug)]
pub struct Denial {
    pub plugin: &'static str,
    pub reply: Reply,
}

/// Runs the body phases for one chunk (`body` is what pingora will forward; it may be replaced).
pub fn on_request_chunk(
    chain: &Chain,
    state: &mut RequestBody,
    ctx: &mut RequestCtx,
    body: &mut Option<Bytes>,
    end: bool,
) -> Result<(), Denial> {
    let chunk: &[u8] = body.as_deref().unwrap_or(&[]);
    state.total += chunk.len() as u64;
    for p in chain.iter() {
        if let Flow::Respond(reply) = p.request_body(ctx, chunk, state.total, end) {
            return Err(Denial {
                plugin: p.name(),
                reply,
            });
        }
    }
    let Some(limit) = chain.body_limit() else {
        return Ok(());
    };
    if state.passing {
        return Ok(());
    }
    if let Some(chunk) = body.as_ref() {
        state.held.extend_from_slice(chunk);
    }
    if state.held.len() > limit {
        if chain.rejects_over_limit() {
            return Err(over_limit_denial(chain, state.held.len()));
        }
        state.passing = true;
        ctx.body_uninspected = true;
        *body = Some(std::mem::take(&mut state.held).freeze());
        return Ok(());
    }
    if !end {
        // Hold the chunk back: pingora does not forward an empty chunk before the end.
        *body = Some(Bytes::new());
        return Ok(());
    }
    let full = std::mem::take(&mut state.held).freeze();
    for p in chain.iter() {
        let BodyNeed::Buffer { limit, over_limit } = p.request_body_need() else {
            continue;
        };
        if full.len() > limit {
            match over_limit {
                OverLimit::Reject => {
                    return Err(Denial {
                        plugin: p.name(),
                        reply: too_large(limit),
                    })
                }
                OverLimit::PassUninspected => ctx.body_uninspected = true,
            }
            continue;
        }
        if let Flow::Respond(reply) = p.request_body_buffered(ctx, &full) {
            return Err(Denial {
                plugin: p.name(),
                reply,
            });
        }
    }
    // An empty body stays `None` (pingora then ends the upstream body as it would have).
    *body = if full.is_empty() && body.is_none() {
        None
    } else {
        Some(full)
    };
    Ok(())
}

/// The 413 of the first buffering plugin that rejects a body of `len` bytes.
fn over_limit_denial(chain: &Chain, len: usize) -> Denial {
    for p in chain.iter() {
        if let BodyNeed::Buffer {
            limit,
            over_limit: OverLimit::Reject,
        } = p.request_body_need()
        {
            if len > limit {
                return Denial {
                    plugin: p.name(),
                    reply: too_large(limit),
                };
            }
        }
    }
    Denial {
        plugin: "gateway",
        reply: too_large(chain.body_limit().unwrap_or(0)),
    }
}

fn too_large(limit: usize) -> Reply {
    Reply::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}
