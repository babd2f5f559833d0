//! The data-path workers: `[runtime] workers` threads, each a single-threaded
//! runtime with its own epoll instance (`crate::control::RuntimeThread`), like
//! HAProxy's threads. Every worker runs an accept loop for every service, on
//! its own descriptor of the service's socket (`Proxy` does the `dup`): the
//! first worker to wake accepts a new client, and the session then lives on
//! that worker until it ends. A worker busy forwarding wakes late, so new
//! clients go to the idle ones.
//!
//! Why not tokio's multi-thread runtime, which the first versions used: its
//! workers share one epoll instance and steal tasks from each other. With
//! Redis and the load generator on the same two CPUs, the load benchmark
//! showed it paying for that in futex wakeups and in its p99: when the worker
//! holding the event loop is preempted, no other worker sees new events. A
//! worker per thread with its own event loop has neither; what it gives up,
//! moving a busy session to an idle thread, matters little for Redis
//! sessions, which are many, long-lived and alike. Why accept on every worker
//! rather than on one thread that hands sockets over: moving a registered
//! socket from one runtime to another (`into_std`, `from_std`) cost 2.3 KB of
//! memory per idle session in the benchmark, and a wakeup of the worker per
//! new client.

use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::Handle;

use crate::control::RuntimeThread;

/// See the module doc.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<RuntimeThread>,
}

impl Workers {
    /// Starts `count` workers, or one per CPU.
    pub fn start(count: Option<usize>) -> io::Result<Workers> {
        let count = count
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
            .max(1);
        let threads = (0..count)
            .map(|i| RuntimeThread::start(format!("keyway-worker-{i}")))
            .collect::<io::Result<_>>()?;
        Ok(Workers { threads })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Where to spawn tasks on each worker.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.threads.iter().map(RuntimeThread::handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_runs_tasks_on_a_thread_of_its_own() {
        let workers = Workers::start(Some(3)).expect("start");
        assert_eq!(workers.len(), 3);
        let mut names = Vec::new();
        for handle in workers.handles() {
            let name = handle
                .spawn(async { std::thread::current().name().map(String::from) })
                .await
                .expect("task");
            names.push(name.expect("thread name"));
        }
        assert_eq!(
            names,
            ["keyway-worker-0", "keyway-worker-1", "keyway-worker-2"]
        );
    }

    #[test]
    fn one_per_cpu_by_default() {
        let workers = Workers::start(None).expect("start");
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(workers.len(), cpus);
    }
}
