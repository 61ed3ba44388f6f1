//! The application: shared state ([`App`]), how it is opened, and the HTTP router.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fenfa_gateway::config::model::Listeners;
use fenfa_gateway::gateway::Gateway;
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
}

/// Where the in-process gateway ships its request audit: this control plane's ingest endpoint,
/// with a node token kept in a file.
#[derive(Debug, Clone)]
pub struct LocalShip {
    pub url: String,
    pub token_file: PathBuf,
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
        }
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
    /// A gateway used only to compile candidate configs; it never serves.
    pub checker: Arc<Gateway>,
    pub opts: Options,
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
        std::fs::create_dir_all(&opts.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", opts.data_dir.display()))?;
        let master = MasterKey::load(opts.master_key.as_deref(), &opts.data_dir)?;
        let store = Store::open(&opts.database).await?;
        let version = crate::store::current_version(&store.pool)
            .await
            .map_err(|e| e.to_string())?;
        let checker = Arc::new(Gateway::new(
            opts.data_dir.join("check"),
            "fenfa-admin-check".into(),
        ));
        let (tx, _) = watch::channel(version);
        let app = Arc::new(App {
            store,
            master,
            clock,
            write: Mutex::new(()),
            version: tx,
            checker,
            opts,
        });
        let issued = crate::auth::bootstrap(&app).await?;
        if version == 0 {
            crate::commit::initial(&app)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            app.write_gateway_file().await;
        }
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
        let text = match &self.opts.local_ship {
            Some(ship) => match with_local_ship(&text, ship) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot add audit shipping to the gateway config");
                    text
                }
            },
            None => text,
        };
        if let Err(e) = crate::crypto::write_private(&path, text.as_bytes()) {
            tracing::error!(file = %path.display(), error = %e, "cannot write the gateway config file");
        }
    }
}

/// The rendered config with `audit.ship` pointing at this control plane.
fn with_local_ship(text: &str, ship: &LocalShip) -> Result<String, String> {
    let mut cfg = fenfa_gateway::config::parse(text).map_err(|e| e.to_string())?;
    let ship = serde_json::json!({
        "url": ship.url,
        "token_file": ship.token_file.display().to_string(),
    });
    cfg.audit.ship = Some(serde_json::from_value(ship).map_err(|e| e.to_string())?);
    serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())
}

/// The HTTP router: every endpoint of [`crate::api::endpoints`], JSON 404/405 answers.
pub fn router(app: AppState) -> Router {
    crate::api::router(app)
}

/// Serves until the listener fails or the process ends.
pub async fn serve(app: AppState, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
