//! keyway-lab with Redis Sentinel, against real `redis-server` / `redis-sentinel`
//! processes.
//!
//! Every test starts its own lab on fresh ports, so they run in parallel. Waits are
//! polls with deadlines, never fixed sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keyway_lab::{Lab, LabError, RedisNode, Reply, SentinelNode};

mod common;
use common::{alive, assert_drop_reaps, chain, started};

/// Deadline of a switch after `SENTINEL FAILOVER` or a kill with `down_after` 1 s.
/// Normally 1 to 4 s; the margin covers a split leader election, which Sentinel retries
/// after twice the failover timeout (set to 4 s below).
const SWITCH: Duration = Duration::from_secs(14);

/// Master + 2 replicas + 3 sentinels, the shape of production.
fn ha() -> Lab {
    started(
        Lab::builder()
            .replicas(2)
            .sentinels(3)
            .failover_timeout(Duration::from_secs(4)),
    )
}

fn field(reply: &Reply, key: &str) -> Option<String> {
    reply
        .as_array()?
        .chunks_exact(2)
        .find(|pair| pair[0].as_str() == Some(key))
        .and_then(|pair| pair[1].as_str().map(str::to_owned))
}

fn sentinel_master_field(sentinel: &SentinelNode, name: &str, key: &str) -> String {
    let reply = sentinel
        .cmd(&["SENTINEL", "MASTER", name])
        .expect("SENTINEL MASTER")
        .into_result("SENTINEL MASTER")
        .expect("known master");
    field(&reply, key).unwrap_or_else(|| panic!("no {key} in {reply:?}"))
}

fn myid(sentinel: &SentinelNode) -> String {
    sentinel
        .cmd(&["SENTINEL", "MYID"])
        .expect("SENTINEL MYID")
        .as_str()
        .expect("an id")
        .to_owned()
}

/// The flags `sentinel` reports for the other sentinel listening on `port`.
fn peer_flags(sentinel: &SentinelNode, port: u16) -> String {
    let reply = sentinel
        .cmd(&["SENTINEL", "SENTINELS", "keyway"])
        .expect("SENTINEL SENTINELS");
    reply
        .as_array()
        .expect("an array")
        .iter()
        .find(|peer| field(peer, "port") == Some(port.to_string()))
        .and_then(|peer| field(peer, "flags"))
        .unwrap_or_else(|| panic!("no sentinel on port {port} in {reply:?}"))
}

fn switch(lab: &Lab, from: SocketAddr) -> SocketAddr {
    match lab.wait_master_switch(from, SWITCH) {
        Ok(addr) => addr,
        Err(e) => panic!("no switch: {}", chain(&e)),
    }
}

#[test]
fn sentinels_start_and_name_the_master() {
    let lab = ha();
    let master = lab.node(0).addr();
    assert_eq!(lab.master_name(), "keyway");
    assert_eq!(lab.sentinels().len(), 3);
    assert_eq!(lab.sentinel_password_file(), None);
    assert_eq!(lab.sentinel_master(), Some(master));
    assert_eq!(
        lab.node_by_addr(master).map(RedisNode::name),
        Some("node-0")
    );
    for sentinel in lab.sentinels() {
        assert!(sentinel.addr().ip().is_loopback());
        assert!(sentinel.pid().is_some_and(alive));
        assert_eq!(sentinel.master_addr().expect("master addr"), Some(master));
        let role = sentinel.cmd(&["ROLE"]).expect("ROLE");
        assert_eq!(
            role.as_array().and_then(|r| r.first()?.as_str()),
            Some("sentinel"),
            "{role:?}"
        );
        assert_eq!(
            sentinel_master_field(sentinel, "keyway", "num-other-sentinels"),
            "2"
        );
        assert_eq!(sentinel_master_field(sentinel, "keyway", "num-slaves"), "2");
        assert_eq!(sentinel_master_field(sentinel, "keyway", "quorum"), "2");
        assert_eq!(
            sentinel_master_field(sentinel, "keyway", "down-after-milliseconds"),
            "1000"
        );
        // Sentinel owns its config file: it has written its identity into it.
        let config = std::fs::read_to_string(sentinel.config_path()).expect("config");
        assert!(config.contains("sentinel myid "), "{config}");
    }
    // Unknown names are None, not an error.
    let unknown = lab
        .sentinel(0)
        .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "nope"])
        .expect("reply");
    assert!(unknown.is_nil(), "{unknown:?}");
    assert!(
        lab.node_by_addr(SocketAddr::from(([127, 0, 0, 1], 1)))
            .is_none()
    );
}

#[test]
fn failover_promotes_a_replica_and_restart_restores_original_roles() {
    let lab = ha();
    let old = lab.node(0).addr();
    let started = Instant::now();
    lab.failover().expect("SENTINEL FAILOVER accepted");
    let new = switch(&lab, old);
    eprintln!("SENTINEL FAILOVER: switch after {:?}", started.elapsed());
    let promoted = lab.node_by_addr(new).expect("a lab node");
    assert_ne!(promoted.name(), "node-0");
    assert_eq!(promoted.role().expect("role"), "master");
    assert_eq!(lab.sentinel_master(), Some(new));
    promoted
        .cmd(&["SET", "after", "failover"])
        .expect("SET")
        .into_result("SET")
        .expect("the new master takes writes");

    // Sentinel re-points the other replica with REPLICAOF + CONFIG REWRITE...
    let other = lab
        .replicas()
        .iter()
        .find(|n| n.addr() != new)
        .expect("the other replica");
    let repointed = format!("replicaof 127.0.0.1 {}", new.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(other.config_path())
        .expect("config")
        .contains(&repointed)
    {
        assert!(Instant::now() < deadline, "{} not re-pointed", other.name());
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but a restart brings back the lab's config: a replica of the initial master.
    other.restart().expect("restart");
    let config = std::fs::read_to_string(other.config_path()).expect("config");
    assert!(
        config.contains(&format!("replicaof 127.0.0.1 {}\n", old.port())),
        "{config}"
    );
    let info = other.info("replication").expect("INFO");
    assert!(
        info.contains(&format!("master_port:{}", old.port())),
        "{info}"
    );

    // A second failover right away: retried through -INPROG / -NOGOODSLAVE.
    lab.failover().expect("second SENTINEL FAILOVER accepted");
    let third = switch(&lab, new);
    assert_eq!(
        lab.node_by_addr(third)
            .expect("a lab node")
            .role()
            .expect("role"),
        "master"
    );
}

#[test]
fn kill_of_the_master_switches_within_the_deadline() {
    let lab = ha();
    let old = lab.node(0);
    let from = old.addr();
    let killed = Instant::now();
    old.kill();
    let new = switch(&lab, from);
    let took = killed.elapsed();
    eprintln!("kill -9 of the master: switch after {took:?} (down_after 1000 ms)");
    let promoted = lab.node_by_addr(new).expect("a lab node");
    assert_ne!(promoted.name(), "node-0");
    assert_eq!(promoted.role().expect("role"), "master");

    // The old master comes back from its own config: it claims master until Sentinel
    // converts it.
    old.restart().expect("restart old master");
    assert_eq!(old.role().expect("role"), "master");
    assert_eq!(
        lab.sentinel_master(),
        Some(new),
        "sentinels keep the new one"
    );
}

#[test]
fn killed_sentinel_restarts_and_rejoins() {
    let lab = started(Lab::builder().replicas(1).sentinels(3));
    let master = lab.node(0).addr();
    let sentinel = lab.sentinel(2);
    let (port, pid, id) = (
        sentinel.port(),
        sentinel.pid().expect("pid"),
        myid(sentinel),
    );

    sentinel.kill();
    assert_eq!(sentinel.pid(), None);
    assert!(!alive(pid), "killed pid {pid} still exists");
    assert!(sentinel.master_addr().is_err());
    // Two of the two live sentinels still agree.
    assert_eq!(lab.sentinel_master(), Some(master));
    // The others notice (down_after 1 s)...
    let deadline = Instant::now() + Duration::from_secs(10);
    while !peer_flags(lab.sentinel(0), port).contains("s_down") {
        assert!(Instant::now() < deadline, "sentinel-2 never seen down");
        std::thread::sleep(Duration::from_millis(20));
    }

    sentinel.restart().expect("restart sentinel");
    assert_eq!(sentinel.port(), port);
    assert_ne!(sentinel.pid(), Some(pid));
    assert_eq!(
        myid(sentinel),
        id,
        "same identity from the rewritten config"
    );
    // ...and see it up again once it rejoined.
    lab.wait_sentinels(Duration::from_secs(20))
        .expect("sentinel rejoined");
    for other in &lab.sentinels()[..2] {
        assert_eq!(peer_flags(other, port), "sentinel");
    }
    assert_eq!(sentinel.master_addr().expect("master addr"), Some(master));
    assert_eq!(lab.sentinel_master(), Some(master));

    // A stopped sentinel is live but silent: the other two still make a majority.
    lab.sentinel(0).stop();
    let ping =
        keyway_lab::Client::connect(lab.sentinel(0).addr(), None, Duration::from_millis(200))
            .and_then(|mut c| c.cmd(&["PING"]));
    assert!(matches!(ping, Err(LabError::Timeout { .. })), "{ping:?}");
    assert_eq!(lab.sentinel_master(), Some(master));
    lab.sentinel(0).cont();
    assert_eq!(
        lab.sentinel(0).master_addr().expect("master addr"),
        Some(master)
    );
}

#[test]
fn sentinel_password_is_required_and_redis_server_can_be_a_sentinel() {
    use std::os::unix::fs::PermissionsExt;

    // `redis-server --sentinel`, as on a machine without the redis-sentinel name; two
    // sentinels with requirepass must still find each other (they authenticate to
    // each other with it).
    let server = keyway_lab::redis_server_path().expect("redis-server");
    let lab = started(
        Lab::builder()
            .replicas(1)
            .sentinels(2)
            .master_name("cache-01")
            .sentinel_password(Some("sentinel secret"))
            .redis_sentinel(server),
    );
    assert_eq!(lab.master_name(), "cache-01");
    let file = lab.sentinel_password_file().expect("password file");
    assert!(file.starts_with(lab.dir()));
    assert_eq!(
        std::fs::read_to_string(file).expect("read"),
        "sentinel secret"
    );
    let mode = std::fs::metadata(file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(lab.sentinel_master(), Some(lab.node(0).addr()));

    let sentinel = lab.sentinel(1);
    let mut anonymous = keyway_lab::Client::connect(sentinel.addr(), None, Duration::from_secs(2))
        .expect("connect");
    let reply = anonymous
        .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "cache-01"])
        .expect("reply");
    assert!(
        reply.as_error().is_some_and(|e| e.starts_with("NOAUTH")),
        "{reply:?}"
    );

    // The rewritten config (password included) survives a restart.
    sentinel.restart().expect("restart");
    lab.wait_sentinels(Duration::from_secs(20))
        .expect("sentinel rejoined");
}

#[test]
fn drop_kills_every_process_sentinels_included() {
    let lab = started(Lab::builder().replicas(1).sentinels(2));
    lab.sentinel(1).stop();
    lab.node(1).stop();
    let pids: Vec<u32> = lab
        .nodes()
        .iter()
        .filter_map(RedisNode::pid)
        .chain(lab.sentinels().iter().filter_map(SentinelNode::pid))
        .collect();
    assert_drop_reaps(lab, &pids, 4);
}

#[test]
fn without_sentinels_nothing_changes() {
    let lab = started(Lab::builder().replicas(0));
    assert!(lab.sentinels().is_empty());
    assert_eq!(lab.sentinel_master(), None);
    assert_eq!(lab.sentinel_password_file(), None);
    lab.wait_sentinels(Duration::from_millis(10))
        .expect("nothing to wait for");
    assert!(matches!(lab.failover(), Err(LabError::Config(_))));
}

#[test]
fn bad_sentinel_settings_fail_before_anything_starts() {
    let err = Lab::builder()
        .sentinels(1)
        .redis_sentinel("/nonexistent")
        .start()
        .expect_err("no such binary");
    assert!(matches!(err, LabError::MissingBinary { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "redis-sentinel not found: install it with \
         `apt-get install -y redis-server redis-sentinel redis-tools` \
         or set KEYWAY_REDIS_SENTINEL"
    );

    let err = Lab::builder()
        .sentinels(1)
        .master_name("two words")
        .start()
        .expect_err("bad name");
    assert!(matches!(err, LabError::Config(_)), "{err:?}");

    let err = Lab::builder()
        .sentinels(1)
        .password(Some("with space"))
        .start()
        .expect_err("bad password for sentinels");
    assert!(matches!(err, LabError::Config(_)), "{err:?}");

    let err = Lab::builder()
        .sentinels(3)
        .quorum(0)
        .start()
        .expect_err("bad quorum");
    assert!(matches!(err, LabError::Config(_)), "{err:?}");
}
