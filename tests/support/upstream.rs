//! A real HTTP upstream on a loopback port (hyper), with knobs tests need.
//!
//! Every request is answered with JSON describing it (`name`, `method`, `path`, `query`,
//! `headers`, `body_len`) and an `x-upstream: <name>` header. Special paths:
//! - a path containing `/__status/NNN` answers with status NNN;
//! - a path containing `/__sleep/MS` waits MS milliseconds before answering;
//! - `/healthz` answers 200, or 503 while [`Upstream::set_healthy`] is false.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// The request body exactly as received.
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct State {
    pub name: String,
    pub healthy: AtomicBool,
    pub hits: AtomicUsize,
    pub health_hits: AtomicUsize,
    /// TCP connections accepted (health probes' connections included).
    pub conns: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Starts a plain HTTP upstream on its own thread and runtime.
    pub fn start(name: &str) -> Self {
        Self::start_inner(name, None, None)
    }

    /// Starts on a given address (e.g. to bring a target back on the same port).
    pub fn start_at(name: &str, addr: SocketAddr) -> Self {
        Self::start_inner(name, None, Some(addr))
    }

    /// Starts an HTTPS upstream with the given rustls config.
    pub fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(name, Some(tls), None)
    }

    fn start_inner(
        name: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        at: Option<SocketAddr>,
    ) -> Self {
        let state = Arc::new(State {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            conns: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let listener =
            std::net::TcpListener::bind(at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
                .expect("bind upstream");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            st.conns.fetch_add(1, SeqCst);
                            let st = st.clone();
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| handle(st.clone(), req));
                                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                                match acceptor {
                                    Some(a) => {
                                        if let Ok(tls) = a.accept(stream).await {
                                            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                                        }
                                    }
                                    None => {
                                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                                    }
                                }
                            });
                        }
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Self {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, SeqCst);
    }

    /// Proxied requests received (health probes excluded).
    pub fn hits(&self) -> usize {
        self.state.hits.load(SeqCst)
    }

    pub fn health_hits(&self) -> usize {
        self.state.health_hits.load(SeqCst)
    }

    /// TCP connections accepted so far (health probes' connections included).
    pub fn connections(&self) -> usize {
        self.state.conns.load(SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().last().cloned().expect("upstream saw a request")
    }

    /// Stops accepting and closes the port.
    pub fn stop(mut self) {
        self.shutdown();
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

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn handle(
    st: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        st.health_hits.fetch_add(1, SeqCst);
        let code = if st.healthy.load(SeqCst) { 200 } else { 503 };
        return Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::from_static(b"health")))
            .unwrap());
    }
    st.hits.fetch_add(1, SeqCst);
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        headers: headers.clone(),
        body_len: body.len(),
        body: body.clone(),
    };
    st.seen.lock().unwrap().push(seen);
    let mut status = 200;
    if let Some((_, code)) = path.split_once("/__status/") {
        status = code.parse().unwrap_or(500);
    }
    if let Some((_, ms)) = path.split_once("/__sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    let json = serde_json::json!({
        "name": st.name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "body_len": body.len(),
    });
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", st.name.clone())
        .body(Full::new(Bytes::from(serde_json::to_vec(&json).unwrap())))
        .unwrap())
}
