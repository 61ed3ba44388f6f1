//! Test support: real upstream servers on loopback and the real `fenfa-gateway` binary.
//!
//! Nothing here is a mock: upstreams are hyper servers on ephemeral loopback ports, the gateway is
//! the built binary started as a child process with its own temp dir, and clients talk HTTP over
//! TCP (reqwest, or raw bytes for malformed requests).
#![allow(dead_code)]

pub mod collector;
pub mod otlp;
pub mod pki;
pub mod python;
pub mod tokens;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use upstream::Upstream;

/// A port that was free a moment ago (the kernel hands out a fresh ephemeral one each time).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub status: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
    listeners: String,
    /// The gateway binary: `fenfa-gateway`, or an embedder's (see [`Gateway::start_bin`]).
    bin: PathBuf,
}

/// Listener block for the given ports; `with_https` adds the HTTPS listener.
fn listeners(http: SocketAddr, https: Option<SocketAddr>, status: SocketAddr) -> String {
    let mut s = format!("listeners:\n  http: \"{http}\"\n  status: \"{status}\"\n");
    if let Some(h) = https {
        s.push_str(&format!("  https: \"{h}\"\n"));
    }
    s
}

impl Gateway {
    /// Starts the gateway with `body` (a YAML config without `listeners`) and waits until ready.
    pub fn start(body: &str) -> Self {
        Self::start_opts(body, false)
    }

    /// Like [`Gateway::start`], with an HTTPS listener too (`body` must configure certificates).
    pub fn start_tls(body: &str) -> Self {
        Self::start_opts(body, true)
    }

    /// Like [`Gateway::start`] with another binary that takes the same `--config` and
    /// `--data-dir` arguments (e.g. a gateway with extra plugins registered).
    pub fn start_bin(bin: &str, body: &str) -> Self {
        Self::start_with(PathBuf::from(bin), body, false)
    }

    fn start_opts(body: &str, tls: bool) -> Self {
        let bin =
            PathBuf::from(option_env!("CARGO_BIN_EXE_fenfa-gateway").unwrap_or("fenfa-gateway"));
        Self::start_with(bin, body, tls)
    }

    fn start_with(bin: PathBuf, body: &str, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listeners = listeners(http, tls.then_some(https), status);
        let config_path = dir.path().join("fenfa.yaml");
        std::fs::write(&config_path, format!("{listeners}{body}")).unwrap();
        let mut gw = Self {
            child: None,
            http,
            https,
            status,
            log_path: dir.path().join("gateway.log"),
            dir,
            config_path,
            listeners,
            bin,
        };
        gw.spawn();
        gw.wait_ready();
        gw
    }

    /// Starts the binary on the current config file (again, after a stop).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env("FENFA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start fenfa-gateway");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("gateway running")
    }

    /// Waits until `/readyz` answers 200, or panics with the gateway's log.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "gateway exited with {st} before it was ready; log:\n{}",
                        self.logs()
                    );
                }
            }
            // Ready means a config is live; the proxy port may still be binding (pingora retries a
            // busy port), so also wait until it accepts connections.
            if let Ok((200, _)) = http_get(self.status, "/readyz") {
                if TcpStream::connect(self.http).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("gateway not ready in 20s; log:\n{}", self.logs());
    }

    /// Replaces the config (listeners kept) atomically, as an editor's save-by-rename would.
    pub fn write_config(&self, body: &str) {
        self.write_raw_config(&format!("{}{body}", self.listeners));
    }

    /// Replaces the whole config file text atomically.
    pub fn write_raw_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .expect("signal gateway");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("gateway running");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway did not exit within {timeout:?}; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `/status` as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let (code, body) = http_get(self.status, "/status").expect("status listener");
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// The config generation currently live.
    pub fn generation(&self) -> u64 {
        self.status_json()["config"]["generation"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until the live generation is at least `g` (a reload happened).
    pub fn wait_generation(&self, g: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.generation() < g {
            assert!(
                Instant::now() < deadline,
                "config generation {g} never went live; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.status, "/metrics").expect("metrics").1
    }

    /// `/metrics` once no request is in flight, so that every request answered so far is in it:
    /// the gateway counts a request after writing its answer, so a scrape right after a response
    /// may not show that response yet. Panics with the last scrape after 10 s.
    pub fn settled_metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.metrics();
            if m.lines().any(|l| l == "fenfa_http_requests_in_flight 0") {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "requests still in flight after 10 s:\n{m}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A metric sample's value, e.g. `metric("fenfa_config_reload_failures_total")`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Minimal blocking HTTP/1.1 GET over a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let resp = raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sends raw bytes and reads until the server closes or 5 s pass. For malformed requests.
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() && e.kind() != std::io::ErrorKind::WouldBlock => {
                return Err(e)
            }
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Status code of a raw HTTP response text.
pub fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A reqwest client that never uses a system proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// The JSON error body's `error.code`.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, code, body)
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
