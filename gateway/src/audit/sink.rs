//! Where shipped records go: the [`Sink`] trait and the control plane's ingest endpoint
//! ([`HttpSink`]).
//!
//! A sink receives batches of consecutive records of one segment and either takes the whole batch
//! (`Ok`) or none of it (`Err`, retried later with the same start). Record `k` of a batch has the
//! idempotency key `(node, segment, offset + k)`: a receiver that stores by that key stays exact
//! however often a batch is re-sent.
//!
//! The HTTP sink is a deliberately small HTTP/1.1 client over `std::net::TcpStream` (one
//! connection per batch, `Connection: close`): the gateway does not carry a second HTTP client
//! stack for a background job. It speaks plain `http://` only; run it over a private network or a
//! local TLS forwarder (see `docs/audit.md`). The OTLP logs sink is in [`super::otlp`].

use std::time::Duration;

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

/// A destination for audit batches. Called from the shipper thread only; may block.
pub trait Sink: Send {
    /// Short name, used for the cursor file (`ship-<name>.cursor`) and logs.
    fn name(&self) -> &str;
    /// Delivers the whole batch, or fails without side effects the receiver keeps.
    fn send(&mut self, batch: &Batch<'_>) -> Result<(), String>;
}

/// `http://host[:port]/path`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for HttpUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(format!(
                    "`{url}`: https is not supported by the built-in sink; use http:// on a private network or through a local TLS forwarder"
                ))
            }
            _ => return Err(format!("`{url}` is not an http:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: bad IPv6 host"))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port `{p}`"))?,
            None => 80,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// Posts batches as JSON to the control plane's ingest endpoint with the node token.
pub struct HttpSink {
    url: HttpUrl,
    token: String,
    timeout: Duration,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl HttpSink {
    pub fn new(url: &str, token: String, timeout: Duration) -> Result<Self, String> {
        if token.bytes().any(|b| b.is_ascii_control()) {
            return Err("the audit ship token contains control characters".into());
        }
        Ok(Self {
            url: url.parse()?,
            token,
            timeout,
        })
    }

    fn post(&self, body: &[u8], idempotency_key: &str) -> Result<u16, String> {
        let auth = format!("Bearer {}", self.token);
        let answer = crate::http_client::request(
            &self.url,
            "POST",
            &self.url.path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", idempotency_key),
            ],
            body,
            self.timeout,
        )?;
        if (200..300).contains(&answer.status) {
            Ok(answer.status)
        } else {
            Err(format!(
                "the ingest endpoint answered {}: {}",
                answer.status,
                answer.excerpt()
            ))
        }
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        "http"
    }

    fn send(&mut self, batch: &Batch<'_>) -> Result<(), String> {
        self.post(&batch.to_json(), &batch.key()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_https_is_refused_with_a_reason() {
        let u: HttpUrl = "http://cp.internal:9180/v1/dataplane/audit"
            .parse()
            .unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("cp.internal", 9180, "/v1/dataplane/audit")
        );
        let u: HttpUrl = "http://[::1]/x".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert!("https://cp/x"
            .parse::<HttpUrl>()
            .unwrap_err()
            .contains("forwarder"));
        assert!("ftp://x".parse::<HttpUrl>().is_err());
    }

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

    #[test]
    fn an_unreachable_endpoint_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = HttpSink::new(
            &format!("http://127.0.0.1:{port}/x"),
            "t".into(),
            Duration::from_millis(500),
        )
        .unwrap();
        let records = vec![b"{}".to_vec()];
        let b = Batch {
            node: "n",
            segment: "s",
            offset: 0,
            records: &records,
        };
        assert!(s.send(&b).is_err());
    }
}
