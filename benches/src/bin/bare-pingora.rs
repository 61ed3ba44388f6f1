//! A bare pingora reverse proxy: the floor Fenfa is compared against.
//!
//! `bare-pingora LISTEN UPSTREAM THREADS` forwards every request to UPSTREAM over a keepalive pool.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    }
    let upstream = args[2].parse().unwrap_or_else(|e| {
        eprintln!("bad upstream address {}: {e}", args[2]);
        std::process::exit(2)
    });
    let threads = args[3].parse().unwrap_or(1);
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&args[1]);
    server.add_service(proxy);
    server.run_forever();
}
