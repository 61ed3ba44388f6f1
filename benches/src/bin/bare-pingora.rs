//! A bare pingora reverse proxy: the floor Fenfa is compared against.
//!
//! `bare-pingora LISTEN UPSTREAM THREADS` forwards every request to UPSTREAM over a keepalive pool.
//!
//! `bare-pingora LISTEN UPSTREAM THREADS JWKS_FILE` also checks the ES256 signature of the
//! request's bearer token against the first key of the JWK set, on every request, with ring (the
//! library Fenfa's `jwt-auth` uses), and answers 401 when it does not verify. Nothing else: no
//! claims, no cache, no headers. That is the floor of a request with a fresh token: the
//! framework plus the one signature no gateway can skip (BENCHMARKS.md, "Round three").

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

struct Bare {
    upstream: std::net::SocketAddr,
    /// The uncompressed P-256 point (0x04 ‖ x ‖ y) that signs the tokens, when checking them.
    es256: Option<Vec<u8>>,
}

/// True when the `Authorization: Bearer` token's ES256 signature verifies under `key`.
fn signature_verifies(key: &[u8], session: &Session) -> bool {
    let Some(token) = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let Some((signed, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let mut sig = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(signature, &mut sig) {
        Ok(64) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
            .verify(signed.as_bytes(), &sig)
            .is_ok(),
        _ => false,
    }
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _c: &mut ()) -> Result<bool> {
        let Some(key) = &self.es256 else {
            return Ok(false);
        };
        if signature_verifies(key, session) {
            return Ok(false);
        }
        session.respond_error(401).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// The first key of a JWK set file as an uncompressed P-256 point.
fn es256_key(path: &str) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let set: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON: {e}"))?;
    let coordinate = |name: &str| -> Result<Vec<u8>, String> {
        let b64 = set["keys"][0][name]
            .as_str()
            .ok_or_else(|| format!("{path}: keys[0].{name}: expected a base64url string"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| format!("{path}: keys[0].{name}: {e}"))?;
        if bytes.len() != 32 {
            return Err(format!("{path}: keys[0].{name}: expected 32 bytes"));
        }
        Ok(bytes)
    };
    let mut point = vec![4];
    point.extend(coordinate("x")?);
    point.extend(coordinate("y")?);
    Ok(point)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM THREADS [JWKS_FILE]");
        std::process::exit(2);
    }
    let upstream = args[2].parse().unwrap_or_else(|e| {
        eprintln!("bad upstream address {}: {e}", args[2]);
        std::process::exit(2)
    });
    let threads = args[3].parse().unwrap_or(1);
    let es256 = args.get(4).map(|path| {
        es256_key(path).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        })
    });
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream, es256 });
    proxy.add_tcp(&args[1]);
    server.add_service(proxy);
    server.run_forever();
}
