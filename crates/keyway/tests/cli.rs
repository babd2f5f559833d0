//! The `keyway` binary as an operator uses it: `check`, `run` with redis-cli
//! against a real lab, signals.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEYWAY: &str = env!("CARGO_BIN_EXE_keyway");
const DEADLINE: Duration = Duration::from_secs(30);

fn keyway(args: &[&str]) -> Output {
    Command::new(KEYWAY)
        .args(args)
        .output()
        .expect("run keyway")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

/// Kills the child on drop so a failed assertion leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn redis_cli(password_file: &Path, port: u16, args: &[&str]) -> String {
    let password = std::fs::read_to_string(password_file).expect("password file");
    let out = Command::new("redis-cli")
        .env("REDISCLI_AUTH", password)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli not found: apt-get install -y redis-tools");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn version_and_help() {
    let out = keyway(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    let out = keyway(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "lab"] {
        assert!(text.contains(cmd), "help lacks {cmd}: {text}");
    }
}

#[test]
fn check_lists_every_problem_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "bad.toml",
        r#"[[service]]
name = "redis"
listen = "127.0.0.1:notaport"
nodes = ["127.0.0.1:7000"]
colour = "blue"

[service.check]
interval = "5x"
"#,
    );
    let out = keyway(&["check", "-c", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "expected 3 problems, got:\n{stdout}");
    for (line_no, needle) in [(3, "listen"), (5, "colour"), (8, "5x")] {
        let prefix = format!("{file}:{line_no}:");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "no problem at {prefix} about {needle}:\n{stdout}"
        );
    }
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "good.toml",
        "[[service]]\nname = \"redis\"\nlisten = \"127.0.0.1:6379\"\nnodes = [\"127.0.0.1:7000\"]\n",
    );
    let out = keyway(&["check", "-c", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn check_of_a_missing_file_fails() {
    let out = keyway(&["check", "-c", "/nonexistent/keyway.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/nonexistent/keyway.toml"));
}

#[test]
fn run_serves_redis_cli_survives_sighup_and_stops_on_sigterm() {
    let lab = match keyway_lab::Lab::builder().replicas(1).start() {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start the Redis lab: {e}"),
    };
    let password_file = lab.password_file().expect("lab password file");
    let port = keyway_lab::free_port();
    let config = write(
        lab.dir(),
        "keyway.toml",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 5\n[[service]]\nname = \"redis\"\nlisten = \"127.0.0.1:{port}\"\nnodes = [\"{}\", \"{}\"]\npassword_file = \"{}\"\n[service.check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n",
            lab.node(0).addr(),
            lab.node(1).addr(),
            password_file.display()
        ),
    );
    let mut child = Running(
        Command::new(KEYWAY)
            .args(["run", "-c", &config])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyway"),
    );

    // A client is held until the first route exists, so the first answer may
    // take a few probe intervals; retry only if the proxy is not listening yet.
    let started = Instant::now();
    let mut answer = String::new();
    while started.elapsed() < DEADLINE {
        answer = redis_cli(password_file, port, &["SET", "keyway-cli", "v"]);
        if answer == "OK" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answer, "OK");
    assert_eq!(redis_cli(password_file, port, &["GET", "keyway-cli"]), "v");
    assert_eq!(
        lab.node(0)
            .cmd(&["GET", "keyway-cli"])
            .ok()
            .and_then(|r| r.as_str().map(String::from)),
        Some("v".to_string()),
        "the write went to the master"
    );

    // SIGHUP must not kill it (reload comes later; the default action would).
    signal(&child.0, "-HUP");
    assert_eq!(redis_cli(password_file, port, &["PING"]), "PONG");
    assert!(child.0.try_wait().expect("try_wait").is_none());

    signal(&child.0, "-TERM");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "keyway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");

    let mut log = String::new();
    if let Some(mut stderr) = child.0.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    assert!(
        log.contains("session closed"),
        "no session log line:\n{log}"
    );
    assert!(
        log.contains("keyway running") && log.contains("workers=5"),
        "[runtime] workers = 5 not applied:\n{log}"
    );
    let password = std::fs::read_to_string(password_file).expect("password");
    assert!(!log.contains(&password), "the password reached the log");
}
