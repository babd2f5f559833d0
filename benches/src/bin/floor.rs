//! `floor`: the least work an epoll L4 proxy can do, as a baseline for the load
//! benchmark (`load.rs`), not a product.
//!
//! Keyway's CPU per request is compared with HAProxy's; both spend most of it
//! in the kernel, in the recvfrom and sendto each request and reply cost. This
//! binary does nothing but those calls: one thread, edge-triggered `mio`, one
//! shared 64 KiB buffer, no timers, no metrics, no logging per session. What it
//! costs per request is what any proxy of this shape costs at least, so
//! `keyway/floor` and `floor/haproxy` in the benchmark tell how much of each
//! proxy's CPU is above that floor.
//!
//! Usage: `floor --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT`. Both
//! addresses must be in 127.0.0.0/8: it authenticates nothing and limits
//! nothing, so it refuses to be reachable from anywhere else.
//!
//! Forwarding follows `copy_bidirectional`: EOF on one side shuts down writing
//! on the other, the other direction keeps flowing, and the pair closes when
//! both directions are done or on any I/O error (silently: a reset at the end
//! of a benchmark run is normal). Like tokio, a read shorter than the buffer
//! counts as draining the socket, so a request costs one recvfrom and one
//! sendto per direction, as in Keyway and HAProxy, and the strace counts of the
//! three compare.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};

use anyhow::{Context, bail};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

const LISTENER: Token = Token(0);
const BUF_BYTES: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let (listen, upstream) = parse_args()?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut floor = Floor {
        upstream,
        pairs: HashMap::new(),
        next_id: 1,
        buf: vec![0; BUF_BYTES],
    };
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in &events {
            if event.token() == LISTENER {
                floor.accept(&listener, poll.registry());
            } else {
                floor.on_event(event);
            }
        }
    }
}

/// `--listen ADDR --upstream ADDR`, both on loopback.
fn parse_args() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let (mut listen, mut upstream) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--listen" => &mut listen,
            "--upstream" => &mut upstream,
            other => bail!("unknown argument {other}: floor --listen ADDR --upstream ADDR"),
        };
        let value = it.next().with_context(|| format!("{arg} ADDR"))?;
        let addr: SocketAddr = value.parse().with_context(|| format!("{arg} {value}"))?;
        if !matches!(addr, SocketAddr::V4(v4) if v4.ip().is_loopback()) {
            bail!("{arg} {addr}: only 127.0.0.0/8 addresses");
        }
        *slot = Some(addr);
    }
    Ok((
        listen.context("--listen ADDR")?,
        upstream.context("--upstream ADDR")?,
    ))
}

/// Every open pair. A pair's tokens are `2 * id` (client) and `2 * id + 1`
/// (node); ids are never reused, so a stale event for a closed pair finds
/// nothing instead of the wrong pair.
struct Floor {
    upstream: SocketAddr,
    pairs: HashMap<usize, Pair>,
    next_id: usize,
    /// The one read buffer: a single thread needs only one.
    buf: Vec<u8>,
}

impl Floor {
    /// Accepts until the backlog is empty (edge-triggered: no second event).
    fn accept(&mut self, listener: &TcpListener, registry: &Registry) {
        loop {
            match listener.accept() {
                Ok((client, _)) => {
                    if let Err(e) = self.open(client, registry) {
                        eprintln!("floor: upstream {}: {e}", self.upstream);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("floor: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Starts the upstream connect (it completes later, on the node's
    /// writable event) and registers both sockets.
    fn open(&mut self, mut client: TcpStream, registry: &Registry) -> io::Result<()> {
        let mut node = TcpStream::connect(self.upstream)?;
        client.set_nodelay(true)?;
        node.set_nodelay(true)?;
        let id = self.next_id;
        self.next_id += 1;
        let both = Interest::READABLE | Interest::WRITABLE;
        registry.register(&mut client, Token(2 * id), both)?;
        registry.register(&mut node, Token(2 * id + 1), both)?;
        let pair = Pair {
            client,
            node,
            connected: false,
            client_to_node: Flow::default(),
            node_to_client: Flow::default(),
        };
        self.pairs.insert(id, pair);
        Ok(())
    }

    /// Drives the pair the event is for; drops it (closing both sockets,
    /// which also removes them from epoll) when done or failed.
    fn on_event(&mut self, event: &Event) {
        let (id, node_side) = (event.token().0 / 2, event.token().0 % 2 == 1);
        let Some(pair) = self.pairs.get_mut(&id) else {
            return;
        };
        match pair.on_event(event, node_side, &mut self.buf) {
            Ok(false) => {}
            Ok(true) | Err(_) => {
                self.pairs.remove(&id);
            }
        }
    }
}

/// A client and its node connection.
struct Pair {
    client: TcpStream,
    node: TcpStream,
    /// The node connect has completed; until then bytes from the client wait
    /// in `client_to_node.pending`.
    connected: bool,
    client_to_node: Flow,
    node_to_client: Flow,
}

/// One direction's state.
#[derive(Default)]
struct Flow {
    /// Bytes read but not yet written: the destination would block. While
    /// any are left, the source is not read (that is the back pressure).
    pending: Vec<u8>,
    /// The source may hold unread bytes: set by a readable event, cleared by
    /// a short read or `WouldBlock`.
    readable: bool,
    /// The event said the peer sent FIN: read until 0 rather than trusting
    /// a short read, or the EOF would never be seen (no further edge comes).
    closing: bool,
    /// The source returned EOF.
    eof: bool,
    /// The destination has been shut down for writing: this direction is done.
    shut: bool,
}

impl Pair {
    /// Handles one event; `Ok(true)` when both directions are done.
    fn on_event(&mut self, event: &Event, node_side: bool, buf: &mut [u8]) -> io::Result<bool> {
        if event.is_error() {
            return Err(io::Error::other("socket error"));
        }
        if node_side && !self.connected && !self.check_connected()? {
            return Ok(false);
        }
        let connected = self.connected;
        if event.is_readable() || event.is_read_closed() {
            let (src, dst, flow) = self.direction(node_side);
            flow.readable = true;
            flow.closing |= event.is_read_closed();
            pump(src, dst, flow, buf, connected)?;
        }
        // Writable: the direction *towards* this socket can go on (a completed
        // connect is writable too, which releases what the client sent early).
        if event.is_writable() {
            let (src, dst, flow) = self.direction(!node_side);
            pump(src, dst, flow, buf, connected)?;
        }
        Ok(self.client_to_node.shut && self.node_to_client.shut)
    }

    /// The direction that reads from the node (`from_node`) or from the client.
    fn direction(&mut self, from_node: bool) -> (&TcpStream, &TcpStream, &mut Flow) {
        if from_node {
            (&self.node, &self.client, &mut self.node_to_client)
        } else {
            (&self.client, &self.node, &mut self.client_to_node)
        }
    }

    /// Whether the nonblocking connect has completed; an error if it failed.
    fn check_connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.node.take_error()? {
            return Err(e);
        }
        match self.node.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Moves bytes from `src` to `dst`: first what is pending, then reads until
/// `src` is drained or `dst` would block; passes an EOF on as a write
/// shutdown once everything before it is written.
fn pump(
    mut src: &TcpStream,
    dst: &TcpStream,
    flow: &mut Flow,
    buf: &mut [u8],
    connected: bool,
) -> io::Result<()> {
    if !flow.pending.is_empty() {
        let n = if connected {
            write_some(dst, &flow.pending)?
        } else {
            0
        };
        flow.pending.drain(..n);
        if !flow.pending.is_empty() {
            return Ok(());
        }
    }
    while flow.readable && !flow.eof {
        let n = match src.read(buf) {
            Ok(0) => {
                flow.eof = true;
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                flow.readable = false;
                break;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n < buf.len() && !flow.closing {
            flow.readable = false;
        }
        let written = if connected {
            write_some(dst, &buf[..n])?
        } else {
            0
        };
        if written < n {
            flow.pending.extend_from_slice(&buf[written..n]);
            return Ok(());
        }
    }
    if flow.eof && connected && !flow.shut {
        dst.shutdown(Shutdown::Write)?;
        flow.shut = true;
    }
    Ok(())
}

/// Writes as much of `bytes` as `dst` takes now; returns how much.
fn write_some(mut dst: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match dst.write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
