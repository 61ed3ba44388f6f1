//! Config from the control plane: `fenfa-gateway --control-plane URL --node-token T`.
//!
//! The gateway long-polls `GET {URL}/v1/dataplane/watch?version=N&timeout=25` with its node token
//! (the contract is in `docs/admin.md`). A `200` carries a newer rendered config and its version in
//! `X-Fenfa-Config-Version`; a `304` means nothing changed. Each config is merged with the local
//! base file (listeners and process settings stay the node's own), compiled, swapped in and
//! persisted as the last good snapshot exactly like a file reload, so when the control plane is
//! down the gateway keeps serving, and after its own restart it boots from that snapshot.
//!
//! This runs on its own thread with a blocking HTTP/1.1 client: it never touches the request path.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::sink::HttpUrl;
use crate::config::{self, Config};
use crate::gateway::Gateway;
use crate::http_client;

/// Where the control plane is and how to authenticate to it.
#[derive(Clone)]
pub struct ControlPlane {
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
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

/// Long-polls how many seconds per call.
const WATCH_SECS: u64 = 25;

impl ControlPlane {
    /// One watch call. `timeout` 0 answers at once.
    pub fn watch(&self, version: i64, timeout: u64) -> Result<Watch, String> {
        let base: HttpUrl = self.url.parse()?;
        let path = format!(
            "{}/v1/dataplane/watch?version={version}&timeout={timeout}",
            base.path.trim_end_matches('/')
        );
        let auth = format!("Bearer {}", self.token);
        let answer = http_client::request(
            &base,
            "GET",
            &path,
            &[("Authorization", &auth), ("Accept", "application/json")],
            b"",
            Duration::from_secs(timeout + 10),
        )?;
        match answer.status {
            200 => {
                let version = answer
                    .header("x-fenfa-config-version")
                    .and_then(|v| v.parse().ok())
                    .ok_or("the control plane sent a config without X-Fenfa-Config-Version")?;
                let text = String::from_utf8(answer.body).map_err(|_| "the config is not UTF-8")?;
                Ok(Watch::Changed { text, version })
            }
            304 => Ok(Watch::Unchanged),
            401 | 403 => Err(format!(
                "the control plane refused the node token ({})",
                answer.status
            )),
            s => Err(format!("the control plane answered {s}")),
        }
    }
}

/// The control plane's config with the node's own listeners and process settings from `base`.
pub fn merge(base: &Config, text: &str) -> Result<String, String> {
    let mut cp: Config = config::parse(text).map_err(|e| format!("control-plane config: {e}"))?;
    cp.listeners = base.listeners.clone();
    cp.gateway = base.gateway.clone();
    cp.audit = base.audit.clone();
    serde_yaml::to_string(&cp).map_err(|e| format!("cannot render the merged config: {e}"))
}

/// First config at boot: the control plane if it answers, else the last good snapshot.
/// Returns the version now live (0 if only the snapshot, whose version is unknown to the poller).
pub fn initial_load(gw: &Gateway, cp: &ControlPlane, base: &Config) -> Result<i64, String> {
    let why = match cp.watch(0, 0) {
        Ok(Watch::Changed { text, version }) => {
            let merged = merge(base, &text)?;
            match gw.apply_text(&merged, &format!("control-plane v{version}")) {
                Ok(_) => return Ok(version),
                Err(e) => format!("the control plane's config v{version} is invalid: {e}"),
            }
        }
        Ok(Watch::Unchanged) => "the control plane has no config yet".to_string(),
        Err(e) => e,
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

/// Follows the control plane forever (a daemon thread), backing off while it is unreachable.
pub fn follow(gw: Arc<Gateway>, cp: ControlPlane, base: Config, mut version: i64) {
    std::thread::Builder::new()
        .name("fenfa-control-plane".into())
        .spawn(move || {
            // Compiling big configs must not compete with the proxy workers.
            let _low = crate::server::LowPriority::enter();
            let mut backoff = Duration::from_millis(250);
            loop {
                match cp.watch(version, WATCH_SECS) {
                    Ok(Watch::Changed { text, version: v }) => {
                        backoff = Duration::from_millis(250);
                        match merge(&base, &text).and_then(|m| {
                            gw.apply_text(&m, &format!("control-plane v{v}")).map_err(|e| e.to_string())
                        }) {
                            Ok(_) => {}
                            Err(e) => tracing::error!(version = v, error = %e, "control-plane config rejected; the running config stays"),
                        }
                        // Either way this version has been seen: wait for the next one.
                        version = v;
                    }
                    Ok(Watch::Unchanged) => backoff = Duration::from_millis(250),
                    Err(e) => {
                        gw.metrics.control_plane_errors.fetch_add(1, Relaxed);
                        tracing::warn!(error = %e, retry_in = ?backoff, "control plane unreachable; serving the last good config");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the control-plane thread"));
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
