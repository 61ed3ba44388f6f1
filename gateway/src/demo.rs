//! The demo echo upstream started by `fenfa-gateway demo`: answers every request with a JSON
//! description of what it received (method, path, query, headers), so a newcomer can see exactly
//! what an agency backend gets from the gateway.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// Where the demo upstream listens.
pub const DEMO_UPSTREAM: &str = "127.0.0.1:9081";

/// The demo config, with the gateway on 9080 and the echo upstream above.
pub const DEMO_CONFIG: &str = include_str!("../../examples/demo.yaml");

pub struct EchoApp;

#[async_trait]
impl ServeHttp for EchoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                )
            })
            .collect();
        let body = serde_json::json!({
            "echo": "hello from the demo agency backend",
            "method": req.method.as_str(),
            "path": req.uri.path(),
            "query": req.uri.query(),
            "headers": headers,
        });
        let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}
