//! The application: shared state ([`App`]), how it is opened, and the HTTP router.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fenfa_config::model::Listeners;
use tokio::sync::{watch, Mutex};

use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::store::Store;

/// How the control plane runs (from the command line, or set by tests).
#[derive(Debug, Clone)]
pub struct Options {
    /// `sqlite://FILE?mode=rwc` or `postgres://…`.
    pub database: String,
    pub data_dir: PathBuf,
    /// `FENFA_MASTER_KEY`, if set; else `<data_dir>/master.key`.
    pub master_key: Option<String>,
    /// Where to write the rendered config on every commit (the in-process gateway watches it).
    pub gateway_file: Option<PathBuf>,
    /// Listener addresses put into the rendered config.
    pub listeners: Listeners,
    /// How long `/v1/dataplane/watch` holds a request before answering 304.
    pub watch_timeout: Duration,
    /// Initial accounts, used on the first start only.
    pub bootstrap: crate::auth::Bootstrap,
    /// Ship the in-process gateway's request audit to this control plane (single node).
    pub local_ship: Option<LocalShip>,
    /// The plugin kinds commits may name (the config checker and the in-process gateway use
    /// it). [`Options::new`] sets `fenfa_plugins::builtin()`; an embedder adds its own.
    pub plugins: fenfa_plugins::Registry,
    /// Redis for the active-user counts (`PFADD`/`PFCOUNT`, shared by every control-plane
    /// process); `None`: in-process sketches saved to the database (`crate::active_users`).
    pub redis: Option<RedisOptions>,
    /// How often the inspection and report schedule looks at the clock (`crate::inspection`);
    /// `None`: no schedule in this process (tests drive `crate::inspection::tick` themselves).
    pub schedule: Option<Duration>,
}

/// The control plane's Redis (active-user counts).
#[derive(Clone)]
pub struct RedisOptions {
    pub url: String,
    /// Key prefix (default `fenfa`).
    pub prefix: String,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisOptions")
            .field("url", &crate::store::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Where the in-process gateway ships its request audit: this control plane's ingest endpoint,
/// with a node token kept in a file.
#[derive(Debug, Clone)]
pub struct LocalShip {
    pub url: String,
    pub token_file: PathBuf,
    /// The CA the gateway trusts for an `https://` URL (`audit.ship.tls.ca`).
    pub ca: Option<PathBuf>,
}

impl Options {
    pub fn new(database: String, data_dir: PathBuf) -> Self {
        Self {
            database,
            data_dir,
            master_key: None,
            gateway_file: None,
            listeners: Listeners::default(),
            watch_timeout: Duration::from_secs(25),
            bootstrap: crate::auth::Bootstrap::default(),
            local_ship: None,
            plugins: fenfa_plugins::builtin(),
            redis: None,
            schedule: Some(crate::inspection::TICK),
        }
    }
}

/// Checks a candidate config before it is committed, with the rules every gateway applies
/// (`fenfa_config::check::plan` and the audit settings' checks), except for what only a gateway
/// can know: target host names are checked by syntax, not looked up
/// ([`fenfa_config::check::SyntaxOnly`]: the control plane's DNS view says nothing about the
/// gateways' networks), and the HTTPS listener's certificate files, which live on the gateways'
/// machines, are not read.
pub struct Checker {
    pub plugins: fenfa_plugins::Registry,
}

impl Checker {
    pub fn check(&self, config: &fenfa_config::Config) -> Result<(), fenfa_config::ConfigError> {
        fenfa_audit::check(&config.audit)?;
        fenfa_config::check::plan(config, &self.plugins, &fenfa_config::check::SyntaxOnly)
            .map(|_| ())
    }
}

/// Shared by every request.
pub struct App {
    pub store: Store,
    pub master: MasterKey,
    pub clock: Arc<dyn Clock>,
    /// Serializes writes in this process (the database serializes them across processes).
    pub write: Mutex<()>,
    /// The latest committed config version; watchers wait on it.
    pub version: watch::Sender<i64>,
    /// Checks candidate configs with the gateway's own rules (see [`Checker`]).
    pub checker: Arc<Checker>,
    pub opts: Options,
    /// Feeds the alert detectors and delivery (`crate::alerts`).
    pub alerts: crate::alerts::Alerts,
    /// Daily and monthly active users per channel (`crate::active_users`).
    pub active_users: crate::active_users::ActiveUsers,
    /// Held while an inspection runs: one at a time per process (`crate::inspection`).
    pub inspecting: Mutex<()>,
    /// One go-live verification at a time: two load tests never add up on one backend.
    pub verifying: Mutex<()>,
}

pub type AppState = Arc<App>;

impl App {
    /// Opens the store, loads the master key, creates the initial accounts on first start, and
    /// renders the current config once (so a fresh install has version 1 and a gateway file).
    /// Returns the app and the one-time credentials to print, if any were generated.
    pub async fn open(
        opts: Options,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<App>, Vec<crate::auth::Issued>), String> {
        // Everything in the data dir is private to the service account: the database (password
        // hashes, sealed secrets), the master key, the rendered config (keys in clear), the
        // local node token, and the in-process gateway's own dir (last good config, audit key).
        fenfa_config::files::secure_private_dir(&opts.data_dir, PRIVATE_FILES)
            .map_err(|e| format!("cannot make {} private: {e}", opts.data_dir.display()))?;
        let master = MasterKey::load(opts.master_key.as_deref(), &opts.data_dir)?;
        let store = Store::open(&opts.database).await?;
        check_master_key(&store, &master).await?;
        let version = crate::store::current_version(&store.pool)
            .await
            .map_err(|e| e.to_string())?;
        let checker = Arc::new(Checker {
            plugins: opts.plugins.clone(),
        });
        let (tx, _) = watch::channel(version);
        let (alerts, alert_rx) = crate::alerts::Alerts::new();
        let counter = match &opts.redis {
            Some(r) => crate::active_users::Counter::Redis(Box::new(
                crate::active_users::redis_store::RedisCounts::new(&r.url, &r.prefix)?,
            )),
            None => crate::active_users::Counter::Memory(Default::default()),
        };
        let (active_users, active_rx) = crate::active_users::ActiveUsers::new(counter);
        let app = Arc::new(App {
            store,
            master,
            clock,
            write: Mutex::new(()),
            version: tx,
            checker,
            opts,
            alerts,
            active_users,
            inspecting: Mutex::new(()),
            verifying: Mutex::new(()),
        });
        let issued = crate::auth::bootstrap(&app).await?;
        if version == 0 {
            crate::commit::initial(&app)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            app.write_gateway_file().await;
        }
        // The admin audit chain follows `settings.algorithms.audit_chain` (a change made by a
        // process that stopped before writing the switch is caught up here).
        let snapshot = crate::commit::snapshot(&app)
            .await
            .map_err(|e| e.to_string())?;
        app.master.set_cipher(snapshot.settings.secret_cipher());
        crate::audit::follow(
            &app.store.pool,
            &app.master,
            snapshot.settings.audit_chain(),
            app.now(),
            "fenfa-admin",
        )
        .await
        .map_err(|e| format!("admin audit: {e}"))?;
        if app.opts.gateway_file.is_some() {
            tokio::spawn(follow_database(Arc::downgrade(&app)));
        }
        crate::alerts::start(&app, alert_rx);
        crate::active_users::start(&app, active_rx);
        crate::inspection::start(&app);
        Ok((app, issued))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Writes the current rendered config to the gateway file, if one is configured.
    pub async fn write_gateway_file(&self) {
        let Some(path) = self.opts.gateway_file.clone() else {
            return;
        };
        let text = match crate::commit::current_text(self).await {
            Ok((_, t)) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the current config for the gateway file");
                return;
            }
        };
        let text = match local_config(&text, &self.opts) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the gateway config this process's own");
                text
            }
        };
        if let Err(e) = crate::crypto::write_private(&path, text.as_bytes()) {
            tracing::error!(file = %path.display(), error = %e, "cannot write the gateway config file");
        }
    }
}

/// How often a process looks for commits made by another process on the same database.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// Follows the database's config version like a remote gateway follows the control plane: a
/// commit made through another control-plane process on the same database reaches this
/// process's gateway file (and wakes its watchers) within [`FOLLOW_INTERVAL`]. Ends with the app.
async fn follow_database(app: std::sync::Weak<App>) {
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let Some(app) = app.upgrade() else {
            return;
        };
        match crate::store::current_version(&app.store.pool).await {
            Ok(v) if v != *app.version.borrow() => {
                let _guard = app.write.lock().await;
                tracing::info!(
                    version = v,
                    "config committed by another process; following it"
                );
                app.version.send_replace(v);
                app.write_gateway_file().await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the config version"),
        }
    }
}

/// Files of the data dir that hold secrets (mode 0600; the dir itself is 0700).
pub const PRIVATE_FILES: &[&str] = &[
    "fenfa-admin.db",
    "fenfa-admin.db-wal",
    "fenfa-admin.db-shm",
    crate::crypto::MASTER_KEY_FILE,
    "gateway.yaml",
    crate::serve::LOCAL_NODE_TOKEN,
];

/// Compares the master key with the key check value in the database (stored by the first
/// process to start on it): a process with another key would answer 500 on every sealed
/// secret, so it refuses to start instead.
async fn check_master_key(store: &Store, master: &MasterKey) -> Result<(), String> {
    let mine = master.check_value();
    let stored = crate::store::init_key_check(&store.pool, &mine)
        .await
        .map_err(|e| format!("the master key check: {e}"))?;
    if stored != mine {
        return Err(
            "the master key does not match the one this database was set up with: every process on one database must use the same key (set FENFA_MASTER_KEY, or copy <data-dir>/master.key from the first process; see docs/operations.md)"
                .into(),
        );
    }
    Ok(())
}

/// The rendered config as this process's in-process gateway runs it: its own listeners, the
/// node name `local-gateway`, and `audit.ship` pointing at this control plane.
fn local_config(text: &str, opts: &Options) -> Result<String, String> {
    let mut cfg = fenfa_config::parse(text).map_err(|e| e.to_string())?;
    // The stored config carries the listeners of the process that committed it; this process's
    // gateway listens where this process was told to.
    cfg.listeners = opts.listeners.clone();
    // The in-process gateway is the node `local-gateway`: the same name in its audit records,
    // its `/status`, `/v1/nodes` and the token it ships with.
    cfg.gateway.node = Some(crate::serve::LOCAL_NODE.to_string());
    let Some(ship) = &opts.local_ship else {
        return serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string());
    };
    let mut ship_json = serde_json::json!({
        "url": ship.url,
        "token_file": ship.token_file.display().to_string(),
    });
    if let Some(ca) = &ship.ca {
        ship_json["tls"] = serde_json::json!({"ca": ca.display().to_string()});
    }
    let ship = ship_json;
    cfg.audit.ship = Some(serde_json::from_value(ship).map_err(|e| e.to_string())?);
    serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())
}

/// The HTTP router: every endpoint of [`crate::api::endpoints`], JSON 404/405 answers.
pub fn router(app: AppState) -> Router {
    let api = crate::api::router(app.clone());
    let console = crate::console::router(app, api.clone());
    // The overview is `/console`; `/console/` leads there.
    api.nest("/console", console).route(
        "/console/",
        axum::routing::get(|| async { axum::response::Redirect::permanent("/console") }),
    )
}

/// Serves until the listener fails or the process ends.
pub async fn serve(app: AppState, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Like [`serve`], over TLS: each connection's handshake completes before the router sees it.
pub async fn serve_tls(
    app: AppState,
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // `tap_io` only so that `ConnectInfo<SocketAddr>` applies to the TLS listener too.
    let listener = crate::tls::TlsListener::new(listener, config)?.tap_io(|_| {});
    axum::serve(
        listener,
        router(app)
            .layer(axum::Extension(crate::console::session::OverTls))
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
