//! Helpers shared by keyway-lab's integration tests (`tests/lab.rs`,
//! `tests/sentinel.rs`); each includes this module with `mod common;`.

use std::path::Path;

use keyway_lab::{Lab, LabBuilder};

/// Starts the lab `builder` describes; panics with the whole error chain.
pub fn started(builder: LabBuilder) -> Lab {
    match builder.start() {
        Ok(lab) => lab,
        Err(e) => panic!("lab did not start: {}", chain(&e)),
    }
}

/// "message: cause: cause", for panic messages.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

/// Whether a process with this pid exists (zombies included).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Checks that `pids` of `lab` are `expected` processes, all alive; drops the
/// lab; then checks that every one was killed and reaped, and the lab's
/// directory removed.
pub fn assert_drop_reaps(lab: Lab, pids: &[u32], expected: usize) {
    let dir = lab.dir().to_owned();
    assert_eq!(pids.len(), expected);
    assert!(pids.iter().all(|&pid| alive(pid)));

    drop(lab);
    for pid in pids {
        // No /proc entry: neither running nor a zombie, so it was killed *and* reaped.
        assert!(!alive(*pid), "pid {pid} survived the lab");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
}
