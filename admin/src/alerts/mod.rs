//! Abnormal-call detection and alerts (issue 16; docs/alerts.md).
//!
//! Request audit records accepted at ingest (`crate::dataplane::ingest`) are handed to
//! [`Alerts::feed`], which never waits: batches go into a bounded channel, and a full channel
//! drops the batch for detection only (the records are stored all the same; the drops are
//! counted and logged). One detector task ([`run`]) consumes it: the detectors ([`detect`]) turn
//! records into signals, admin-side detectors ([`admin_side`]) read the admin audit trail, and
//! every signal is stored as an alert or folded into the open alert of the same incident
//! ([`store::raise`]). A new alert goes to the delivery task ([`deliver`]) and, if its rule asks
//! for it, to the automatic response ([`respond`]). A third loop lifts expired denies.
//!
//! In a cluster each control-plane process detects on the records it ingests; alerts are
//! deduplicated in the shared database, so two processes that see the same incident (the admin
//! trail, for instance) raise one alert.

pub mod admin_side;
pub mod api;
pub mod deliver;
pub mod detect;
pub mod respond;
pub mod rules;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::app::App;
use detect::{Detector, Record, Signal};
use rules::Settings;

/// Batches waiting for the detector before new ones are dropped (for detection only).
pub const QUEUE_BATCHES: usize = 256;
/// New alerts waiting for delivery.
const DELIVERY_QUEUE: usize = 10_000;
/// How far behind the app clock records may arrive (shipping delay): the detector's clock
/// follows the records, and is moved on to `now - LATE_SECS` when none arrive.
pub const LATE_SECS: i64 = 120;
/// How often the detector looks at the clock, the admin trail and the settings without records.
const TICK: Duration = Duration::from_millis(500);

/// What the tasks are fed through; part of [`App`].
pub struct Alerts {
    records: mpsc::Sender<(i64, Vec<Value>)>,
    deliver: mpsc::Sender<store::AlertRow>,
    dropped: AtomicU64,
    /// Bumped when the settings change, so the detector reloads them at once.
    settings_changed: AtomicU64,
}

/// The receiving ends, handed to [`start`] once the app exists.
pub struct Receivers {
    records: mpsc::Receiver<(i64, Vec<Value>)>,
    deliver: mpsc::Receiver<store::AlertRow>,
}

impl Alerts {
    pub fn new() -> (Alerts, Receivers) {
        let (rtx, rrx) = mpsc::channel(QUEUE_BATCHES);
        let (dtx, drx) = mpsc::channel(DELIVERY_QUEUE);
        (
            Alerts {
                records: rtx,
                deliver: dtx,
                dropped: AtomicU64::new(0),
                settings_changed: AtomicU64::new(0),
            },
            Receivers {
                records: rrx,
                deliver: drx,
            },
        )
    }

    /// Hands newly stored records to the detectors without waiting.
    pub fn feed(&self, received: i64, records: Vec<Value>) {
        if records.is_empty() {
            return;
        }
        if self.records.try_send((received, records)).is_err() {
            let n = self.dropped.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped_batches = n,
                    "the alert detector is behind; a batch was stored but not inspected"
                );
            }
        }
    }

    /// Batches not inspected because the detector was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub fn settings_changed(&self) {
        self.settings_changed.fetch_add(1, Relaxed);
    }
}

/// Starts the detector, delivery and expiry tasks; each ends with the app.
pub fn start(app: &Arc<App>, rx: Receivers) {
    tokio::spawn(run(Arc::downgrade(app), rx.records));
    tokio::spawn(deliver::run(Arc::downgrade(app), rx.deliver));
    tokio::spawn(expire_loop(Arc::downgrade(app)));
}

async fn load_settings(app: &App) -> Settings {
    match store::settings(&app.store.pool).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the alert settings; using the defaults");
            Settings::default()
        }
    }
}

/// The detector task.
async fn run(weak: Weak<App>, mut rx: mpsc::Receiver<(i64, Vec<Value>)>) {
    let mut detector = Detector::new();
    let mut admin = admin_side::AdminDetector::default();
    let (mut settings, mut seen_change, mut admin_seq) = {
        let Some(app) = weak.upgrade() else { return };
        let head = crate::store::audit_head(&app.store.pool)
            .await
            .map(|h| h.0)
            .unwrap_or(0);
        (
            load_settings(&app).await,
            app.alerts.settings_changed.load(Relaxed),
            head,
        )
    };
    let mut loaded = tokio::time::Instant::now();
    loop {
        let got = tokio::time::timeout(TICK, rx.recv()).await;
        let Some(app) = weak.upgrade() else { return };
        let change = app.alerts.settings_changed.load(Relaxed);
        // Another process may have changed them: reread every 10 s as well.
        if change != seen_change || loaded.elapsed() > Duration::from_secs(10) {
            settings = load_settings(&app).await;
            seen_change = change;
            loaded = tokio::time::Instant::now();
        }
        let mut signals: Vec<Signal> = Vec::new();
        let mut batches = Vec::new();
        match got {
            Ok(Some(b)) => batches.push(b),
            Ok(None) => return,
            Err(_) => {}
        }
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
        for (received, records) in batches {
            for v in &records {
                signals.extend(detector.observe(&settings, &Record::from_json(v, received)));
            }
        }
        signals.extend(detector.tick(&settings, app.now() - LATE_SECS));
        match crate::store::audit_range(&app.store.pool, admin_seq, 1000).await {
            Ok(rows) => {
                for r in &rows {
                    admin_seq = admin_seq.max(r.seq);
                    signals.extend(admin.observe(&settings, r));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the admin audit for alerts"),
        }
        for s in signals {
            handle(&app, &settings, s).await;
        }
    }
}

/// Stores one signal; a new alert is delivered and, if asked, answered with a deny.
async fn handle(app: &App, settings: &Settings, s: Signal) {
    let raised = match store::raise(app, &s, settings.aggregate_secs).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(rule = s.rule.as_str(), error = %e, "cannot store an alert");
            return;
        }
    };
    let store::Raised::Opened(row) = raised else {
        return;
    };
    tracing::info!(alert = %row.id, rule = %row.rule, severity = %row.severity, "alert opened");
    if let (Some(d), "client_ip") = (&s.auto_deny, s.subject_kind) {
        match respond::deny(app, &s.subject, d.ttl_secs, &row.id, &row.rule).await {
            Ok(Some(c)) => {
                tracing::info!(alert = %row.id, version = c.version, "client temporarily denied")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(alert = %row.id, error = %e, "cannot deny the client"),
        }
    }
    if app.alerts.deliver.try_send(*row).is_err() {
        tracing::error!("the alert delivery queue is full; an alert is not delivered");
    }
}

/// Lifts expired denies, once a second.
async fn expire_loop(weak: Weak<App>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(app) = weak.upgrade() else { return };
        if let Err(e) = respond::expire(&app).await {
            tracing::warn!(error = %e, "cannot lift expired temporary denies");
        }
    }
}
