//! Sentinel failover end to end: a lab of 1 master, 2 replicas and 3 sentinels
//! (down-after 1000 ms, quorum 2), the proxy in-process following them.
//!
//! What is covered: `kill -9`, `SIGSTOP` / `SIGCONT` and `SENTINEL FAILOVER` of
//! the master under a writer (the route follows the sentinel majority, writes
//! resume, no acknowledged write is lost where Redis itself keeps it, no session
//! on the old master after the switch); the old master restarted with its
//! original config (never routed while it wrongly claims master); a sentinel
//! minority (no new master adopted, even a hand-promoted one); every node down
//! then back; nodes discovered from Sentinel alone.
//!
//! The writer sends `MULTI; INCR counter; RPUSH acked <seq>; EXEC` every 10 ms
//! through the proxy (a fresh connection after any error) and records, per
//! acknowledged write, its sequence number, the counter value, the port of the
//! node that answered (`INFO server` once per connection: the proxy is L4, so a
//! connection stays on one node) and when. The `acked` list on the final master
//! tells exactly which acknowledged writes survived.
//!
//! Every wait is a poll or a channel wait bounded by a deadline; durations are
//! printed (`--no-capture`), never asserted.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyway::Proxy;
use keyway_config::NodeAddr;
use keyway_tests::{
    Lab, RouteLog, SENTINEL_DEADLINE, TimedRoute, Tuning, addrs, assert_eventually,
    assert_eventually_within, client, config, held_then_closed, info_field, on_lab, on_lab_timed,
    proxy_on_master, proxy_routed_to, raw_session_on, read_until_closed, sentinel_toml,
    server_port, start_sentinel_lab, wait_route, within,
};
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The writer's pace: one write every 10 ms, as in the failover benchmark.
const PACE: Duration = Duration::from_millis(10);
/// How long the writer waits for one reply before it counts a failure and
/// reconnects.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a connect through the proxy may take: longer than any `hold` here,
/// so a held client is served or closed by the proxy, not given up on by us.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Timeout of one direct `ROLE` poll of a lab node.
const ROLE_TIMEOUT: Duration = Duration::from_millis(500);
const COUNTER: &str = "counter";
const ACKED: &str = "acked";
/// Why a held client must get no reply in these tests.
const NO_MASTER: &str = "no master is routable";

/// Probes at 100 ms following the lab's sentinels. `fall` 3: a loaded machine
/// missing two 100 ms probes in a row does not drop the route.
fn tuning(lab: &Lab) -> Tuning {
    Tuning {
        interval: "100ms",
        timeout: "100ms",
        fall: 3,
        extra: sentinel_toml(lab),
        ..Tuning::default()
    }
}

/// 1 master, 2 replicas, 3 sentinels, started off the runtime.
async fn start_lab() -> Arc<Lab> {
    start_sentinel_lab(2, 3).await
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn ms_between(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(from.duration_since(to).as_secs_f64() * 1000.0),
    }
}

/// A fresh connection through the proxy (one session), with a reply timeout,
/// and the port of the node it landed on.
async fn fresh(client: &redis::Client) -> redis::RedisResult<(MultiplexedConnection, u16)> {
    let connect = tokio::time::timeout(CONNECT_WAIT, client.get_multiplexed_async_connection());
    let mut con = match connect.await {
        Ok(con) => con?,
        Err(_) => {
            return Err(
                io::Error::new(io::ErrorKind::TimedOut, "connect through the proxy").into(),
            );
        }
    };
    con.set_response_timeout(REPLY_TIMEOUT);
    let port = server_port(&mut con).await?;
    Ok((con, port))
}

/// The first element of the node's `ROLE`, asked directly; `None` when it does
/// not answer.
async fn role_of(lab: &Arc<Lab>, node: SocketAddr) -> Option<String> {
    on_lab(lab, move |lab| {
        let node = lab.node_by_addr(node).expect("a lab node");
        node.role_within(ROLE_TIMEOUT).ok()
    })
    .await
}

/// `INFO replication` of the node, asked directly.
async fn replication_of(lab: &Arc<Lab>, node: SocketAddr) -> Option<String> {
    on_lab(lab, move |lab| {
        let node = lab.node_by_addr(node).expect("a lab node");
        node.info("replication").ok()
    })
    .await
}

/// Waits until a majority of the live sentinels names a master other than
/// `from`, and returns it.
async fn sentinel_switch(lab: &Arc<Lab>, from: SocketAddr) -> SocketAddr {
    on_lab(lab, move |lab| {
        lab.wait_master_switch(from, SENTINEL_DEADLINE)
    })
    .await
    .unwrap_or_else(|e| panic!("Sentinel did not name a new master: {e}"))
}

/// What a majority of the live sentinels names now.
async fn sentinel_master(lab: &Arc<Lab>) -> Option<SocketAddr> {
    on_lab(lab, |lab| lab.sentinel_master()).await
}

/// Waits until the proxy routes to `node` and `node`'s own ROLE says master.
async fn wait_route_to_master(proxy: &Proxy, lab: &Arc<Lab>, node: SocketAddr) {
    assert_eventually!(
        proxy.route("redis") == Some(NodeAddr(node))
            && role_of(lab, node).await.as_deref() == Some("master"),
        "route is {:?}, expected {node} with ROLE master",
        proxy.route("redis")
    );
}

/// The value of one metric series (`name{labels}`) in the proxy's metrics.
fn metric(proxy: &Proxy, series: &str) -> f64 {
    let text = proxy.metrics().encode();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{series} not in the metrics:\n{text}"))
}

/// When the route was first seen off `from` at or after `since`.
fn route_left(log: &[TimedRoute], from: SocketAddr, since: Instant) -> Option<Instant> {
    log.iter()
        .find(|(at, route)| *at >= since && *route != Some(from))
        .map(|(at, _)| *at)
}

/// When the route was first seen on `to` at or after `since`.
fn route_reached(log: &[TimedRoute], to: SocketAddr, since: Instant) -> Option<Instant> {
    log.iter()
        .find(|(at, route)| *at >= since && *route == Some(to))
        .map(|(at, _)| *at)
}

/// Asserts that from `since` on the route was only ever `None` or `allowed`.
fn assert_routes_only(log: &[TimedRoute], since: Instant, allowed: SocketAddr) {
    let wrong: Vec<_> = log
        .iter()
        .filter(|(at, route)| *at >= since && route.is_some_and(|r| r != allowed))
        .map(|(at, route)| (at.duration_since(since), *route))
        .collect();
    assert!(
        wrong.is_empty(),
        "after the switch the route was another node than {allowed}: {wrong:?}"
    );
}

/// When a replica's `ROLE` first said master, and which one (see
/// [`watch_promotion`]).
type PromotionWatch = JoinHandle<Option<(Instant, SocketAddr)>>;

/// Polls the `ROLE` of `candidates` until one says master: when and which.
/// Started before the fault, it times the promotion to within a few ms.
fn watch_promotion(lab: Arc<Lab>, candidates: Vec<SocketAddr>) -> PromotionWatch {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + SENTINEL_DEADLINE;
        while Instant::now() < deadline {
            for addr in &candidates {
                let node = lab.node_by_addr(*addr).expect("a lab node");
                if node
                    .role_within(Duration::from_millis(200))
                    .is_ok_and(|r| r == "master")
                {
                    return Some((Instant::now(), *addr));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    })
}

/// A task that loops until told to stop: the writer's and the sampler's.
struct Background {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Background {
    /// Spawns `run(stop)`; `run` must return soon after `stop` is set.
    fn spawn<F, Fut>(run: F) -> Background
    where
        F: FnOnce(Arc<AtomicBool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(Arc::clone(&stop)));
        Background { stop, task }
    }

    /// Sets `stop` and waits (within `DEADLINE`) for the task to end.
    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        within(what, self.task).await.expect("background task");
    }
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy)]
struct Ack {
    /// The writer's sequence number, pushed to the `acked` list.
    seq: u64,
    /// What `INCR counter` returned.
    counter: i64,
    /// The port of the node that answered.
    port: u16,
    /// When the reply arrived.
    at: Instant,
}

#[derive(Debug, Default)]
struct WriterLog {
    acks: Vec<Ack>,
    /// Writes sent whose outcome is unknown (error or timeout): each may or may
    /// not have been applied.
    unknown: u64,
    /// Connections through the proxy that failed before a write was sent.
    connect_failures: u64,
}

/// The application: writes every `PACE` through the proxy, reconnecting on error.
struct Writer {
    log: Arc<Mutex<WriterLog>>,
    task: Background,
}

impl Writer {
    fn start(client: redis::Client) -> Writer {
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let out = Arc::clone(&log);
        let task = Background::spawn(|stop| write_loop(client, out, stop));
        Writer { log, task }
    }

    fn acks(&self) -> usize {
        self.log.lock().expect("writer log").acks.len()
    }

    fn acks_on(&self, port: u16) -> usize {
        let log = self.log.lock().expect("writer log");
        log.acks.iter().filter(|a| a.port == port).count()
    }

    async fn finish(self) -> WriterLog {
        self.task.finish("the writer stops").await;
        std::mem::take(&mut *self.log.lock().expect("writer log"))
    }
}

async fn write_loop(client: redis::Client, log: Arc<Mutex<WriterLog>>, stop: Arc<AtomicBool>) {
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Ok((mut con, port)) = fresh(&client).await else {
            log.lock().expect("writer log").connect_failures += 1;
            tokio::time::sleep(PACE).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            seq += 1;
            let reply: redis::RedisResult<(i64, i64)> = redis::pipe()
                .atomic()
                .incr(COUNTER, 1)
                .rpush(ACKED, seq)
                .query_async(&mut con)
                .await;
            let acknowledged = {
                let mut log = log.lock().expect("writer log");
                match reply {
                    Ok((counter, _)) => {
                        log.acks.push(Ack {
                            seq,
                            counter,
                            port,
                            at: Instant::now(),
                        });
                        true
                    }
                    Err(_) => {
                        log.unknown += 1;
                        false
                    }
                }
            };
            if !acknowledged {
                break;
            }
            tokio::time::sleep(PACE).await;
        }
    }
}

/// The counter and the acknowledged sequence numbers kept by `node`, read directly.
async fn final_state(lab: &Arc<Lab>, node: SocketAddr) -> (i64, Vec<u64>) {
    on_lab(lab, move |lab| {
        let node = lab.node_by_addr(node).expect("a lab node");
        let counter = node.cmd(&["GET", COUNTER]).expect("GET counter");
        let counter = counter
            .as_str()
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("counter on {}: {counter:?}", node.name()));
        let list = node.cmd(&["LRANGE", ACKED, "0", "-1"]).expect("LRANGE");
        let seqs = list
            .as_array()
            .unwrap_or_else(|| panic!("LRANGE on {}: {list:?}", node.name()))
            .iter()
            .map(|item| {
                item.as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("a sequence number")
            })
            .collect();
        (counter, seqs)
    })
    .await
}

/// Checks the state a writer left on the final master; returns the
/// acknowledged writes that are missing from it.
fn check_final_state(log: &WriterLog, counter: i64, seqs: &[u64]) -> Vec<Ack> {
    // INCR and RPUSH run in one MULTI: the node's state must agree with itself.
    assert_eq!(
        seqs.len() as i64,
        counter,
        "the acked list and the counter disagree"
    );
    let present: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        present.len(),
        seqs.len(),
        "a sequence number was applied twice"
    );
    log.acks
        .iter()
        .filter(|a| !present.contains(&a.seq))
        .copied()
        .collect()
}

/// Opens fresh connections through the proxy back to back and records the
/// port each one landed on.
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, u16)>>>,
    failures: Arc<AtomicU64>,
    task: Background,
}

impl Sampler {
    fn start(client: redis::Client) -> Sampler {
        let samples: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
        let failures = Arc::new(AtomicU64::new(0));
        let (out, failed) = (Arc::clone(&samples), Arc::clone(&failures));
        let task = Background::spawn(|stopped| async move {
            while !stopped.load(Ordering::SeqCst) {
                match fresh(&client).await {
                    Ok((_, port)) => out.lock().expect("samples").push((Instant::now(), port)),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Sampler {
            samples,
            failures,
            task,
        }
    }

    /// Sessions that landed on `port` so far.
    fn on(&self, port: u16) -> usize {
        let samples = self.samples.lock().expect("samples");
        samples.iter().filter(|(_, p)| *p == port).count()
    }

    async fn finish(self) -> (Vec<(Instant, u16)>, u64) {
        self.task.finish("the sampler stops").await;
        let samples = std::mem::take(&mut *self.samples.lock().expect("samples"));
        (samples, self.failures.load(Ordering::SeqCst))
    }
}

/// What an old master that came back (resumed or restarted) did until
/// Sentinel converted it to a replica.
struct Conversion {
    /// Its own `ROLE` said master at some point.
    claimed_master: bool,
    /// When the proxy first reported it as a conflicting master.
    conflict_seen: Option<Instant>,
    /// When its `ROLE` first said `slave`.
    converted: Instant,
}

/// Waits (within `SENTINEL_DEADLINE`) until the old master `old` says it is a
/// replica; meanwhile it must never be routed, and no fresh session of
/// `sampler` may land on it. `what` names the old master in the failure.
async fn wait_converted(
    proxy: &Proxy,
    lab: &Arc<Lab>,
    sampler: &Sampler,
    old: SocketAddr,
    what: &str,
) -> Conversion {
    let mut claimed_master = false;
    let mut conflict_seen = None;
    assert_eventually_within!(
        SENTINEL_DEADLINE,
        {
            assert_ne!(
                proxy.route("redis"),
                Some(NodeAddr(old)),
                "routed to the old master"
            );
            assert_eq!(
                sampler.on(old.port()),
                0,
                "a new session landed on the old master"
            );
            let status = proxy.status("redis").expect("service redis");
            if conflict_seen.is_none() && status.conflicts.contains(&NodeAddr(old)) {
                conflict_seen = Some(Instant::now());
            }
            let role = role_of(lab, old).await;
            claimed_master |= role.as_deref() == Some("master");
            role.as_deref() == Some("slave")
        },
        "{what} {old} is not a replica yet"
    );
    Conversion {
        claimed_master,
        conflict_seen,
        converted: Instant::now(),
    }
}

/// A failover under a writer: the lab, the proxy routed to the initial master
/// (`old`), the replicas Sentinel may promote, and every route from the start.
struct Failover {
    lab: Arc<Lab>,
    proxy: Proxy,
    old: SocketAddr,
    replicas: Vec<SocketAddr>,
    route_log: RouteLog,
}

impl Failover {
    async fn start() -> Failover {
        let lab = start_lab().await;
        let proxy = proxy_on_master(&lab, &tuning(&lab)).await;
        let old = lab.node(0).addr();
        let replicas = vec![lab.node(1).addr(), lab.node(2).addr()];
        let route_log = RouteLog::record(&proxy, "redis");
        Failover {
            lab,
            proxy,
            old,
            replicas,
            route_log,
        }
    }

    /// Starts the writer and waits for its first writes on the old master;
    /// `before` names the fault in the failure.
    async fn writer(&self, before: &str) -> Writer {
        let writer = Writer::start(client(&self.proxy, &self.lab));
        assert_eventually!(
            writer.acks_on(self.old.port()) >= 20,
            "writes through the proxy before {before}: {}",
            writer.acks()
        );
        writer
    }

    /// Starts timing the promotion, then injects `fault`: when it was
    /// injected, and the promotion watch.
    async fn fault<F>(&self, fault: F) -> (Instant, PromotionWatch)
    where
        F: FnOnce(&Lab) + Send + 'static,
    {
        let promotion = watch_promotion(Arc::clone(&self.lab), self.replicas.clone());
        (on_lab_timed(&self.lab, fault).await, promotion)
    }

    /// Waits until the sentinels name a replica, the proxy routes to it, it
    /// says master, and the writer's writes land there; returns it.
    async fn switched(&self, writer: &Writer) -> SocketAddr {
        let new = sentinel_switch(&self.lab, self.old).await;
        assert!(
            self.replicas.contains(&new),
            "Sentinel named {new}, not a replica"
        );
        wait_route_to_master(&self.proxy, &self.lab, new).await;
        assert_eventually!(
            writer.acks_on(new.port()) >= 30,
            "writes through the proxy on the new master {new}: {}",
            writer.acks_on(new.port())
        );
        new
    }

    /// Stops the writer and the promotion watch, checks the new master's
    /// final state ([`check_final_state`]), and that once the route left the
    /// old master it went only to `new`.
    async fn finish(
        &self,
        writer: Writer,
        promotion: PromotionWatch,
        new: SocketAddr,
        fault: Instant,
    ) -> Outcome {
        let log = writer.finish().await;
        let promoted = within("promotion watch", promotion)
            .await
            .expect("promotion watch");
        let (counter, seqs) = final_state(&self.lab, new).await;
        let route_log = self.route_log.timed();
        let left = route_left(&route_log, self.old, fault).expect("the route left the old master");
        assert_routes_only(&route_log, left, new);
        let missing = check_final_state(&log, counter, &seqs);
        let timings = timings(&log, &route_log, new, fault, promoted);
        Outcome {
            log,
            counter,
            missing,
            left,
            timings,
        }
    }
}

/// What a failover under the writer left behind.
struct Outcome {
    log: WriterLog,
    /// The new master's counter.
    counter: i64,
    /// Acknowledged writes missing on the new master (see [`check_final_state`]).
    missing: Vec<Ack>,
    /// When the route first left the old master after the fault.
    left: Instant,
    timings: Timings,
}

/// What a failover under the writer measured, printed by each test.
struct Timings {
    /// First acknowledged write on the new master.
    first_good: Instant,
    /// The promoted replica's ROLE first said master.
    promoted: Option<Instant>,
    /// The route first named the new master.
    routed: Instant,
}

fn timings(
    log: &WriterLog,
    route_log: &[TimedRoute],
    new: SocketAddr,
    fault: Instant,
    promotion: Option<(Instant, SocketAddr)>,
) -> Timings {
    let first_good = log
        .acks
        .iter()
        .find(|a| a.port == new.port() && a.at >= fault)
        .map(|a| a.at)
        .expect("a write acknowledged by the new master");
    let routed = route_reached(route_log, new, fault).expect("the route reached the new master");
    let promoted = promotion.and_then(|(at, node)| (node == new).then_some(at));
    Timings {
        first_good,
        promoted,
        routed,
    }
}

fn print_timings(scenario: &str, fault: &str, at: Instant, t: &Timings, log: &WriterLog) {
    println!(
        "{scenario}: {fault} -> first good write: {:.0} ms",
        ms_between(at, t.first_good)
    );
    match t.promoted {
        Some(p) => {
            println!(
                "{scenario}: {fault} -> promotion (new master's ROLE says master): {:.0} ms",
                ms_between(at, p)
            );
            println!(
                "{scenario}: promotion -> route on the new master: {:+.0} ms",
                ms_between(p, t.routed)
            );
            println!(
                "{scenario}: promotion -> first good write: {:+.0} ms",
                ms_between(p, t.first_good)
            );
        }
        None => println!("{scenario}: promotion not observed by the ROLE poll"),
    }
    println!(
        "{scenario}: writes acknowledged {}, outcome unknown {}, failed connects {}",
        log.acks.len(),
        log.unknown,
        log.connect_failures
    );
}

// ---------------------------------------------------------------------------
// Failovers under a writer
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_kill_master() {
    let f = Failover::start().await;
    let old = f.old;
    let writer = f.writer("the kill").await;

    let (killed, promotion) = f.fault(|lab| lab.node(0).kill()).await;
    let new = f.switched(&writer).await;

    let Outcome {
        log,
        counter,
        missing,
        left,
        timings: t,
    } = f.finish(writer, promotion, new, killed).await;
    for ack in &log.acks {
        assert!(
            ack.port == old.port() || ack.port == new.port(),
            "a write was acknowledged by {}, neither master: {ack:?}",
            ack.port
        );
    }
    let late: Vec<&Ack> = log
        .acks
        .iter()
        .filter(|a| a.port == old.port() && a.at >= left)
        .collect();
    assert!(
        late.is_empty(),
        "sessions on the dead master after the route moved: {late:?}"
    );
    // Every write acknowledged once the route moved is on the new master, in order.
    let after: Vec<&Ack> = log.acks.iter().filter(|a| a.at >= left).collect();
    assert!(
        after.len() >= 30,
        "writes after the switch: {}",
        after.len()
    );
    let lost_after: Vec<&Ack> = missing.iter().filter(|a| a.at >= left).collect();
    assert!(
        lost_after.is_empty(),
        "writes acknowledged after the route moved are missing on the new master: {lost_after:?}"
    );
    assert!(
        after.windows(2).all(|w| w[0].counter < w[1].counter),
        "the counter went backwards after the switch"
    );
    assert!(after.iter().all(|a| a.counter <= counter));

    print_timings("kill -9 master", "kill", killed, &t, &log);
    println!(
        "kill -9 master: acknowledged before the kill, lost to asynchronous replication: {}",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_stop_master() {
    let f = Failover::start().await;
    let (lab, proxy, old) = (&f.lab, &f.proxy, f.old);
    let writer = f.writer("the stop").await;

    let (stopped, promotion) = f.fault(|lab| lab.node(0).stop()).await;
    let new = f.switched(&writer).await;

    // The old master wakes up still claiming master, until Sentinel converts it.
    let sampler = Sampler::start(client(proxy, lab));
    let resumed = on_lab_timed(lab, |lab| lab.node(0).cont()).await;
    let conversion = wait_converted(proxy, lab, &sampler, old, "the old master").await;
    assert_eventually_within!(
        SENTINEL_DEADLINE,
        replication_of(lab, old)
            .await
            .is_some_and(|info| info_field(&info, "master_port") == Some(&new.port().to_string())),
        "the old master {old} does not replicate from {new}"
    );

    let (samples, sample_failures) = sampler.finish().await;
    let out = f.finish(writer, promotion, new, stopped).await;
    let (log, left) = (&out.log, out.left);
    let wrong: Vec<&(Instant, u16)> = samples.iter().filter(|(_, p)| *p != new.port()).collect();
    assert!(
        wrong.is_empty(),
        "fresh sessions after the switch landed elsewhere than {new}: {wrong:?}"
    );
    assert!(!samples.is_empty(), "no fresh session succeeded");
    let late: Vec<&Ack> = log
        .acks
        .iter()
        .filter(|a| a.port != new.port() && a.at >= left)
        .collect();
    assert!(
        late.is_empty(),
        "writes acknowledged by another node than {new} after the route moved: {late:?}"
    );
    let lost_after: Vec<&Ack> = out.missing.iter().filter(|a| a.at >= left).collect();
    assert!(
        lost_after.is_empty(),
        "writes acknowledged after the route moved are missing on the new master: {lost_after:?}"
    );

    print_timings("SIGSTOP master", "stop", stopped, &out.timings, log);
    println!(
        "SIGSTOP master: acknowledged before the stop, lost to asynchronous replication: {}",
        out.missing.len()
    );
    println!(
        "SIGSTOP master: after SIGCONT the old master claimed master: {}, \
         seen by the proxy as a conflict: {}, converted to replica after {:.1} s",
        conversion.claimed_master,
        conversion.conflict_seen.is_some(),
        conversion.converted.duration_since(resumed).as_secs_f64()
    );
    println!(
        "SIGSTOP master: fresh sessions meanwhile: {} all on the new master, {} failed",
        samples.len(),
        sample_failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_graceful_failover() {
    let f = Failover::start().await;
    let (lab, proxy, old) = (&f.lab, &f.proxy, f.old);

    // An idle session opened before the failover, on the old master.
    let mut idle = raw_session_on(proxy, lab, old).await;
    let lab2 = Arc::clone(lab);
    let idle_closed = tokio::spawn(async move {
        let (got, _) = read_until_closed(&mut idle).await;
        let at = Instant::now();
        // Sentinel kills the clients of the old master in the same MULTI that
        // demotes it: if the old master still says master, the proxy cut it.
        let role = role_of(&lab2, old).await;
        (at, got, role)
    });

    let writer = f.writer("the failover").await;
    let (asked, promotion) = f
        .fault(|lab| lab.failover().expect("SENTINEL FAILOVER accepted"))
        .await;
    let new = f.switched(&writer).await;

    let (closed, got, role_at_close) = within("the idle session is closed", idle_closed)
        .await
        .expect("idle session task");
    assert!(
        got.is_empty(),
        "the old session received {:?} instead of being closed",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        role_at_close.as_deref(),
        Some("master"),
        "the old session was closed only when Sentinel demoted the old master, not at the switch"
    );
    assert!(
        metric(
            proxy,
            "keyway_sessions_closed_total{service=\"redis\",reason=\"cut\"}"
        ) >= 1.0,
        "no session was cut"
    );

    let Outcome {
        log,
        counter,
        missing,
        timings: t,
        ..
    } = f.finish(writer, promotion, new, asked).await;

    // No acknowledged write is lost: every one is in the new master's list, its
    // counter value is at most the final one, no value was handed out twice
    // (a lost write makes the counter go back and repeat), and the counter
    // exceeds the acknowledged writes only by writes whose reply never came.
    println!(
        "SENTINEL FAILOVER: acknowledged writes lost: {} (expected 0)",
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let values: BTreeSet<i64> = log.acks.iter().map(|a| a.counter).collect();
    assert_eq!(
        values.len(),
        log.acks.len(),
        "a counter value was acknowledged twice"
    );
    assert!(log.acks.iter().all(|a| a.counter <= counter));
    let extra = counter - log.acks.len() as i64;
    assert!(
        (0..=log.unknown as i64).contains(&extra),
        "final counter {counter}, {} acknowledged, {} with unknown outcome",
        log.acks.len(),
        log.unknown
    );

    print_timings("SENTINEL FAILOVER", "failover", asked, &t, &log);
    println!(
        "SENTINEL FAILOVER: final counter {counter} = {} acknowledged + {extra} applied without a reply",
        log.acks.len()
    );
    println!(
        "SENTINEL FAILOVER: old idle session closed {:+.0} ms after the promotion (old master still master)",
        t.promoted.map_or(f64::NAN, |p| ms_between(p, closed))
    );
}

// ---------------------------------------------------------------------------
// Two masters, no majority, no master
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_master_restarted() {
    let lab = start_lab().await;
    let proxy = proxy_on_master(&lab, &tuning(&lab)).await;
    let old = lab.node(0).addr();

    on_lab(&lab, |lab| lab.node(0).kill()).await;
    let new = sentinel_switch(&lab, old).await;
    wait_route_to_master(&proxy, &lab, new).await;

    let route_log = RouteLog::record(&proxy, "redis");
    let sampler = Sampler::start(client(&proxy, &lab));
    let restarted = on_lab(&lab, |lab| {
        lab.node(0).restart().expect("the old master restarts");
        Instant::now()
    })
    .await;
    let Conversion {
        claimed_master,
        conflict_seen,
        converted,
    } = wait_converted(&proxy, &lab, &sampler, old, "the restarted old master").await;
    let (samples, sample_failures) = sampler.finish().await;
    let route_log = route_log.timed();

    assert!(
        claimed_master,
        "the restarted old master never claimed master: the scenario did not happen"
    );
    assert!(
        conflict_seen.is_some(),
        "the proxy never saw the restarted old master claim master"
    );
    assert_routes_only(&route_log, restarted, new);
    let wrong: Vec<&(Instant, u16)> = samples.iter().filter(|(_, p)| *p != new.port()).collect();
    assert!(
        wrong.is_empty(),
        "fresh sessions landed elsewhere than {new}: {wrong:?}"
    );
    let during: usize = samples.iter().filter(|(at, _)| *at < converted).count();
    assert!(
        during >= 10,
        "too few fresh sessions while two nodes claimed master: {during}"
    );
    // It ends as a replica of the master the sentinels name.
    let named = sentinel_master(&lab).await;
    assert_eq!(named, Some(new), "the sentinels name another master");
    assert_eq!(proxy.route("redis"), Some(NodeAddr(new)));

    println!(
        "old master restarted: it claimed master for {:.1} s (until Sentinel converted it); \
         the proxy saw the conflict {:.0} ms after the restart",
        converted.duration_since(restarted).as_secs_f64(),
        conflict_seen.map_or(f64::NAN, |c| ms_between(restarted, c))
    );
    println!(
        "old master restarted: time routed to two masters: 0 s; fresh sessions meanwhile: \
         {} on the new master, 0 on the old one, {} failed",
        samples.len(),
        sample_failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_minority() {
    let lab = start_lab().await;
    // `fall` 5: with no sentinel majority a lost route is never re-adopted, so a
    // loaded machine must not drop the master on a few slow probes.
    let tuning = Tuning {
        hold: "1s",
        fall: 5,
        ..tuning(&lab)
    };
    let proxy = proxy_on_master(&lab, &tuning).await;
    let master = lab.node(0).addr();
    let claimant = lab.node(1).addr();
    assert_eventually!(
        {
            let status = proxy.status("redis").expect("service redis");
            status.sentinel_master == Some(NodeAddr(master))
                && status.sentinels.iter().all(|s| s.reachable)
        },
        "sentinels: {:?}",
        proxy.status("redis").map(|s| s.sentinels)
    );
    let route_log = RouteLog::record(&proxy, "redis");

    // Two of three sentinels gone: no majority, but the master still says master.
    on_lab(&lab, |lab| {
        lab.sentinel(1).kill();
        lab.sentinel(2).kill();
    })
    .await;
    assert_eventually!(
        {
            let status = proxy.status("redis").expect("service redis");
            status.sentinel_master.is_none()
                && status.sentinels.iter().filter(|s| !s.reachable).count() == 2
        },
        "the proxy still sees a sentinel majority: {:?}",
        proxy.status("redis")
    );
    assert_eq!(
        proxy.route("redis"),
        Some(NodeAddr(master)),
        "route kept without a majority"
    );
    let (mut con, port) = fresh(&client(&proxy, &lab))
        .await
        .expect("a client through the proxy");
    assert_eq!(port, master.port(), "served by the current master");
    let _: i64 = redis::cmd("INCR")
        .arg("minority")
        .query_async(&mut con)
        .await
        .expect("INCR on the current master");
    drop(con);
    let routes_before_kill = route_log.timed();
    assert!(
        routes_before_kill.iter().all(|(_, r)| *r == Some(master)),
        "the route left the master while it said master: {routes_before_kill:?}"
    );

    // The master dies; the one sentinel left cannot fail over (quorum 2), and a
    // replica promoted by hand has no majority behind it.
    let killed = on_lab_timed(&lab, |lab| lab.node(0).kill()).await;
    wait_route(&proxy, None).await;
    on_lab(&lab, |lab| lab.node(1).promote())
        .await
        .expect("REPLICAOF NO ONE on node-1");
    let claims = || {
        let status = proxy.status("redis").expect("service redis");
        status
            .nodes
            .iter()
            .find(|n| n.addr == NodeAddr(claimant))
            .filter(|n| n.role.is_some_and(|r| r.is_writable_master()) && n.last_error.is_none())
            .map(|n| n.probes.total)
    };
    assert_eventually!(
        claims().is_some(),
        "the proxy does not see {claimant} claim master: {:?}",
        proxy.status("redis")
    );
    // Ten more probes of the claimant, each answering master: still no route.
    let seen_at = claims().expect("claimant");
    assert_eventually!(
        {
            assert_eq!(
                proxy.route("redis"),
                None,
                "a master was adopted without a majority"
            );
            claims().is_some_and(|total| total >= seen_at + 10)
        },
        "the claimant {claimant} is not probed: {:?}",
        proxy.status("redis")
    );
    let timeouts_before = metric(&proxy, "keyway_hold_timeouts_total{service=\"redis\"}");
    let held = held_then_closed(&proxy, &lab, NO_MASTER).await;
    assert!(
        metric(&proxy, "keyway_hold_timeouts_total{service=\"redis\"}") > timeouts_before,
        "the client was not closed by the hold timeout"
    );
    assert_eq!(proxy.route("redis"), None);

    let route_log = route_log.timed();
    let after_kill: Vec<_> = route_log
        .iter()
        .filter(|(at, r)| *at >= killed && r.is_some())
        .collect();
    assert!(
        after_kill.iter().all(|(_, r)| *r == Some(master)),
        "a new master was adopted without a sentinel majority: {after_kill:?}"
    );
    println!(
        "sentinel minority: route dropped {:.0} ms after the master's kill; a held client was closed after {:.0} ms",
        route_left(&route_log, master, killed).map_or(f64::NAN, |at| ms_between(killed, at)),
        held.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_then_back() {
    let lab = start_lab().await;
    let tuning = Tuning {
        hold: "1s",
        ..tuning(&lab)
    };
    let proxy = proxy_on_master(&lab, &tuning).await;

    on_lab(&lab, |lab| lab.nodes().iter().for_each(|n| n.kill())).await;
    wait_route(&proxy, None).await;
    let held = held_then_closed(&proxy, &lab, NO_MASTER).await;

    // Back, the master first: it comes back as a master (empty), the replicas
    // as its replicas.
    let restarted = on_lab_timed(&lab, |lab| {
        for node in lab.nodes() {
            node.restart()
                .unwrap_or_else(|e| panic!("{} restarts: {e}", node.name()));
        }
    })
    .await;
    let mut named: Option<SocketAddr>;
    assert_eventually!(
        {
            named = sentinel_master(&lab).await;
            match named {
                Some(node) => {
                    proxy.route("redis") == Some(NodeAddr(node))
                        && role_of(&lab, node).await.as_deref() == Some("master")
                }
                None => false,
            }
        },
        "route {:?}, sentinels name {named:?}",
        proxy.route("redis")
    );
    let routed = Instant::now();
    let named = named.expect("a master named by the sentinels");

    let (mut con, port) = fresh(&client(&proxy, &lab))
        .await
        .expect("a client through the proxy");
    assert_eq!(
        port,
        named.port(),
        "served by the master the sentinels name"
    );
    let () = redis::cmd("SET")
        .arg("back")
        .arg("again")
        .query_async(&mut con)
        .await
        .expect("SET through the proxy");
    let got: String = redis::cmd("GET")
        .arg("back")
        .query_async(&mut con)
        .await
        .expect("GET through the proxy");
    assert_eq!(got, "again");

    println!(
        "all nodes down: a held client was closed after {:.0} ms; after the restarts the route \
         came back to {named} within {:.0} ms",
        held.as_secs_f64() * 1000.0,
        ms_between(restarted, routed)
    );
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_discovered_from_sentinel() {
    let lab = start_lab().await;
    // No static node at all: only [service.sentinel].
    let cfg = config(&lab, &[], &tuning(&lab));
    assert!(
        cfg.services[0].nodes.is_empty(),
        "the config has static nodes"
    );
    let master = lab.node(0).addr();
    let proxy = proxy_routed_to(&cfg, master).await;

    let expected: BTreeSet<NodeAddr> = addrs(&lab).into_iter().map(NodeAddr).collect();
    assert_eventually!(
        {
            let status = proxy.status("redis").expect("service redis");
            let known: BTreeSet<NodeAddr> = status.nodes.iter().map(|n| n.addr).collect();
            known == expected && status.nodes.iter().all(|n| n.role.is_some())
        },
        "nodes known to the proxy: {:?}, expected {expected:?}",
        proxy
            .status("redis")
            .map(|s| s.nodes.iter().map(|n| (n.addr, n.role)).collect::<Vec<_>>())
    );
    let (_, port) = fresh(&client(&proxy, &lab))
        .await
        .expect("a client through the proxy");
    assert_eq!(port, master.port(), "served by the master");
}
