//! The `Prober` against real `redis-server` processes from `keyway-lab`.
//!
//! Every wait polls reports with a deadline (never a fixed sleep); deadlines are
//! generous because CI machines are loaded, and no test asserts a tight timing.

use std::time::{Duration, Instant};

use keyway_config::{Check, Credentials, NodeAddr, Secret};
use keyway_discovery::probe::{CLIENT_NAME, Prober};
use keyway_discovery::{NodeRole, ProbeOutcome, ProbeReport, Role};
use keyway_lab::{Lab, RedisNode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

const MASTER: ProbeOutcome = ProbeOutcome::Answered(NodeRole {
    role: Role::Master,
    loading: false,
});
const REPLICA: ProbeOutcome = ProbeOutcome::Answered(NodeRole {
    role: Role::Replica,
    loading: false,
});

fn check() -> Check {
    Check {
        interval: Duration::from_millis(100),
        // Generous: a loaded CI must not turn a healthy node into a failure.
        timeout: Duration::from_millis(1000),
        rise: 1,
        fall: 1,
    }
}

fn lab(replicas: usize) -> Lab {
    Lab::builder()
        .replicas(replicas)
        .start()
        .unwrap_or_else(|e| panic!("lab: {e}"))
}

fn credentials(lab: &Lab) -> Option<Credentials> {
    lab.password().map(|p| Credentials {
        username: None,
        password: Secret::new(p),
    })
}

/// A running prober; cancelled on drop.
struct Probing {
    reports: mpsc::Receiver<ProbeReport>,
    shutdown: CancellationToken,
    seen: Vec<ProbeOutcome>,
}

impl Drop for Probing {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Probing {
    fn start(node: &RedisNode, auth: Option<Credentials>) -> Probing {
        let (tx, reports) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let prober = Prober::new(NodeAddr(node.addr()), check(), auth, tx);
        tokio::spawn(prober.run(shutdown.clone()));
        Probing {
            reports,
            shutdown,
            seen: Vec::new(),
        }
    }

    /// Reads reports until one matches; panics with what was seen at the deadline.
    async fn until(&mut self, what: &str, wanted: impl Fn(&ProbeOutcome) -> bool) -> ProbeOutcome {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.reports.recv()).await {
                Ok(Some(report)) => {
                    let outcome = report.outcome;
                    let found = wanted(&outcome);
                    self.seen.push(outcome.clone());
                    if found {
                        return outcome;
                    }
                }
                Ok(None) => panic!("prober ended while waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {PATIENCE:?}; last outcomes: {:?}",
                    &self.seen[self.seen.len().saturating_sub(5)..]
                ),
            }
        }
    }

    async fn until_failed(&mut self) -> String {
        match self
            .until("failure", |o| matches!(o, ProbeOutcome::Failed(_)))
            .await
        {
            ProbeOutcome::Failed(reason) => reason,
            ProbeOutcome::Answered(_) => unreachable!(),
        }
    }

    async fn until_is(&mut self, wanted: ProbeOutcome) {
        let what = format!("{wanted:?}");
        self.until(&what, |o| *o == wanted).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_and_replica_report_their_roles() {
    let lab = lab(1);
    let mut master = Probing::start(lab.node(0), credentials(&lab));
    let mut replica = Probing::start(lab.node(1), credentials(&lab));
    master.until_is(MASTER).await;
    replica.until_is(REPLICA).await;
    // Every report is an answer: no spurious failure on a healthy group.
    for _ in 0..3 {
        master.until("any report", |_| true).await;
    }
    assert!(
        master.seen.iter().all(|o| *o == MASTER),
        "{:?}",
        master.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_named_connection_per_node() {
    let lab = lab(0);
    let mut master = Probing::start(lab.node(0), credentials(&lab));
    for _ in 0..5 {
        master.until_is(MASTER).await;
    }
    let clients = lab.node(0).cmd(&["CLIENT", "LIST"]).expect("client list");
    let clients = clients.as_str().expect("client list text");
    let probes = clients
        .lines()
        .filter(|l| l.contains(&format!("name={CLIENT_NAME} ")))
        .count();
    assert_eq!(probes, 1, "{clients}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_without_showing_it() {
    let lab = lab(0);
    let wrong = "not-the-password-7f3a";
    let auth = Credentials {
        username: None,
        password: Secret::new(wrong),
    };
    let mut master = Probing::start(lab.node(0), Some(auth));
    let reason = master.until_failed().await;
    assert_eq!(reason, "auth: refused (wrongpass)");
    assert!(!reason.contains(wrong));
    if let Some(real) = lab.password() {
        assert!(!reason.contains(real));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_password_fails() {
    let lab = lab(0);
    if lab.password().is_none() {
        return;
    }
    let mut master = Probing::start(lab.node(0), None);
    assert_eq!(master.until_failed().await, "role: refused (noauth)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_without_role_falls_back_to_info() {
    let lab = lab(1);
    let user = [
        "probe",
        "on",
        ">probe-pw",
        "+ping",
        "+info",
        "+client|setname",
        "-role",
    ];
    for node in lab.nodes() {
        let mut cmd = vec!["ACL", "SETUSER"];
        cmd.extend(user);
        node.cmd(&cmd).expect("acl setuser");
    }
    let auth = Credentials {
        username: Some("probe".into()),
        password: Secret::new("probe-pw"),
    };
    let mut master = Probing::start(lab.node(0), Some(auth.clone()));
    let mut replica = Probing::start(lab.node(1), Some(auth));
    master.until_is(MASTER).await;
    replica.until_is(REPLICA).await;
    assert!(
        master.seen.iter().all(|o| *o == MASTER),
        "{:?}",
        master.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_fails_then_answers_after_cont() {
    let lab = lab(0);
    let node = lab.node(0);
    let mut master = Probing::start(node, credentials(&lab));
    master.until_is(MASTER).await;

    node.stop();
    let reason = master.until_failed().await;
    assert!(reason.ends_with("timed out"), "{reason}");

    node.cont();
    master.until_is(MASTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_fails_then_answers_after_restart() {
    let lab = lab(0);
    let node = lab.node(0);
    let mut master = Probing::start(node, credentials(&lab));
    master.until_is(MASTER).await;

    node.kill();
    let reason = master.until_failed().await;
    assert!(
        reason.starts_with("connect: ") || reason.contains("closed") || reason.contains("reset"),
        "{reason}"
    );

    node.restart().expect("restart");
    master.until_is(MASTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_replica_reports_master() {
    let lab = lab(1);
    let mut replica = Probing::start(lab.node(1), credentials(&lab));
    replica.until_is(REPLICA).await;
    lab.node(1).promote().expect("promote");
    replica.until_is(MASTER).await;
}
