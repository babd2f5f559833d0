//! The `SentinelWatcher`: one task per sentinel that asks it, every
//! `sentinel.interval`, which master and replicas it knows for the service's
//! master name, and follows its event channels.
//!
//! Invariants:
//! - Two long-lived connections per sentinel, each authenticated once: one for
//!   queries (`keyway-sentinel`), one subscribed to [`CHANNELS`]
//!   (`keyway-sentinel-events`). Sentinel answers neither query on a
//!   subscribed connection, hence two.
//! - Exactly one [`SentinelReport`] per tick, answered or failed, whether the
//!   sentinel is up or not; only connection attempts back off (as the
//!   `Prober` does). A wake (an event, [`SentinelWatcher::waker`]) adds one
//!   report at once and restarts the cadence from it.
//! - A query (connect, AUTH and both replies included) never takes longer than
//!   `sentinel.timeout`. After any failure the query connection is dropped, so a
//!   late reply is never read as the answer to the next query.
//! - The event connection has no read timeout (events are rare) but is pinged
//!   every few intervals; no pong within `sentinel.timeout` drops it. It
//!   reconnects with back-off, and a re-subscription wakes the query side, since
//!   events may have been missed meanwhile.
//! - Only events about our master name are forwarded: one service's timeline
//!   holds no other group's failovers. Events are hints: the decision never
//!   routes on one alone (see `observation`).
//! - A `Failed` reason is short and lowercase, built from fixed words and a
//!   sanitised error code, and never holds the password (checked, not assumed).
//!   Event payloads are printable ASCII, at most 512 bytes.
//! - Cancel-safe: every await is raced against `shutdown`; the task also ends
//!   when the receiver of its messages is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use keyway_config::{Credentials, Sentinel, SentinelAddr};
use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::conn::{Cause, Failure, RespConn, Retries, Step, encode_command, redact, ticker};
use crate::observation::{
    SentinelEvent, SentinelMessage, SentinelOutcome, SentinelReport, SentinelView,
};
use crate::reply::{Frame, PubSubReply, SwitchMaster, event_master_name, sanitize_event_payload};

/// The name of the query connection (`CLIENT SETNAME`), for `CLIENT LIST`.
pub const CLIENT_NAME: &str = "keyway-sentinel";

/// The name of the subscribed connection.
pub const EVENTS_CLIENT_NAME: &str = "keyway-sentinel-events";

/// The event channels followed. Each is a hint worth a line on the failover
/// timeline; the ones in [`REQUERY_ON`] also trigger a query at once.
pub const CHANNELS: &[&str] = &[
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+convert-to-slave",
    "+failover-end",
    "+failover-state-send-slaveof-noone",
    "+promoted-slave",
    "+elected-leader",
    "+try-failover",
    "+reboot",
];

/// Events after which the sentinel's answer has (likely) changed: the new
/// master is named, the failover is over, or the old master was demoted.
pub const REQUERY_ON: &[&str] = &["+switch-master", "+failover-end", "+convert-to-slave"];

/// The longest wait between two connection attempts to a sentinel that is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The event connection is pinged every this many intervals...
const PING_EVERY_INTERVALS: u32 = 4;

/// ...but at least this often: a dead connection must not hide events for long.
const MAX_PING_EVERY: Duration = Duration::from_secs(30);

/// Follows one sentinel for one master name until cancelled. See the module doc.
#[derive(Debug)]
pub struct SentinelWatcher {
    sentinel: SentinelAddr,
    master_name: String,
    interval: Duration,
    timeout: Duration,
    auth: Option<Credentials>,
    out: mpsc::Sender<SentinelMessage>,
    wake: Arc<Notify>,
}

impl SentinelWatcher {
    /// A watcher of `sentinel` for `config.master_name`, with the interval,
    /// timeout and credentials of `config`.
    pub fn new(
        sentinel: SentinelAddr,
        config: &Sentinel,
        out: mpsc::Sender<SentinelMessage>,
    ) -> Self {
        SentinelWatcher {
            sentinel,
            master_name: config.master_name.clone(),
            interval: config.interval,
            timeout: config.timeout,
            auth: config.auth.clone(),
            out,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A trigger for an immediate query.
    ///
    /// Call `notify_one()`: its permit is kept if a query is under way, so a
    /// wake during a query still causes one more query right after it. A wake
    /// also skips any connection back-off, once. The watcher wakes itself on
    /// the events in [`REQUERY_ON`].
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Queries at once, then every interval, and follows the event channels,
    /// until `shutdown` is cancelled or the receiver of the messages is gone.
    pub async fn run(self, shutdown: CancellationToken) {
        // Both halves end on shutdown or a closed channel; when one ends, the
        // other is dropped with it (both are cancel-safe).
        tokio::select! {
            () = self.query_loop(&shutdown) => {}
            () = self.event_loop(&shutdown) => {}
        }
    }

    // ---- Queries --------------------------------------------------------

    async fn query_loop(&self, shutdown: &CancellationToken) {
        let mut ticker = ticker(self.interval);
        let request = query_request(&self.master_name);
        let mut state = QueryState::default();
        loop {
            let woken = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.out.closed() => return,
                _ = ticker.tick() => false,
                () = self.wake.notified() => true,
            };
            if woken {
                ticker.reset();
            }
            let outcome = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                outcome = self.query(&mut state, &request, woken) => outcome,
            };
            let report = SentinelMessage::Report(SentinelReport {
                sentinel: self.sentinel,
                at: Instant::now(),
                outcome,
            });
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                sent = self.out.send(report) => if sent.is_err() { return },
            }
        }
    }

    /// One query: reuse or open the connection, ask, and turn the answer (or
    /// its absence) into an outcome.
    async fn query(&self, state: &mut QueryState, request: &[u8], woken: bool) -> SentinelOutcome {
        if state.conn.is_none()
            && !woken
            && let Some(reason) = state.retries.skip_tick()
        {
            // Backing off: no attempt this tick, but the report still goes out.
            return SentinelOutcome::Failed(reason);
        }
        let mut step = Step::Connect;
        let result = tokio::time::timeout(self.timeout, self.ask(state, request, &mut step))
            .await
            .unwrap_or(Err(Failure::new(step, Cause::TimedOut)));
        match result {
            Ok(view) => {
                let failed_queries = state.retries.succeeded();
                if failed_queries > 0 {
                    tracing::info!(sentinel = %self.sentinel, master_name = %self.master_name, failed_queries, "sentinel answers again");
                }
                SentinelOutcome::Answered(view)
            }
            Err(failure) => {
                state.conn = None;
                let reason = redact(failure.to_string(), self.auth.as_ref());
                let failed_queries = state.retries.failed(&reason, self.interval, MAX_BACKOFF);
                if failed_queries == 1 {
                    tracing::info!(sentinel = %self.sentinel, master_name = %self.master_name, %reason, "sentinel unreachable");
                } else {
                    tracing::debug!(sentinel = %self.sentinel, %reason, failed_queries, "sentinel query failed");
                }
                SentinelOutcome::Failed(reason)
            }
        }
    }

    /// Connects if needed, then asks. Not bounded in time: the caller is.
    async fn ask(
        &self,
        state: &mut QueryState,
        request: &[u8],
        step: &mut Step,
    ) -> Result<SentinelView, Failure> {
        if state.conn.as_mut().is_some_and(RespConn::is_stale) {
            // Closed by the sentinel while idle (restart, `timeout`): start over
            // at once rather than report a failure.
            tracing::debug!(sentinel = %self.sentinel, "sentinel query connection closed; reconnecting");
            state.conn = None;
        }
        let conn = match &mut state.conn {
            Some(conn) => conn,
            None => {
                let conn =
                    RespConn::open(self.sentinel.0, self.auth.as_ref(), CLIENT_NAME, &[], step)
                        .await?;
                tracing::debug!(sentinel = %self.sentinel, "sentinel query connection open");
                state.conn.insert(conn)
            }
        };
        *step = Step::Query;
        conn.write(request, Step::Query).await?;
        let master = conn.read_frame(Step::Query).await?;
        let replicas = conn.read_frame(Step::Query).await?;
        if conn.has_unread() {
            let unsolicited = Cause::Unsolicited { from: "sentinel" };
            return Err(Failure::new(Step::Query, unsolicited));
        }
        SentinelView::from_frames(&master, &replicas).map_err(|e| Failure::reply(Step::Query, e))
    }

    // ---- Events ---------------------------------------------------------

    async fn event_loop(&self, shutdown: &CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let ended = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.out.closed() => return,
                ended = self.follow(&mut failures) => ended,
            };
            let failure = match ended {
                Ended::Stop => return,
                Ended::Failed(failure) => failure,
            };
            let reason = redact(failure.to_string(), self.auth.as_ref());
            if failures == 0 {
                tracing::info!(sentinel = %self.sentinel, master_name = %self.master_name, %reason, "sentinel events: subscription down");
            } else {
                tracing::debug!(sentinel = %self.sentinel, %reason, failed_attempts = failures + 1, "sentinel events: subscribe failed");
            }
            failures = failures.saturating_add(1);
            let wait = backoff_delay(failures, self.interval);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.out.closed() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Subscribes, then forwards events until the connection fails (or the
    /// messages are no longer wanted). `failures` counts failed subscriptions
    /// in a row; it is reset once subscribed.
    async fn follow(&self, failures: &mut u32) -> Ended {
        let mut step = Step::Connect;
        let opened = tokio::time::timeout(self.timeout, Subscription::open(self, &mut step)).await;
        let Subscription { mut conn, early } =
            match opened.unwrap_or(Err(Failure::new(step, Cause::TimedOut))) {
                Ok(subscription) => subscription,
                Err(failure) => return Ended::Failed(failure),
            };
        if *failures > 0 {
            tracing::info!(sentinel = %self.sentinel, master_name = %self.master_name, "sentinel events: subscribed again");
            // Whatever was published while unsubscribed is lost: ask now.
            self.wake.notify_one();
        } else {
            tracing::debug!(sentinel = %self.sentinel, "sentinel events: subscribed");
        }
        *failures = 0;

        let mut pong_due = None;
        for frame in early {
            if let Err(ended) = self.on_frame(&frame, &mut pong_due).await {
                return ended;
            }
        }
        let ping_every = ping_every(self.interval, self.timeout);
        let mut pinger =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        pinger.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let due = pong_due;
            let pong_overdue = async move {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                frame = conn.read_frame(Step::Events) => {
                    let frame = match frame {
                        Ok(frame) => frame,
                        Err(failure) => return Ended::Failed(failure),
                    };
                    if let Err(ended) = self.on_frame(&frame, &mut pong_due).await {
                        return ended;
                    }
                }
                () = pong_overdue => return Ended::Failed(Failure::new(Step::Ping, Cause::TimedOut)),
                _ = pinger.tick() => {
                    if pong_due.is_none() {
                        // A dead peer can leave a write blocked too: bound it.
                        let sent = tokio::time::timeout(self.timeout, conn.write(PING, Step::Ping)).await;
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(failure)) => return Ended::Failed(failure),
                            Err(_) => return Ended::Failed(Failure::new(Step::Ping, Cause::TimedOut)),
                        }
                        pong_due = Some(tokio::time::Instant::now() + self.timeout);
                    }
                }
            }
        }
    }

    /// Handles one frame of the subscribed connection.
    async fn on_frame(
        &self,
        frame: &Frame,
        pong_due: &mut Option<tokio::time::Instant>,
    ) -> Result<(), Ended> {
        match PubSubReply::from_frame(frame) {
            Ok(PubSubReply::Pong) => *pong_due = None,
            Ok(PubSubReply::Subscribed { .. }) => {}
            Ok(PubSubReply::Message { channel, payload }) => {
                self.on_message(&channel, &payload).await?;
            }
            Err(e) => return Err(Ended::Failed(Failure::reply(Step::Events, e))),
        }
        Ok(())
    }

    /// Forwards one published message if it is about our master name, and
    /// wakes the query side when the answer has likely changed.
    async fn on_message(&self, channel: &str, payload: &[u8]) -> Result<(), Ended> {
        // The kind is always one of ours: never a string chosen by the peer.
        let Some(&kind) = CHANNELS.iter().find(|c| **c == channel) else {
            tracing::debug!(sentinel = %self.sentinel, "sentinel events: message on a channel not subscribed to; ignored");
            return Ok(());
        };
        let text = String::from_utf8_lossy(payload);
        if event_master_name(kind, &text) != Some(self.master_name.as_str()) {
            return Ok(());
        }
        let new_master = if kind == "+switch-master" {
            match SwitchMaster::from_payload(&text) {
                Ok(switch) => Some(switch.new),
                Err(e) => {
                    tracing::debug!(sentinel = %self.sentinel, error = %e, "sentinel events: unreadable +switch-master");
                    None
                }
            }
        } else {
            None
        };
        let event = SentinelMessage::Event(SentinelEvent {
            sentinel: self.sentinel,
            at: Instant::now(),
            kind: kind.to_owned(),
            payload: sanitize_event_payload(payload),
            new_master,
        });
        if self.out.send(event).await.is_err() {
            return Err(Ended::Stop);
        }
        // After the event is sent, so the decision sees the hint before the
        // answer it prompted.
        if REQUERY_ON.contains(&kind) {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// What the query side carries from one query to the next.
#[derive(Debug, Default)]
struct QueryState {
    conn: Option<RespConn>,
    /// Consecutive failed queries, and the back-off they cause.
    retries: Retries,
}

/// Why the event side stopped following.
#[derive(Debug)]
enum Ended {
    /// Messages are no longer wanted: the whole watcher ends.
    Stop,
    /// The connection failed: reconnect after a back-off.
    Failed(Failure),
}

/// A subscribed connection, with any message that came in among the
/// subscription confirmations.
#[derive(Debug)]
struct Subscription {
    conn: RespConn,
    early: Vec<Frame>,
}

impl Subscription {
    /// Connects, authenticates, names the connection and subscribes to every
    /// channel in one write, then waits for every confirmation.
    async fn open(watcher: &SentinelWatcher, step: &mut Step) -> Result<Subscription, Failure> {
        let mut conn = RespConn::open(
            watcher.sentinel.0,
            watcher.auth.as_ref(),
            EVENTS_CLIENT_NAME,
            &subscribe_request(),
            step,
        )
        .await?;
        *step = Step::Subscribe;
        let mut confirmed = 0;
        let mut early = Vec::new();
        while confirmed < CHANNELS.len() {
            let frame = conn.read_frame(Step::Subscribe).await?;
            match PubSubReply::from_frame(&frame).map_err(|e| Failure::reply(Step::Subscribe, e))? {
                PubSubReply::Subscribed { .. } => confirmed += 1,
                // Redis confirms a whole SUBSCRIBE before anything is
                // published on it; kept anyway rather than trusting that.
                PubSubReply::Message { .. } | PubSubReply::Pong => early.push(frame),
            }
        }
        Ok(Subscription { conn, early })
    }
}

/// `SENTINEL get-master-addr-by-name <name>` and `SENTINEL replicas <name>`,
/// pipelined.
fn query_request(master_name: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    let name = master_name.as_bytes();
    encode_command(&mut out, &[b"SENTINEL", b"get-master-addr-by-name", name]);
    encode_command(&mut out, &[b"SENTINEL", b"replicas", name]);
    out.to_vec()
}

fn subscribe_request() -> Vec<u8> {
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(CHANNELS.iter().map(|c| c.as_bytes()));
    let mut out = BytesMut::new();
    encode_command(&mut out, &args);
    out.to_vec()
}

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// How often the event connection is pinged.
fn ping_every(interval: Duration, timeout: Duration) -> Duration {
    interval
        .saturating_mul(PING_EVERY_INTERVALS)
        .min(MAX_PING_EVERY)
        // A ping is never sent while one is unanswered: no point in a period
        // shorter than the wait for its pong.
        .max(timeout)
        .max(Duration::from_millis(1))
}

/// How long the event side waits before subscribing again, after `failures`
/// consecutive failures (`failures >= 1`): one interval, doubling up to
/// [`MAX_BACKOFF`] (or one interval, if that is longer). A wait, not skipped
/// ticks as on the query side: the event side reports nothing while down.
fn backoff_delay(failures: u32, interval: Duration) -> Duration {
    let doubling = 1u32 << failures.saturating_sub(1).min(16);
    interval
        .saturating_mul(doubling)
        .min(MAX_BACKOFF.max(interval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Answer, FakeServer, PATIENCE, bytes};
    use bytes::BufMut;
    use keyway_config::{NodeAddr, Secret};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// A scripted sentinel: subscribed connections receive what
    /// [`FakeServer::publish`] sends.
    type FakeSentinel = FakeServer<SentinelAddr>;

    fn subscribe_confirmations(channels: &[String]) -> Answer {
        let mut out = BytesMut::new();
        for (i, channel) in channels.iter().enumerate() {
            out.put_slice(b"*3\r\n$9\r\nsubscribe\r\n");
            out.put_slice(format!("${}\r\n{channel}\r\n:{}\r\n", channel.len(), i + 1).as_bytes());
        }
        Answer::Bytes(out.to_vec())
    }

    const PONG: &[u8] = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    const NO_SUCH_MASTER: &[u8] = b"-ERR No such master with that name\r\n";

    fn master_reply(port: u16) -> Vec<u8> {
        let port = port.to_string();
        format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n", port.len()).into_bytes()
    }

    /// `SENTINEL replicas` listing 127.0.0.1 at these ports, with real fields
    /// around `ip` and `port`.
    fn replicas_reply(ports: &[u16]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_slice(format!("*{}\r\n", ports.len()).as_bytes());
        for port in ports {
            let name = format!("127.0.0.1:{port}");
            let port = port.to_string();
            let fields: [&[u8]; 8] = [
                b"name",
                name.as_bytes(),
                b"ip",
                b"127.0.0.1",
                b"port",
                port.as_bytes(),
                b"flags",
                b"s_down,slave",
            ];
            encode_command(&mut out, &fields);
        }
        out.to_vec()
    }

    /// A healthy sentinel for `keyway` whose master is at the port in
    /// `master` (0: unknown name), with replicas at ports 2 and 3.
    fn healthy(master: Arc<AtomicU16>) -> impl Fn(&[String]) -> Answer + Send + Sync + 'static {
        move |cmd: &[String]| {
            let upper = cmd[0].to_ascii_uppercase();
            let port = master.load(Ordering::SeqCst);
            match (upper.as_str(), cmd.get(1).map(String::as_str)) {
                ("SENTINEL", Some("get-master-addr-by-name"))
                    if cmd[2] == "keyway" && port != 0 =>
                {
                    Answer::Bytes(master_reply(port))
                }
                ("SENTINEL", Some("get-master-addr-by-name")) => bytes(b"*-1\r\n"),
                ("SENTINEL", Some("replicas")) if cmd[2] == "keyway" && port != 0 => {
                    Answer::Bytes(replicas_reply(&[2, 3]))
                }
                ("SENTINEL", Some("replicas")) => bytes(NO_SUCH_MASTER),
                ("SUBSCRIBE", _) => subscribe_confirmations(&cmd[1..]),
                ("PING", _) => bytes(PONG),
                _ => bytes(b"+OK\r\n"),
            }
        }
    }

    fn config(interval_ms: u64, timeout_ms: u64, auth: Option<Credentials>) -> Sentinel {
        Sentinel {
            master_name: "keyway".into(),
            nodes: Vec::new(),
            auth,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    struct Running {
        messages: mpsc::Receiver<SentinelMessage>,
        shutdown: CancellationToken,
        wake: Arc<Notify>,
        task: JoinHandle<()>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    impl Running {
        async fn next(&mut self) -> SentinelMessage {
            tokio::time::timeout(PATIENCE, self.messages.recv())
                .await
                .expect("a message in time")
                .expect("watcher still running")
        }

        /// The next report, skipping events.
        async fn next_report(&mut self) -> SentinelReport {
            loop {
                if let SentinelMessage::Report(report) = self.next().await {
                    return report;
                }
            }
        }

        async fn next_outcome(&mut self) -> SentinelOutcome {
            self.next_report().await.outcome
        }

        /// The next event, skipping reports.
        async fn next_event(&mut self) -> SentinelEvent {
            loop {
                if let SentinelMessage::Event(event) = self.next().await {
                    return event;
                }
            }
        }
    }

    fn start(sentinel: SentinelAddr, config: &Sentinel) -> Running {
        let (tx, messages) = mpsc::channel(64);
        let watcher = SentinelWatcher::new(sentinel, config, tx);
        let wake = watcher.waker();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watcher.run(shutdown.clone()));
        Running {
            messages,
            shutdown,
            wake,
            task,
        }
    }

    fn failed(outcome: &SentinelOutcome) -> &str {
        match outcome {
            SentinelOutcome::Failed(reason) => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn node(port: u16) -> NodeAddr {
        NodeAddr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn view(master: u16) -> SentinelOutcome {
        SentinelOutcome::Answered(SentinelView {
            master: Some(node(master)),
            replicas: vec![node(2), node(3)],
        })
    }

    #[tokio::test]
    async fn reports_master_and_replicas_on_one_connection() {
        let sentinel = FakeSentinel::start(healthy(Arc::new(AtomicU16::new(1)))).await;
        let mut watcher = start(sentinel.addr, &config(20, 1000, None));
        for _ in 0..3 {
            let report = watcher.next_report().await;
            assert_eq!(report.sentinel, sentinel.addr);
            assert_eq!(report.outcome, view(1));
        }
        sentinel.until_subscribed(1).await;
        // One query connection, one subscribed connection.
        assert_eq!(sentinel.connections.load(Ordering::SeqCst), 2);
        assert_eq!(sentinel.count("AUTH"), 0);
        let commands = sentinel.commands.lock().expect("lock").clone();
        let names: Vec<&str> = commands
            .iter()
            .filter(|c| c[0] == "CLIENT")
            .map(|c| c[2].as_str())
            .collect();
        assert!(names.contains(&CLIENT_NAME), "{names:?}");
        assert!(names.contains(&EVENTS_CLIENT_NAME), "{names:?}");
        let subscribe = commands
            .iter()
            .find(|c| c[0] == "SUBSCRIBE")
            .expect("subscribed");
        assert_eq!(subscribe[1..], *CHANNELS);
    }

    #[tokio::test]
    async fn unknown_master_name_is_no_master() {
        let sentinel = FakeSentinel::start(healthy(Arc::new(AtomicU16::new(0)))).await;
        let mut watcher = start(sentinel.addr, &config(20, 1000, None));
        for _ in 0..2 {
            assert_eq!(
                watcher.next_outcome().await,
                SentinelOutcome::Answered(SentinelView {
                    master: None,
                    replicas: Vec::new()
                })
            );
        }
    }

    #[tokio::test]
    async fn garbage_fails_as_malformed() {
        let sentinel = FakeSentinel::start(|cmd: &[String]| match cmd[0].as_str() {
            "SENTINEL" if cmd[1] == "get-master-addr-by-name" => {
                bytes(b"*2\r\n$16\r\nredis-0.internal\r\n$4\r\n6379\r\n")
            }
            "SENTINEL" => bytes(b"*0\r\n"),
            _ => bytes(b"+OK\r\n"),
        })
        .await;
        let mut watcher = start(sentinel.addr, &config(20, 1000, None));
        assert_eq!(
            failed(&watcher.next_outcome().await),
            "query: malformed reply: master address is not ip:port"
        );

        let sentinel = FakeSentinel::start(|_: &[String]| bytes(b"HTTP/1.1 400\r\n\r\n")).await;
        let mut watcher = start(sentinel.addr, &config(20, 1000, None));
        for _ in 0..3 {
            let outcome = watcher.next_outcome().await;
            assert_eq!(
                failed(&outcome),
                "handshake: malformed reply: invalid resp type"
            );
        }
    }

    #[tokio::test]
    async fn silent_sentinel_fails_after_timeout() {
        let sentinel = FakeSentinel::start(|_: &[String]| Answer::Silent).await;
        let mut watcher = start(sentinel.addr, &config(50, 200, None));
        let started = Instant::now();
        assert_eq!(
            failed(&watcher.next_outcome().await),
            "handshake: timed out"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < PATIENCE);
    }

    #[tokio::test]
    async fn sentinel_that_stops_answering_fails_and_keeps_reporting() {
        let queries = Arc::new(AtomicUsize::new(0));
        let sentinel = FakeSentinel::start({
            let queries = Arc::clone(&queries);
            let healthy = healthy(Arc::new(AtomicU16::new(1)));
            move |cmd: &[String]| {
                if cmd[0] == "SENTINEL" && queries.fetch_add(1, Ordering::SeqCst) >= 2 {
                    return Answer::Silent;
                }
                healthy(cmd)
            }
        })
        .await;
        let mut watcher = start(sentinel.addr, &config(20, 200, None));
        assert_eq!(watcher.next_outcome().await, view(1));
        assert_eq!(failed(&watcher.next_outcome().await), "query: timed out");
        // One report per tick while it is down, connection attempts backing off.
        for _ in 0..5 {
            failed(&watcher.next_outcome().await);
        }
    }

    #[tokio::test]
    async fn connection_refused() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr")
        };
        let mut watcher = start(SentinelAddr(addr), &config(20, 1000, None));
        for _ in 0..5 {
            assert_eq!(
                failed(&watcher.next_outcome().await),
                "connect: connection refused"
            );
        }
    }

    #[tokio::test]
    async fn auth_on_both_connections_with_user() {
        let sentinel = FakeSentinel::start(|cmd: &[String]| match cmd[0].as_str() {
            "AUTH" if cmd[1..] == ["watcher", "s3cret"] => bytes(b"+OK\r\n"),
            "AUTH" => bytes(b"-WRONGPASS invalid username-password pair\r\n"),
            _ => healthy(Arc::new(AtomicU16::new(1)))(cmd),
        })
        .await;
        let auth = Credentials {
            username: Some("watcher".into()),
            password: Secret::new("s3cret"),
        };
        let mut watcher = start(sentinel.addr, &config(20, 1000, Some(auth)));
        for _ in 0..3 {
            assert_eq!(watcher.next_outcome().await, view(1));
        }
        sentinel.until_subscribed(1).await;
        assert_eq!(sentinel.count("AUTH"), 2);
    }

    #[tokio::test]
    async fn wrong_or_echoed_password_never_shows() {
        let sentinel = FakeSentinel::start(|cmd: &[String]| match cmd[0].as_str() {
            "AUTH" => bytes(format!("-{} is wrong\r\n", cmd[1]).as_bytes()),
            _ => bytes(b"-NOAUTH Authentication required.\r\n"),
        })
        .await;
        let auth = Credentials {
            username: None,
            password: Secret::new("hunter2"),
        };
        let mut watcher = start(sentinel.addr, &config(20, 1000, Some(auth)));
        let outcome = watcher.next_outcome().await;
        let reason = failed(&outcome);
        assert!(!reason.contains("hunter2"), "{reason}");
        assert!(reason.starts_with("auth: refused"), "{reason}");
    }

    #[tokio::test]
    async fn switch_master_event_and_immediate_requery() {
        let master = Arc::new(AtomicU16::new(1));
        let sentinel = FakeSentinel::start(healthy(Arc::clone(&master))).await;
        // An interval far longer than the test: any second report is a wake.
        let mut watcher = start(sentinel.addr, &config(3_600_000, 1000, None));
        assert_eq!(watcher.next_outcome().await, view(1));
        sentinel.until_subscribed(1).await;

        master.store(2, Ordering::SeqCst);
        sentinel.publish("+switch-master", "keyway 127.0.0.1 1 127.0.0.1 2");
        let event = watcher.next_event().await;
        assert_eq!(event.sentinel, sentinel.addr);
        assert_eq!(event.kind, "+switch-master");
        assert_eq!(event.payload, "keyway 127.0.0.1 1 127.0.0.1 2");
        assert_eq!(event.new_master, Some(node(2)));
        assert_eq!(watcher.next_outcome().await, view(2));
    }

    #[tokio::test]
    async fn other_master_names_are_not_forwarded() {
        let sentinel = FakeSentinel::start(healthy(Arc::new(AtomicU16::new(1)))).await;
        let mut watcher = start(sentinel.addr, &config(3_600_000, 1000, None));
        watcher.next_report().await;
        sentinel.until_subscribed(1).await;

        sentinel.publish("+switch-master", "other 127.0.0.1 1 127.0.0.1 2");
        sentinel.publish("+sdown", "master other 127.0.0.1 1");
        sentinel.publish(
            "+sdown",
            "slave 127.0.0.1:3 127.0.0.1 3 @ keyway-2 127.0.0.1 1",
        );
        sentinel.publish("+switch-master", "keyway-2 127.0.0.1 1 127.0.0.1 2");
        // Ours, published last: the first event forwarded.
        sentinel.publish(
            "+sdown",
            "slave 127.0.0.1:3 127.0.0.1 3 @ keyway 127.0.0.1 1",
        );
        let event = watcher.next_event().await;
        assert_eq!(event.kind, "+sdown");
        assert_eq!(
            event.payload,
            "slave 127.0.0.1:3 127.0.0.1 3 @ keyway 127.0.0.1 1"
        );
        assert_eq!(event.new_master, None);
        // No wake from any of them: nothing else is queued.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(watcher.messages.try_recv().is_err());
    }

    #[tokio::test]
    async fn event_payloads_are_sanitised() {
        let sentinel = FakeSentinel::start(healthy(Arc::new(AtomicU16::new(1)))).await;
        let mut watcher = start(sentinel.addr, &config(3_600_000, 1000, None));
        watcher.next_report().await;
        sentinel.until_subscribed(1).await;
        let long = format!("master keyway 127.0.0.1 1 \x1b[31m{}", "x".repeat(2000));
        sentinel.publish("+odown", &long);
        let event = watcher.next_event().await;
        assert_eq!(event.payload.len(), 512);
        assert!(event.payload.starts_with("master keyway 127.0.0.1 1 ?[31m"));
    }

    #[tokio::test]
    async fn wake_queries_at_once() {
        let sentinel = FakeSentinel::start(healthy(Arc::new(AtomicU16::new(1)))).await;
        let mut watcher = start(sentinel.addr, &config(3_600_000, 1000, None));
        assert_eq!(watcher.next_outcome().await, view(1));
        watcher.wake.notify_one();
        assert_eq!(watcher.next_outcome().await, view(1));
    }

    #[tokio::test]
    async fn dead_event_connection_is_detected_and_replaced() {
        // Answers queries, but never a PING on the subscribed connection.
        let sentinel = FakeSentinel::start(|cmd: &[String]| match cmd[0].as_str() {
            "PING" => Answer::Silent,
            _ => healthy(Arc::new(AtomicU16::new(1)))(cmd),
        })
        .await;
        let mut watcher = start(sentinel.addr, &config(20, 100, None));
        watcher.next_report().await;
        sentinel.until_subscribed(3).await;
        assert!(sentinel.count("PING") >= 2);
        // Events flow on the replacement.
        let subscribed = sentinel.subscribed.load(Ordering::SeqCst);
        sentinel.until_subscribed(subscribed + 1).await;
        sentinel.publish("+failover-end", "master keyway 127.0.0.1 1");
        assert_eq!(watcher.next_event().await.kind, "+failover-end");
    }

    #[tokio::test]
    async fn closed_event_connection_resubscribes() {
        let subscribes = Arc::new(AtomicUsize::new(0));
        let sentinel = FakeSentinel::start({
            let subscribes = Arc::clone(&subscribes);
            move |cmd: &[String]| match cmd[0].as_str() {
                "SUBSCRIBE" if subscribes.fetch_add(1, Ordering::SeqCst) == 0 => Answer::Close,
                _ => healthy(Arc::new(AtomicU16::new(1)))(cmd),
            }
        })
        .await;
        let mut watcher = start(sentinel.addr, &config(20, 1000, None));
        watcher.next_report().await;
        sentinel.until_subscribed(1).await;
        assert_eq!(subscribes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn shutdown_is_prompt_mid_query() {
        let sentinel = FakeSentinel::start(|_: &[String]| Answer::Silent).await;
        let mut watcher = start(sentinel.addr, &config(20, 3_600_000, None));
        tokio::time::sleep(Duration::from_millis(50)).await;
        watcher.shutdown.cancel();
        tokio::time::timeout(PATIENCE, &mut watcher.task)
            .await
            .expect("watcher stops on shutdown")
            .expect("no panic");
    }

    #[tokio::test]
    async fn stops_when_messages_are_unwanted() {
        let sentinel = FakeSentinel::start(healthy(Arc::new(AtomicU16::new(1)))).await;
        let mut watcher = start(sentinel.addr, &config(3_600_000, 1000, None));
        watcher.next_report().await;
        sentinel.until_subscribed(1).await;
        let (_, unrelated) = mpsc::channel(1);
        drop(std::mem::replace(&mut watcher.messages, unrelated));
        tokio::time::timeout(PATIENCE, &mut watcher.task)
            .await
            .expect("watcher stops without a receiver")
            .expect("no panic");
    }

    #[test]
    fn requery_events_are_followed() {
        for kind in REQUERY_ON {
            assert!(CHANNELS.contains(kind), "{kind}");
        }
    }

    #[test]
    fn backoffs() {
        let ms = Duration::from_millis;
        let delays: Vec<Duration> = (1..=6).map(|n| backoff_delay(n, ms(500))).collect();
        assert_eq!(
            delays,
            [ms(500), ms(1000), ms(2000), ms(4000), ms(5000), ms(5000)]
        );
        assert_eq!(
            backoff_delay(u32::MAX, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(ping_every(ms(500), ms(250)), ms(2000));
        assert_eq!(
            ping_every(Duration::from_secs(3600), ms(250)),
            MAX_PING_EVERY
        );
        assert_eq!(ping_every(ms(10), ms(100)), ms(100));
    }

    #[test]
    fn requests() {
        assert_eq!(
            query_request("keyway"),
            b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$6\r\nkeyway\r\n*3\r\n$8\r\nSENTINEL\r\n$8\r\nreplicas\r\n$6\r\nkeyway\r\n"
        );
        assert!(
            subscribe_request().starts_with(b"*13\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n")
        );
    }
}
