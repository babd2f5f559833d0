//! The `SentinelWatcher` against real `redis-sentinel` processes from `keyway-lab`.
//!
//! Every wait polls messages with a deadline (never a fixed sleep); deadlines are
//! generous because CI machines are loaded, and no test asserts a tight timing.
//! The lab's API blocks, so it runs under `block_in_place` on a multi-thread
//! runtime.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keyway_config::{Credentials, NodeAddr, Secret, Sentinel, SentinelAddr};
use keyway_discovery::sentinel::{CLIENT_NAME, EVENTS_CLIENT_NAME, SentinelWatcher};
use keyway_discovery::{SentinelEvent, SentinelMessage, SentinelOutcome, SentinelView};
use keyway_lab::{Lab, LabBuilder, SentinelNode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Covers a failover with a split leader election, which Sentinel retries after
/// twice the failover timeout (4 s below).
const PATIENCE: Duration = Duration::from_secs(30);

fn lab(builder: LabBuilder) -> Lab {
    tokio::task::block_in_place(|| builder.start()).unwrap_or_else(|e| panic!("lab: {e}"))
}

/// Master + 2 replicas + 3 sentinels, the shape of production.
fn ha() -> LabBuilder {
    Lab::builder()
        .replicas(2)
        .sentinels(3)
        .failover_timeout(Duration::from_secs(4))
}

fn config(lab: &Lab, master_name: &str, auth: Option<Credentials>) -> Sentinel {
    Sentinel {
        master_name: master_name.to_owned(),
        nodes: lab
            .sentinels()
            .iter()
            .map(|s| SentinelAddr(s.addr()))
            .collect(),
        auth,
        interval: Duration::from_millis(100),
        // Generous: a loaded CI must not turn a healthy sentinel into a failure.
        timeout: Duration::from_millis(1000),
    }
}

fn credentials(lab: &Lab) -> Option<Credentials> {
    lab.sentinel_password().map(|p| Credentials {
        username: None,
        password: Secret::new(p),
    })
}

fn addr(node: &keyway_lab::RedisNode) -> NodeAddr {
    NodeAddr(node.addr())
}

/// The view the lab's topology should produce, replicas sorted.
fn expected_view(lab: &Lab, master: SocketAddr) -> SentinelView {
    let mut replicas: Vec<NodeAddr> = lab
        .nodes()
        .iter()
        .filter(|n| n.addr() != master)
        .map(addr)
        .collect();
    replicas.sort();
    SentinelView {
        master: Some(NodeAddr(master)),
        replicas,
    }
}

fn sorted(view: &SentinelView) -> SentinelView {
    let mut view = view.clone();
    view.replicas.sort();
    view
}

/// A running watcher; cancelled on drop.
struct Watching {
    sentinel: SentinelAddr,
    messages: mpsc::Receiver<SentinelMessage>,
    shutdown: CancellationToken,
    seen: Vec<SentinelMessage>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Watching {
    fn start(sentinel: &SentinelNode, config: &Sentinel) -> Watching {
        let (tx, messages) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let sentinel = SentinelAddr(sentinel.addr());
        tokio::spawn(SentinelWatcher::new(sentinel, config, tx).run(shutdown.clone()));
        Watching {
            sentinel,
            messages,
            shutdown,
            seen: Vec::new(),
        }
    }

    /// Reads messages until one matches; panics with the last ones at the deadline.
    async fn until(
        &mut self,
        what: &str,
        wanted: impl Fn(&SentinelMessage) -> bool,
    ) -> SentinelMessage {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.messages.recv()).await {
                Ok(Some(message)) => {
                    assert_eq!(sentinel_of(&message), self.sentinel);
                    let found = wanted(&message);
                    self.seen.push(message.clone());
                    if found {
                        return message;
                    }
                }
                Ok(None) => panic!("watcher ended while waiting for {what}"),
                Err(_) => panic!(
                    "{}: no {what} within {PATIENCE:?}; last messages: {:#?}",
                    self.sentinel,
                    &self.seen[self.seen.len().saturating_sub(8)..]
                ),
            }
        }
    }

    async fn until_outcome(
        &mut self,
        what: &str,
        wanted: impl Fn(&SentinelOutcome) -> bool,
    ) -> SentinelOutcome {
        match self
            .until(
                what,
                |m| matches!(m, SentinelMessage::Report(r) if wanted(&r.outcome)),
            )
            .await
        {
            SentinelMessage::Report(report) => report.outcome,
            SentinelMessage::Event(_) => unreachable!(),
        }
    }

    async fn until_view(&mut self, wanted: &SentinelView) {
        let what = format!("{wanted:?}");
        self.until_outcome(
            &what,
            |o| matches!(o, SentinelOutcome::Answered(v) if sorted(v) == *wanted),
        )
        .await;
    }

    async fn until_failed(&mut self) -> String {
        match self
            .until_outcome("a failure", |o| matches!(o, SentinelOutcome::Failed(_)))
            .await
        {
            SentinelOutcome::Failed(reason) => reason,
            SentinelOutcome::Answered(_) => unreachable!(),
        }
    }

    async fn until_event(&mut self, kind: &str) -> SentinelEvent {
        let what = format!("a {kind} event");
        match self
            .until(
                &what,
                |m| matches!(m, SentinelMessage::Event(e) if e.kind == kind),
            )
            .await
        {
            SentinelMessage::Event(event) => event,
            SentinelMessage::Report(_) => unreachable!(),
        }
    }
}

fn sentinel_of(message: &SentinelMessage) -> SentinelAddr {
    match message {
        SentinelMessage::Report(r) => r.sentinel,
        SentinelMessage::Event(e) => e.sentinel,
    }
}

/// How many connections named `name` the sentinel has.
fn named_clients(sentinel: &SentinelNode, name: &str) -> usize {
    let list =
        tokio::task::block_in_place(|| sentinel.cmd(&["CLIENT", "LIST"])).expect("client list");
    let list = list.as_str().expect("client list text").to_owned();
    list.lines()
        .filter(|l| l.contains(&format!(" name={name} ")))
        .count()
}

/// Polls until the sentinel has exactly one subscribed watcher connection.
async fn until_subscribed(sentinel: &SentinelNode) {
    let deadline = Instant::now() + PATIENCE;
    while named_clients(sentinel, EVENTS_CLIENT_NAME) != 1 {
        assert!(Instant::now() < deadline, "the watcher never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_master_and_both_replicas() {
    let lab = lab(ha());
    let config = config(&lab, lab.master_name(), credentials(&lab));
    let expected = expected_view(&lab, lab.node(0).addr());
    let mut watchers: Vec<Watching> = lab
        .sentinels()
        .iter()
        .map(|s| Watching::start(s, &config))
        .collect();
    for watcher in &mut watchers {
        watcher.until_view(&expected).await;
    }
    // A healthy group: every report is the same answer, on two connections.
    for _ in 0..3 {
        watchers[0]
            .until("any report", |m| matches!(m, SentinelMessage::Report(_)))
            .await;
    }
    for message in &watchers[0].seen {
        if let SentinelMessage::Report(report) = message {
            assert!(
                matches!(&report.outcome, SentinelOutcome::Answered(v) if sorted(v) == expected),
                "{report:?}"
            );
        }
    }
    assert_eq!(named_clients(lab.sentinel(0), CLIENT_NAME), 1);
    until_subscribed(lab.sentinel(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_master_name_is_no_master() {
    let lab = lab(Lab::builder().replicas(0).sentinels(1));
    let config = config(&lab, "not-monitored", credentials(&lab));
    let mut watcher = Watching::start(lab.sentinel(0), &config);
    let empty = SentinelView {
        master: None,
        replicas: Vec::new(),
    };
    watcher.until_view(&empty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_publishes_switch_master_then_reports_the_new_master() {
    let lab = lab(ha());
    let old = lab.node(0).addr();
    let config = config(&lab, lab.master_name(), credentials(&lab));
    let mut watchers: Vec<Watching> = lab
        .sentinels()
        .iter()
        .map(|s| Watching::start(s, &config))
        .collect();
    for (watcher, sentinel) in watchers.iter_mut().zip(lab.sentinels()) {
        watcher.until_view(&expected_view(&lab, old)).await;
        until_subscribed(sentinel).await;
    }

    tokio::task::block_in_place(|| lab.failover()).expect("failover");
    let new = tokio::task::block_in_place(|| lab.wait_master_switch(old, PATIENCE))
        .expect("master switch");
    assert_ne!(new, old);

    // Every sentinel publishes +switch-master (the leader when it promotes, the
    // others when its new configuration reaches them), and every watcher then
    // reports the new master.
    for watcher in &mut watchers {
        let event = watcher.until_event("+switch-master").await;
        assert_eq!(event.new_master, Some(NodeAddr(new)));
        assert_eq!(
            event.payload,
            format!(
                "{} {} {} {} {}",
                lab.master_name(),
                old.ip(),
                old.port(),
                new.ip(),
                new.port()
            )
        );
        let after = watcher.seen.len();
        watcher
            .until_outcome(
                "a report naming the new master",
                |o| matches!(o, SentinelOutcome::Answered(v) if v.master == Some(NodeAddr(new))),
            )
            .await;
        assert!(watcher.seen.len() > after);
    }
    // The leader's timeline holds the whole failover, in Sentinel's order.
    let kinds: Vec<&str> = watchers
        .iter()
        .flat_map(|w| &w.seen)
        .filter_map(|m| match m {
            SentinelMessage::Event(e) => Some(e.kind.as_str()),
            SentinelMessage::Report(_) => None,
        })
        .collect();
    for kind in [
        "+try-failover",
        "+elected-leader",
        "+promoted-slave",
        "+failover-end",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_password_is_sent_and_never_shown() {
    let password = "sentinel-pw-4b1d";
    let lab = lab(Lab::builder()
        .replicas(1)
        .sentinels(1)
        .sentinel_password(Some(password)));
    let good = config(&lab, lab.master_name(), credentials(&lab));
    let mut watcher = Watching::start(lab.sentinel(0), &good);
    watcher
        .until_view(&expected_view(&lab, lab.node(0).addr()))
        .await;
    until_subscribed(lab.sentinel(0)).await;

    let wrong = "not-the-password-7f3a";
    let bad = config(
        &lab,
        lab.master_name(),
        Some(Credentials {
            username: None,
            password: Secret::new(wrong),
        }),
    );
    let mut watcher = Watching::start(lab.sentinel(0), &bad);
    let reason = watcher.until_failed().await;
    assert_eq!(reason, "auth: refused (wrongpass)");
    assert!(!reason.contains(wrong) && !reason.contains(password));

    let mut watcher = Watching::start(lab.sentinel(0), &config(&lab, lab.master_name(), None));
    assert_eq!(watcher.until_failed().await, "query: refused (noauth)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sentinel_fails_then_answers_and_resubscribes_after_restart() {
    let lab = lab(Lab::builder().replicas(1).sentinels(1));
    let sentinel = lab.sentinel(0);
    let config = config(&lab, lab.master_name(), credentials(&lab));
    let expected = expected_view(&lab, lab.node(0).addr());
    let mut watcher = Watching::start(sentinel, &config);
    watcher.until_view(&expected).await;
    until_subscribed(sentinel).await;

    sentinel.kill();
    let reason = watcher.until_failed().await;
    assert!(
        reason.starts_with("connect: ") || reason.contains("closed") || reason.contains("reset"),
        "{reason}"
    );

    tokio::task::block_in_place(|| sentinel.restart()).expect("restart");
    watcher.until_view(&expected).await;
    until_subscribed(sentinel).await;
}
