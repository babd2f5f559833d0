//! [`Proxy`]: every service of a configuration running in this process.
//!
//! For each service: one `Monitor` (probes and the routing decision) and one
//! `Listener` (accept loop), sharing the route through a watch channel. All tasks,
//! sessions included, are tracked so that shutdown can wait for them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use keyway_config::{Config, NodeAddr, Service};
use keyway_discovery::{Monitor, RouteWatch};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::Listener;

/// What the sessions of one service share: its settings, route and limits.
#[derive(Debug)]
pub(crate) struct ServiceContext {
    pub(crate) service: Service,
    pub(crate) route: RouteWatch,
    /// One permit per open session, held clients included (`max_sessions`).
    pub(crate) sessions: Arc<Semaphore>,
    /// One permit per client waiting for a route (`max_held`).
    pub(crate) held: Arc<Semaphore>,
}

/// A running service, as seen from outside.
#[derive(Debug)]
struct RunningService {
    name: String,
    listen: SocketAddr,
    route: RouteWatch,
}

/// Every service of a configuration, running. See the module doc.
#[derive(Debug)]
pub struct Proxy {
    services: Vec<RunningService>,
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

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut services = Vec::new();
        for (service, tcp) in bound {
            let listen = tcp.local_addr()?;
            let (monitor, route) = Monitor::new(service.clone());
            tasks.spawn(monitor.run(shutdown.child_token()));
            let ctx = Arc::new(ServiceContext {
                sessions: Arc::new(Semaphore::new(service.limits.max_sessions)),
                held: Arc::new(Semaphore::new(service.limits.max_held)),
                route: route.clone(),
                service: service.clone(),
            });
            let listener = Listener::new(tcp, ctx, tasks.clone());
            tasks.spawn(listener.run(shutdown.child_token()));
            tracing::info!(service = %service.name, %listen, nodes = ?service.nodes, "service started");
            services.push(RunningService {
                name: service.name,
                listen,
                route,
            });
        }
        Ok(Proxy {
            services,
            shutdown,
            tasks,
        })
    }

    /// The address a service actually listens on (useful with port 0).
    pub fn listen_addr(&self, service: &str) -> Option<SocketAddr> {
        self.find(service).map(|s| s.listen)
    }

    /// The node a service routes new sessions to right now.
    pub fn route(&self, service: &str) -> Option<NodeAddr> {
        self.find(service).and_then(|s| *s.route.borrow())
    }

    /// A watch on a service's route.
    pub fn route_watch(&self, service: &str) -> Option<RouteWatch> {
        self.find(service).map(|s| s.route.clone())
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
