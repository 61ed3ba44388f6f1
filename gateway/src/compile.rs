//! The config compiler: turns a [`Config`] into an immutable [`Runtime`] or names the bad field.
//!
//! Every rule a config must pass is checked by [`fenfa_config::check::plan`] (the control plane
//! runs the same function); this module resolves target names where the gateway runs and
//! attaches what only a running proxy has — pingora peers and their TLS trust, health state that
//! outlives snapshots, route metrics, the listener's certificates — so that the request path only
//! reads. The result is swapped in atomically by `crate::gateway`.

use std::sync::Arc;
use std::time::Duration;

use fenfa_config::check::{self, Balancing, Plan, ServicePlan, SystemResolver};
use fenfa_plugins::{Chain, Registry};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

pub use fenfa_config::check::ActiveCheck;
pub use fenfa_config::rewrite::Rewrite;

use crate::config::model::HostHeader;
use crate::config::{Config, ConfigError};
use crate::metrics::{Metrics, RouteMetrics, SnapshotCount};
use crate::router::Router;
use crate::tls::CertSet;
use crate::upstream::health::HealthRegistry;
use crate::upstream::Pool;

/// A compiled snapshot: everything a request needs, immutable.
pub struct Runtime {
    /// Version label (from the config, or a content hash).
    pub version: String,
    pub router: Router<Arc<CompiledRoute>>,
    pub services: Vec<Arc<CompiledService>>,
    /// Certificates for the HTTPS listener, if configured.
    pub certificates: Option<Arc<CertSet>>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: fenfa_plugins::cidr::CidrSet,
    /// The shared H5 domain: verification files by name, and their hosts.
    pub h5: fenfa_config::h5::H5Plan,
    /// Every route, for the metrics' label set (the router holds the same `Arc`s).
    pub routes: Vec<Arc<CompiledRoute>>,
    /// The settings a running process reads once (listeners, audit, tracing, threads): kept to
    /// start from and to warn when a reload changes them. Only these: the parsed document
    /// itself is not kept (for 100k routes it is as large as the snapshot, and a reload would
    /// hold two of it).
    pub settings: Settings,
    /// Counts this snapshot in `fenfa_config_snapshots` until it is freed.
    pub counted: SnapshotCount,
}

/// The process-level settings of the config a snapshot was compiled from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listeners: crate::config::model::Listeners,
    pub gateway: crate::config::model::GatewaySettings,
    pub audit: crate::config::model::AuditSettings,
    pub tracing: Option<crate::config::model::TracingSettings>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("version", &self.version)
            .field("routes", &self.router.len())
            .field("services", &self.services.len())
            .finish()
    }
}

/// What the compiler needs from the running process (shared state that outlives snapshots).
pub struct CompileEnv<'a> {
    pub plugins: &'a Registry,
    pub health: &'a HealthRegistry,
    pub metrics: &'a Metrics,
}

/// One service: its pool and how to talk to its targets.
#[derive(Debug)]
pub struct CompiledService {
    pub name: Arc<str>,
    /// The owning agency's name, or empty.
    pub agency: Arc<str>,
    pub pool: Pool,
    pub tls: bool,
    pub sni: Option<String>,
    pub verify: bool,
    pub ca: Option<Arc<[WrappedX509]>>,
    /// Keeps pooled connections apart by trust store: pingora's reuse key covers the address,
    /// SNI and verify flags but not the CA, so without this a connection verified against one
    /// service's `ca` could be reused by another service that does not trust that CA.
    pub trust_group: u64,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub total_timeout: Duration,
    pub retries: u32,
    pub keepalive: Duration,
    pub host_header: HostHeader,
    pub active: Option<ActiveCheck>,
}

impl CompiledService {
    /// The pingora peer for target `i`, with this service's TLS and timeout settings.
    pub fn peer(&self, i: usize) -> HttpPeer {
        let t = &self.pool.targets()[i];
        let sni = self.sni.clone().unwrap_or_else(|| t.host.clone());
        let mut peer = HttpPeer::new(t.addr, self.tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(self.connect_timeout);
        o.total_connection_timeout = Some(self.connect_timeout);
        o.read_timeout = Some(self.read_timeout);
        o.write_timeout = Some(self.write_timeout);
        o.idle_timeout = Some(self.keepalive);
        o.verify_cert = self.verify;
        o.verify_hostname = self.verify;
        if let Some(ca) = &self.ca {
            o.ca = Some(ca.clone());
        }
        peer.group_key = self.trust_group;
        peer
    }
}

/// One route: where it goes and what runs on it.
#[derive(Debug)]
pub struct CompiledRoute {
    pub name: Arc<str>,
    pub service: Arc<CompiledService>,
    pub strip_prefix: bool,
    pub rewrite: Option<Rewrite>,
    pub plugins: Chain,
    pub metrics: Arc<RouteMetrics>,
    /// For a route of a `kind: h5` service: its security headers (`crate::h5`).
    pub h5: Option<Arc<fenfa_config::h5::H5Headers>>,
}

/// Compiles a config: [`check::plan`] with the system resolver, then the proxy's own parts.
/// Pure apart from DNS look-ups of target host names and reading TLS files.
pub fn compile(config: &Config, env: &CompileEnv<'_>) -> Result<Runtime, ConfigError> {
    crate::audit::check(&config.audit)?;
    if let Some(t) = &config.tracing {
        crate::config::traces::check(t)?;
    }
    let Plan {
        version,
        router,
        routes,
        services,
        trusted_proxies,
        h5,
    } = check::plan(config, env.plugins, &SystemResolver)?;
    crate::h5::cache::init(config.gateway.h5_cache_bytes);
    let certificates = if config.gateway.tls.certificates.is_empty() {
        None
    } else {
        Some(Arc::new(CertSet::load(&config.gateway.tls.certificates)?))
    };
    let service_h5: Vec<_> = services.iter().map(|s| s.h5.clone()).collect();
    let services: Vec<Arc<CompiledService>> = services
        .into_iter()
        .map(|s| Arc::new(compile_service(s, env)))
        .collect();
    let routes: Vec<Arc<CompiledRoute>> = routes
        .into_iter()
        .map(|r| {
            let service = services[r.service].clone();
            Arc::new(CompiledRoute {
                metrics: env.metrics.route(&r.name, &service.name),
                name: r.name,
                service,
                strip_prefix: r.strip_prefix,
                rewrite: r.rewrite,
                plugins: r.plugins,
                h5: service_h5[r.service].clone(),
            })
        })
        .collect();
    Ok(Runtime {
        h5,
        trusted_proxies,
        version,
        router: router.map(|i| routes[i].clone()),
        routes,
        services,
        certificates,
        settings: Settings {
            listeners: config.listeners.clone(),
            gateway: config.gateway.clone(),
            audit: config.audit.clone(),
            tracing: config.tracing.clone(),
        },
        counted: SnapshotCount::new(env.metrics),
    })
}

/// A checked service with its pool (health state from `env`) and pingora trust settings.
fn compile_service(s: ServicePlan, env: &CompileEnv<'_>) -> CompiledService {
    let targets = s
        .targets
        .iter()
        .map(|t| {
            // The system resolver always answers with an address (or the check failed).
            let addr = t
                .addr
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
            let state = env.health.target(&s.name, addr, &t.authority, &t.host);
            if s.active.is_none() {
                state.reset_active();
            }
            (state, t.weight)
        })
        .collect();
    let pool = match s.balancing {
        Balancing::RoundRobin => Pool::round_robin(targets, s.passive),
        Balancing::ConsistentHash(on) => Pool::consistent_hash(targets, on, s.passive),
    };
    let ca: Option<Arc<[WrappedX509]>> = s.ca.as_ref().map(|certs| {
        certs
            .iter()
            .map(|c| WrappedX509::new(c.as_ref().to_vec(), pingora::utils::tls::parse_x509))
            .collect()
    });
    let trust_group = ca.as_deref().map_or(0, trust_group);
    CompiledService {
        name: s.name,
        agency: s.agency,
        pool,
        tls: s.tls,
        sni: s.sni,
        verify: s.verify,
        ca,
        trust_group,
        connect_timeout: s.connect_timeout,
        read_timeout: s.read_timeout,
        write_timeout: s.write_timeout,
        total_timeout: s.total_timeout,
        retries: s.retries,
        keepalive: s.keepalive,
        host_header: s.host_header,
        active: s.active,
    }
}

/// A connection-pool group for a CA bundle: equal bundles share connections, others never do.
fn trust_group(ca: &[WrappedX509]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in ca {
        c.borrow_raw_cert().hash(&mut h);
    }
    // 0 is the group of services on the system roots.
    h.finish().max(1)
}
