//! keyway-lab: real `redis-server` replication groups on loopback, for Keyway's
//! tests, benchmarks and the `keyway lab` command.
//!
//! ```no_run
//! # fn main() -> Result<(), keyway_lab::LabError> {
//! use std::time::Duration;
//! let lab = keyway_lab::Lab::builder().replicas(2).start()?; // master + 2 replicas, linked
//! lab.node(0).cmd(&["SET", "k", "v"])?;
//! lab.wait_replication(Duration::from_secs(5))?;
//! lab.node(1).kill(); // a crash; `restart()` brings it back on the same port
//! # Ok(())
//! # }
//! // Dropping `lab` kills every process and deletes its temporary directory.
//! ```
//!
//! What it is:
//! - a process supervisor: each node is a real `redis-server` started from a generated
//!   config file in its own subdirectory of a `TempDir`, on a free port of 127.0.0.1
//!   (never any other address), and killed and reaped when the `Lab` drops, also while a
//!   failing test unwinds;
//! - a fault injector: kill (`SIGKILL`), stop/cont (`SIGSTOP`/`SIGCONT`), restart,
//!   graceful shutdown, promote, re-point replicas;
//! - a tiny blocking RESP2 client to drive and inspect nodes.
//!
//! With Sentinel (started after the nodes, and `start` returns only once every sentinel
//! knows the master, the replicas and the other sentinels):
//!
//! ```no_run
//! # fn main() -> Result<(), keyway_lab::LabError> {
//! use std::time::Duration;
//! let lab = keyway_lab::Lab::builder().replicas(2).sentinels(3).start()?;
//! let old = lab.sentinel_master().expect("a majority names the master");
//! lab.node_by_addr(old).expect("a lab node").kill(); // or: lab.failover()?
//! let new = lab.wait_master_switch(old, Duration::from_secs(15))?;
//! assert_eq!(lab.node_by_addr(new).expect("a lab node").role()?, "master");
//! # Ok(())
//! # }
//! ```
//!
//! What it is not: not a Redis client library (no pooling, pipelining, pub/sub or
//! RESP3), not async (plain `std`, no tokio, so the proxy binary can link it cheaply),
//! and not a way to run Redis in production.
//!
//! Modules:
//! - `lab`: [`Lab`] and [`LabBuilder`], the group and its lifetime;
//! - `node`: [`RedisNode`], one server: config, start with port retries, fault helpers;
//! - `sentinel`: [`SentinelNode`], one Redis Sentinel, same shape as a node;
//! - `process`: the generic child-process supervisor a node or a sentinel wraps;
//! - `resp`: [`Client`] and [`Reply`], the RESP2 client;
//! - `error`: [`LabError`].
//!
//! The server binary is `KEYWAY_REDIS_SERVER` if set, else `redis-server` on `PATH`
//! ([`redis_server_path`]), or the path given to [`LabBuilder::redis_server`]. The
//! sentinel binary is `KEYWAY_REDIS_SENTINEL` if set, else `redis-sentinel` on `PATH`,
//! else the server binary ([`redis_sentinel_path`]), or the path given to
//! [`LabBuilder::redis_sentinel`]; it always runs with `--sentinel`, so a
//! `redis-server` binary works too.

mod error;
mod lab;
mod node;
mod process;
mod resp;
mod sentinel;

use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use error::LabError;
pub use lab::{Lab, LabBuilder};
pub use node::{CMD_TIMEOUT, RedisNode};
pub use resp::{Client, Reply};
pub use sentinel::SentinelNode;

/// The environment variable that names the `redis-server` binary to use.
pub const REDIS_SERVER_ENV: &str = "KEYWAY_REDIS_SERVER";

/// The `redis-server` binary: `$KEYWAY_REDIS_SERVER` if set (a path, or a name looked up
/// on `PATH`), else `redis-server` on `PATH`.
///
/// Fails with [`LabError::MissingBinary`], whose message tells how to install it.
pub fn redis_server_path() -> Result<PathBuf, LabError> {
    find_binary(
        "redis-server",
        REDIS_SERVER_ENV,
        std::env::var_os(REDIS_SERVER_ENV).as_deref(),
    )
}

/// The environment variable that names the Sentinel binary to use.
pub const REDIS_SENTINEL_ENV: &str = "KEYWAY_REDIS_SENTINEL";

/// The Sentinel binary: `$KEYWAY_REDIS_SENTINEL` if set (a path, or a name looked up on
/// `PATH`), else `redis-sentinel` on `PATH`, else the `redis-server` binary
/// ([`redis_server_path`]): the lab runs it with `--sentinel`, which makes either one a
/// sentinel.
///
/// Fails with [`LabError::MissingBinary`], whose message tells how to install it.
pub fn redis_sentinel_path() -> Result<PathBuf, LabError> {
    sentinel_program(std::env::var_os(REDIS_SENTINEL_ENV).as_deref(), None)
}

/// [`redis_sentinel_path`] with an explicit setting, and the lab's own server binary as
/// the fallback (`None`: look the server up as [`redis_server_path`] does).
pub(crate) fn sentinel_program(
    configured: Option<&OsStr>,
    server: Option<&Path>,
) -> Result<PathBuf, LabError> {
    const BINARY: &str = "redis-sentinel";
    if let Some(configured) = configured.filter(|c| !c.is_empty()) {
        return find_binary(BINARY, REDIS_SENTINEL_ENV, Some(configured));
    }
    if let Some(found) = search_path(OsStr::new(BINARY)) {
        return Ok(found);
    }
    match server {
        Some(server) => Ok(server.to_owned()),
        None => redis_server_path().map_err(|_| LabError::MissingBinary {
            binary: BINARY,
            env: REDIS_SENTINEL_ENV,
            path: None,
        }),
    }
}

/// Resolves `configured` (if set and non-empty) or else `binary` to an executable file.
pub(crate) fn find_binary(
    binary: &'static str,
    env: &'static str,
    configured: Option<&OsStr>,
) -> Result<PathBuf, LabError> {
    let configured = configured.filter(|c| !c.is_empty());
    let wanted = configured.unwrap_or(OsStr::new(binary));
    let wanted_path = Path::new(wanted);
    // A bare name is looked up on PATH, like a shell would; anything with a slash is a path.
    let found = if wanted_path.components().count() == 1 && !wanted_path.is_absolute() {
        search_path(wanted)
    } else {
        is_executable(wanted_path).then(|| wanted_path.to_owned())
    };
    found.ok_or_else(|| LabError::MissingBinary {
        binary,
        env,
        path: configured.map(PathBuf::from),
    })
}

fn search_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port that was free a moment ago: bind `127.0.0.1:0`, read the port, drop.
///
/// Another process may take it before you bind it; the lab retries with a new port when
/// that happens, and so should callers.
///
/// # Panics
/// If no loopback port can be bound at all (no loopback interface).
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(e) => panic!("{}", node::error_chain(&e)),
    }
}

pub(crate) fn try_free_port() -> Result<u16, LabError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(LabError::FreePort)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_how_to_install() {
        let err = find_binary(
            "redis-server",
            REDIS_SERVER_ENV,
            Some(OsStr::new("/nonexistent")),
        )
        .expect_err("must be missing");
        assert_eq!(
            err.to_string(),
            "redis-server not found: install it with \
             `apt-get install -y redis-server redis-sentinel redis-tools` \
             or set KEYWAY_REDIS_SERVER"
        );
    }

    #[test]
    fn missing_sentinel_says_how_to_install() {
        let err = sentinel_program(Some(OsStr::new("/nonexistent")), Some(Path::new("/bin/sh")))
            .expect_err("an explicit setting is never replaced by the fallback");
        assert_eq!(
            err.to_string(),
            "redis-sentinel not found: install it with \
             `apt-get install -y redis-server redis-sentinel redis-tools` \
             or set KEYWAY_REDIS_SENTINEL"
        );
    }

    #[test]
    fn sentinel_falls_back_to_the_server_binary() {
        // Without an explicit setting: redis-sentinel on PATH if there is one, else the
        // server binary given.
        let found = sentinel_program(None, Some(Path::new("/bin/sh"))).expect("found");
        let on_path = search_path(OsStr::new("redis-sentinel"));
        assert_eq!(found, on_path.unwrap_or_else(|| PathBuf::from("/bin/sh")));
    }

    #[test]
    fn bare_names_are_looked_up_on_path() {
        // `sh` is on PATH on every machine that can run these tests.
        let sh = find_binary("sh", "X", Some(OsStr::new("sh"))).expect("sh on PATH");
        assert!(sh.is_absolute());
        assert!(find_binary("sh", "X", Some(OsStr::new("no-such-binary-kw"))).is_err());
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port(), 0);
    }
}
