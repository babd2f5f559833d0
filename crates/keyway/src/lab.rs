//! `keyway lab`: a local Redis HA group on loopback with Keyway in front, for
//! trying Keyway and for the quick start. Not for production.
//!
//! It starts a master and replicas with `keyway-lab` (real `redis-server`
//! processes in a temp dir), writes an ordinary Keyway configuration file into
//! that dir, loads it through the same validation as `keyway run`, and runs the
//! proxy until SIGINT / SIGTERM. Everything it started is killed on exit.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use keyway_config::Config;

/// Options of `keyway lab`.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Port Keyway listens on (127.0.0.1).
    #[arg(long, default_value_t = 6380)]
    pub port: u16,
    /// Number of replicas besides the master.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
}

/// Starts the lab and the proxy; returns when the proxy is stopped.
pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    let replicas = args.replicas;
    let lab =
        tokio::task::spawn_blocking(move || keyway_lab::Lab::builder().replicas(replicas).start())
            .await?
            .context("starting the Redis lab")?;
    let config_path = lab.dir().join("keyway.toml");
    std::fs::write(&config_path, lab_config(&lab, args.port)).context("writing the lab config")?;
    let config = Config::from_file(&config_path).map_err(|p| anyhow::anyhow!("{p}"))?;
    crate::logging::init(&config.log);

    let proxy = crate::Proxy::start(&config).await?;
    let listen = proxy.listen_addr("redis").context("lab service missing")?;
    let password_file = lab.password_file().context("lab has no password")?;
    // Wait (bounded) for the first route so the printed endpoint works at once.
    if let Some(mut route) = proxy.route_watch("redis") {
        let _ =
            tokio::time::timeout(Duration::from_secs(10), route.wait_for(Option::is_some)).await;
    }
    println!("Keyway lab ready.");
    println!(
        "  endpoint : redis://:PASSWORD@{listen}/0  (route: {})",
        proxy
            .route("redis")
            .map(|n| n.to_string())
            .unwrap_or_else(|| "none yet".into())
    );
    println!("  password : {}", password_file.display());
    println!("  config   : {}", config_path.display());
    for (i, node) in lab.nodes().iter().enumerate() {
        println!(
            "  node {i}   : {} ({})",
            node.addr(),
            if i == 0 { "master" } else { "replica" }
        );
    }
    println!(
        "  try      : REDISCLI_AUTH=$(cat {}) redis-cli -h {} -p {} PING",
        password_file.display(),
        listen.ip(),
        listen.port()
    );
    println!("Stop with Ctrl-C.");

    tokio::spawn(crate::signals::watch(proxy.shutdown_token()));
    proxy.wait().await;
    tokio::task::spawn_blocking(move || drop(lab)).await?;
    Ok(())
}

/// The lab's Keyway configuration: short checks so failovers show quickly.
fn lab_config(lab: &keyway_lab::Lab, port: u16) -> String {
    let mut nodes = String::new();
    for (i, node) in lab.nodes().iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(nodes, "{sep}\"{}\"", node.addr());
    }
    let password_file = lab
        .password_file()
        .map(|p| format!("password_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        r#"# Written by `keyway lab`.
[admin]
listen = "127.0.0.1:0"

[[service]]
name = "redis"
listen = "127.0.0.1:{port}"
nodes = [{nodes}]
{password_file}
[service.check]
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2

[service.timeouts]
connect = "500ms"
hold = "5s"
"#
    )
}
