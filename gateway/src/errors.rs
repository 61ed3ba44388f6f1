//! Errors the gateway itself answers with, in the one JSON shape of `shared/DESIGN.md`:
//! `{"error":{"code":"…","message":"…","request_id":"…"}}`.

use http::StatusCode;

/// One gateway-produced error: status, machine code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
}

impl GatewayError {
    pub const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }
}

/// Strict audit mode, queue full: the request is refused rather than served unrecorded.
pub const AUDIT_UNAVAILABLE: GatewayError = GatewayError::new(
    StatusCode::SERVICE_UNAVAILABLE,
    "audit_unavailable",
    "the audit trail cannot take more records right now; try again shortly",
);

pub const NOT_FOUND: GatewayError = GatewayError::new(
    StatusCode::NOT_FOUND,
    "route_not_found",
    "no route matches this request",
);
pub const METHOD_NOT_ALLOWED: GatewayError = GatewayError::new(
    StatusCode::METHOD_NOT_ALLOWED,
    "method_not_allowed",
    "the route does not accept this method",
);
pub const BAD_GATEWAY: GatewayError = GatewayError::new(
    StatusCode::BAD_GATEWAY,
    "upstream_error",
    "the upstream could not be reached or failed",
);
/// A response-body plugin could not check the upstream's response (over its limit under the
/// `reject` policy, an encoding it cannot read, or a body that does not decode).
pub const RESPONSE_UNCHECKED: GatewayError = GatewayError::new(
    StatusCode::BAD_GATEWAY,
    "response_unchecked",
    "the upstream's response could not be checked by the route's plugins",
);
pub const UPSTREAM_TIMEOUT: GatewayError = GatewayError::new(
    StatusCode::GATEWAY_TIMEOUT,
    "upstream_timeout",
    "the upstream did not answer in time",
);
pub const NO_HEALTHY_UPSTREAM: GatewayError = GatewayError::new(
    StatusCode::SERVICE_UNAVAILABLE,
    "no_healthy_upstream",
    "no healthy upstream target is available",
);
pub const NOT_READY: GatewayError = GatewayError::new(
    StatusCode::SERVICE_UNAVAILABLE,
    "not_ready",
    "the gateway has no configuration yet",
);
pub const INTERNAL: GatewayError = GatewayError::new(
    StatusCode::INTERNAL_SERVER_ERROR,
    "internal_error",
    "the gateway failed to handle the request",
);
pub const BAD_REQUEST: GatewayError = GatewayError::new(
    StatusCode::BAD_REQUEST,
    "bad_request",
    "the request is malformed",
);

/// The client did not send its request (usually its body) in time. Never counted against an
/// upstream target.
pub const REQUEST_TIMEOUT: GatewayError = GatewayError::new(
    StatusCode::REQUEST_TIMEOUT,
    "request_timeout",
    "the client was too slow to send the request",
);

/// Renders the JSON body. `message` and `request_id` are escaped.
pub fn json_body(code: &str, message: &str, request_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + code.len() + message.len() + request_id.len());
    out.extend_from_slice(b"{\"error\":{\"code\":");
    push_json_str(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    push_json_str(&mut out, message);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(&mut out, request_id);
    out.extend_from_slice(b"}}");
    out
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping is exact and fast; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_valid_json_in_the_documented_shape() {
        let b = json_body("bad_request", "quote \" and \n newline", "r1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
        assert_eq!(v["error"]["message"], "quote \" and \n newline");
        assert_eq!(v["error"]["request_id"], "r1");
    }
}
