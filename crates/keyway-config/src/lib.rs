//! Keyway's configuration: TOML files in, a validated [`Config`] out.
//!
//! This crate reads the main file, the files its `include` globs match and the
//! password files, and checks everything, reporting **every** problem at once,
//! each as `FILE:LINE:COL: message` (what `keyway check` prints). A [`Config`]
//! that comes out of it needs no further checking: addresses are socket
//! addresses, durations are in range, names are unique, passwords are loaded.
//!
//! It is not: the watcher that reloads on SIGHUP, the command line, or anything
//! async (no tokio here); it never connects to anything and never resolves a
//! host name.
//!
//! Modules:
//! - `types`: the validated types ([`Config`], [`Service`], [`Check`], ...) and
//!   their defaults.
//! - `problem`: [`Problem`] and [`Problems`], with positions as `line:col`.
//! - `duration`: [`parse_duration`] (`500ms`, `2s`, `1.5s`, `1m`, `1h`).
//! - `walk` (private, pure): one file's text to drafts, by walking a spanned
//!   TOML tree key by key; cross-service checks.
//! - `load` (private, the only I/O): reading files, expanding includes,
//!   reading password files.
//!
//! The user-facing schema is documented in `docs/configuration.md` and
//! `config/keyway.example.toml`.

mod duration;
mod load;
mod problem;
mod types;
mod walk;

use std::path::Path;

pub use duration::parse_duration;
pub use problem::{Problem, Problems};
pub use types::*;

impl Config {
    /// Load the file at `path`, its includes and its password files, and check
    /// everything. Relative paths in the file are relative to its directory.
    pub fn from_file(path: &Path) -> Result<Config, Problems> {
        load::from_file(path)
    }

    /// Like [`Config::from_file`], with the main file's text given. `origin`
    /// names it in messages and its directory anchors relative `include`
    /// patterns and `password_file` paths (included files and password files
    /// are still read from disk).
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, Problems> {
        load::from_toml_str(text, origin)
    }
}
