//! One session: find the route, connect to the node, forward, log one line.
//!
//! Invariants:
//! - A client is only ever connected to the node the route names at that moment
//!   (rule 5: never to an unconfirmed node).
//! - While there is no route, the client waits up to `timeouts.hold`, holding a
//!   `max_held` permit; past `hold`, or when no permit is left, it is closed.
//! - A failed connect to the routed node is retried, within the same `hold`
//!   budget, as soon as the route moves or after a short pause: during a
//!   failover the client is served by the new master instead of getting an error.
//! - Once connected, the session ends as soon as the route leaves its node
//!   (rule 4), whatever the node is doing.
//! - Metrics: the service's handles were resolved when it started; a session
//!   counts itself once when it connects and adds its bytes once when it
//!   closes. The sessions and held gauges move only through `Tracked` guards,
//!   so every exit path, a cancelled task included, gives back what it took.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keyway_config::NodeAddr;
use keyway_io::{Close, Transfer};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Refused, Tracked};
use crate::proxy::ServiceContext;

/// Pause before retrying a node that refused a connection while the route still
/// names it: short, since the probes will move the route within `fall` intervals.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The address of a client. A newtype so it cannot be passed as a node address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a client was closed before it got a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `max_held` clients were already waiting.
    HoldFull,
    /// No route appeared (or no node accepted) within `timeouts.hold`.
    HoldTimeout,
    /// Keyway is shutting down.
    Shutdown,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::HoldFull => "hold_full",
            Refusal::HoldTimeout => "hold_timeout",
            Refusal::Shutdown => "shutdown",
        }
    }
}

/// One client connection and everything it needs. See the module doc.
#[derive(Debug)]
pub struct Handler {
    ctx: Arc<ServiceContext>,
    client: TcpStream,
    peer: ClientAddr,
    _session: OwnedSemaphorePermit,
}

impl Handler {
    pub(crate) fn new(
        ctx: Arc<ServiceContext>,
        client: TcpStream,
        peer: SocketAddr,
        session: OwnedSemaphorePermit,
    ) -> Self {
        Handler {
            ctx,
            client,
            peer: ClientAddr(peer),
            _session: session,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let started = Instant::now();
        let service = self.ctx.service.name.as_str();
        let (node, mut node_stream) = match self.connect(started, &shutdown).await {
            Ok(connected) => connected,
            Err(refusal) => {
                match refusal {
                    Refusal::HoldFull => self.ctx.metrics.refused(Refused::HoldFull),
                    Refusal::HoldTimeout => self.ctx.metrics.hold_timeout(),
                    Refusal::Shutdown => {}
                }
                tracing::info!(
                    service,
                    client = %self.peer,
                    waited_ms = started.elapsed().as_millis() as u64,
                    reason = refusal.reason(),
                    "client closed without a session"
                );
                return;
            }
        };
        // Counted from here to the end of `run`, however it ends.
        let _session = self.ctx.metrics.session_opened();
        let tcp = self.ctx.service.tcp;
        if let Err(e) = keyway_io::socket::tune(&self.client, tcp.keepalive)
            .and_then(|()| keyway_io::socket::tune(&node_stream, tcp.keepalive))
        {
            tracing::debug!(service, client = %self.peer, error = %e, "socket options not applied");
        }

        let mut route = self.ctx.route.clone();
        let cut = async move {
            tokio::select! {
                // Also fires when the monitor is gone: no route is known then.
                _ = route.wait_for(|r| *r != Some(node)) => {}
                () = shutdown.cancelled() => {}
            }
        };
        let (transfer, close) = keyway_io::forward(
            &mut self.client,
            &mut node_stream,
            self.ctx.service.timeouts.idle,
            cut,
        )
        .await;
        self.ctx.metrics.session_closed(&transfer, close.reason());
        self.log_close(node, started, transfer, &close);
    }

    /// Waits for a route and connects to it, within the `hold` budget.
    async fn connect(
        &self,
        started: Instant,
        shutdown: &CancellationToken,
    ) -> Result<(NodeAddr, TcpStream), Refusal> {
        let ctx = &self.ctx;
        let deadline = started + ctx.service.timeouts.hold;
        let mut route = ctx.route.clone();
        // Taken the first time this client has to wait, kept until it is served
        // (or given up): the `max_held` permit and the held-clients gauge.
        let mut held: Option<(OwnedSemaphorePermit, Tracked)> = None;
        loop {
            let current = *route.borrow_and_update();
            let node = match current {
                Some(node) => node,
                None => {
                    if held.is_none() {
                        let permit = ctx
                            .held
                            .clone()
                            .try_acquire_owned()
                            .map_err(|_| Refusal::HoldFull)?;
                        held = Some((permit, ctx.metrics.held()));
                    }
                    let wait = async {
                        match route.wait_for(Option::is_some).await {
                            Ok(r) => Ok(*r),
                            Err(_) => Err(Refusal::Shutdown),
                        }
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(Refusal::Shutdown),
                        found = timeout_at(deadline, wait) => match found {
                            Ok(Ok(Some(node))) => node,
                            Ok(Ok(None)) => continue,
                            Ok(Err(refusal)) => return Err(refusal),
                            Err(_) => return Err(Refusal::HoldTimeout),
                        },
                    }
                }
            };
            let error =
                match timeout(ctx.service.timeouts.connect, TcpStream::connect(node.0)).await {
                    Ok(Ok(stream)) => return Ok((node, stream)),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "connect timeout".to_string(),
                };
            ctx.metrics.connect_error();
            tracing::warn!(service = %ctx.service.name, client = %self.peer, %node, %error, "connect to node failed");
            if Instant::now() >= deadline {
                return Err(Refusal::HoldTimeout);
            }
            // Retry when the route moves, or after a short pause if it does not.
            let pause = deadline.min(Instant::now() + CONNECT_RETRY_PAUSE);
            tokio::select! {
                () = shutdown.cancelled() => return Err(Refusal::Shutdown),
                _ = timeout_at(pause, route.wait_for(|r| *r != Some(node))) => {}
            }
        }
    }

    fn log_close(&self, node: NodeAddr, started: Instant, transfer: Transfer, close: &Close) {
        let service = self.ctx.service.name.as_str();
        let duration_ms = started.elapsed().as_millis() as u64;
        let error = match close {
            Close::Error(_, e) => Some(e.to_string()),
            _ => None,
        };
        tracing::info!(
            service,
            client = %self.peer,
            %node,
            client_to_node_bytes = transfer.client_to_node,
            node_to_client_bytes = transfer.node_to_client,
            duration_ms,
            reason = close.reason(),
            error = error.as_deref().unwrap_or(""),
            "session closed"
        );
    }
}
