//! The life of a running Keyway process around a [`Proxy`]: systemd
//! notifications, SIGHUP reloads, the watchdog, and the drain on SIGTERM.
//!
//! Order of events, as systemd sees it:
//! 1. listeners bound (by `Proxy::start`), then every service makes its first
//!    decision, then `READY=1` with the routes in `STATUS=`;
//! 2. on SIGHUP: `RELOADING=1` + `MONOTONIC_USEC`, load and validate the files
//!    off the async workers, apply or keep the running configuration (every
//!    problem logged, the failure counted), then `READY=1`;
//! 3. on SIGTERM / SIGINT: `STOPPING=1`, `/healthz` 503 at once, drain for up to
//!    `drain.timeout`; a second signal closes the remaining sessions at once.
//!
//! `WATCHDOG=1` is sent at half of `WATCHDOG_USEC` by a task on the main
//! runtime, and only when the control thread and every data-path worker have
//! just run a task (`Proxy::liveness`): a stalled thread, any of them, stops the
//! pings and systemd restarts the process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyway_config::Config;

use crate::Proxy;
use crate::metrics::ReloadResult;
use crate::notify::{Notifier, watchdog_interval};
use crate::signals::{Signal, Signals};

/// How often `STATUS=` is refreshed when the routes change.
const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// Runs `proxy` until a stop signal (or its shutdown token), reloading from
/// `config_path` on SIGHUP, then drains it.
pub async fn serve(mut proxy: Proxy, config_path: PathBuf) -> anyhow::Result<()> {
    let notifier = Arc::new(Notifier::from_env());
    let mut signals = Signals::new()?;
    let shutdown = proxy.shutdown_token();

    if let Some(interval) = watchdog_interval() {
        let notifier = notifier.clone();
        let stop = shutdown.clone();
        let liveness = proxy.liveness();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                // Half the interval for the check leaves the other half, and
                // the next tick, before systemd's deadline.
                if liveness.check(interval / 2).await {
                    notifier.watchdog();
                } else {
                    tracing::error!(
                        "a worker or the control thread did not answer; \
                        no watchdog ping, systemd will restart keyway if this lasts"
                    );
                }
            }
        });
    }

    // READY=1 only once every service has decided (a route or knowingly none).
    let stop = tokio::select! {
        () = proxy.first_decisions() => None,
        signal = signals.recv() => Some(signal),
        () = shutdown.cancelled() => Some(Signal::Stop("shutdown")),
    };
    let mut status = proxy.routes_line();
    notifier.ready(&status);
    tracing::info!(routes = %status, "ready");

    let mut stop = stop.and_then(|s| match s {
        Signal::Stop(name) => Some(name),
        Signal::Reload => None,
    });
    let mut refresh = tokio::time::interval(STATUS_REFRESH);
    while stop.is_none() {
        tokio::select! {
            signal = signals.recv() => match signal {
                Signal::Reload => {
                    notifier.reloading();
                    reload(&mut proxy, &config_path).await;
                    status = proxy.routes_line();
                    notifier.ready(&status);
                }
                Signal::Stop(name) => stop = Some(name),
            },
            () = shutdown.cancelled() => stop = Some("shutdown"),
            _ = refresh.tick() => {
                let now = proxy.routes_line();
                if now != status {
                    notifier.status(&now);
                    status = now;
                }
            }
        }
    }

    let name = stop.unwrap_or("shutdown");
    tracing::info!(signal = name, "draining");
    notifier.stopping("draining");
    // A second stop signal during the drain closes what is left at once.
    let force = shutdown.clone();
    tokio::spawn(async move {
        loop {
            match signals.recv().await {
                Signal::Stop(name) => {
                    tracing::warn!(
                        signal = name,
                        "second stop signal: closing every session now"
                    );
                    force.cancel();
                    break;
                }
                Signal::Reload => tracing::warn!("SIGHUP during the drain: ignored"),
            }
        }
    });
    proxy.drain(None).await;
    tracing::info!("keyway stopped");
    Ok(())
}

/// Loads `path` and applies it; on any problem keeps the running configuration.
pub async fn reload(proxy: &mut Proxy, path: &Path) {
    let owned = path.to_path_buf();
    // Reading files and password files is blocking I/O: keep it off the workers
    // that move client bytes.
    let loaded = tokio::task::spawn_blocking(move || Config::from_file(&owned)).await;
    let result = match loaded {
        Ok(Ok(config)) => match proxy.reload(&config).await {
            Ok(summary) => {
                tracing::info!(file = %path.display(), %summary, "configuration reloaded");
                ReloadResult::Success
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %format!("{e:#}"),
                    "reload failed; keeping the running configuration");
                ReloadResult::Failure
            }
        },
        Ok(Err(problems)) => {
            for problem in problems.iter() {
                tracing::error!(%problem, "invalid configuration");
            }
            tracing::error!(file = %path.display(), problems = problems.len(),
                "reload refused; keeping the running configuration");
            ReloadResult::Failure
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed; keeping the running configuration");
            ReloadResult::Failure
        }
    };
    proxy.metrics().config_reload(result);
}
