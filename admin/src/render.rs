//! Renders a [`Snapshot`] into the gateway's own [`Config`], and maps the compiler's field paths
//! back to the resources they came from.
//!
//! Two renderings: the *live* config (published services on their channels, their routes) is
//! what gateways run; the *full* config also carries every draft, submitted and offline service
//! and route, and is compiled only to check that every stored resource would be valid (so a bad
//! draft is refused when it is written, not when it is published).
//!
//! Secrets are opened here (signing keys, HMAC token keys) because the gateway needs them; the
//! rendered text is sealed again before it is stored (`crate::commit`).

use fenfa_config::model::{
    Agency as GwAgency, Listeners, PluginRef, Publish, Route as GwRoute, Service as GwService,
    ServiceKind as GwServiceKind, SignatureAlgorithm, SigningKey as GwSigningKey,
};
use fenfa_config::{Config, ConfigError};
use serde_json::{json, Value};

use crate::crypto::MasterKey;
use crate::error::{ApiError, FieldError};
use crate::model::{KeyStatus, Lifecycle, MacAlgorithm, ServiceKind, Snapshot};

/// The name of the rendered service that carries channel sign-in to this control plane.
pub const SIGNIN_SERVICE: &str = "fenfa-signin";

/// Channel sign-in (`crate::identity`): the public sign-in endpoints on every gateway, carried
/// to this control plane (`settings.signin.upstream`), rate limited per client address, with
/// no token required (the global `jwt-auth` is switched off for them: they are how a caller
/// gets one; `/v1/h5/ticket` checks its token here).
fn signin_routes(cfg: &mut Config, si: &crate::model::SigninSettings) {
    cfg.services.push(GwService {
        name: SIGNIN_SERVICE.into(),
        agency: None,
        publish: None,
        kind: GwServiceKind::Api,
        h5: None,
        upstream: si.upstream.clone(),
        plugins: vec![
            PluginRef {
                name: "jwt-auth".into(),
                config: Value::Null,
                enabled: false,
            },
            PluginRef {
                name: "rate-limit".into(),
                config: json!({"limits": [{
                    "key": "ip",
                    "rate": si.login_per_minute,
                    "per": "60s",
                    "burst": si.login_per_minute,
                }]}),
                enabled: true,
            },
        ],
    });
    let routes: [(&str, &str, &str); 6] = [
        ("fenfa-signin-login", "POST", "/v1/login/{channel}"),
        ("fenfa-signin-refresh", "POST", "/v1/token/refresh"),
        ("fenfa-signin-revoke", "POST", "/v1/token/revoke"),
        ("fenfa-signin-jwks", "GET", "/.well-known/jwks.json"),
        ("fenfa-signin-ticket", "POST", "/v1/h5/ticket"),
        ("fenfa-signin-enter", "GET", "/v1/h5/enter"),
    ];
    for (name, method, path) in routes {
        cfg.routes.push(GwRoute {
            name: name.into(),
            service: SIGNIN_SERVICE.into(),
            hosts: Vec::new(),
            paths: vec![path.into()],
            methods: vec![method.into()],
            // Above any agency route that might overlap.
            priority: 1_000_000,
            strip_prefix: false,
            rewrite: None,
            plugins: Vec::new(),
        });
    }
}

/// Which resource each rendered entry came from, to translate compiler errors.
#[derive(Debug, Default)]
pub struct Origins {
    services: Vec<String>,
    routes: Vec<String>,
    agencies: Vec<String>,
    signing_keys: Vec<Vec<String>>,
    token_keys: Vec<String>,
    /// Per rendered service: the limit resource behind its `rate-limit` plugin.
    limits: Vec<Option<String>>,
}

pub struct Rendered {
    pub config: Config,
    pub origins: Origins,
}

/// The resource a field belongs to: `(kind, id, path inside that resource)`.
pub type Located = (&'static str, String, String);

pub fn render(
    s: &Snapshot,
    master: &MasterKey,
    listeners: &Listeners,
    version: i64,
    full: bool,
) -> Result<Rendered, ApiError> {
    let mut cfg = Config {
        version: Some(format!("cp-{version}")),
        listeners: listeners.clone(),
        // A platform may have nothing published yet; the file is generated, never truncated.
        allow_empty: true,
        ..Config::default()
    };
    // Nodes keep their own `audit:` section (`fenfa_gateway::control_plane::merge`); the
    // in-process gateway of a single node takes this one, from its next start.
    cfg.audit.chain = s.settings.audit_chain();
    cfg.h5 = s.settings.h5.clone();
    let mut o = Origins::default();

    for a in &s.agencies {
        let mut keys: Vec<_> = s
            .signing_keys
            .iter()
            .filter(|k| k.agency_id == a.id && k.status == KeyStatus::Active)
            .collect();
        // Newest first: the first key signs, the others stay listed for the rotation overlap.
        keys.sort_by(|x, y| (y.created_at, &y.id).cmp(&(x.created_at, &x.id)));
        let mut signing = Vec::new();
        let mut ids = Vec::new();
        for k in keys {
            let secret = master
                .open(&format!("signing-key:{}", k.id), &k.sealed_secret)
                .map_err(|e| ApiError::internal(format!("signing key {}: {e}", k.id)))?;
            signing.push(GwSigningKey {
                id: k.key_id.to_string(),
                secret: String::from_utf8(secret).map_err(ApiError::internal)?,
            });
            ids.push(k.id.clone());
        }
        cfg.agencies.push(GwAgency {
            name: a.name.to_string(),
            signing_keys: signing,
            // Named only when it is not the default, so a platform on HMAC-SHA256 renders as
            // before.
            signature_algorithm: match a
                .signature_algorithm
                .unwrap_or(s.settings.upstream_signature())
            {
                MacAlgorithm::HmacSha256 => None,
                MacAlgorithm::HmacSm3 => Some(SignatureAlgorithm::HmacSm3),
            },
        });
        o.agencies.push(a.id.clone());
        o.signing_keys.push(ids);
    }

    let mut token_keys = Vec::new();
    let mut revoked = Vec::new();
    for k in &s.token_keys {
        match k.status {
            KeyStatus::Active => {
                let mut jwk = k.jwk.clone();
                if let Some(sealed) = &k.sealed_k {
                    let kv = master
                        .open(&format!("token-key:{}", k.id), sealed)
                        .map_err(|e| ApiError::internal(format!("token key {}: {e}", k.id)))?;
                    jwk.insert(
                        "k".into(),
                        Value::String(String::from_utf8(kv).map_err(ApiError::internal)?),
                    );
                }
                token_keys.push(Value::Object(jwk));
                o.token_keys.push(k.id.clone());
            }
            _ => revoked.push(k.kid.clone()),
        }
    }
    // The platform's own signing keys (channel sign-in, `crate::identity`): every active key,
    // the one that signs and the ones still in their rotation overlap.
    for k in &s.identity_keys {
        match k.status {
            KeyStatus::Active => {
                token_keys.push(Value::Object(k.jwk.clone()));
                o.token_keys.push(k.id.clone());
            }
            KeyStatus::Revoked => revoked.push(k.kid.clone()),
            KeyStatus::Retired => {}
        }
    }
    // H5 pages: the same keys, the session cookie's audience, and no token is no identity
    // rather than a 401 (`crate::identity`, `docs/h5.md`).
    let mut h5_jwt = None;
    if !token_keys.is_empty() {
        h5_jwt = Some(json!({
            "issuer": s.settings.token_issuer,
            "audience": format!("{}{}", s.settings.token_audience, crate::identity::H5_AUDIENCE_SUFFIX),
            "keys": {"keys": token_keys},
            "revoked_kids": revoked,
            "cookie": crate::identity::SESSION_COOKIE,
            "optional": true,
        }));
        cfg.global_plugins.push(PluginRef {
            name: "jwt-auth".into(),
            config: json!({
                "issuer": s.settings.token_issuer,
                "audience": s.settings.token_audience,
                "keys": {"keys": token_keys},
                "revoked_kids": revoked,
            }),
            enabled: true,
        });
    }
    // Temporary denies from alert responses: every route, before authentication.
    let mut denied: Vec<&str> = s.blocks.iter().map(|b| b.ip.as_str()).collect();
    denied.sort_unstable();
    denied.dedup();
    if !denied.is_empty() {
        cfg.global_plugins.push(PluginRef {
            name: "ip-restriction".into(),
            config: json!({
                "deny": denied,
                "message": "your address is temporarily blocked after abnormal calls",
            }),
            enabled: true,
        });
    }

    for svc in &s.services {
        let live = svc.status == Lifecycle::Published && !svc.channels.is_empty();
        if !full && !live {
            continue;
        }
        let agency = s.agency(&svc.agency_id).map(|a| a.name.to_string());
        let publish = live.then(|| Publish {
            channels: svc
                .channels
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            apps: svc.apps.clone(),
        });
        let mut plugins = Vec::new();
        let limit = s.limits.iter().find(|l| l.service_id == svc.id);
        if let Some(l) = limit {
            plugins.push(PluginRef {
                name: "rate-limit".into(),
                config: json!({ "limits": l.limits }),
                enabled: true,
            });
        }
        if let Some(m) = &svc.masking {
            plugins.push(PluginRef {
                name: "response-masking".into(),
                config: m.clone(),
                enabled: true,
            });
        }
        let kind = match svc.kind {
            ServiceKind::Api => GwServiceKind::Api,
            ServiceKind::H5 => GwServiceKind::H5,
        };
        let publish = match svc.kind {
            ServiceKind::Api => publish,
            // Pages are opened by anyone the mini-program shows them to: the caller's identity
            // is optional (the session cookie of `/v1/h5/enter`), so no channel check applies.
            ServiceKind::H5 => {
                if let Some(jwt) = &h5_jwt {
                    plugins.push(PluginRef {
                        name: "jwt-auth".into(),
                        config: jwt.clone(),
                        enabled: true,
                    });
                }
                None
            }
        };
        cfg.services.push(GwService {
            name: svc.name.to_string(),
            agency: agency.or_else(|| Some(svc.agency_id.clone())),
            publish,
            kind,
            h5: None,
            upstream: svc.upstream.clone(),
            plugins,
        });
        o.services.push(svc.id.clone());
        o.limits.push(limit.map(|l| l.id.clone()));
        for r in s.routes.iter().filter(|r| r.service_id == svc.id) {
            cfg.routes.push(GwRoute {
                name: r.name.to_string(),
                service: svc.name.to_string(),
                hosts: r.hosts.clone(),
                paths: r.paths.clone(),
                methods: r.methods.clone(),
                priority: r.priority,
                strip_prefix: r.strip_prefix,
                rewrite: r.rewrite.clone(),
                plugins: Vec::new(),
            });
            o.routes.push(r.id.clone());
        }
    }
    // Last, so that the indices of the services and routes above stay those of `o`.
    if let Some(si) = &s.settings.signin {
        signin_routes(&mut cfg, si);
    }
    Ok(Rendered {
        config: cfg,
        origins: o,
    })
}

/// Splits `services[3].upstream.targets[0]` into `("services", 3, "upstream.targets[0]")`.
fn split_index(path: &str) -> Option<(&str, usize, &str)> {
    let open = path.find('[')?;
    let close = path[open..].find(']')? + open;
    let idx = path[open + 1..close].parse().ok()?;
    let rest = path[close + 1..].trim_start_matches('.');
    Some((&path[..open], idx, rest))
}

impl Origins {
    /// The resource and field a compiler error path points at.
    pub fn locate(&self, path: &str) -> Option<Located> {
        let (head, i, rest) = split_index(path)?;
        match head {
            "services" => {
                let id = self.services.get(i)?.clone();
                if let Some(r) = rest.strip_prefix("plugins") {
                    if let (Some(Some(limit)), Some((_, _, inner))) =
                        (self.limits.get(i), split_index(&format!("p{r}")))
                    {
                        let inner = inner.strip_prefix("config").unwrap_or(inner);
                        return Some((
                            "limit",
                            limit.clone(),
                            inner.trim_start_matches('.').to_string(),
                        ));
                    }
                }
                let rest = if rest.starts_with("publish") {
                    "channels".to_string()
                } else if rest == "agency" {
                    "agency_id".to_string()
                } else {
                    rest.to_string()
                };
                Some(("service", id, rest))
            }
            "routes" => {
                let id = self.routes.get(i)?.clone();
                let rest = if rest == "service" {
                    "service_id"
                } else {
                    rest
                };
                Some(("route", id, rest.to_string()))
            }
            "agencies" => {
                if let Some(r) = rest.strip_prefix("signing_keys") {
                    if let Some((_, k, inner)) = split_index(&format!("k{r}")) {
                        let id = self.signing_keys.get(i)?.get(k)?.clone();
                        let inner = if inner == "id" { "key_id" } else { inner };
                        return Some(("signing-key", id, inner.to_string()));
                    }
                }
                Some(("agency", self.agencies.get(i)?.clone(), rest.to_string()))
            }
            "global_plugins" => {
                if let Some(r) = rest.strip_prefix("config.keys.keys") {
                    if let Some((_, k, inner)) = split_index(&format!("k{r}")) {
                        let id = self.token_keys.get(k)?.clone();
                        let inner = if inner.is_empty() {
                            "jwk".to_string()
                        } else {
                            format!("jwk.{inner}")
                        };
                        return Some(("token-key", id, inner));
                    }
                }
                let rest = match rest {
                    "config.issuer" => "token_issuer",
                    "config.audience" => "token_audience",
                    other => other,
                };
                Some(("settings", "global".into(), rest.to_string()))
            }
            _ => None,
        }
    }
}

/// A compiler error as a field error of the request: a path inside the resource being changed,
/// or `kind/id.path` when another resource is what breaks.
pub fn field_error(
    origins: &Origins,
    e: &ConfigError,
    touched: (&str, &str),
    names: &dyn Fn(&str, &str) -> String,
) -> FieldError {
    match origins.locate(&e.path) {
        Some((kind, id, rest)) if kind == touched.0 && id == touched.1 => {
            FieldError::new(rest, e.message.clone())
        }
        Some((kind, id, rest)) => {
            let name = names(kind, &id);
            let sep = if rest.is_empty() { "" } else { "." };
            FieldError::new(format!("{kind}/{name}{sep}{rest}"), e.message.clone())
        }
        None => FieldError::new(e.path.clone(), e.message.clone()),
    }
}

/// The rendered config as gateways receive it (JSON; the gateway's parser reads YAML and JSON).
pub fn to_text(cfg: &Config) -> Result<String, ApiError> {
    serde_json::to_string_pretty(cfg).map_err(ApiError::internal)
}

/// The rendered config with every secret replaced by `***`, for people to read.
pub fn redacted(text: &str) -> Value {
    let mut v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    if let Some(agencies) = v.get_mut("agencies").and_then(Value::as_array_mut) {
        for a in agencies {
            if let Some(keys) = a.get_mut("signing_keys").and_then(Value::as_array_mut) {
                for k in keys {
                    k["secret"] = json!("***");
                }
            }
        }
    }
    if let Some(plugins) = v.get_mut("global_plugins").and_then(Value::as_array_mut) {
        for p in plugins {
            if let Some(keys) = p
                .pointer_mut("/config/keys/keys")
                .and_then(Value::as_array_mut)
            {
                for k in keys {
                    if let Some(obj) = k.as_object_mut() {
                        if obj.contains_key("k") {
                            obj.insert("k".into(), json!("***"));
                        }
                    }
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_split() {
        assert_eq!(
            split_index("services[3].upstream.targets[0].addr"),
            Some(("services", 3, "upstream.targets[0].addr"))
        );
        assert_eq!(split_index("routes[0]"), Some(("routes", 0, "")));
        assert_eq!(split_index("version"), None);
    }

    #[test]
    fn compiler_paths_map_back_to_resources() {
        let o = Origins {
            services: vec!["sv_a".into()],
            routes: vec!["rt_a".into()],
            agencies: vec!["ag_a".into()],
            signing_keys: vec![vec!["sk_a".into()]],
            token_keys: vec!["tk_a".into()],
            limits: vec![Some("lm_a".into())],
        };
        assert_eq!(
            o.locate("services[0].upstream.targets[1].addr"),
            Some(("service", "sv_a".into(), "upstream.targets[1].addr".into()))
        );
        assert_eq!(
            o.locate("services[0].plugins[0].config.limits[0].rate"),
            Some(("limit", "lm_a".into(), "limits[0].rate".into()))
        );
        assert_eq!(
            o.locate("routes[0].paths[1]"),
            Some(("route", "rt_a".into(), "paths[1]".into()))
        );
        assert_eq!(
            o.locate("agencies[0].signing_keys[0].secret"),
            Some(("signing-key", "sk_a".into(), "secret".into()))
        );
        assert_eq!(
            o.locate("global_plugins[0].config.keys.keys[0].x"),
            Some(("token-key", "tk_a".into(), "jwk.x".into()))
        );
    }
}
