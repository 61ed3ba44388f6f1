//! Upstream health: the registry that keeps target state across reloads, and the active checker.
//!
//! The checker is one background loop that, every 100 ms, looks at the *current* snapshot and
//! starts a probe for each target whose interval has elapsed. Because it reads the snapshot each
//! tick, reloads need no task bookkeeping: a removed service simply stops being probed. Probes use
//! pingora's own connector, so TLS settings (SNI, CA, verification) are exactly the proxy's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

use super::now_ms;
use super::target::TargetState;
use crate::compile::{ActiveCheck, CompiledService};

/// Target state by (service, address), so health survives config reloads.
#[derive(Debug, Default)]
pub struct HealthRegistry {
    targets: Mutex<HashMap<(String, SocketAddr), Arc<TargetState>>>,
}

impl HealthRegistry {
    pub fn target(
        &self,
        service: &str,
        addr: SocketAddr,
        authority: &str,
        host: &str,
    ) -> Arc<TargetState> {
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((service.to_string(), addr))
            .or_insert_with(|| {
                Arc::new(TargetState::new(
                    addr,
                    authority.to_string(),
                    host.to_string(),
                ))
            })
            .clone()
    }

    /// Drops state for targets no longer in any service (called after a successful swap).
    pub fn retain(&self, live: &[(String, SocketAddr)]) {
        let live: std::collections::HashSet<&(String, SocketAddr)> = live.iter().collect();
        let mut map = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| live.contains(k));
    }
}

/// Starts due probes for every service of `services`. Called every tick by the gateway.
pub fn tick(connector: &Arc<Connector>, services: &[Arc<CompiledService>]) {
    let now = now_ms();
    for svc in services {
        let Some(check) = svc.active.as_ref() else {
            continue;
        };
        for (i, t) in svc.pool.targets().iter().enumerate() {
            if t.next_probe_ms.load(Relaxed) > now || t.probing.swap(true, Relaxed) {
                continue;
            }
            t.next_probe_ms
                .store(now + check.interval.as_millis() as u64, Relaxed);
            let (connector, svc, t, check) =
                (connector.clone(), svc.clone(), t.clone(), check.clone());
            tokio::spawn(async move {
                let ok = probe(&connector, &svc, i, &check).await;
                if let Some(healthy) =
                    t.record_probe(ok, check.healthy_threshold, check.unhealthy_threshold)
                {
                    if healthy {
                        tracing::info!(service = %svc.name, target = %t.authority, "target healthy again (active check)");
                    } else {
                        tracing::warn!(service = %svc.name, target = %t.authority, "target marked unhealthy (active check)");
                    }
                }
                t.probing.store(false, Relaxed);
            });
        }
    }
}

async fn probe(
    connector: &Connector,
    svc: &CompiledService,
    target: usize,
    check: &ActiveCheck,
) -> bool {
    let mut peer = svc.peer(target);
    peer.options.connection_timeout = Some(check.timeout);
    peer.options.total_connection_timeout = Some(check.timeout);
    peer.options.read_timeout = Some(check.timeout);
    peer.options.write_timeout = Some(check.timeout);
    let attempt = async {
        let (mut session, _reused) = connector.get_http_session(&peer).await.ok()?;
        let mut req = RequestHeader::build("GET", check.path.as_bytes(), None).ok()?;
        let host = check
            .host
            .clone()
            .unwrap_or_else(|| svc.pool.targets()[target].authority.clone());
        req.insert_header("host", host).ok()?;
        req.insert_header("user-agent", "fenfa-health-check").ok()?;
        req.insert_header("connection", "close").ok()?;
        session.write_request_header(Box::new(req)).await.ok()?;
        session.finish_request_body().await.ok()?;
        session.read_response_header().await.ok()?;
        let status = session.response_header()?.status.as_u16();
        session.shutdown().await;
        Some(status)
    };
    match tokio::time::timeout(check.timeout + Duration::from_millis(50), attempt).await {
        Ok(Some(status)) => check.is_healthy_status(status),
        _ => false,
    }
}
