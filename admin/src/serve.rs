//! `fenfa-admin serve`: the single-node platform — the control plane, an in-process gateway, and
//! (with `--demo`) a seeded demo agency with an echo upstream.
//!
//! The in-process gateway is the real `fenfa_gateway::server::run` in a thread of its own
//! (started through [`StartGateway`], which the binary provides: this crate has no proxy inside),
//! reading `<data-dir>/gateway.yaml`; every commit rewrites that file (atomically, mode 0600)
//! and the gateway's file watcher reloads it within a fraction of a second. This keeps one
//! propagation path (a rendered config) for the local gateway and remote ones, at the cost of a
//! short file-watch delay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fenfa_config::model::{Listeners, Upstream};
use ring::hmac;
use serde_json::{json, Value};

use crate::app::{App, LocalShip, Options};
use crate::clock::SystemClock;
use crate::commit::{commit, Actor, Touched};
use crate::crypto::{new_id, random_array};
use crate::error::{ApiError, ApiResult};
use crate::model::*;
use crate::store::kind;

/// Command-line settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: Option<String>,
    pub demo: bool,
    pub gateway: bool,
    pub gateway_http: String,
    pub gateway_status: String,
    pub demo_upstream: String,
    /// Names of the first-start accounts (system, security, audit admin), when not the
    /// defaults `admin`, `security`, `auditor` (`--admin-username`, …).
    pub initial_usernames: [Option<String>; 3],
    /// Serve the API over TLS with this certificate chain (PEM) …
    pub tls_cert: Option<PathBuf>,
    /// … and this private key.
    pub tls_key: Option<PathBuf>,
    /// The CA of `tls_cert`, trusted by the in-process gateway when it ships its audit here
    /// (default: the system's CAs).
    pub tls_ca: Option<PathBuf>,
    /// Redis for the active-user counts (`--redis`); `None`: in-process sketches.
    pub redis: Option<crate::app::RedisOptions>,
}

pub const DEMO_AGENCY: &str = "demo";
pub const DEMO_KID: &str = "demo-hs256";
pub const DEMO_APP: &str = "wx-demo-app";

/// The in-process gateway's node name and token file (in the data dir).
pub const LOCAL_NODE: &str = "local-gateway";
pub const LOCAL_NODE_TOKEN: &str = "local-node.token";

/// Makes sure the node `local-gateway` exists and its token is in `token_file` (mode 0600), so
/// the in-process gateway can ship its request audit here.
pub async fn ensure_local_node(app: &App, token_file: &std::path::Path) -> ApiResult<()> {
    let pool = &app.store.pool;
    if let Ok(token) = std::fs::read_to_string(token_file) {
        let hash = crate::crypto::sha256_hex(token.trim().as_bytes());
        if crate::store::node_by_token(pool, &hash).await?.is_some() {
            return Ok(());
        }
    }
    let token = format!("fn_{}", crate::crypto::random_token());
    let id = new_id("nd");
    let mut w = crate::commit::begin_write(app).await?;
    sqlx::query("DELETE FROM nodes WHERE name = $1")
        .bind(LOCAL_NODE)
        .execute(&mut *w.tx)
        .await?;
    crate::store::insert_node(
        &mut w.tx,
        &id,
        LOCAL_NODE,
        &crate::crypto::sha256_hex(token.as_bytes()),
        w.now,
    )
    .await?;
    crate::crypto::write_private(token_file, token.as_bytes()).map_err(ApiError::internal)?;
    w.finish(
        &Actor::system(),
        "node.create",
        crate::commit::AuditTarget {
            kind: "node".into(),
            id,
            after: Some(json!({"name": LOCAL_NODE})),
            ..Default::default()
        },
    )
    .await
}

pub fn default_database(data_dir: &std::path::Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("fenfa-admin.db").display()
    )
}

/// What the in-process gateway is started with.
#[derive(Debug)]
pub struct LocalGateway {
    /// The rendered config file it follows.
    pub config: std::path::PathBuf,
    /// Its own state (audit trail, last good config).
    pub data_dir: std::path::PathBuf,
    /// Where `--demo` runs its echo upstream, when it does.
    pub demo_upstream: Option<String>,
    pub plugins: fenfa_plugins::Registry,
}

/// Starts the in-process gateway (and returns once it is started). This crate does not link the
/// proxy: the `fenfa-admin` binary (package `fenfa-platform`) passes one that runs
/// `fenfa_gateway::server::run` in a thread of its own.
pub type StartGateway = Box<dyn FnOnce(LocalGateway) -> Result<(), String> + Send>;

/// Runs the single-node platform with the built-in plugins.
pub async fn run(args: ServeArgs, gateway: Option<StartGateway>) -> Result<(), String> {
    run_with(args, fenfa_plugins::builtin(), gateway).await
}

/// Runs the single-node platform with `plugins` (the built-ins plus an embedder's own): the
/// control plane's config checker and the in-process gateway both use it. `gateway` starts the
/// in-process gateway; without one, `args.gateway` is refused.
pub async fn run_with(
    args: ServeArgs,
    plugins: fenfa_plugins::Registry,
    gateway: Option<StartGateway>,
) -> Result<(), String> {
    let start_gateway = match (args.gateway, gateway) {
        (true, Some(start)) => Some(start),
        (true, None) => {
            return Err(
                "this build has no in-process gateway: run with --no-gateway, or use the fenfa-admin binary of the fenfa-platform package"
                    .into(),
            )
        }
        (false, _) => None,
    };
    let mut opts = Options::new(
        args.database
            .clone()
            .unwrap_or_else(|| default_database(&args.data_dir)),
        args.data_dir.clone(),
    );
    opts.master_key = std::env::var("FENFA_MASTER_KEY").ok();
    opts.redis = args.redis.clone();
    opts.bootstrap = crate::auth::Bootstrap::from_env();
    for (acc, name) in opts
        .bootstrap
        .accounts
        .iter_mut()
        .zip(&args.initial_usernames)
    {
        if let Some(name) = name {
            acc.username = name.clone();
        }
    }
    opts.listeners = Listeners {
        http: Some(args.gateway_http.clone()),
        https: None,
        status: Some(args.gateway_status.clone()),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::server_config(cert, key).map_err(|e| e.to_string())?)
        }
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let gateway_file = args.data_dir.join("gateway.yaml");
    let token_file = args.data_dir.join(LOCAL_NODE_TOKEN);
    if args.gateway {
        opts.gateway_file = Some(gateway_file.clone());
        let ip = if args.listen.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            args.listen.ip()
        };
        // Over TLS the certificate must name the host: `localhost` for a loopback listener.
        let host = if tls.is_some() && ip.is_loopback() {
            format!("localhost:{}", args.listen.port())
        } else {
            SocketAddr::new(ip, args.listen.port()).to_string()
        };
        opts.local_ship = Some(LocalShip {
            url: format!("{scheme}://{host}/v1/dataplane/audit"),
            token_file: token_file.clone(),
            ca: args.tls_ca.clone().filter(|_| tls.is_some()),
        });
    }
    opts.plugins = plugins;
    let (app, issued) = App::open(opts, Arc::new(SystemClock)).await?;
    print_issued(&issued);
    if args.gateway {
        ensure_local_node(&app, &token_file)
            .await
            .map_err(|e| format!("the local gateway's node token: {e}"))?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let demo_token = if args.demo {
        Some(
            seed_demo(&app, &args.demo_upstream)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    if let Some(start) = start_gateway {
        start(LocalGateway {
            config: gateway_file,
            data_dir: args.data_dir.join("gateway"),
            demo_upstream: args.demo.then(|| args.demo_upstream.clone()),
            plugins: app.opts.plugins.clone(),
        })?;
    }
    println!();
    println!("  Fenfa control plane on {scheme}://{}", args.listen);
    if args.gateway {
        println!(
            "  In-process gateway on http://{} (status http://{})",
            args.gateway_http, args.gateway_status
        );
    }
    if let Some(token) = demo_token {
        let (echo_host, echo_port) =
            crate::policy::split_addr(&args.demo_upstream).unwrap_or(("127.0.0.1", 9081));
        let env_file = crate::demo_env::path(&args.data_dir);
        let written = crate::demo_env::write(
            &env_file,
            &crate::demo_env::DemoEnv {
                issued: &issued,
                control_plane: format!("http://{}", args.listen),
                gateway: format!("http://{}", args.gateway_http),
                echo_host: echo_host.to_string(),
                echo_port,
                token: token.clone(),
            },
        );
        if let Err(e) = written {
            tracing::warn!(file = %env_file.display(), error = %e, "cannot write the demo's variables");
        }
        println!();
        println!(
            "  Demo: agency `{DEMO_AGENCY}`, service `demo-echo` published on wechat/alipay/baidu,"
        );
        println!(
            "  echo upstream on {}. Call it as the wechat app `{DEMO_APP}`:",
            args.demo_upstream
        );
        println!();
        println!(
            "    curl -i -H 'Authorization: Bearer {token}' http://{}/demo/hello",
            args.gateway_http
        );
        println!();
        println!(
            "  The walk-through in docs/admin.md reads these from {}:",
            env_file.display()
        );
        println!("    . {}", env_file.display());
    }
    println!();
    tracing::info!(listen = %args.listen, tls = tls.is_some(), "fenfa-admin serving");
    match tls {
        Some(config) => crate::app::serve_tls(app, listener, config).await,
        None => crate::app::serve(app, listener).await,
    }
    .map_err(|e| format!("serving: {e}"))
}

fn print_issued(issued: &[crate::auth::Issued]) {
    if issued.is_empty() {
        return;
    }
    println!();
    println!("  Initial accounts (shown ONCE; store them now):");
    for i in issued {
        println!("    {:<10} role {}", i.username, i.role.as_str());
        if let Some(p) = &i.password {
            println!("               password     {p}");
        }
        if let Some(s) = &i.totp_secret {
            println!("               TOTP secret  {s}");
        }
        if let Some(u) = i.otpauth() {
            println!("               otpauth      {u}");
        }
    }
}

/// Seeds the demo resources (once) and returns a client token valid for 24 hours.
pub async fn seed_demo(app: &App, upstream: &str) -> ApiResult<String> {
    let who = Actor::system();
    let s = crate::commit::snapshot(app).await?;
    let (host, port) = crate::policy::split_addr(upstream).unwrap_or(("127.0.0.1", 9081));
    let agency_id = match s.agencies.iter().find(|a| a.name.as_str() == DEMO_AGENCY) {
        Some(a) => a.id.clone(),
        None => {
            let id = new_id("ag");
            let (i2, host, port) = (id.clone(), host.to_string(), port);
            commit(app, &who, "demo.seed", move |s, now| {
                s.agencies.push(Agency {
                    id: i2.clone(),
                    name: Name::try_from(DEMO_AGENCY.to_string()).map_err(ApiError::internal)?,
                    title: Text::try_from("演示委办局 (demo agency)".to_string())
                        .map_err(ApiError::internal)?,
                    contact: None,
                    path_prefixes: Vec::new(),
                    hosts: Vec::new(),
                    signature_algorithm: None,
                    created_at: now,
                    updated_at: now,
                });
                Ok(Touched::new(kind::AGENCY, i2))
            })
            .await?;
            let i3 = id.clone();
            commit(app, &who, "demo.seed", move |s, now| {
                let pid = new_id("np");
                s.policies.push(NetworkPolicy {
                    id: pid.clone(),
                    agency_id: i3,
                    name: Name::try_from("demo-echo".to_string()).map_err(ApiError::internal)?,
                    description: None,
                    rules: vec![Rule {
                        destination: Destination::try_from(host).map_err(ApiError::internal)?,
                        port: Port(port),
                        protocol: Protocol::Http,
                    }],
                    created_at: now,
                    updated_at: now,
                });
                Ok(Touched::new(kind::POLICY, pid))
            })
            .await?;
            id
        }
    };
    let s = crate::commit::snapshot(app).await?;
    if !s.token_keys.iter().any(|k| k.kid == DEMO_KID) {
        let k = URL_SAFE_NO_PAD.encode(random_array::<32>());
        let master = &app.master;
        commit(app, &who, "demo.seed", move |s, now| {
            let id = new_id("tk");
            let jwk = json!({"kty": "oct", "kid": DEMO_KID, "alg": "HS256"});
            s.token_keys.push(TokenKey {
                id: id.clone(),
                kid: DEMO_KID.into(),
                alg: "HS256".into(),
                jwk: jwk.as_object().cloned().unwrap_or_default(),
                sealed_k: Some(master.seal(&format!("token-key:{id}"), k.as_bytes())),
                status: KeyStatus::Active,
                created_at: now,
                updated_at: now,
            });
            Ok(Touched::new(kind::TOKEN_KEY, id))
        })
        .await?;
    }
    if !s.apps.iter().any(|a| a.app_id.as_str() == DEMO_APP) {
        commit(app, &who, "demo.seed", |s, now| {
            let id = new_id("app");
            s.apps.push(crate::model::App {
                id: id.clone(),
                channel: Channel::Wechat,
                app_id: AppId::try_from(DEMO_APP.to_string()).map_err(ApiError::internal)?,
                name: Text::try_from("演示小程序 (demo app)".to_string())
                    .map_err(ApiError::internal)?,
                sealed_signin: None,
                signin_endpoint: None,
                created_at: now,
                updated_at: now,
            });
            Ok(Touched::new(kind::APP, id))
        })
        .await?;
    }
    if !s.services.iter().any(|x| x.name.as_str() == "demo-echo") {
        let upstream_addr = upstream.to_string();
        let sid = new_id("sv");
        let (s2, a2) = (sid.clone(), agency_id.clone());
        commit(app, &who, "demo.seed", move |s, now| {
            let upstream: Upstream = serde_json::from_value(json!({
                "targets": [{"addr": upstream_addr}],
                "timeouts": {"connect": "1s", "read": "5s", "total": "10s"},
            }))
            .map_err(ApiError::internal)?;
            s.services.push(Service {
                id: s2.clone(),
                agency_id: a2,
                name: Name::try_from("demo-echo".to_string()).map_err(ApiError::internal)?,
                title: Text::try_from("演示回显服务 (demo echo)".to_string())
                    .map_err(ApiError::internal)?,
                kind: ServiceKind::Api,
                description: None,
                upstream,
                status: Lifecycle::Published,
                channels: vec![Channel::Wechat, Channel::Alipay, Channel::Baidu],
                apps: Vec::new(),
                review_note: None,
                capacity_rps: None,
                masking: None,
                verification: None,
                created_at: now,
                updated_at: now,
            });
            Ok(Touched::new(kind::SERVICE, s2))
        })
        .await?;
        {
            commit(app, &who, "demo.seed", move |s, now| {
                let id = new_id("rt");
                s.routes.push(Route {
                    id: id.clone(),
                    service_id: sid,
                    name: Name::try_from("demo-hello".to_string()).map_err(ApiError::internal)?,
                    description: Some(
                        Text::try_from("回显 (echo)".to_string()).map_err(ApiError::internal)?,
                    ),
                    paths: vec!["/demo/*".into()],
                    methods: Vec::new(),
                    hosts: Vec::new(),
                    strip_prefix: true,
                    rewrite: None,
                    priority: 0,
                    allow_overlap: None,
                    samples: Vec::new(),
                    created_at: now,
                    updated_at: now,
                });
                Ok(Touched::new(kind::ROUTE, id))
            })
            .await?;
        }
    }
    demo_token(app).await
}

/// A 24-hour HS256 client token signed with the demo key, as the unified identity service would
/// issue it to the demo wechat app.
pub async fn demo_token(app: &App) -> ApiResult<String> {
    let s = crate::commit::snapshot(app).await?;
    let key = s
        .token_keys
        .iter()
        .find(|k| k.kid == DEMO_KID)
        .ok_or_else(|| ApiError::internal("no demo key"))?;
    let k = key
        .sealed_k
        .as_ref()
        .ok_or_else(|| ApiError::internal("demo key has no secret"))
        .and_then(|sealed| {
            app.master
                .open(&format!("token-key:{}", key.id), sealed)
                .map_err(ApiError::internal)
        })?;
    let secret = URL_SAFE_NO_PAD.decode(&k).map_err(ApiError::internal)?;
    let now = app.now();
    let claims = json!({
        "sub": "demo-user",
        "chn": "wechat",
        "app": DEMO_APP,
        "iss": s.settings.token_issuer,
        "aud": s.settings.token_audience,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 86_400,
        "jti": crate::crypto::hex(&random_array::<8>()),
    });
    Ok(sign_hs256(&secret, DEMO_KID, &claims))
}

/// A compact JWS (HS256).
pub fn sign_hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let sig = hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}
