//! `fenfa-example-gateway`: the Fenfa gateway with the built-in plugins plus `body-digest`.
//!
//! Usage: `fenfa-example-gateway --config FILE --data-dir DIR` (the same as
//! `fenfa-gateway --config FILE --data-dir DIR`). This is all an embedder writes to ship a
//! gateway with its own plugins.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FENFA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config: Option<PathBuf> = None;
    let mut data_dir = PathBuf::from("data");
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--config") => config = args.next().map(PathBuf::from),
            Some("--data-dir") => {
                if let Some(d) = args.next() {
                    data_dir = PathBuf::from(d);
                }
            }
            _ => {
                eprintln!("usage: fenfa-example-gateway --config FILE [--data-dir DIR]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("--config FILE is required");
        return ExitCode::from(2);
    };
    let opts = fenfa_gateway::server::Options {
        config,
        control_plane: None,
        data_dir,
        demo_upstream: None,
        registry: fenfa_example_body_plugin::registry(),
    };
    match fenfa_gateway::server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fenfa-example-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
