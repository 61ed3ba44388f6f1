//! Assembles the pingora server: proxy listeners, the status listener, the background loop
//! (config watch, SIGHUP, active health checks) and graceful draining on SIGTERM.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::config::ConfigError;
use crate::gateway::Gateway;
use crate::proxy::FenfaProxy;
use crate::status::StatusApp;
use crate::tap::TappedProxy;
use crate::upstream::health;

/// Where the config comes from.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file; with a control plane, the node's base file (listeners, process settings).
    pub config: PathBuf,
    /// Follow this control plane instead of watching `config` for routes and services.
    pub control_plane: Option<crate::control_plane::ControlPlane>,
    pub data_dir: PathBuf,
    /// Extra services to run in the same server (the demo upstream).
    pub demo_upstream: Option<String>,
    /// The plugin kinds configs may name: `fenfa_plugins::builtin()`, plus an embedder's own
    /// (see `examples/body-plugin`).
    pub registry: fenfa_plugins::Registry,
}

/// Loads the first config (the file, else the last good snapshot) and runs until shut down.
pub fn run(opts: Options) -> Result<(), String> {
    let node = node_name();
    crate::gateway::secure_private_dir(
        &opts.data_dir,
        &[crate::gateway::LAST_GOOD, crate::audit::KEY_FILE],
    )
    .map_err(|e| format!("cannot make {} private: {e}", opts.data_dir.display()))?;
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    // Plugin factories may now work in the background and keep state in the data dir (the
    // remote JWKS of `jwt-auth`); config checks never get here.
    opts.registry.start(
        &opts.data_dir.join("plugins"),
        crate::gateway::write_atomically,
    );
    let gw = Arc::new(Gateway::new(
        opts.data_dir.clone(),
        node,
        opts.registry.clone(),
    ));
    // Fingerprint the config file before reading it: a change made while the gateway starts
    // (even before the watcher runs its first check) is then seen as a change and reloaded.
    let config_seen = Watcher::fingerprint(std::slice::from_ref(&opts.config));
    let follow = match &opts.control_plane {
        None => {
            initial_load(&gw, &opts.config)?;
            None
        }
        Some(cp) => {
            // The base file is optional: without it, default listeners and settings.
            let base = match std::fs::read_to_string(&opts.config) {
                Ok(text) => crate::config::parse(&text)
                    .map_err(|e| format!("{}: {e}", opts.config.display()))?,
                Err(_) => crate::config::Config::default(),
            };
            let version = crate::control_plane::initial_load(&gw, cp, &base)?;
            Some((cp.clone(), base, version))
        }
    };
    // The settings only: a clone of the snapshot held here would live as long as the server
    // does, and keep the first config in memory after every reload.
    let boot = gw.current().ok_or("no config is live")?.settings.clone();
    let settings = boot.gateway;
    let listeners = boot.listeners;
    if let Some(node) = &settings.node {
        tracing::info!(node, "node name from config");
    }
    gw.name_node(settings.node.as_deref());
    // The audit trail starts before any listener: no request goes unrecorded.
    gw.audit.start(
        &boot.audit,
        &opts.data_dir,
        gw.node(),
        gw.metrics.audit.clone(),
    )?;
    // Tracing too, with the node name the audit records carry.
    if let Some(t) = &boot.tracing {
        let tracing = crate::otel::Tracing::start(t, gw.node())?;
        let _ = gw.traces.set(tracing);
    }

    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.shutdown_grace.0.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: settings.upstream_keepalive_pool_size,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Tapped: requests pingora's HTTP/1 parser refuses are recorded and answered too (`tap.rs`).
    let mut proxy = Service::new(
        "fenfa proxy".to_string(),
        TappedProxy::new(
            pingora::proxy::http_proxy(&server.configuration, FenfaProxy::new(gw.clone())),
            gw.clone(),
        ),
    );
    if let Some(addr) = &listeners.http {
        proxy.add_tcp(addr);
    }
    if let Some(addr) = &listeners.https {
        let mut tls =
            TlsSettings::intermediate("", "").map_err(|e| format!("TLS settings: {e}"))?;
        tls.set_cert_resolver(gw.sni.clone());
        tls.enable_h2();
        proxy.add_tls_with_settings(addr, None, tls);
    }
    server.add_service(proxy);

    if let Some(addr) = &listeners.status {
        let mut status = Service::new("fenfa status".to_string(), StatusApp::new(gw.clone()));
        status.add_tcp(addr);
        server.add_service(status);
    }
    if let Some(addr) = &opts.demo_upstream {
        let mut echo = Service::new("demo echo upstream".to_string(), crate::demo::EchoApp);
        echo.add_tcp(addr);
        server.add_service(echo);
    }
    let mut watcher = Watcher {
        gw: gw.clone(),
        config: opts.config.clone(),
        baseline: Vec::new(),
        hup: hup.clone(),
        file_reloads: follow.is_none(),
    };
    if let Some((cp, base, version)) = follow {
        crate::control_plane::follow(gw.clone(), cp, base, version);
    }
    let files = watcher.files();
    watcher.baseline = config_seen
        .into_iter()
        .chain(Watcher::fingerprint(&files[1..]))
        .collect();
    server.add_service(background_service("fenfa watcher", watcher));

    tracing::info!(
        http = listeners.http.as_deref().unwrap_or("-"),
        https = listeners.https.as_deref().unwrap_or("-"),
        status = listeners.status.as_deref().unwrap_or("-"),
        threads = settings.threads,
        "fenfa-gateway starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnTerm {
            gw: gw.clone(),
            grace: settings.shutdown_grace.0,
        }),
    });
    // Grace period over, or SIGINT: whatever was recorded is written and sealed before exit.
    gw.audit.shutdown(AUDIT_FLUSH_TIMEOUT);
    shutdown_tracing(&gw);
    tracing::info!("fenfa-gateway stopped");
    Ok(())
}

fn initial_load(gw: &Gateway, config: &Path) -> Result<(), String> {
    let source = format!("file:{}", config.display());
    let first = match std::fs::read_to_string(config) {
        Ok(text) => gw.apply_text(&text, &source).map(|_| ()),
        Err(e) => Err(ConfigError::at(
            "",
            format!("cannot read {}: {e}", config.display()),
        )),
    };
    let Err(error) = first else { return Ok(()) };
    let why = error.to_string();
    match Gateway::last_good(&gw.data_dir) {
        Some(text) => {
            tracing::warn!("!!! {why}");
            tracing::warn!(
                "!!! STARTING ON THE LAST GOOD CONFIG from {} — fix the config file; it is watched and will be loaded once valid",
                gw.data_dir.join(crate::gateway::LAST_GOOD).display()
            );
            let started = gw
                .apply_text(&text, "last-good")
                .map(|_| ())
                .map_err(|e| format!("{why}; and the last good config is unusable too: {e}"));
            // Running, but not on the file: `/status` says why.
            gw.set_last_error(&error);
            started
        }
        None => Err(format!(
            "{why} (and no last good config in {})",
            gw.data_dir.display()
        )),
    }
}

/// Watches the config and certificate files, listens for SIGHUP, and ticks health checks.
struct Watcher {
    gw: Arc<Gateway>,
    config: PathBuf,
    /// Fingerprint of [`Watcher::files`] as they were when the live config was loaded.
    baseline: Fingerprint,
    /// Whether the config file is the source of routes (false when following a control plane:
    /// then the watcher only runs health checks).
    file_reloads: bool,
    /// Set by the SIGHUP handler (installed before any service starts, so an early SIGHUP
    /// never hits the default action, which would kill the process).
    hup: Arc<AtomicBool>,
}

/// Per file: modification time, length and inode (a save-by-rename always changes the inode,
/// even when time and length happen to match).
type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

impl Watcher {
    /// The config file first, then the certificate files of the live config.
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.config.clone()];
        if let Some(rt) = self.gw.current() {
            if let Some(c) = &rt.certificates {
                files.extend(c.files.iter().map(PathBuf::from));
            }
        }
        files
    }

    fn fingerprint(files: &[PathBuf]) -> Fingerprint {
        files
            .iter()
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
            })
            .collect()
    }

    /// Reloads, then returns the files to watch and their fingerprint. For files watched before
    /// and after, the fingerprint is the one taken *before* reading them, so a change that lands
    /// during the reload is not taken for already loaded and triggers another reload.
    async fn reload_and_rewatch(
        &self,
        files: &[PathBuf],
        why: &str,
    ) -> (Vec<PathBuf>, Fingerprint) {
        let before = Self::fingerprint(files);
        self.reload(why).await;
        let after = self.files();
        if after == files {
            (after, before)
        } else {
            let seen = Self::fingerprint(&after);
            (after, seen)
        }
    }

    async fn reload(&self, why: &str) {
        let path = self.config.clone();
        let gw = self.gw.clone();
        let why = why.to_string();
        // Compiling can take a while for big configs: keep it off the async workers, on a
        // thread of the lowest CPU priority so proxy workers preempt it (a 100k-route compile is
        // ~1 s of CPU that must not show up in request latency).
        let _ = tokio::task::spawn_blocking(move || {
            let _low = LowPriority::enter();
            let source = format!("file:{} ({why})", path.display());
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let _ = gw.apply_text(&text, &source);
                }
                Err(e) => {
                    gw.metrics.reload_failures.fetch_add(1, Relaxed);
                    tracing::error!(file = %path.display(), error = %e, "cannot read the config; the running config stays");
                    gw.set_last_error(&ConfigError::at(
                        "",
                        format!("cannot read {}: {e}", path.display()),
                    ));
                }
            }
        })
        .await;
    }
}

#[async_trait]
impl BackgroundService for Watcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(Connector::new(None));
        let mut files = self.files();
        let mut seen = if self.baseline.len() == files.len() {
            self.baseline.clone()
        } else {
            Self::fingerprint(&files)
        };
        let mut pending: Option<Fingerprint> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    ticks += 1;
                    if let Some(rt) = self.gw.current() {
                        health::tick(&connector, &rt.services);
                    }
                    if !self.file_reloads {
                        continue;
                    }
                    if self.hup.swap(false, Relaxed) {
                        tracing::info!("SIGHUP: reloading config");
                        (files, seen) = self.reload_and_rewatch(&files, "SIGHUP").await;
                        pending = None;
                    }
                    if ticks % 2 != 0 {
                        continue;
                    }
                    let now = Self::fingerprint(&files);
                    if now == seen {
                        pending = None;
                        continue;
                    }
                    // Reload once the files have stopped changing for one check (200 ms).
                    if pending.as_ref() == Some(&now) {
                        (files, seen) = self.reload_and_rewatch(&files, "file changed").await;
                        pending = None;
                    } else {
                        pending = Some(now);
                    }
                }
            }
        }
    }
}

/// Lowers the calling thread's CPU priority (nice 19) until dropped, then restores it, so a
/// pooled thread goes back to normal. Best effort: failure only means a normal priority.
pub struct LowPriority {
    before: Option<i32>,
}

impl LowPriority {
    pub fn enter() -> Self {
        let tid = rustix::thread::gettid();
        let before = rustix::process::getpriority_process(Some(tid)).ok();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
            tracing::debug!(error = %e, "cannot lower the compile thread's priority");
        }
        Self { before }
    }
}

impl Drop for LowPriority {
    fn drop(&mut self) {
        if let Some(p) = self.before {
            // Raising priority back needs CAP_SYS_NICE; without it the thread stays low, which
            // only affects later blocking tasks in this pool (all of them background work).
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), p);
        }
    }
}

/// SIGTERM: stop being ready, stop accepting, let in-flight requests finish (up to the grace),
/// then exit as soon as none is left. SIGINT: exit at once.
struct DrainOnTerm {
    gw: Arc<Gateway>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(grace = ?self.grace, "SIGTERM: draining");
                self.gw.draining.store(true, Relaxed);
                let gw = self.gw.clone();
                let grace = self.grace;
                std::thread::spawn(move || exit_when_drained(&gw, grace));
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                ShutdownSignal::FastShutdown
            }
        }
    }
}

/// Longest wait at shutdown for the audit writer to write and seal what is queued.
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait at shutdown for the spans still queued to reach the collector.
const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

fn shutdown_tracing(gw: &Gateway) {
    if let Some(t) = gw.traces.get() {
        t.shutdown(TRACE_FLUSH_TIMEOUT);
    }
}

/// Exits the process once no request has been in flight for a few consecutive checks, instead
/// of always sleeping the full grace period. Pingora stops the listeners on its own.
fn exit_when_drained(gw: &Gateway, grace: Duration) {
    let start = Instant::now();
    let mut idle_checks = 0;
    std::thread::sleep(Duration::from_millis(100));
    while start.elapsed() < grace {
        if gw.metrics.in_flight.load(Relaxed) <= 0 {
            idle_checks += 1;
            if idle_checks >= 3 {
                tracing::info!(after = ?start.elapsed(), "drained: no request in flight; exiting");
                gw.audit.shutdown(AUDIT_FLUSH_TIMEOUT);
                shutdown_tracing(gw);
                std::process::exit(0);
            }
        } else {
            idle_checks = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = gw.metrics.in_flight.load(Relaxed);
    tracing::warn!(
        in_flight = left,
        "grace period over; exiting with requests still in flight"
    );
}

fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fenfa".to_string())
}
