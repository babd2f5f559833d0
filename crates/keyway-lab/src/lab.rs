//! A whole replication group: one master, N replicas, one temporary directory.
//!
//! Invariants:
//! - `Lab::builder().start()` returns only when every node answers and every replica
//!   reports `master_link_status:up`; on any failure the nodes already started are
//!   killed before the error is returned;
//! - dropping a `Lab` kills (`SIGKILL`) and reaps every process it started, stopped or
//!   not, then deletes the directory. Drop also runs while a failing test unwinds.

use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::node::{NodeSpec, RedisNode};
use crate::process::POLL_INTERVAL;
use crate::resp::Client;
use crate::{LabError, REDIS_SERVER_ENV, find_binary, redis_server_path};

/// How long one node may take to answer its first `PING`.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `start()` waits for all replicas to link up. Usually well under a second,
/// but a replica retries a failed link from its once-a-second cron, so leave margin.
const DEFAULT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one role/replication probe: a stopped node must not stall a poll loop.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Configures and starts a [`Lab`]. From [`Lab::builder`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    replicas: usize,
    password: Option<String>,
    redis_server: Option<PathBuf>,
    start_timeout: Duration,
    replication_timeout: Duration,
    // Sentinels come next: a count and a `redis-sentinel` path, started after the
    // nodes, each a `Process` with its own config like `RedisNode`.
}

impl LabBuilder {
    /// Number of replicas of the initial master (default 2).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The password of every node (`requirepass` and `masterauth`). `None` or an empty
    /// string runs without authentication. Default: a random 32-hex-digit password.
    pub fn password(mut self, password: Option<&str>) -> Self {
        self.password = password.filter(|p| !p.is_empty()).map(str::to_owned);
        self
    }

    /// The `redis-server` binary to run, instead of `KEYWAY_REDIS_SERVER` or `PATH`.
    /// Per lab rather than through the environment, so parallel tests do not race.
    pub fn redis_server(mut self, path: impl Into<PathBuf>) -> Self {
        self.redis_server = Some(path.into());
        self
    }

    /// How long each node may take to answer its first `PING` (default 10 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long `start` waits for every replica to link up (default 15 s).
    pub fn replication_timeout(mut self, timeout: Duration) -> Self {
        self.replication_timeout = timeout;
        self
    }

    /// Starts the master, then the replicas, and waits for replication.
    pub fn start(self) -> Result<Lab, LabError> {
        let program = match &self.redis_server {
            Some(path) => find_binary("redis-server", REDIS_SERVER_ENV, Some(path.as_os_str()))?,
            None => redis_server_path()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("keyway-lab-")
            .tempdir()
            .map_err(|source| LabError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let password_file = match &self.password {
            Some(password) => Some(write_secret(&dir.path().join("password"), password)?),
            None => None,
        };
        let mut lab = Lab {
            nodes: Vec::with_capacity(1 + self.replicas),
            password: self.password,
            password_file,
            dir,
        };
        // On an early return below, `lab` drops and kills what was started so far.
        for i in 0..=self.replicas {
            let name = format!("node-{i}");
            let spec = NodeSpec {
                dir: lab.dir.path().join(&name),
                name,
                program: &program,
                password: lab.password.as_deref(),
                replicaof: lab.nodes.first().map(RedisNode::addr),
                start_timeout: self.start_timeout,
            };
            let node = RedisNode::start(spec)?;
            lab.nodes.push(node);
        }
        lab.wait_replication(self.replication_timeout)?;
        Ok(lab)
    }
}

/// A running replication group on loopback, owned by the caller.
///
/// `Lab` is `Send + Sync`: share it with `Arc` to break nodes from another thread.
#[derive(Debug)]
pub struct Lab {
    // Field order matters: nodes drop (and die) before the directory is deleted.
    nodes: Vec<RedisNode>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    dir: TempDir,
}

impl Lab {
    /// A builder with 2 replicas and a random password.
    pub fn builder() -> LabBuilder {
        LabBuilder {
            replicas: 2,
            password: Some(random_password()),
            redis_server: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            replication_timeout: DEFAULT_REPLICATION_TIMEOUT,
        }
    }

    /// All nodes: index 0 is the initial master, then the replicas.
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// Node `i` (0 is the initial master).
    ///
    /// # Panics
    /// If `i` is out of range, like slice indexing.
    pub fn node(&self, i: usize) -> &RedisNode {
        &self.nodes[i]
    }

    /// The initial replicas (`nodes()[1..]`).
    pub fn replicas(&self) -> &[RedisNode] {
        &self.nodes[1..]
    }

    /// The password of every node, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// A file holding the password (mode 0600, no trailing newline), the way Keyway
    /// reads it in production.
    pub fn password_file(&self) -> Option<&Path> {
        self.password_file.as_deref()
    }

    /// The lab's temporary directory (one subdirectory per node).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The one node whose `ROLE` says master right now; `None` if no node does, or if
    /// several do (split brain). Nodes that are down or stopped do not count.
    pub fn current_master(&self) -> Option<&RedisNode> {
        match self.masters().as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Waits until there is a single master and every other running node reports
    /// `master_link_status:up` to it. Killed nodes are skipped; a stopped node never
    /// links up, so waiting with one stopped times out.
    pub fn wait_replication(&self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let detail = match self.masters().as_slice() {
                [master] => {
                    let lagging: Vec<String> = self
                        .nodes
                        .iter()
                        .filter(|n| !std::ptr::eq(*n, *master) && n.pid().is_some())
                        .filter_map(|n| {
                            let why = n.replication_link(master, PROBE_TIMEOUT).err()?;
                            Some(format!("{}: {why}", n.name()))
                        })
                        .collect();
                    if lagging.is_empty() {
                        return Ok(());
                    }
                    format!("master {}; {}", master.name(), lagging.join("; "))
                }
                [] => "no node reports role master".to_owned(),
                several => format!(
                    "several nodes report role master: {}",
                    several
                        .iter()
                        .map(|n| n.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            if Instant::now() >= deadline {
                return Err(LabError::ReplicationTimeout { timeout, detail });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Every running node that answers `ROLE` with master within the probe timeout.
    fn masters(&self) -> Vec<&RedisNode> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .filter(|n| n.role_within(PROBE_TIMEOUT).is_ok_and(|r| r == "master"))
            .collect()
    }

    /// A client to node `i`, authenticated with the lab password.
    pub fn client(&self, i: usize) -> Result<Client, LabError> {
        self.node(i).client()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Each node also kills itself on drop; doing it here first, explicitly, makes the
        // guarantee independent of field order and kills all before any directory goes.
        for node in &self.nodes {
            node.kill();
        }
    }
}

/// Writes `secret` to a new file readable by the owner only.
fn write_secret(path: &Path, secret: &str) -> Result<PathBuf, LabError> {
    let fail = |source| LabError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    // The umask can only remove bits from 0600, but be explicit anyway.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(fail)?;
    file.write_all(secret.as_bytes()).map_err(fail)?;
    Ok(path.to_owned())
}

/// 32 hex digits. Not a secret worth a CSPRNG (the lab listens on loopback only and
/// lives for one test), but distinct per lab: `RandomState` is seeded from the OS,
/// mixed with time, pid and a counter.
fn random_password() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(32);
    for half in 0u8..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(count);
        hasher.write_u8(half);
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_passwords_are_32_hex_digits_and_differ() {
        let (a, b) = (random_password(), random_password());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn secret_file_is_private_and_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_secret(&dir.path().join("pw"), "s3cret").expect("write");
        let meta = fs::metadata(&path).expect("metadata");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).expect("read"), b"s3cret");
    }

    #[test]
    fn lab_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Lab>();
        assert_send_sync::<RedisNode>();
    }

    #[test]
    fn empty_password_means_none() {
        assert_eq!(Lab::builder().password(Some("")).password, None);
    }
}
