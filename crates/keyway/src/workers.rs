//! The data-path workers: `[runtime] workers` threads, each a single-threaded
//! runtime with its own epoll instance (`crate::control::RuntimeThread`), like
//! HAProxy's threads. The accept loops run on the main runtime and hand each
//! new session to the worker with the fewest open sessions; the session then
//! lives on that thread until it ends.
//!
//! Why not tokio's multi-thread runtime, which the first versions used: its
//! workers share one epoll instance and steal tasks from each other. With
//! Redis and the load generator on the same two CPUs, the load benchmark
//! showed it paying for that in futex wakeups and in its p99: when the worker
//! holding the event loop is preempted, no other worker sees new events. A
//! worker per thread with its own event loop has neither; what it gives up,
//! moving a busy session to an idle thread, matters little for Redis
//! sessions, which are many, long-lived and alike.
//!
//! Why not accept on every worker, each on a `dup` of the listening socket, as
//! a later version did: the first worker to wake drained the whole accept
//! queue, so a burst of new clients (every redis-benchmark run, every client
//! pool at start) landed on one worker and the other stayed idle.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::control::{RuntimeThread, answers};

/// See the module doc.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    thread: RuntimeThread,
    /// Sessions open on this worker.
    sessions: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` workers, or one per CPU.
    pub fn start(count: Option<usize>) -> io::Result<Workers> {
        let count = count
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
            .max(1);
        let threads = (0..count)
            .map(|i| {
                Ok(Worker {
                    thread: RuntimeThread::start(format!("keyway-worker-{i}"))?,
                    sessions: Arc::default(),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Workers { threads })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether every worker runs a new task within `within` (the watchdog's
    /// check that no worker's event loop is stuck).
    pub async fn answer(&self, within: Duration) -> bool {
        for worker in &self.threads {
            if !answers(worker.thread.handle(), within).await {
                return false;
            }
        }
        true
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Runs the future `session` makes on the worker with the fewest open
    /// sessions, tracked by `tracker` (drain and reload wait on it). The future
    /// must hold the [`OnWorker`] it is given for as long as it runs, and
    /// create its sockets' registrations when first polled, on that worker.
    ///
    /// A closure rather than a future so that the session's future is the
    /// task's, not wrapped in another `async` block: an `async` block that
    /// awaits a future it captured keeps two copies of it (the captured one
    /// and the one being awaited), which cost 2.3 KB per idle session.
    pub fn spawn<F, Fut>(&self, tracker: &TaskTracker, session: F)
    where
        F: FnOnce(OnWorker) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .threads
            .iter()
            .min_by_key(|w| w.sessions.load(Ordering::Relaxed))
        else {
            return;
        };
        let on_worker = OnWorker::new(worker.sessions.clone());
        worker
            .thread
            .handle()
            .spawn(tracker.track_future(session(on_worker)));
    }
}

/// Counts one session on its worker for as long as it is held.
#[derive(Debug)]
pub struct OnWorker(Arc<AtomicUsize>);

impl OnWorker {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        OnWorker(count)
    }
}

impl Drop for OnWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn sessions_go_to_the_least_busy_worker_and_are_tracked() {
        let workers = Workers::start(Some(2)).expect("start");
        assert_eq!(workers.len(), 2);
        let tracker = TaskTracker::new();
        let mut release = Vec::new();
        let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let (tx, rx) = oneshot::channel::<()>();
            release.push(tx);
            let names = names_tx.clone();
            workers.spawn(&tracker, move |on_worker| async move {
                let _on_worker = on_worker;
                let _ = names.send(std::thread::current().name().map(String::from));
                let _ = rx.await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(names_rx.recv().await.flatten().expect("thread name"));
        }
        names.sort();
        // Two open sessions on each: the spawn order alternates.
        assert_eq!(
            names,
            [
                "keyway-worker-0",
                "keyway-worker-0",
                "keyway-worker-1",
                "keyway-worker-1"
            ]
        );
        tracker.close();
        assert_eq!(tracker.len(), 4);
        drop(release);
        tracker.wait().await;
        assert!(
            workers
                .threads
                .iter()
                .all(|w| w.sessions.load(Ordering::Relaxed) == 0)
        );
    }

    #[tokio::test]
    async fn one_stuck_worker_fails_the_check() {
        let workers = Workers::start(Some(2)).expect("start");
        assert!(workers.answer(Duration::from_secs(5)).await);
        let (started_tx, started_rx) = oneshot::channel();
        workers.threads[1].thread.handle().spawn(async move {
            let _ = started_tx.send(());
            std::thread::sleep(Duration::from_millis(500));
        });
        started_rx.await.expect("blocking task started");
        assert!(!workers.answer(Duration::from_millis(50)).await);
    }

    #[test]
    fn one_per_cpu_by_default() {
        let workers = Workers::start(None).expect("start");
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(workers.len(), cpus);
    }
}
