//! One `redis-server` process: its config, start with port retries, and the helpers
//! tests use to break it (kill, stop, restart) or move roles (promote, replicaof).
//!
//! Invariants:
//! - the node listens on 127.0.0.1 only, on the port in its config file; the port never
//!   changes after the first successful start, so `restart` reuses it;
//! - a node counts as started only when an authenticated `PING` answers `PONG` (not
//!   `-LOADING`) *and* `INFO server` reports our child's pid: another server that grabbed
//!   the port in the meantime cannot pass for ours;
//! - every helper opens a fresh connection with a timeout, so it fails instead of
//!   hanging on a stopped node.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Process, Startup, lab_process_methods};
use crate::resp::{Client, Reply, info_field};
use crate::{LabError, try_free_port};

/// Attempts with a fresh port when the picked one was taken before the bind.
const PORT_ATTEMPTS: u32 = 5;
/// Timeout of one readiness probe; short because probes repeat every 20 ms.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Default timeout of [`RedisNode::cmd`] and [`RedisNode::client`].
pub const CMD_TIMEOUT: Duration = Duration::from_secs(5);
/// Redis 7 `SHUTDOWN` on a master waits up to `shutdown-timeout` (10 s by default) for
/// lagging replicas; allow that plus a margin before falling back to `SIGKILL`.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(12);

/// What a node needs to be started; built by the lab.
#[derive(Debug)]
pub(crate) struct NodeSpec<'a> {
    pub(crate) name: String,
    pub(crate) program: &'a Path,
    pub(crate) dir: PathBuf,
    pub(crate) password: Option<&'a str>,
    /// The master to replicate from at start, for replicas.
    pub(crate) replicaof: Option<SocketAddr>,
    pub(crate) start_timeout: Duration,
}

/// One `redis-server` process on a loopback port.
///
/// All helpers take `&self` (the child sits behind a mutex), so a node can be shared
/// between threads, e.g. a writer thread and the thread that kills the node.
#[derive(Debug)]
pub struct RedisNode {
    process: Process,
    port: u16,
    password: Option<String>,
    start_timeout: Duration,
    /// The config file as the lab wrote it. Sentinel sends `CONFIG REWRITE` with every
    /// `REPLICAOF` it issues, so the file on disk changes at each failover; `restart`
    /// writes this copy back first, so a node always restarts in its original role.
    config: Vec<u8>,
}

impl RedisNode {
    /// Writes the config, starts the server and waits until it answers, retrying with
    /// a new port when the picked one turns out to be taken.
    pub(crate) fn start(spec: NodeSpec<'_>) -> Result<RedisNode, LabError> {
        let process = Process::new(
            spec.name,
            spec.program,
            Vec::new(),
            spec.dir,
            "redis.conf",
            "redis.log",
        )?;
        let (port, config) =
            start_on_free_port(&process, spec.password, spec.start_timeout, |port| {
                render_config(port, &process, spec.password, spec.replicaof)
            })?;
        Ok(RedisNode {
            process,
            port,
            password: spec.password.map(str::to_owned),
            start_timeout: spec.start_timeout,
            config,
        })
    }

    lab_process_methods!("node", "node-0");

    /// The config file of the node. It holds what the lab wrote until Sentinel rewrites
    /// it (`CONFIG REWRITE` during a failover); [`RedisNode::restart`] restores it.
    pub fn config_path(&self) -> &Path {
        self.process.config_path()
    }

    /// Starts the node again from its original config (same port, same directory), so a
    /// replica comes back as a replica of the *initial* master, and the initial master
    /// comes back as a master with an empty dataset, whatever Sentinel did meanwhile:
    /// Sentinel rewrites the config file of every node it reconfigures (`CONFIG
    /// REWRITE`), and the lab writes its own version back before starting. This is the
    /// "old master restarted after a crash claims master" case. A still-running
    /// process is killed first. Returns once `PING` answers `PONG`.
    pub fn restart(&self) -> Result<(), LabError> {
        self.process.kill();
        self.process.write_config(&self.config)?;
        self.respawn()
    }

    /// `SHUTDOWN NOSAVE` and wait for the exit; falls back to `SIGKILL` when the node
    /// cannot be reached (stopped, hung) or refuses. On return no process is left.
    pub fn shutdown(&self) {
        if self.pid().is_none() {
            return;
        }
        let sent = Client::connect(self.addr(), self.password(), Duration::from_secs(1)).and_then(
            |mut client| {
                client.set_timeout(SHUTDOWN_WAIT)?;
                client.cmd(&["SHUTDOWN", "NOSAVE"])
            },
        );
        // A successful SHUTDOWN sends no reply: the server just closes the connection.
        let accepted = matches!(
            sent,
            Err(LabError::Closed { .. } | LabError::Io { .. }) | Ok(Reply::Simple(_))
        );
        if !accepted || !self.process.wait_exit(SHUTDOWN_WAIT) {
            self.process.kill();
        }
    }

    /// `REPLICAOF NO ONE`: the node becomes a master and keeps its data.
    pub fn promote(&self) -> Result<(), LabError> {
        expect_ok(self.cmd(&["REPLICAOF", "NO", "ONE"])?, "REPLICAOF")
    }

    /// `REPLICAOF 127.0.0.1 <port of master>`. The shared password is already in the
    /// config as `masterauth`.
    pub fn replicaof(&self, master: &RedisNode) -> Result<(), LabError> {
        let port = master.port().to_string();
        expect_ok(self.cmd(&["REPLICAOF", "127.0.0.1", &port])?, "REPLICAOF")
    }

    /// The first element of `ROLE`: `master`, `slave` (Redis' word for a replica) or
    /// `sentinel`.
    pub fn role(&self) -> Result<String, LabError> {
        self.role_within(CMD_TIMEOUT)
    }

    /// [`RedisNode::role`] with its own connect and reply timeout, for polling loops
    /// that must not stall on a stopped node.
    pub fn role_within(&self, timeout: Duration) -> Result<String, LabError> {
        let mut client = Client::connect(self.addr(), self.password(), timeout)?;
        let reply = client.cmd(&["ROLE"])?.into_result("ROLE")?;
        reply
            .as_array()
            .and_then(|items| items.first())
            .and_then(Reply::as_str)
            .map(str::to_owned)
            .ok_or_else(|| LabError::UnexpectedReply {
                command: "ROLE".into(),
                reply: format!("{reply:?}"),
            })
    }

    /// The text of `INFO <section>`.
    pub fn info(&self, section: &str) -> Result<String, LabError> {
        let reply = self.cmd(&["INFO", section])?.into_result("INFO")?;
        reply
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| LabError::UnexpectedReply {
                command: "INFO".into(),
                reply: format!("{reply:?}"),
            })
    }

    /// Connects with `timeout`, authenticates and expects `PONG`. A stopped node fails
    /// with [`LabError::Timeout`]; a loading one with an error reply.
    pub fn ping(&self, timeout: Duration) -> Result<(), LabError> {
        let mut client = Client::connect(self.addr(), self.password(), timeout)?;
        match client.cmd(&["PING"])?.into_result("PING")? {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            other => Err(LabError::UnexpectedReply {
                command: "PING".into(),
                reply: format!("{other:?}"),
            }),
        }
    }

    /// The replication state of this node as a replica of `master`, or why not:
    /// `Ok(())` when `INFO replication` shows `role:slave`, the master's port and
    /// `master_link_status:up`.
    pub(crate) fn replication_link(
        &self,
        master: &RedisNode,
        timeout: Duration,
    ) -> Result<(), String> {
        let info = Client::connect(self.addr(), self.password(), timeout)
            .and_then(|mut client| client.cmd(&["INFO", "replication"]))
            .map_err(|e| error_chain(&e))?;
        let info = info.as_str().unwrap_or_default();
        let field = |key| info_field(info, key).unwrap_or("?");
        let (role, port, link) = (
            field("role"),
            field("master_port"),
            field("master_link_status"),
        );
        if role == "slave" && port == master.port().to_string() && link == "up" {
            Ok(())
        } else {
            Err(format!(
                "role:{role} master_port:{port} master_link_status:{link}"
            ))
        }
    }
}

/// Writes the config rendered for a fresh free port, starts the process and waits until
/// it answers as itself; retries with another port when the picked one was taken in the
/// meantime. Returns the port and the config that worked.
pub(crate) fn start_on_free_port(
    process: &Process,
    password: Option<&str>,
    timeout: Duration,
    render: impl Fn(u16) -> Vec<u8>,
) -> Result<(u16, Vec<u8>), LabError> {
    let mut last_tail = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = try_free_port()?;
        // Logs of a failed attempt would make the next one look failed too.
        process.clear_logs();
        let config = render(port);
        process.write_config(&config)?;
        process.spawn()?;
        let addr = loopback(port);
        let startup = process.wait_ready(timeout, |pid| probe_ready(addr, password, pid));
        match startup {
            Startup::Exited { log_tail, .. } if port_taken(&log_tail) => last_tail = log_tail,
            startup => return check_startup(process, timeout, startup).map(|()| (port, config)),
        }
    }
    Err(LabError::PortsExhausted {
        name: process.name().to_owned(),
        attempts: PORT_ATTEMPTS,
        log_tail: last_tail,
    })
}

/// Waits until a just-spawned process answers `PING` as itself on `addr`.
pub(crate) fn wait_started(
    process: &Process,
    addr: SocketAddr,
    password: Option<&str>,
    timeout: Duration,
) -> Result<(), LabError> {
    let startup = process.wait_ready(timeout, |pid| probe_ready(addr, password, pid));
    check_startup(process, timeout, startup)
}

/// `Ok` for [`Startup::Ready`], else the matching error with the log tail.
fn check_startup(process: &Process, timeout: Duration, startup: Startup) -> Result<(), LabError> {
    let name = process.name().to_owned();
    match startup {
        Startup::Ready => Ok(()),
        Startup::Exited { status, log_tail } => Err(LabError::Exited {
            name,
            status,
            log_tail,
        }),
        Startup::TimedOut { log_tail } => Err(LabError::StartTimeout {
            name,
            timeout,
            log_tail,
        }),
    }
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub(crate) fn expect_ok(reply: Reply, command: &str) -> Result<(), LabError> {
    match reply.into_result(command)? {
        Reply::Simple(s) if s == "OK" => Ok(()),
        other => Err(LabError::UnexpectedReply {
            command: command.into(),
            reply: format!("{other:?}"),
        }),
    }
}

/// "message: cause: cause", for logs where `{:#}`-style chains are not available.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Redis logs this (and exits) when another socket holds the port.
fn port_taken(log_tail: &str) -> bool {
    log_tail.contains("Address already in use")
}

/// Ready means: ours (pid matches), authenticated, and `PONG` rather than `-LOADING`.
fn probe_ready(addr: SocketAddr, password: Option<&str>, pid: u32) -> bool {
    let Ok(mut client) = Client::connect(addr, password, PROBE_TIMEOUT) else {
        return false;
    };
    if !matches!(client.cmd(&["PING"]), Ok(Reply::Simple(s)) if s == "PONG") {
        return false;
    }
    let Ok(info) = client.cmd(&["INFO", "server"]) else {
        return false;
    };
    info.as_str()
        .and_then(|info| info_field(info, "process_id"))
        .and_then(|p| p.parse::<u32>().ok())
        == Some(pid)
}

/// The node's config file. Values are quoted, so a password or path with spaces or
/// quotes cannot inject directives.
fn render_config(
    port: u16,
    process: &Process,
    password: Option<&str>,
    replicaof: Option<SocketAddr>,
) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;

    let mut out = Vec::new();
    let mut line = |key: &str, value: &[u8]| {
        out.extend_from_slice(key.as_bytes());
        out.push(b' ');
        out.extend_from_slice(value);
        out.push(b'\n');
    };
    line("# written by keyway-lab for", process.name().as_bytes());
    // Loopback only, always: the lab must never be reachable from another host.
    line("bind", b"127.0.0.1");
    line("protected-mode", b"no");
    line("port", port.to_string().as_bytes());
    line("daemonize", b"no");
    line("dir", &quote(process.dir().as_os_str().as_bytes()));
    line("logfile", &quote(process.log_path().as_os_str().as_bytes()));
    line("loglevel", b"notice");
    // A lab is disposable: no RDB snapshots, no AOF, nothing survives a restart.
    line("save", b"\"\"");
    line("appendonly", b"no");
    if let Some(password) = password {
        line("requirepass", &quote(password.as_bytes()));
        line("masterauth", &quote(password.as_bytes()));
    }
    if let Some(master) = replicaof {
        line(
            "replicaof",
            format!("{} {}", master.ip(), master.port()).as_bytes(),
        );
    }
    // Full syncs straight over the socket, with no wait for more replicas to join:
    // replicas are up in milliseconds instead of seconds.
    line("repl-diskless-sync", b"yes");
    line("repl-diskless-sync-delay", b"0");
    // What the master and Sentinel see as this replica's address.
    line("replica-announce-ip", b"127.0.0.1");
    // Every replica can be promoted (0 would exclude it); written out so nobody wonders.
    line("replica-priority", b"100");
    // Lets tests use DEBUG SLEEP and friends, from loopback only.
    line("enable-debug-command", b"local");
    out
}

/// A double-quoted config value as `sdssplitargs` parses it.
pub(crate) fn quote(value: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e | 0x80..=0xff => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_config_values() {
        assert_eq!(quote(b"a b"), b"\"a b\"".to_vec());
        assert_eq!(quote(b"a\"b\\c\n"), b"\"a\\\"b\\\\c\\x0a\"".to_vec());
    }

    #[test]
    fn config_binds_loopback_and_quotes_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let process = Process::new(
            "node-1",
            Path::new("redis-server"),
            Vec::new(),
            dir.path().join("node-1"),
            "redis.conf",
            "redis.log",
        )
        .expect("process");
        let config = render_config(7001, &process, Some("p w\"d"), Some(loopback(7000)));
        let config = String::from_utf8(config).expect("utf-8");
        assert!(config.contains("\nbind 127.0.0.1\n"), "{config}");
        assert!(config.contains("\nport 7001\n"));
        assert!(config.contains("\nrequirepass \"p w\\\"d\"\n"));
        assert!(config.contains("\nmasterauth \"p w\\\"d\"\n"));
        assert!(config.contains("\nreplicaof 127.0.0.1 7000\n"));
        assert!(config.contains("\nsave \"\"\n"));
    }

    /// The retry rule depends on the exact wording of redis-server's log line; check it
    /// against the real binary by starting a node on a port we hold.
    #[test]
    fn a_taken_port_is_recognised_in_the_log() {
        let Ok(program) = crate::redis_server_path() else {
            panic!("redis-server is needed for this test");
        };
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let dir = tempfile::tempdir().expect("tempdir");
        let process = Process::new(
            "node-0",
            &program,
            Vec::new(),
            dir.path().join("node-0"),
            "redis.conf",
            "redis.log",
        )
        .expect("process");
        process
            .write_config(&render_config(port, &process, None, None))
            .expect("config");
        process.spawn().expect("spawn");
        match process.wait_ready(Duration::from_secs(10), |_| false) {
            Startup::Exited { log_tail, .. } => assert!(port_taken(&log_tail), "{log_tail}"),
            other => panic!("expected an early exit, got {other:?}"),
        }
    }
}
