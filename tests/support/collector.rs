//! A real audit ingest endpoint on a loopback port (hyper): what the control plane's side of
//! audit shipping looks like to the gateway.
//!
//! It accepts `POST` batches (`{"node","segment","offset","records":[…]}`) with
//! `Authorization: Bearer <token>`, answers 200 and remembers every record under its idempotency
//! key `(node, segment, offset + k)`, and every delivery (so duplicates are visible). It can be
//! stopped (the port closes: an outage) and started again on the same address with the same
//! memory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One delivered record: its idempotency key and content.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub node: String,
    pub segment: String,
    pub offset: u64,
    pub record: serde_json::Value,
}

impl Delivered {
    pub fn key(&self) -> (String, String, u64) {
        (self.node.clone(), self.segment.clone(), self.offset)
    }
}

#[derive(Default)]
pub struct Memory {
    pub token: String,
    /// Every record of every accepted batch, in arrival order (duplicates included).
    pub delivered: Mutex<Vec<Delivered>>,
    /// Batches refused for a bad token.
    pub unauthorized: AtomicUsize,
    pub batches: AtomicUsize,
}

/// A running collector; stops when dropped.
pub struct Collector {
    pub addr: SocketAddr,
    pub memory: Arc<Memory>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    /// Starts on an ephemeral port, expecting `token`.
    pub fn start(token: &str) -> Self {
        let memory = Arc::new(Memory {
            token: token.to_string(),
            ..Memory::default()
        });
        Self::start_with("127.0.0.1:0".parse().unwrap(), memory)
    }

    /// Starts again on `addr` with an existing memory (after [`Collector::stop`]).
    pub fn start_with(addr: SocketAddr, memory: Arc<Memory>) -> Self {
        let listener = std::net::TcpListener::bind(addr).expect("bind collector");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mem = memory.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let mem = mem.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| handle(mem.clone(), req));
                                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Self {
            addr,
            memory,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/dataplane/audit", self.addr)
    }

    /// Closes the port (an outage). Start again with [`Collector::start_with`].
    pub fn stop(mut self) -> (SocketAddr, Arc<Memory>) {
        self.shutdown();
        (self.addr, self.memory.clone())
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.memory.delivered.lock().unwrap().clone()
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn handle(
    mem: Arc<Memory>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, body: &'static str| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap())
    };
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", mem.token).as_str());
    if req.method() != hyper::Method::POST {
        return reply(405, r#"{"error":"POST only"}"#);
    }
    if !authorized {
        mem.unauthorized.fetch_add(1, SeqCst);
        return reply(401, r#"{"error":"bad node token"}"#);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(batch) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return reply(400, r#"{"error":"not JSON"}"#);
    };
    let (Some(node), Some(segment), Some(offset), Some(records)) = (
        batch["node"].as_str(),
        batch["segment"].as_str(),
        batch["offset"].as_u64(),
        batch["records"].as_array(),
    ) else {
        return reply(400, r#"{"error":"not a batch"}"#);
    };
    mem.batches.fetch_add(1, SeqCst);
    let mut delivered = mem.delivered.lock().unwrap();
    for (k, r) in records.iter().enumerate() {
        delivered.push(Delivered {
            node: node.to_string(),
            segment: segment.to_string(),
            offset: offset + k as u64,
            record: r.clone(),
        });
    }
    reply(200, r#"{"accepted":true}"#)
}
