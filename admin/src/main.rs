//! `fenfa-admin` command line.
//!
//! - `fenfa-admin serve [--listen 127.0.0.1:9180] [--data-dir data] [--database URL] [--demo]` —
//!   the control plane with an in-process gateway (the single-node platform).

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

#[derive(Subcommand)]
enum Cmd {
    /// Run the control plane (REST API, OpenAPI at /openapi.json) and an in-process gateway.
    Serve {
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:9180")]
        listen: SocketAddr,
        /// Database, master key, rendered gateway config and the gateway's own state.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
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
    },
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
        } => {
            let args = ServeArgs {
                listen,
                data_dir,
                database,
                demo,
                gateway: !no_gateway,
                gateway_http,
                gateway_status,
                demo_upstream,
            };
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(serve::run(args)),
                Err(e) => Err(format!("cannot start the runtime: {e}")),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fenfa-admin: {e}");
            ExitCode::FAILURE
        }
    }
}
