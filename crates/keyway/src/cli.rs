//! The `keyway` command line.
//!
//! - `keyway run -c FILE`: run the proxy until SIGTERM / SIGINT.
//! - `keyway check -c FILE`: validate a configuration and print every problem as
//!   `FILE:LINE:COL: message`, exit 0 when valid and 1 otherwise (like `haproxy -c`).
//! - `keyway lab`: start a local Redis HA lab and Keyway in front of it.
//! - `keyway status [-a ADDR]`: the services, routes, nodes and recent events of
//!   a running Keyway, read from its admin endpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyway_config::Config;

/// Keyway: a TCP proxy that sends every client to the current Redis master, and
/// only to it.
#[derive(Debug, Parser)]
#[command(name = "keyway", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/keyway/keyway.toml")]
        config: PathBuf,
    },
    /// Validate a configuration; print every problem as FILE:LINE:COL: message.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/keyway/keyway.toml")]
        config: PathBuf,
    },
    /// Start a local Redis lab (master + replicas on loopback) and Keyway in front of it.
    Lab(crate::lab::LabArgs),
    /// Show a running Keyway: services, routes, sessions, nodes, sentinels, recent events.
    Status(crate::status::StatusArgs),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config: path } => match Config::from_file(&path) {
            Ok(config) => exit(runtime().and_then(|rt| rt.block_on(run(config, path.clone())))),
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!(
                    "keyway: {} problem(s) in {}",
                    problems.0.len(),
                    path.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::Lab(args) => exit(runtime().and_then(|rt| rt.block_on(crate::lab::run(args)))),
        Command::Status(args) => exit(crate::status::run(&args)),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::from_file(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} service(s) from {} file(s))",
                path.display(),
                config.services.len(),
                config.sources.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            // Every problem on stdout, like `haproxy -c`, then a summary on stderr.
            println!("{problems}");
            eprintln!(
                "keyway: {} problem(s) in {}",
                problems.0.len(),
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// The main runtime: signals, reloads and the accept loops. Sessions run on
/// the data-path workers (`crate::workers`), probes and the admin server on the
/// control thread (`crate::control`), so one thread is enough here.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the proxy for `config` (loaded from `path`) until SIGTERM or SIGINT.
pub async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    crate::logging::init(&config.log);
    let proxy = crate::Proxy::start(&config).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        services = config.services.len(),
        workers = proxy.workers(),
        "keyway running"
    );
    crate::serve::serve(proxy, path).await
}
