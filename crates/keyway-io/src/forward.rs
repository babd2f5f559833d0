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
//! One future per session, polled by the caller's task (no task is spawned): on
//! each wakeup it polls the cut, both directions (the `direction` module) and the
//! idle timer. Byte counts are plain integers owned by that future; the caller
//! gets the totals once at the end and adds them to shared metrics in one batch.
//! The idle timer is only reset (a cheap deadline extension in tokio) on a
//! wakeup that moved bytes, not per syscall.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

use crate::direction::Direction;
use crate::splice::PipePool;

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
    /// How many of those bytes (both directions) went through `splice(2)`
    /// rather than a userspace copy.
    pub spliced: u64,
}

/// How a session moves its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// Userspace copy only (`read` + `write`).
    Copy,
    /// `splice(2)` through a pooled pipe per direction whenever a pipe can be
    /// had, copy otherwise. For tests and benchmarks.
    Splice,
    /// Copy for request/response traffic, splice for bulk, chosen per direction
    /// from what it reads (see the `direction` module). What [`forward`] uses.
    #[default]
    Auto,
}

impl Engine {
    /// The engine [`forward`] uses: [`Engine::Auto`], unless the environment
    /// variable [`ENGINE_ENV`] says `copy`, `splice` or `auto` (read once per
    /// process). A benchmarking and diagnostic switch, so the load benchmark
    /// can compare engines in the real binary; not a tuning knob.
    pub fn from_env() -> Engine {
        static ENGINE: LazyLock<Engine> =
            LazyLock::new(|| match std::env::var(ENGINE_ENV).as_deref() {
                Ok("copy") => Engine::Copy,
                Ok("splice") => Engine::Splice,
                _ => Engine::Auto,
            });
        *ENGINE
    }
}

/// The environment variable read by [`Engine::from_env`].
pub const ENGINE_ENV: &str = "KEYWAY_IO_ENGINE";

/// Forwards between `client` and `node` until the session ends, with
/// [`Engine::from_env`] (normally [`Engine::Auto`]); see the module doc.
pub async fn forward(
    client: &mut TcpStream,
    node: &mut TcpStream,
    idle: Option<Duration>,
    cut: impl Future<Output = ()>,
) -> (Transfer, Close) {
    forward_with(client, node, Engine::from_env(), idle, cut).await
}

/// [`forward`] with a chosen [`Engine`].
pub async fn forward_with(
    client: &mut TcpStream,
    node: &mut TcpStream,
    engine: Engine,
    idle: Option<Duration>,
    cut: impl Future<Output = ()>,
) -> (Transfer, Close) {
    forward_in(client, node, engine, PipePool::global(), idle, cut).await
}

/// [`forward_with`] borrowing pipes from `pool` (tests use a pool of their own).
pub(crate) async fn forward_in(
    client: &mut TcpStream,
    node: &mut TcpStream,
    engine: Engine,
    pool: &'static PipePool,
    idle: Option<Duration>,
    cut: impl Future<Output = ()>,
) -> (Transfer, Close) {
    let mut up = Direction::new(Side::Client, Side::Node, engine, pool);
    let mut down = Direction::new(Side::Node, Side::Client, engine, pool);
    let mut cut = pin!(cut);
    // Boxed: most sessions have no idle timeout, and a `Sleep` inline would
    // make every session's future over 100 bytes larger.
    let mut timer = idle.map(|idle| Box::pin(sleep(idle)));

    let close = poll_fn(|cx| {
        if cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Close::Cut);
        }
        let before = up.bytes + down.bytes;
        if !up.done
            && let Poll::Ready(Err((side, e))) = up.poll(cx, client, node)
        {
            return Poll::Ready(Close::Error(side, e));
        }
        if !down.done
            && let Poll::Ready(Err((side, e))) = down.poll(cx, node, client)
        {
            return Poll::Ready(Close::Error(side, e));
        }
        if up.done && down.done {
            return Poll::Ready(Close::Done);
        }
        if let (Some(timer), Some(idle)) = (timer.as_mut(), idle) {
            if up.bytes + down.bytes != before {
                timer.as_mut().reset(Instant::now() + idle);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Close::Idle);
            }
        }
        Poll::Pending
    })
    .await;
    let transfer = Transfer {
        client_to_node: up.bytes,
        node_to_client: down.bytes,
        spliced: up.spliced + down.spliced,
    };
    (transfer, close)
}

#[cfg(test)]
mod tests {
    //! The forwarding matrix, run once per engine by `matrix!` below: both
    //! directions, half-close each way, one side stalled, peer reset each way,
    //! idle, cut, 1 MiB and 100 MiB byte-exact.

    use super::*;
    use std::future::pending;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    const DEADLINE: Duration = Duration::from_secs(60);

    /// A connected pair of streams: (the side we hand to `forward`, the far end).
    async fn pair() -> io::Result<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let near = TcpStream::connect(listener.local_addr()?).await?;
        let (far, _) = listener.accept().await?;
        Ok((near, far))
    }

    /// A session: the app end (talks to the client side) and the redis end
    /// (talks to the node side), with `forward_with` running between them.
    struct Session {
        app: TcpStream,
        redis: TcpStream,
        task: JoinHandle<(Transfer, Close)>,
        cut: Option<oneshot::Sender<()>>,
        /// The session's own pipe pool, so its counters are this session's alone.
        pool: &'static PipePool,
    }

    async fn session(engine: Engine, idle: Option<Duration>) -> io::Result<Session> {
        let (mut client, app) = pair().await?;
        let (mut node, redis) = pair().await?;
        let (cut_tx, cut_rx) = oneshot::channel::<()>();
        let pool: &'static PipePool =
            Box::leak(Box::new(PipePool::new(crate::splice::PIPE_SIZE, 1024)));
        let task = tokio::spawn(async move {
            let cut = async {
                // A dropped sender means "never cut".
                if cut_rx.await.is_err() {
                    pending::<()>().await;
                }
            };
            forward_in(&mut client, &mut node, engine, pool, idle, cut).await
        });
        Ok(Session {
            app,
            redis,
            task,
            cut: Some(cut_tx),
            pool,
        })
    }

    async fn finish(task: JoinHandle<(Transfer, Close)>) -> (Transfer, Close) {
        timeout(DEADLINE, task)
            .await
            .expect("forward did not end")
            .expect("forward panicked")
    }

    /// Writes `chunk` until the kernel buffers on the way are full.
    async fn fill(stream: &mut TcpStream) -> usize {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while let Ok(Ok(n)) = timeout(Duration::from_millis(300), stream.write(&chunk)).await {
            sent += n;
        }
        sent
    }

    async fn both_directions_then_eof_both_ways(engine: Engine) -> io::Result<()> {
        let mut s = session(engine, None).await?;
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
        assert_eq!((transfer.client_to_node, transfer.node_to_client), (14, 7));
        Ok(())
    }

    async fn small_request_response_many_times(engine: Engine) -> io::Result<()> {
        let mut s = session(engine, None).await?;
        for i in 0..200u32 {
            let req = format!("*2\r\n$3\r\nGET\r\n$8\r\nkey:{i:04}\r\n");
            s.app.write_all(req.as_bytes()).await?;
            let mut got = vec![0u8; req.len()];
            s.redis.read_exact(&mut got).await?;
            assert_eq!(got, req.as_bytes());
            s.redis.write_all(b"$-1\r\n").await?;
            let mut got = [0u8; 5];
            s.app.read_exact(&mut got).await?;
            assert_eq!(&got, b"$-1\r\n");
        }
        drop(s.app);
        drop(s.redis);
        let (transfer, close) = finish(s.task).await;
        assert!(!matches!(close, Close::Cut | Close::Idle), "{close:?}");
        assert_eq!(transfer.node_to_client, 1000);
        if engine != Engine::Splice {
            // The policy keeps request/response traffic on the copy path.
            assert_eq!(transfer.spliced, 0);
        }
        Ok(())
    }

    async fn half_close_keeps_the_other_direction_flowing(engine: Engine) -> io::Result<()> {
        let mut s = session(engine, None).await?;
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

    async fn node_eof_first_reaches_the_client_while_client_keeps_sending(
        engine: Engine,
    ) -> io::Result<()> {
        let mut s = session(engine, None).await?;
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

    async fn stalled_node_reader_does_not_stop_replies(engine: Engine) -> io::Result<()> {
        let mut s = session(engine, None).await?;
        // The node stops reading: client -> node backs up through every buffer
        // (kernel, pipe, copy buffer) ...
        let sent = fill(&mut s.app).await;
        assert!(sent > 0);
        // ... while node -> client, bulk and small, still flows.
        let reply: Vec<u8> = (0..3 * 64 * 1024).map(|i| (i % 253) as u8).collect();
        s.redis.write_all(&reply).await?;
        let mut got = vec![0u8; reply.len()];
        s.app.read_exact(&mut got).await?;
        assert!(got == reply, "reply bytes differ");
        s.redis.write_all(b"+OK\r\n").await?;
        let mut got = [0u8; 5];
        s.app.read_exact(&mut got).await?;
        assert_eq!(&got, b"+OK\r\n");
        // Then the node drains everything the client sent, in order.
        s.app.shutdown().await?;
        let mut at_node = Vec::new();
        s.redis.read_to_end(&mut at_node).await?;
        assert_eq!(at_node.len(), sent);
        assert!(at_node.iter().all(|&b| b == 7));
        s.redis.shutdown().await?;
        let (transfer, close) = finish(s.task).await;
        assert!(matches!(close, Close::Done), "{close:?}");
        assert_eq!(transfer.client_to_node, sent as u64);
        Ok(())
    }

    async fn node_reset_is_a_node_error(engine: Engine) -> io::Result<()> {
        let s = session(engine, None).await?;
        // SO_LINGER 0 turns the close into a RST.
        socket2::SockRef::from(&s.redis).set_linger(Some(Duration::ZERO))?;
        drop(s.redis);
        let (_, close) = finish(s.task).await;
        assert!(matches!(close, Close::Error(Side::Node, _)), "{close:?}");
        Ok(())
    }

    async fn client_reset_is_a_client_error(engine: Engine) -> io::Result<()> {
        let s = session(engine, None).await?;
        socket2::SockRef::from(&s.app).set_linger(Some(Duration::ZERO))?;
        drop(s.app);
        let (_, close) = finish(s.task).await;
        assert!(matches!(close, Close::Error(Side::Client, _)), "{close:?}");
        Ok(())
    }

    async fn node_reset_while_writing_to_it_is_a_node_error(engine: Engine) -> io::Result<()> {
        let mut s = session(engine, None).await?;
        // Bytes are waiting for the node when it resets: the write fails.
        let _ = fill(&mut s.app).await;
        socket2::SockRef::from(&s.redis).set_linger(Some(Duration::ZERO))?;
        drop(s.redis);
        let (_, close) = finish(s.task).await;
        assert!(matches!(close, Close::Error(Side::Node, _)), "{close:?}");
        Ok(())
    }

    async fn cut_ends_the_session_even_with_a_stalled_node(engine: Engine) -> io::Result<()> {
        let mut s = session(engine, None).await?;
        // The node never reads: fill what the kernel buffers will take.
        let _ = fill(&mut s.app).await;
        s.cut.take().map(|c| c.send(()));
        let (transfer, close) = finish(s.task).await;
        assert!(matches!(close, Close::Cut), "{close:?}");
        assert!(transfer.client_to_node > 0);
        if engine == Engine::Splice {
            // The client -> node pipe still held bytes for the node: closed,
            // not pooled. The node -> client direction never had anything to
            // read, so it never took a pipe.
            let stats = s.pool.stats();
            let counts = (stats.created, stats.discarded_nonempty, stats.idle);
            assert_eq!(counts, (1, 1, 0), "{stats:?}");
        }
        Ok(())
    }

    async fn idle_session_is_closed_and_active_one_is_not(engine: Engine) -> io::Result<()> {
        let mut s = session(engine, Some(Duration::from_millis(300))).await?;
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
    async fn bulk(engine: Engine, size: usize) -> io::Result<()> {
        let s = session(engine, None).await?;
        let pool = s.pool;
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
        match engine {
            Engine::Copy => assert_eq!(transfer.spliced, 0),
            // Most of a bulk transfer goes through the pipes.
            Engine::Splice | Engine::Auto => {
                assert!(transfer.spliced > size as u64, "{transfer:?}")
            }
        }
        // Every pipe went back to the pool empty, none was thrown away (the
        // two directions may have taken turns with one pipe).
        let stats = pool.stats();
        assert_eq!(stats.discarded_nonempty, 0, "{stats:?}");
        assert_eq!(stats.idle as u64, stats.created, "{stats:?}");
        assert_eq!(stats.created == 0, engine == Engine::Copy, "{stats:?}");
        Ok(())
    }

    /// The matrix, once per engine.
    macro_rules! matrix {
        ($name:ident, $engine:expr) => {
            mod $name {
                use super::*;

                #[tokio::test]
                async fn both_directions_then_eof_both_ways() -> io::Result<()> {
                    super::both_directions_then_eof_both_ways($engine).await
                }
                #[tokio::test]
                async fn small_request_response_many_times() -> io::Result<()> {
                    super::small_request_response_many_times($engine).await
                }
                #[tokio::test]
                async fn half_close_keeps_the_other_direction_flowing() -> io::Result<()> {
                    super::half_close_keeps_the_other_direction_flowing($engine).await
                }
                #[tokio::test]
                async fn node_eof_first_reaches_the_client_while_client_keeps_sending()
                -> io::Result<()> {
                    super::node_eof_first_reaches_the_client_while_client_keeps_sending($engine)
                        .await
                }
                #[tokio::test]
                async fn stalled_node_reader_does_not_stop_replies() -> io::Result<()> {
                    super::stalled_node_reader_does_not_stop_replies($engine).await
                }
                #[tokio::test]
                async fn node_reset_is_a_node_error() -> io::Result<()> {
                    super::node_reset_is_a_node_error($engine).await
                }
                #[tokio::test]
                async fn client_reset_is_a_client_error() -> io::Result<()> {
                    super::client_reset_is_a_client_error($engine).await
                }
                #[tokio::test]
                async fn node_reset_while_writing_to_it_is_a_node_error() -> io::Result<()> {
                    super::node_reset_while_writing_to_it_is_a_node_error($engine).await
                }
                #[tokio::test]
                async fn cut_ends_the_session_even_with_a_stalled_node() -> io::Result<()> {
                    super::cut_ends_the_session_even_with_a_stalled_node($engine).await
                }
                #[tokio::test]
                async fn idle_session_is_closed_and_active_one_is_not() -> io::Result<()> {
                    super::idle_session_is_closed_and_active_one_is_not($engine).await
                }
                #[tokio::test]
                async fn one_mib_both_ways_byte_exact() -> io::Result<()> {
                    super::bulk($engine, 1 << 20).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hundred_mib_both_ways_byte_exact() -> io::Result<()> {
                    super::bulk($engine, 100 << 20).await
                }
            }
        };
    }

    matrix!(copy, Engine::Copy);
    matrix!(splice, Engine::Splice);
    matrix!(auto, Engine::Auto);

    #[tokio::test]
    async fn forward_uses_the_auto_engine() -> io::Result<()> {
        let (mut client, mut app) = pair().await?;
        let (mut node, mut redis) = pair().await?;
        let task =
            tokio::spawn(
                async move { forward(&mut client, &mut node, None, pending::<()>()).await },
            );
        let data = vec![9u8; 1 << 20];
        let writer = tokio::spawn(async move {
            app.write_all(&data).await?;
            app.shutdown().await
        });
        let mut got = Vec::new();
        redis.read_to_end(&mut got).await?;
        redis.shutdown().await?;
        writer.await.expect("writer")?;
        let (transfer, close) = finish(task).await;
        assert!(matches!(close, Close::Done), "{close:?}");
        assert_eq!(got.len(), 1 << 20);
        assert!(transfer.spliced > 0, "{transfer:?}");
        Ok(())
    }

    #[tokio::test]
    async fn splice_falls_back_to_copy_when_no_pipe_can_be_had() -> io::Result<()> {
        // A pool with no page budget refuses every pipe.
        let pool: &'static PipePool = Box::leak(Box::new(PipePool::new(64 * 1024, 0)));
        let (mut client, mut app) = pair().await?;
        let (mut node, mut redis) = pair().await?;
        let task = tokio::spawn(async move {
            forward_in(
                &mut client,
                &mut node,
                Engine::Splice,
                pool,
                None,
                pending(),
            )
            .await
        });
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 241) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            app.write_all(&data).await?;
            app.shutdown().await
        });
        let mut got = Vec::new();
        redis.read_to_end(&mut got).await?;
        redis.shutdown().await?;
        writer.await.expect("writer")?;
        let (transfer, close) = finish(task).await;
        assert!(matches!(close, Close::Done), "{close:?}");
        assert!(got == expect, "bytes differ");
        assert_eq!(transfer.spliced, 0);
        assert!(pool.stats().refused > 0);
        Ok(())
    }
}
