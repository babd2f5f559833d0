//! The accept loop of one service.
//!
//! Invariants:
//! - Every accepted client holds one `max_sessions` permit for its whole life; a
//!   client accepted past the limit is closed at once (and logged), so a flood
//!   cannot exhaust file descriptors or memory.
//! - Each client is handled with the service settings current when it was
//!   accepted: a reload publishes a new [`ServiceContext`] and only new clients
//!   see it; sessions already open keep theirs.
//! - Sessions run in the service's own task tracker and stop on the service's
//!   session token, not on the listener's: stopping the listener (drain, reload
//!   of the listen address) never cuts an open session.
//! - A listener runs on one data-path worker (`crate::workers`), each worker
//!   with its own descriptor of the service's socket; the sessions it accepts
//!   run on that worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::Handler;
use crate::metrics::Refused;
use crate::proxy::ServiceContext;

/// Accepts clients for one service and spawns a [`Handler`] for each.
#[derive(Debug)]
pub struct Listener {
    /// Registered with the runtime that runs [`Listener::run`], at its start.
    tcp: std::net::TcpListener,
    ctx: watch::Receiver<Arc<ServiceContext>>,
    sessions: TaskTracker,
    sessions_stop: CancellationToken,
}

impl Listener {
    pub(crate) fn new(
        tcp: std::net::TcpListener,
        ctx: watch::Receiver<Arc<ServiceContext>>,
        sessions: TaskTracker,
        sessions_stop: CancellationToken,
    ) -> Self {
        Listener {
            tcp,
            ctx,
            sessions,
            sessions_stop,
        }
    }

    /// Accepts until `stop` is cancelled. `tcp` must be non-blocking.
    pub async fn run(self, stop: CancellationToken) {
        let tcp = match TcpListener::from_std(self.tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::error!(service = %self.ctx.borrow().service.name, error = %e,
                    "cannot register the listening socket; this worker accepts nothing");
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = tcp.accept() => accepted,
            };
            let ctx = self.ctx.borrow().clone();
            let service = ctx.service.name.as_str();
            let (client, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE, ENOBUFS...: transient and per-process. Back off a
                    // little instead of spinning on an error accept returns at once.
                    tracing::warn!(service, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = ctx.sessions.clone().try_acquire_owned() else {
                ctx.metrics.refused(Refused::MaxSessions);
                tracing::warn!(service, client = %peer, max_sessions = ctx.service.limits.max_sessions,
                    "max_sessions reached; closing new client");
                continue;
            };
            let handler = Handler::new(ctx.clone(), client, peer, permit);
            self.sessions.spawn(handler.run(self.sessions_stop.clone()));
        }
        if let Ok(addr) = tcp.local_addr() {
            tracing::info!(service = %self.ctx.borrow().service.name, listen = %addr, "listener stopped");
        }
    }
}
