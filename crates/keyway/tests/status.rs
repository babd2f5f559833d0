//! `keyway status` as an operator runs it, against a proxy running in-process
//! in front of a real lab (admin server on 127.0.0.1:0).

use std::process::{Command, Output};
use std::time::Duration;

use keyway_config::Config;

const KEYWAY: &str = env!("CARGO_BIN_EXE_keyway");
const DEADLINE: Duration = Duration::from_secs(30);

async fn keyway(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(KEYWAY).args(&args).output())
        .await
        .expect("join")
        .expect("run keyway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_route_nodes_and_events() {
    let lab = tokio::task::spawn_blocking(|| keyway_lab::Lab::builder().replicas(1).start())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("cannot start the Redis lab: {e}"));
    let (master, replica) = (lab.node(0).addr(), lab.node(1).addr());
    let password = lab.password().expect("lab password").to_string();
    let text = format!(
        "[log]\nlevel = \"warn\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[service]]\nname = \"redis\"\nlisten = \"127.0.0.1:0\"\nnodes = [\"{master}\", \"{replica}\"]\n\
         password_file = \"{}\"\n[service.check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n",
        lab.password_file().expect("password file").display()
    );
    let config = Config::from_toml_str(&text, &lab.dir().join("keyway.toml"))
        .unwrap_or_else(|p| panic!("config: {p}"));
    let proxy = keyway::Proxy::start(&config).await.expect("proxy starts");
    let mut route = proxy.route_watch("redis").expect("service");
    tokio::time::timeout(DEADLINE, route.wait_for(|r| r.map(|n| n.0) == Some(master)))
        .await
        .expect("routed within the deadline")
        .expect("monitor running");
    let admin = proxy.admin_addr().to_string();

    let out = keyway(vec!["status".into(), "-a".into(), admin.clone()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listen = proxy.listen_addr("redis").expect("listen");
    // The service line names the route; the node lines their roles; `*` marks the route.
    assert!(
        stdout.lines().any(|l| l.starts_with("redis ")
            && l.contains(&listen.to_string())
            && l.contains(&master.to_string())),
        "{stdout}"
    );
    let node_line = |addr: std::net::SocketAddr| {
        stdout
            .lines()
            .find(|l| l.contains(&addr.to_string()) && (l.contains(" up ") || l.contains(" down ")))
            .unwrap_or_else(|| panic!("no node line for {addr}:\n{stdout}"))
            .to_string()
    };
    let m = node_line(master);
    assert!(
        m.trim_start().starts_with('*') && m.contains("master"),
        "{m}"
    );
    let r = node_line(replica);
    assert!(
        !r.trim_start().starts_with('*') && r.contains("replica"),
        "{r}"
    );
    assert!(stdout.contains("Recent events"), "{stdout}");
    assert!(stdout.contains("route_changed"), "{stdout}");
    assert!(!stdout.contains(&password));

    let out = keyway(vec![
        "status".into(),
        "--json".into(),
        "-a".into(),
        format!("http://{admin}/"),
    ])
    .await;
    assert!(out.status.success());
    let doc: keyway::status::StatusDoc =
        serde_json::from_slice(&out.stdout).expect("--json prints the document");
    assert_eq!(doc.services[0].route, Some(master));

    proxy.shutdown().await;

    // Nothing listens any more: a clear error and exit 1.
    let out = keyway(vec!["status".into(), "-a".into(), admin.clone()]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Keyway admin endpoint"),
        "{stderr}"
    );
    assert!(stderr.contains(&admin), "{stderr}");
    tokio::task::spawn_blocking(move || drop(lab))
        .await
        .expect("join");
}
