//! The running gateway's state: the live snapshot and everything that outlives snapshots.
//!
//! A snapshot is compiled off the request path and published with one atomic pointer swap
//! (`ArcSwap`). Each request loads the pointer once and keeps its `Arc` until it ends, so
//! in-flight requests finish on the snapshot they started with while new ones see the new one.
//! A config that fails to compile changes nothing; the error is logged, counted and shown on the
//! status listener. Every snapshot that goes live is written to `<data_dir>/last-good.yaml`
//! (atomically: temp file, fsync, rename) and used at boot when the config file is missing or bad.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use fenfa_plugins::Registry;

use crate::compile::{compile, CompileEnv, Runtime};
use crate::config::{self, Config, ConfigError};
use crate::metrics::Metrics;
use crate::tls::SniResolver;
use crate::upstream::health::HealthRegistry;

/// File name of the persisted last good snapshot inside the data dir.
pub const LAST_GOOD: &str = "last-good.yaml";

/// Outcome of the latest load attempt, for `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub version: Option<String>,
    pub generation: u64,
    pub source: Option<String>,
    pub loaded_at: Option<u64>,
    pub last_error: Option<ReloadError>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadError {
    pub path: String,
    pub message: String,
    pub at: u64,
}

pub struct Gateway {
    live: ArcSwapOption<Runtime>,
    pub metrics: Metrics,
    pub health: HealthRegistry,
    pub plugins: Registry,
    pub sni: Arc<SniResolver>,
    pub data_dir: PathBuf,
    /// The host name: this node's name until the config names it (`gateway.node`).
    host_node: String,
    /// `gateway.node`, once the first config is live ([`Gateway::name_node`]).
    named_node: std::sync::OnceLock<String>,
    status: Mutex<ReloadStatus>,
    /// Set when shutdown begins: `/readyz` turns 503 so load balancers stop sending traffic.
    pub draining: AtomicBool,
    /// The audit trail (started by `server::run`; a no-op until then).
    pub audit: crate::audit::Audit,
    /// Traces (`tracing:` in the config the gateway started with; unset: tracing off).
    pub traces: std::sync::OnceLock<crate::otel::Tracing>,
}

impl Gateway {
    /// `plugins`: every plugin kind configs may name (`fenfa_plugins::builtin()` plus the
    /// embedder's own).
    pub fn new(data_dir: PathBuf, node: String, plugins: Registry) -> Self {
        Self {
            live: ArcSwapOption::empty(),
            metrics: Metrics::default(),
            health: HealthRegistry::default(),
            plugins,
            sni: Arc::new(SniResolver::default()),
            data_dir,
            host_node: node,
            named_node: std::sync::OnceLock::new(),
            status: Mutex::new(ReloadStatus::default()),
            draining: AtomicBool::new(false),
            audit: crate::audit::Audit::default(),
            traces: std::sync::OnceLock::new(),
        }
    }

    /// This node's name: `gateway.node` from the config the gateway started with, else the
    /// host name. The same name is in `/status` and in every audit record.
    pub fn node(&self) -> &str {
        self.named_node.get().unwrap_or(&self.host_node)
    }

    /// Fixes the node's name from the config at startup (later calls change nothing: a node
    /// keeps its name until it restarts, as its audit records do).
    pub fn name_node(&self, name: Option<&str>) {
        if let Some(name) = name {
            let _ = self.named_node.set(name.to_string());
        }
    }

    /// The live snapshot, if any.
    #[inline]
    pub fn current(&self) -> Option<Arc<Runtime>> {
        self.live.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Compiles `text` and, if it is valid, makes it live and persists it. On error nothing
    /// changes except the recorded error.
    pub fn apply_text(&self, text: &str, source: &str) -> Result<Arc<Runtime>, ConfigError> {
        let result = config::parse(text)
            .and_then(|c| c.check_not_empty().map(|()| c))
            .and_then(|c| self.compile(&c));
        match result {
            Ok(rt) => {
                let rt = Arc::new(rt);
                self.swap_in(rt.clone(), source);
                if let Err(e) = self.persist(text) {
                    tracing::error!(error = %e, dir = %self.data_dir.display(), "could not persist the last good config");
                }
                Ok(rt)
            }
            Err(e) => {
                self.metrics.reload_failures.fetch_add(1, Relaxed);
                tracing::error!(source, field = %e.path, error = %e.message, "config rejected; the running config stays");
                self.set_last_error(&e);
                Err(e)
            }
        }
    }

    /// Records why the config source could not be used (shown in `/status` as
    /// `config.last_error`), while whatever is live stays.
    pub fn set_last_error(&self, e: &ConfigError) {
        self.record_error(&e.path, &e.message);
    }

    /// Records an error of a config source that is not a config (e.g. the control plane
    /// unreachable) in `/status` `config.last_error`, under `path`; the next successful load
    /// clears it.
    pub fn record_error(&self, path: &str, message: &str) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.last_error = Some(ReloadError {
            path: path.to_string(),
            message: message.to_string(),
            at: unix_now(),
        });
    }

    /// Compiles without making anything live (used for checks).
    pub fn compile(&self, config: &Config) -> Result<Runtime, ConfigError> {
        compile(
            config,
            &CompileEnv {
                plugins: &self.plugins,
                health: &self.health,
                metrics: &self.metrics,
            },
        )
    }

    fn swap_in(&self, rt: Arc<Runtime>, source: &str) {
        if let Some(old) = self.current() {
            if old.settings.listeners != rt.settings.listeners {
                tracing::warn!("listener addresses changed; they take effect after a restart");
            }
            if old.settings.audit != rt.settings.audit {
                tracing::warn!("audit settings changed; they take effect after a restart");
            }
            if old.settings.tracing != rt.settings.tracing {
                tracing::warn!("tracing settings changed; they take effect after a restart");
            }
        }
        self.sni.set(rt.certificates.clone());
        let live: Vec<_> = rt
            .services
            .iter()
            .flat_map(|s| {
                s.pool
                    .targets()
                    .iter()
                    .map(|t| (s.name.to_string(), t.addr))
            })
            .collect();
        let old = self.live.swap(Some(rt.clone()));
        if let Some(old) = old {
            retire(old);
        }
        self.health.retain(&live);
        let routes: std::collections::HashSet<&str> = rt.routes.iter().map(|r| &*r.name).collect();
        self.metrics.retain_routes(|name| routes.contains(name));
        let generation = self.metrics.config_generation.fetch_add(1, Relaxed) + 1;
        self.metrics.reloads.fetch_add(1, Relaxed);
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.version = Some(rt.version.clone());
        st.generation = generation;
        st.source = Some(source.to_string());
        st.loaded_at = Some(unix_now());
        st.last_error = None;
        tracing::info!(version = %rt.version, generation, routes = rt.router.len(), source, "config is live");
    }

    fn persist(&self, text: &str) -> std::io::Result<()> {
        write_atomically(&self.data_dir.join(LAST_GOOD), text.as_bytes())
    }

    /// The persisted last good config text, if any.
    pub fn last_good(data_dir: &Path) -> Option<String> {
        std::fs::read_to_string(data_dir.join(LAST_GOOD)).ok()
    }
}

/// Drops a replaced snapshot off the request path. Requests still running on it hold clones; if
/// the last of them dropped it, a proxy worker would spend the time freeing it (hundreds of
/// milliseconds for 100k routes) in the middle of serving. A reaper thread waits until it holds
/// the only reference and frees it there.
fn retire(old: Arc<Runtime>) {
    let spawned = std::thread::Builder::new()
        .name("fenfa-retire".into())
        .spawn(move || {
            let _low = crate::server::LowPriority::enter();
            let start = std::time::Instant::now();
            while Arc::strong_count(&old) > 1
                && start.elapsed() < std::time::Duration::from_secs(600)
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(old);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to free the old config; freeing it inline");
    }
}

pub use fenfa_config::files::{secure_private_dir, write_atomically};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
