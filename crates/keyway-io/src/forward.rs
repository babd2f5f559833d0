//! The forwarding loop of one session.
//!
//! Semantics are those of tokio's `copy_bidirectional`, plus what a proxy needs:
//!
//! - EOF read on one side shuts down writing on the other side; the other
//!   direction keeps flowing until its own EOF (half-close, used by clients that
//!   send `QUIT` and wait for `+OK`, or by `redis-cli --pipe`).
//! - The first read or write error ends the session and says which side failed.
//! - An idle timeout ends a session with no byte in either direction for that long.
//! - A `cut` future, supplied by the caller, ends the session at once (the route
//!   moved away from this node). Nothing here waits on the node to go away: the
//!   sockets are dropped by the caller, which never blocks, even on a hung node.
//!
//! Byte counts and the last-activity time are kept per session. Each count has
//! one writer (its direction) and the activity time is only ever overwritten with
//! "now", so both use relaxed loads and stores (plain moves, no locked
//! instruction) rather than `fetch_add`. They are atomics only
//! because the session future must be `Send`. The caller gets the totals once at
//! the end and adds them to shared metrics in one batch per session.

use std::future::{Future, pending};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

/// First buffer size per direction. Small, so an idle session costs little.
const INITIAL_BUF: usize = 8 * 1024;
/// Largest buffer per direction. A direction grows to it only when reads keep
/// filling the buffer (bulk transfers), where fewer syscalls matter more.
const MAX_BUF: usize = 64 * 1024;

/// One side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Node,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Node => "node",
        })
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum Close {
    /// Both directions reached EOF.
    Done,
    /// Reading from or writing to this side failed.
    Error(Side, io::Error),
    /// No byte moved either way for the idle timeout.
    Idle,
    /// The caller cut the session.
    Cut,
}

impl Close {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Close::Done => "done",
            Close::Error(Side::Client, _) => "client_error",
            Close::Error(Side::Node, _) => "node_error",
            Close::Idle => "idle",
            Close::Cut => "cut",
        }
    }
}

/// Bytes moved in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    pub client_to_node: u64,
    pub node_to_client: u64,
}

/// Forwards between `client` and `node` until the session ends; see the module doc.
pub async fn forward(
    client: &mut TcpStream,
    node: &mut TcpStream,
    idle: Option<Duration>,
    cut: impl Future<Output = ()>,
) -> (Transfer, Close) {
    let (mut client_read, mut client_write) = client.split();
    let (mut node_read, mut node_write) = node.split();
    let client_to_node = Counter::default();
    let node_to_client = Counter::default();
    let last_activity = Activity::new();

    let up = pipe(
        &mut client_read,
        &mut node_write,
        (Side::Client, Side::Node),
        &client_to_node,
        &last_activity,
    );
    let down = pipe(
        &mut node_read,
        &mut client_write,
        (Side::Node, Side::Client),
        &node_to_client,
        &last_activity,
    );
    let idle = idle_expired(idle, &last_activity);
    tokio::pin!(up, down, idle, cut);

    let (mut up_done, mut down_done) = (false, false);
    let close = loop {
        tokio::select! {
            done = &mut up, if !up_done => match done {
                Ok(()) if down_done => break Close::Done,
                Ok(()) => up_done = true,
                Err((side, e)) => break Close::Error(side, e),
            },
            done = &mut down, if !down_done => match done {
                Ok(()) if up_done => break Close::Done,
                Ok(()) => down_done = true,
                Err((side, e)) => break Close::Error(side, e),
            },
            () = &mut idle => break Close::Idle,
            () = &mut cut => break Close::Cut,
        }
    };
    let transfer = Transfer {
        client_to_node: client_to_node.0.load(Relaxed),
        node_to_client: node_to_client.0.load(Relaxed),
    };
    (transfer, close)
}

/// Copies one direction until EOF, then shuts down writing on the other side.
async fn pipe<R, W>(
    from: &mut R,
    to: &mut W,
    (from_side, to_side): (Side, Side),
    count: &Counter,
    last_activity: &Activity,
) -> Result<(), (Side, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; INITIAL_BUF];
    loop {
        let n = from.read(&mut buf).await.map_err(|e| (from_side, e))?;
        if n == 0 {
            return match to.shutdown().await {
                // The peer is already gone for writing: nothing left to tell it.
                Err(e) if e.kind() != io::ErrorKind::NotConnected => Err((to_side, e)),
                _ => Ok(()),
            };
        }
        to.write_all(&buf[..n]).await.map_err(|e| (to_side, e))?;
        count.add(n);
        last_activity.touch();
        if n == buf.len() && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// A byte count with a single writer.
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: usize) {
        // Single writer: load + store is exact and cheaper than fetch_add.
        self.0.store(self.0.load(Relaxed) + n as u64, Relaxed);
    }
}

/// When a byte last moved, as nanoseconds since the session started.
struct Activity {
    start: Instant,
    nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(nanos, Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.nanos.load(Relaxed))
    }
}

/// Resolves once no byte has moved for `idle`; never when `idle` is `None`.
async fn idle_expired(idle: Option<Duration>, last_activity: &Activity) {
    let Some(idle) = idle else {
        return pending().await;
    };
    loop {
        let deadline = last_activity.last() + idle;
        if deadline <= Instant::now() {
            return;
        }
        sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// A connected pair of streams: (the side we hand to `forward`, the far end).
    async fn pair() -> io::Result<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let near = TcpStream::connect(listener.local_addr()?).await?;
        let (far, _) = listener.accept().await?;
        Ok((near, far))
    }

    /// A session: the app end (talks to the client side) and the redis end
    /// (talks to the node side), with `forward` running between them.
    struct Session {
        app: TcpStream,
        redis: TcpStream,
        task: JoinHandle<(Transfer, Close)>,
        cut: Option<oneshot::Sender<()>>,
    }

    async fn session(idle: Option<Duration>) -> io::Result<Session> {
        let (mut client, app) = pair().await?;
        let (mut node, redis) = pair().await?;
        let (cut_tx, cut_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let cut = async {
                // A dropped sender means "never cut".
                if cut_rx.await.is_err() {
                    pending::<()>().await;
                }
            };
            forward(&mut client, &mut node, idle, cut).await
        });
        Ok(Session {
            app,
            redis,
            task,
            cut: Some(cut_tx),
        })
    }

    async fn finish(task: JoinHandle<(Transfer, Close)>) -> (Transfer, Close) {
        timeout(DEADLINE, task)
            .await
            .expect("forward did not end")
            .expect("forward panicked")
    }

    #[tokio::test]
    async fn both_directions_then_eof_both_ways() -> io::Result<()> {
        let mut s = session(None).await?;
        s.app.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = [0u8; 14];
        s.redis.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"*1\r\n$4\r\nPING\r\n");
        s.redis.write_all(b"+PONG\r\n").await?;
        let mut buf = [0u8; 7];
        s.app.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"+PONG\r\n");
        s.app.shutdown().await?;
        s.redis.shutdown().await?;
        let (transfer, close) = finish(s.task).await;
        assert!(matches!(close, Close::Done), "{close:?}");
        assert_eq!(
            transfer,
            Transfer {
                client_to_node: 14,
                node_to_client: 7
            }
        );
        Ok(())
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_flowing() -> io::Result<()> {
        let mut s = session(None).await?;
        s.app.write_all(b"QUIT\r\n").await?;
        s.app.shutdown().await?; // client -> node EOF
        let mut got = Vec::new();
        s.redis.read_to_end(&mut got).await?; // sees the bytes, then EOF
        assert_eq!(got, b"QUIT\r\n");
        // The node still answers after the client's half-close.
        s.redis.write_all(b"+OK\r\n").await?;
        s.redis.shutdown().await?;
        let mut got = Vec::new();
        s.app.read_to_end(&mut got).await?;
        assert_eq!(got, b"+OK\r\n");
        let (_, close) = finish(s.task).await;
        assert!(matches!(close, Close::Done), "{close:?}");
        Ok(())
    }

    #[tokio::test]
    async fn node_eof_first_reaches_the_client_while_client_keeps_sending() -> io::Result<()> {
        let mut s = session(None).await?;
        s.redis.shutdown().await?; // node -> client EOF
        let mut got = Vec::new();
        s.app.read_to_end(&mut got).await?;
        assert!(got.is_empty());
        s.app.write_all(b"late\r\n").await?;
        let mut buf = [0u8; 6];
        s.redis.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"late\r\n");
        s.app.shutdown().await?;
        let (transfer, close) = finish(s.task).await;
        assert!(matches!(close, Close::Done), "{close:?}");
        assert_eq!(transfer.client_to_node, 6);
        Ok(())
    }

    #[tokio::test]
    async fn node_reset_is_a_node_error() -> io::Result<()> {
        let s = session(None).await?;
        // SO_LINGER 0 turns the close into a RST.
        socket2::SockRef::from(&s.redis).set_linger(Some(Duration::ZERO))?;
        drop(s.redis);
        let (_, close) = finish(s.task).await;
        assert!(matches!(close, Close::Error(Side::Node, _)), "{close:?}");
        Ok(())
    }

    #[tokio::test]
    async fn client_reset_is_a_client_error() -> io::Result<()> {
        let s = session(None).await?;
        socket2::SockRef::from(&s.app).set_linger(Some(Duration::ZERO))?;
        drop(s.app);
        let (_, close) = finish(s.task).await;
        assert!(matches!(close, Close::Error(Side::Client, _)), "{close:?}");
        Ok(())
    }

    #[tokio::test]
    async fn cut_ends_the_session_even_with_a_stalled_node() -> io::Result<()> {
        let mut s = session(None).await?;
        // The node never reads: fill what the kernel buffers will take.
        let chunk = vec![7u8; 64 * 1024];
        let _ = timeout(Duration::from_millis(500), async {
            loop {
                s.app.write_all(&chunk).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        })
        .await;
        s.cut.take().map(|c| c.send(()));
        let (transfer, close) = finish(s.task).await;
        assert!(matches!(close, Close::Cut), "{close:?}");
        assert!(transfer.client_to_node > 0);
        Ok(())
    }

    #[tokio::test]
    async fn idle_session_is_closed_and_active_one_is_not() -> io::Result<()> {
        let mut s = session(Some(Duration::from_millis(300))).await?;
        // Activity in between keeps it open past several idle periods.
        for _ in 0..6 {
            s.app.write_all(b"x").await?;
            let mut b = [0u8; 1];
            s.redis.read_exact(&mut b).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!s.task.is_finished());
        let (transfer, close) = finish(s.task).await;
        assert!(matches!(close, Close::Idle), "{close:?}");
        assert_eq!(transfer.client_to_node, 6);
        Ok(())
    }

    /// Large transfers both ways at once, byte-exact.
    async fn bulk(size: usize) -> io::Result<()> {
        let s = session(None).await?;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let expect = data.clone();
        let (mut app_r, mut app_w) = s.app.into_split();
        let (mut redis_r, mut redis_w) = s.redis.into_split();
        let up = {
            let data = data.clone();
            tokio::spawn(async move {
                app_w.write_all(&data).await?;
                app_w.shutdown().await
            })
        };
        let down = tokio::spawn(async move {
            redis_w.write_all(&data).await?;
            redis_w.shutdown().await
        });
        let mut at_node = Vec::new();
        let mut at_app = Vec::new();
        let (r1, r2) = tokio::join!(
            redis_r.read_to_end(&mut at_node),
            app_r.read_to_end(&mut at_app)
        );
        r1?;
        r2?;
        up.await.expect("writer")?;
        down.await.expect("writer")?;
        assert!(at_node == expect, "client to node bytes differ");
        assert!(at_app == expect, "node to client bytes differ");
        let (transfer, close) = finish(s.task).await;
        assert!(matches!(close, Close::Done), "{close:?}");
        assert_eq!(transfer.client_to_node, size as u64);
        assert_eq!(transfer.node_to_client, size as u64);
        Ok(())
    }

    #[tokio::test]
    async fn one_mib_both_ways_byte_exact() -> io::Result<()> {
        bulk(1 << 20).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_mib_both_ways_byte_exact() -> io::Result<()> {
        bulk(100 << 20).await
    }
}
