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
//! - The accept loop runs on the main runtime; each session runs on the
//!   data-path worker with the fewest open sessions (`crate::workers`).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::Handler;
use crate::metrics::Refused;
use crate::proxy::ServiceContext;
use crate::workers::Workers;

/// Accepts clients for one service and spawns a [`Handler`] for each.
#[derive(Debug)]
pub struct Listener {
    /// Registered with the runtime that runs [`Listener::run`], at its start.
    tcp: std::net::TcpListener,
    workers: Arc<Workers>,
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
        workers: Arc<Workers>,
    ) -> Self {
        Listener {
            tcp,
            ctx,
            sessions,
            sessions_stop,
            workers,
        }
    }

    /// Accepts until `stop` is cancelled. `tcp` must be non-blocking.
    pub async fn run(self, stop: CancellationToken) {
        let tcp = match TcpListener::from_std(self.tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::error!(service = %self.ctx.borrow().service.name, error = %e,
                    "cannot register the listening socket; accepting nothing");
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
            // The socket moves to a worker's event loop: out of this one here,
            // into the worker's when the session first runs there.
            let client = match client.into_std() {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(service, client = %peer, error = %e,
                        "cannot hand the client to a worker");
                    continue;
                }
            };
            let stop = self.sessions_stop.clone();
            self.workers
                .spawn(&self.sessions, move |on_worker| async move {
                    let _on_worker = on_worker;
                    match TcpStream::from_std(client) {
                        Ok(client) => Handler::new(ctx, client, peer, permit).run(stop).await,
                        Err(e) => tracing::warn!(service = %ctx.service.name, client = %peer,
                        error = %e, "cannot register the client on a worker"),
                    }
                });
        }
        if let Ok(addr) = tcp.local_addr() {
            tracing::info!(service = %self.ctx.borrow().service.name, listen = %addr, "listener stopped");
        }
    }
}
