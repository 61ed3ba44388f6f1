//! `fenfa-admin` command line (package `fenfa-platform`).
//!
//! This binary links the control plane (`fenfa-admin`, which has no proxy inside) with the gateway
//! (`fenfa-gateway`), so that `serve` runs the single-node platform in one process.
//!
//! - `fenfa-admin serve [--listen 127.0.0.1:9180] [--data-dir data] [--database URL] [--demo]
//!   [--tls-cert FILE --tls-key FILE]` — the control plane with an in-process gateway (the
//!   single-node platform); over TLS when given a certificate.
//! - `fenfa-admin audit verify [--data-dir data] [--database URL]` — checks the admin audit chain
//!   straight from the database (no API, no running control plane); exit status 0 when intact,
//!   1 naming the first bad record.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fenfa_admin::serve::{self, ServeArgs};

/// The same allocator as `fenfa-gateway` (the single-node platform runs the gateway in process).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "fenfa-admin", version, about = "Fenfa control plane")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start: the size of the `serve` variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the control plane (REST API, OpenAPI at /openapi.json) and an in-process gateway.
    Serve {
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:9180")]
        listen: SocketAddr,
        /// Database, master key, rendered gateway config and the gateway's own state.
        /// Default: `$XDG_DATA_HOME/fenfa-admin`, else `~/.local/share/fenfa-admin`, else
        /// `<temp dir>/fenfa-admin` — never inside the checkout.
        #[arg(long, env = "FENFA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// `sqlite://FILE?mode=rwc` (default: `<data-dir>/fenfa-admin.db`) or `postgres://…`.
        #[arg(long, env = "FENFA_DATABASE_URL")]
        database: Option<String>,
        /// Seed a demo agency, service, app and echo upstream, and print a ready curl.
        #[arg(long)]
        demo: bool,
        /// Do not run the in-process gateway (control plane only, e.g. for a cluster).
        #[arg(long)]
        no_gateway: bool,
        /// The in-process gateway's proxy listener.
        #[arg(long, default_value = "127.0.0.1:9080")]
        gateway_http: String,
        /// The in-process gateway's status listener.
        #[arg(long, default_value = "127.0.0.1:9091")]
        gateway_status: String,
        /// Where `--demo` runs its echo upstream.
        #[arg(long, default_value = "127.0.0.1:9081")]
        demo_upstream: String,
        /// Name of the first-start system admin account (default `admin`).
        #[arg(long, env = "FENFA_ADMIN_USERNAME")]
        admin_username: Option<String>,
        /// Name of the first-start security admin account (default `security`).
        #[arg(long, env = "FENFA_SECURITY_USERNAME")]
        security_username: Option<String>,
        /// Name of the first-start audit admin account (default `auditor`).
        #[arg(long, env = "FENFA_AUDIT_USERNAME")]
        audit_username: Option<String>,
        /// Serve the API over TLS with this certificate chain (PEM, leaf first); needs --tls-key.
        #[arg(long, env = "FENFA_ADMIN_TLS_CERT")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, env = "FENFA_ADMIN_TLS_KEY")]
        tls_key: Option<PathBuf>,
        /// The CA that issued --tls-cert, for the in-process gateway's audit shipping to this
        /// listener [default: the system's CAs].
        #[arg(long, env = "FENFA_ADMIN_TLS_CA")]
        tls_ca: Option<PathBuf>,
        /// Redis for the active-user counts (`redis://HOST:PORT[/DB]`), shared by every
        /// control-plane process [default: in-process sketches saved to the database].
        #[arg(long, env = "FENFA_ADMIN_REDIS")]
        redis: Option<String>,
        /// Prefix of the active-user keys in --redis.
        #[arg(long, env = "FENFA_ADMIN_REDIS_PREFIX", default_value = "fenfa")]
        redis_prefix: String,
    },
    /// The admin audit trail, offline.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the admin audit hash chain from the database (the master key comes from
    /// `FENFA_MASTER_KEY` or `<data-dir>/master.key`).
    Verify {
        /// The control plane's data dir (master key; default database).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// `sqlite://FILE` (default: `<data-dir>/fenfa-admin.db`) or `postgres://…`.
        #[arg(long, env = "FENFA_DATABASE_URL")]
        database: Option<String>,
    },
}

/// The data dir when none is given: the user's data dir (XDG), else the temp dir.
fn default_data_dir() -> PathBuf {
    let nonempty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    nonempty("XDG_DATA_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".local").join("share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("fenfa-admin")
}

/// Runs the real gateway in a thread of its own, on the rendered config `serve` keeps up to date.
fn start_gateway(g: serve::LocalGateway) -> Result<(), String> {
    let opts = fenfa_gateway::server::Options {
        config: g.config,
        control_plane: None,
        data_dir: g.data_dir,
        demo_upstream: g.demo_upstream,
        registry: g.plugins,
    };
    std::thread::Builder::new()
        .name("fenfa-gateway".into())
        .spawn(move || {
            if let Err(e) = fenfa_gateway::server::run(opts) {
                tracing::error!(error = %e, "the in-process gateway stopped");
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the gateway thread: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FENFA_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,sqlx=warn,pingora_core=warn,pingora_proxy=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve {
            listen,
            data_dir,
            database,
            demo,
            no_gateway,
            gateway_http,
            gateway_status,
            demo_upstream,
            admin_username,
            security_username,
            audit_username,
            tls_cert,
            tls_key,
            tls_ca,
            redis,
            redis_prefix,
        } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            println!("  Data dir: {}", data_dir.display());
            let args = ServeArgs {
                listen,
                data_dir,
                database,
                demo,
                gateway: !no_gateway,
                gateway_http,
                gateway_status,
                demo_upstream,
                initial_usernames: [admin_username, security_username, audit_username],
                tls_cert,
                tls_key,
                tls_ca,
                redis: redis.map(|url| fenfa_admin::app::RedisOptions {
                    url,
                    prefix: redis_prefix,
                }),
            };
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(serve::run(args, Some(Box::new(start_gateway)))),
                Err(e) => Err(format!("cannot start the runtime: {e}")),
            }
        }
        Cmd::Audit {
            cmd: AuditCmd::Verify { data_dir, database },
        } => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => match rt.block_on(fenfa_admin::audit::verify_offline(
                &data_dir,
                database.as_deref(),
                std::env::var("FENFA_MASTER_KEY").ok().as_deref(),
            )) {
                Ok(v) if v.ok => {
                    println!("ok: {}", v.message);
                    Ok(())
                }
                Ok(v) => Err(format!("the admin audit chain is broken: {}", v.message)),
                Err(e) => Err(e),
            },
            Err(e) => Err(format!("cannot start the runtime: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fenfa-admin: {e}");
            ExitCode::FAILURE
        }
    }
}
