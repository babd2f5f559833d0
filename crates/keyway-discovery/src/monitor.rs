//! The `Monitor` of one service: runs a `Prober` per node, feeds every report to
//! the pure [`Router`], logs what changed, and publishes the route.
//!
//! The route is published on a `tokio::sync::watch` channel: the data path reads
//! it without locks, a new client waits on it while there is no route, and every
//! open session watches it to close itself when the route leaves its node. The
//! channel holds only the latest value, so a slow reader can never hold up the
//! monitor.

use std::sync::Arc;

use keyway_config::{NodeAddr, Service};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::decision::{Event, Router};
use crate::probe::Prober;

/// The receiving end of a service's route: `None` while there is no master.
pub type RouteWatch = watch::Receiver<Option<NodeAddr>>;

/// Owns the control plane of one service. See the module doc.
#[derive(Debug)]
pub struct Monitor {
    service: Service,
    router: Router,
    route: watch::Sender<Option<NodeAddr>>,
}

impl Monitor {
    /// A monitor for `service` and the watch its sessions read the route from.
    /// The route starts as `None`: nothing is routed before the first probes.
    pub fn new(service: Service) -> (Monitor, RouteWatch) {
        let router = Router::new(
            service.nodes.iter().copied(),
            service.check.rise,
            service.check.fall,
        );
        let (route, watch) = watch::channel(None);
        (
            Monitor {
                service,
                router,
                route,
            },
            watch,
        )
    }

    /// Probes every node and keeps the route current until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Room for a few rounds of reports; probers wait when it is full, which
        // only happens if this task is starved, and then stale reports are the
        // least of the problems.
        let (tx, mut reports) = mpsc::channel(self.service.nodes.len() * 4 + 4);
        let mut probers = JoinSet::new();
        let mut wakers: Vec<(NodeAddr, Arc<Notify>)> = Vec::new();
        for node in &self.service.nodes {
            let prober = Prober::new(
                *node,
                self.service.check,
                self.service.auth.clone(),
                tx.clone(),
            );
            wakers.push((*node, prober.waker()));
            probers.spawn(prober.run(shutdown.child_token()));
        }
        drop(tx);

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                report = reports.recv() => {
                    let Some(report) = report else { break };
                    let events = self.router.observe(report.node, &report.outcome, report.at);
                    for event in &events {
                        log_event(&self.service.name, event);
                    }
                    let route = self.router.route();
                    self.route.send_if_modified(|current| {
                        let changed = *current != route;
                        *current = route;
                        changed
                    });
                }
            }
        }
        // The route goes away with the monitor: nothing may be routed on a stale view.
        self.route.send_replace(None);
        probers.shutdown().await;
    }
}

fn log_event(service: &str, event: &Event) {
    match event {
        Event::NodeUp { node } => tracing::info!(service, %node, "node up"),
        Event::NodeDown { node, reason } => {
            tracing::warn!(service, %node, reason = %reason, "node down")
        }
        Event::RoleChanged { node, from, to } => tracing::info!(
            service,
            %node,
            from = from.map(|r| r.role.to_string()).unwrap_or_else(|| "unknown".into()),
            to = %to.role,
            loading = to.loading,
            "node role changed"
        ),
        Event::RouteChanged { from, to } => tracing::warn!(
            service,
            from = from.map(|n| n.to_string()).unwrap_or_else(|| "none".into()),
            to = to.map(|n| n.to_string()).unwrap_or_else(|| "none".into()),
            "route changed"
        ),
        Event::MasterConflict { route, claimants } => tracing::warn!(
            service,
            %route,
            claimants = ?claimants,
            "other nodes claim master; keeping the current route"
        ),
        Event::AmbiguousMasters { claimants } => tracing::error!(
            service,
            claimants = ?claimants,
            "several nodes claim master and none is routed; holding clients"
        ),
    }
}
