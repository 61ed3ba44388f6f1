//! An OTLP/HTTP logs receiver on a loopback port that checks every request against the official
//! OpenTelemetry protobuf definitions (PyPI `opentelemetry-proto`, parsed with protobuf's strict
//! JSON parser: an unknown field, a wrong type or a bad enum is an error).
//!
//! An OpenTelemetry Collector cannot be installed on this machine (it is not in the package
//! registries that are reachable), so this is the collector's side as the tests see it: it
//! answers the first `fail_first` requests with 503 (an outage the exporter must ride out), then
//! 200 `{}`, and writes every accepted log record, with the request's `Authorization` header and
//! resource attributes, as a JSON line to a file the test reads. Requests the schema refuses are
//! answered 400 and written to the same file as `{"error": …}`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = r#"
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

out_path, fail_first = sys.argv[1], int(sys.argv[2])
lock = threading.Lock()
state = {"failures_left": fail_first}

def write(obj):
    with lock, open(out_path, "a") as f:
        f.write(json.dumps(obj) + "\n")

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/logs" or self.headers.get("Content-Type") != "application/json":
            write({"error": f"wrong path or content type: {self.path} {self.headers.get('Content-Type')}"})
            return self.answer(404, {})
        with lock:
            fail = state["failures_left"] > 0
            if fail:
                state["failures_left"] -= 1
        if fail:
            return self.answer(503, {})
        try:
            req = json_format.Parse(body, ExportLogsServiceRequest())
        except Exception as e:
            write({"error": str(e)})
            return self.answer(400, {})
        for rl in req.resource_logs:
            resource = {a.key: a.value.string_value for a in rl.resource.attributes}
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    write({"auth": self.headers.get("Authorization"), "resource": resource,
                           "scope": sl.scope.name,
                           "record": json_format.MessageToDict(lr)})
        self.answer(200, {})

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 3:
    # TLS with the given certificate and key; with a client CA, a client certificate is required.
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    if len(sys.argv) > 5:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(sys.argv[5])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

pub struct OtlpReceiver {
    child: Child,
    port: u16,
    tls: bool,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl OtlpReceiver {
    /// Starts the receiver; it answers the first `fail_first` requests with 503.
    pub fn start(fail_first: u32) -> Self {
        Self::start_with(fail_first, &[])
    }

    /// Starts the receiver over TLS with `cert` and `key` (PEM); with `client_ca`, it refuses
    /// clients without a certificate that CA issued.
    pub fn start_tls(
        fail_first: u32,
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Self {
        let mut args = vec![cert, key];
        args.extend(client_ca);
        Self::start_with(fail_first, &args)
    }

    fn start_with(fail_first: u32, tls: &[&std::path::Path]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(&out)
            .arg(fail_first.to_string())
            .args(tls)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (with opentelemetry-proto: pip install opentelemetry-proto)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the OTLP receiver did not start (pip install opentelemetry-proto): {line:?}")
        });
        Self {
            child,
            port,
            tls: !tls.is_empty(),
            out,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:…/v1/logs`, or `https://localhost:…/v1/logs` over TLS (the name on
    /// the test certificate).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/v1/logs", self.port)
        } else {
            format!("http://127.0.0.1:{}/v1/logs", self.port)
        }
    }

    /// Everything written so far: accepted log records and refused requests.
    pub fn received(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // Only whole lines: the receiver may be writing the next one.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
