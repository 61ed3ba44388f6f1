//! `request-size-limit`: refuse request bodies larger than a limit with 413.
//!
//! Config: `{ "max_body_bytes": <u64> }`. Two checks, so a large body is refused as early as
//! possible:
//!
//! - request phase: a `Content-Length` over the limit is refused before any of the body is read;
//! - request-body phase: a body without a length (chunked) is counted as it streams in and
//!   refused as soon as the running total passes the limit (also guards a body that turns out
//!   longer than its declared length, should the HTTP layer let one through).
//!
//! Refusals are 413 `payload_too_large`. A `Content-Length` that is not a number is left to the
//! gateway's framing checks. See `docs/plugins/request-size-limit.md`.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;

use crate::contract::{Flow, Plugin, PluginFactory, Reply, RequestCtx, RequestView, SchemaError};

/// After authentication (a caller must be known before anything else is judged), before the
/// concurrency limit (1010) and the rate limit (1000): an oversized request neither takes a
/// concurrency slot nor spends rate-limit budget.
pub const PRIORITY: i32 = 1020;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Largest request body accepted, in bytes. `0` allows no body at all.
    max_body_bytes: u64,
}

#[derive(Debug)]
pub struct RequestSizeLimit {
    max_body_bytes: u64,
}

impl RequestSizeLimit {
    fn too_large(&self) -> Flow {
        Flow::Respond(Reply::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than the limit of {} bytes",
                self.max_body_bytes
            ),
        ))
    }
}

impl Plugin for RequestSizeLimit {
    fn name(&self) -> &'static str {
        "request-size-limit"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn request(&self, req: &RequestView<'_>, _ctx: &mut RequestCtx) -> Flow {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(n) if n > self.max_body_bytes => self.too_large(),
            _ => Flow::Continue,
        }
    }

    fn request_body(&self, _ctx: &mut RequestCtx, _chunk: &[u8], total: u64, _end: bool) -> Flow {
        if total > self.max_body_bytes {
            self.too_large()
        } else {
            Flow::Continue
        }
    }
}

pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "request-size-limit"
    }

    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Plugin>, SchemaError> {
        let c: Config = SchemaError::parse(config)?;
        Ok(Arc::new(RequestSizeLimit {
            max_body_bytes: c.max_body_bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(max: u64) -> Arc<dyn Plugin> {
        Factory.build(&json!({ "max_body_bytes": max })).unwrap()
    }

    fn request(p: &Arc<dyn Plugin>, content_length: Option<&str>) -> Option<Reply> {
        let mut headers = http::HeaderMap::new();
        if let Some(v) = content_length {
            headers.insert(http::header::CONTENT_LENGTH, v.parse().unwrap());
        }
        let req = RequestView {
            method: &http::Method::POST,
            path: "/upload",
            query: None,
            headers: &headers,
            client_ip: [127, 0, 0, 1].into(),
            tls: false,
        };
        match p.request(&req, &mut RequestCtx::default()) {
            Flow::Continue => None,
            Flow::Respond(r) => Some(r),
        }
    }

    fn body(p: &Arc<dyn Plugin>, total: u64, end: bool) -> Option<Reply> {
        match p.request_body(&mut RequestCtx::default(), &[], total, end) {
            Flow::Continue => None,
            Flow::Respond(r) => Some(r),
        }
    }

    #[test]
    fn content_length_over_the_limit_is_refused_with_413_before_the_body() {
        let r = request(&build(1000), Some("1001")).expect("refused");
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.code, "payload_too_large");
        assert!(r.message.contains("1000 bytes"), "{}", r.message);
    }

    #[test]
    fn content_length_at_the_limit_passes() {
        assert!(request(&build(1000), Some("1000")).is_none());
        assert!(request(&build(1000), Some("0")).is_none());
    }

    #[test]
    fn request_without_content_length_passes_the_request_phase() {
        assert!(request(&build(10), None).is_none());
    }

    #[test]
    fn unparsable_content_length_is_left_to_the_gateway() {
        assert!(request(&build(10), Some("lots")).is_none());
    }

    #[test]
    fn streamed_body_is_refused_once_the_running_total_passes_the_limit() {
        let p = build(100);
        assert!(body(&p, 60, false).is_none());
        assert!(body(&p, 100, false).is_none());
        let r = body(&p, 101, false).expect("refused");
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.code, "payload_too_large");
    }

    #[test]
    fn streamed_body_within_the_limit_passes_to_the_end() {
        let p = build(100);
        assert!(body(&p, 100, true).is_none());
    }

    #[test]
    fn zero_limit_allows_only_an_empty_body() {
        let p = build(0);
        assert!(request(&p, Some("0")).is_none());
        assert!(body(&p, 0, true).is_none());
        assert!(request(&p, Some("1")).is_some());
        assert!(body(&p, 1, false).is_some());
    }

    #[test]
    fn missing_limit_is_a_config_error() {
        let e = Factory.build(&json!({})).unwrap_err();
        assert!(e.message.contains("missing field `max_body_bytes`"), "{e}");
    }

    #[test]
    fn negative_or_textual_limit_is_reported_at_its_field() {
        for bad in [
            json!({"max_body_bytes": -1}),
            json!({"max_body_bytes": "1MB"}),
        ] {
            let e = Factory.build(&bad).unwrap_err();
            assert_eq!(e.path, "max_body_bytes", "{e}");
        }
    }
}
