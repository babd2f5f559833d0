//! Tests only: a scripted RESP server on 127.0.0.1:0, the fake node of the
//! `probe` tests and the fake sentinel of the `sentinel` tests.
//!
//! A handler answers each command; every command is recorded. `SUBSCRIBE`
//! puts a connection in subscribed mode (the handler still writes the
//! confirmations); from then on it also receives what [`FakeServer::publish`]
//! sends. Dropping the server ends its listener and every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use keyway_config::{NodeAddr, SentinelAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::conn::encode_command;
use crate::reply::{Frame, decode_frame};

/// How long a test waits for anything at most: generous for a loaded CI.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// What the fake server does in answer to one command.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// Write these bytes one at a time, flushing each.
    Trickle(Vec<u8>),
    /// Write nothing.
    Silent,
    /// Write these bytes, then close the connection.
    BytesThenClose(Vec<u8>),
    /// Close the connection.
    Close,
}

pub(crate) fn bytes(b: &[u8]) -> Answer {
    Answer::Bytes(b.to_vec())
}

type Handler = dyn Fn(&[String]) -> Answer + Send + Sync;

/// The address type a test hands to the task under test.
pub(crate) trait Addr {
    fn from_socket(addr: SocketAddr) -> Self;
}

impl Addr for NodeAddr {
    fn from_socket(addr: SocketAddr) -> Self {
        NodeAddr(addr)
    }
}

impl Addr for SentinelAddr {
    fn from_socket(addr: SocketAddr) -> Self {
        SentinelAddr(addr)
    }
}

/// A scripted server, its address typed as `A`.
pub(crate) struct FakeServer<A> {
    pub(crate) addr: A,
    /// Every command received, in order, on any connection.
    pub(crate) commands: Arc<Mutex<Vec<Vec<String>>>>,
    /// Connections accepted in all.
    pub(crate) connections: Arc<AtomicUsize>,
    /// Connections that subscribed, in all.
    pub(crate) subscribed: Arc<AtomicUsize>,
    publish: broadcast::Sender<Vec<u8>>,
    task: JoinHandle<()>,
}

impl<A> Drop for FakeServer<A> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<A: Addr> FakeServer<A> {
    pub(crate) async fn start(
        handler: impl Fn(&[String]) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let commands = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let subscribed = Arc::new(AtomicUsize::new(0));
        let (publish, _) = broadcast::channel(64);
        let handler: Arc<Handler> = Arc::new(handler);
        let task = tokio::spawn({
            let commands = Arc::clone(&commands);
            let connections = Arc::clone(&connections);
            let subscribed = Arc::clone(&subscribed);
            let publish = publish.clone();
            async move {
                // Connections live in this task: aborting it (on drop) ends them all.
                let mut served = tokio::task::JoinSet::new();
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    served.spawn(serve(
                        socket,
                        Arc::clone(&handler),
                        Arc::clone(&commands),
                        Arc::clone(&subscribed),
                        publish.subscribe(),
                    ));
                }
            }
        });
        FakeServer {
            addr: A::from_socket(addr),
            commands,
            connections,
            subscribed,
            publish,
            task,
        }
    }
}

impl<A> FakeServer<A> {
    /// How many commands named `name` were received.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.commands
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.first().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .count()
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections have subscribed in all.
    pub(crate) async fn until_subscribed(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.subscribed.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "never subscribed {n} times");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a published message to every subscribed connection.
    pub(crate) fn publish(&self, channel: &str, payload: &str) {
        let mut out = BytesMut::new();
        encode_command(
            &mut out,
            &[b"message", channel.as_bytes(), payload.as_bytes()],
        );
        self.publish.send(out.to_vec()).expect("a subscriber");
    }
}

async fn serve(
    mut socket: TcpStream,
    handler: Arc<Handler>,
    commands: Arc<Mutex<Vec<Vec<String>>>>,
    subscribed: Arc<AtomicUsize>,
    mut published: broadcast::Receiver<Vec<u8>>,
) {
    let mut buf = BytesMut::new();
    let mut in_pubsub = false;
    loop {
        while let Ok(Some(frame)) = decode_frame(&mut buf) {
            let Frame::Array(args) = frame else { return };
            let args: Vec<String> = args
                .iter()
                .map(|a| match a {
                    Frame::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                })
                .collect();
            commands.lock().expect("lock").push(args.clone());
            match handler(&args) {
                Answer::Bytes(b) => {
                    if socket.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Answer::Trickle(b) => {
                    for byte in b {
                        if socket.write_all(&[byte]).await.is_err() {
                            return;
                        }
                        let _ = socket.flush().await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Answer::Silent => {}
                Answer::BytesThenClose(b) => {
                    let _ = socket.write_all(&b).await;
                    return;
                }
                Answer::Close => return,
            }
            if args
                .first()
                .is_some_and(|a| a.eq_ignore_ascii_case("SUBSCRIBE"))
            {
                in_pubsub = true;
                subscribed.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::select! {
            read = socket.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            message = published.recv() => match message {
                Ok(message) if in_pubsub => {
                    if socket.write_all(&message).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
