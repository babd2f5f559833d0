//! [`Proxy`]: every service of a configuration running in this process.
//!
//! For each service: one `Monitor` (probes and the routing decision, on the
//! control-plane thread, see `control`) and one `Listener` (accept loop, on the
//! main runtime), sharing the route through a watch channel. All tasks,
//! sessions included, are tracked so that shutdown can wait for them.
//!
//! Reload happens in place: each service's monitor gets its new settings on a
//! watch channel (node states and the route survive), its listener hands new
//! clients a new `ServiceContext` while open sessions keep theirs, and each
//! service has separate stop tokens for accepting, for sessions and for the
//! monitor, so that a removed service stops accepting at once, drains its
//! sessions for up to `drain.timeout`, and only then stops probing. The admin
//! HTTP server (`admin`) reads the services through a published list of
//! `ServiceView`s, and metrics through the per-proxy `Metrics`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keyway_config::{Config, Log, NodeAddr, Runtime, Service};
use keyway_discovery::{Monitor, MonitorHandle, RouteWatch, ServiceStatus, Timeline};
use std::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminServer, AdminState, DrainFlag, ServiceView};
use crate::control::{RuntimeThread, start_control};
use crate::listener::Listener;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::workers::Workers;

/// Binds a service's listen address.
fn bind(service: &Service) -> anyhow::Result<TcpListener> {
    bind_std(service.listen)
        .with_context(|| format!("service {}: listen on {}", service.name, service.listen))
}

/// A non-blocking std listener (SO_REUSEADDR and a backlog of 1024, like
/// tokio's): the admin server's, which runs on the control thread, and the
/// services', whose accept loops call `accept(2)` themselves (`Listener`).
fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What the sessions of one service share: its settings, route and limits.
#[derive(Debug)]
pub(crate) struct ServiceContext {
    pub(crate) service: Service,
    pub(crate) route: RouteWatch,
    /// One permit per open session, held clients included (`max_sessions`).
    pub(crate) sessions: Arc<Semaphore>,
    /// One permit per client waiting for a route (`max_held`).
    pub(crate) held: Arc<Semaphore>,
    /// Data-path metric handles, resolved once when the service starts.
    pub(crate) metrics: ServiceMetrics,
}

impl ServiceContext {
    /// The context for `service`. On reload, `previous` lends its semaphores
    /// when the limits did not change, so open sessions keep counting against
    /// the same limits; new limits start new counts (documented: for a moment
    /// old and new sessions together may exceed the new limit).
    fn new(
        service: Service,
        route: RouteWatch,
        metrics: &Metrics,
        previous: Option<&ServiceContext>,
    ) -> Self {
        let same_limits = previous.filter(|p| p.service.limits == service.limits);
        ServiceContext {
            sessions: same_limits.map_or_else(
                || Arc::new(Semaphore::new(service.limits.max_sessions)),
                |p| p.sessions.clone(),
            ),
            held: same_limits.map_or_else(
                || Arc::new(Semaphore::new(service.limits.max_held)),
                |p| p.held.clone(),
            ),
            metrics: previous.map_or_else(|| metrics.service(&service.name), |p| p.metrics.clone()),
            route,
            service,
        }
    }
}

/// A running service: its tasks, the channels that reconfigure it, and the
/// tokens that stop its parts one by one (accept, sessions, monitor).
#[derive(Debug)]
struct RunningService {
    name: String,
    /// The configured listen address (the bound one can differ with port 0).
    configured_listen: SocketAddr,
    listen: SocketAddr,
    /// New settings for the monitor (reload).
    config: watch::Sender<Service>,
    /// New settings for new sessions (reload).
    ctx: watch::Sender<Arc<ServiceContext>>,
    monitor: MonitorHandle,
    /// What the admin endpoints show of it.
    admin: ServiceView,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    monitor_stop: CancellationToken,
    sessions: TaskTracker,
}

/// Every service of a configuration, running. See the module doc.
#[derive(Debug)]
pub struct Proxy {
    services: Vec<RunningService>,
    timeline: Timeline,
    metrics: Arc<Metrics>,
    draining: DrainFlag,
    admin_addr: SocketAddr,
    /// The configured admin address, log and runtime settings: a reload cannot
    /// change them.
    admin_listen: SocketAddr,
    log: Log,
    runtime: Runtime,
    drain_timeout: Duration,
    /// Sessions of services removed by a reload that may still be draining:
    /// a SIGTERM drain waits for them too.
    retired: Vec<TaskTracker>,
    /// The services the admin server shows; publish again after any change.
    admin_views: watch::Sender<Arc<[ServiceView]>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Monitors and the admin server run here, away from the data path.
    control: RuntimeThread,
    /// The data-path threads every session runs on.
    workers: Arc<Workers>,
}

/// The threads a running proxy needs besides the main one (see
/// [`Proxy::liveness`]).
#[derive(Debug, Clone)]
pub struct Liveness {
    control: tokio::runtime::Handle,
    workers: Arc<Workers>,
}

impl Liveness {
    /// Whether the control thread and every worker run a new task within
    /// `within` each.
    pub async fn check(&self, within: Duration) -> bool {
        crate::control::answers(&self.control, within).await && self.workers.answer(within).await
    }
}

/// What a reload changed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "added {:?}, removed {:?}, changed {:?}, unchanged {}",
            self.added, self.removed, self.changed, self.unchanged
        )
    }
}

impl Proxy {
    /// Binds every listener first (so a taken port fails the start before any
    /// probe runs), then starts the monitors and accept loops.
    pub async fn start(config: &Config) -> anyhow::Result<Proxy> {
        let mut bound = Vec::new();
        for service in &config.services {
            bound.push((service.clone(), bind(service)?));
        }
        let admin = bind_std(config.admin.listen)
            .with_context(|| format!("admin: listen on {}", config.admin.listen))?;
        let admin_addr = admin.local_addr()?;
        let (admin_views, views) = watch::channel::<Arc<[ServiceView]>>(Arc::new([]));
        let metrics = Arc::new(Metrics::new(views.clone()));

        let mut proxy = Proxy {
            services: Vec::new(),
            timeline: Timeline::default(),
            metrics,
            draining: DrainFlag::default(),
            admin_addr,
            admin_listen: config.admin.listen,
            log: config.log.clone(),
            runtime: config.runtime,
            drain_timeout: config.drain.timeout,
            retired: Vec::new(),
            admin_views,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            control: start_control().context("starting the control-plane thread")?,
            workers: Arc::new(
                Workers::start(config.runtime.workers).context("starting the worker threads")?,
            ),
        };
        for (service, tcp) in bound {
            let running = proxy.start_service(service, tcp)?;
            proxy.services.push(running);
        }
        proxy.publish_admin_views();
        let state = AdminState {
            services: views,
            timeline: proxy.timeline.clone(),
            draining: proxy.draining.clone(),
            metrics: proxy.metrics.clone(),
        };
        let server = AdminServer::new(admin, state);
        proxy.tasks.spawn_on(
            server.run(proxy.shutdown.child_token()),
            proxy.control.handle(),
        );
        tracing::info!(admin = %admin_addr, "admin HTTP listening (/metrics, /healthz, /status)");
        Ok(proxy)
    }

    /// Starts the monitor and the accept loop of one service on a bound socket.
    fn start_service(&self, service: Service, tcp: TcpListener) -> anyhow::Result<RunningService> {
        let listen = tcp.local_addr()?;
        let (config, config_rx) = watch::channel(service.clone());
        let (monitor, handle) = Monitor::new(config_rx, self.timeline.clone());
        let monitor_stop = self.shutdown.child_token();
        self.tasks
            .spawn_on(monitor.run(monitor_stop.clone()), self.control.handle());
        let ctx = ServiceContext::new(service.clone(), handle.route.clone(), &self.metrics, None);
        let view = ServiceView {
            name: service.name.clone(),
            listen,
            sentinel_master_name: service.sentinel.as_ref().map(|s| s.master_name.clone()),
            status: handle.status.clone(),
            metrics: ctx.metrics.clone(),
        };
        let (ctx, ctx_rx) = watch::channel(Arc::new(ctx));
        let sessions = TaskTracker::new();
        let sessions_stop = self.shutdown.child_token();
        let accept_stop = self.shutdown.child_token();
        let listener = Listener::new(
            tcp,
            ctx_rx,
            sessions.clone(),
            sessions_stop.clone(),
            self.workers.clone(),
        );
        self.tasks.spawn(listener.run(accept_stop.clone()));
        tracing::info!(service = %service.name, %listen, nodes = ?service.nodes, "service started");
        Ok(RunningService {
            name: service.name.clone(),
            configured_listen: service.listen,
            listen,
            config,
            ctx,
            monitor: handle,
            admin: view,
            accept_stop,
            sessions_stop,
            monitor_stop,
            sessions,
        })
    }

    /// What the watchdog checks before each ping: the control thread and every
    /// data-path worker.
    pub fn liveness(&self) -> Liveness {
        Liveness {
            control: self.control.handle().clone(),
            workers: self.workers.clone(),
        }
    }

    /// How many data-path worker threads run.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Applies a new, already validated configuration without dropping a
    /// session: services are added, removed (their sessions drain for up to
    /// `drain.timeout`) or changed in place. Every new listener is bound before
    /// anything changes, so a taken port fails the reload and keeps the running
    /// configuration whole.
    pub async fn reload(&mut self, config: &Config) -> anyhow::Result<ReloadSummary> {
        if config.admin.listen != self.admin_listen {
            tracing::warn!(running = %self.admin_listen, configured = %config.admin.listen,
                "admin.listen changed: it takes effect at the next restart");
        }
        if config.log != self.log {
            tracing::warn!("[log] changed: it takes effect at the next restart");
        }
        if config.runtime != self.runtime {
            tracing::warn!("[runtime] changed: it takes effect at the next restart");
        }
        // 1. Bind what needs binding; nothing has changed yet if this fails.
        let mut new_sockets: BTreeMap<String, TcpListener> = BTreeMap::new();
        for service in &config.services {
            let needs_socket = self
                .services
                .iter()
                .find(|r| r.name == service.name)
                .is_none_or(|r| r.configured_listen != service.listen);
            if needs_socket {
                new_sockets.insert(service.name.clone(), bind(service)?);
            }
        }
        let mut summary = ReloadSummary::default();
        // 2. Removed services: stop accepting now, let their sessions drain.
        let (kept, removed): (Vec<RunningService>, Vec<RunningService>) =
            std::mem::take(&mut self.services)
                .into_iter()
                .partition(|r| config.services.iter().any(|s| s.name == r.name));
        self.retired.retain(|t| !t.is_empty());
        for running in removed {
            summary.removed.push(running.name.clone());
            self.retired.push(running.sessions.clone());
            self.retire(running, config.drain.timeout);
        }
        self.services = kept;
        // 3. Changed and added services.
        for service in &config.services {
            let socket = new_sockets.remove(&service.name);
            let Some(running) = self.services.iter_mut().find(|r| r.name == service.name) else {
                let tcp = socket.context("internal: no socket bound for a new service")?;
                let running = self.start_service(service.clone(), tcp)?;
                summary.added.push(service.name.clone());
                self.services.push(running);
                continue;
            };
            let current = running.config.borrow().clone();
            if current == *service {
                summary.unchanged += 1;
                continue;
            }
            summary.changed.push(service.name.clone());
            running.config.send_replace(service.clone());
            let old_ctx = running.ctx.borrow().clone();
            let ctx = ServiceContext::new(
                service.clone(),
                running.monitor.route.clone(),
                &self.metrics,
                Some(&old_ctx),
            );
            running.ctx.send_replace(Arc::new(ctx));
            if let Some(tcp) = socket {
                // A new listen address: the new socket takes over accepting;
                // sessions accepted by the old one keep running.
                running.accept_stop.cancel();
                running.accept_stop = self.shutdown.child_token();
                running.listen = tcp.local_addr()?;
                running.configured_listen = service.listen;
                running.admin.listen = running.listen;
                let listener = Listener::new(
                    tcp,
                    running.ctx.subscribe(),
                    running.sessions.clone(),
                    running.sessions_stop.clone(),
                    self.workers.clone(),
                );
                self.tasks.spawn(listener.run(running.accept_stop.clone()));
                tracing::info!(service = %service.name, listen = %running.listen, "service listens on a new address");
            }
        }
        self.drain_timeout = config.drain.timeout;
        self.publish_admin_views();
        Ok(summary)
    }

    /// Stops a removed service: no new client now, sessions drain for up to
    /// `timeout`, then they are closed and the monitor stops.
    fn retire(&self, running: RunningService, timeout: Duration) {
        running.accept_stop.cancel();
        running.sessions.close();
        tracing::info!(service = %running.name, drain_timeout = ?timeout, "service removed; draining its sessions");
        self.tasks.spawn(async move {
            if tokio::time::timeout(timeout, running.sessions.wait()).await.is_err() {
                tracing::warn!(service = %running.name, "drain timeout: closing the remaining sessions");
            }
            running.sessions_stop.cancel();
            running.sessions.wait().await;
            running.monitor_stop.cancel();
        });
    }

    /// Graceful stop: `/healthz` turns 503 at once, listeners stop, open
    /// sessions may finish for up to `timeout` (the configured `drain.timeout`
    /// when `None`), then the rest are closed and every task ends.
    pub async fn drain(self, timeout: Option<Duration>) {
        let timeout = timeout.unwrap_or(self.drain_timeout);
        self.draining.set(true);
        for running in &self.services {
            running.accept_stop.cancel();
            running.sessions.close();
        }
        let trackers: Vec<&TaskTracker> = self
            .services
            .iter()
            .map(|r| &r.sessions)
            .chain(&self.retired)
            .collect();
        let open: usize = trackers.iter().map(|t| t.len()).sum();
        if open > 0 {
            tracing::info!(sessions = open, timeout = ?timeout, "draining sessions");
        }
        let all_done = async {
            for tracker in &trackers {
                tracker.wait().await;
            }
        };
        // A second stop signal cancels the shutdown token: stop waiting then.
        let finished = tokio::select! {
            result = tokio::time::timeout(timeout, all_done) => result.is_ok(),
            () = self.shutdown.cancelled() => false,
        };
        if !finished {
            let left: usize = trackers.iter().map(|t| t.len()).sum();
            tracing::warn!(sessions = left, "closing the remaining sessions");
        }
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        for tracker in trackers {
            tracker.wait().await;
        }
    }

    /// One line per service for logs and systemd's STATUS: `redis -> 10.0.0.11:6379`.
    pub fn routes_line(&self) -> String {
        let routes: Vec<String> = self
            .services
            .iter()
            .map(|r| {
                let route = (*r.monitor.route.borrow())
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "no route".into());
                format!("{} -> {route}", r.name)
            })
            .collect();
        routes.join(", ")
    }

    /// Resolves once every service has made its first decision (every node and
    /// sentinel heard from once), whether or not it found a route.
    pub async fn first_decisions(&self) {
        for running in &self.services {
            let mut status = running.monitor.status.clone();
            let _ = status.wait_for(|s| s.decided).await;
        }
    }

    /// Shows the current services on the admin endpoints and in the metrics;
    /// call it again whenever the set of services changes.
    fn publish_admin_views(&self) {
        let views = self.services.iter().map(|s| s.admin.clone()).collect();
        self.admin_views.send_replace(views);
    }

    /// The address the admin HTTP server actually listens on (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The process's metrics (the reload code counts reloads here).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The draining flag `/healthz` reads: set it when a drain starts.
    pub fn draining(&self) -> &DrainFlag {
        &self.draining
    }

    /// The address a service actually listens on (useful with port 0).
    pub fn listen_addr(&self, service: &str) -> Option<SocketAddr> {
        self.find(service).map(|s| s.listen)
    }

    /// The node a service routes new sessions to right now.
    pub fn route(&self, service: &str) -> Option<NodeAddr> {
        self.find(service).and_then(|s| *s.monitor.route.borrow())
    }

    /// A watch on a service's route.
    pub fn route_watch(&self, service: &str) -> Option<RouteWatch> {
        self.find(service).map(|s| s.monitor.route.clone())
    }

    /// A snapshot of a service's control plane (nodes, sentinels, route).
    pub fn status(&self, service: &str) -> Option<ServiceStatus> {
        self.find(service)
            .map(|s| s.monitor.status.borrow().clone())
    }

    /// The failover timeline shared by every service.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// A token that stops the proxy when cancelled (then call [`Proxy::drain`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops at once: closes every session and waits for all tasks to end.
    pub async fn shutdown(self) {
        self.drain(Some(Duration::ZERO)).await;
    }

    fn find(&self, service: &str) -> Option<&RunningService> {
        self.services.iter().find(|s| s.name == service)
    }
}
