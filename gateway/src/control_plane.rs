//! Config from the control plane: `fenfa-gateway --control-plane URL --node-token T`.
//!
//! The gateway long-polls `GET {URL}/v1/dataplane/watch?version=N&timeout=25` with its node token
//! (the contract is in `docs/admin.md`). A `200` carries a newer rendered config and its version in
//! `X-Fenfa-Config-Version`; a `304` means nothing changed. Each config is merged with the local
//! base file (listeners and process settings stay the node's own), compiled, swapped in and
//! persisted as the last good snapshot exactly like a file reload, so when the control plane is
//! down the gateway keeps serving, and after its own restart it boots from that snapshot.
//!
//! The watch is a task on the background network runtime (`crate::http_client`), over `https://`
//! with the CA and client certificate of `--control-plane-ca` … (plain `http://` only to a
//! loopback address, or with `--control-plane-insecure`); compiling a new config runs on that
//! runtime's blocking pool at the lowest CPU priority. It never touches the request path.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method};

use crate::config::model::ClientTls;
use crate::config::{self, Config};
use crate::gateway::Gateway;
use crate::http_client::{ClientError, Endpoint, Names, Settings};

/// Where the control plane is, how to trust it and how to authenticate to it (the command line).
#[derive(Clone, Default)]
pub struct Options {
    pub url: String,
    pub token: String,
    pub tls: ClientTls,
    /// Allow plain `http://` to a host that is not loopback.
    pub insecure: bool,
    /// Longest config accepted, in bytes.
    pub max_body: u64,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// Default of `--control-plane-max-body`: a rendered config of 100k routes is about 30 MiB.
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;

/// A control plane the gateway can call (the settings checked, the client built).
#[derive(Clone)]
pub struct ControlPlane {
    endpoint: Endpoint,
    auth: HeaderValue,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.endpoint.url.as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What one watch call returned.
#[derive(Debug)]
pub enum Watch {
    /// A newer config (its text and version).
    Changed { text: String, version: i64 },
    /// Nothing newer within the timeout.
    Unchanged,
}

/// Why a watch call failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the control plane refused the node token ({0})")]
    TokenRefused(u16),
    #[error("the control plane answered {0}")]
    Status(u16),
    #[error("the control plane sent a config without X-Fenfa-Config-Version")]
    NoVersion,
    #[error("the config is not UTF-8")]
    NotUtf8,
}

/// Long-polls how many seconds per call.
const WATCH_SECS: u64 = 25;
/// A watch call's deadline beyond the time the control plane may hold it.
const WATCH_MARGIN: Duration = Duration::from_secs(15);

/// The names of the command-line flags, for errors.
pub fn names() -> Names {
    Names {
        url: "--control-plane".into(),
        ca: "--control-plane-ca".into(),
        client_cert: "--control-plane-client-cert".into(),
        client_key: "--control-plane-client-key".into(),
        insecure: "--control-plane-insecure".into(),
        max_body: "--control-plane-max-body".into(),
    }
}

impl ControlPlane {
    /// Checks the URL rule and the TLS files, and builds the client; connects to nothing, so a
    /// refused URL stops the start before the node token goes anywhere.
    pub fn new(o: &Options) -> Result<Self, ClientError> {
        let names = names();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", o.token)).map_err(|_| {
            ClientError::Setting {
                field: "--node-token".into(),
                message: "contains characters a header cannot carry".into(),
            }
        })?;
        auth.set_sensitive(true);
        let endpoint = Endpoint::new(&Settings {
            url: &o.url,
            tls: crate::http_client::ClientTls {
                ca: o.tls.ca.as_deref(),
                client_cert: o.tls.client_cert.as_deref(),
                client_key: o.tls.client_key.as_deref(),
            },
            insecure: o.insecure,
            connect_timeout: Duration::from_secs(5),
            max_body: o.max_body,
            names,
        })?;
        Ok(Self { endpoint, auth })
    }

    /// One watch call. `timeout` 0 answers at once.
    pub async fn watch(&self, version: i64, timeout: u64) -> Result<Watch, WatchError> {
        let mut url = self.endpoint.url.clone();
        let path = format!("{}/v1/dataplane/watch", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(Some(&format!("version={version}&timeout={timeout}")));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, self.auth.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let answer = self
            .endpoint
            .request(
                Method::GET,
                url,
                headers,
                Vec::new(),
                Duration::from_secs(timeout) + WATCH_MARGIN,
            )
            .await?;
        match answer.status {
            200 => {
                let version = answer
                    .header("x-fenfa-config-version")
                    .and_then(|v| v.parse().ok())
                    .ok_or(WatchError::NoVersion)?;
                let text = String::from_utf8(answer.body).map_err(|_| WatchError::NotUtf8)?;
                Ok(Watch::Changed { text, version })
            }
            304 => Ok(Watch::Unchanged),
            s @ (401 | 403) => Err(WatchError::TokenRefused(s)),
            s => Err(WatchError::Status(s)),
        }
    }
}

/// The control plane's config with the node's own listeners, process settings, audit and tracing
/// from `base`.
pub fn merge(base: &Config, text: &str) -> Result<String, String> {
    let mut cp: Config = config::parse(text).map_err(|e| format!("control-plane config: {e}"))?;
    cp.listeners = base.listeners.clone();
    cp.gateway = base.gateway.clone();
    cp.audit = base.audit.clone();
    cp.tracing = base.tracing.clone();
    yaml_serde::to_string(&cp).map_err(|e| format!("cannot render the merged config: {e}"))
}

/// First config at boot: the control plane if it answers, else the last good snapshot.
/// Returns the version now live (0 if only the snapshot, whose version is unknown to the poller).
pub fn initial_load(gw: &Gateway, cp: &ControlPlane, base: &Config) -> Result<i64, String> {
    let first = crate::http_client::handle()
        .map_err(|e| e.to_string())?
        .block_on(cp.watch(0, 0));
    let why = match first {
        Ok(Watch::Changed { text, version }) => {
            let merged = merge(base, &text)?;
            match gw.apply_text(&merged, &format!("control-plane v{version}")) {
                Ok(_) => return Ok(version),
                Err(e) => format!("the control plane's config v{version} is invalid: {e}"),
            }
        }
        Ok(Watch::Unchanged) => "the control plane has no config yet".to_string(),
        Err(e) => {
            gw.metrics.control_plane_errors.fetch_add(1, Relaxed);
            gw.record_error("control_plane", &e.to_string());
            format!("the control plane at {}: {e}", cp.endpoint.url)
        }
    };
    match Gateway::last_good(&gw.data_dir) {
        Some(text) => {
            tracing::warn!("!!! {why}");
            tracing::warn!(
                "!!! STARTING ON THE LAST GOOD CONFIG from {}; will switch to the control plane's as soon as it answers",
                gw.data_dir.join(crate::gateway::LAST_GOOD).display()
            );
            gw.apply_text(&text, "last-good")
                .map_err(|e| format!("{why}; and the last good config is unusable too: {e}"))?;
            Ok(0)
        }
        None => Err(format!(
            "{why} (and no last good config in {})",
            gw.data_dir.display()
        )),
    }
}

/// Follows the control plane forever (a task on the background network runtime), backing off
/// while it is unreachable.
pub fn follow(gw: Arc<Gateway>, cp: ControlPlane, base: Config, mut version: i64) {
    let handle = match crate::http_client::handle() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the control plane");
            return;
        }
    };
    let base = Arc::new(base);
    handle.spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match cp.watch(version, WATCH_SECS).await {
                Ok(Watch::Changed { text, version: v }) => {
                    backoff = Duration::from_millis(250);
                    let (gw, base) = (gw.clone(), base.clone());
                    // Compiling big configs must not compete with the proxy workers, nor hold
                    // up the runtime's other jobs.
                    let applied = tokio::task::spawn_blocking(move || {
                        let _low = crate::server::LowPriority::enter();
                        merge(&base, &text).and_then(|m| {
                            gw.apply_text(&m, &format!("control-plane v{v}"))
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        })
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("the compile task failed: {e}")));
                    if let Err(e) = applied {
                        tracing::error!(version = v, error = %e, "control-plane config rejected; the running config stays");
                    }
                    // Either way this version has been seen: wait for the next one.
                    version = v;
                }
                Ok(Watch::Unchanged) => backoff = Duration::from_millis(250),
                Err(e) => {
                    gw.metrics.control_plane_errors.fetch_add(1, Relaxed);
                    gw.record_error("control_plane", &e.to_string());
                    tracing::warn!(error = %e, retry_in = ?backoff, "control plane unreachable; serving the last good config");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_nodes_listeners() {
        let base = config::parse("listeners: { http: \"127.0.0.1:7000\" }\n").unwrap();
        let merged = merge(&base, r#"{"listeners":{"http":"0.0.0.0:1"},"services":[]}"#).unwrap();
        assert!(merged.contains("127.0.0.1:7000"), "{merged}");
    }
}
