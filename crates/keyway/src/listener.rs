//! The accept loop of one service.
//!
//! Invariant: every accepted client holds one `max_sessions` permit for its whole
//! life; a client accepted past the limit is closed at once (and logged), so a
//! flood cannot exhaust file descriptors or memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::Handler;
use crate::metrics::Refused;
use crate::proxy::ServiceContext;

/// Accepts clients for one service and spawns a [`Handler`] for each.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    ctx: Arc<ServiceContext>,
    tasks: TaskTracker,
}

impl Listener {
    pub(crate) fn new(tcp: TcpListener, ctx: Arc<ServiceContext>, tasks: TaskTracker) -> Self {
        Listener { tcp, ctx, tasks }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let service = self.ctx.service.name.as_str();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.tcp.accept() => accepted,
            };
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
            let Ok(permit) = self.ctx.sessions.clone().try_acquire_owned() else {
                self.ctx.metrics.refused(Refused::MaxSessions);
                tracing::warn!(service, client = %peer, max_sessions = self.ctx.service.limits.max_sessions,
                    "max_sessions reached; closing new client");
                continue;
            };
            let handler = Handler::new(self.ctx.clone(), client, peer, permit);
            self.tasks.spawn(handler.run(shutdown.child_token()));
        }
        tracing::debug!(service, "listener stopped");
    }
}
