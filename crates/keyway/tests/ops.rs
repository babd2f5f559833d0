//! The `keyway` binary under an operator's hands: SIGHUP reloads (a bad file
//! keeps the running configuration), SIGTERM drains, a second SIGTERM cuts the
//! drain short (even with a SIGHUP in between), and systemd's notify protocol through a `NOTIFY_SOCKET` the
//! test binds.
//!
//! Each test runs `keyway run -c FILE` against a real lab, its log in a file
//! of the lab directory (printed when an assertion fails). Every wait polls
//! with a deadline; nothing asserts a duration.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyway_lab::Lab;

const KEYWAY: &str = env!("CARGO_BIN_EXE_keyway");
/// How long any "eventually" may take (generous: a loaded CI machine).
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn lab() -> Lab {
    match Lab::builder().replicas(1).start() {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start the Redis lab: {e}"),
    }
}

/// Tries `attempt` every 20 ms until it succeeds and returns its value; after
/// `DEADLINE` panics with `what` and the last failure.
fn eventually<T>(what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {DEADLINE:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One `[[service]]` in front of every lab node.
fn service_toml(lab: &Lab, name: &str, port: u16, rise: u32) -> String {
    let nodes: Vec<String> = lab
        .nodes()
        .iter()
        .map(|n| format!("\"{}\"", n.addr()))
        .collect();
    format!(
        r#"
[[service]]
name = "{name}"
listen = "127.0.0.1:{port}"
nodes = [{nodes}]
password_file = "{password_file}"

[service.check]
interval = "100ms"
timeout = "100ms"
rise = {rise}
fall = 3
"#,
        nodes = nodes.join(", "),
        password_file = lab.password_file().expect("lab password file").display(),
    )
}

/// A configuration: `[admin]` on `admin_port`, `head` (more top-level tables),
/// then the services.
fn config_text(admin_port: u16, head: &str, services: &[String]) -> String {
    format!(
        "[log]\nlevel = \"info\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{head}\n{}",
        services.concat()
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the config file");
}

/// A running `keyway run`, killed on drop; its stdout and stderr go to a file.
struct Keyway {
    child: RefCell<Child>,
    log: PathBuf,
}

impl Keyway {
    fn start(config: &Path, log: PathBuf, env: &[(&str, &str)]) -> Keyway {
        let out = std::fs::File::create(&log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let mut cmd = Command::new(KEYWAY);
        cmd.arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Whatever runs the tests must not leak its own systemd settings in.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Keyway {
            child: RefCell::new(cmd.spawn().expect("start keyway")),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.borrow().id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} failed");
    }

    fn running(&self) -> bool {
        self.try_wait().is_none()
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        self.child.borrow_mut().try_wait().expect("try_wait")
    }

    /// Waits for the process to exit (polling, within `DEADLINE`).
    fn wait_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keyway still running after {DEADLINE:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Keyway {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `redis-cli` against `port`, authenticated with the lab's password; its
/// trimmed stdout (empty when it could not connect).
fn redis_cli(lab: &Lab, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .env("REDISCLI_AUTH", lab.password().expect("lab password"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli not found: apt-get install -y redis-tools");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until `PING` through `port` answers `PONG` (the proxy may not listen
/// yet, and a client is held until the first route).
fn wait_pong(keyway: &Keyway, lab: &Lab, port: u16) {
    eventually(&format!("PONG through port {port}"), || {
        assert!(keyway.running(), "keyway exited; log:\n{}", keyway.log());
        match redis_cli(lab, port, &["PING"]) {
            pong if pong == "PONG" => Ok(()),
            other => Err(format!("{other:?}; log:\n{}", keyway.log())),
        }
    });
}

/// One plain HTTP/1.1 GET on the admin port: status code and body, or `None`
/// when the admin server cannot be reached.
fn http_get(port: u16, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(DEADLINE)).ok()?;
    s.set_write_timeout(Some(DEADLINE)).ok()?;
    let req =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Waits until `/metrics` contains `line` (a whole sample line).
fn wait_metric(keyway: &Keyway, admin_port: u16, line: &str) {
    eventually(&format!("/metrics has {line:?}"), || {
        let body = http_get(admin_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        if body.lines().any(|l| l == line) {
            return Ok(());
        }
        let reloads: Vec<&str> = body.lines().filter(|l| l.contains("reload")).collect();
        Err(format!("reload lines {reloads:?}; log:\n{}", keyway.log()))
    });
}

/// One RESP2 command as bytes.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads exactly `expected.len()` bytes and checks them.
fn expect_bytes(s: &mut TcpStream, expected: &str, keyway: &Keyway) {
    let mut got = vec![0u8; expected.len()];
    if let Err(e) = s.read_exact(&mut got) {
        panic!(
            "reading {expected:?}: {e} (got {:?}); log:\n{}",
            String::from_utf8_lossy(&got),
            keyway.log()
        );
    }
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

/// A raw session through `port`: connected (retrying until the proxy
/// listens), AUTH and PING answered.
fn raw_session(keyway: &Keyway, lab: &Lab, port: u16) -> TcpStream {
    let mut s = eventually(&format!("connect to port {port}"), || {
        assert!(keyway.running(), "keyway exited; log:\n{}", keyway.log());
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{e}; log:\n{}", keyway.log()))
    });
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    let password = lab.password().expect("lab password");
    let mut req = resp(&[b"AUTH", password.as_bytes()]);
    req.extend(resp(&[b"PING"]));
    s.write_all(&req).expect("send AUTH + PING");
    expect_bytes(&mut s, "+OK\r\n+PONG\r\n", keyway);
    s
}

fn ping(s: &mut TcpStream, keyway: &Keyway) {
    s.write_all(&resp(&[b"PING"])).expect("send PING");
    expect_bytes(s, "+PONG\r\n", keyway);
}

/// Reads until the proxy closes the session (EOF, or a reset); panics if it
/// is still open after `DEADLINE` (the read timeout).
fn wait_closed(s: &mut TcpStream, keyway: &Keyway) {
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "session still open after {DEADLINE:?}; log:\n{}",
                    keyway.log()
                )
            }
            // A reset is a close too.
            Err(_) => return,
        }
    }
}

/// Whether a new connection to `port` is refused.
fn refused(port: u16) -> bool {
    match TcpStream::connect(("127.0.0.1", port)) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(s) => {
            let _ = s.shutdown(Shutdown::Both);
            false
        }
    }
}

/// `/healthz`: waits until it answers `(code, body)`.
fn wait_healthz(keyway: &Keyway, admin_port: u16, code: u16, body: &str) {
    eventually(&format!("/healthz {code} {body:?}"), || {
        match http_get(admin_port, "/healthz") {
            Some((c, b)) if c == code && b.trim() == body => Ok(()),
            other => Err(format!("{other:?}; log:\n{}", keyway.log())),
        }
    });
}

/// A lab, a config file with `redis` on a free port and the admin server on
/// another, and `keyway run` on it.
struct Setup {
    lab: Lab,
    config: PathBuf,
    port: u16,
    admin_port: u16,
    keyway: Keyway,
}

fn setup(head: &str, env: &[(&str, &str)]) -> Setup {
    let lab = lab();
    let port = keyway_lab::free_port();
    let admin_port = keyway_lab::free_port();
    let config = lab.dir().join("keyway.toml");
    write(
        &config,
        &config_text(admin_port, head, &[service_toml(&lab, "redis", port, 1)]),
    );
    let keyway = Keyway::start(&config, lab.dir().join("keyway.log"), env);
    Setup {
        lab,
        config,
        port,
        admin_port,
        keyway,
    }
}

// ---------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------

#[test]
fn sighup_invalid_config_keeps_running() {
    let Setup {
        lab,
        config,
        port,
        admin_port,
        keyway,
    } = setup("", &[]);
    wait_pong(&keyway, &lab, port);
    wait_metric(
        &keyway,
        admin_port,
        "keyway_config_reloads_total{result=\"failure\"} 0",
    );

    // An invalid file: refused, the running configuration stays.
    write(
        &config,
        "[[service]]\nname = \"redis\"\nlisten = \"127.0.0.1:notaport\"\nnodes = []\n",
    );
    keyway.signal("-HUP");
    wait_metric(
        &keyway,
        admin_port,
        "keyway_config_reloads_total{result=\"failure\"} 1",
    );
    assert!(keyway.running(), "keyway exited; log:\n{}", keyway.log());
    assert_eq!(redis_cli(&lab, port, &["PING"]), "PONG");
    assert_eq!(redis_cli(&lab, port, &["SET", "ops:k", "v"]), "OK");
    let log = keyway.log();
    assert!(
        log.contains("notaport"),
        "the problem is not logged:\n{log}"
    );

    // A valid file adding a second service: applied.
    let second = keyway_lab::free_port();
    write(
        &config,
        &config_text(
            admin_port,
            "",
            &[
                service_toml(&lab, "redis", port, 1),
                service_toml(&lab, "second", second, 1),
            ],
        ),
    );
    keyway.signal("-HUP");
    wait_pong(&keyway, &lab, second);
    assert_eq!(redis_cli(&lab, second, &["GET", "ops:k"]), "v");
    wait_metric(
        &keyway,
        admin_port,
        "keyway_config_reloads_total{result=\"success\"} 1",
    );
    let metrics = http_get(admin_port, "/metrics").expect("/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l == "keyway_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    assert_eq!(redis_cli(&lab, port, &["PING"]), "PONG");

    keyway.signal("-TERM");
    let status = keyway.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", keyway.log());
    let password = lab.password().expect("lab password");
    assert!(
        !keyway.log().contains(password),
        "the password reached the log"
    );
}

// ---------------------------------------------------------------------------
// SIGTERM
// ---------------------------------------------------------------------------

#[test]
fn sigterm_drains() {
    let Setup {
        lab,
        port,
        admin_port,
        keyway,
        ..
    } = setup("", &[]);
    let mut session = raw_session(&keyway, &lab, port);
    wait_healthz(&keyway, admin_port, 200, "ok");

    keyway.signal("-TERM");
    // Draining: /healthz says so at once (the admin server lives until the
    // drain is over), the listener is closed, the open session goes on.
    wait_healthz(&keyway, admin_port, 503, "draining");
    eventually(&format!("new connections to {port} refused"), || {
        if refused(port) {
            Ok(())
        } else {
            Err(format!("accepted; log:\n{}", keyway.log()))
        }
    });
    for _ in 0..3 {
        ping(&mut session, &keyway);
    }
    assert!(keyway.running(), "exited with a session open");
    assert_eq!(
        http_get(admin_port, "/healthz").map(|(c, _)| c),
        Some(503),
        "still draining while the session is open"
    );

    // The last session ends: Keyway exits 0.
    drop(session);
    let status = keyway.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", keyway.log());
    assert!(refused(admin_port), "the admin server outlived the process");
}

#[test]
fn sigterm_drain_timeout_closes_idle_sessions() {
    let Setup {
        lab, port, keyway, ..
    } = setup("\n[drain]\ntimeout = \"1s\"\n", &[]);
    let mut session = raw_session(&keyway, &lab, port);

    keyway.signal("-TERM");
    wait_closed(&mut session, &keyway);
    let status = keyway.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", keyway.log());
}

#[test]
fn second_sigterm_closes_sessions_at_once() {
    // A drain far longer than DEADLINE: only the second signal can end it in time.
    let Setup {
        lab,
        port,
        admin_port,
        keyway,
        ..
    } = setup("\n[drain]\ntimeout = \"60s\"\n", &[]);
    let mut session = raw_session(&keyway, &lab, port);

    keyway.signal("-TERM");
    // The first signal is handled (two signals sent back to back could be
    // coalesced into one by the OS).
    wait_healthz(&keyway, admin_port, 503, "draining");
    ping(&mut session, &keyway);
    assert!(keyway.running());

    keyway.signal("-TERM");
    wait_closed(&mut session, &keyway);
    let status = keyway.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", keyway.log());
    let log = keyway.log();
    assert!(log.contains("second stop signal"), "{log}");
}

#[test]
fn sighup_during_drain_keeps_the_second_sigterm_working() {
    // As above, with a SIGHUP (a logrotate hook, an operator's reload) between
    // the two SIGTERMs: the reload is not done while draining, but the second
    // SIGTERM must still close the sessions at once.
    let Setup {
        lab,
        port,
        admin_port,
        keyway,
        ..
    } = setup("\n[drain]\ntimeout = \"60s\"\n", &[]);
    let mut session = raw_session(&keyway, &lab, port);

    keyway.signal("-TERM");
    wait_healthz(&keyway, admin_port, 503, "draining");
    keyway.signal("-HUP");
    ping(&mut session, &keyway);
    assert!(keyway.running(), "a SIGHUP during the drain stopped keyway");

    keyway.signal("-TERM");
    wait_closed(&mut session, &keyway);
    let status = keyway.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", keyway.log());
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

/// Collects the datagrams sent to a notify socket, in a thread.
struct Collector {
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(socket: UnixDatagram) -> Collector {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, stopped) = (Arc::clone(&messages), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stopped.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    out.lock().expect("messages").push(text);
                }
            }
        });
        Collector {
            messages,
            stop,
            thread: Some(thread),
        }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("messages").clone()
    }

    /// Waits until a message after index `from` satisfies `pred`; its index.
    fn wait_for(&self, from: usize, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        eventually(&format!("{what} after message {from}"), || {
            let messages = self.messages();
            messages
                .iter()
                .skip(from)
                .position(|m| pred(m))
                .map(|i| i + from)
                .ok_or_else(|| format!("{messages:?}"))
        })
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The value of `KEY=` in a notify message.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads it.
fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec).expect("secs") * 1_000_000
        + u64::try_from(ts.tv_nsec).expect("nanos") / 1_000
}

#[test]
fn systemd_notify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let collector = Collector::start(UnixDatagram::bind(&path).expect("bind the notify socket"));
    let notify = path.display().to_string();
    // rise = 1: the first decision already has the route, so READY names it.
    let Setup {
        lab, port, keyway, ..
    } = setup(
        "",
        &[
            ("NOTIFY_SOCKET", notify.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let master = lab.node(0).addr();
    let routes = format!("redis -> {master}");

    let ready = collector.wait_for(0, "READY=1", |m| m.lines().any(|l| l == "READY=1"));
    let first = &collector.messages()[ready];
    assert_eq!(field(first, "STATUS"), Some(routes.as_str()), "{first:?}");
    // Ready means serving.
    wait_pong(&keyway, &lab, port);
    // The watchdog pings (every 100 ms, half of WATCHDOG_USEC).
    eventually("three WATCHDOG=1", || {
        let messages = collector.messages();
        if messages.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3 {
            Ok(())
        } else {
            Err(format!("{messages:?}"))
        }
    });

    // SIGHUP with the same file: RELOADING=1 (MONOTONIC_USEC now), then READY=1.
    let before_hup = collector.messages().len();
    let usec_before = monotonic_usec();
    keyway.signal("-HUP");
    let reloading = collector.wait_for(before_hup, "RELOADING=1", |m| {
        m.lines().any(|l| l == "RELOADING=1")
    });
    let usec_after = monotonic_usec();
    let message = &collector.messages()[reloading];
    let usec: u64 = field(message, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric MONOTONIC_USEC in {message:?}"));
    assert!(
        (usec_before..=usec_after).contains(&usec),
        "MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC between {usec_before} and {usec_after}"
    );
    let ready = collector.wait_for(reloading + 1, "READY=1 after the reload", |m| {
        m.lines().any(|l| l == "READY=1")
    });
    let message = &collector.messages()[ready];
    assert_eq!(
        field(message, "STATUS"),
        Some(routes.as_str()),
        "{message:?}"
    );
    assert_eq!(redis_cli(&lab, port, &["PING"]), "PONG");

    // SIGTERM: STOPPING=1, then exit 0.
    let before_term = collector.messages().len();
    keyway.signal("-TERM");
    collector.wait_for(before_term, "STOPPING=1", |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    let status = keyway.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", keyway.log());

    let all = collector.messages();
    let stopping_before_term = all[..before_term]
        .iter()
        .any(|m| m.lines().any(|l| l == "STOPPING=1"));
    assert!(!stopping_before_term, "STOPPING=1 before SIGTERM: {all:?}");
    let readies = all
        .iter()
        .filter(|m| m.lines().any(|l| l == "READY=1"))
        .count();
    assert_eq!(
        readies, 2,
        "one READY=1 at start, one after the reload: {all:?}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn systemd_notify_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;

    let name = format!("keyway-ops-{}-{}", std::process::id(), monotonic_usec());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let collector = Collector::start(UnixDatagram::bind_addr(&addr).expect("bind abstract"));
    let notify = format!("@{name}");
    let Setup { lab, keyway, .. } = setup("", &[("NOTIFY_SOCKET", notify.as_str())]);

    let ready = collector.wait_for(0, "READY=1", |m| m.lines().any(|l| l == "READY=1"));
    let message = &collector.messages()[ready];
    let routes = format!("redis -> {}", lab.node(0).addr());
    assert_eq!(
        field(message, "STATUS"),
        Some(routes.as_str()),
        "{message:?}"
    );
    // No WATCHDOG_USEC: no watchdog pings.
    let before_term = collector.messages().len();
    keyway.signal("-TERM");
    collector.wait_for(before_term, "STOPPING=1", |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    let status = keyway.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", keyway.log());
    let all = collector.messages();
    assert!(!all.iter().any(|m| m == "WATCHDOG=1"), "{all:?}");
}
