//! Keyway's integration-test harness: real Redis from `keyway-lab`, the proxy
//! in-process on port 0, and polling with deadlines instead of sleeps.
//!
//! Deadlines are generous (a loaded 2-core CI machine): they bound how long a
//! failing test hangs, they are not performance assertions.
//!
//! What is here, shared by the test files:
//! - labs and blocking lab calls off the runtime ([`start_lab`], [`on_lab`],
//!   [`on_lab_timed`]), and deadlines ([`within`], [`assert_eventually!`]);
//! - configs ([`Tuning`], [`config`], [`services_config`], [`sentinel_toml`]);
//! - the proxy ([`proxy_on_master`], [`proxy_routed_to`], [`wait_route`],
//!   [`RouteLog`]);
//! - raw RESP over a `TcpStream` ([`resp`], [`auth_ping`], [`raw`],
//!   [`expect_bytes`], [`read_until_closed`], [`held_then_closed`],
//!   [`raw_session_on`]) and the `redis` crate ([`client`], [`server_port`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyway::Proxy;
use keyway_config::{Config, NodeAddr};
pub use keyway_lab::{Lab, RedisNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

// ---------------------------------------------------------------------------
// Labs, blocking calls and deadlines
// ---------------------------------------------------------------------------

/// A lab with `replicas` replicas and a password. Panics with the lab's own
/// message (which says how to install redis-server when it is missing).
pub fn lab(replicas: usize) -> Lab {
    match Lab::builder().replicas(replicas).start() {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start the Redis lab: {e}"),
    }
}

/// [`lab`], started off the runtime and shared, for async tests.
pub async fn start_lab(replicas: usize) -> Arc<Lab> {
    Arc::new(blocking(move || lab(replicas)).await)
}

/// [`sentinel_lab`], started off the runtime and shared, for async tests.
pub async fn start_sentinel_lab(replicas: usize, sentinels: usize) -> Arc<Lab> {
    Arc::new(blocking(move || sentinel_lab(replicas, sentinels)).await)
}

/// Runs blocking code (lab calls) off the runtime; a panic inside keeps its
/// message.
pub async fn blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task failed: {e}"),
    }
}

/// Runs `f` on the shared lab off the runtime (see [`blocking`]).
pub async fn on_lab<T, F>(lab: &Arc<Lab>, f: F) -> T
where
    F: FnOnce(&Lab) -> T + Send + 'static,
    T: Send + 'static,
{
    let lab = Arc::clone(lab);
    blocking(move || f(&lab)).await
}

/// [`on_lab`], returning the instant just before `f` ran (a fault injected, a
/// restart begun): the origin of the durations a test prints.
pub async fn on_lab_timed<F>(lab: &Arc<Lab>, f: F) -> Instant
where
    F: FnOnce(&Lab) + Send + 'static,
{
    on_lab(lab, move |lab| {
        let at = Instant::now();
        f(lab);
        at
    })
    .await
}

/// `fut`, or a panic naming `what` if it takes longer than `DEADLINE`.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: not done within {DEADLINE:?}"),
    }
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// Settings the tests tune; everything else is the config defaults.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub interval: &'static str,
    pub timeout: &'static str,
    pub rise: u32,
    pub fall: u32,
    pub hold: &'static str,
    pub connect: &'static str,
    /// Extra keys of the `[[service]]` table itself, e.g. `proxy_protocol = true`.
    pub service: String,
    /// Extra text after the service's tables, e.g. [`sentinel_toml`].
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
            service: String::new(),
            extra: String::new(),
        }
    }
}

impl Tuning {
    /// Probes tolerant enough that a busy machine never drops the route under
    /// a test that is moving bytes: three missed 250 ms probes in a row are
    /// needed.
    pub fn steady() -> Tuning {
        Tuning {
            interval: "250ms",
            timeout: "250ms",
            fall: 3,
            ..Tuning::default()
        }
    }
}

/// A one-service config named `redis` on 127.0.0.1:0 in front of `nodes`,
/// authenticating with the lab's password file; the admin server on
/// 127.0.0.1:0 too (see `Proxy::admin_addr`).
pub fn config(lab: &Lab, nodes: &[SocketAddr], tuning: &Tuning) -> Config {
    let text = format!(
        "{}{}",
        config_head(None),
        service_toml(lab, "redis", "127.0.0.1:0", nodes, tuning)
    );
    parse_config(lab, &text)
}

/// A config of several services in front of every lab node, each
/// `(name, listen)`, with the same `tuning`, and `[drain] timeout = drain`.
pub fn services_config(
    lab: &Lab,
    services: &[(&str, &str)],
    tuning: &Tuning,
    drain: &str,
) -> Config {
    let nodes = addrs(lab);
    let mut text = config_head(Some(drain));
    for (name, listen) in services {
        text.push_str(&service_toml(lab, name, listen, &nodes, tuning));
    }
    parse_config(lab, &text)
}

/// `[log]`, `[admin]` on 127.0.0.1:0 and, when given, `[drain] timeout`.
fn config_head(drain: Option<&str>) -> String {
    // Port 0: tests run in parallel, each proxy with its own admin server.
    let mut text = "[log]\nlevel = \"warn\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n".to_string();
    if let Some(drain) = drain {
        text.push_str(&format!("\n[drain]\ntimeout = \"{drain}\"\n"));
    }
    text
}

/// One `[[service]]` table in front of `nodes`, with the lab's password file
/// and the check and timeouts of `tuning`.
fn service_toml(
    lab: &Lab,
    name: &str,
    listen: &str,
    nodes: &[SocketAddr],
    tuning: &Tuning,
) -> String {
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
        service,
        extra,
    } = tuning;
    format!(
        r#"
[[service]]
name = "{name}"
listen = "{listen}"
nodes = [{nodes}]
{password_file}
{service}

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
    )
}

/// `text` parsed as the lab's `keyway.toml`; panics with the problems and the
/// text when it is invalid.
fn parse_config(lab: &Lab, text: &str) -> Config {
    match Config::from_toml_str(text, &lab.dir().join("keyway.toml")) {
        Ok(config) => config,
        Err(problems) => panic!("test config invalid:\n{problems}\n{text}"),
    }
}

/// Every node of the lab, as addresses.
pub fn addrs(lab: &Lab) -> Vec<SocketAddr> {
    lab.nodes().iter().map(RedisNode::addr).collect()
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

/// Starts the proxy, logging as `config` says (the first call in a test
/// process wins), and waits until its route is `expected`.
pub async fn proxy_routed_to(config: &Config, expected: SocketAddr) -> Proxy {
    keyway::logging::init(&config.log);
    let proxy = Proxy::start(config).await.expect("proxy starts");
    wait_route(&proxy, Some(expected)).await;
    proxy
}

/// [`proxy_routed_to`] on [`config`] in front of every node of `lab` with
/// `tuning`, and the initial master, node 0, as the expected route.
pub async fn proxy_on_master(lab: &Lab, tuning: &Tuning) -> Proxy {
    let cfg = config(lab, &addrs(lab), tuning);
    proxy_routed_to(&cfg, lab.node(0).addr()).await
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

/// One route a service's watch published, and when it was seen.
pub type TimedRoute = (Instant, Option<SocketAddr>);

/// Every route value a service's watch publishes, with when it was seen, to
/// check afterwards that a value never appeared, even briefly.
#[derive(Debug, Clone)]
pub struct RouteLog(Arc<Mutex<Vec<TimedRoute>>>);

impl RouteLog {
    /// Records the routes of `service` from now until the proxy drops its
    /// watch.
    pub fn record(proxy: &Proxy, service: &str) -> RouteLog {
        let log = RouteLog(Arc::default());
        let mut watch = proxy.route_watch(service).expect("service exists");
        let out = Arc::clone(&log.0);
        tokio::spawn(async move {
            loop {
                let route = watch.borrow_and_update().map(|n| n.0);
                out.lock().expect("route log").push((Instant::now(), route));
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
        log
    }

    /// The routes seen so far, with when.
    pub fn timed(&self) -> Vec<TimedRoute> {
        self.0.lock().expect("route log").clone()
    }

    /// The routes seen so far.
    pub fn routes(&self) -> Vec<Option<SocketAddr>> {
        self.timed().into_iter().map(|(_, route)| route).collect()
    }
}

// ---------------------------------------------------------------------------
// Raw RESP over TCP
// ---------------------------------------------------------------------------

/// What Redis answers to [`auth_ping`].
pub const AUTH_PING_REPLY: &[u8] = b"+OK\r\n+PONG\r\n";

/// One RESP2 command as bytes.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `AUTH <lab password>` as bytes.
pub fn auth(lab: &Lab) -> Vec<u8> {
    let password = lab.password().expect("the lab has a password");
    resp(&[b"AUTH", password.as_bytes()])
}

/// `AUTH <lab password>` then `PING`, as bytes; answered with
/// [`AUTH_PING_REPLY`].
pub fn auth_ping(lab: &Lab) -> Vec<u8> {
    let mut out = auth(lab);
    out.extend_from_slice(&resp(&[b"PING"]));
    out
}

/// A raw TCP connection to `addr`, within `DEADLINE`.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    within("raw connect", TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("raw connect to {addr}: {e}"))
}

/// A raw TCP connection to the proxy endpoint.
pub async fn raw(proxy: &Proxy) -> TcpStream {
    raw_connect(endpoint(proxy)).await
}

/// Reads exactly `expected.len()` bytes and checks they are `expected`.
pub async fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    if let Err(e) = within("read the expected reply", stream.read_exact(&mut got)).await {
        panic!("reading {:?}: {e}", String::from_utf8_lossy(expected));
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// Reads until the peer closes (EOF) or the socket fails (a reset counts as
/// closed: the proxy may close a client with its bytes unread); returns the
/// bytes received before, and the error if it was one. Panics if still open
/// at the deadline.
pub async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Some(e),
            }
        }
    })
    .await;
    match outcome {
        Ok(error) => (got, error),
        Err(_) => panic!(
            "connection still open after {DEADLINE:?}; received {:?}",
            String::from_utf8_lossy(&got)
        ),
    }
}

/// A client that arrives while there is no route: it sends AUTH + PING, must
/// get no byte back and be closed (after the hold). `why` says why no reply
/// may come. Returns how long it was held.
pub async fn held_then_closed(proxy: &Proxy, lab: &Lab, why: &str) -> Duration {
    let started = Instant::now();
    let mut held = raw(proxy).await;
    held.write_all(&auth_ping(lab))
        .await
        .expect("write AUTH + PING");
    let (got, _) = read_until_closed(&mut held).await;
    assert!(
        got.is_empty(),
        "{why}, yet the held client got {:?}",
        String::from_utf8_lossy(&got)
    );
    started.elapsed()
}

/// A raw session through the proxy, authenticated, that checked with
/// `CONFIG GET port` that it landed on `node`.
pub async fn raw_session_on(proxy: &Proxy, lab: &Lab, node: SocketAddr) -> TcpStream {
    let mut session = raw(proxy).await;
    let mut request = auth(lab);
    request.extend_from_slice(&resp(&[b"CONFIG", b"GET", b"port"]));
    session
        .write_all(&request)
        .await
        .expect("write AUTH + CONFIG GET port");
    let port = node.port().to_string();
    let expected = format!("+OK\r\n*2\r\n$4\r\nport\r\n${}\r\n{port}\r\n", port.len());
    expect_bytes(&mut session, expected.as_bytes()).await;
    session
}

// ---------------------------------------------------------------------------
// The `redis` crate
// ---------------------------------------------------------------------------

/// `key:value` lines of an `INFO` reply.
pub fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// The port the server behind `con` says it listens on (`INFO server`): the
/// proxy is L4, so this is the node a connection through it landed on.
pub async fn server_port(con: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<u16> {
    let info: String = redis::cmd("INFO").arg("server").query_async(con).await?;
    info_field(&info, "tcp_port")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no tcp_port in INFO server:\n{info}")).into())
}

// ---------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------

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
