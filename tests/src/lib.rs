//! Keyway's integration-test harness: real Redis from `keyway-lab`, the proxy
//! in-process on port 0, and polling with deadlines instead of sleeps.
//!
//! Deadlines are generous (a loaded 2-core CI machine): they bound how long a
//! failing test hangs, they are not performance assertions.

use std::net::SocketAddr;
use std::time::Duration;

use keyway::Proxy;
use keyway_config::{Config, NodeAddr};
pub use keyway_lab::{Lab, RedisNode};

/// How long any "eventually" condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` every 20 ms until it is true; panics with `what` after `DEADLINE`.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($what:tt)+) => {{
        let deadline = ::tokio::time::Instant::now() + $crate::DEADLINE;
        loop {
            if $cond {
                break;
            }
            if ::tokio::time::Instant::now() >= deadline {
                panic!("not true within {:?}: {}", $crate::DEADLINE, format!($($what)+));
            }
            ::tokio::time::sleep(::std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// A lab with `replicas` replicas and a password. Panics with the lab's own
/// message (which says how to install redis-server when it is missing).
pub fn lab(replicas: usize) -> Lab {
    match Lab::builder().replicas(replicas).start() {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start the Redis lab: {e}"),
    }
}

/// Settings the tests tune; everything else is the config defaults.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub interval: &'static str,
    pub timeout: &'static str,
    pub rise: u32,
    pub fall: u32,
    pub hold: &'static str,
    pub connect: &'static str,
    pub extra: String,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            interval: "100ms",
            timeout: "100ms",
            rise: 2,
            fall: 2,
            hold: "5s",
            connect: "500ms",
            extra: String::new(),
        }
    }
}

/// A one-service config named `redis` on 127.0.0.1:0 in front of `nodes`,
/// authenticating with the lab's password file; the admin server on
/// 127.0.0.1:0 too (see `Proxy::admin_addr`).
pub fn config(lab: &Lab, nodes: &[SocketAddr], tuning: &Tuning) -> Config {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    let password_file = lab
        .password_file()
        .map(|p| format!("password_file = \"{}\"", p.display()))
        .unwrap_or_default();
    let Tuning {
        interval,
        timeout,
        rise,
        fall,
        hold,
        connect,
        extra,
    } = tuning;
    let text = format!(
        r#"
[log]
level = "warn"

# Port 0: tests run in parallel, each proxy with its own admin server.
[admin]
listen = "127.0.0.1:0"

[[service]]
name = "redis"
listen = "127.0.0.1:0"
nodes = [{nodes}]
{password_file}

[service.check]
interval = "{interval}"
timeout = "{timeout}"
rise = {rise}
fall = {fall}

[service.timeouts]
connect = "{connect}"
hold = "{hold}"
{extra}
"#,
        nodes = nodes.join(", ")
    );
    match Config::from_toml_str(&text, &lab.dir().join("keyway.toml")) {
        Ok(config) => config,
        Err(problems) => panic!("test config invalid:\n{problems}\n{text}"),
    }
}

/// Every node of the lab, as addresses.
pub fn addrs(lab: &Lab) -> Vec<SocketAddr> {
    lab.nodes().iter().map(RedisNode::addr).collect()
}

/// Starts the proxy and waits until its route is `expected`.
pub async fn proxy_routed_to(config: &Config, expected: SocketAddr) -> Proxy {
    let proxy = Proxy::start(config).await.expect("proxy starts");
    wait_route(&proxy, Some(expected)).await;
    proxy
}

/// Waits until the `redis` service routes to `expected`.
pub async fn wait_route(proxy: &Proxy, expected: Option<SocketAddr>) {
    let expected = expected.map(NodeAddr);
    assert_eventually!(
        proxy.route("redis") == expected,
        "route is {:?}, expected {:?}",
        proxy.route("redis"),
        expected
    );
}

/// The proxy's `redis` endpoint.
pub fn endpoint(proxy: &Proxy) -> SocketAddr {
    proxy.listen_addr("redis").expect("service redis")
}

/// A `redis` crate client for the proxy endpoint, with the lab's password.
pub fn client(proxy: &Proxy, lab: &Lab) -> redis::Client {
    let addr = endpoint(proxy);
    let url = match lab.password() {
        Some(pw) => format!("redis://:{pw}@{}:{}/0", addr.ip(), addr.port()),
        None => format!("redis://{}:{}/0", addr.ip(), addr.port()),
    };
    redis::Client::open(url).expect("valid url")
}

/// How long Sentinel-driven conditions may take: Sentinel converts a node that
/// wrongly claims master only after 8 s of claims and on an `INFO` refresh that
/// can be 10 s apart, so these waits need more than [`DEADLINE`].
pub const SENTINEL_DEADLINE: Duration = Duration::from_secs(60);

/// [`assert_eventually!`] with its own deadline instead of [`DEADLINE`].
#[macro_export]
macro_rules! assert_eventually_within {
    ($deadline:expr, $cond:expr, $($what:tt)+) => {{
        let limit: ::std::time::Duration = $deadline;
        let deadline = ::tokio::time::Instant::now() + limit;
        loop {
            if $cond {
                break;
            }
            if ::tokio::time::Instant::now() >= deadline {
                panic!("not true within {:?}: {}", limit, format!($($what)+));
            }
            ::tokio::time::sleep(::std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// A lab with Sentinel: one master, `replicas` replicas and `sentinels`
/// sentinels (down-after 1000 ms, quorum a majority), nodes with a password,
/// sentinels without. Blocking: call it off the runtime.
pub fn sentinel_lab(replicas: usize, sentinels: usize) -> Lab {
    let started = Lab::builder()
        .replicas(replicas)
        .sentinels(sentinels)
        .down_after(Duration::from_millis(1000))
        .start();
    match started {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start the Redis lab with Sentinel: {e}"),
    }
}

/// The `[service.sentinel]` table following `lab`'s sentinels, for
/// [`Tuning::extra`].
pub fn sentinel_toml(lab: &Lab) -> String {
    let nodes: Vec<String> = lab
        .sentinels()
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    let password_file = lab
        .sentinel_password_file()
        .map(|p| format!("password_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        "\n[service.sentinel]\nmaster_name = \"{}\"\nnodes = [{}]\n{password_file}",
        lab.master_name(),
        nodes.join(", ")
    )
}
