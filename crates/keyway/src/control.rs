//! Runtimes on threads of their own: the control plane's, and the data-path
//! workers' (`crate::workers`). Each is one OS thread running a single-threaded
//! tokio runtime, with its own epoll instance and timers.
//!
//! Why the control plane has a thread of its own: the data path can keep every
//! worker busy (a storm of thousands of new connections, bulk transfers). A
//! probe answered in a millisecond must not be *read* hundreds of milliseconds
//! late because its task waited in a busy worker's queue, or it counts as a
//! timeout, `fall` is reached, the route drops and every session is cut. The
//! load benchmark saw exactly that with everything on one runtime. Here the OS
//! schedules the control thread on its own, and its queue only ever holds
//! control-plane work. The runtimes share nothing but channels and atomics.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A single-threaded runtime on a thread named `name`; stopped (its remaining
/// tasks dropped) when this value is dropped.
#[derive(Debug)]
pub struct RuntimeThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RuntimeThread {
    pub fn start(name: String) -> io::Result<RuntimeThread> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(runtime.handle().clone()));
            // Runs the spawned tasks until asked to stop; a dropped sender
            // (the owner is gone) stops it too.
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("runtime thread ended at start"))??;
        Ok(RuntimeThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to spawn tasks that run on this thread.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Whether the runtime behind `handle` runs a new task within `within`: false
/// when its thread is stuck in one task (a blocking call, a loop that never
/// yields) or its runtime is gone. For the systemd watchdog.
pub async fn answers(handle: &Handle, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, handle.spawn(async {})).await,
        Ok(Ok(()))
    )
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Not joined: dropping may happen on an async worker, which must not
        // block; the thread ends on its own once its runtime is dropped.
        drop(self.thread.take());
    }
}

/// The control-plane runtime: monitors (probes, sentinel watchers,
/// decisions) and the admin HTTP server, on the thread `keyway-control`.
pub fn start_control() -> io::Result<RuntimeThread> {
    RuntimeThread::start("keyway-control".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_tasks_on_its_own_thread_and_stops_on_drop() {
        let control = start_control().expect("start");
        let name = control
            .handle()
            .spawn(async { std::thread::current().name().map(String::from) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("keyway-control"));
        let (tx, rx) = oneshot::channel::<()>();
        let pending = control.handle().spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(control);
        // The runtime is gone: the pending task is dropped with it.
        assert!(rx.await.is_err());
        assert!(pending.await.is_err());
    }

    #[tokio::test]
    async fn answers_unless_stuck_or_gone() {
        let thread = RuntimeThread::start("keyway-test".into()).expect("start");
        let handle = thread.handle().clone();
        assert!(answers(&handle, Duration::from_secs(5)).await);
        // A task that blocks its thread: nothing else runs there meanwhile.
        let (started_tx, started_rx) = oneshot::channel();
        handle.spawn(async move {
            let _ = started_tx.send(());
            std::thread::sleep(Duration::from_millis(500));
        });
        started_rx.await.expect("blocking task started");
        assert!(!answers(&handle, Duration::from_millis(50)).await);
        // Once the owner is gone the runtime stops (after the blocking task),
        // and from then on nothing answers.
        drop(thread);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while answers(&handle, Duration::from_millis(100)).await {
            assert!(
                std::time::Instant::now() < deadline,
                "a dropped runtime still answers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
