//! One session: read the PROXY header if the service wants one, find the
//! route, connect to the node, forward, log one line.
//!
//! Invariants:
//! - With `proxy_protocol`, nothing else happens before a complete, valid PROXY
//!   header has been read within `timeouts.connect`: no hold, no connect, no
//!   byte forwarded. Exactly the header's bytes are consumed (the socket is
//!   peeked to find its end), so every client byte after it is forwarded. A
//!   client without a valid header is closed and logged with a short escaped
//!   prefix of what it sent ([`LOGGED_PREFIX`] bytes, never more).
//! - The client address in every log line is the header's source when it
//!   names one (`via` is then the balancer's address); otherwise, the peer's.
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
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keyway_config::NodeAddr;
use keyway_io::{Close, Transfer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Refused, Tracked};
use crate::proxy::ServiceContext;
use crate::proxy_protocol::{self, Header, ProxyHeaderError};

/// Pause before retrying a node that refused a connection while the route still
/// names it: short, since the probes will move the route within `fall` intervals.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How many bytes of a refused PROXY header the log line shows, escaped. Five:
/// enough to tell `PROXY`, a RESP command (`*2\r\n$`), TLS or HTTP apart, and
/// too few to reach a password (an inline `AUTH ` is five bytes).
pub const LOGGED_PREFIX: usize = 5;

/// The address of a client. A newtype so it cannot be passed as a node address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The load balancer a client came through, for logs: its address when a
/// PROXY header named the client, nothing otherwise.
#[derive(Debug, Clone, Copy)]
struct Via(Option<SocketAddr>);

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => Ok(()),
        }
    }
}

/// Why no PROXY header could be taken from a client.
#[derive(Debug)]
enum HeaderFailure {
    /// The bytes can never be a header.
    Invalid(ProxyHeaderError),
    /// The client closed its side first; `partial`: after some header bytes.
    Closed {
        partial: bool,
    },
    /// No complete header within `timeouts.connect`.
    Timeout(Duration),
    Io(io::Error),
    /// The parser asked for more than [`proxy_protocol::MAX_LEN`] bytes (it
    /// never does: it refuses longer headers first). Here so that a bug is a
    /// closed client, not a panic.
    Overflow,
}

impl fmt::Display for HeaderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderFailure::Invalid(e) => e.fmt(f),
            HeaderFailure::Closed { .. } => {
                f.write_str("client closed before a complete PROXY header")
            }
            HeaderFailure::Timeout(limit) => write!(
                f,
                "no complete PROXY header within timeouts.connect ({limit:?})"
            ),
            HeaderFailure::Io(e) => write!(f, "read error: {e}"),
            HeaderFailure::Overflow => write!(
                f,
                "PROXY header longer than {} bytes",
                proxy_protocol::MAX_LEN
            ),
        }
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
    /// The peer, or the client a PROXY header named.
    peer: ClientAddr,
    /// The peer, when a PROXY header named another client.
    via: Via,
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
            via: Via(None),
            _session: session,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let started = Instant::now();
        if self.ctx.service.proxy_protocol {
            match self.proxy_header(&shutdown).await {
                Ok(()) => {}
                Err(Some(refusal)) => return self.log_refusal(started, refusal),
                // Logged and counted already.
                Err(None) => return,
            }
        }
        let service = self.ctx.service.name.as_str();
        // The hold budget starts once the client is known (header read).
        let (node, mut node_stream) = match self.connect(Instant::now(), &shutdown).await {
            Ok(connected) => connected,
            Err(refusal) => {
                match refusal {
                    Refusal::HoldFull => self.ctx.metrics.refused(Refused::HoldFull),
                    Refusal::HoldTimeout => self.ctx.metrics.hold_timeout(),
                    Refusal::Shutdown => {}
                }
                return self.log_refusal(started, refusal);
            }
        };
        // Counted from here to the end of `run`, however it ends.
        let _session = self.ctx.metrics.session_opened();
        let tcp = self.ctx.service.tcp;
        if let Err(e) = keyway_io::socket::tune(&self.client, tcp.keepalive)
            .and_then(|()| keyway_io::socket::tune(&node_stream, tcp.keepalive))
        {
            tracing::debug!(service, client = %self.peer, via = %self.via, error = %e, "socket options not applied");
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

    fn log_refusal(&self, started: Instant, refusal: Refusal) {
        tracing::info!(
            service = %self.ctx.service.name,
            client = %self.peer,
            via = %self.via,
            waited_ms = started.elapsed().as_millis() as u64,
            reason = refusal.reason(),
            "client closed without a session"
        );
    }

    /// Takes the PROXY header off the client, within `timeouts.connect`, and
    /// makes its source the client address. `Err(Some(_))`: a refusal for the
    /// caller to log; `Err(None)`: the client is closed, logged and counted.
    async fn proxy_header(&mut self, shutdown: &CancellationToken) -> Result<(), Option<Refusal>> {
        let limit = self.ctx.service.timeouts.connect;
        let mut buf = vec![0u8; proxy_protocol::MAX_LEN];
        let mut seen = 0;
        let read = tokio::select! {
            () = shutdown.cancelled() => return Err(Some(Refusal::Shutdown)),
            read = timeout(limit, read_proxy_header(&mut self.client, &mut buf, &mut seen)) => read,
        };
        let failure = match read {
            Ok(Ok(header)) => {
                self.accept_header(header);
                return Ok(());
            }
            Ok(Err(failure)) => failure,
            Err(_) => HeaderFailure::Timeout(limit),
        };
        let service = self.ctx.service.name.as_str();
        if let HeaderFailure::Closed { partial: false } = failure {
            // Connected and left without a byte (a TCP health check, a port
            // probe): nothing was refused, and nothing would have been forwarded.
            tracing::debug!(service, client = %self.peer, "client closed before sending anything");
            return Err(None);
        }
        self.ctx.metrics.refused(Refused::ProxyHeader);
        let shown = &buf[..seen.min(LOGGED_PREFIX).min(buf.len())];
        tracing::warn!(
            service,
            client = %self.peer,
            reason = %failure,
            first_bytes = %shown.escape_ascii(),
            "client closed: no valid PROXY header (proxy_protocol is on for this service)"
        );
        Err(None)
    }

    fn accept_header(&mut self, header: Header) {
        if let Some(source) = header.source {
            self.via = Via(Some(self.peer.0));
            self.peer = ClientAddr(source);
        }
        tracing::debug!(
            service = %self.ctx.service.name,
            client = %self.peer,
            via = %self.via,
            version = %header.version,
            destination = %Via(header.destination),
            "PROXY header read"
        );
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
            tracing::warn!(service = %ctx.service.name, client = %self.peer, via = %self.via, %node, %error, "connect to node failed");
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
            via = %self.via,
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

/// Reads one PROXY header from `client`, consuming exactly its bytes.
///
/// Each round peeks at what has arrived, after the bytes already consumed. If
/// the parser needs more, every peeked byte is part of the header, so it is
/// consumed and the next peek waits for new bytes (a peek of bytes already
/// there would return at once, forever). Once the header is complete, only
/// its remaining bytes are consumed: what the client sent after it stays in
/// the socket for the node. `seen` is how much of `buf` holds client bytes, for
/// the log line when this fails or is cancelled by the timeout.
async fn read_proxy_header(
    client: &mut TcpStream,
    buf: &mut [u8],
    seen: &mut usize,
) -> Result<Header, HeaderFailure> {
    let mut have = 0;
    loop {
        let Some(free) = buf.get_mut(have..).filter(|free| !free.is_empty()) else {
            return Err(HeaderFailure::Overflow);
        };
        let n = client.peek(free).await.map_err(HeaderFailure::Io)?;
        if n == 0 {
            return Err(HeaderFailure::Closed { partial: have > 0 });
        }
        *seen = have + n;
        let (header_bytes, header) = match proxy_protocol::parse(&buf[..have + n]) {
            Ok(Some((header, len))) => (len, Some(header)),
            Ok(None) => (have + n, None),
            Err(e) => return Err(HeaderFailure::Invalid(e)),
        };
        // The same bytes as peeked: nobody else reads this socket.
        let Some(rest) = buf.get_mut(have..header_bytes) else {
            return Err(HeaderFailure::Overflow);
        };
        client.read_exact(rest).await.map_err(HeaderFailure::Io)?;
        have = header_bytes;
        if let Some(header) = header {
            return Ok(header);
        }
    }
}
