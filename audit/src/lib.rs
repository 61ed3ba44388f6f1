//! The audit trail: one tamper-evident record per request, on local disk, shipped to the control
//! plane.
//!
//! Why it exists: MLPS level 3 requires that every API call is logged, that the log cannot be
//! changed or shortened unnoticed, that it is kept six months, and that it answers "who called
//! what, from which channel, when, and what happened". `docs/audit.md` is the operator's page.
//!
//! How it fits together, one concept per file:
//! - [`record`]: the record's fields and masking; the proxy hands over borrowed [`Parts`].
//! - [`queue`]: the bounded, never-blocking hand-off (drops counted; strict mode answers 503).
//! - [`writer`]: the one thread that chains, appends, rotates, seals and applies retention.
//! - [`segment`]: segment files, `head.json`, `retention.json`, recovery after a crash.
//! - [`chain`]: the key and the HMAC chain that makes changes, deletions and reordering visible.
//! - [`verify`] and [`query`]: the `fenfa-gateway audit verify|query` commands.
//! - [`sink`] and [`ship`]: at-least-once delivery to the control plane from a persisted cursor;
//!   [`otlp`]: the same to an OpenTelemetry collector, as OTLP logs. Both run as tasks on the
//!   background network runtime (`fenfa_net`), over https or loopback http.
//!
//! What it may not do: block the proxy (the request path only serialises one record into its
//! thread's lane of the queue), record tokens, secrets or query values, or lose a record silently
//! (every drop is counted in `/metrics` and logged).

pub mod chain;
pub mod counters;
pub mod json;
pub mod otlp;
pub mod query;
pub mod queue;
pub mod record;
pub mod segment;
pub mod ship;
pub mod sink;
pub mod time;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use queue::Slot;
pub use record::{Decision, Parts, Recorder};

use crate::counters::AuditCounters;
use fenfa_config::model::AuditSettings;

/// Strict mode, queue full: the request must be refused rather than served unrecorded (the
/// gateway answers `503 audit_unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot take more records right now")]
pub struct QueueFull;

/// File name of the default chain key inside the data dir.
pub const KEY_FILE: &str = "audit.key";

/// The audit directory for these settings.
pub fn dir(settings: &AuditSettings, data_dir: &Path) -> PathBuf {
    settings
        .dir
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("audit"))
}

/// The key file for these settings.
pub fn key_path(settings: &AuditSettings, data_dir: &Path) -> PathBuf {
    settings
        .key_file
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join(KEY_FILE))
}

/// The gateway's handle on the audit trail. Empty (every call a no-op) until [`Audit::start`],
/// and forever when auditing is disabled.
#[derive(Default)]
pub struct Audit {
    live: OnceLock<Live>,
    threads: Mutex<Option<Threads>>,
}

struct Live {
    queue: Arc<queue::Queue>,
    recorder: Recorder,
}

struct Threads {
    writer: JoinHandle<()>,
    shippers: Vec<ship::Shipper>,
}

impl Audit {
    /// Opens the trail (recovering it after a crash), starts the writer and, if configured, the
    /// shipper. Does nothing when `settings.enabled` is false. Call once.
    pub fn start(
        &self,
        settings: &AuditSettings,
        data_dir: &Path,
        node: &str,
        counters: Arc<AuditCounters>,
    ) -> Result<(), String> {
        if !settings.enabled {
            tracing::warn!(
                "audit trail DISABLED (audit.enabled: false): requests are not recorded"
            );
            return Ok(());
        }
        validate(settings)?;
        let recorder = Recorder::new(node, settings)?;
        let dir = dir(settings, data_dir);
        let key_path = key_path(settings, data_dir);
        let key = Arc::new(
            if settings.key_file.is_some() {
                chain::Key::load(&key_path)?
            } else {
                chain::Key::load_or_create(&key_path)?
            }
            .with_algorithm(settings.chain),
        );
        let trail = writer::Trail::open(&dir, key.clone(), node)?;
        let policy = writer::Policy {
            max_bytes: settings.segment_max_bytes,
            max_age: settings.segment_max_age.0,
            retention: Duration::from_secs(u64::from(settings.retention_days) * 86_400),
            fsync_interval: settings.fsync_interval.0,
        };
        // One shipper per configured sink, each with its own cursor; retention waits for all.
        let mut shippers = Vec::new();
        let mut shipped = Vec::new();
        let mut spawn = |sink: Box<dyn sink::Sink>,
                         policy: ship::Policy,
                         sink_counters: &Arc<crate::counters::SinkCounters>|
         -> Result<(), String> {
            let through = Arc::new(AtomicU64::new(0));
            let name = sink.name().to_string();
            shippers.push(
                ship::Shipper::spawn(
                    dir.clone(),
                    node.to_string(),
                    sink,
                    policy,
                    sink_counters.clone(),
                    through.clone(),
                )
                .map_err(|e| format!("cannot start the audit shipper ({name}): {e}"))?,
            );
            shipped.push(through);
            Ok(())
        };
        if let Some(s) = &settings.ship {
            let token = match (&s.token, &s.token_file) {
                (_, Some(file)) => std::fs::read_to_string(file)
                    .map_err(|e| format!("audit.ship.token_file: cannot read {file}: {e}"))?
                    .trim()
                    .to_string(),
                (Some(t), None) => t.clone(),
                (None, None) => return Err("audit.ship: set `token_file` (or `token`)".into()),
            };
            let sink = sink::HttpSink::new(s, token).map_err(|e| e.to_string())?;
            spawn(
                Box::new(sink),
                ship::Policy {
                    batch_records: s.batch_records,
                    interval: s.interval.0,
                    backoff_max: s.backoff_max.0,
                },
                &counters.ship,
            )?;
        }
        if let Some(o) = &settings.otlp {
            let sink =
                otlp::OtlpSink::new(o, node, counters.otlp.clone()).map_err(|e| e.to_string())?;
            spawn(
                Box::new(sink),
                ship::Policy {
                    batch_records: o.batch_records,
                    interval: o.interval.0,
                    backoff_max: o.backoff_max.0,
                },
                &counters.otlp,
            )?;
        }
        let queue = queue::Queue::new(settings.queue_capacity, settings.strict, counters.clone());
        let seq = trail.seq();
        let for_writer = queue.clone();
        let writer = std::thread::Builder::new()
            .name("fenfa-audit-writer".into())
            .spawn(move || writer::run(trail, for_writer, policy, counters, shipped))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        if self.live.set(Live { queue, recorder }).is_err() {
            return Err("the audit trail is already started".into());
        }
        *self.threads.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Threads { writer, shippers });
        tracing::info!(dir = %dir.display(), key = %key.id, seq, strict = settings.strict,
            shipping = settings.ship.as_ref().map_or("off", |s| s.url.as_str()),
            otlp = settings.otlp.as_ref().map_or("off", |o| o.url.as_str()), "audit trail open");
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.live.get().is_some()
    }

    /// Request phase: in strict mode, reserves room for this request's record or says the
    /// request must be refused ([`QueueFull`]). Otherwise `Ok(None)` at once.
    #[inline]
    pub fn admit(&self) -> Result<Option<Slot>, QueueFull> {
        match self.live.get() {
            Some(l) if l.queue.strict() => l.queue.admit().map(Some).ok_or(QueueFull),
            _ => Ok(None),
        }
    }

    /// Log phase: records a finished request. Never blocks; if there is no room the record is
    /// dropped and counted.
    #[inline]
    pub fn record(&self, slot: Option<Slot>, parts: &Parts<'_>) {
        let Some(l) = self.live.get() else { return };
        l.queue
            .push(slot, |out| l.recorder.encode_now_into(parts, out));
    }

    /// Writes everything queued, seals the active segment, fsyncs, and stops the threads. Waits
    /// at most `timeout` for the writer. Safe to call from several threads: the first does the
    /// work, the others wait for it.
    pub fn shutdown(&self, timeout: Duration) {
        let Some(l) = self.live.get() else { return };
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = threads.take() else { return };
        let (tx, rx) = std::sync::mpsc::channel();
        l.queue.request_stop(tx);
        t.writer.thread().unpark();
        if rx.recv_timeout(timeout).is_ok() {
            let _ = t.writer.join();
        } else {
            tracing::error!(
                ?timeout,
                "the audit writer did not finish in time; records still queued are lost"
            );
        }
        for s in t.shippers {
            s.stop();
        }
    }
}

/// Checks the `audit:` section; the error starts with the field path (`audit.x: …`). The
/// compiler calls it too, so `check` and reloads reject what the next start would refuse.
/// [`validate`], with the error as a config error naming the field (`audit.ship.url`, …).
pub fn check(s: &AuditSettings) -> Result<(), fenfa_config::ConfigError> {
    use fenfa_config::ConfigError;
    validate(s).map_err(|e| match e.split_once(": ") {
        Some((path, msg)) if path.starts_with("audit.") && !path.contains(' ') => {
            ConfigError::at(path, msg)
        }
        _ => ConfigError::at("audit", e),
    })
}

pub fn validate(s: &AuditSettings) -> Result<(), String> {
    if s.queue_capacity == 0 || s.queue_capacity > 10_000_000 {
        return Err("audit.queue_capacity: expected 1 to 10000000".into());
    }
    if s.segment_max_bytes == 0 {
        return Err("audit.segment_max_bytes: expected at least 1".into());
    }
    if s.retention_days == 0 {
        return Err("audit.retention_days: expected at least 1 (MLPS level 3 asks for 180)".into());
    }
    if s.retention_days < 180 {
        tracing::warn!(
            days = s.retention_days,
            "audit.retention_days is below the 180 days MLPS level 3 requires"
        );
    }
    if s.fsync_interval.0.is_zero() {
        return Err("audit.fsync_interval must be above zero".into());
    }
    if let Some(ship) = &s.ship {
        if ship.batch_records == 0 || ship.batch_records > 10_000 {
            return Err(
                "audit.ship.batch_records: expected 1 to 10000 (the control plane's batch limit)"
                    .into(),
            );
        }
        fenfa_net::validate(&sink::settings(ship)).map_err(|e| e.to_string())?;
    }
    if let Some(o) = &s.otlp {
        otlp::validate(o).map_err(|e| e.to_string())?;
    }
    Ok(())
}
