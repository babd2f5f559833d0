//! The proxy end to end: real `redis-server` processes from `keyway-lab`, the
//! proxy in-process on port 0, clients on 127.0.0.1.
//!
//! What is covered: the data path (PING, SET/GET, a 10 MB value, 200 concurrent
//! sessions, SELECT, MULTI/EXEC, pub/sub, half-close), routing (a manual switch
//! moves new sessions and cuts old ones; the route is never a replica; with no
//! master clients are held, then closed or served), and probing (a node that
//! answers garbage, or never answers, is never routed).
//!
//! Every wait is a poll or a channel wait bounded by `DEADLINE`; no test asserts
//! a duration. Tests that move a lot of bytes use slower, more tolerant probes, so
//! a loaded machine cannot make the master miss `fall` probes and cut a session
//! the test is using.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyway_config::NodeAddr;
use keyway_tests::{
    AUTH_PING_REPLY, DEADLINE, Lab, RouteLog, Tuning, addrs, assert_eventually, auth_ping, client,
    config, expect_bytes, held_then_closed, on_lab, on_lab_timed, proxy_on_master, proxy_routed_to,
    raw, raw_session_on, read_until_closed, server_port, start_lab, wait_route, within,
};
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A `redis` multiplexed connection (its own TCP connection) through the proxy.
async fn connect(proxy: &keyway::Proxy, lab: &Lab) -> redis::aio::MultiplexedConnection {
    let client = client(proxy, lab);
    within(
        "connect through the proxy",
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connection through the proxy")
}

/// The first element of `ROLE` and the port the server says it listens on, both
/// asked over `con`.
async fn role_and_port(con: &mut redis::aio::MultiplexedConnection) -> (String, u16) {
    let (role, _, _): (String, redis::Value, redis::Value) = within(
        "ROLE",
        redis::cmd("ROLE").query_async::<(String, redis::Value, redis::Value)>(con),
    )
    .await
    .expect("ROLE");
    let port = within("INFO server", server_port(con))
        .await
        .expect("INFO server");
    (role, port)
}

/// Deterministic pseudo-random bytes (xorshift64*): every byte value occurs, and
/// a corrupted, shifted or truncated copy cannot compare equal by accident.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A fake node on 127.0.0.1:0, for probes to fail against.
struct FakeNode {
    addr: SocketAddr,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// Reads that returned bytes (requests, roughly: a probe's pipelined commands
    /// may arrive in one read).
    requests: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

/// What the garbage node answers, chosen per connection so that successive
/// reconnects of a probe meet every kind: bytes that are not RESP at all, a
/// truncated array that starts like a `ROLE` master reply, and well-formed RESP
/// that answers `ROLE` and `PING` with the wrong type.
const GARBAGE: &[&[u8]] = &[
    b"\x00\xffnot resp\r\n:::\r\n$-7\r\n",
    b"*2\r\n$6\r\nmaster\r\n",
    b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n",
];

impl FakeNode {
    /// Answers every read with garbage (see [`GARBAGE`]).
    async fn garbage() -> FakeNode {
        FakeNode::start(true).await
    }

    /// Accepts, reads and discards, never answers, never closes.
    async fn silent() -> FakeNode {
        FakeNode::start(false).await
    }

    async fn start(answer: bool) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake node");
        let addr = listener.local_addr().expect("fake node address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let index = conns.fetch_add(1, Ordering::SeqCst);
                let reqs = Arc::clone(&reqs);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {
                                reqs.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        if answer
                            && socket
                                .write_all(GARBAGE[index % GARBAGE.len()])
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        FakeNode {
            addr,
            connections,
            requests,
            accept,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

// ---------------------------------------------------------------------------
// Data path
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_set_get() {
    let lab = start_lab(1).await;
    let proxy = proxy_on_master(&lab, &Tuning::steady()).await;
    let mut con = connect(&proxy, &lab).await;

    let pong: String = within("PING", redis::cmd("PING").query_async(&mut con))
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");

    let () = within("SET", con.set("greeting", "hello through keyway"))
        .await
        .expect("SET");
    let got: String = within("GET", con.get("greeting")).await.expect("GET");
    assert_eq!(got, "hello through keyway");

    // The write landed on the master itself, not somewhere else.
    let direct = on_lab(&lab, |lab| lab.node(0).cmd(&["GET", "greeting"])).await;
    let direct = direct.expect("GET on the master");
    assert_eq!(direct.as_bytes(), Some(&b"hello through keyway"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mb_value_round_trip() {
    let lab = start_lab(0).await;
    let proxy = proxy_on_master(&lab, &Tuning::steady()).await;
    let mut con = connect(&proxy, &lab).await;

    let value = pseudo_random(10 * 1024 * 1024, 0x9E37_79B9_7F4A_7C15);
    let () = within("SET 10 MB", con.set("big", value.as_slice()))
        .await
        .expect("SET 10 MB");
    let got: Vec<u8> = within("GET 10 MB", con.get("big"))
        .await
        .expect("GET 10 MB");
    assert_eq!(got.len(), value.len(), "length of the value read back");
    // Not assert_eq!: a 10 MB diff in a failure message helps nobody.
    let first_diff = got.iter().zip(&value).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "first differing byte");

    // And the master holds exactly those bytes.
    let len = on_lab(&lab, |lab| lab.node(0).cmd(&["STRLEN", "big"])).await;
    assert_eq!(len.expect("STRLEN").as_int(), Some(10 * 1024 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_incr() {
    const CLIENTS: usize = 200;
    const INCRS: i64 = 50;

    let lab = start_lab(1).await;
    let proxy = proxy_on_master(&lab, &Tuning::steady()).await;

    let redis_client = client(&proxy, &lab);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let redis_client = redis_client.clone();
        tasks.spawn(async move {
            // One client, one TCP connection, one session in the proxy.
            let mut con = redis_client
                .get_multiplexed_async_connection()
                .await
                .expect("connection through the proxy");
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut con)
                .await
                .expect("CLIENT ID");
            for _ in 0..INCRS {
                let _: i64 = con.incr("counter", 1).await.expect("INCR");
            }
            id
        });
    }
    let mut ids = std::collections::HashSet::new();
    within("200 clients", async {
        while let Some(done) = tasks.join_next().await {
            ids.insert(done.expect("client task"));
        }
    })
    .await;
    // 200 distinct Redis client ids: 200 distinct connections reached the master.
    assert_eq!(ids.len(), CLIENTS, "distinct connections seen by Redis");

    let expected = CLIENTS as i64 * INCRS;
    let mut con = connect(&proxy, &lab).await;
    let through_proxy: i64 = within("GET counter", con.get("counter"))
        .await
        .expect("GET counter");
    assert_eq!(through_proxy, expected);
    let direct = on_lab(&lab, |lab| lab.node(0).cmd(&["GET", "counter"])).await;
    let direct = direct.expect("GET on the master");
    assert_eq!(
        direct.as_bytes(),
        Some(expected.to_string().as_bytes()),
        "counter on the master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_multi_exec_pubsub() {
    let lab = start_lab(1).await;
    let proxy = proxy_on_master(&lab, &Tuning::steady()).await;

    // SELECT: the session keeps its database on the node.
    let mut con = connect(&proxy, &lab).await;
    let () = within(
        "SELECT 3",
        redis::cmd("SELECT").arg(3).query_async(&mut con),
    )
    .await
    .expect("SELECT 3");
    let () = within("SET in db 3", con.set("in-db-3", "three"))
        .await
        .expect("SET");
    let got: String = within("GET in db 3", con.get("in-db-3"))
        .await
        .expect("GET");
    assert_eq!(got, "three");
    let (db3, db0) = on_lab(&lab, |lab| {
        let mut master = lab.client(0).expect("client to the master");
        let db0 = master.cmd(&["GET", "in-db-3"]).expect("GET in db 0");
        master
            .cmd(&["SELECT", "3"])
            .expect("SELECT 3 on the master");
        let db3 = master.cmd(&["GET", "in-db-3"]).expect("GET in db 3");
        (db3, db0)
    })
    .await;
    assert_eq!(
        db3.as_bytes(),
        Some(&b"three"[..]),
        "key in db 3 on the master"
    );
    assert!(db0.is_nil(), "key must not be in db 0: {db0:?}");

    // MULTI/EXEC: both queued commands run, both results come back.
    let mut con = connect(&proxy, &lab).await;
    let (set, incr): (String, i64) = within(
        "MULTI/EXEC",
        redis::pipe()
            .atomic()
            .set("tx-key", "v")
            .incr("tx-counter", 5)
            .query_async(&mut con),
    )
    .await
    .expect("MULTI/EXEC");
    assert_eq!((set.as_str(), incr), ("OK", 5));

    // Pub/sub: a subscriber through the proxy gets a message published through
    // another proxy session.
    let sub_client = client(&proxy, &lab);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let subscriber = tokio::task::spawn_blocking(move || -> redis::RedisResult<String> {
        let mut con = sub_client.get_connection_with_timeout(DEADLINE)?;
        con.set_read_timeout(Some(DEADLINE))?;
        let mut pubsub = con.as_pubsub();
        // Returns once Redis has confirmed the subscription.
        pubsub.subscribe("news")?;
        let _ = ready_tx.send(());
        pubsub.get_message()?.get_payload::<String>()
    });
    within("subscription", ready_rx)
        .await
        .expect("subscriber ready");
    let receivers: i64 = within("PUBLISH", con.publish("news", "hello subscribers"))
        .await
        .expect("PUBLISH");
    assert_eq!(receivers, 1, "subscribers that got the message");
    let payload = within("message", subscriber)
        .await
        .expect("subscriber task")
        .expect("message through the proxy");
    assert_eq!(payload, "hello subscribers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close() {
    let lab = start_lab(0).await;
    let proxy = proxy_on_master(&lab, &Tuning::steady()).await;

    let mut stream = raw(&proxy).await;
    stream
        .write_all(&auth_ping(&lab))
        .await
        .expect("write AUTH + PING");
    // shutdown(Write): the client says "no more requests" and waits for replies.
    stream.shutdown().await.expect("half-close");

    let (got, error) = read_until_closed(&mut stream).await;
    assert_eq!(String::from_utf8_lossy(&got), "+OK\r\n+PONG\r\n");
    assert!(error.is_none(), "a clean EOF after the replies: {error:?}");
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_switch() {
    let lab = start_lab(2).await;
    let tuning = Tuning {
        fall: 3,
        ..Tuning::default()
    };
    let proxy = proxy_on_master(&lab, &tuning).await;
    let (old, new) = (lab.node(0).addr(), lab.node(1).addr());

    // Session A, on the old master (it says so itself).
    let mut session_a = raw_session_on(&proxy, &lab, old).await;

    // The switch: promote a replica, then demote the old master under it.
    let mut route = proxy.route_watch("redis").expect("service redis");
    on_lab(&lab, |lab| lab.node(1).promote())
        .await
        .expect("promote node-1");
    let demoted_at = on_lab_timed(&lab, |lab| {
        lab.node(0)
            .replicaof(lab.node(1))
            .expect("REPLICAOF on node-0");
    })
    .await;
    within(
        "route moves to the new master",
        route.wait_for(|r| *r == Some(NodeAddr(new))),
    )
    .await
    .expect("monitor running");
    println!(
        "manual switch: route moved to the new master {:?} after REPLICAOF on the old master",
        demoted_at.elapsed()
    );

    // A new session lands on the new master and writes there.
    let mut con = connect(&proxy, &lab).await;
    let (role, port) = role_and_port(&mut con).await;
    assert_eq!(role, "master");
    assert_eq!(port, new.port(), "new sessions go to the new master");
    let () = within("SET after the switch", con.set("after-switch", "on node-1"))
        .await
        .expect("SET after the switch");
    let direct = on_lab(&lab, |lab| lab.node(1).cmd(&["GET", "after-switch"])).await;
    assert_eq!(
        direct.expect("GET on node-1").as_bytes(),
        Some(&b"on node-1"[..])
    );

    // Session A was cut: it ends without another byte from the old master.
    let (got, _) = read_until_closed(&mut session_a).await;
    assert!(
        got.is_empty(),
        "old session received {:?} instead of being closed",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_never_a_replica() {
    let lab = start_lab(2).await;
    // Replicas first in the list: "the first node" would be the wrong answer.
    let nodes = [lab.node(1).addr(), lab.node(2).addr(), lab.node(0).addr()];
    let cfg = config(&lab, &nodes, &Tuning::steady());
    let master = lab.node(0).addr();
    let proxy = proxy_routed_to(&cfg, master).await;
    let seen = RouteLog::record(&proxy, "redis");

    for i in 0..50 {
        let mut con = connect(&proxy, &lab).await;
        let (role, port) = role_and_port(&mut con).await;
        assert_eq!(role, "master", "connection {i}");
        assert_eq!(port, master.port(), "connection {i} reached another node");
    }
    let seen = seen.routes();
    assert!(
        seen.iter().all(|r| *r == Some(master)),
        "route left the master: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_hold_then_close_then_served() {
    let lab = start_lab(1).await;

    // (a) Short hold: a client is held, then closed without a reply.
    let short = Tuning {
        hold: "1s",
        ..Tuning::default()
    };
    let proxy_a = proxy_on_master(&lab, &short).await;
    on_lab(&lab, |lab| lab.nodes().iter().for_each(|n| n.kill())).await;
    wait_route(&proxy_a, None).await;
    held_then_closed(&proxy_a, &lab, "no node is up").await;

    // (b) Long hold: a client that arrives while everything is down is served
    // by the master once it is back.
    let long = Tuning {
        hold: "15s",
        ..Tuning::default()
    };
    let cfg = config(&lab, &addrs(&lab), &long);
    let proxy_b = keyway::Proxy::start(&cfg).await.expect("proxy starts");
    let mut held = raw(&proxy_b).await;
    held.write_all(&auth_ping(&lab))
        .await
        .expect("write AUTH + PING");
    assert_eq!(proxy_b.route("redis"), None, "no node is up");

    let lab2 = Arc::clone(&lab);
    let restart = tokio::task::spawn_blocking(move || lab2.node(0).restart());
    expect_bytes(&mut held, AUTH_PING_REPLY).await;
    within("restart", restart)
        .await
        .expect("restart task")
        .expect("node-0 restarts");
    assert_eq!(proxy_b.route("redis"), Some(NodeAddr(lab.node(0).addr())));
}

// ---------------------------------------------------------------------------
// Probing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silent_nodes_never_routed() {
    let lab = start_lab(0).await;
    let master = lab.node(0).addr();
    let is_fake = |route: Option<NodeAddr>, fakes: &[SocketAddr]| {
        route.is_some_and(|NodeAddr(a)| fakes.contains(&a))
    };

    // Fakes beside a real master: the master is routed, the fakes never.
    let (garbage, silent) = (FakeNode::garbage().await, FakeNode::silent().await);
    let fakes = [garbage.addr, silent.addr];
    let cfg = config(
        &lab,
        &[garbage.addr, silent.addr, master],
        &Tuning::default(),
    );
    keyway::logging::init(&cfg.log);
    let proxy = keyway::Proxy::start(&cfg).await.expect("proxy starts");
    let seen = RouteLog::record(&proxy, "redis");
    assert_eventually!(
        {
            let route = proxy.route("redis");
            assert!(!is_fake(route, &fakes), "routed to a fake node: {route:?}");
            route == Some(NodeAddr(master)) && garbage.requests() >= 3 && silent.connections() >= 1
        },
        "route {:?}, garbage requests {}, silent connections {}",
        proxy.route("redis"),
        garbage.requests(),
        silent.connections()
    );
    let mut con = connect(&proxy, &lab).await;
    let pong: String = within("PING", redis::cmd("PING").query_async(&mut con))
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    let seen = seen.routes();
    assert!(
        seen.iter().all(|r| !is_fake(r.map(NodeAddr), &fakes)),
        "a fake node was routed: {seen:?}"
    );

    // Only fakes: no route however often they are probed, and clients are
    // closed after the hold.
    let (garbage, silent) = (FakeNode::garbage().await, FakeNode::silent().await);
    let fakes = [garbage.addr, silent.addr];
    let tuning = Tuning {
        hold: "1s",
        ..Tuning::default()
    };
    let cfg = config(&lab, &fakes, &tuning);
    let proxy = keyway::Proxy::start(&cfg).await.expect("proxy starts");
    let seen = RouteLog::record(&proxy, "redis");
    assert_eventually!(
        {
            let route = proxy.route("redis");
            assert_eq!(route, None, "routed to a fake node");
            garbage.requests() >= 6 && silent.connections() >= 2
        },
        "garbage requests {}, silent connections {}",
        garbage.requests(),
        silent.connections()
    );
    held_then_closed(&proxy, &lab, "only fakes").await;
    let seen = seen.routes();
    assert!(
        seen.iter().all(Option::is_none),
        "a fake node was routed: {seen:?}"
    );
}
