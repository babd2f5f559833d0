//! Process signals, as a stream of what they mean to Keyway.
//!
//! - SIGHUP: reload the configuration (see [`crate::serve`]).
//! - SIGTERM, SIGINT: drain and stop; a second one during the drain closes the
//!   remaining sessions at once.

use std::io;

use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

/// What a received signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Reload,
    /// Stop, with the signal's name for the log.
    Stop(&'static str),
}

/// The signals Keyway handles. Installing them replaces the default actions,
/// so a stray SIGHUP never kills the proxy.
#[derive(Debug)]
pub struct Signals {
    hup: UnixSignal,
    term: UnixSignal,
    int: UnixSignal,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal. Signals that arrive while the previous one is handled
    /// are coalesced by the OS (two SIGHUPs during a reload make one more reload).
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
        }
    }
}
