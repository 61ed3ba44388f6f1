//! Response bodies for plugins: bounded buffering, decoding, rewriting, re-framing.
//!
//! Why a module of its own: the proxy calls [`on_response_head`] from `response_filter` and
//! [`on_response_chunk`] from `response_body_filter`, and keeps no body logic itself.
//!
//! What happens, only on routes whose chain declares a response-body need
//! ([`Chain::response_limit`]) and only for responses that have a body to rewrite (not `HEAD`,
//! `204`, `304`, `1xx`/`101`):
//! - the head keeps the upstream's `Content-Length` when the body arrives unencoded, within
//!   the limit, and every body plugin promises to keep its length
//!   ([`fenfa_plugins::Plugin::response_body_keeps_length`]; `response-masking` does): the head
//!   then leaves with the body in one write. Otherwise it loses `Content-Length` (and
//!   `Content-Encoding` when the gateway decodes) and is sent `Transfer-Encoding: chunked` (to
//!   an HTTP/1.0 client: ended by closing the connection), so any rewrite is framed correctly;
//! - the upstream is asked for `Accept-Encoding: identity` (see `proxy.rs`); an upstream that
//!   still encodes with `gzip`, `deflate` or `br` is decoded here (bounded: decoding stops one
//!   byte past the limit, so a decompression bomb costs at most the limit); any other encoding
//!   is passed untouched and marked uninspected (or aborted under `Reject`);
//! - each body plugin's `response_body_head` runs before the head is sent (pingora sends the
//!   head before the body is in, so a plugin that will replace the body sets its
//!   `Content-Type` there);
//! - the body is held back up to the limit, the plugins rewrite it once, and it goes out in one
//!   chunk; over the limit the chain's policy applies (pass uninspected, or abort).
//!
//! What it may not do: touch a response of a route without response-body plugins (no state, no
//! allocation), or block.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use fenfa_plugins::{BodyNeed, Chain, KeptLength, OverLimit, RequestCtx};
use http::{header, Method};
use pingora::http::ResponseHeader;

/// How the upstream encoded the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

/// Per-request response-body state (allocation-free until a rewritable response starts).
#[derive(Debug, Default)]
pub struct ResponseBody {
    /// This response is being buffered for the plugins.
    active: Option<Encoding>,
    held: BytesMut,
    /// Over the limit under the pass policy: the rest streams untouched.
    passing: bool,
    /// The upstream's `Content-Length`, kept because every body plugin keeps the length.
    kept_length: Option<usize>,
    status: u16,
}

/// Why a response body was aborted.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("the response body is larger than the response-body plugins' limit of {limit} bytes")]
    OverLimit { limit: usize },
    #[error("the response body's content encoding `{0}` cannot be inspected")]
    Unsupported(String),
    #[error("a response-body plugin changed the length of a body sent with Content-Length {kept} (to {got} bytes); the response is aborted")]
    LengthChanged { kept: usize, got: usize },
    #[error("the upstream's {encoding} response body does not decode: {source}")]
    Decode {
        encoding: &'static str,
        source: std::io::Error,
    },
}

/// Decides whether this response is rewritten and fixes its head accordingly.
pub fn on_response_head(
    chain: &Chain,
    method: &Method,
    version: http::Version,
    resp: &mut ResponseHeader,
    state: &mut ResponseBody,
    ctx: &mut RequestCtx,
) -> Result<(), ResponseBodyError> {
    if chain.response_limit().is_none() {
        return Ok(());
    }
    let status = resp.status.as_u16();
    if *method == Method::HEAD || status < 200 || status == 204 || status == 304 {
        return Ok(());
    }
    let encoding = match resp
        .headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.as_bytes())
    {
        None => Encoding::Identity,
        Some(v) if v.eq_ignore_ascii_case(b"identity") => Encoding::Identity,
        Some(v) if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") => {
            Encoding::Gzip
        }
        Some(v) if v.eq_ignore_ascii_case(b"deflate") => Encoding::Deflate,
        Some(v) if v.eq_ignore_ascii_case(b"br") => Encoding::Brotli,
        Some(other) => {
            if chain.response_rejects_over_limit() {
                return Err(ResponseBodyError::Unsupported(
                    String::from_utf8_lossy(other).into_owned(),
                ));
            }
            ctx.body_uninspected = true;
            return Ok(());
        }
    };
    // The upstream's length, when the body arrives as it will be sent and fits the limit.
    let length = match encoding {
        Encoding::Identity => resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| chain.response_limit().is_some_and(|limit| *n <= limit)),
        _ => None,
    };
    resp.remove_header(&header::CONTENT_LENGTH);
    if encoding != Encoding::Identity {
        resp.remove_header(&header::CONTENT_ENCODING);
    }
    state.active = Some(encoding);
    state.status = status;
    state.kept_length = None;
    // The head goes out before the body is in: what a body plugin's rewrite implies for the
    // head (a replaced body's Content-Type, its framing) is decided now.
    let mut edits = crate::proxy::RespEdits(resp);
    let buffering = || {
        chain
            .iter()
            .filter(|p| matches!(p.response_body_need(), BodyNeed::Buffer { .. }))
    };
    for p in buffering() {
        p.response_body_head(ctx, status, &mut edits);
    }
    let keep = length.filter(|_| buffering().all(|p| p.response_body_keeps_length(ctx, status)));
    if let Some(n) = keep {
        // Every rewrite keeps the length: the head keeps it too, and pingora sends it with
        // the body in one write (no chunked framing).
        let _ = resp.insert_header(header::CONTENT_LENGTH, n);
        ctx.vars.insert(KeptLength(n));
        state.kept_length = Some(n);
    } else if version == http::Version::HTTP_10 {
        // Pingora frames the body chunked when the head says so. An HTTP/1.0 client knows no
        // chunked: without a length pingora ends the body by closing the connection.
        resp.remove_header(&header::TRANSFER_ENCODING);
    } else {
        let _ = resp.insert_header(header::TRANSFER_ENCODING, "chunked");
    }
    Ok(())
}

/// Holds back, decodes and rewrites the body; `body` is what pingora sends to the client.
pub fn on_response_chunk(
    chain: &Chain,
    state: &mut ResponseBody,
    ctx: &mut RequestCtx,
    body: &mut Option<Bytes>,
    end: bool,
) -> Result<(), ResponseBodyError> {
    let (Some(encoding), Some(limit)) = (state.active, chain.response_limit()) else {
        return Ok(());
    };
    if state.passing {
        return Ok(());
    }
    if let Some(chunk) = body.take() {
        state.held.extend_from_slice(&chunk);
    }
    if state.held.len() > limit {
        if chain.response_rejects_over_limit() || encoding != Encoding::Identity {
            return Err(ResponseBodyError::OverLimit { limit });
        }
        state.passing = true;
        ctx.body_uninspected = true;
        *body = Some(std::mem::take(&mut state.held).freeze());
        return Ok(());
    }
    if !end {
        return Ok(());
    }
    let held = std::mem::take(&mut state.held);
    let mut decoded = match encoding {
        // The held bytes are the body: no copy.
        Encoding::Identity => Vec::from(held),
        _ => decode(encoding, &held, limit)?,
    };
    if decoded.len() > limit {
        // Only an encoded body gets here; its encoding header is gone, so it cannot pass.
        return Err(ResponseBodyError::OverLimit { limit });
    }
    for p in chain.iter() {
        if let BodyNeed::Buffer {
            limit: own,
            over_limit,
        } = p.response_body_need()
        {
            if decoded.len() <= own {
                p.response_body(ctx, state.status, &mut decoded);
            } else if over_limit == OverLimit::Reject {
                // Within the chain's larger limit but over this plugin's own, which must
                // never let an unchecked body out.
                return Err(ResponseBodyError::OverLimit { limit: own });
            } else {
                ctx.body_uninspected = true;
            }
        }
    }
    if let Some(kept) = state.kept_length {
        if decoded.len() != kept {
            return Err(ResponseBodyError::LengthChanged {
                kept,
                got: decoded.len(),
            });
        }
    }
    *body = Some(Bytes::from(decoded));
    Ok(())
}

/// Decodes at most `limit + 1` bytes (enough to tell that a body is over the limit).
fn decode(encoding: Encoding, raw: &[u8], limit: usize) -> Result<Vec<u8>, ResponseBodyError> {
    let cap = limit as u64 + 1;
    let mut out = Vec::new();
    let result = match encoding {
        Encoding::Identity => {
            out.extend_from_slice(raw);
            Ok(0)
        }
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(raw)
            .take(cap)
            .read_to_end(&mut out),
        Encoding::Deflate => {
            // `deflate` is zlib-wrapped per RFC 9110; some servers send raw deflate.
            match flate2::read::ZlibDecoder::new(raw)
                .take(cap)
                .read_to_end(&mut out)
            {
                Ok(n) => Ok(n),
                Err(_) => {
                    out.clear();
                    flate2::read::DeflateDecoder::new(raw)
                        .take(cap)
                        .read_to_end(&mut out)
                }
            }
        }
        Encoding::Brotli => brotli::Decompressor::new(raw, 4096)
            .take(cap)
            .read_to_end(&mut out),
    };
    result.map_err(|source| ResponseBodyError::Decode {
        encoding: match encoding {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
        },
        source,
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fenfa_plugins::{Plugin, RequestCtx};

    use super::*;

    /// A body plugin that promises to keep the length and may break the promise.
    #[derive(Debug)]
    struct Rewriter {
        keeps: bool,
        append: &'static [u8],
    }

    impl Plugin for Rewriter {
        fn name(&self) -> &'static str {
            "rewriter"
        }
        fn priority(&self) -> i32 {
            0
        }
        fn response_body_need(&self) -> BodyNeed {
            BodyNeed::Buffer {
                limit: 1024,
                over_limit: OverLimit::PassUninspected,
            }
        }
        fn response_body_keeps_length(&self, _ctx: &RequestCtx, _status: u16) -> bool {
            self.keeps
        }
        fn response_body(&self, _ctx: &mut RequestCtx, _status: u16, body: &mut Vec<u8>) {
            body.extend_from_slice(self.append);
        }
    }

    fn respond(
        plugin: Rewriter,
        body: &'static [u8],
    ) -> (ResponseHeader, Result<Bytes, ResponseBodyError>) {
        let chain = Chain::new(vec![Arc::new(plugin) as Arc<dyn Plugin>]);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header(header::CONTENT_LENGTH, body.len())
            .unwrap();
        let (mut state, mut ctx) = (ResponseBody::default(), RequestCtx::default());
        on_response_head(
            &chain,
            &Method::GET,
            http::Version::HTTP_11,
            &mut resp,
            &mut state,
            &mut ctx,
        )
        .unwrap();
        let mut out = Some(Bytes::from_static(body));
        let sent = on_response_chunk(&chain, &mut state, &mut ctx, &mut out, true)
            .map(|()| out.unwrap_or_default());
        (resp, sent)
    }

    #[test]
    fn a_length_kept_by_every_plugin_keeps_the_upstreams_content_length() {
        let (head, sent) = respond(
            Rewriter {
                keeps: true,
                append: b"",
            },
            b"hello",
        );
        assert_eq!(head.headers[header::CONTENT_LENGTH], "5");
        assert!(head.headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(sent.unwrap(), "hello");
    }

    #[test]
    fn a_plugin_that_may_change_the_length_gets_chunked_framing() {
        let (head, sent) = respond(
            Rewriter {
                keeps: false,
                append: b"!",
            },
            b"hello",
        );
        assert!(head.headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(head.headers[header::TRANSFER_ENCODING], "chunked");
        assert_eq!(sent.unwrap(), "hello!");
    }

    #[test]
    fn a_broken_promise_is_not_sent_with_the_wrong_length() {
        let (head, sent) = respond(
            Rewriter {
                keeps: true,
                append: b"!",
            },
            b"hello",
        );
        assert_eq!(head.headers[header::CONTENT_LENGTH], "5");
        assert!(matches!(
            sent,
            Err(ResponseBodyError::LengthChanged { kept: 5, got: 6 })
        ));
    }
}
