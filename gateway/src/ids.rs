//! Request ids and W3C trace context.
//!
//! A client's `X-Request-Id` is kept when it is a safe token: 1–128 characters of
//! `[A-Za-z0-9._:-]` (UUIDs, ULIDs and the usual `svc-123.4` shapes). Anything else
//! (`<script>x</script>`, spaces, quotes) is replaced by one the gateway makes, so no client text
//! is echoed in a response header or stored as a request id; the client's value is kept,
//! sanitised by [`sanitize_client_id`], in the audit record's `client_request_id`. A valid `traceparent` keeps its trace id and gets a new parent
//! (span) id, as a participating hop should; an absent or malformed one starts a new trace.

/// Longest client request id kept.
pub const MAX_REQUEST_ID: usize = 128;

fn safe_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// Returns the client's request id if it has the safe shape.
pub fn accept_request_id(value: &[u8]) -> Option<&str> {
    if value.is_empty() || value.len() > MAX_REQUEST_ID || !value.iter().all(|&b| safe_id_byte(b)) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// A refused client request id as the audit record keeps it: every byte outside the safe shape
/// becomes `_`, cut to [`MAX_REQUEST_ID`] bytes. Empty when the client sent an empty value.
pub fn sanitize_client_id(value: &[u8]) -> String {
    value
        .iter()
        .take(MAX_REQUEST_ID)
        .map(|&b| if safe_id_byte(b) { b as char } else { '_' })
        .collect()
}

/// An id made by the gateway, on the stack: `N` ASCII bytes (lowercase hex and `-`). Request
/// ids and `traceparent` values are made for every request; building them here and turning
/// them into a header value once costs one allocation, where `format!` and a header insert
/// from `&str` cost two and the formatting machinery.
#[derive(Clone, Copy)]
pub struct AsciiId<const N: usize>([u8; N]);

impl<const N: usize> AsciiId<N> {
    pub fn as_str(&self) -> &str {
        // Only hex digits and `-` are ever written into it.
        std::str::from_utf8(&self.0).expect("ids are ASCII")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a header value (one allocation; the bytes are always a valid value).
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.0).expect("ids are visible ASCII")
    }
}

/// A new random request id: 32 lowercase hex characters.
pub fn new_request_id() -> AsciiId<32> {
    let mut out = [0u8; 32];
    hex::encode_to_slice(fastrand::u128(..).to_be_bytes(), &mut out).expect("32 hex digits");
    AsciiId(out)
}

/// The `traceparent` to send upstream when tracing is off: same trace, new span id (which no
/// trace backend receives). With `tracing:` on, `otel.rs` names an exported span instead.
pub fn next_traceparent(incoming: Option<&[u8]>) -> AsciiId<55> {
    let span = loop {
        let s = fastrand::u64(..);
        if s != 0 {
            break s;
        }
    };
    // 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    match incoming.and_then(parse_traceparent) {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
        }
        None => {
            let trace = loop {
                let t = fastrand::u128(..);
                if t != 0 {
                    break t;
                }
            };
            hex::encode_to_slice(trace.to_be_bytes(), &mut out[3..35]).expect("32 hex digits");
        }
    }
    hex::encode_to_slice(span.to_be_bytes(), &mut out[36..52]).expect("16 hex digits");
    AsciiId(out)
}

/// Parses `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; returns (trace id, flags).
fn parse_traceparent(v: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| {
        p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if parts.next().is_some()
        || version != "00"
        || !hex(trace, 32)
        || !hex(parent, 16)
        || !hex(flags, 2)
        || trace.bytes().all(|b| b == b'0')
        || parent.bytes().all(|b| b == b'0')
    {
        return None;
    }
    Some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparent_keeps_trace_and_flags_with_new_span() {
        let inc = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = next_traceparent(Some(inc));
        let out = out.as_str();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"));
    }

    #[test]
    fn malformed_traceparent_starts_a_new_trace() {
        for bad in [
            &b"garbage"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let out = next_traceparent(Some(bad));
            let out = out.as_str();
            assert_eq!(out.len(), 55);
            assert!(parse_traceparent(out.as_bytes()).is_some());
        }
    }

    #[test]
    fn request_ids_are_checked() {
        assert_eq!(accept_request_id(b"abc-123"), Some("abc-123"));
        assert_eq!(accept_request_id(b""), None);
        assert_eq!(accept_request_id(b"has space"), None);
        assert_eq!(accept_request_id(&[b'a'; 129]), None);
        let id = new_request_id();
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id.as_str(), new_request_id().as_str());
    }
}
