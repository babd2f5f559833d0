//! Reload in place, against a real lab with the proxy in-process.
//!
//! - 100 reloads under continuous load (persistent connections and a fresh
//!   connection per request): no request fails, every acknowledged `INCR` is on
//!   the master, the route never moves or disappears, and the probes keep
//!   running (their counters never reset, and they advance after every reload).
//! - A reload that adds a service makes it serve; one that removes it stops
//!   accepting at once while its open session keeps working, until the drain
//!   timeout closes it.
//! - A reload whose new listener cannot be bound fails and changes nothing.
//! - A drain (SIGTERM) waits for the sessions of a service a reload removed,
//!   like for any other open session.
//!
//! Every wait polls with `DEADLINE`; nothing asserts a duration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keyway::Proxy;
use keyway_config::NodeAddr;
use keyway_tests::{
    DEADLINE, Lab, RouteLog, Tuning, addrs, assert_eventually, auth, auth_ping, client, config,
    endpoint, on_lab, proxy_routed_to, raw_connect, read_until_closed, resp, services_config,
    start_lab, within,
};
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Reads until `lines` CRLF-terminated lines have arrived (enough for simple,
/// integer and error replies, and for a bulk reply counted as two lines).
async fn read_lines(stream: &mut TcpStream, lines: usize) -> std::io::Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.windows(2).filter(|w| w == b"\r\n").count() < lines {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "closed after {:?}",
                    String::from_utf8_lossy(&got).into_owned()
                ),
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// A raw session through `addr`: AUTH then PING, both answered.
async fn raw_session(addr: SocketAddr, lab: &Lab) -> TcpStream {
    let mut s = raw_connect(addr).await;
    s.write_all(&auth_ping(lab))
        .await
        .expect("send AUTH + PING");
    let got = within("AUTH + PING", read_lines(&mut s, 2))
        .await
        .expect("AUTH + PING answered");
    assert_eq!(got, "+OK\r\n+PONG\r\n");
    s
}

/// PING on an open raw session.
async fn ping(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(&resp(&[b"PING"])).await?;
    within("PING", read_lines(s, 1)).await
}

/// PING on an open raw session (`what`) must answer PONG.
async fn assert_pong(s: &mut TcpStream, what: &str) {
    let pong = ping(s)
        .await
        .unwrap_or_else(|e| panic!("PING on {what}: {e}"));
    assert_eq!(pong, "+PONG\r\n", "PING on {what}");
}

/// Whether a new TCP connection to `addr` is refused.
async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Probe totals per node of `service`.
fn probe_totals(proxy: &Proxy, service: &str) -> BTreeMap<NodeAddr, u64> {
    proxy
        .status(service)
        .expect("service exists")
        .nodes
        .iter()
        .map(|n| (n.addr, n.probes.total))
        .collect()
}

/// Every node of `now` has probed more than in `then`.
fn all_advanced(then: &BTreeMap<NodeAddr, u64>, now: &BTreeMap<NodeAddr, u64>) -> bool {
    then.keys().eq(now.keys()) && then.iter().all(|(addr, before)| now[addr] > *before)
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

const KEY: &str = "reload:counter";

/// Shared by the load tasks.
#[derive(Default)]
struct Counters {
    stop: AtomicBool,
    /// Requests answered on persistent connections.
    persistent_ops: AtomicU64,
    /// Requests answered on a connection opened for them.
    fresh_ops: AtomicU64,
    /// `INCR`s the master acknowledged.
    incrs: AtomicU64,
    /// The first failures (all of them are counted in `failed`).
    failures: Mutex<Vec<String>>,
    failed: AtomicU64,
}

impl Counters {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut failures = self.failures.lock().expect("failures");
        if failures.len() < 20 {
            failures.push(what);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// `INCR` then `GET` in a loop on one persistent connection (reconnecting
/// after a failure, which is counted).
async fn persistent_client(client: redis::Client, counters: Arc<Counters>, id: usize) {
    let mut con = None;
    while !counters.stopped() {
        if con.is_none() {
            match tokio::time::timeout(DEADLINE, client.get_multiplexed_async_connection()).await {
                Ok(Ok(c)) => con = Some(c),
                Ok(Err(e)) => {
                    counters.fail(format!("client {id}: connect: {e}"));
                    continue;
                }
                Err(_) => {
                    counters.fail(format!("client {id}: connect timed out"));
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else {
            continue;
        };
        let n: i64 = match tokio::time::timeout(DEADLINE, c.incr(KEY, 1)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                counters.fail(format!("client {id}: INCR: {e}"));
                con = None;
                continue;
            }
            Err(_) => {
                counters.fail(format!("client {id}: INCR timed out"));
                con = None;
                continue;
            }
        };
        counters.incrs.fetch_add(1, Ordering::SeqCst);
        counters.persistent_ops.fetch_add(1, Ordering::SeqCst);
        match tokio::time::timeout(DEADLINE, c.get::<_, i64>(KEY)).await {
            // Read-your-writes on the one master.
            Ok(Ok(v)) if v >= n => {
                counters.persistent_ops.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(v)) => counters.fail(format!("client {id}: GET {v} after INCR {n}")),
            Ok(Err(e)) => {
                counters.fail(format!("client {id}: GET: {e}"));
                con = None;
            }
            Err(_) => {
                counters.fail(format!("client {id}: GET timed out"));
                con = None;
            }
        }
    }
}

/// One request on a new connection: AUTH and the command pipelined, both
/// answers read (`lines` lines in all), then close. Returns the command's answer.
async fn fresh_request(
    addr: SocketAddr,
    auth: &[u8],
    cmd: &[&[u8]],
    lines: usize,
) -> Result<String, String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut req = auth.to_vec();
        req.extend(resp(cmd));
        s.write_all(&req).await.map_err(|e| format!("send: {e}"))?;
        let got = read_lines(&mut s, lines)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let answer = got
            .strip_prefix("+OK\r\n")
            .ok_or_else(|| format!("AUTH answered {got:?}"))?;
        Ok(answer.to_string())
    };
    match tokio::time::timeout(DEADLINE, exchange).await {
        Ok(result) => result,
        Err(_) => Err("timed out".into()),
    }
}

/// `:N\r\n` with N a positive number.
fn is_integer_reply(answer: &str) -> bool {
    answer
        .strip_prefix(':')
        .and_then(|a| a.strip_suffix("\r\n"))
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|n| n > 0)
}

/// `$len\r\nN\r\n` with N a positive number of `len` digits.
fn is_counter_bulk(answer: &str) -> bool {
    let Some((len, rest)) = answer.strip_prefix('$').and_then(|a| a.split_once("\r\n")) else {
        return false;
    };
    let Some(value) = rest.strip_suffix("\r\n") else {
        return false;
    };
    len.parse::<usize>().ok() == Some(value.len()) && value.parse::<i64>().is_ok_and(|n| n > 0)
}

/// `INCR` and `GET`, alternately, each on a connection of its own.
async fn fresh_client(addr: SocketAddr, auth: Vec<u8>, counters: Arc<Counters>, id: usize) {
    let mut incr = true;
    while !counters.stopped() {
        // `+OK` for AUTH, then `:N` for INCR (one line) or `$len` and the
        // digits for GET (two lines).
        let (cmd, lines): (&[&[u8]], usize) = if incr {
            (&[b"INCR", KEY.as_bytes()], 2)
        } else {
            (&[b"GET", KEY.as_bytes()], 3)
        };
        match fresh_request(addr, &auth, cmd, lines).await {
            Ok(answer) if incr && is_integer_reply(&answer) => {
                counters.incrs.fetch_add(1, Ordering::SeqCst);
                counters.fresh_ops.fetch_add(1, Ordering::SeqCst);
            }
            Ok(answer) if !incr && is_counter_bulk(&answer) => {
                counters.fresh_ops.fetch_add(1, Ordering::SeqCst);
            }
            Ok(answer) => counters.fail(format!("fresh client {id}: answered {answer:?}")),
            Err(e) => counters.fail(format!("fresh client {id}: {e}")),
        }
        incr = !incr;
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The `(name, listen)` of [`services_config`] with the one service `redis`.
const REDIS: &[(&str, &str)] = &[("redis", "127.0.0.1:0")];
/// `redis`, and `extra` in front of the same nodes.
const REDIS_AND_EXTRA: &[(&str, &str)] = &[("redis", "127.0.0.1:0"), ("extra", "127.0.0.1:0")];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_100_times_under_load() {
    const PERSISTENT: usize = 6;
    const FRESH: usize = 2;
    const RELOADS: usize = 100;

    let lab = start_lab(1).await;
    let master = lab.node(0).addr();
    // Two valid configurations that differ in the check (so the probers are
    // restarted by each reload) and in the hold timeout.
    let a = config(
        &lab,
        &addrs(&lab),
        &Tuning {
            interval: "100ms",
            timeout: "100ms",
            fall: 3,
            hold: "5s",
            ..Tuning::default()
        },
    );
    let b = config(
        &lab,
        &addrs(&lab),
        &Tuning {
            interval: "150ms",
            timeout: "150ms",
            fall: 3,
            hold: "6s",
            ..Tuning::default()
        },
    );
    assert_ne!(a.services, b.services);
    let mut proxy = proxy_routed_to(&a, master).await;
    let routes = RouteLog::record(&proxy, "redis");
    let route_changes = proxy.status("redis").expect("status").route_changes;

    let counters = Arc::new(Counters::default());
    let mut load = JoinSet::new();
    for id in 0..PERSISTENT {
        load.spawn(persistent_client(
            client(&proxy, &lab),
            Arc::clone(&counters),
            id,
        ));
    }
    for id in 0..FRESH {
        load.spawn(fresh_client(
            endpoint(&proxy),
            auth(&lab),
            Arc::clone(&counters),
            id,
        ));
    }
    // The load is running before the first reload.
    assert_eventually!(
        counters.persistent_ops.load(Ordering::SeqCst) > 0
            && counters.fresh_ops.load(Ordering::SeqCst) > 0,
        "load started (failures: {:?})",
        counters.failures.lock().expect("failures")
    );

    let first_probes = probe_totals(&proxy, "redis");
    let mut last_probes = first_probes.clone();
    for i in 0..RELOADS {
        let next = if i % 2 == 0 { &b } else { &a };
        let persistent_at = counters.persistent_ops.load(Ordering::SeqCst);
        let fresh_at = counters.fresh_ops.load(Ordering::SeqCst);
        let probes_at = probe_totals(&proxy, "redis");

        let summary = proxy.reload(next).await.expect("valid reload");
        assert_eq!(summary.changed, ["redis"], "reload {i}: {summary}");
        assert!(summary.added.is_empty() && summary.removed.is_empty());

        // Each reload overlaps requests of both kinds, and the probes of every
        // node run again after it.
        assert_eventually!(
            counters.persistent_ops.load(Ordering::SeqCst) >= persistent_at + 8
                && counters.fresh_ops.load(Ordering::SeqCst) > fresh_at
                && all_advanced(&probes_at, &probe_totals(&proxy, "redis")),
            "reload {i}: load and probes go on (probes {probes_at:?} -> {:?}, failures {:?})",
            probe_totals(&proxy, "redis"),
            counters.failures.lock().expect("failures")
        );
        // The counters belong to the same monitor: they never reset.
        let now = probe_totals(&proxy, "redis");
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            last_probes.keys().collect::<Vec<_>>()
        );
        for (addr, total) in &now {
            assert!(
                *total >= last_probes[addr],
                "reload {i}: probe count of {addr} went back: {last_probes:?} -> {now:?}"
            );
        }
        last_probes = now;
        let route = proxy.route("redis");
        assert_eq!(route, Some(NodeAddr(master)), "reload {i}: route");
    }
    // And after the last reload the probes still run.
    let end = probe_totals(&proxy, "redis");
    assert_eventually!(
        all_advanced(&end, &probe_totals(&proxy, "redis")),
        "probes run after the reloads: {end:?} -> {:?}",
        probe_totals(&proxy, "redis")
    );
    assert!(all_advanced(&first_probes, &end));

    counters.stop.store(true, Ordering::SeqCst);
    within("load tasks stop", async {
        while let Some(done) = load.join_next().await {
            done.expect("load task");
        }
    })
    .await;

    let failures = counters.failures.lock().expect("failures").clone();
    let failed = counters.failed.load(Ordering::SeqCst);
    assert_eq!(failed, 0, "failed requests, the first ones: {failures:?}");
    let acked = counters.incrs.load(Ordering::SeqCst);
    assert!(acked > 0);
    let on_master = on_lab(&lab, |lab| lab.node(0).cmd(&["GET", KEY]))
        .await
        .expect("GET on the master");
    let on_master: u64 = on_master
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("counter on the master: {on_master:?}"));
    assert_eq!(
        on_master, acked,
        "counter on the master vs acknowledged INCRs"
    );
    eprintln!(
        "{RELOADS} reloads; {acked} INCRs acknowledged; {} persistent and {} fresh-connection \
         requests; probes {first_probes:?} -> {end:?}",
        counters.persistent_ops.load(Ordering::SeqCst),
        counters.fresh_ops.load(Ordering::SeqCst),
    );

    // The route never moved nor disappeared, not even for a moment.
    let status = proxy.status("redis").expect("status");
    assert_eq!(status.route, Some(NodeAddr(master)));
    assert_eq!(
        status.route_changes, route_changes,
        "route changes during reloads"
    );
    let seen = routes.routes();
    assert!(
        seen.iter().all(|r| *r == Some(master)),
        "routes seen during the reloads: {seen:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_a_service() {
    let lab = start_lab(1).await;
    let master = lab.node(0).addr();
    let tuning = Tuning {
        interval: "100ms",
        timeout: "100ms",
        fall: 3,
        ..Tuning::default()
    };
    let one = services_config(&lab, REDIS, &tuning, "30s");
    let two = services_config(&lab, REDIS_AND_EXTRA, &tuning, "30s");
    // Removing "extra" with no grace period for its sessions.
    let one_no_drain = services_config(&lab, REDIS, &tuning, "0s");
    let mut proxy = proxy_routed_to(&one, master).await;
    let mut redis_session = raw_session(endpoint(&proxy), &lab).await;

    // Added: it listens and serves (a client is held until its first route).
    let summary = proxy.reload(&two).await.expect("add a service");
    assert_eq!(summary.added, ["extra"], "{summary}");
    assert_eq!(summary.unchanged, 1, "{summary}");
    let extra = proxy.listen_addr("extra").expect("extra listens");
    let mut session = raw_session(extra, &lab).await;
    assert_eq!(proxy.route("extra"), Some(NodeAddr(master)));

    // Removed (30 s drain): no new client, the open session goes on.
    let summary = proxy.reload(&one).await.expect("remove a service");
    assert_eq!(summary.removed, ["extra"], "{summary}");
    assert_eq!(proxy.listen_addr("extra"), None);
    assert!(proxy.status("extra").is_none());
    assert_eventually!(refused(extra).await, "{extra} still accepts clients");
    for _ in 0..3 {
        assert_pong(&mut session, "the draining session").await;
    }
    // The other service was not touched.
    assert_pong(&mut redis_session, "redis").await;

    // Again, now removed with a zero drain timeout: its session is closed.
    let summary = proxy.reload(&two).await.expect("add it again");
    assert_eq!(summary.added, ["extra"], "{summary}");
    let extra = proxy.listen_addr("extra").expect("extra listens");
    let mut session = raw_session(extra, &lab).await;
    let summary = proxy.reload(&one_no_drain).await.expect("remove again");
    assert_eq!(summary.removed, ["extra"], "{summary}");
    read_until_closed(&mut session).await;
    assert_eventually!(refused(extra).await, "{extra} still accepts clients");
    assert_pong(&mut redis_session, "redis").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_taken_port_fails_and_changes_nothing() {
    let lab = start_lab(1).await;
    let master = lab.node(0).addr();
    let tuning = Tuning::default();
    let one = services_config(&lab, REDIS, &tuning, "30s");
    let mut proxy = proxy_routed_to(&one, master).await;
    let redis_addr = endpoint(&proxy);
    let mut session = raw_session(redis_addr, &lab).await;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
    let taken_port = taken.local_addr().expect("taken address").port();
    let taken_listen = format!("127.0.0.1:{taken_port}");

    // A new service on the taken port, after one that binds fine.
    let add = services_config(
        &lab,
        &[
            ("fine", "127.0.0.1:0"),
            ("redis", "127.0.0.1:0"),
            ("taken", &taken_listen),
        ],
        &tuning,
        "30s",
    );
    let err = proxy.reload(&add).await.expect_err("the port is taken");
    assert!(format!("{err:#}").contains("taken"), "{err:#}");
    // The existing service moved to the taken port, and a new one before it.
    let moved = services_config(
        &lab,
        &[("fine", "127.0.0.1:0"), ("redis", &taken_listen)],
        &tuning,
        "30s",
    );
    let err = proxy.reload(&moved).await.expect_err("the port is taken");
    assert!(format!("{err:#}").contains("redis"), "{err:#}");

    // Nothing changed: no new service, same listener, same route, probes on.
    assert_eq!(proxy.listen_addr("fine"), None);
    assert_eq!(proxy.listen_addr("taken"), None);
    assert_eq!(proxy.listen_addr("redis"), Some(redis_addr));
    assert_eq!(proxy.route("redis"), Some(NodeAddr(master)));
    let probes = probe_totals(&proxy, "redis");
    assert_eventually!(
        all_advanced(&probes, &probe_totals(&proxy, "redis")),
        "probes run after the failed reloads"
    );
    assert_pong(&mut session, "the open session").await;
    let mut fresh = raw_session(redis_addr, &lab).await;
    assert_pong(&mut fresh, "a new session").await;
    drop(taken);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_sessions_of_a_removed_service() {
    // A reload removed "extra" while a session was open on it (30 s grace),
    // then the process drains: that session is an open session like any other
    // and may finish within the drain timeout; the drain must not cut it.
    let lab = start_lab(1).await;
    let master = lab.node(0).addr();
    let tuning = Tuning {
        fall: 3,
        ..Tuning::default()
    };
    let one = services_config(&lab, REDIS, &tuning, "30s");
    let two = services_config(&lab, REDIS_AND_EXTRA, &tuning, "30s");
    let mut proxy = proxy_routed_to(&one, master).await;
    proxy.reload(&two).await.expect("add extra");
    let extra = proxy.listen_addr("extra").expect("extra listens");
    let mut session = raw_session(extra, &lab).await;
    let summary = proxy.reload(&one).await.expect("remove extra");
    assert_eq!(summary.removed, ["extra"], "{summary}");
    assert_pong(&mut session, "the open session").await;

    let draining = proxy.draining().clone();
    let mut drain = tokio::spawn(proxy.drain(Some(DEADLINE)));
    assert_eventually!(draining.is_set(), "the drain started");
    for _ in 0..3 {
        let pong = ping(&mut session).await;
        assert!(
            matches!(&pong, Ok(p) if p == "+PONG\r\n"),
            "the drain cut the session of the removed service: {pong:?}"
        );
    }
    assert!(!drain.is_finished(), "the drain ended with a session open");

    // The client leaves: the drain ends.
    drop(session);
    within("the drain ends", &mut drain)
        .await
        .expect("drain task");
}
