//! The forwarding engines on loopback, against tokio's `copy_bidirectional`.
//!
//! Every case runs on one current-thread runtime (the app end, the engine and
//! the "node" end), which keeps one CPU busy, so on a quiet machine wall time is
//! the CPU cost of the whole loop, kernel work included, and the engines are
//! compared at equal cost elsewhere:
//!
//! - `ping_pong/64B`: the app writes a 64-byte request and waits for a 64-byte
//!   reply echoed by the node end (Redis `-P 1` traffic);
//! - `bulk/64KiB`, `bulk/1MiB`: the app writes that many bytes, the node end
//!   reads them all and tells the app through an in-process channel, so only
//!   the bulk direction crosses the proxy.
//!
//! `KEYWAY_BENCH_CLOCK=thread-cpu` measures the CPU time of the thread
//! (`/proc/thread-self/schedstat`) instead of wall time, which other processes
//! disturb less, but which misses kernel work done on other CPUs (softirqs).
//!
//! Run: `cargo bench -p keyway-benches --bench forward`.

use std::future::pending;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keyway_io::{Engine, forward_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

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

/// Reads `size` bytes, says so on `done`, forever.
async fn sink(mut s: TcpStream, size: usize, done: mpsc::UnboundedSender<()>) {
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
        if done.send(()).is_err() {
            return;
        }
    }
}

/// The clock of every measurement: wall time, or the CPU time of the calling
/// thread (first field of its schedstat) with `KEYWAY_BENCH_CLOCK=thread-cpu`.
fn cpu_time() -> Duration {
    static START: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    if std::env::var_os("KEYWAY_BENCH_CLOCK").is_none_or(|c| c != "thread-cpu") {
        return START.elapsed();
    }
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat format");
    Duration::from_nanos(nanos)
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
                    let start = cpu_time();
                    for _ in 0..iters {
                        app.write_all(&req).await.expect("write");
                        app.read_exact(&mut reply).await.expect("read");
                    }
                    cpu_time() - start
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
            let (done_tx, mut done) = mpsc::unbounded_channel();
            let mut app = local.block_on(&rt, session(forwarder, move |s| sink(s, size, done_tx)));
            let data = vec![b'v'; size];
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter_custom(|iters| {
                    local.block_on(&rt, async {
                        let start = cpu_time();
                        for _ in 0..iters {
                            app.write_all(&data).await.expect("write");
                            done.recv().await.expect("sink");
                        }
                        cpu_time() - start
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
