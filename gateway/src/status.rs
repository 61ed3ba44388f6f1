//! The status listener (default 127.0.0.1:9091): `/healthz`, `/readyz`, `/status`, `/metrics`.
//!
//! - `/healthz` — 200 while the process runs.
//! - `/readyz` — 200 once a config is live; 503 before that and while draining on shutdown.
//! - `/status` — JSON: live config version and generation, the last reload error (field path and
//!   message), and each upstream target's health.
//! - `/metrics` — Prometheus text format.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::gateway::Gateway;
use crate::metrics::Families;
use crate::upstream::now_ms;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

pub struct StatusApp {
    gw: Arc<Gateway>,
}

impl StatusApp {
    pub fn new(gw: Arc<Gateway>) -> Self {
        Self { gw }
    }

    fn ready(&self) -> bool {
        self.gw.current().is_some() && !self.gw.draining.load(Relaxed)
    }

    fn status_json(&self) -> serde_json::Value {
        let st = self.gw.status();
        let rt = self.gw.current();
        let now = now_ms();
        let upstreams: Vec<serde_json::Value> = rt
            .as_ref()
            .map(|rt| {
                rt.services
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "service": &*s.name,
                            "targets": s.pool.targets().iter().map(|t| serde_json::json!({
                                "addr": t.authority,
                                "healthy": t.is_available(now),
                                "active_healthy": t.is_active_healthy(),
                                "ejected": t.is_ejected(now),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({
            "node": self.gw.node(),
            "ready": self.ready(),
            "draining": self.gw.draining.load(Relaxed),
            "config": st,
            "routes": rt.as_ref().map(|r| r.router.len()).unwrap_or(0),
            "upstreams": upstreams,
        })
    }

    fn metrics_text(&self) -> String {
        crate::metrics::render(self.gw.clone())
    }
}

/// What `/metrics` shows: the gateway's counters, then each upstream target's health and
/// latency, and the live config's version. Target labels are the live config's services and
/// target addresses.
impl Families for Gateway {
    fn encode(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        self.metrics.encode(enc)?;
        let Some(rt) = self.current() else {
            return Ok(());
        };
        let now = now_ms();
        {
            let mut fam = enc.encode_descriptor(
                "fenfa_upstream_target_healthy",
                "1 if the target gets traffic (active and passive checks).",
                None,
                MetricType::Gauge,
            )?;
            for s in &rt.services {
                for t in s.pool.targets() {
                    let labels = [("service", &*s.name), ("target", t.authority.as_str())];
                    ConstGauge::new(i64::from(t.is_available(now)))
                        .encode(fam.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "fenfa_upstream_duration_seconds",
                "Time of each attempt on an upstream target, from picking it to its response head or to the failure.",
                None,
                MetricType::Histogram,
            )?;
            for s in &rt.services {
                for t in s.pool.targets() {
                    let labels = [("service", &*s.name), ("target", t.authority.as_str())];
                    t.latency.encode_labelled(&mut fam, &labels)?;
                }
            }
        }
        let mut fam = enc.encode_descriptor(
            "fenfa_config",
            "The live config's version.",
            None,
            MetricType::Info,
        )?;
        fam.encode_info(&[("version", rt.version.as_str())])
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

#[async_trait]
impl ServeHttp for StatusApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            "/readyz" => {
                if self.ready() {
                    json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
                } else {
                    let reason = if self.gw.draining.load(Relaxed) {
                        "draining"
                    } else {
                        "no config is live yet"
                    };
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({"status": "not_ready", "reason": reason}),
                    )
                }
            }
            "/status" => json(StatusCode::OK, &self.status_json()),
            "/metrics" => respond(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                self.metrics_text().into_bytes(),
            ),
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": {"code": "not_found", "message": "try /healthz, /readyz, /status or /metrics", "request_id": ""}}),
            ),
        }
    }
}
