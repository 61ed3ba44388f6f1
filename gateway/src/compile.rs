//! The config compiler: turns a [`Config`] into an immutable [`Runtime`] or names the bad field.
//!
//! Compiling does every check and every expensive step (DNS, certificate parsing, plugin schema
//! checks, router construction) so that the request path only reads. The result is swapped in
//! atomically by `crate::gateway`; the control plane calls the same function to validate a change
//! before committing it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use fenfa_plugins::{Chain, Plugin, Registry};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use rustls::pki_types::{pem::PemObject, CertificateDer};

use crate::config::model::{self, Balance, HostHeader, PluginRef, Scheme};
use crate::config::{Config, ConfigError};
use crate::metrics::{Metrics, RouteMetrics};
use crate::router::{HostPattern, PathPattern, Router, RouterBuilder};
use crate::tls::CertSet;
use crate::upstream::health::HealthRegistry;
use crate::upstream::{HashOn, PassivePolicy, Pool};

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
    /// The source config, kept for `/status` and listener checks.
    pub config: Config,
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

/// Active health check settings of a service.
#[derive(Debug, Clone)]
pub struct ActiveCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub healthy_statuses: Vec<u16>,
    pub host: Option<String>,
}

impl ActiveCheck {
    pub fn is_healthy_status(&self, status: u16) -> bool {
        if self.healthy_statuses.is_empty() {
            (200..400).contains(&status)
        } else {
            self.healthy_statuses.contains(&status)
        }
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
}

/// A parsed `rewrite` template.
#[derive(Debug, Clone)]
pub struct Rewrite {
    parts: Vec<RewritePart>,
}

#[derive(Debug, Clone)]
enum RewritePart {
    Literal(String),
    Param(String),
    Rest,
}

impl Rewrite {
    fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("`{s}` must start with `/`"));
        }
        if s.contains(['?', '#']) || s.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(format!("`{s}` must be a path only: no `?`, `#`, spaces or control characters (the query string is passed through unchanged)"));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(RewritePart::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{s}` has an unclosed `{{`"))?
                + open;
            let name = &rest[open + 1..close];
            if name == "*" {
                parts.push(RewritePart::Rest);
            } else if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                parts.push(RewritePart::Param(name.to_string()));
            } else {
                return Err(format!(
                    "`{{{name}}}` in `{s}` is not a parameter name or `{{*}}`"
                ));
            }
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(RewritePart::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Builds the upstream path. `rest` is what followed the literal prefix of a prefix match.
    pub fn apply(&self, params: &crate::router::Params<'_>, rest: &str, out: &mut String) {
        for p in &self.parts {
            match p {
                RewritePart::Literal(l) => out.push_str(l),
                RewritePart::Param(name) => out.push_str(params.get(name).unwrap_or("")),
                RewritePart::Rest => out.push_str(rest.trim_start_matches('/')),
            }
        }
    }
}

/// Compiles a config. Pure apart from DNS look-ups of target host names and reading TLS files.
pub fn compile(config: &Config, env: &CompileEnv<'_>) -> Result<Runtime, ConfigError> {
    check_listeners(config)?;
    crate::audit::validate(&config.audit).map_err(|e| match e.split_once(": ") {
        Some((path, msg)) if path.starts_with("audit.") && !path.contains(' ') => {
            ConfigError::at(path, msg)
        }
        _ => ConfigError::at("audit", e),
    })?;
    let certificates = if config.gateway.tls.certificates.is_empty() {
        if config.listeners.https.is_some() {
            return Err(ConfigError::at(
                "gateway.tls.certificates",
                "the https listener needs at least one certificate",
            ));
        }
        None
    } else {
        Some(Arc::new(CertSet::load(&config.gateway.tls.certificates)?))
    };

    let global: Vec<Entry<'_>> = config
        .global_plugins
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("global_plugins[{i}].name"),
                format!("global_plugins[{i}].config"),
                p,
            )
        })
        .collect();
    let generated = generated_plugins(config)?;
    let mut instances = Instances::default();

    let mut services: Vec<Arc<CompiledService>> = Vec::with_capacity(config.services.len());
    let mut service_plugins = Vec::with_capacity(config.services.len());
    let mut by_name = ahash::AHashMap::with_capacity(config.services.len());
    for (i, s) in config.services.iter().enumerate() {
        let path = format!("services[{i}]");
        if by_name.contains_key(s.name.as_str()) {
            return Err(ConfigError::at(
                format!("{path}.name"),
                format!("duplicate service name `{}`", s.name),
            ));
        }
        check_name(&s.name).map_err(|m| ConfigError::at(format!("{path}.name"), m))?;
        let svc = Arc::new(compile_service(s, &path, env)?);
        by_name.insert(s.name.as_str(), i);
        services.push(svc);
        let mut list: Vec<Entry<'_>> = s
            .plugins
            .iter()
            .enumerate()
            .map(|(j, p)| {
                (
                    format!("{path}.plugins[{j}].name"),
                    format!("{path}.plugins[{j}].config"),
                    p,
                )
            })
            .collect();
        list.extend(
            generated[i]
                .iter()
                .map(|(n, c, p)| (n.clone(), c.clone(), p)),
        );
        service_plugins.push(list);
    }

    // Check every plugin list once, even those no route uses yet (instances are shared, so this
    // costs nothing later).
    build_chain(&[&global], env.plugins, &mut instances)?;
    for list in &service_plugins {
        build_chain(&[list], env.plugins, &mut instances)?;
    }

    let mut builder = RouterBuilder::new();
    let mut route_names = ahash::AHashSet::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        check_name(&r.name).map_err(|m| ConfigError::at(format!("{path}.name"), m))?;
        if !route_names.insert(r.name.as_str()) {
            return Err(ConfigError::at(
                format!("{path}.name"),
                format!("duplicate route name `{}`", r.name),
            ));
        }
        let svc_idx = *by_name.get(r.service.as_str()).ok_or_else(|| {
            ConfigError::at(
                format!("{path}.service"),
                format!("no service named `{}`", r.service),
            )
        })?;
        let hosts = r
            .hosts
            .iter()
            .enumerate()
            .map(|(j, h)| {
                h.parse::<HostPattern>()
                    .map_err(|m| ConfigError::at(format!("{path}.hosts[{j}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if r.paths.is_empty() {
            return Err(ConfigError::at(
                format!("{path}.paths"),
                "at least one path is required",
            ));
        }
        let patterns = r
            .paths
            .iter()
            .enumerate()
            .map(|(j, p)| {
                p.parse::<PathPattern>()
                    .map_err(|m| ConfigError::at(format!("{path}.paths[{j}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let methods = r
            .methods
            .iter()
            .enumerate()
            .map(|(j, m)| {
                parse_method(m).map_err(|e| ConfigError::at(format!("{path}.methods[{j}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if r.strip_prefix && r.rewrite.is_some() {
            return Err(ConfigError::at(
                format!("{path}.rewrite"),
                "use either strip_prefix or rewrite, not both",
            ));
        }
        if r.strip_prefix {
            if let Some(j) = patterns.iter().position(|p| !p.is_prefix()) {
                return Err(ConfigError::at(
                    format!("{path}.paths[{j}]"),
                    "strip_prefix needs prefix paths ending in `/*`",
                ));
            }
        }
        let rewrite = match &r.rewrite {
            None => None,
            Some(t) => {
                let rw =
                    Rewrite::parse(t).map_err(|m| ConfigError::at(format!("{path}.rewrite"), m))?;
                for part in &rw.parts {
                    match part {
                        RewritePart::Param(name) => {
                            if let Some(j) = patterns.iter().position(|p| !p.has_param(name)) {
                                return Err(ConfigError::at(
                                    format!("{path}.rewrite"),
                                    format!("`{{{name}}}` is not captured by paths[{j}]"),
                                ));
                            }
                        }
                        RewritePart::Rest => {
                            if let Some(j) = patterns.iter().position(|p| !p.is_prefix()) {
                                return Err(ConfigError::at(
                                    format!("{path}.rewrite"),
                                    format!("`{{*}}` needs a prefix path, paths[{j}] is not one"),
                                ));
                            }
                        }
                        RewritePart::Literal(_) => {}
                    }
                }
                Some(rw)
            }
        };
        let route_plugins: Vec<Entry<'_>> = r
            .plugins
            .iter()
            .enumerate()
            .map(|(j, p)| {
                (
                    format!("{path}.plugins[{j}].name"),
                    format!("{path}.plugins[{j}].config"),
                    p,
                )
            })
            .collect();
        let chain = build_chain(
            &[&global, &service_plugins[svc_idx], &route_plugins],
            env.plugins,
            &mut instances,
        )?;
        let service = services[svc_idx].clone();
        let route = Arc::new(CompiledRoute {
            name: r.name.as_str().into(),
            metrics: env.metrics.route(&r.name, &service.name),
            service,
            strip_prefix: r.strip_prefix,
            rewrite,
            plugins: chain,
        });
        let methods = if methods.is_empty() {
            None
        } else {
            Some(methods.as_slice())
        };
        for (j, p) in patterns.iter().enumerate() {
            builder
                .add(&hosts, p, methods, r.priority, route.clone())
                .map_err(|e| ConfigError::at(format!("{path}.paths[{j}]"), e.to_string()))?;
        }
    }

    let version = config
        .version
        .clone()
        .unwrap_or_else(|| content_hash(config));
    let trusted_proxies = fenfa_plugins::cidr::CidrSet::parse(&config.gateway.trusted_proxies)
        .map_err(|(i, e)| {
            ConfigError::at(format!("gateway.trusted_proxies[{i}]"), e.to_string())
        })?;
    Ok(Runtime {
        trusted_proxies,
        version,
        router: builder.build(),
        services,
        certificates,
        config: config.clone(),
    })
}

fn check_listeners(config: &Config) -> Result<(), ConfigError> {
    let l = &config.listeners;
    for (name, v) in [
        ("http", &l.http),
        ("https", &l.https),
        ("status", &l.status),
    ] {
        if let Some(addr) = v {
            addr.parse::<SocketAddr>().map_err(|_| {
                ConfigError::at(
                    format!("listeners.{name}"),
                    format!("`{addr}` is not an `ip:port` address"),
                )
            })?;
        }
    }
    if l.http.is_none() && l.https.is_none() {
        return Err(ConfigError::at(
            "listeners",
            "at least one of http or https is required",
        ));
    }
    if config.gateway.threads == 0 || config.gateway.threads > 256 {
        return Err(ConfigError::at("gateway.threads", "expected 1 to 256"));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("expected 1 to 128 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "`{name}` may only contain letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

fn parse_method(m: &str) -> Result<http::Method, String> {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    if KNOWN.contains(&m) {
        http::Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "`{m}` is not an HTTP method; expected one of {}",
            KNOWN.join(", ")
        ))
    }
}

fn compile_service(
    s: &model::Service,
    path: &str,
    env: &CompileEnv<'_>,
) -> Result<CompiledService, ConfigError> {
    let u = &s.upstream;
    if u.targets.is_empty() {
        return Err(ConfigError::at(
            format!("{path}.upstream.targets"),
            "at least one target is required",
        ));
    }
    if u.targets.len() > 1024 {
        return Err(ConfigError::at(
            format!("{path}.upstream.targets"),
            "at most 1024 targets",
        ));
    }
    let mut targets = Vec::with_capacity(u.targets.len());
    for (j, t) in u.targets.iter().enumerate() {
        let tpath = format!("{path}.upstream.targets[{j}]");
        if t.weight == 0 || t.weight > 65535 {
            return Err(ConfigError::at(
                format!("{tpath}.weight"),
                "expected 1 to 65535",
            ));
        }
        let (addr, host) =
            resolve(&t.addr).map_err(|m| ConfigError::at(format!("{tpath}.addr"), m))?;
        if targets
            .iter()
            .any(|(x, _): &(Arc<crate::upstream::TargetState>, u32)| x.addr == addr)
        {
            return Err(ConfigError::at(
                format!("{tpath}.addr"),
                format!("duplicate target `{}`", t.addr),
            ));
        }
        targets.push((env.health.target(&s.name, addr, &t.addr, &host), t.weight));
    }
    let hc = &u.health_check;
    let passive = match &hc.passive {
        None => None,
        Some(p) => {
            if p.max_failures == 0 {
                return Err(ConfigError::at(
                    format!("{path}.upstream.health_check.passive.max_failures"),
                    "expected at least 1",
                ));
            }
            Some(PassivePolicy {
                max_failures: p.max_failures,
                cooldown: p.cooldown.0,
                unhealthy_statuses: p.unhealthy_statuses.clone(),
            })
        }
    };
    let active = match &hc.active {
        None => {
            for (t, _) in &targets {
                t.reset_active();
            }
            None
        }
        Some(a) => {
            let apath = format!("{path}.upstream.health_check.active");
            if !a.path.starts_with('/') {
                return Err(ConfigError::at(
                    format!("{apath}.path"),
                    "must start with `/`",
                ));
            }
            if a.interval.0 < Duration::from_millis(100) {
                return Err(ConfigError::at(
                    format!("{apath}.interval"),
                    "expected at least 100ms",
                ));
            }
            if a.timeout.0.is_zero() || a.timeout.0 > a.interval.0 {
                return Err(ConfigError::at(
                    format!("{apath}.timeout"),
                    "expected more than 0 and at most the interval",
                ));
            }
            if a.healthy_threshold == 0 {
                return Err(ConfigError::at(
                    format!("{apath}.healthy_threshold"),
                    "expected at least 1",
                ));
            }
            if a.unhealthy_threshold == 0 {
                return Err(ConfigError::at(
                    format!("{apath}.unhealthy_threshold"),
                    "expected at least 1",
                ));
            }
            if let Some(k) = a
                .healthy_statuses
                .iter()
                .position(|s| !(100..600).contains(s))
            {
                return Err(ConfigError::at(
                    format!("{apath}.healthy_statuses[{k}]"),
                    "expected an HTTP status 100 to 599",
                ));
            }
            Some(ActiveCheck {
                path: a.path.clone(),
                interval: a.interval.0,
                timeout: a.timeout.0,
                healthy_threshold: a.healthy_threshold,
                unhealthy_threshold: a.unhealthy_threshold,
                healthy_statuses: a.healthy_statuses.clone(),
                host: a.host.clone(),
            })
        }
    };
    let pool = match u.balance {
        Balance::RoundRobin => {
            if u.hash_on.is_some() {
                return Err(ConfigError::at(
                    format!("{path}.upstream.hash_on"),
                    "only used with `balance: consistent_hash`",
                ));
            }
            Pool::round_robin(targets, passive)
        }
        Balance::ConsistentHash => {
            let total: u64 = u.targets.iter().map(|t| t.weight as u64).sum();
            if total > 10_000 {
                return Err(ConfigError::at(
                    format!("{path}.upstream.targets"),
                    format!("consistent hashing allows a total weight of at most 10000 (the ring has 160 points per unit); these targets weigh {total}"),
                ));
            }
            let on = match u.hash_on.as_deref() {
                None | Some("client_ip") => HashOn::ClientIp,
                Some(h) => match h.strip_prefix("header:") {
                    Some(name) => HashOn::Header(
                        http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                            .map_err(|_| {
                            ConfigError::at(
                                format!("{path}.upstream.hash_on"),
                                format!("`{name}` is not a header name"),
                            )
                        })?,
                    ),
                    None => {
                        return Err(ConfigError::at(
                            format!("{path}.upstream.hash_on"),
                            format!("`{h}`: expected `client_ip` or `header:<Name>`"),
                        ))
                    }
                },
            };
            Pool::consistent_hash(targets, on, passive)
        }
    };
    let t = &u.timeouts;
    for (name, d) in [
        ("connect", t.connect),
        ("read", t.read),
        ("write", t.write),
        ("total", t.total),
    ] {
        if d.0.is_zero() {
            return Err(ConfigError::at(
                format!("{path}.upstream.timeouts.{name}"),
                "must be more than 0",
            ));
        }
    }
    if u.retries > 10 {
        return Err(ConfigError::at(
            format!("{path}.upstream.retries"),
            "expected 0 to 10",
        ));
    }
    let tls = u.scheme == Scheme::Https;
    if !tls && (u.tls.sni.is_some() || u.tls.ca.is_some()) {
        return Err(ConfigError::at(
            format!("{path}.upstream.tls"),
            "TLS settings need `scheme: https`",
        ));
    }
    if let Some(sni) = &u.tls.sni {
        // Caught here, not per request: pingora skips all certificate checks for an empty SNI,
        // and a name rustls cannot send would fail every handshake.
        rustls::pki_types::ServerName::try_from(sni.as_str()).map_err(|_| {
            ConfigError::at(
                format!("{path}.upstream.tls.sni"),
                format!("`{sni}` is not a DNS name or IP address"),
            )
        })?;
    }
    let ca = match &u.tls.ca {
        None => None,
        Some(file) => {
            Some(load_ca(file).map_err(|m| ConfigError::at(format!("{path}.upstream.tls.ca"), m))?)
        }
    };
    let trust_group = ca.as_deref().map_or(0, trust_group);
    Ok(CompiledService {
        name: s.name.as_str().into(),
        agency: s.agency.as_deref().unwrap_or("").into(),
        pool,
        tls,
        sni: u.tls.sni.clone(),
        verify: u.tls.verify,
        ca,
        trust_group,
        connect_timeout: t.connect.0,
        read_timeout: t.read.0,
        write_timeout: t.write.0,
        total_timeout: t.total.0,
        retries: u.retries,
        keepalive: u.keepalive_timeout.0,
        host_header: u.host_header,
        active,
    })
}

/// `host:port` → (first address, host). IP literals need no look-up.
fn resolve(authority: &str) -> Result<(SocketAddr, String), String> {
    if let Ok(a) = authority.parse::<SocketAddr>() {
        return Ok((a, a.ip().to_string()));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("`{authority}`: expected `host:port`"))?;
    port.parse::<u16>()
        .map_err(|_| format!("`{authority}`: `{port}` is not a port number"))?;
    if host.is_empty() {
        return Err(format!("`{authority}`: missing host"));
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("`{authority}`: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("`{authority}`: resolves to no address"))?;
    Ok((addr, host.to_string()))
}

fn load_ca(file: &str) -> Result<Arc<[WrappedX509]>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let mut out = Vec::new();
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("`{file}` is not valid PEM: {e}"))?;
        store
            .add(cert.clone())
            .map_err(|e| format!("`{file}` holds an unusable certificate: {e}"))?;
        out.push(WrappedX509::new(
            cert.as_ref().to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    if out.is_empty() {
        return Err(format!("`{file}` holds no certificate"));
    }
    Ok(out.into())
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

/// Plugins a service gets from its own fields rather than its plugin list: `channel-check` from
/// `publish`, `upstream-signature` from its agency's signing keys.
fn generated_plugins(config: &Config) -> Result<Vec<Vec<Generated>>, ConfigError> {
    let mut agencies = ahash::AHashMap::new();
    for (j, a) in config.agencies.iter().enumerate() {
        check_name(&a.name).map_err(|m| ConfigError::at(format!("agencies[{j}].name"), m))?;
        if agencies.insert(a.name.as_str(), (j, a)).is_some() {
            return Err(ConfigError::at(
                format!("agencies[{j}].name"),
                format!("duplicate agency name `{}`", a.name),
            ));
        }
    }
    let mut out = Vec::with_capacity(config.services.len());
    for (i, s) in config.services.iter().enumerate() {
        let mut list = Vec::new();
        if let Some(p) = &s.publish {
            list.push((
                format!("services[{i}].publish"),
                format!("services[{i}].publish"),
                PluginRef {
                    name: "channel-check".into(),
                    config: serde_json::json!({"channels": p.channels, "apps": p.apps}),
                    enabled: true,
                },
            ));
        }
        if let Some(name) = &s.agency {
            let (j, agency) = agencies.get(name.as_str()).ok_or_else(|| {
                ConfigError::at(
                    format!("services[{i}].agency"),
                    format!("no agency named `{name}`"),
                )
            })?;
            if !agency.signing_keys.is_empty() {
                let keys: Vec<_> = agency
                    .signing_keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "secret": k.secret}))
                    .collect();
                list.push((
                    format!("agencies[{j}].signing_keys"),
                    format!("agencies[{j}].signing_keys"),
                    PluginRef {
                        name: "upstream-signature".into(),
                        config: serde_json::json!({ "keys": keys }),
                        enabled: true,
                    },
                ));
            }
        }
        out.push(list);
    }
    Ok(out)
}

/// A generated plugin entry: name path, config path, and the plugin reference.
type Generated = (String, String, PluginRef);

/// Whether an entry was generated from a service's own fields (`publish`, its agency's keys):
/// those express publication and the backend's trust, which no route may switch off.
fn is_generated(name_path: &str) -> bool {
    name_path.ends_with(".publish") || name_path.ends_with(".signing_keys")
}

/// One plugin list entry: where its name is in the config, where its config is, and the ref.
type Entry<'a> = (String, String, &'a PluginRef);

/// Plugin instances of one compile, by (name, config): identical configurations share one.
type Instances = ahash::AHashMap<(String, String), Arc<dyn Plugin>>;

/// Merges plugin lists (later lists override earlier ones by plugin name) and builds the chain.
fn build_chain(
    lists: &[&Vec<Entry<'_>>],
    registry: &Registry,
    instances: &mut Instances,
) -> Result<Chain, ConfigError> {
    let mut merged: Vec<&Entry<'_>> = Vec::new();
    for list in lists {
        let mut seen = ahash::AHashSet::new();
        for e in list.iter() {
            let (name_path, _, p) = e;
            if !seen.insert(p.name.as_str()) {
                return Err(ConfigError::at(
                    name_path.clone(),
                    format!("plugin `{}` is listed twice", p.name),
                ));
            }
            if let Some((gen_path, _, _)) = merged
                .iter()
                .find(|(n, _, q)| q.name == p.name && is_generated(n))
            {
                return Err(ConfigError::at(
                    name_path.clone(),
                    format!(
                        "`{}` is attached by `{gen_path}` and cannot be replaced or disabled here",
                        p.name
                    ),
                ));
            }
            merged.retain(|(_, _, q)| q.name != p.name);
            merged.push(e);
        }
    }
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::with_capacity(merged.len());
    for (name_path, config_path, p) in merged {
        if !p.enabled {
            continue;
        }
        let key = (p.name.clone(), p.config.to_string());
        if let Some(existing) = instances.get(&key) {
            plugins.push(existing.clone());
            continue;
        }
        let plugin = registry.build(&p.name, &p.config).map_err(|e| match e {
            fenfa_plugins::registry::BuildError::UnknownPlugin { .. } => {
                ConfigError::at(name_path.clone(), e.to_string())
            }
            fenfa_plugins::registry::BuildError::Schema(s) => {
                let path = match s.path.strip_prefix("keys") {
                    // Generated from `agencies[j].signing_keys`: the list *is* the keys.
                    Some(rest) if config_path.ends_with(".signing_keys") => {
                        format!("{config_path}{rest}")
                    }
                    _ if s.path.is_empty() => config_path.clone(),
                    _ => format!("{config_path}.{}", s.path),
                };
                ConfigError::at(path, s.message)
            }
        })?;
        instances.insert(key, plugin.clone());
        plugins.push(plugin);
    }
    Ok(Chain::new(plugins))
}

/// A short, stable hash of the config's canonical JSON form (FNV-1a 64).
fn content_hash(config: &Config) -> String {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
