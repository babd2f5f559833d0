//! The one error type of the lab.
//!
//! Messages are lowercase and describe only their own level; the cause sits in
//! `source()`. Start-up failures carry the last lines of the process log, because
//! "redis-server exited" alone never says why.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while starting, driving or querying a lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The server binary is neither configured nor on `PATH`.
    ///
    /// The message is a fixed instruction on purpose: it is what a developer sees
    /// the first time they run the test suite on a fresh machine.
    #[error(
        "{binary} not found: install it with \
         `apt-get install -y redis-server redis-sentinel redis-tools` or set {env}"
    )]
    MissingBinary {
        /// `redis-server` or `redis-sentinel`.
        binary: &'static str,
        /// The environment variable that overrides the lookup.
        env: &'static str,
        /// The path that was tried, if one was configured.
        path: Option<PathBuf>,
    },

    /// The temporary directory or a file in it could not be written.
    #[error("could not write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O cause.
        #[source]
        source: io::Error,
    },

    /// No loopback port could be bound to pick a free one.
    #[error("could not pick a free loopback port")]
    FreePort(#[source] io::Error),

    /// The binary exists but the OS refused to start it.
    #[error("could not start {name} ({program})")]
    Spawn {
        /// The process name in the lab, e.g. `node-0`.
        name: String,
        /// The program that was run.
        program: PathBuf,
        /// The I/O cause.
        #[source]
        source: io::Error,
    },

    /// The process exited before it answered.
    #[error("{name} exited during start-up ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// The process name in the lab.
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its log and captured stdout/stderr.
        log_tail: String,
    },

    /// The process kept running but never answered in time.
    #[error("{name} did not answer within {timeout:?}; last log lines:\n{log_tail}")]
    StartTimeout {
        /// The process name in the lab.
        name: String,
        /// The start deadline.
        timeout: Duration,
        /// The end of its log and captured stdout/stderr.
        log_tail: String,
    },

    /// Every port tried was taken by someone else between the pick and the bind.
    #[error("{name} found no free port after {attempts} attempts; last log lines:\n{log_tail}")]
    PortsExhausted {
        /// The process name in the lab.
        name: String,
        /// How many ports were tried.
        attempts: u32,
        /// The log of the last attempt.
        log_tail: String,
    },

    /// A helper that needs a live process was called after `kill`.
    #[error("{name} is not running")]
    NotRunning {
        /// The process name in the lab.
        name: String,
    },

    /// Sending a signal through `kill(1)` failed.
    #[error("could not send SIG{signal} to pid {pid}")]
    Signal {
        /// The signal name without the `SIG` prefix.
        signal: &'static str,
        /// The target process.
        pid: u32,
        /// Why: the command failed to run or returned non-zero.
        #[source]
        source: io::Error,
    },

    /// TCP connect failed or timed out.
    #[error("could not connect to {addr}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// The I/O cause.
        #[source]
        source: io::Error,
    },

    /// The server did not reply within the client timeout.
    #[error("{addr} did not reply within {timeout:?}")]
    Timeout {
        /// The server address.
        addr: SocketAddr,
        /// The read/write timeout of the client.
        timeout: Duration,
    },

    /// A read or write on an established connection failed.
    #[error("i/o error talking to {addr}")]
    Io {
        /// The server address.
        addr: SocketAddr,
        /// The I/O cause.
        #[source]
        source: io::Error,
    },

    /// The server closed the connection before a full reply arrived.
    #[error("{addr} closed the connection")]
    Closed {
        /// The server address.
        addr: SocketAddr,
    },

    /// The bytes received are not RESP2.
    #[error("invalid reply from {addr}")]
    Protocol {
        /// The server address.
        addr: SocketAddr,
        /// The decoder's cause.
        #[source]
        source: redis_protocol::error::RedisProtocolError,
    },

    /// An earlier error left a reply unread, so this connection cannot be trusted.
    #[error("connection to {addr} is unusable after an earlier error")]
    Broken {
        /// The server address.
        addr: SocketAddr,
    },

    /// AUTH was refused.
    #[error("authentication to {addr} failed: {message}")]
    Auth {
        /// The server address.
        addr: SocketAddr,
        /// The server's error reply.
        message: String,
    },

    /// A command that must succeed got an error reply.
    #[error("{command} failed: {message}")]
    ErrorReply {
        /// The command name.
        command: String,
        /// The server's error reply.
        message: String,
    },

    /// A command got a reply of an unexpected shape.
    #[error("{command} returned an unexpected reply: {reply}")]
    UnexpectedReply {
        /// The command name.
        command: String,
        /// The reply, debug-formatted.
        reply: String,
    },

    /// Replicas did not all report a live link to one master in time.
    #[error("replication not up after {timeout:?}: {detail}")]
    ReplicationTimeout {
        /// The deadline.
        timeout: Duration,
        /// The last observation of each node.
        detail: String,
    },

    /// The sentinels did not reach the awaited state in time.
    #[error("sentinels did not {waiting_for} within {timeout:?}: {detail}")]
    SentinelTimeout {
        /// What was awaited, e.g. `agree on the topology`.
        waiting_for: String,
        /// The deadline.
        timeout: Duration,
        /// The last observation of each sentinel, then their log tails.
        detail: String,
    },

    /// The lab cannot be built as configured (e.g. a master name Sentinel cannot
    /// store in its config file).
    #[error("invalid lab configuration: {0}")]
    Config(String),
}
