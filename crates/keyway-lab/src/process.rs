//! One supervised server process: program, config file, directory, logs, child.
//!
//! Nothing here knows about Redis: a `RedisNode` and a `SentinelNode` each wrap a
//! [`Process`] and supply their own config and readiness probe.
//!
//! Invariants:
//! - the `Child` is kept unreaped until we wait on it ourselves, so its pid cannot be
//!   reused by an unrelated process while we may still signal it;
//! - signals are sent while holding the child lock, for the same reason;
//! - dropping a `Process` sends `SIGKILL` and reaps it, whatever state it is in
//!   (running, stopped, already dead), including during a panic's unwinding.
//!
//! Signals other than `SIGKILL` go through `kill(1)`: the workspace forbids `unsafe`, and
//! `std` offers only `Child::kill`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::LabError;

/// How often start-up and state checks poll.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many log lines an error shows.
const LOG_TAIL_LINES: usize = 30;

/// The outcome of [`Process::wait_ready`].
#[derive(Debug)]
pub(crate) enum Startup {
    /// The probe succeeded.
    Ready,
    /// The process exited first.
    Exited {
        status: ExitStatus,
        log_tail: String,
    },
    /// The deadline passed with the process still running.
    TimedOut { log_tail: String },
}

/// A server process started from a config file in its own directory.
#[derive(Debug)]
pub(crate) struct Process {
    /// The name used in errors, e.g. `node-0`.
    name: String,
    program: PathBuf,
    /// Arguments after the config file (e.g. `--sentinel`).
    extra_args: Vec<OsString>,
    dir: PathBuf,
    config_path: PathBuf,
    /// The server's own `logfile`.
    log_path: PathBuf,
    /// Captured stdout and stderr: config errors are printed there before `logfile`
    /// is even opened.
    stdio_path: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Process {
    /// Describes a process; creates `dir` but starts nothing.
    pub(crate) fn new(
        name: impl Into<String>,
        program: &Path,
        extra_args: Vec<OsString>,
        dir: PathBuf,
        config_file: &str,
        log_file: &str,
    ) -> Result<Process, LabError> {
        fs::create_dir_all(&dir).map_err(|source| LabError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(Process {
            name: name.into(),
            program: program.to_owned(),
            extra_args,
            config_path: dir.join(config_file),
            log_path: dir.join(log_file),
            stdio_path: dir.join("stdio.log"),
            dir,
            child: Mutex::new(None),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Deletes both log files, e.g. between start attempts on different ports.
    pub(crate) fn clear_logs(&self) {
        for path in [&self.log_path, &self.stdio_path] {
            // Missing is fine: that is the state we want.
            let _ = fs::remove_file(path);
        }
    }

    /// Writes the config file (replacing any previous one).
    pub(crate) fn write_config(&self, contents: &[u8]) -> Result<(), LabError> {
        fs::write(&self.config_path, contents).map_err(|source| LabError::Write {
            path: self.config_path.clone(),
            source,
        })
    }

    /// A poisoned lock only means another thread panicked mid-call; the `Option<Child>`
    /// is still meaningful, and Drop must work during unwinding, so take it anyway.
    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the program with the config file. A still-running previous child is
    /// killed first, so there is never more than one.
    pub(crate) fn spawn(&self) -> Result<u32, LabError> {
        let mut slot = self.lock();
        if let Some(mut old) = slot.take() {
            kill_and_reap(&mut old);
        }
        let stdio = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdio_path)
            .map_err(|source| LabError::Write {
                path: self.stdio_path.clone(),
                source,
            })?;
        let stderr = stdio.try_clone().map_err(|source| LabError::Write {
            path: self.stdio_path.clone(),
            source,
        })?;
        let child = Command::new(&self.program)
            .arg(&self.config_path)
            .args(&self.extra_args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stderr)
            .spawn()
            .map_err(|source| LabError::Spawn {
                name: self.name.clone(),
                program: self.program.clone(),
                source,
            })?;
        let pid = child.id();
        *slot = Some(child);
        Ok(pid)
    }

    /// The pid of the live child. A child that died on its own is reaped here and
    /// reported as `None`.
    pub(crate) fn pid(&self) -> Option<u32> {
        reap_if_exited(&mut self.lock()).err()
    }

    /// `SIGKILL` and wait. Works on stopped processes; a no-op without a child.
    pub(crate) fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            kill_and_reap(&mut child);
        }
    }

    /// Waits up to `timeout` for the child to exit on its own (e.g. after `SHUTDOWN`).
    /// Returns true once no child is left.
    pub(crate) fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut slot = self.lock();
                if slot.is_none() || reap_if_exited(&mut slot).is_ok() {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `SIGSTOP` and waits until the kernel reports the process stopped, so the
    /// caller can rely on it not answering any more.
    pub(crate) fn stop(&self) -> Result<(), LabError> {
        self.signal("STOP", |state| matches!(state, 'T' | 't'))
    }

    /// Sends `SIGCONT` and waits until the process is no longer stopped.
    pub(crate) fn cont(&self) -> Result<(), LabError> {
        self.signal("CONT", |state| !matches!(state, 'T' | 't'))
    }

    fn signal(&self, signal: &'static str, reached: fn(char) -> bool) -> Result<(), LabError> {
        // Hold the lock for the whole call: the child cannot be reaped meanwhile, so the
        // pid is still ours when kill(1) runs.
        let slot = self.lock();
        let Some(pid) = slot.as_ref().map(Child::id) else {
            return Err(LabError::NotRunning {
                name: self.name.clone(),
            });
        };
        let fail = |source| LabError::Signal {
            signal,
            pid,
            source,
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(fail)?;
        if !status.success() {
            return Err(fail(io::Error::other(format!("kill(1) {status}"))));
        }
        // Signal delivery is asynchronous; poll /proc so "stopped" means stopped.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match proc_state(pid) {
                Some(state) if !reached(state) => thread::sleep(Duration::from_millis(2)),
                // Reached, or /proc unreadable: nothing more to wait for.
                _ => return Ok(()),
            }
        }
        Err(fail(io::Error::new(
            io::ErrorKind::TimedOut,
            "process state did not change",
        )))
    }

    /// Polls `probe(pid)` every [`POLL_INTERVAL`] until it returns true, the process
    /// exits, or `timeout` passes.
    pub(crate) fn wait_ready(
        &self,
        timeout: Duration,
        mut probe: impl FnMut(u32) -> bool,
    ) -> Startup {
        let deadline = Instant::now() + timeout;
        loop {
            let pid = {
                let mut slot = self.lock();
                match reap_if_exited(&mut slot) {
                    Ok(Some(status)) => {
                        drop(slot);
                        return Startup::Exited {
                            status,
                            log_tail: self.log_tail(),
                        };
                    }
                    Ok(None) => {
                        return Startup::Exited {
                            // No child at all: someone killed it meanwhile.
                            status: exit_status_unknown(),
                            log_tail: self.log_tail(),
                        };
                    }
                    Err(pid) => pid,
                }
            };
            // The probe runs without the lock: it may take a while and must not block kill().
            if probe(pid) {
                return Startup::Ready;
            }
            if Instant::now() >= deadline {
                return Startup::TimedOut {
                    log_tail: self.log_tail(),
                };
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The last lines of the server log and of captured stdout/stderr.
    pub(crate) fn log_tail(&self) -> String {
        let mut out = String::new();
        for path in [&self.log_path, &self.stdio_path] {
            let tail = tail_lines(path, LOG_TAIL_LINES);
            if !tail.is_empty() {
                out.push_str(&format!("==> {} <==\n{tail}", path.display()));
            }
        }
        if out.is_empty() {
            out.push_str("(no log output)\n");
        }
        out
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `Err(pid)` while the child runs (or is stopped); `Ok(Some(status))` when it had
/// exited and was just reaped (the slot is emptied); `Ok(None)` when there was no child.
fn reap_if_exited(slot: &mut Option<Child>) -> Result<Option<ExitStatus>, u32> {
    let Some(child) = slot.as_mut() else {
        return Ok(None);
    };
    match child.try_wait() {
        Ok(None) => Err(child.id()),
        Ok(Some(status)) => {
            *slot = None;
            Ok(Some(status))
        }
        // ECHILD and the like: the child is gone as far as we can tell.
        Err(_) => {
            *slot = None;
            Ok(Some(exit_status_unknown()))
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    // Redis forks for BGSAVE and diskless sync. Killed alone, the parent would leave
    // such a child running as an orphan (for seconds with a large dataset), so the
    // children are listed while the parent still holds them, then killed too. The
    // orphaned zombies are reaped by init, not by us: that needs no code here.
    let orphans = match child.try_wait() {
        Ok(None) => children_of(child.id()),
        _ => Vec::new(),
    };
    // kill() fails only if the child was already reaped; wait() then returns at once.
    let _ = child.kill();
    if !orphans.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(orphans.iter().map(u32::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.wait();
    // SIGKILL is delivered asynchronously; wait until each orphan is dead (a zombie
    // for init, or gone), so "killed" means no longer running on return.
    let deadline = Instant::now() + Duration::from_secs(2);
    for pid in orphans {
        while matches!(proc_state(pid), Some(state) if state != 'Z') && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The pids whose parent is `pid`, from a scan of `/proc`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| proc_stat_fields(candidate).and_then(|f| f.ppid) == Some(pid))
        .collect()
}

/// An exit status for "gone, reason unknown" (shown as a signal 9 death).
fn exit_status_unknown() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(9)
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, `Z`...).
pub(crate) fn proc_state(pid: u32) -> Option<char> {
    proc_stat_fields(pid).map(|f| f.state)
}

#[derive(Debug)]
struct StatFields {
    state: char,
    ppid: Option<u32>,
}

fn proc_stat_fields(pid: u32) -> Option<StatFields> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may itself contain spaces or ')'.
    let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = after.next()?.chars().next()?;
    let ppid = after.next().and_then(|p| p.parse().ok());
    Some(StatFields { state, ppid })
}

/// The last `lines` lines of a file, reading at most its last 64 KiB.
fn tail_lines(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(MAX))).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The public methods a [`crate::RedisNode`] and a [`crate::SentinelNode`] share: what
/// only reads or signals the [`Process`] each wraps, and plain commands.
///
/// Invoked inside each type's own `impl` block, so these stay inherent methods with the
/// same signatures and docs as before: callers need no trait in scope. The type must
/// have the fields `process: Process`, `port: u16`, `password: Option<String>` and
/// `start_timeout: Duration`. `$kind` (`"node"`, `"sentinel"`) and `$example` (its
/// first lab name) fill in the docs.
macro_rules! lab_process_methods {
    ($kind:literal, $example:literal) => {
        /// `127.0.0.1:port`.
        pub fn addr(&self) -> std::net::SocketAddr {
            $crate::node::loopback(self.port)
        }

        /// The TCP port, stable across restarts.
        pub fn port(&self) -> u16 {
            self.port
        }

        /// The pid of the live process; `None` once it was killed, shut down or
        /// crashed.
        pub fn pid(&self) -> Option<u32> {
            self.process.pid()
        }

        #[doc = concat!("The lab name, e.g. `", $example, "`, used in errors.")]
        pub fn name(&self) -> &str {
            self.process.name()
        }

        #[doc = concat!("The ", $kind, "'s own directory (config, log, data if any).")]
        pub fn dir(&self) -> &std::path::Path {
            self.process.dir()
        }

        #[doc = concat!("The ", $kind, "'s `logfile`.")]
        pub fn log_path(&self) -> &std::path::Path {
            self.process.log_path()
        }

        #[doc = concat!("The last lines of the ", $kind, "'s log and captured stdout/stderr,")]
        /// for test failure messages.
        pub fn log_tail(&self) -> String {
            self.process.log_tail()
        }

        #[doc = concat!("The password clients of this ", $kind, " must send (`requirepass`),")]
        /// if any.
        pub fn password(&self) -> Option<&str> {
            self.password.as_deref()
        }

        /// `SIGKILL` and reap: a crash, no chance to notify anyone.
        pub fn kill(&self) {
            self.process.kill();
        }

        #[doc = concat!("`SIGSTOP`: the ", $kind, " freezes with its sockets open, like a")]
        /// hung host. Returns once the kernel reports it stopped. Failures (not running)
        /// are printed to stderr rather than returned: this is a fault injector for
        /// tests, and the test's own assertions will show the consequence.
        pub fn stop(&self) {
            self.report(self.process.stop());
        }

        #[doc = concat!("`SIGCONT`: resumes a stopped ", $kind, ".")]
        pub fn cont(&self) {
            self.report(self.process.cont());
        }

        /// Prints the failure of a fault injector to stderr (see `stop`).
        fn report(&self, result: Result<(), $crate::LabError>) {
            if let Err(e) = result {
                eprintln!(
                    "keyway-lab: {}: {}",
                    self.name(),
                    $crate::node::error_chain(&e)
                );
            }
        }

        /// Connects, authenticates and runs one command. An error reply is
        /// `Ok(Reply::Error)`; see [`Reply::into_result`](crate::Reply::into_result).
        pub fn cmd(&self, args: &[&str]) -> Result<$crate::Reply, $crate::LabError> {
            self.client()?.cmd(args)
        }

        /// A connected, authenticated client with a 5 s timeout
        /// ([`CMD_TIMEOUT`](crate::CMD_TIMEOUT)).
        pub fn client(&self) -> Result<$crate::Client, $crate::LabError> {
            $crate::Client::connect(self.addr(), self.password(), $crate::CMD_TIMEOUT)
        }

        /// Starts the process again from its config file as it is now, and waits
        /// until it answers `PING` as itself.
        fn respawn(&self) -> Result<(), $crate::LabError> {
            self.process.spawn()?;
            $crate::node::wait_started(
                &self.process,
                self.addr(),
                self.password(),
                self.start_timeout,
            )
        }
    };
}
pub(crate) use lab_process_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_state_reads_a_live_process() {
        // The main thread of the test binary may be running or sleeping, never stopped.
        let state = proc_state(std::process::id()).expect("own /proc entry");
        assert!(matches!(state, 'R' | 'S'), "{state}");
    }

    #[test]
    fn children_of_finds_a_spawned_child() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let found = children_of(std::process::id()).contains(&child.id());
        kill_and_reap(&mut child);
        assert!(found);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        fs::write(&path, "a\nb\nc\n").expect("write");
        assert_eq!(tail_lines(&path, 2), "b\nc\n");
        assert_eq!(tail_lines(&dir.path().join("missing"), 2), "");
    }
}
