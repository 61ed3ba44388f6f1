//! Checking a config: every rule that decides whether a config may go live, without the proxy.
//!
//! [`plan`] validates a [`Config`] completely — names, listeners, routes and their conflicts,
//! rewrites, plugin schemas (through the [`Registry`] it is given), upstream settings, CA files —
//! and returns a [`Plan`]: the checked config in the shape the gateway builds its runtime from.
//! The gateway calls it and then attaches what only a running proxy has (connection settings,
//! health state, metrics); the control plane calls it to refuse a change before it is committed.
//! Both therefore apply the same rules, by the same code.
//!
//! Host names in upstream targets go through a [`Resolve`]: the gateway resolves them
//! ([`SystemResolver`]); the control plane checks only their syntax ([`SyntaxOnly`]), because
//! its own DNS view says nothing about what a gateway in another network can reach (see
//! `docs/config.md`, "Host names in targets").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fenfa_plugins::cidr::CidrSet;
use fenfa_plugins::{Chain, Plugin, Registry};
use rustls::pki_types::{pem::PemObject, CertificateDer};

use crate::h5::{H5Headers, H5Plan};
use crate::model::{self, Balance, HostHeader, PluginRef, Scheme, ServiceKind};
use crate::resolve::{split_authority, Resolve};
use crate::rewrite::{Rewrite, RewritePart};
use crate::router::{HostPattern, PathPattern, Router, RouterBuilder};
use crate::{Config, ConfigError};

pub use crate::resolve::{SyntaxOnly, SystemResolver};

/// A checked config: what the gateway builds its runtime from.
#[derive(Debug)]
pub struct Plan {
    /// Version label (from the config, or a content hash).
    pub version: String,
    /// Route values are indexes into [`Plan::routes`].
    pub router: Router<usize>,
    pub routes: Vec<RoutePlan>,
    pub services: Vec<ServicePlan>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: CidrSet,
    /// The shared H5 domain: verification files and their hosts.
    pub h5: H5Plan,
}

/// One route, checked.
#[derive(Debug)]
pub struct RoutePlan {
    pub name: Arc<str>,
    /// Index into [`Plan::services`].
    pub service: usize,
    pub strip_prefix: bool,
    pub rewrite: Option<Rewrite>,
    pub plugins: Chain,
}

/// One upstream target, checked.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    /// `host:port` as configured.
    pub authority: String,
    /// The host part as configured (name or IP), for SNI and the Host header.
    pub host: String,
    /// The address, when the [`Resolve`] used gave one ([`SyntaxOnly`] gives none for names).
    pub addr: Option<SocketAddr>,
    pub weight: u32,
}

/// How a service spreads requests over its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balancing {
    RoundRobin,
    ConsistentHash(HashOn),
}

/// What the consistent hash is computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    /// A request header (lowercase name); a request without it hashes on the client IP.
    Header(http::HeaderName),
}

/// When consecutive failures eject a target, and for how long.
#[derive(Debug, Clone)]
pub struct PassivePolicy {
    pub max_failures: u32,
    pub cooldown: Duration,
    pub unhealthy_statuses: Vec<u16>,
}

/// One service, checked.
#[derive(Debug)]
pub struct ServicePlan {
    pub name: Arc<str>,
    /// The owning agency's name, or empty.
    pub agency: Arc<str>,
    pub targets: Vec<TargetPlan>,
    pub balancing: Balancing,
    pub passive: Option<PassivePolicy>,
    pub tls: bool,
    pub sni: Option<String>,
    pub verify: bool,
    /// The service's own CA bundle (`upstream.tls.ca`), parsed and checked.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub total_timeout: Duration,
    pub retries: u32,
    pub keepalive: Duration,
    pub host_header: HostHeader,
    pub active: Option<ActiveCheck>,
    /// For `kind: h5`: the security headers of its answers.
    pub h5: Option<Arc<H5Headers>>,
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

/// Checks a config completely. Pure apart from name look-ups through `resolver` and reading CA
/// files.
pub fn plan(
    config: &Config,
    plugins: &Registry,
    resolver: &dyn Resolve,
) -> Result<Plan, ConfigError> {
    check_listeners(config)?;
    if config.listeners.https.is_some() && config.gateway.tls.certificates.is_empty() {
        return Err(ConfigError::at(
            "gateway.tls.certificates",
            "the https listener needs at least one certificate",
        ));
    }

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

    let mut services: Vec<ServicePlan> = Vec::with_capacity(config.services.len());
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
        let svc = plan_service(s, &path, resolver)?;
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
    build_chain(&[&global], plugins, &mut instances)?;
    for list in &service_plugins {
        build_chain(&[list], plugins, &mut instances)?;
    }

    let mut builder = RouterBuilder::new();
    let mut routes = Vec::with_capacity(config.routes.len());
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
        if services[svc_idx].h5.is_some() {
            crate::h5::check_route(&path, &patterns, r.strip_prefix)?;
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
                let rw = Rewrite::parse(t)
                    .map_err(|e| ConfigError::at(format!("{path}.rewrite"), e.to_string()))?;
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
            plugins,
            &mut instances,
        )?;
        let index = routes.len();
        routes.push(RoutePlan {
            name: r.name.as_str().into(),
            service: svc_idx,
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
                .add(&hosts, p, methods, r.priority, index)
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
    let h5 = crate::h5::plan(config.h5.as_ref())?;
    if let Some(bytes) = config.gateway.h5_cache_bytes {
        if bytes > MAX_H5_CACHE_BYTES {
            return Err(ConfigError::at(
                "gateway.h5_cache_bytes",
                format!("at most {MAX_H5_CACHE_BYTES} (16 GiB); 0 turns the cache off"),
            ));
        }
    }
    Ok(Plan {
        h5,
        trusted_proxies,
        version,
        router: builder.build(),
        services,
        routes,
    })
}

/// Largest `gateway.h5_cache_bytes`: the cache lives in the gateway's memory.
const MAX_H5_CACHE_BYTES: u64 = 16 << 30;

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

fn plan_service(
    s: &model::Service,
    path: &str,
    resolver: &dyn Resolve,
) -> Result<ServicePlan, ConfigError> {
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
        let (host, port) = split_authority(&t.addr)
            .map_err(|e| ConfigError::at(format!("{tpath}.addr"), e.to_string()))?;
        let addr = resolver
            .resolve(host, port)
            .map_err(|m| ConfigError::at(format!("{tpath}.addr"), format!("`{}`: {m}", t.addr)))?;
        let duplicate = targets.iter().any(|x: &TargetPlan| {
            x.authority.eq_ignore_ascii_case(&t.addr) || (addr.is_some() && x.addr == addr)
        });
        if duplicate {
            return Err(ConfigError::at(
                format!("{tpath}.addr"),
                format!("duplicate target `{}`", t.addr),
            ));
        }
        targets.push(TargetPlan {
            authority: t.addr.clone(),
            host: host.to_string(),
            addr,
            weight: t.weight,
        });
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
        None => None,
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
    let balancing = match u.balance {
        Balance::RoundRobin => {
            if u.hash_on.is_some() {
                return Err(ConfigError::at(
                    format!("{path}.upstream.hash_on"),
                    "only used with `balance: consistent_hash`",
                ));
            }
            Balancing::RoundRobin
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
            Balancing::ConsistentHash(on)
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
    let h5 = match s.kind {
        ServiceKind::Api => {
            if s.h5.is_some() {
                return Err(ConfigError::at(
                    format!("{path}.h5"),
                    "only used with `kind: h5`",
                ));
            }
            None
        }
        ServiceKind::H5 => Some(Arc::new(crate::h5::headers(path, s.h5.as_ref())?)),
    };
    Ok(ServicePlan {
        h5,
        name: s.name.as_str().into(),
        agency: s.agency.as_deref().unwrap_or("").into(),
        targets,
        balancing,
        passive,
        tls,
        sni: u.tls.sni.clone(),
        verify: u.tls.verify,
        ca,
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

/// Reads and checks a CA bundle: PEM, at least one certificate, each usable as a trust anchor.
fn load_ca(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let mut out = Vec::new();
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("`{file}` is not valid PEM: {e}"))?;
        store
            .add(cert.clone())
            .map_err(|e| format!("`{file}` holds an unusable certificate: {e}"))?;
        out.push(cert);
    }
    if out.is_empty() {
        return Err(format!("`{file}` holds no certificate"));
    }
    Ok(out)
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
                        config: serde_json::json!({
                            "keys": keys,
                            "algorithm": agency
                                .signature_algorithm
                                .unwrap_or(crate::model::SignatureAlgorithm::HmacSha256)
                                .as_str(),
                        }),
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
            fenfa_plugins::BuildError::UnknownPlugin { .. } => {
                ConfigError::at(name_path.clone(), e.to_string())
            }
            fenfa_plugins::BuildError::Schema(s) => {
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
