//! Process signals.
//!
//! - SIGTERM, SIGINT: stop accepting and close sessions (the graceful drain with
//!   a timeout comes with the operations work).
//! - SIGHUP: configuration reload is not implemented yet; the signal is caught
//!   and logged so that a stray `kill -HUP` (or a unit's `ExecReload`) never
//!   kills the proxy, which is the default action of SIGHUP.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on SIGTERM or SIGINT; logs SIGHUP.
pub async fn watch(shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop keyway with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break }
            _ = hup.recv() => tracing::warn!("SIGHUP: configuration reload is not supported yet; restart keyway to apply a new configuration"),
            () = shutdown.cancelled() => return,
        }
    }
    shutdown.cancel();
}
