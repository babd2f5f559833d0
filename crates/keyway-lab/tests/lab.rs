//! keyway-lab against real `redis-server` processes.
//!
//! Every test starts its own lab on fresh ports, so they run in parallel. Waits are
//! polls with deadlines, never fixed sleeps.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Duration;

use keyway_lab::{Lab, LabError, RedisNode, Reply};

mod common;
use common::{alive, assert_drop_reaps, started};

const WAIT: Duration = Duration::from_secs(15);

fn start(replicas: usize) -> Lab {
    started(Lab::builder().replicas(replicas))
}

fn get(node: &RedisNode, key: &str) -> Option<String> {
    node.cmd(&["GET", key])
        .expect("GET")
        .as_str()
        .map(str::to_owned)
}

/// `WAIT n timeout` on the master: returns once `n` replicas acknowledged every write so
/// far, after which a read on any of them sees those writes.
fn wait_acked(master: &RedisNode, replicas: usize) {
    let reply = master
        .cmd(&["WAIT", &replicas.to_string(), "5000"])
        .expect("WAIT");
    assert_eq!(reply.as_int(), Some(replicas as i64), "{reply:?}");
}

#[test]
fn start_links_replicas_and_replicates_writes() {
    let lab = start(2);
    assert_eq!(lab.nodes().len(), 3);
    for node in lab.nodes() {
        assert!(node.addr().ip().is_loopback());
        assert!(node.pid().is_some());
    }
    assert_eq!(lab.node(0).role().expect("role"), "master");
    assert_eq!(lab.node(1).role().expect("role"), "slave");
    assert_eq!(lab.node(2).role().expect("role"), "slave");
    let master = lab.current_master().expect("one master");
    assert_eq!(master.port(), lab.node(0).port());

    assert_eq!(
        lab.node(0).cmd(&["SET", "k", "v"]).expect("SET"),
        Reply::Simple("OK".into())
    );
    lab.wait_replication(WAIT).expect("replication");
    wait_acked(lab.node(0), 2);
    assert_eq!(get(lab.node(1), "k").as_deref(), Some("v"));
    assert_eq!(get(lab.node(2), "k").as_deref(), Some("v"));

    // Replicas refuse writes: proves they really are replicas, not lone masters.
    let refused = lab.node(1).cmd(&["SET", "k", "x"]).expect("SET on replica");
    assert!(
        refused
            .as_error()
            .is_some_and(|e| e.starts_with("READONLY")),
        "{refused:?}"
    );
}

#[test]
fn password_is_required_and_in_a_private_file() {
    use std::os::unix::fs::PermissionsExt;

    let lab = start(0);
    let password = lab.password().expect("default password");
    assert_eq!(password.len(), 32);
    let file = lab.password_file().expect("password file");
    assert!(file.starts_with(lab.dir()));
    assert_eq!(std::fs::read_to_string(file).expect("read"), password);
    let mode = std::fs::metadata(file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Without AUTH the node refuses; with a wrong password AUTH fails.
    let mut anonymous =
        keyway_lab::Client::connect(lab.node(0).addr(), None, Duration::from_secs(2))
            .expect("connect");
    let reply = anonymous.cmd(&["GET", "k"]).expect("GET");
    assert!(
        reply.as_error().is_some_and(|e| e.starts_with("NOAUTH")),
        "{reply:?}"
    );
    let wrong =
        keyway_lab::Client::connect(lab.node(0).addr(), Some("wrong"), Duration::from_secs(2));
    assert!(matches!(wrong, Err(LabError::Auth { .. })), "{wrong:?}");
}

#[test]
fn no_password_lab_runs_without_auth() {
    let lab = Lab::builder()
        .replicas(1)
        .password(None)
        .start()
        .expect("lab");
    assert_eq!(lab.password(), None);
    assert_eq!(lab.password_file(), None);
    let mut client = keyway_lab::Client::connect(lab.node(0).addr(), None, Duration::from_secs(2))
        .expect("connect");
    assert_eq!(
        client.cmd(&["PING"]).expect("PING"),
        Reply::Simple("PONG".into())
    );
}

#[test]
fn promote_and_replicaof_flip_roles() {
    let lab = start(2);
    let (old, new, other) = (lab.node(0), lab.node(1), lab.node(2));
    new.promote().expect("promote");
    old.replicaof(new).expect("old master follows");
    other.replicaof(new).expect("other replica follows");
    lab.wait_replication(WAIT)
        .expect("replication to the new master");

    assert_eq!(lab.current_master().map(RedisNode::port), Some(new.port()));
    assert_eq!(new.role().expect("role"), "master");
    assert_eq!(old.role().expect("role"), "slave");

    new.cmd(&["SET", "after", "flip"])
        .expect("SET")
        .into_result("SET")
        .expect("new master accepts writes");
    wait_acked(new, 2);
    assert_eq!(get(old, "after").as_deref(), Some("flip"));
}

#[test]
fn two_masters_means_no_current_master() {
    let lab = start(1);
    lab.node(1).promote().expect("promote");
    assert!(lab.current_master().is_none());
}

#[test]
fn kill_and_restart_keep_the_port() {
    let lab = start(2);
    let replica = lab.node(2);
    let (port, pid) = (replica.port(), replica.pid().expect("pid"));

    replica.kill();
    assert_eq!(replica.pid(), None);
    assert!(!alive(pid), "killed pid {pid} still exists");
    assert!(replica.ping(Duration::from_millis(500)).is_err());

    replica.restart().expect("restart replica");
    assert_eq!(replica.port(), port);
    assert_ne!(replica.pid(), Some(pid));
    replica
        .ping(Duration::from_secs(1))
        .expect("ping after restart");
    assert_eq!(replica.role().expect("role"), "slave");
    lab.wait_replication(WAIT).expect("replica linked again");

    // The master comes back from its original config: a master again, empty.
    let master = lab.node(0);
    master.cmd(&["SET", "gone", "1"]).expect("SET");
    master.kill();
    assert!(lab.current_master().is_none());
    master.restart().expect("restart master");
    assert_eq!(master.role().expect("role"), "master");
    lab.wait_replication(WAIT).expect("replicas relinked");
    assert_eq!(get(master, "gone"), None, "nothing is persisted");
}

#[test]
fn shutdown_is_graceful_and_leaves_no_process() {
    let lab = start(1);
    let pid = lab.node(1).pid().expect("pid");
    lab.node(1).shutdown();
    assert_eq!(lab.node(1).pid(), None);
    assert!(!alive(pid));
    let log = std::fs::read_to_string(lab.node(1).log_path()).expect("log");
    assert!(log.contains("ready to exit"), "not a graceful exit:\n{log}");
}

#[test]
fn stopped_node_does_not_answer_until_continued() {
    let lab = start(1);
    let replica = lab.node(1);
    replica
        .ping(Duration::from_millis(200))
        .expect("ping before stop");

    replica.stop();
    let err = replica
        .ping(Duration::from_millis(200))
        .expect_err("a stopped node must not answer");
    assert!(matches!(err, LabError::Timeout { .. }), "{err:?}");
    // A stopped node is still our process.
    assert!(replica.pid().is_some());

    replica.cont();
    replica
        .ping(Duration::from_secs(1))
        .expect("ping after cont");
}

#[test]
fn drop_kills_every_process_even_stopped_ones() {
    let lab = start(2);
    lab.node(2).stop();
    let pids: Vec<u32> = lab.nodes().iter().filter_map(RedisNode::pid).collect();
    assert_drop_reaps(lab, &pids, 3);
}

/// Pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1).map(str::to_owned));
            ppid == Some(pid.to_string())
        })
        .collect()
}

/// Running (not a zombie waiting for init to reap it).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned))
            .is_some_and(|state| state != "Z")
    })
}

#[test]
fn kill_also_kills_a_fork_child_of_redis() {
    let lab = start(0);
    let master = lab.node(0);
    // A BGSAVE child that takes 10 s (100 keys, 100 ms each): still running at kill time.
    let ok = |args: &[&str]| {
        master
            .cmd(args)
            .expect("cmd")
            .into_result(args[0])
            .expect("success");
    };
    ok(&["DEBUG", "POPULATE", "100"]);
    ok(&["CONFIG", "SET", "rdb-key-save-delay", "100000"]);
    ok(&["BGSAVE"]);
    let pid = master.pid().expect("pid");
    let forks = children_of(pid);
    assert_eq!(forks.len(), 1, "expected one BGSAVE child of {pid}");

    drop(lab);
    assert!(!alive(pid));
    for fork in forks {
        assert!(!running(fork), "fork child {fork} outlived the lab");
    }
}

#[test]
fn drop_kills_every_process_when_a_test_panics() {
    let pids = Mutex::new(Vec::new());
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let lab = start(1);
        pids.lock()
            .expect("lock")
            .extend(lab.nodes().iter().filter_map(RedisNode::pid));
        panic!("a failing test (expected by this test)");
    }));
    assert!(result.is_err());
    let pids = pids.into_inner().expect("lock");
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived the panic");
    }
}

#[test]
fn missing_binary_says_how_to_install() {
    let err = Lab::builder()
        .redis_server("/nonexistent")
        .start()
        .expect_err("no such binary");
    assert!(matches!(err, LabError::MissingBinary { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "redis-server not found: install it with \
         `apt-get install -y redis-server redis-sentinel redis-tools` \
         or set KEYWAY_REDIS_SERVER"
    );
}

#[test]
fn a_server_that_exits_shows_its_log() {
    // `false` exits at once: the error must say so and carry the captured output.
    let err = Lab::builder()
        .redis_server("/bin/false")
        .replicas(0)
        .start()
        .expect_err("must fail");
    assert!(matches!(err, LabError::Exited { .. }), "{err:?}");
    assert!(
        err.to_string().contains("node-0 exited during start-up"),
        "{err}"
    );
}
