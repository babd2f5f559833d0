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
    /// Number of Redis Sentinels (0: route on probes alone).
    #[arg(long, default_value_t = 3)]
    pub sentinels: usize,
    /// Write the lab's addresses as shell variables (KEYWAY_LAB_*) to this file
    /// once everything is ready, for scripts.
    #[arg(long)]
    pub env_file: Option<std::path::PathBuf>,
}

/// Starts the lab and the proxy; returns when the proxy is stopped.
pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    let (replicas, sentinels) = (args.replicas, args.sentinels);
    let lab = tokio::task::spawn_blocking(move || {
        keyway_lab::Lab::builder()
            .replicas(replicas)
            .sentinels(sentinels)
            .start()
    })
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
    println!(
        "  config   : {}  (edit, then kill -HUP {} to reload)",
        config_path.display(),
        std::process::id()
    );
    println!(
        "  admin    : http://{}/status  (keyway status -a {})",
        proxy.admin_addr(),
        proxy.admin_addr()
    );
    for (i, node) in lab.nodes().iter().enumerate() {
        println!(
            "  node {i}   : {} ({})",
            node.addr(),
            if i == 0 { "master" } else { "replica" }
        );
    }
    for (i, sentinel) in lab.sentinels().iter().enumerate() {
        println!(
            "  sentinel {i}: {} (master name {})",
            sentinel.addr(),
            lab.master_name()
        );
    }
    println!(
        "  try      : REDISCLI_AUTH=$(cat {}) redis-cli -h {} -p {} PING",
        password_file.display(),
        listen.ip(),
        listen.port()
    );
    println!("Stop with Ctrl-C.");
    if let Some(path) = &args.env_file {
        write_env_file(path, &lab, listen, proxy.admin_addr(), password_file)
            .context("writing the env file")?;
    }

    crate::serve::serve(proxy, config_path).await?;
    tokio::task::spawn_blocking(move || drop(lab)).await?;
    Ok(())
}

/// Shell variables describing the lab, written atomically (a script polling for
/// the file never reads half of it).
fn write_env_file(
    path: &std::path::Path,
    lab: &keyway_lab::Lab,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    password_file: &std::path::Path,
) -> std::io::Result<()> {
    let join = |addrs: Vec<String>| addrs.join(" ");
    let nodes = join(lab.nodes().iter().map(|n| n.addr().to_string()).collect());
    let sentinels = join(
        lab.sentinels()
            .iter()
            .map(|s| s.addr().to_string())
            .collect(),
    );
    let text = format!(
        "KEYWAY_LAB_PORT={}\nKEYWAY_LAB_HOST={}\nKEYWAY_LAB_PASSWORD_FILE='{}'\nKEYWAY_LAB_MASTER={}\nKEYWAY_LAB_NODES='{nodes}'\nKEYWAY_LAB_SENTINELS='{sentinels}'\nKEYWAY_LAB_MASTER_NAME={}\nKEYWAY_LAB_DIR='{}'\nKEYWAY_LAB_PID={}\nKEYWAY_LAB_ADMIN={}\n",
        listen.port(),
        listen.ip(),
        password_file.display(),
        lab.node(0).addr(),
        lab.master_name(),
        lab.dir().display(),
        std::process::id(),
        admin,
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
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
    let sentinel = if lab.sentinels().is_empty() {
        String::new()
    } else {
        let addrs: Vec<String> = lab
            .sentinels()
            .iter()
            .map(|s| format!("\"{}\"", s.addr()))
            .collect();
        format!(
            "[service.sentinel]\nmaster_name = \"{}\"\nnodes = [{}]\n",
            lab.master_name(),
            addrs.join(", ")
        )
    };
    format!(
        r#"# Written by `keyway lab`.
[admin]
listen = "127.0.0.1:0"

[[service]]
name = "redis"
listen = "127.0.0.1:{port}"
nodes = [{nodes}]
{password_file}
{sentinel}
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
