//! One direction of a session (client → node or node → client): the copy leg,
//! the splice leg, and the policy that moves a direction between them.
//!
//! Invariants:
//! - Bytes leave in the order they arrived: a direction switches engine only
//!   when nothing it read is still waiting to be written (its copy buffer and
//!   its pipe are both empty).
//! - An idle direction owns no buffer and no pipe: reads go to a 64 KiB buffer
//!   on the poll's stack and are written at once; a per-direction heap buffer
//!   exists only while the writer is slower than the reader, and is freed when
//!   the direction goes quiet. A splicing direction gives its pipe back to the
//!   pool each time it has drained its socket and its pipe, and takes one again
//!   (a pop from the pool, no syscall) when the socket is readable again.
//! - A read error is the `from` side's, a write or shutdown error the `to`
//!   side's. EOF read shuts down writing on `to` (half-close).
//!
//! The policy ([`Engine::Auto`]), like HAProxy's `splice-auto`: a direction
//! copies until one read fills the whole 64 KiB buffer (a bulk transfer), then
//! splices through a pooled pipe; it returns to copying, and gives the pipe
//! back, after [`LEAVE_AFTER_SMALL`] splices in a row moved less than
//! [`SMALL_READ`] bytes. Small request/response traffic never splices: a
//! splice pair costs the same two syscalls as a read/write pair and saves
//! nothing on a few hundred bytes. The numbers behind it are in
//! `benches/README.md`.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::forward::{Engine, Side};
use crate::splice::{In, PipePool, SpliceLeg};

/// Bytes read per syscall on the copy path: the poll's stack buffer, and the
/// per-direction buffer when one is needed.
pub(crate) const READ_BUF: usize = 64 * 1024;
/// A splice that moved less than this counts as small traffic.
pub(crate) const SMALL_READ: usize = 16 * 1024;
/// Small splices in a row before a direction goes back to copying.
pub(crate) const LEAVE_AFTER_SMALL: u8 = 2;

type Failed = (Side, io::Error);

/// One direction: see the module doc.
#[derive(Debug)]
pub(crate) struct Direction {
    from: Side,
    to: Side,
    engine: Engine,
    pool: &'static PipePool,
    leg: Leg,
    /// Set when the policy wants the next read spliced.
    want_splice: bool,
    small_streak: u8,
    pub(crate) done: bool,
    /// Bytes written to `to`, both engines.
    pub(crate) bytes: u64,
    /// Of those, bytes moved by splice.
    pub(crate) spliced: u64,
}

#[derive(Debug)]
enum Leg {
    Copy(CopyLeg),
    Splice(SpliceLeg),
}

/// Bytes read but not yet written: `buf[start..end]`. `buf` is `None` while
/// every read could be written at once.
#[derive(Debug, Default)]
struct CopyLeg {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl Direction {
    pub(crate) fn new(from: Side, to: Side, engine: Engine, pool: &'static PipePool) -> Self {
        Direction {
            from,
            to,
            engine,
            pool,
            leg: Leg::Copy(CopyLeg::default()),
            want_splice: engine == Engine::Splice,
            small_streak: 0,
            done: false,
            bytes: 0,
            spliced: 0,
        }
    }

    /// Moves bytes until `from` has nothing more, `to` takes nothing more, or
    /// the direction is done (`Ready(Ok)`, after the half-close).
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
    ) -> Poll<Result<(), Failed>> {
        loop {
            let eof = if matches!(self.leg, Leg::Copy(_)) {
                ready!(self.poll_copy(cx, from, to))?
            } else {
                ready!(self.poll_splice(cx, from, to))?
            };
            if eof {
                return match ready!(Pin::new(to).poll_shutdown(cx)) {
                    // The peer is already gone for writing: nothing left to tell it.
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                        Poll::Ready(Err((self.to, e)))
                    }
                    _ => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                };
            }
            // Not EOF: the leg changed engine; go on with the new one.
        }
    }

    /// The copy leg. `Ready(Ok(true))` on EOF, `Ready(Ok(false))` when the
    /// direction switched to splice.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
    ) -> Poll<Result<bool, Failed>> {
        let Leg::Copy(leg) = &mut self.leg else {
            return Poll::Ready(Ok(false));
        };
        loop {
            // 1. What an earlier read left goes first.
            if let Some(buf) = &leg.buf {
                while leg.start < leg.end {
                    let n = ready!(poll_write(cx, to, &buf[leg.start..leg.end], self.to))?;
                    leg.start += n;
                    self.bytes += n as u64;
                }
            }
            // 2. Nothing pending: the policy may switch to splice, but only once
            //    there is something to read, so an idle session holds no pipe.
            if self.want_splice {
                match from.poll_read_ready(cx) {
                    Poll::Pending => {
                        leg.buf = None;
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((self.from, e))),
                    Poll::Ready(Ok(())) => {}
                }
                match self.pool.acquire() {
                    Some(pipe) => {
                        self.leg = Leg::Splice(SpliceLeg::new(self.pool, pipe));
                        self.small_streak = 0;
                        return Poll::Ready(Ok(false));
                    }
                    // No pipe: copy this one; `Engine::Splice` asks again next read.
                    None => self.want_splice = self.engine == Engine::Splice,
                }
            }
            // 3. Read: into the direction's buffer if it has one, else on the stack.
            let n = if let Some(buf) = &mut leg.buf {
                let mut read = ReadBuf::new(buf);
                match Pin::new(&mut *from).poll_read(cx, &mut read) {
                    Poll::Pending => {
                        // Quiet: the writer caught up and the reader has nothing.
                        leg.buf = None;
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((self.from, e))),
                    Poll::Ready(Ok(())) => {}
                }
                let n = read.filled().len();
                (leg.start, leg.end) = (0, n);
                n
            } else {
                let mut stack = [MaybeUninit::<u8>::uninit(); READ_BUF];
                let mut read = ReadBuf::uninit(&mut stack);
                if let Err(e) = ready!(Pin::new(&mut *from).poll_read(cx, &mut read)) {
                    return Poll::Ready(Err((self.from, e)));
                }
                let data = read.filled();
                let mut written = 0;
                while written < data.len() {
                    match poll_write(cx, to, &data[written..], self.to) {
                        Poll::Ready(Ok(n)) => {
                            written += n;
                            self.bytes += n as u64;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => break,
                    }
                }
                if written < data.len() {
                    // The writer is slower: keep the rest in a buffer of our own,
                    // where the next reads go too until it drains.
                    let mut buf = vec![0u8; READ_BUF].into_boxed_slice();
                    let rest = &data[written..];
                    buf[..rest.len()].copy_from_slice(rest);
                    (leg.start, leg.end) = (0, rest.len());
                    leg.buf = Some(buf);
                }
                data.len()
            };
            if n == 0 {
                return Poll::Ready(Ok(true));
            }
            if self.engine == Engine::Auto && n == READ_BUF {
                self.want_splice = true;
            }
        }
    }

    /// The splice leg. `Ready(Ok(true))` on EOF, `Ready(Ok(false))` when the
    /// direction went back to copying.
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
    ) -> Poll<Result<bool, Failed>> {
        let Leg::Splice(leg) = &mut self.leg else {
            return Poll::Ready(Ok(false));
        };
        loop {
            if leg.in_pipe > 0 {
                let before = self.spliced;
                let out = leg.poll_out(cx, to, self.to, &mut self.spliced);
                self.bytes += self.spliced - before;
                ready!(out)?;
            }
            // The pipe is empty here.
            if self.engine == Engine::Auto && self.small_streak >= LEAVE_AFTER_SMALL {
                leg.release();
                self.leg = Leg::Copy(CopyLeg::default());
                self.want_splice = false;
                return Poll::Ready(Ok(false));
            }
            if !leg.has_pipe() {
                // Take a pipe only once there is something to read.
                if let Err(e) = ready!(from.poll_read_ready(cx)) {
                    return Poll::Ready(Err((self.from, e)));
                }
                match self.pool.acquire() {
                    Some(pipe) => leg.attach(pipe),
                    None => {
                        // No pipe to be had: copy; `Engine::Splice` asks again next read.
                        self.leg = Leg::Copy(CopyLeg::default());
                        self.want_splice = self.engine == Engine::Splice;
                        return Poll::Ready(Ok(false));
                    }
                }
            }
            let moved = match leg.poll_in(cx, from, self.from) {
                Poll::Pending => {
                    // Quiet, and the pipe is empty: give it back, so pipes are
                    // held only while bytes are in flight.
                    leg.release();
                    return Poll::Pending;
                }
                Poll::Ready(moved) => moved?,
            };
            match moved {
                In::Eof => return Poll::Ready(Ok(true)),
                In::Moved(n) if n < SMALL_READ => {
                    self.small_streak = self.small_streak.saturating_add(1);
                }
                In::Moved(_) => self.small_streak = 0,
            }
        }
    }
}

/// One write to `to`; a zero-byte write is an error, as in `write_all`.
fn poll_write(
    cx: &mut Context<'_>,
    to: &mut TcpStream,
    data: &[u8],
    side: Side,
) -> Poll<Result<usize, Failed>> {
    match ready!(Pin::new(to).poll_write(cx, data)) {
        Ok(0) => Poll::Ready(Err((side, io::ErrorKind::WriteZero.into()))),
        Ok(n) => Poll::Ready(Ok(n)),
        Err(e) => Poll::Ready(Err((side, e))),
    }
}
