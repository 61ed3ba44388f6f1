//! `fenfa-gateway` command line.
//!
//! - `fenfa-gateway --config fenfa.yaml [--data-dir DIR]` — run the gateway.
//! - `fenfa-gateway check --config fenfa.yaml` — compile a config and report the first error.
//! - `fenfa-gateway demo` — the gateway on `examples/demo.yaml` plus an echo upstream.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// Where the last good config is kept (and, later, audit segments).
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
        Cmd::Run => match cli.config {
            Some(config) => server::run(server::Options {
                config,
                data_dir: cli.data_dir,
                demo_upstream: None,
            }),
            None => Err("--config FILE is required".to_string()),
        },
        Cmd::Check => check(cli.config, cli.data_dir),
        Cmd::Demo => run_demo(cli.data_dir),
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
    let gw = Gateway::new(data_dir, "check".into());
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
        demo_upstream: Some(demo::DEMO_UPSTREAM.to_string()),
    })
}
