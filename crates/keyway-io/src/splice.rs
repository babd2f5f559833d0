//! Zero-copy forwarding with `splice(2)`: socket → pipe → socket, plus the pool
//! of pipes it borrows from. The only module of Keyway that holds `unsafe`.
//!
//! Invariants:
//! - A [`Pipe`] is either empty and owned by the [`PipePool`], or owned by one
//!   direction of one session, which knows to the byte how much it holds
//!   (`SpliceLeg::in_pipe`). A pipe handed back with bytes still in it is
//!   closed, never pooled, so no session ever sees another's bytes.
//! - A leg splices socket → pipe only while the pipe is empty. An empty pipe
//!   always has room, so `EAGAIN` on that leg means "the socket has nothing",
//!   which makes it safe to clear the socket's read readiness (tokio's
//!   `try_io`). On the pipe → socket leg the pipe is never empty, so `EAGAIN`
//!   means "the socket's send buffer is full". Either way a readiness is only
//!   cleared when it is really gone, and an edge-triggered wakeup is never lost.
//! - Pipe pages count against the user's `pipe-user-pages-soft` limit (per user,
//!   across every process). The pool keeps every pipe it created (in use or
//!   idle) within a page budget of half that limit; past it, or when `pipe2` or
//!   `F_SETPIPE_SZ` fails, [`PipePool::acquire`] returns `None` and the
//!   direction copies instead. After a failure the pool creates no pipe for
//!   [`CREATE_BACKOFF`], so a process at its descriptor limit does not pay a
//!   failing syscall per read.
//!
//! `splice(2)` into a socket whose peer is gone raises `SIGPIPE` (it cannot
//! pass `MSG_NOSIGNAL`). Rust programs ignore `SIGPIPE` from start-up, so the
//! write fails with `EPIPE` (a `to`-side error) instead; a program that restores
//! the default disposition must not use [`crate::Engine::Splice`] or `Auto`.
//!
//! Every `unsafe` block is a plain syscall on descriptors borrowed for its
//! duration; each carries a `// SAFETY:` comment and is exercised by the
//! forwarding tests with real sockets.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::forward::Side;

/// The pipe size asked for with `F_SETPIPE_SZ`. Larger pipes move more per
/// syscall pair; 256 KiB is where the 1 MiB bench stops improving (see
/// `benches/README.md`), and it keeps 64 pipes per 16 MiB of page budget.
pub const PIPE_SIZE: usize = 256 * 1024;
/// The smallest pipe worth splicing through. A pipe the kernel left smaller
/// (the user is over its soft limit) is closed and the direction copies.
const MIN_PIPE_SIZE: usize = 64 * 1024;
/// Idle pipes kept for reuse. Each one holds two descriptors and its page
/// accounting, so the pool stays small; busy pipes are not limited by this.
const MAX_IDLE: usize = 64;
/// Page budget when the soft limit is unknown or unlimited (0): 64 MiB.
const DEFAULT_BUDGET_PAGES: usize = 16 * 1024;
/// How long the pool stops creating pipes after `pipe2` or a resize failed.
pub const CREATE_BACKOFF: Duration = Duration::from_secs(1);
const PIPE_USER_PAGES_SOFT: &str = "/proc/sys/fs/pipe-user-pages-soft";

/// A pipe: the two ends, and its capacity as the kernel reports it.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl Pipe {
    /// A new non-blocking pipe resized to `want` bytes; `None` (with the error)
    /// if the pipe cannot be created or the kernel leaves it under `min`.
    fn create(want: usize, min: usize) -> io::Result<Pipe> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by no
        // one else; each is wrapped exactly once and closed on drop.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETPIPE_SZ takes an int argument on a valid pipe descriptor;
        // `write` is borrowed for the call.
        let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        // Over the soft limit an unprivileged user gets EPERM here; read back what
        // the kernel gave in every case rather than trusting the request.
        // SAFETY: F_GETPIPE_SZ takes no argument; `write` is a valid pipe descriptor.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let size = usize::try_from(got).unwrap_or(0);
        if size < min {
            let cause = if set < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::other("pipe smaller than the minimum")
            };
            return Err(cause);
        }
        Ok(Pipe { read, write, size })
    }

    /// The pipe's capacity in bytes, as read back from the kernel.
    pub fn size(&self) -> usize {
        self.size
    }

    fn pages(&self) -> usize {
        self.size.div_ceil(page_size())
    }

    /// Bytes currently held, asked of the kernel (`FIONREAD`). Sessions track
    /// this themselves; the pool and tests use it as a cross-check.
    pub fn held(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which points to
        // `n`, alive for the call; the descriptor is borrowed from `self`.
        let rc = unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// `splice(2)` `len` bytes from `from` to `to`, never blocking.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open for the call; null offsets
    // are what splice requires for pipes and sockets; no memory is passed.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    // A negative return is the only failure; it converts to nothing else.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn page_size() -> usize {
    static PAGE: LazyLock<usize> = LazyLock::new(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page)
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096)
    });
    *PAGE
}

/// Counters of the pool, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Pipes created (`pipe2` + resize succeeded).
    pub created: u64,
    /// Acquisitions served from the idle list.
    pub reused: u64,
    /// Pipes closed because they were handed back still holding bytes.
    pub discarded_nonempty: u64,
    /// Acquisitions refused: page budget spent, creation failed, or backoff.
    pub refused: u64,
    /// Pages of every live pipe the pool created (idle or in use).
    pub pages: usize,
    /// The page budget (half of `pipe-user-pages-soft`).
    pub budget_pages: usize,
    /// Idle pipes waiting for reuse.
    pub idle: usize,
}

/// A process-wide pool of empty pipes. See the module doc for its invariants.
#[derive(Debug)]
pub struct PipePool {
    idle: Mutex<Vec<Pipe>>,
    pipe_size: usize,
    min_size: usize,
    budget_pages: usize,
    pages: AtomicUsize,
    /// Nanoseconds after `epoch` before which no pipe is created (backoff).
    no_create_until: AtomicU64,
    epoch: Instant,
    created: AtomicU64,
    reused: AtomicU64,
    discarded: AtomicU64,
    refused: AtomicU64,
}

impl PipePool {
    /// A pool of pipes of `pipe_size` bytes within `budget_pages` pipe pages.
    pub fn new(pipe_size: usize, budget_pages: usize) -> Self {
        PipePool {
            idle: Mutex::new(Vec::new()),
            pipe_size,
            min_size: MIN_PIPE_SIZE.min(pipe_size),
            budget_pages,
            pages: AtomicUsize::new(0),
            no_create_until: AtomicU64::new(0),
            epoch: Instant::now(),
            created: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The pool every session uses: [`PIPE_SIZE`] pipes, within half of the
    /// user's `pipe-user-pages-soft`.
    pub fn global() -> &'static PipePool {
        static POOL: LazyLock<PipePool> =
            LazyLock::new(|| PipePool::new(PIPE_SIZE, budget_from_soft_limit(read_soft_limit())));
        &POOL
    }

    /// An empty pipe, reused or new; `None` when none can be had.
    pub fn acquire(&self) -> Option<Pipe> {
        if let Some(pipe) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            self.reused.fetch_add(1, Relaxed);
            return Some(pipe);
        }
        let now = self.nanos();
        if now < self.no_create_until.load(Relaxed) {
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        let pages = self.pipe_size.div_ceil(page_size());
        if self.pages.fetch_add(pages, Relaxed) + pages > self.budget_pages {
            self.pages.fetch_sub(pages, Relaxed);
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        match Pipe::create(self.pipe_size, self.min_size) {
            Ok(pipe) => {
                // Account what the kernel really gave (it rounds to a power of two).
                let real = pipe.pages();
                if real != pages {
                    self.pages.fetch_add(real, Relaxed);
                    self.pages.fetch_sub(pages, Relaxed);
                }
                self.created.fetch_add(1, Relaxed);
                Some(pipe)
            }
            Err(_) => {
                self.pages.fetch_sub(pages, Relaxed);
                let until = now + u64::try_from(CREATE_BACKOFF.as_nanos()).unwrap_or(u64::MAX);
                self.no_create_until.store(until, Relaxed);
                self.refused.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Takes a pipe back. `held` is what its owner counted as still inside: a
    /// pipe that is not empty is closed, never reused.
    pub fn release(&self, pipe: Pipe, held: usize) {
        debug_assert!(
            held != 0 || pipe.held().map_or(true, |n| n == 0),
            "pipe count drifted"
        );
        if held != 0 {
            self.discarded.fetch_add(1, Relaxed);
            self.close(pipe);
            return;
        }
        let pipe = match self.idle.lock() {
            Ok(mut idle) if idle.len() < MAX_IDLE => {
                idle.push(pipe);
                return;
            }
            _ => pipe,
        };
        self.close(pipe);
    }

    fn close(&self, pipe: Pipe) {
        self.pages.fetch_sub(pipe.pages(), Relaxed);
        drop(pipe);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            created: self.created.load(Relaxed),
            reused: self.reused.load(Relaxed),
            discarded_nonempty: self.discarded.load(Relaxed),
            refused: self.refused.load(Relaxed),
            pages: self.pages.load(Relaxed),
            budget_pages: self.budget_pages,
            idle: self.idle.lock().map_or(0, |idle| idle.len()),
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn read_soft_limit() -> Option<usize> {
    std::fs::read_to_string(PIPE_USER_PAGES_SOFT)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Half the soft limit, so other pipes of the same user (other processes, a
/// second Keyway during a reload) still fit; the default when it is unknown or
/// 0 (unlimited).
fn budget_from_soft_limit(soft: Option<usize>) -> usize {
    match soft {
        Some(0) | None => DEFAULT_BUDGET_PAGES,
        Some(pages) => pages / 2,
    }
}

/// One direction's splice state: a borrowed pipe and how much it holds.
#[derive(Debug)]
pub(crate) struct SpliceLeg {
    pool: &'static PipePool,
    pipe: Option<Pipe>,
    /// Bytes spliced into the pipe and not yet out of it.
    pub(crate) in_pipe: usize,
}

/// What one [`SpliceLeg::poll_in`] did.
pub(crate) enum In {
    /// Bytes moved from the socket into the pipe.
    Moved(usize),
    /// The socket reached EOF (the pipe is empty).
    Eof,
}

impl SpliceLeg {
    pub(crate) fn new(pool: &'static PipePool, pipe: Pipe) -> Self {
        SpliceLeg {
            pool,
            pipe: Some(pipe),
            in_pipe: 0,
        }
    }

    /// Whether the leg holds a pipe (it gives it back while quiet).
    pub(crate) fn has_pipe(&self) -> bool {
        self.pipe.is_some()
    }

    /// Gives the leg a pipe again after [`SpliceLeg::release`].
    pub(crate) fn attach(&mut self, pipe: Pipe) {
        debug_assert!(self.pipe.is_none() && self.in_pipe == 0);
        self.pipe = Some(pipe);
    }

    /// Splices from `from` into the (empty) pipe, as much as it will hold.
    /// Errors are the `from` side's.
    pub(crate) fn poll_in(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        from_side: Side,
    ) -> Poll<Result<In, (Side, io::Error)>> {
        debug_assert_eq!(self.in_pipe, 0, "socket -> pipe only into an empty pipe");
        let Some(pipe) = &self.pipe else {
            return Poll::Ready(Err((from_side, io::Error::other("no pipe"))));
        };
        loop {
            ready!(from.poll_read_ready(cx)).map_err(|e| (from_side, e))?;
            // try_io clears the read readiness only on EAGAIN, which here can
            // only mean the socket is drained (the pipe is empty).
            match from.try_io(Interest::READABLE, || {
                splice(from.as_fd(), pipe.write.as_fd(), pipe.size)
            }) {
                Ok(0) => return Poll::Ready(Ok(In::Eof)),
                Ok(n) => {
                    self.in_pipe = n;
                    return Poll::Ready(Ok(In::Moved(n)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err((from_side, e))),
            }
        }
    }

    /// Splices what the pipe holds into `to` until it is empty. Returns the
    /// bytes moved in this call; errors are the `to` side's. `Pending` may
    /// follow partial progress, reported through `moved`.
    pub(crate) fn poll_out(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
        to_side: Side,
        moved: &mut u64,
    ) -> Poll<Result<(), (Side, io::Error)>> {
        let Some(pipe) = &self.pipe else {
            return Poll::Ready(Err((to_side, io::Error::other("no pipe"))));
        };
        while self.in_pipe > 0 {
            ready!(to.poll_write_ready(cx)).map_err(|e| (to_side, e))?;
            // The pipe is not empty, so EAGAIN means the socket's send buffer is full.
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), to.as_fd(), self.in_pipe)
            }) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "splice wrote 0 bytes");
                    return Poll::Ready(Err((to_side, e)));
                }
                Ok(n) => {
                    self.in_pipe -= n;
                    *moved += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err((to_side, e))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Gives the pipe back to its pool (closed if not empty).
    pub(crate) fn release(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            self.pool.release(pipe, self.in_pipe);
            self.in_pipe = 0;
        }
    }
}

impl Drop for SpliceLeg {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn pipe_size_is_set_and_read_back() -> io::Result<()> {
        let pipe = Pipe::create(PIPE_SIZE, MIN_PIPE_SIZE)?;
        assert!(pipe.size() >= MIN_PIPE_SIZE, "{}", pipe.size());
        // SAFETY: F_GETPIPE_SZ on a valid pipe descriptor, no argument.
        let got = unsafe { libc::fcntl(pipe.read.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert_eq!(usize::try_from(got).ok(), Some(pipe.size()));
        Ok(())
    }

    #[test]
    fn a_pipe_that_holds_data_is_never_reused() -> io::Result<()> {
        let pool = PipePool::new(64 * 1024, 1024);
        let pipe = pool.acquire().ok_or_else(|| io::Error::other("no pipe"))?;
        std::fs::File::from(pipe.write.try_clone()?).write_all(b"left over")?;
        assert_eq!(pipe.held()?, 9);
        pool.release(pipe, 9);
        let stats = pool.stats();
        assert_eq!(
            (stats.idle, stats.discarded_nonempty, stats.pages),
            (0, 1, 0)
        );
        // The next one is a fresh, empty pipe.
        let pipe = pool.acquire().ok_or_else(|| io::Error::other("no pipe"))?;
        assert_eq!(pipe.held()?, 0);
        assert_eq!(pool.stats().created, 2);
        Ok(())
    }

    #[test]
    fn empty_pipes_are_reused() {
        let pool = PipePool::new(64 * 1024, 1024);
        let pipe = pool.acquire();
        assert!(pipe.is_some());
        if let Some(pipe) = pipe {
            pool.release(pipe, 0);
        }
        assert!(pool.acquire().is_some());
        let stats = pool.stats();
        assert_eq!((stats.created, stats.reused), (1, 1));
    }

    #[test]
    fn page_budget_is_respected() {
        // 64 KiB pipes are 16 pages: a 40-page budget allows two.
        let pool = PipePool::new(64 * 1024, 40);
        let a = pool.acquire();
        let b = pool.acquire();
        let c = pool.acquire();
        assert!(a.is_some() && b.is_some());
        assert!(c.is_none(), "a third pipe would pass the budget");
        assert_eq!(pool.stats().pages, 32);
        drop((a, b));
    }

    #[test]
    fn budget_is_half_the_soft_limit() {
        assert_eq!(budget_from_soft_limit(Some(16384)), 8192);
        assert_eq!(budget_from_soft_limit(Some(0)), DEFAULT_BUDGET_PAGES);
        assert_eq!(budget_from_soft_limit(None), DEFAULT_BUDGET_PAGES);
    }

    #[test]
    fn a_pipe_the_kernel_keeps_small_is_refused_and_backs_off() {
        // Over its soft limit an unprivileged user gets EPERM from F_SETPIPE_SZ
        // and a 2-page pipe. Same outcome here: a pipe under the minimum.
        let mut pool = PipePool::new(64 * 1024, 1024);
        pool.min_size = 128 * 1024;
        assert!(pool.acquire().is_none());
        // Backing off: the second call does not even try.
        assert!(pool.acquire().is_none());
        let stats = pool.stats();
        assert_eq!((stats.created, stats.refused, stats.pages), (0, 2, 0));
    }
}
