//! The validated configuration: every value here has been parsed and checked.
//!
//! Invariants: durations are positive where the schema says so, addresses are
//! socket addresses (no DNS at run time), service names and listen addresses are
//! unique, a password has been read from its file and is never printed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A whole, validated configuration (the main file plus its includes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub admin: Admin,
    pub log: Log,
    pub drain: Drain,
    pub runtime: Runtime,
    pub services: Vec<Service>,
    /// Every file that contributed, main file first (for logs and reload).
    pub sources: Vec<PathBuf>,
}

/// `[admin]`: the admin HTTP listener (metrics, health, status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter directive, for example `info` or `keyway=debug,info`.
    pub level: String,
}

/// `[runtime]`: the data-path runtime. Read at start only; a reload that
/// changes it logs a warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runtime {
    /// Worker threads of the data path (what HAProxy calls `nbthread`), each
    /// with its own event loop. `None`: one per CPU.
    pub workers: Option<usize>,
}

/// The largest `runtime.workers` accepted: far above any useful value, low
/// enough that a typo (`workers = 20000`) is an error, not 20,000 threads.
pub const MAX_WORKERS: usize = 256;

/// `[drain]`: how sessions end when Keyway stops or a reload removes a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// On SIGTERM / SIGINT, how long open sessions may run before they are
    /// closed; also the grace period of the sessions of a service removed by a
    /// reload. Zero closes them at once.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One `[[service]]`: a listen address and the Redis group behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub listen: SocketAddr,
    /// The static Redis nodes, each once. Never empty without `sentinel`; may
    /// be empty with it (the nodes are then discovered from Sentinel).
    pub nodes: Vec<NodeAddr>,
    /// Credentials the probes use (`username` + `password_file`).
    pub auth: Option<Credentials>,
    pub check: Check,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub tcp: Tcp,
    /// `[service.sentinel]`: follow Redis Sentinel; `None` routes on probes alone.
    pub sentinel: Option<Sentinel>,
    /// Every client must start with a PROXY protocol header (v1 or v2, from
    /// the load balancer); a client without a valid one is closed, never
    /// forwarded. Default: false (client bytes are forwarded untouched).
    pub proxy_protocol: bool,
}

/// The address of one Redis Sentinel.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SentinelAddr(pub SocketAddr);

impl fmt::Display for SentinelAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for SentinelAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `[service.sentinel]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinel {
    /// The master name Sentinel monitors (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// Every configured sentinel; a majority of these must agree on the master.
    pub nodes: Vec<SentinelAddr>,
    /// Credentials for the sentinels themselves (`username` + `password_file`).
    pub auth: Option<Credentials>,
    /// Time between two queries of one sentinel (> 0). Default: `check.interval`.
    pub interval: Duration,
    /// How long one sentinel query may take (> 0, <= interval). Default: `check.timeout`.
    pub timeout: Duration,
}

impl Sentinel {
    /// How many sentinels make a majority of the configured ones.
    pub fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }
}

/// The address of one Redis node. A newtype so that a node address and a client
/// address cannot be swapped.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr(pub SocketAddr);

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<SocketAddr> for NodeAddr {
    fn from(addr: SocketAddr) -> Self {
        NodeAddr(addr)
    }
}

/// ACL user (optional) and password, read from `password_file`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// A secret string. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it (AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[service.check]`: how nodes are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Time between two probes of one node (> 0).
    pub interval: Duration,
    /// How long one probe may take, connect included (> 0).
    pub timeout: Duration,
    /// Consecutive good probes before a node counts as up (>= 1).
    pub rise: u32,
    /// Consecutive failed probes before a node counts as down (>= 1).
    pub fall: u32,
}

/// `[service.timeouts]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to the master (> 0).
    pub connect: Duration,
    /// How long a new client waits for a route when there is none (0 = close at once).
    pub hold: Duration,
    /// Close a session after this long with no byte either way; `None` = never.
    pub idle: Option<Duration>,
}

/// `[service.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sessions open at once (held clients included); past it, new clients are closed.
    pub max_sessions: usize,
    /// Clients held while there is no route; past it, new clients are closed.
    pub max_held: usize,
}

/// `[service.tcp]`: socket options on both sockets of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    /// TCP keepalive idle time; `None` disables keepalive.
    pub keepalive: Option<Duration>,
}

impl Default for Admin {
    /// Loopback only: metrics and status are not exposed unless asked for.
    fn default() -> Self {
        Admin {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9470),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Check {
    fn default() -> Self {
        Check {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(250),
            rise: 2,
            fall: 2,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            hold: Duration::from_secs(5),
            idle: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 10_000,
            max_held: 1_000,
        }
    }
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            keepalive: Some(Duration::from_secs(60)),
        }
    }
}
