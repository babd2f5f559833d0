//! Logging set-up: text or JSON lines on stderr, filtered by `[log] level`.
//!
//! `KEYWAY_LOG`, when set, overrides the configured level (same syntax as
//! `RUST_LOG`), so an operator can turn on debug logs without editing the file.

use std::io::IsTerminal;

use keyway_config::{Log, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call
/// keeps the first subscriber), which tests rely on.
pub fn init(log: &Log) {
    let filter = std::env::var("KEYWAY_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only on a terminal: under systemd stderr goes to the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
