//! The console's way to the REST API: each call goes through the API's own router in process,
//! with the session's bearer token and the browser's address, so authentication, the permission
//! table, scoping, validation and the admin audit are exactly the API's.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::app::AppState;

/// The API router and the app, shared by the console's handlers.
#[derive(Clone)]
pub struct Bridge {
    pub app: AppState,
    api: Router,
    /// Services with a verification running that the console started (shown as in progress).
    pub running: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// An API answer: status and JSON body (`Null` when there was none or it was not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// The raw body and its content type, for downloads.
    pub raw: bytes::Bytes,
    pub content_type: Option<String>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message (`{"error":{"message"}}`), with the first field path if any.
    pub fn message(&self) -> String {
        let e = &self.body["error"];
        let msg = e["message"].as_str().unwrap_or("").to_string();
        match e["fields"][0]["path"].as_str() {
            Some(p) if !msg.contains(p) => format!("{p}: {msg}"),
            _ => msg,
        }
    }
}

impl Bridge {
    pub fn new(app: AppState, api: Router) -> Self {
        Self {
            app,
            api,
            running: Default::default(),
        }
    }

    /// Calls `method uri` on the API as the holder of `token`, from `peer`.
    pub async fn call(
        &self,
        token: Option<&str>,
        peer: Option<SocketAddr>,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut req = match req.body(body) {
            Ok(r) => r,
            Err(e) => return internal(e.to_string()),
        };
        if let Some(p) = peer {
            req.extensions_mut().insert(ConnectInfo(p));
        }
        let resp = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => return internal(e.to_string()),
        };
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let raw = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            raw,
            content_type,
        }
    }
}

fn internal(why: String) -> Answer {
    Answer {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: serde_json::json!({"error": {"message": why}}),
        raw: bytes::Bytes::new(),
        content_type: None,
    }
}
