//! Keyway's benchmarks. Nothing here is a library for others: `benches/forward.rs`
//! is the criterion bench of the forwarding engines, and `src/bin/load.rs` the
//! load, memory and scale benchmark against direct Redis and HAProxy. Results
//! and the commands that produced them are in `benches/README.md`;
//! `src/bin/failover.rs` is the failover benchmark (`docs/failover.md`), and
//! `src/bin/floor.rs` the least-work epoll forwarder that `load` measures as a
//! floor. This file holds what the two benchmark binaries share.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

/// A child process (a proxy under test) killed and reaped on drop, so a failed
/// benchmark leaves nothing running.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `keyway` binary to benchmark: `KEYWAY_BIN`, else the one built next to
/// this benchmark binary (`cargo build --release -p keyway`).
pub fn keyway_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KEYWAY_BIN") {
        return Ok(PathBuf::from(path));
    }
    sibling_bin(
        "keyway",
        "cargo build --release -p keyway (or set KEYWAY_BIN)",
    )
}

/// A binary built next to the running one, or an error that says how to
/// build it (`build`).
pub fn sibling_bin(name: &str, build: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join(name);
    if !bin.exists() {
        bail!("{} not found: {build}", bin.display());
    }
    Ok(bin)
}

/// Starts HAProxy (`-db`, in the foreground) on `cfg`, which holds a
/// password: written to `path` with mode 0600 before the text goes in. Its
/// output is appended to `log`.
pub fn start_haproxy_with(path: &Path, cfg: &str, log: &Path) -> anyhow::Result<Proc> {
    fs::write(path, "")?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    fs::write(path, cfg)?;
    let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("haproxy (apt-get install -y haproxy)")?;
    Ok(Proc(child))
}

/// The first line a command prints (a tool's version, for the report).
pub fn first_line(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// `Machine: N CPUs, <model>, Linux <release>`, for the report.
pub fn machine() -> anyhow::Result<String> {
    let cpu = BufReader::new(fs::File::open("/proc/cpuinfo")?)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    Ok(format!(
        "Machine: {nproc} CPUs, {cpu}, Linux {}",
        kernel.trim()
    ))
}
