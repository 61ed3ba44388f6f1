//! The audit trail's counters, shared by its writer, shipper and exporter threads and read by the
//! gateway's `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// One delivery stream's counters: shipping to the control plane, or OTLP export.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Records the receiver accepted.
    pub delivered: AtomicU64,
    /// Failed delivery attempts (each retried).
    pub failures: AtomicU64,
    /// Records the receiver refused for good and will not get again (they stay on disk).
    pub refused: AtomicU64,
    /// Bytes of segments after the stream's cursor, not yet delivered: the backlog on disk,
    /// measured each time the shipper looks for records (every batch, or every `interval`
    /// when caught up). 0 when the stream is not configured.
    pub backlog_bytes: AtomicU64,
}

/// Audit trail counters (`crate::audit`).
#[derive(Debug, Default)]
pub struct AuditCounters {
    /// Records appended to a segment.
    pub written: AtomicU64,
    /// Records lost because the queue was full or the writer had stopped.
    pub dropped: AtomicU64,
    /// Requests answered 503 in strict mode because the queue was full.
    pub rejected: AtomicU64,
    /// Failed segment writes (each retried).
    pub write_errors: AtomicU64,
    /// Shipping to the control plane's ingest endpoint (`audit.ship`).
    pub ship: Arc<SinkCounters>,
    /// Export to an OpenTelemetry collector (`audit.otlp`).
    pub otlp: Arc<SinkCounters>,
    /// Records queued or reserved, not yet taken by the writer.
    pub queued: AtomicU64,
}
