//! The `Prober`: one task per node that asks the node, every `check.interval`,
//! what it is, and sends a [`ProbeReport`] for each probe.
//!
//! Invariants:
//! - One long-lived connection per node, authenticated once, named
//!   `keyway-probe`: a probe costs the node two commands, not a connect, an AUTH
//!   and a log line.
//! - Exactly one report per tick while the node is down, so the decision counts
//!   `fall` in time; only connection attempts back off, the wait doubling from
//!   one interval up to [`MAX_BACKOFF`].
//! - A probe (connect, AUTH and replies included) never takes longer than
//!   `check.timeout`: a node that accepts and never answers, or is SIGSTOPped,
//!   is `Failed` after the timeout, not when TCP gives up.
//! - After any failure the connection is dropped: a late reply to an abandoned
//!   probe would otherwise be read as the answer to the next one. Between probes
//!   the read buffer is empty; bytes the node sends unasked also drop it.
//! - A `Failed` reason is short, lowercase, built from fixed words and a
//!   sanitised error code, and never holds the password (checked, not assumed).
//! - Cancel-safe: every await is raced against `shutdown`, and nothing is
//!   half-written to shared state when a future is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyway_config::{Check, Credentials, NodeAddr};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::conn::{Cause, Failure, RespConn, Retries, Step, redact, ticker};
use crate::observation::{NodeRole, ProbeOutcome, ProbeReport, Role};
use crate::reply::{ErrorCode, Frame, loading_from_ping};

/// The name the probe connection gives itself (`CLIENT SETNAME`), so operators
/// can tell it apart in `CLIENT LIST`.
pub const CLIENT_NAME: &str = "keyway-probe";

/// The longest wait between two connection attempts to a node that is down.
/// Short on purpose: held clients wait for a node to come back, and the failover
/// benchmark measured a 5 s cap delaying recovery after a 4 s outage by up to
/// 4.4 s. A connect to a dead node costs nothing; to a live node that refuses
/// the credentials it costs one failed AUTH a second, which the operator needs
/// to see anyway.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

const ROLE_PING: &[u8] = b"*1\r\n$4\r\nROLE\r\n*1\r\n$4\r\nPING\r\n";
const INFO_PING: &[u8] = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n*1\r\n$4\r\nPING\r\n";

/// Probes one node until cancelled. See the module doc.
#[derive(Debug)]
pub struct Prober {
    node: NodeAddr,
    check: Check,
    auth: Option<Credentials>,
    reports: mpsc::Sender<ProbeReport>,
    wake: Arc<Notify>,
}

impl Prober {
    pub fn new(
        node: NodeAddr,
        check: Check,
        auth: Option<Credentials>,
        reports: mpsc::Sender<ProbeReport>,
    ) -> Self {
        Prober {
            node,
            check,
            auth,
            reports,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A trigger for an immediate probe (used on a Sentinel `+switch-master`).
    ///
    /// Call `notify_one()`: its permit is kept if the prober is busy, so a wake
    /// that arrives during a probe still causes one more probe right after it.
    /// A wake also skips any connection back-off, once.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Probes at once, then every `check.interval`, until `shutdown` is
    /// cancelled or the receiver of the reports is gone.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = ticker(self.check.interval);
        let mut state = State::default();
        loop {
            let woken = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.reports.closed() => return,
                _ = ticker.tick() => false,
                () = self.wake.notified() => true,
            };
            if woken {
                // The regular cadence restarts from this probe.
                ticker.reset();
            }
            let (outcome, latency) = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                result = self.probe(&mut state, woken) => result,
            };
            let report = ProbeReport {
                node: self.node,
                at: Instant::now(),
                latency,
                outcome,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                sent = self.reports.send(report) => if sent.is_err() { return },
            }
        }
    }

    /// One probe: reuse or open the connection, ask, and turn the answer (or its
    /// absence) into an outcome and a latency.
    async fn probe(&self, state: &mut State, woken: bool) -> (ProbeOutcome, Duration) {
        if state.conn.is_none()
            && !woken
            && let Some(reason) = state.retries.skip_tick()
        {
            // Backing off: no connection attempt this tick, but the report still
            // goes out, with the reason the last attempt failed.
            return (ProbeOutcome::Failed(reason), Duration::ZERO);
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.check.timeout;
        // Which step was under way when the deadline hit, for the reason.
        let mut step = Step::Connect;
        let result = tokio::time::timeout_at(deadline, self.attempt(state, &mut step))
            .await
            .unwrap_or(Err(Failure::new(step, Cause::TimedOut)));
        match result {
            Ok((role, latency)) => {
                let failed_probes = state.retries.succeeded();
                if failed_probes > 0 {
                    tracing::info!(node = %self.node, failed_probes, "probe: node answers again");
                }
                (ProbeOutcome::Answered(role), latency)
            }
            Err(failure) => {
                state.conn = None;
                let reason = redact(failure.to_string(), self.auth.as_ref());
                let failed_probes = state
                    .retries
                    .failed(&reason, self.check.interval, MAX_BACKOFF);
                if failed_probes == 1 {
                    tracing::info!(node = %self.node, %reason, "probe: node unreachable");
                } else {
                    tracing::debug!(node = %self.node, %reason, failed_probes, "probe failed");
                }
                (ProbeOutcome::Failed(reason), started.elapsed())
            }
        }
    }

    /// Connects if needed, then asks the node its role. Not bounded in time:
    /// the caller puts the whole of it under `check.timeout`.
    async fn attempt(
        &self,
        state: &mut State,
        step: &mut Step,
    ) -> Result<(NodeRole, Duration), Failure> {
        if state.conn.as_mut().is_some_and(RespConn::is_stale) {
            // The node closed the idle connection (restart, `timeout`, kill):
            // start over at once rather than report a failure for a node that
            // may well be back.
            tracing::debug!(node = %self.node, "probe connection closed by the node; reconnecting");
            state.conn = None;
        }
        let conn = match &mut state.conn {
            Some(conn) => conn,
            None => {
                let conn =
                    RespConn::open(self.node.0, self.auth.as_ref(), CLIENT_NAME, &[], step).await?;
                tracing::debug!(node = %self.node, "probe connected");
                state.conn.insert(conn)
            }
        };

        if state.query == Query::Role {
            let (role, ping, latency) = round_trip(conn, Query::Role, step).await?;
            match Role::from_role_frame(&role) {
                Ok(role) => {
                    let loading =
                        loading_from_ping(&ping).map_err(|e| Failure::reply(Step::Ping, e))?;
                    return Ok((NodeRole { role, loading }, latency));
                }
                // ACLs allow INFO but not ROLE: ask with INFO replication from now
                // on. Both replies were read, so the connection is still in step.
                // Remembered for the prober's life: ACLs are configuration, and
                // retrying ROLE on every reconnect would only add a round trip.
                Err(e) if e.code() == Some(&ErrorCode::NoPerm) => {
                    tracing::info!(node = %self.node, "probe: ROLE refused by ACL (NOPERM); using INFO replication");
                    state.query = Query::InfoReplication;
                }
                Err(e) => return Err(Failure::reply(Step::Role, e)),
            }
        }
        let (info, ping, latency) = round_trip(conn, Query::InfoReplication, step).await?;
        let role = Role::from_info_frame(&info).map_err(|e| Failure::reply(Step::Info, e))?;
        let loading = loading_from_ping(&ping).map_err(|e| Failure::reply(Step::Ping, e))?;
        Ok((NodeRole { role, loading }, latency))
    }
}

/// What a prober carries from one probe to the next.
#[derive(Debug)]
struct State {
    conn: Option<RespConn>,
    query: Query,
    /// Consecutive failed probes, and the back-off they cause.
    retries: Retries,
}

impl Default for State {
    fn default() -> Self {
        State {
            conn: None,
            query: Query::Role,
            retries: Retries::default(),
        }
    }
}

/// The command a probe asks the role with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    Role,
    /// The fallback when ACLs refuse `ROLE`.
    InfoReplication,
}

/// Sends the query and `PING` in one write and reads both replies. The
/// latency runs from the write to the second reply.
async fn round_trip(
    conn: &mut RespConn,
    query: Query,
    step: &mut Step,
) -> Result<(Frame, Frame, Duration), Failure> {
    let (first_step, request) = match query {
        Query::Role => (Step::Role, ROLE_PING),
        Query::InfoReplication => (Step::Info, INFO_PING),
    };
    *step = first_step;
    let sent = Instant::now();
    conn.write(request, first_step).await?;
    let first = conn.read_frame(first_step).await?;
    *step = Step::Ping;
    let ping = conn.read_frame(Step::Ping).await?;
    let latency = sent.elapsed();
    if conn.has_unread() {
        return Err(Failure::new(
            Step::Ping,
            Cause::Unsolicited { from: "node" },
        ));
    }
    Ok((first, ping, latency))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Answer, FakeServer, PATIENCE, bytes};
    use keyway_config::Secret;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// A scripted Redis node.
    type FakeNode = FakeServer<NodeAddr>;

    const MASTER: &[u8] = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n";
    const REPLICA: &[u8] =
        b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:42\r\n";

    /// A well-behaved node that answers ROLE with `role`.
    fn healthy(role: &'static [u8]) -> impl Fn(&[String]) -> Answer + Send + Sync + 'static {
        move |cmd| match cmd[0].to_ascii_uppercase().as_str() {
            "ROLE" => bytes(role),
            "PING" => bytes(b"+PONG\r\n"),
            _ => bytes(b"+OK\r\n"),
        }
    }

    fn check(interval_ms: u64, timeout_ms: u64) -> Check {
        Check {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            rise: 1,
            fall: 1,
        }
    }

    struct Running {
        reports: mpsc::Receiver<ProbeReport>,
        shutdown: CancellationToken,
        wake: Arc<Notify>,
        task: JoinHandle<()>,
    }

    impl Running {
        async fn next(&mut self) -> ProbeReport {
            tokio::time::timeout(PATIENCE, self.reports.recv())
                .await
                .expect("a report in time")
                .expect("prober still running")
        }

        async fn next_outcome(&mut self) -> ProbeOutcome {
            self.next().await.outcome
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    fn start(node: NodeAddr, check: Check, auth: Option<Credentials>) -> Running {
        let (tx, reports) = mpsc::channel(16);
        let prober = Prober::new(node, check, auth, tx);
        let wake = prober.waker();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(prober.run(shutdown.clone()));
        Running {
            reports,
            shutdown,
            wake,
            task,
        }
    }

    fn failed(outcome: &ProbeOutcome) -> &str {
        match outcome {
            ProbeOutcome::Failed(reason) => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    const MASTER_UP: ProbeOutcome = ProbeOutcome::Answered(NodeRole {
        role: Role::Master,
        loading: false,
    });

    #[tokio::test]
    async fn master_on_one_connection() {
        let node = FakeNode::start(healthy(MASTER)).await;
        let mut prober = start(node.addr, check(20, 1000), None);
        for _ in 0..3 {
            let report = prober.next().await;
            assert_eq!(report.node, node.addr);
            assert_eq!(report.outcome, MASTER_UP);
        }
        assert_eq!(node.connections(), 1);
        assert_eq!(node.count("AUTH"), 0);
        let setname = node.commands.lock().expect("lock")[0].clone();
        assert_eq!(setname, ["CLIENT", "SETNAME", CLIENT_NAME]);
    }

    #[tokio::test]
    async fn replica() {
        let node = FakeNode::start(healthy(REPLICA)).await;
        let mut prober = start(node.addr, check(20, 1000), None);
        assert_eq!(
            prober.next_outcome().await,
            ProbeOutcome::Answered(NodeRole {
                role: Role::Replica,
                loading: false
            })
        );
    }

    #[tokio::test]
    async fn auth_once_with_user() {
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "AUTH" if cmd[1..] == ["probe", "s3cret"] => bytes(b"+OK\r\n"),
            "AUTH" => bytes(b"-WRONGPASS invalid username-password pair\r\n"),
            other => healthy(MASTER)(&[other.to_owned()]),
        })
        .await;
        let auth = Credentials {
            username: Some("probe".into()),
            password: Secret::new("s3cret"),
        };
        let mut prober = start(node.addr, check(20, 1000), Some(auth));
        for _ in 0..3 {
            assert_eq!(prober.next_outcome().await, MASTER_UP);
        }
        assert_eq!(node.count("AUTH"), 1);
    }

    #[tokio::test]
    async fn wrong_password_never_shows() {
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "AUTH" => bytes(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
            _ => bytes(b"-NOAUTH Authentication required.\r\n"),
        })
        .await;
        let auth = Credentials {
            username: None,
            password: Secret::new("hunter2"),
        };
        let mut prober = start(node.addr, check(20, 1000), Some(auth));
        let outcome = prober.next_outcome().await;
        let reason = failed(&outcome);
        assert_eq!(reason, "auth: refused (wrongpass)");
    }

    #[tokio::test]
    async fn echoed_password_is_redacted() {
        // A node that echoes the password as its error code.
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "AUTH" => bytes(format!("-{} is wrong\r\n", cmd[1]).as_bytes()),
            _ => bytes(b"+OK\r\n"),
        })
        .await;
        let auth = Credentials {
            username: None,
            password: Secret::new("hunter2"),
        };
        let mut prober = start(node.addr, check(20, 1000), Some(auth));
        let outcome = prober.next_outcome().await;
        let reason = failed(&outcome);
        assert!(!reason.contains("hunter2"), "{reason}");
        assert!(reason.starts_with("auth: refused"), "{reason}");
    }

    #[tokio::test]
    async fn no_auth_configured_but_required() {
        let node =
            FakeNode::start(|_: &[String]| bytes(b"-NOAUTH Authentication required.\r\n")).await;
        let mut prober = start(node.addr, check(20, 1000), None);
        assert_eq!(
            failed(&prober.next_outcome().await),
            "role: refused (noauth)"
        );
    }

    #[tokio::test]
    async fn garbage_fails() {
        let node = FakeNode::start(|_: &[String]| bytes(b"HTTP/1.1 400 Bad Request\r\n\r\n")).await;
        let mut prober = start(node.addr, check(20, 1000), None);
        for _ in 0..3 {
            let outcome = prober.next_outcome().await;
            assert_eq!(
                failed(&outcome),
                "handshake: malformed reply: invalid resp type"
            );
        }
    }

    #[tokio::test]
    async fn garbage_after_handshake_fails_and_reconnects() {
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "ROLE" => bytes(b"*1\r\n\x00\x01\x02\r\n"),
            _ => bytes(b"+OK\r\n"),
        })
        .await;
        let mut prober = start(node.addr, check(20, 1000), None);
        assert_eq!(
            failed(&prober.next_outcome().await),
            "role: malformed reply: invalid resp type"
        );
        // The connection was dropped: the next attempt opens a new one.
        failed(&prober.next_outcome().await);
        assert!(node.connections() >= 2);
    }

    #[tokio::test]
    async fn unknown_role_fails() {
        let node = FakeNode::start(healthy(b"*2\r\n$6\r\nleader\r\n:0\r\n")).await;
        let mut prober = start(node.addr, check(20, 1000), None);
        assert_eq!(failed(&prober.next_outcome().await), "role: unknown role");
    }

    #[tokio::test]
    async fn silent_node_fails_after_timeout() {
        let node = FakeNode::start(|_: &[String]| Answer::Silent).await;
        let mut prober = start(node.addr, check(50, 200), None);
        let started = Instant::now();
        let report = prober.next().await;
        assert_eq!(failed(&report.outcome), "handshake: timed out");
        // Bounded by the probe timeout, not by TCP: PATIENCE is far below any
        // TCP retransmission give-up.
        assert!(started.elapsed() < PATIENCE);
        assert!(report.latency >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn node_that_stops_answering_fails() {
        // Answers the handshake and one probe, then goes silent (a SIGSTOP).
        let roles = Arc::new(AtomicUsize::new(0));
        let node = FakeNode::start({
            let roles = Arc::clone(&roles);
            move |cmd: &[String]| match cmd[0].as_str() {
                "ROLE" if roles.fetch_add(1, Ordering::SeqCst) > 0 => Answer::Silent,
                "PING" if roles.load(Ordering::SeqCst) > 1 => Answer::Silent,
                other => healthy(MASTER)(&[other.to_owned()]),
            }
        })
        .await;
        let mut prober = start(node.addr, check(20, 200), None);
        assert_eq!(prober.next_outcome().await, MASTER_UP);
        assert_eq!(failed(&prober.next_outcome().await), "role: timed out");
    }

    #[tokio::test]
    async fn replies_in_one_byte_pieces() {
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "ROLE" => Answer::Trickle(
                b"*3\r\n$6\r\nmaster\r\n:171\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$5\r\n17002\r\n$2\r\n14\r\n"
                    .to_vec(),
            ),
            "PING" => Answer::Trickle(b"+PONG\r\n".to_vec()),
            _ => Answer::Trickle(b"+OK\r\n".to_vec()),
        })
        .await;
        let mut prober = start(node.addr, check(20, 5000), None);
        assert_eq!(prober.next_outcome().await, MASTER_UP);
    }

    #[tokio::test]
    async fn loading_node() {
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "ROLE" => bytes(MASTER),
            "PING" => bytes(b"-LOADING Redis is loading the dataset in memory\r\n"),
            _ => bytes(b"+OK\r\n"),
        })
        .await;
        let mut prober = start(node.addr, check(20, 1000), None);
        assert_eq!(
            prober.next_outcome().await,
            ProbeOutcome::Answered(NodeRole {
                role: Role::Master,
                loading: true
            })
        );
    }

    #[tokio::test]
    async fn stale_replica_fails() {
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "ROLE" => bytes(REPLICA),
            "PING" => bytes(b"-MASTERDOWN Link with MASTER is down\r\n"),
            _ => bytes(b"+OK\r\n"),
        })
        .await;
        let mut prober = start(node.addr, check(20, 1000), None);
        assert_eq!(
            failed(&prober.next_outcome().await),
            "ping: refused (masterdown)"
        );
    }

    #[tokio::test]
    async fn noperm_falls_back_to_info() {
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "ROLE" => bytes(b"-NOPERM this user has no permissions to run the 'role' command\r\n"),
            "INFO" if cmd.get(1).map(String::as_str) == Some("replication") => {
                let info = "# Replication\r\nrole:slave\r\nmaster_port:6379\r\n";
                bytes(format!("${}\r\n{info}\r\n", info.len()).as_bytes())
            }
            "PING" => bytes(b"+PONG\r\n"),
            _ => bytes(b"+OK\r\n"),
        })
        .await;
        let mut prober = start(node.addr, check(20, 1000), None);
        let replica = ProbeOutcome::Answered(NodeRole {
            role: Role::Replica,
            loading: false,
        });
        // The first probe already answers, through the fallback.
        for _ in 0..3 {
            assert_eq!(prober.next_outcome().await, replica);
        }
        assert_eq!(node.count("ROLE"), 1);
        assert!(node.count("INFO") >= 3);
        assert_eq!(node.connections(), 1);
    }

    #[tokio::test]
    async fn connection_refused() {
        // A port that was just free: nothing listens on it.
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr")
        };
        let mut prober = start(NodeAddr(addr), check(20, 1000), None);
        for _ in 0..5 {
            assert_eq!(
                failed(&prober.next_outcome().await),
                "connect: connection refused"
            );
        }
    }

    #[tokio::test]
    async fn reports_keep_their_cadence_while_connects_back_off() {
        // Accepts and closes at once: every connection attempt fails.
        let node = FakeNode::start(|_: &[String]| Answer::Close).await;
        let mut prober = start(node.addr, check(10, 1000), None);
        for _ in 0..16 {
            failed(&prober.next_outcome().await);
        }
        // Attempts at reports 1, 2, 4, 8, 16: far fewer than one per report.
        let attempts = node.connections();
        assert!(
            (2..=8).contains(&attempts),
            "{attempts} connection attempts"
        );
    }

    #[tokio::test]
    async fn recovers_after_failures() {
        let calls = Arc::new(AtomicUsize::new(0));
        let node = FakeNode::start({
            let calls = Arc::clone(&calls);
            move |cmd: &[String]| match cmd[0].as_str() {
                "ROLE" if calls.fetch_add(1, Ordering::SeqCst) < 2 => bytes(b"?\r\n"),
                other => healthy(MASTER)(&[other.to_owned()]),
            }
        })
        .await;
        let mut prober = start(node.addr, check(10, 1000), None);
        failed(&prober.next_outcome().await);
        failed(&prober.next_outcome().await);
        let deadline = Instant::now() + PATIENCE;
        loop {
            match prober.next_outcome().await {
                outcome if outcome == MASTER_UP => break,
                ProbeOutcome::Failed(_) if Instant::now() < deadline => {}
                other => panic!("never recovered: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn reconnects_when_the_node_closed_the_idle_connection() {
        // The node closes the connection after every PING, as a node restarted
        // between two probes would have: the prober notices before asking and
        // reconnects at once instead of reporting a failure.
        let node = FakeNode::start(|cmd: &[String]| match cmd[0].as_str() {
            "PING" => Answer::BytesThenClose(b"+PONG\r\n".to_vec()),
            other => healthy(MASTER)(&[other.to_owned()]),
        })
        .await;
        let mut prober = start(node.addr, check(50, 1000), None);
        for _ in 0..4 {
            assert_eq!(prober.next_outcome().await, MASTER_UP);
        }
        assert!(node.connections() >= 4);
    }

    #[tokio::test]
    async fn node_gone_fails() {
        let node = FakeNode::start(healthy(MASTER)).await;
        let mut prober = start(node.addr, check(50, 1000), None);
        assert_eq!(prober.next_outcome().await, MASTER_UP);
        drop(node);
        // Listener and connections are gone: probes fail, they do not hang.
        let deadline = Instant::now() + PATIENCE;
        loop {
            match prober.next_outcome().await {
                ProbeOutcome::Failed(reason) => {
                    assert!(
                        reason.starts_with("connect: ") || reason.starts_with("role: "),
                        "{reason}"
                    );
                    break;
                }
                // Aborting the fake node takes effect at its next poll.
                _ if Instant::now() < deadline => {}
                other => panic!("still answering: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn wake_probes_at_once() {
        let node = FakeNode::start(healthy(MASTER)).await;
        let mut prober = start(node.addr, check(3_600_000, 1000), None);
        assert_eq!(prober.next_outcome().await, MASTER_UP);
        prober.wake.notify_one();
        assert_eq!(prober.next_outcome().await, MASTER_UP);
    }

    #[tokio::test]
    async fn shutdown_is_prompt_mid_probe() {
        let node = FakeNode::start(|_: &[String]| Answer::Silent).await;
        let mut prober = start(node.addr, check(20, 3_600_000), None);
        // Let it connect and wait on the handshake reply.
        tokio::time::sleep(Duration::from_millis(50)).await;
        prober.shutdown.cancel();
        tokio::time::timeout(PATIENCE, &mut prober.task)
            .await
            .expect("prober stops on shutdown")
            .expect("no panic");
    }

    #[tokio::test]
    async fn stops_when_reports_are_unwanted() {
        let node = FakeNode::start(healthy(MASTER)).await;
        let mut prober = start(node.addr, check(3_600_000, 1000), None);
        prober.next().await;
        // Swap in a receiver whose sender is gone, and drop the real one.
        let (_, unrelated) = mpsc::channel(1);
        drop(std::mem::replace(&mut prober.reports, unrelated));
        tokio::time::timeout(PATIENCE, &mut prober.task)
            .await
            .expect("prober stops without a receiver")
            .expect("no panic");
    }
}
