//! An OTLP/HTTP logs and traces receiver on a loopback port that checks every request against the
//! official OpenTelemetry protobuf definitions (PyPI `opentelemetry-proto`). Logs (`/v1/logs`)
//! come as JSON and are parsed with protobuf's strict JSON parser: an unknown field, a wrong type
//! or a bad enum is an error. Traces (`/v1/traces`) come as binary protobuf: a body that does not
//! decode, or holds bytes the schema does not account for (unknown fields), or a span without a
//! 16-byte trace id, an 8-byte span id, a kind, a name or an end after its start, is an error.
//!
//! An OpenTelemetry Collector cannot be installed on this machine (it is not in the package
//! registries that are reachable), so this is the collector's side as the tests see it: it
//! answers the first `fail_first` requests (of either signal) with 503 (an outage the exporter
//! must ride out), then 200 (`{}` for logs, an empty protobuf answer for traces), and writes every accepted log record, with the request's `Authorization` header and
//! resource attributes, as a JSON line to a file the test reads; each accepted span likewise, as
//! `{"span": …}` with its ids in hex. Requests the schema refuses are answered 400 and written to
//! the same file as `{"error": …}`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = r#"
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

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

    def traces(self, body):
        with lock:
            fail = state["failures_left"] > 0
            if fail:
                state["failures_left"] -= 1
        if fail:
            return self.answer(503, {})
        try:
            req = ExportTraceServiceRequest.FromString(body)
            # Every byte must be the schema's: without unknown fields the size is unchanged.
            req.DiscardUnknownFields()
            if req.ByteSize() != len(body):
                raise ValueError(f"{len(body) - req.ByteSize()} bytes of unknown fields")
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        if len(s.trace_id) != 16 or len(s.span_id) != 8:
                            raise ValueError(f"bad ids in span {s.name}")
                        if len(s.parent_span_id) not in (0, 8):
                            raise ValueError(f"bad parent id in span {s.name}")
                        if not s.name or s.kind == 0:
                            raise ValueError(f"span without a name or kind: {s}")
                        if s.end_time_unix_nano < s.start_time_unix_nano or s.start_time_unix_nano == 0:
                            raise ValueError(f"span {s.name} ends before it starts")
        except Exception as e:
            write({"error": str(e)})
            return self.answer(400, {})
        for rs in req.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    write({"auth": self.headers.get("Authorization"), "resource": resource,
                           "scope": ss.scope.name,
                           "span": {"trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                    "parent_span_id": s.parent_span_id.hex(), "name": s.name,
                                    "kind": Span.SpanKind.Name(s.kind),
                                    "status": Status.StatusCode.Name(s.status.code),
                                    "attributes": {a.key: json_format.MessageToDict(a.value)
                                                   for a in s.attributes}}})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf":
            return self.traces(body)
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

    /// `http://127.0.0.1:…/v1/traces`, or `https://localhost:…/v1/traces` over TLS.
    pub fn traces_url(&self) -> String {
        self.url().replace("/v1/logs", "/v1/traces")
    }

    /// The spans received so far (`{"span": …, "resource": …, "scope": …, "auth": …}`);
    /// panics if the schema refused a request.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        let received = self.received();
        if let Some(e) = received.iter().find(|r| r.get("error").is_some()) {
            panic!("the OTLP schema refused a request: {e}");
        }
        received
            .into_iter()
            .filter(|r| r.get("span").is_some())
            .collect()
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
