//! [`Proxy`]: every service of a configuration running in this process.
//!
//! For each service: one `Monitor` (probes and the routing decision) and one
//! `Listener` (accept loop), sharing the route through a watch channel. All tasks,
//! sessions included, are tracked so that shutdown can wait for them. The admin
//! HTTP server (`admin`) reads the services through a published list of
//! `ServiceView`s, and metrics through the per-proxy `Metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use keyway_config::{Config, NodeAddr, Service};
use keyway_discovery::{Monitor, MonitorHandle, RouteWatch, ServiceStatus, Timeline};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminServer, AdminState, DrainFlag, ServiceView};
use crate::listener::Listener;
use crate::metrics::{Metrics, ServiceMetrics};

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

/// A running service, as seen from outside.
#[derive(Debug)]
struct RunningService {
    name: String,
    listen: SocketAddr,
    monitor: MonitorHandle,
    /// What the admin endpoints show of it.
    admin: ServiceView,
}

/// Every service of a configuration, running. See the module doc.
#[derive(Debug)]
pub struct Proxy {
    services: Vec<RunningService>,
    timeline: Timeline,
    metrics: Arc<Metrics>,
    draining: DrainFlag,
    admin_addr: SocketAddr,
    /// The services the admin server shows; publish again after any change.
    admin_views: watch::Sender<Arc<[ServiceView]>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Proxy {
    /// Binds every listener first (so a taken port fails the start before any
    /// probe runs), then starts the monitors and accept loops.
    pub async fn start(config: &Config) -> anyhow::Result<Proxy> {
        let mut bound = Vec::new();
        for service in &config.services {
            let tcp = TcpListener::bind(service.listen).await.with_context(|| {
                format!("service {}: listen on {}", service.name, service.listen)
            })?;
            bound.push((service.clone(), tcp));
        }
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("admin: listen on {}", config.admin.listen))?;
        let admin_addr = admin.local_addr()?;
        let (admin_views, views) = watch::channel::<Arc<[ServiceView]>>(Arc::new([]));
        let metrics = Arc::new(Metrics::new(views.clone()));

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let timeline = Timeline::default();
        let mut services = Vec::new();
        for (service, tcp) in bound {
            let listen = tcp.local_addr()?;
            // The sender will be kept for reload; until then the settings are fixed.
            let (_config_tx, config_rx) = watch::channel(service.clone());
            let (monitor, handle) = Monitor::new(config_rx, timeline.clone());
            tasks.spawn(monitor.run(shutdown.child_token()));
            let ctx = Arc::new(ServiceContext {
                sessions: Arc::new(Semaphore::new(service.limits.max_sessions)),
                held: Arc::new(Semaphore::new(service.limits.max_held)),
                route: handle.route.clone(),
                service: service.clone(),
                metrics: metrics.service(&service.name),
            });
            let view = ServiceView {
                name: service.name.clone(),
                listen,
                sentinel_master_name: service.sentinel.as_ref().map(|s| s.master_name.clone()),
                status: handle.status.clone(),
                metrics: ctx.metrics.clone(),
            };
            let listener = Listener::new(tcp, ctx, tasks.clone());
            tasks.spawn(listener.run(shutdown.child_token()));
            tracing::info!(service = %service.name, %listen, nodes = ?service.nodes, "service started");
            services.push(RunningService {
                name: service.name,
                listen,
                monitor: handle,
                admin: view,
            });
        }
        let proxy = Proxy {
            services,
            timeline,
            metrics,
            draining: DrainFlag::default(),
            admin_addr,
            admin_views,
            shutdown,
            tasks,
        };
        proxy.publish_admin_views();
        let state = AdminState {
            services: views,
            timeline: proxy.timeline.clone(),
            draining: proxy.draining.clone(),
            metrics: proxy.metrics.clone(),
        };
        let server = AdminServer::new(admin, state);
        proxy.tasks.spawn(server.run(proxy.shutdown.child_token()));
        tracing::info!(admin = %admin_addr, "admin HTTP listening (/metrics, /healthz, /status)");
        Ok(proxy)
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

    /// A token that stops the proxy when cancelled (signal handlers use it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes every session and waits for all tasks to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the proxy has been shut down (through its token) and every
    /// task has ended.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn find(&self, service: &str) -> Option<&RunningService> {
        self.services.iter().find(|s| s.name == service)
    }
}
