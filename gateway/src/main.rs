//! `fenfa-gateway` command line.
//!
//! - `fenfa-gateway --config fenfa.yaml [--data-dir DIR]` — run the gateway.
//! - `fenfa-gateway check --config fenfa.yaml` — compile a config and report the first error.
//! - `fenfa-gateway demo` — the gateway on `examples/demo.yaml` plus an echo upstream.
//! - `fenfa-gateway audit verify [DIR]` / `audit query [filters]` — the audit trail (`docs/audit.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: pingora allocates per request, and glibc's allocator was
/// about 13% of the proxy's CPU in the full-chain profile (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use fenfa_gateway::{demo, gateway::Gateway, server};

#[derive(Parser)]
#[command(
    name = "fenfa-gateway",
    version,
    about = "Fenfa data plane: the pingora gateway"
)]
struct Cli {
    /// Declarative config file (YAML); watched for changes, reloaded on SIGHUP.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Follow this control plane (e.g. https://fenfa-admin.internal:9180) for services and
    /// routes; `--config` then names an optional base file with this node's listeners and
    /// settings. Plain http:// only to a loopback address (or with --control-plane-insecure).
    #[arg(long, global = true, env = "FENFA_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// The node token for the control plane (or env FENFA_NODE_TOKEN).
    #[arg(long, global = true, env = "FENFA_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<String>,
    /// PEM file of the CAs trusted for the control plane's certificate [default: the system's].
    #[arg(long, global = true, env = "FENFA_CONTROL_PLANE_CA")]
    control_plane_ca: Option<String>,
    /// PEM client certificate presented to the control plane (mutual TLS); needs the key.
    #[arg(long, global = true, env = "FENFA_CONTROL_PLANE_CLIENT_CERT")]
    control_plane_client_cert: Option<String>,
    /// PEM private key of --control-plane-client-cert.
    #[arg(long, global = true, env = "FENFA_CONTROL_PLANE_CLIENT_KEY")]
    control_plane_client_key: Option<String>,
    /// Allow plain http:// to a control plane that is not on loopback: the node token and the
    /// config (with its secrets) cross the network unencrypted. Logged as a warning.
    #[arg(long, global = true, env = "FENFA_CONTROL_PLANE_INSECURE")]
    control_plane_insecure: bool,
    /// Largest config accepted from the control plane, in bytes.
    #[arg(long, global = true, env = "FENFA_CONTROL_PLANE_MAX_BODY",
          default_value_t = fenfa_gateway::control_plane::DEFAULT_MAX_BODY)]
    control_plane_max_body: u64,
    /// Where the last good config, the audit key and the audit segments are kept.
    #[arg(long, global = true, default_value = "data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (the default).
    Run,
    /// Compile the config and report the first error with its field path; exit 1 if invalid.
    Check,
    /// Run the demo: the gateway on 127.0.0.1:9080 in front of an echo upstream on 127.0.0.1:9081.
    Demo,
    /// The audit trail: verify that it is whole, or query it.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the trail; print OK, or the first broken place as FILE:LINE. Exit 1 if broken.
    Verify {
        /// Audit directory [default: `audit.dir` of --config, else <data-dir>/audit].
        dir: Option<PathBuf>,
        /// Chain key file [default: `audit.key_file` of --config, else audit.key beside DIR,
        /// else <data-dir>/audit.key].
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print the records that match every filter given, oldest first.
    Query(Box<QueryArgs>),
}

#[derive(clap::Args)]
struct QueryArgs {
    /// Audit directory [default: `audit.dir` of --config, else <data-dir>/audit].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// From this time, inclusive: unix seconds, `YYYY-MM-DD` or RFC 3339.
    #[arg(long, value_parser = fenfa_gateway::audit::time::parse)]
    from: Option<i64>,
    /// Until this time, exclusive.
    #[arg(long, value_parser = fenfa_gateway::audit::time::parse)]
    to: Option<i64>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    app: Option<String>,
    /// `wechat`, `alipay` or `baidu`.
    #[arg(long)]
    channel: Option<String>,
    #[arg(long)]
    service: Option<String>,
    #[arg(long)]
    agency: Option<String>,
    #[arg(long)]
    route: Option<String>,
    #[arg(long)]
    request_id: Option<String>,
    /// A code (`404`) or a class (`5xx`).
    #[arg(long)]
    status: Option<fenfa_gateway::audit::query::Status>,
    /// `allowed`, `denied` or `error`.
    #[arg(long)]
    decision: Option<fenfa_gateway::audit::Decision>,
    /// At most this many records.
    #[arg(long)]
    limit: Option<usize>,
    /// `json` (the stored lines) or `table`.
    #[arg(long, default_value = "json")]
    format: fenfa_gateway::audit::query::Format,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FENFA_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => match (cli.config, cli.control_plane) {
            (config, Some(url)) => match cli.node_token {
                Some(token) => {
                    use fenfa_gateway::control_plane::{ControlPlane, Options};
                    let opts = Options {
                        url,
                        token,
                        tls: fenfa_gateway::config::model::ClientTls {
                            ca: cli.control_plane_ca,
                            client_cert: cli.control_plane_client_cert,
                            client_key: cli.control_plane_client_key,
                        },
                        insecure: cli.control_plane_insecure,
                        max_body: cli.control_plane_max_body,
                    };
                    // Checked before anything connects: a refused URL never sees the token.
                    match ControlPlane::new(&opts) {
                        Ok(cp) => server::run(server::Options {
                            config: config.unwrap_or_else(|| cli.data_dir.join("base.yaml")),
                            control_plane: Some(cp),
                            data_dir: cli.data_dir,
                            demo_upstream: None,
                            registry: fenfa_plugins::builtin(),
                        }),
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => Err("--control-plane needs --node-token (or FENFA_NODE_TOKEN)".to_string()),
            },
            (Some(config), None) => server::run(server::Options {
                config,
                control_plane: None,
                data_dir: cli.data_dir,
                demo_upstream: None,
                registry: fenfa_plugins::builtin(),
            }),
            (None, None) => Err("--config FILE (or --control-plane URL) is required".to_string()),
        },
        Cmd::Check => check(cli.config, cli.data_dir),
        Cmd::Demo => run_demo(cli.data_dir),
        Cmd::Audit { cmd } => audit(cmd, cli.config, cli.data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fenfa-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: Option<PathBuf>, data_dir: PathBuf) -> Result<(), String> {
    let config = config.ok_or("--config FILE is required")?;
    let text = std::fs::read_to_string(&config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let gw = Gateway::new(data_dir, "check".into(), fenfa_plugins::builtin());
    let parsed =
        fenfa_gateway::config::parse(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let rt = gw
        .compile(&parsed)
        .map_err(|e| format!("{}: {e}", config.display()))?;
    println!(
        "{}: OK (version {}, {} services, {} route paths)",
        config.display(),
        rt.version,
        rt.services.len(),
        rt.router.len()
    );
    Ok(())
}

fn audit(cmd: AuditCmd, config: Option<PathBuf>, data_dir: PathBuf) -> Result<(), String> {
    use fenfa_gateway::audit;
    let settings = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            fenfa_gateway::config::parse(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .audit
        }
        None => Default::default(),
    };
    let default_dir = audit::dir(&settings, &data_dir);
    match cmd {
        AuditCmd::Verify { dir, key } => {
            let dir = dir.unwrap_or(default_dir);
            let key = key.unwrap_or_else(|| {
                let beside = dir.parent().map(|p| p.join(audit::KEY_FILE));
                match beside {
                    Some(k) if config.is_none() && k.exists() => k,
                    _ => audit::key_path(&settings, &data_dir),
                }
            });
            let key = audit::chain::Key::load(&key)?;
            let report = audit::verify::verify(&dir, &key)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            println!("{report}");
            match report.problem {
                None => Ok(()),
                Some(_) => Err(format!(
                    "the audit trail in {} does not verify",
                    dir.display()
                )),
            }
        }
        AuditCmd::Query(q) => {
            let dir = q.dir.unwrap_or(default_dir);
            let filter = audit::query::Filter {
                from_ms: q.from,
                to_ms: q.to,
                user: q.user,
                app: q.app,
                channel: q.channel,
                service: q.service,
                agency: q.agency,
                route: q.route,
                request_id: q.request_id,
                status: q.status,
                decision: q.decision,
                limit: q.limit,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            audit::query::run(&dir, &filter, q.format, &mut out)
                .and_then(|_| std::io::Write::flush(&mut out))
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            Ok(())
        }
    }
}

fn run_demo(data_dir: PathBuf) -> Result<(), String> {
    let config = data_dir.join("demo.yaml");
    fenfa_gateway::gateway::write_atomically(&config, demo::DEMO_CONFIG.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    println!();
    println!(
        "  Fenfa demo: gateway on http://127.0.0.1:9080, echo upstream on {}",
        demo::DEMO_UPSTREAM
    );
    println!(
        "  Config: {} (edit it: the gateway reloads on save)",
        config.display()
    );
    println!();
    println!("  Try:");
    println!("    curl -i http://127.0.0.1:9080/demo/hello");
    println!("    curl -s http://127.0.0.1:9091/status");
    println!("    curl -s http://127.0.0.1:9091/metrics | grep fenfa_");
    println!();
    server::run(server::Options {
        config,
        data_dir,
        control_plane: None,
        demo_upstream: Some(demo::DEMO_UPSTREAM.to_string()),
        registry: fenfa_plugins::builtin(),
    })
}
