//! TLS on the admin API listener (`fenfa-admin serve --tls-cert FILE --tls-key FILE`).
//!
//! Why it exists: gateways fetch their config (agency signing secrets, HS256 keys) and deliver
//! every audit record to this listener with a node token, and operators log in on it; off a
//! single host that traffic must be encrypted. [`TlsListener`] accepts TCP connections, runs each
//! TLS handshake in its own task (a slow or silent client holds up nobody, and gives up after
//! [`HANDSHAKE_TIMEOUT`]) and hands finished connections to `axum::serve`, so the router, the
//! client address (`ConnectInfo`) and graceful behaviour stay exactly those of plain HTTP.
//!
//! What it may not do: serve anything before the handshake completed, or log key material.
//! rustls with the ring provider; TLS 1.2 and 1.3; HTTP/1.1 (offered by ALPN).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self as pem, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest time a client gets to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that cannot be used; names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct TlsError {
    pub flag: &'static str,
    pub message: String,
}

fn err(flag: &'static str, message: String) -> TlsError {
    TlsError { flag, message }
}

/// The server settings for a certificate chain (PEM, leaf first) and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cf, kf) = ("--tls-cert", "--tls-key");
    let pem = std::fs::read(cert)
        .map_err(|e| err(cf, format!("cannot read `{}`: {e}", cert.display())))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cf, format!("`{}` is not valid PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(err(
            cf,
            format!("`{}` holds no certificate", cert.display()),
        ));
    }
    let pem =
        std::fs::read(key).map_err(|e| err(kf, format!("cannot read `{}`: {e}", key.display())))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => err(kf, format!("`{}` holds no private key", key.display())),
        e => err(kf, format!("`{}` is not valid PEM: {e}", key.display())),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cf, format!("TLS settings: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, der)
        .map_err(|e| {
            err(
                kf,
                format!(
                    "`{}` cannot be used with `{}`: {e}",
                    key.display(),
                    cert.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that yields connections whose TLS handshake is complete.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (a task on the current runtime).
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, as axum does.
                        tracing::warn!(error = %e, "admin listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "admin listener: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(client = %addr, "admin listener: TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (it never does while the listener lives): accept nothing.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
