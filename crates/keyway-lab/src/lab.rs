//! A whole replication group: one master, N replicas, optionally M sentinels, one
//! temporary directory.
//!
//! Invariants:
//! - `Lab::builder().start()` returns only when every node answers, every replica
//!   reports `master_link_status:up`, and (with sentinels) every sentinel knows the
//!   master, all replicas and all other sentinels; on any failure the processes already
//!   started are killed before the error is returned;
//! - dropping a `Lab` kills (`SIGKILL`) and reaps every process it started, sentinels
//!   first, stopped or not, then deletes the directory. Drop also runs while a failing
//!   test unwinds.
//!
//! Sentinel-side views (`sentinel_master`, `wait_master_switch`) count *live*
//! sentinels: those whose process exists, running or stopped. A killed sentinel is not
//! asked; a stopped one is asked, never answers, and so never counts towards a majority.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::node::{NodeSpec, RedisNode, error_chain};
use crate::process::POLL_INTERVAL;
use crate::resp::{Client, Reply};
use crate::sentinel::{
    MasterState, SentinelNode, SentinelSpec, check_auth_pass, check_master_name,
};
use crate::{
    LabError, REDIS_SENTINEL_ENV, REDIS_SERVER_ENV, find_binary, redis_server_path,
    sentinel_program,
};

/// How long one node may take to answer its first `PING`.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `start()` waits for all replicas to link up. Usually well under a second,
/// but a replica retries a failed link from its once-a-second cron, so leave margin.
const DEFAULT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one role/replication probe: a stopped node must not stall a poll loop.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long `start` waits for the sentinels to discover each other. They do through
/// hello messages published every 2 s, so 2 to 4 s is normal.
const DEFAULT_SENTINEL_TIMEOUT: Duration = Duration::from_secs(20);
/// The default Sentinel master name.
const DEFAULT_MASTER_NAME: &str = "keyway";
/// Default `sentinel down-after-milliseconds`.
const DEFAULT_DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Default `sentinel failover-timeout`.
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between `SENTINEL FAILOVER` attempts refused with `-INPROG` / `-NOGOODSLAVE`.
const FAILOVER_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// At least this long `failover` retries a refused `SENTINEL FAILOVER` (longer when the
/// failover timeout is: a previous failover may hold `-INPROG` that long).
const MIN_FAILOVER_RETRY: Duration = Duration::from_secs(5);

/// Configures and starts a [`Lab`]. From [`Lab::builder`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    replicas: usize,
    password: Option<String>,
    redis_server: Option<PathBuf>,
    start_timeout: Duration,
    replication_timeout: Duration,
    sentinels: usize,
    master_name: String,
    down_after: Duration,
    failover_timeout: Duration,
    quorum: Option<usize>,
    sentinel_password: Option<String>,
    redis_sentinel: Option<PathBuf>,
    sentinel_timeout: Duration,
}

impl LabBuilder {
    /// Number of replicas of the initial master (default 2).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The password of every node (`requirepass` and `masterauth`). `None` or an empty
    /// string runs without authentication. Default: a random 32-hex-digit password.
    /// With sentinels it must be printable ASCII without spaces or quotes (Sentinel
    /// writes it back to its config file unquoted); `start` checks.
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

    /// Number of Redis Sentinels monitoring the initial master (default 0: none).
    pub fn sentinels(mut self, sentinels: usize) -> Self {
        self.sentinels = sentinels;
        self
    }

    /// The Sentinel master name (default `keyway`). One plain word: ASCII letters,
    /// digits, `-`, `_`, `.` (Sentinel writes it back to its config file unquoted).
    pub fn master_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.master_name);
        self
    }

    /// `sentinel down-after-milliseconds` (default 1000 ms): how long a node must not
    /// answer before a sentinel considers it down.
    pub fn down_after(mut self, down_after: Duration) -> Self {
        self.down_after = down_after;
        self
    }

    /// `sentinel failover-timeout` (default 10 s). Sentinel also waits twice this long
    /// before it retries a failover that failed (e.g. a split leader election).
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// The quorum of `sentinel monitor` (default: a majority of the sentinels,
    /// `sentinels / 2 + 1`). At least 1; more than the number of sentinels disables
    /// automatic failover (a forced [`Lab::failover`] still works).
    pub fn quorum(mut self, quorum: usize) -> Self {
        self.quorum = Some(quorum);
        self
    }

    /// The sentinels' own password (`requirepass`). `None` or an empty string (the
    /// default) runs sentinels without authentication.
    pub fn sentinel_password(mut self, password: Option<&str>) -> Self {
        self.sentinel_password = password.filter(|p| !p.is_empty()).map(str::to_owned);
        self
    }

    /// The Sentinel binary to run (with `--sentinel`, so `redis-server` works too),
    /// instead of `KEYWAY_REDIS_SENTINEL`, `redis-sentinel` on `PATH` or the server
    /// binary.
    pub fn redis_sentinel(mut self, path: impl Into<PathBuf>) -> Self {
        self.redis_sentinel = Some(path.into());
        self
    }

    /// How long `start` waits for the sentinels to know the topology and each other
    /// (default 20 s).
    pub fn sentinel_timeout(mut self, timeout: Duration) -> Self {
        self.sentinel_timeout = timeout;
        self
    }

    /// Starts the master, then the replicas, waits for replication, then starts the
    /// sentinels (if any) and waits until they know the master, the replicas and each
    /// other.
    pub fn start(self) -> Result<Lab, LabError> {
        let program = match &self.redis_server {
            Some(path) => find_binary("redis-server", REDIS_SERVER_ENV, Some(path.as_os_str()))?,
            None => redis_server_path()?,
        };
        // Everything that can be checked is checked before the first process starts.
        let sentinel_program = if self.sentinels > 0 {
            check_master_name(&self.master_name)?;
            if let Some(password) = &self.password {
                check_auth_pass(password)?;
            }
            let quorum = self.effective_quorum();
            // Above the number of sentinels is allowed: they then never agree that the
            // master is down, and only `Lab::failover` moves it.
            if quorum == 0 {
                return Err(LabError::Config("the quorum must be at least 1".into()));
            }
            let env = std::env::var_os(REDIS_SENTINEL_ENV);
            let configured = self.redis_sentinel.as_deref().map(Path::as_os_str);
            Some(sentinel_program(
                configured.or(env.as_deref()),
                Some(&program),
            )?)
        } else {
            None
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
        let sentinel_password_file = match (&self.sentinel_password, self.sentinels) {
            (Some(password), 1..) => Some(write_secret(
                &dir.path().join("sentinel-password"),
                password,
            )?),
            _ => None,
        };
        let quorum = self.effective_quorum();
        let mut lab = Lab {
            sentinels: Vec::with_capacity(self.sentinels),
            nodes: Vec::with_capacity(1 + self.replicas),
            password: self.password,
            password_file,
            master_name: self.master_name,
            sentinel_password: self.sentinel_password,
            sentinel_password_file,
            failover_timeout: self.failover_timeout,
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
        if let Some(program) = sentinel_program {
            let master = lab.node(0).addr();
            for i in 0..self.sentinels {
                let name = format!("sentinel-{i}");
                let spec = SentinelSpec {
                    dir: lab.dir.path().join(&name),
                    name,
                    program: &program,
                    master_name: &lab.master_name,
                    master,
                    quorum,
                    auth_pass: lab.password.as_deref(),
                    password: lab.sentinel_password.as_deref(),
                    down_after: self.down_after,
                    failover_timeout: self.failover_timeout,
                    start_timeout: self.start_timeout,
                };
                let sentinel = SentinelNode::start(spec)?;
                lab.sentinels.push(sentinel);
            }
            lab.wait_sentinels(self.sentinel_timeout)?;
        }
        Ok(lab)
    }

    fn effective_quorum(&self) -> usize {
        self.quorum.unwrap_or(self.sentinels / 2 + 1)
    }
}

/// A running replication group on loopback, owned by the caller.
///
/// `Lab` is `Send + Sync`: share it with `Arc` to break nodes from another thread.
#[derive(Debug)]
pub struct Lab {
    // Field order matters: sentinels, then nodes drop (and die) before the directory is
    // deleted.
    sentinels: Vec<SentinelNode>,
    nodes: Vec<RedisNode>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    master_name: String,
    sentinel_password: Option<String>,
    sentinel_password_file: Option<PathBuf>,
    failover_timeout: Duration,
    dir: TempDir,
}

impl Lab {
    /// A builder with 2 replicas, a random password and no sentinels.
    pub fn builder() -> LabBuilder {
        LabBuilder {
            replicas: 2,
            password: Some(random_password()),
            redis_server: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            replication_timeout: DEFAULT_REPLICATION_TIMEOUT,
            sentinels: 0,
            master_name: DEFAULT_MASTER_NAME.to_owned(),
            down_after: DEFAULT_DOWN_AFTER,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            quorum: None,
            sentinel_password: None,
            redis_sentinel: None,
            sentinel_timeout: DEFAULT_SENTINEL_TIMEOUT,
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

    /// The node listening on `addr`, e.g. the master a sentinel names.
    pub fn node_by_addr(&self, addr: SocketAddr) -> Option<&RedisNode> {
        self.nodes.iter().find(|n| n.addr() == addr)
    }

    /// All sentinels (empty without [`LabBuilder::sentinels`]).
    pub fn sentinels(&self) -> &[SentinelNode] {
        &self.sentinels
    }

    /// Sentinel `i`.
    ///
    /// # Panics
    /// If `i` is out of range, like slice indexing.
    pub fn sentinel(&self, i: usize) -> &SentinelNode {
        &self.sentinels[i]
    }

    /// The Sentinel master name of the group.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The sentinels' password, if any.
    pub fn sentinel_password(&self) -> Option<&str> {
        self.sentinel_password.as_deref()
    }

    /// A file holding the sentinels' password (mode 0600, no trailing newline), when
    /// the lab has sentinels with a password.
    pub fn sentinel_password_file(&self) -> Option<&Path> {
        self.sentinel_password_file.as_deref()
    }

    /// Waits until every live sentinel (see the module docs) reports, in `SENTINEL
    /// MASTER`, the same master, not down and not failing over, as many replicas as the
    /// lab has nodes besides that master (`num-slaves`, which also counts replicas that
    /// are down), and every other sentinel of the lab (`num-other-sentinels`; sentinels
    /// never forget each other, killed ones included), and sees every other live
    /// sentinel up (`SENTINEL SENTINELS`), so a restarted sentinel counts as rejoined
    /// only once its peers see it again. Succeeds at once without live sentinels; a
    /// stopped sentinel never answers, so waiting with one stopped times out. Sentinels
    /// discover each other every 2 s, so expect seconds after start.
    pub fn wait_sentinels(&self, timeout: Duration) -> Result<(), LabError> {
        let replicas = self.nodes.len().saturating_sub(1);
        let others = self.sentinels.len().saturating_sub(1);
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.ask_live_sentinels(|s| s.master_state(PROBE_TIMEOUT));
            if states.is_empty() {
                return Ok(());
            }
            let masters: BTreeSet<Option<SocketAddr>> = states
                .iter()
                .filter_map(|(_, state)| state.as_ref().ok().map(|st| st.addr))
                .collect();
            let agreed = masters.len() == 1 && !masters.contains(&None);
            let live_ports: Vec<u16> = states.iter().map(|(s, _)| s.port()).collect();
            let settled = agreed
                && states.iter().all(|(s, state)| {
                    state.as_ref().is_ok_and(|st| {
                        master_settled(st, replicas, others)
                            && live_ports
                                .iter()
                                .all(|&p| p == s.port() || st.sentinels_up.contains(&p))
                    })
                });
            if settled {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let detail = states
                    .iter()
                    .map(|(s, state)| match state {
                        Ok(st) => format!(
                            "{}: master {} flags {}, {}/{replicas} replicas, \
                             {}/{others} other sentinels, sees up the sentinels on ports {:?}",
                            s.name(),
                            show_addr(st.addr),
                            st.flags,
                            st.num_slaves,
                            st.num_other_sentinels,
                            st.sentinels_up
                        ),
                        Err(e) => format!("{}: {}", s.name(), error_chain(e)),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(LabError::SentinelTimeout {
                    waiting_for: "agree on the master, replicas and sentinels".into(),
                    timeout,
                    detail: format!("{detail}\n{}", self.sentinel_log_tails()),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The master address that a majority of live sentinels (more than half, see the
    /// module docs) return for `SENTINEL GET-MASTER-ADDR-BY-NAME`; `None` without such a
    /// majority or without live sentinels. Sentinels are asked in parallel, each with a
    /// 500 ms timeout.
    pub fn sentinel_master(&self) -> Option<SocketAddr> {
        let answers = self.ask_live_sentinels(|s| s.master_addr_within(PROBE_TIMEOUT));
        majority(
            answers.len(),
            answers
                .iter()
                .filter_map(|(_, answer)| *answer.as_ref().ok()?),
        )
    }

    /// Asks the first live sentinel that answers to fail over (`SENTINEL FAILOVER
    /// <name>`: promote a replica without agreement from the others; the old master
    /// stays up and is converted to a replica later). A refusal with `-INPROG` (a
    /// failover is running) or `-NOGOODSLAVE` (no replica is eligible yet) is retried
    /// every 100 ms for up to the failover timeout (at least 5 s), on the same sentinel
    /// while it answers, so that two failovers never compete. Returns once a sentinel
    /// accepted; see [`Lab::wait_master_switch`] for the outcome.
    pub fn failover(&self) -> Result<(), LabError> {
        const COMMAND: &str = "SENTINEL FAILOVER";
        if self.sentinels.is_empty() {
            return Err(LabError::Config("the lab has no sentinels".into()));
        }
        let deadline = Instant::now() + self.failover_timeout.max(MIN_FAILOVER_RETRY);
        let args = ["SENTINEL", "FAILOVER", self.master_name.as_str()];
        // The sentinel that refused last: asked first and alone while it answers.
        let mut refused_by: Option<&SentinelNode> = None;
        loop {
            let candidates: Vec<&SentinelNode> = match refused_by {
                Some(sentinel) => vec![sentinel],
                None => self
                    .sentinels
                    .iter()
                    .filter(|s| s.pid().is_some())
                    .collect(),
            };
            // A retry whose sentinel became unreachable goes back to asking all of them.
            let retrying = refused_by.take().is_some();
            let mut last_error = None;
            for sentinel in candidates {
                let message = match sentinel.cmd(&args) {
                    Ok(Reply::Simple(ok)) if ok == "OK" => return Ok(()),
                    Ok(Reply::Error(message)) => message,
                    Ok(other) => {
                        return Err(LabError::UnexpectedReply {
                            command: COMMAND.into(),
                            reply: format!("{other:?}"),
                        });
                    }
                    // Not reachable (killed meanwhile, stopped): try the next one.
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                };
                let retry = message.starts_with("INPROG") || message.starts_with("NOGOODSLAVE");
                let error = LabError::ErrorReply {
                    command: COMMAND.into(),
                    message,
                };
                if !retry {
                    return Err(error);
                }
                refused_by = Some(sentinel);
                last_error = Some(error);
                break;
            }
            let Some(error) = last_error else {
                return Err(LabError::NotRunning {
                    name: "every sentinel".into(),
                });
            };
            if (refused_by.is_none() && !retrying) || Instant::now() >= deadline {
                return Err(error);
            }
            thread::sleep(FAILOVER_RETRY_INTERVAL);
        }
    }

    /// Waits until a majority of live sentinels ([`Lab::sentinel_master`]) names a
    /// master other than `from`, and returns it. That happens once Sentinel saw the
    /// promoted replica report `role:master` (`+switch-master`), so its `ROLE` already
    /// says master.
    pub fn wait_master_switch(
        &self,
        from: SocketAddr,
        timeout: Duration,
    ) -> Result<SocketAddr, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let answers = self.ask_live_sentinels(|s| s.master_addr_within(PROBE_TIMEOUT));
            let named = majority(
                answers.len(),
                answers
                    .iter()
                    .filter_map(|(_, answer)| *answer.as_ref().ok()?),
            );
            if let Some(master) = named.filter(|&m| m != from) {
                return Ok(master);
            }
            if Instant::now() >= deadline {
                let detail = answers
                    .iter()
                    .map(|(s, answer)| match answer {
                        Ok(addr) => format!("{}: {}", s.name(), show_addr(*addr)),
                        Err(e) => format!("{}: {}", s.name(), error_chain(e)),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(LabError::SentinelTimeout {
                    waiting_for: format!("name a master other than {from}"),
                    timeout,
                    detail: format!("{detail}\n{}", self.sentinel_log_tails()),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Runs `ask` on every live sentinel in parallel (a stopped one costs its timeout
    /// once, not once per sentinel).
    fn ask_live_sentinels<T: Send>(
        &self,
        ask: impl Fn(&SentinelNode) -> T + Sync,
    ) -> Vec<(&SentinelNode, T)> {
        let live: Vec<&SentinelNode> = self
            .sentinels
            .iter()
            .filter(|s| s.pid().is_some())
            .collect();
        let ask = &ask;
        thread::scope(|scope| {
            let handles: Vec<_> = live.iter().map(|&s| scope.spawn(move || ask(s))).collect();
            live.iter()
                .zip(handles)
                .filter_map(|(&s, handle)| Some((s, handle.join().ok()?)))
                .collect()
        })
    }

    fn sentinel_log_tails(&self) -> String {
        let mut out = String::from("last log lines:\n");
        for sentinel in &self.sentinels {
            out.push_str(&format!(
                "--- {} ---\n{}",
                sentinel.name(),
                sentinel.log_tail()
            ));
        }
        out
    }
}

/// Sentinel's view of the master is complete and calm.
fn master_settled(state: &MasterState, replicas: usize, others: usize) -> bool {
    state.flags.split(',').all(|flag| flag == "master")
        && state.num_slaves == replicas
        && state.num_other_sentinels == others
}

/// The address named by more than half of `voters`.
fn majority(voters: usize, answers: impl Iterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let answers: Vec<SocketAddr> = answers.collect();
    answers
        .iter()
        .copied()
        .find(|a| answers.iter().filter(|b| *b == a).count() * 2 > voters)
}

fn show_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Each process also kills itself on drop; doing it here first, explicitly, makes
        // the guarantee independent of field order and kills all before any directory
        // goes. Sentinels first, so none reacts to the nodes dying.
        for sentinel in &self.sentinels {
            sentinel.kill();
        }
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
    fn majority_needs_more_than_half_of_the_voters() {
        let (a, b) = (
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        );
        assert_eq!(majority(3, [a, a, b].into_iter()), Some(a));
        assert_eq!(majority(3, [a, b].into_iter()), None);
        assert_eq!(majority(3, [a, a].into_iter()), Some(a));
        assert_eq!(majority(2, [a].into_iter()), None);
        assert_eq!(majority(1, [a].into_iter()), Some(a));
        assert_eq!(majority(0, std::iter::empty()), None);
    }

    #[test]
    fn settled_means_plain_master_flags_and_full_counts() {
        let state = |flags: &str, slaves, others| MasterState {
            addr: None,
            flags: flags.into(),
            num_slaves: slaves,
            num_other_sentinels: others,
            sentinels_up: Vec::new(),
        };
        assert!(master_settled(&state("master", 2, 2), 2, 2));
        assert!(!master_settled(&state("master", 1, 2), 2, 2));
        assert!(!master_settled(&state("master", 2, 1), 2, 2));
        assert!(!master_settled(&state("s_down,master", 2, 2), 2, 2));
        assert!(!master_settled(&state("master,disconnected", 2, 2), 2, 2));
    }

    #[test]
    fn sentinel_defaults() {
        let builder = Lab::builder();
        assert_eq!(builder.sentinels, 0);
        assert_eq!(builder.master_name, "keyway");
        assert_eq!(builder.down_after, Duration::from_millis(1000));
        assert_eq!(builder.sentinel_password, None);
        assert_eq!(builder.clone().sentinels(3).effective_quorum(), 2);
        assert_eq!(builder.clone().sentinels(5).effective_quorum(), 3);
        assert_eq!(builder.sentinels(3).quorum(3).effective_quorum(), 3);
    }

    #[test]
    fn empty_password_means_none() {
        assert_eq!(Lab::builder().password(Some("")).password, None);
    }
}
