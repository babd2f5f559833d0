//! The forwarding engines on loopback, against tokio's `copy_bidirectional`.
//!
//! Every case runs on a current-thread runtime, so the time measured is the
//! CPU time of the whole loop (the app end, the engine and the "node" end,
//! kernel work included) and the engines are compared at equal cost elsewhere:
//!
//! - `ping_pong/64B`: the app writes a 64-byte request and waits for a 64-byte
//!   reply echoed by the node end (Redis `-P 1` traffic);
//! - `bulk/64KiB`, `bulk/1MiB`: the app writes that many bytes, the node end
//!   reads them all and answers one byte.
//!
//! Run: `cargo bench -p keyway-benches --bench forward`.

use std::future::pending;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keyway_io::{Engine, forward_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

#[derive(Clone, Copy)]
enum Forwarder {
    /// tokio's `copy_bidirectional`: the floor.
    Tokio,
    Keyway(Engine),
}

impl Forwarder {
    const ALL: [(&'static str, Forwarder); 4] = [
        ("copy_bidirectional", Forwarder::Tokio),
        ("copy", Forwarder::Keyway(Engine::Copy)),
        ("splice", Forwarder::Keyway(Engine::Splice)),
        ("auto", Forwarder::Keyway(Engine::Auto)),
    ];
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let near = TcpStream::connect(addr).await.expect("connect");
    let (far, _) = listener.accept().await.expect("accept");
    near.set_nodelay(true).expect("nodelay");
    far.set_nodelay(true).expect("nodelay");
    (near, far)
}

/// The app end of a session forwarded by `forwarder` to a node end that runs
/// `node` on its socket.
async fn session<F, Fut>(forwarder: Forwarder, node: F) -> TcpStream
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let (mut client, app) = pair().await;
    let (mut upstream, far) = pair().await;
    tokio::task::spawn_local(async move {
        match forwarder {
            Forwarder::Tokio => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Forwarder::Keyway(engine) => {
                let _ = forward_with(&mut client, &mut upstream, engine, None, pending()).await;
            }
        }
    });
    tokio::task::spawn_local(node(far));
    app
}

/// Echoes what it reads.
async fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Reads `size` bytes, answers one byte, forever.
async fn sink(mut s: TcpStream, size: usize) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len());
            match s.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n,
            }
        }
        if s.write_all(b"+").await.is_err() {
            return;
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("ping_pong");
    group.throughput(Throughput::Elements(1));
    for (name, forwarder) in Forwarder::ALL {
        let rt = runtime();
        let local = tokio::task::LocalSet::new();
        let mut app = local.block_on(&rt, session(forwarder, echo));
        group.bench_function(BenchmarkId::new(name, "64B"), |b| {
            b.iter_custom(|iters| {
                local.block_on(&rt, async {
                    let req = [b'x'; 64];
                    let mut reply = [0u8; 64];
                    let start = Instant::now();
                    for _ in 0..iters {
                        app.write_all(&req).await.expect("write");
                        app.read_exact(&mut reply).await.expect("read");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn bulk(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulk");
    for (label, size) in [("64KiB", 64 * 1024), ("1MiB", 1024 * 1024)] {
        group.throughput(Throughput::Bytes(size as u64));
        for (name, forwarder) in Forwarder::ALL {
            let rt = runtime();
            let local = tokio::task::LocalSet::new();
            let mut app = local.block_on(&rt, session(forwarder, move |s| sink(s, size)));
            let data = vec![b'v'; size];
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter_custom(|iters| {
                    local.block_on(&rt, async {
                        let mut ack = [0u8; 1];
                        let start = Instant::now();
                        for _ in 0..iters {
                            app.write_all(&data).await.expect("write");
                            app.read_exact(&mut ack).await.expect("read");
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = ping_pong, bulk
}
criterion_main!(benches);
