//! Where shipped records go: the [`Sink`] trait and the control plane's ingest endpoint
//! ([`HttpSink`]).
//!
//! A sink receives batches of consecutive records of one segment and either takes the whole batch
//! (`Ok`) or none of it (`Err`, retried later with the same start). Record `k` of a batch has the
//! idempotency key `(node, segment, offset + k)`: a receiver that stores by that key stays exact
//! however often a batch is re-sent.
//!
//! The HTTP sink posts over the gateway's background client (`fenfa_net`): `https://`
//! with the CA and client certificate of `audit.ship.tls`, or plain `http://` to a loopback
//! address (or anywhere with `audit.ship.insecure`). The OTLP logs sink is in [`super::otlp`].

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method};

use fenfa_config::model::AuditShip;
use fenfa_net::{ClientError, Endpoint, Names, Settings};

/// A batch of records to deliver.
#[derive(Debug)]
pub struct Batch<'a> {
    pub node: &'a str,
    /// Segment file name, e.g. `audit-0000000003.jsonl`.
    pub segment: &'a str,
    /// 0-based line number of the first record in the segment.
    pub offset: u64,
    /// The stored record lines (JSON objects), in order.
    pub records: &'a [Vec<u8>],
}

impl Batch<'_> {
    /// `{"node":…,"segment":…,"offset":…,"records":[…]}`; records are embedded as stored.
    pub fn to_json(&self) -> Vec<u8> {
        let size: usize = self.records.iter().map(|r| r.len() + 1).sum();
        let mut out = Vec::with_capacity(size + 128);
        out.extend_from_slice(b"{\"node\":");
        let _ = serde_json::to_writer(&mut out, self.node);
        out.extend_from_slice(b",\"segment\":");
        let _ = serde_json::to_writer(&mut out, self.segment);
        out.extend_from_slice(format!(",\"offset\":{},\"records\":[", self.offset).as_bytes());
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(r);
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// `node/segment/offset`, sent as the `Idempotency-Key` header.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.node, self.segment, self.offset)
    }
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Not sent, or no complete answer (retried).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The receiver answered, but did not take the batch.
    #[error("{what} answered {status}: {excerpt}")]
    Refused {
        what: &'static str,
        status: u16,
        excerpt: String,
    },
    /// Any other reason a sink has.
    #[error("{0}")]
    Other(String),
}

/// A destination for audit batches. Called from its shipper task only, on the background
/// network runtime.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Short name, used for the cursor file (`ship-<name>.cursor`) and logs.
    fn name(&self) -> &str;
    /// Delivers the whole batch, or fails without side effects the receiver keeps.
    async fn send(&mut self, batch: &Batch<'_>) -> Result<(), SinkError>;
}

/// The config's TLS files as `fenfa-net` takes them.
pub fn net_tls(t: &fenfa_config::model::ClientTls) -> fenfa_net::ClientTls<'_> {
    fenfa_net::ClientTls {
        ca: t.ca.as_deref(),
        client_cert: t.client_cert.as_deref(),
        client_key: t.client_key.as_deref(),
    }
}

/// The client settings of `audit.ship`.
pub fn settings(s: &AuditShip) -> Settings<'_> {
    Settings {
        url: &s.url,
        tls: net_tls(&s.tls),
        insecure: s.insecure,
        connect_timeout: s.timeout.0,
        max_body: s.max_response_bytes,
        names: Names::section("audit.ship"),
    }
}

/// Posts batches as JSON to the control plane's ingest endpoint with the node token.
pub struct HttpSink {
    endpoint: Endpoint,
    auth: HeaderValue,
    timeout: Duration,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("url", &self.endpoint.url.as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl HttpSink {
    /// Checks the settings and builds the client (`insecure` is logged here); connects to nothing.
    pub fn new(ship: &AuditShip, token: String) -> Result<Self, ClientError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::Setting {
                field: "audit.ship.token".into(),
                message: "the node token contains characters a header cannot carry".into(),
            }
        })?;
        auth.set_sensitive(true);
        Ok(Self {
            endpoint: Endpoint::new(&settings(ship))?,
            auth,
            timeout: ship.timeout.0,
        })
    }
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &str {
        "http"
    }

    async fn send(&mut self, batch: &Batch<'_>) -> Result<(), SinkError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, self.auth.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(key) = HeaderValue::from_str(&batch.key()) {
            headers.insert("idempotency-key", key);
        }
        let answer = self
            .endpoint
            .request(
                Method::POST,
                self.endpoint.url.clone(),
                headers,
                batch.to_json(),
                self.timeout,
            )
            .await?;
        if (200..300).contains(&answer.status) {
            Ok(())
        } else {
            Err(SinkError::Refused {
                what: "the ingest endpoint",
                status: answer.status,
                excerpt: answer.excerpt(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_json_with_its_records_embedded() {
        let records = vec![br#"{"a":1}"#.to_vec(), br#"{"a":2}"#.to_vec()];
        let b = Batch {
            node: "n\"1",
            segment: "audit-0000000001.jsonl",
            offset: 7,
            records: &records,
        };
        let v: serde_json::Value = serde_json::from_slice(&b.to_json()).unwrap();
        assert_eq!(v["node"], "n\"1");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["records"][1]["a"], 2);
    }

    fn ship(url: &str) -> AuditShip {
        serde_json::from_value(serde_json::json!({"url": url, "token": "t", "timeout": "500ms"}))
            .unwrap()
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s =
            HttpSink::new(&ship(&format!("http://127.0.0.1:{port}/x")), "t".into()).unwrap();
        let records = vec![b"{}".to_vec()];
        let b = Batch {
            node: "n",
            segment: "s",
            offset: 0,
            records: &records,
        };
        let e = s.send(&b).await.unwrap_err().to_string();
        assert!(e.starts_with("cannot connect to 127.0.0.1"), "{e}");
    }

    #[test]
    fn plain_http_off_loopback_is_refused_before_any_connection() {
        let e = HttpSink::new(
            &ship("http://control-plane.invalid:9180/v1/dataplane/audit"),
            "t".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("audit.ship.url: plain http:// to `control-plane.invalid` is refused"),
            "{e}"
        );
    }
}
