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

/// A new random request id: 32 lowercase hex characters.
pub fn new_request_id() -> String {
    hex128(fastrand::u128(..))
}

fn hex128(v: u128) -> String {
    format!("{v:032x}")
}

/// The `traceparent` to send upstream when tracing is off: same trace, new span id (which no
/// trace backend receives). With `tracing:` on, `otel.rs` names an exported span instead.
pub fn next_traceparent(incoming: Option<&[u8]>) -> String {
    let span = loop {
        let s = fastrand::u64(..);
        if s != 0 {
            break s;
        }
    };
    if let Some((trace, flags)) = incoming.and_then(parse_traceparent) {
        return format!("00-{trace}-{span:016x}-{flags}");
    }
    let trace = loop {
        let t = fastrand::u128(..);
        if t != 0 {
            break t;
        }
    };
    format!("00-{trace:032x}-{span:016x}-01")
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
        assert_eq!(new_request_id().len(), 32);
    }
}
