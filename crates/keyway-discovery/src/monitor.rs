//! The `Monitor` of one service: runs a `Prober` per node and a
//! `SentinelWatcher` per sentinel, feeds every report to the pure [`Router`],
//! logs what changed, records it on the [`Timeline`], and publishes the route.
//!
//! The route is published on a `tokio::sync::watch` channel: the data path reads
//! it without locks, a new client waits on it while there is no route, and every
//! open session watches it to close itself when the route leaves its node. The
//! channel holds only the latest value, so a slow reader can never hold up the
//! monitor. A [`ServiceStatus`] snapshot is published the same way for the
//! admin endpoints.
//!
//! With Sentinel, the node set is the static `nodes` plus every node a sentinel
//! names (master or replica) plus the route; probers start and stop with it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyway_config::{NodeAddr, SentinelAddr, Service};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::decision::{Event, FailoverHint, Health, Majority, Router};
use crate::observation::{NodeRole, ProbeReport, SentinelEvent, SentinelMessage, SentinelOutcome};
use crate::probe::Prober;
use crate::sentinel::SentinelWatcher;
use crate::timeline::Timeline;

/// The receiving end of a service's route: `None` while there is no master.
pub type RouteWatch = watch::Receiver<Option<NodeAddr>>;

/// What one node looks like from this proxy, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub addr: NodeAddr,
    pub health: Health,
    pub role: Option<NodeRole>,
    pub last_error: Option<String>,
    pub last_latency: Option<Duration>,
    pub probes: ProbeCounts,
}

/// Upper bounds (seconds) of the probe duration histogram buckets.
pub const PROBE_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Cumulative probe counters of one node, kept by the monitor (no atomics:
/// one writer), read by the metrics exporter at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeCounts {
    pub total: u64,
    pub failures: u64,
    /// Answered probes per [`PROBE_BUCKETS`] bucket (not cumulative), plus the
    /// overflow bucket last.
    pub duration_buckets: [u64; PROBE_BUCKETS.len() + 1],
    pub duration_sum: Duration,
}

impl Eq for ProbeCounts {}

impl ProbeCounts {
    fn record(&mut self, report: &ProbeReport) {
        self.total += 1;
        if matches!(report.outcome, crate::observation::ProbeOutcome::Failed(_)) {
            self.failures += 1;
            return;
        }
        let secs = report.latency.as_secs_f64();
        let bucket = PROBE_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(PROBE_BUCKETS.len());
        self.duration_buckets[bucket] += 1;
        self.duration_sum += report.latency;
    }
}

/// What one sentinel says, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelStatus {
    pub addr: SentinelAddr,
    /// Its last query succeeded.
    pub reachable: bool,
    pub master: Option<NodeAddr>,
}

/// A snapshot of one service's control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStatus {
    pub route: Option<NodeAddr>,
    /// Every node has been probed (and a sentinel heard from) at least once.
    pub decided: bool,
    pub nodes: Vec<NodeStatus>,
    pub sentinels: Vec<SentinelStatus>,
    /// With Sentinel: the master a majority names, if any.
    pub sentinel_master: Option<NodeAddr>,
    /// Nodes other than the route that claim master (an alert when non-empty).
    pub conflicts: Vec<NodeAddr>,
    /// Route changes since start (to or from none included).
    pub route_changes: u64,
}

/// Owns the control plane of one service. See the module doc.
#[derive(Debug)]
pub struct Monitor {
    service: Service,
    /// New versions of the service's settings (reload), applied in place: the
    /// route, the node states and the sessions all survive a reload.
    config: watch::Receiver<Service>,
    /// Stop tokens of the running sentinel watchers.
    watchers: Vec<CancellationToken>,
    router: Router,
    route: watch::Sender<Option<NodeAddr>>,
    status: watch::Sender<ServiceStatus>,
    timeline: Timeline,
    probers: BTreeMap<NodeAddr, RunningProber>,
    latencies: BTreeMap<NodeAddr, Duration>,
    probe_counts: BTreeMap<NodeAddr, ProbeCounts>,
    route_changes: u64,
    /// The last view of each sentinel, for node discovery.
    discovered: BTreeMap<SentinelAddr, BTreeSet<NodeAddr>>,
}

#[derive(Debug)]
struct RunningProber {
    stop: CancellationToken,
    wake: Arc<Notify>,
}

/// The handles a monitor's owner keeps.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    pub route: RouteWatch,
    pub status: watch::Receiver<ServiceStatus>,
}

impl Monitor {
    /// A monitor for the service `config` holds; later values of `config` are
    /// applied in place. The route starts as `None`: nothing is routed before
    /// the first probes.
    pub fn new(config: watch::Receiver<Service>, timeline: Timeline) -> (Monitor, MonitorHandle) {
        let service = config.borrow().clone();
        let mut router = Router::new(
            service.nodes.iter().copied(),
            service.check.rise,
            service.check.fall,
        );
        router.set_sentinels(sentinel_set(&service));
        let (route, route_rx) = watch::channel(None);
        let (status, status_rx) = watch::channel(ServiceStatus::default());
        let monitor = Monitor {
            service,
            config,
            watchers: Vec::new(),
            router,
            route,
            status,
            timeline,
            probers: BTreeMap::new(),
            latencies: BTreeMap::new(),
            probe_counts: BTreeMap::new(),
            route_changes: 0,
            discovered: BTreeMap::new(),
        };
        let handle = MonitorHandle {
            route: route_rx,
            status: status_rx,
        };
        (monitor, handle)
    }

    /// Probes every node, follows the sentinels and keeps the route current
    /// until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        // Room for a few rounds of reports; senders wait when it is full, which
        // only happens if this task is starved.
        let (probe_tx, mut probes) = mpsc::channel::<ProbeReport>(64);
        let (sentinel_tx, mut sentinels) = mpsc::channel::<SentinelMessage>(64);
        for node in self.service.nodes.clone() {
            self.start_prober(node, &probe_tx, &tasks, &shutdown);
        }
        self.start_watchers(&sentinel_tx, &tasks, &shutdown);

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Ok(()) = self.config.changed() => {
                    let service = self.config.borrow_and_update().clone();
                    let events = self.reconfigure(service, &probe_tx, &sentinel_tx, &tasks, &shutdown);
                    self.publish(events);
                }
                Some(report) = probes.recv() => {
                    self.latencies.insert(report.node, report.latency);
                    self.probe_counts.entry(report.node).or_default().record(&report);
                    let events = self.router.observe(report.node, &report.outcome, report.at);
                    self.publish(events);
                }
                Some(message) = sentinels.recv() => {
                    let events = self.on_sentinel(message, &probe_tx, &tasks, &shutdown);
                    self.publish(events);
                }
            }
        }
        // The route goes away with the monitor: nothing may be routed on a stale view.
        self.route.send_replace(None);
        for prober in self.probers.values() {
            prober.stop.cancel();
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Applies new settings in place (reload): probers restart when the check
    /// or credentials change, watchers when the sentinel settings change, and
    /// the node set follows the static nodes. Node states, votes and the route
    /// are kept, so a reload never drops a route or a session by itself.
    fn reconfigure(
        &mut self,
        service: Service,
        probe_tx: &mpsc::Sender<ProbeReport>,
        sentinel_tx: &mpsc::Sender<SentinelMessage>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Vec<Event> {
        if service == self.service {
            return Vec::new();
        }
        let old = std::mem::replace(&mut self.service, service);
        let now = Instant::now();
        tracing::info!(service = %self.service.name, "applying new settings");
        self.router
            .set_thresholds(self.service.check.rise, self.service.check.fall);
        if old.check != self.service.check || old.auth != self.service.auth {
            for (_, prober) in std::mem::take(&mut self.probers) {
                prober.stop.cancel();
            }
        }
        if old.sentinel != self.service.sentinel {
            for watcher in self.watchers.drain(..) {
                watcher.cancel();
            }
            let kept: BTreeSet<SentinelAddr> = self
                .service
                .sentinel
                .iter()
                .flat_map(|s| s.nodes.iter().copied())
                .collect();
            self.discovered.retain(|s, _| kept.contains(s));
            self.router.set_sentinels(sentinel_set(&self.service));
            self.start_watchers(sentinel_tx, tasks, shutdown);
        }
        // Restarts the probers stopped above and follows the new static nodes.
        self.sync_nodes(now, probe_tx, tasks, shutdown)
    }

    fn start_watchers(
        &mut self,
        sentinel_tx: &mpsc::Sender<SentinelMessage>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        if let Some(config) = &self.service.sentinel {
            for addr in &config.nodes {
                let watcher = SentinelWatcher::new(*addr, config, sentinel_tx.clone());
                let stop = shutdown.child_token();
                tasks.spawn(watcher.run(stop.clone()));
                self.watchers.push(stop);
            }
        }
    }

    fn on_sentinel(
        &mut self,
        message: SentinelMessage,
        probe_tx: &mpsc::Sender<ProbeReport>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Vec<Event> {
        match message {
            SentinelMessage::Report(report) => {
                let mut events = Vec::new();
                if let SentinelOutcome::Answered(view) = &report.outcome {
                    let named: BTreeSet<NodeAddr> =
                        view.master.iter().chain(&view.replicas).copied().collect();
                    if self.discovered.get(&report.sentinel) != Some(&named) {
                        self.discovered.insert(report.sentinel, named);
                        events.extend(self.sync_nodes(report.at, probe_tx, tasks, shutdown));
                    }
                }
                events.extend(self.router.observe_sentinel(
                    report.sentinel,
                    &report.outcome,
                    report.at,
                ));
                events
            }
            SentinelMessage::Event(event) => {
                self.timeline.push(
                    &self.service.name,
                    "sentinel_event",
                    format!(
                        "sentinel {}: {} {}",
                        event.sentinel, event.kind, event.payload
                    ),
                );
                tracing::info!(service = %self.service.name, sentinel = %event.sentinel,
                    kind = %event.kind, payload = %event.payload, "sentinel event");
                let master_name = self
                    .service
                    .sentinel
                    .as_ref()
                    .map(|s| s.master_name.as_str());
                // A node Sentinel sees back (or rebooted): probe it now instead of
                // waiting for the prober's reconnect backoff.
                if let Some(node) = master_name.and_then(|name| recovered_node(&event, name))
                    && let Some(prober) = self.probers.get(&node)
                {
                    prober.wake.notify_one();
                }
                let Some(to) = master_name.and_then(|name| failover_target(&event, name)) else {
                    return Vec::new();
                };
                // Make sure the named node is probed, and probe it now: the
                // event is a reason to look, never a reason to route.
                let mut events = Vec::new();
                if !self.probers.contains_key(&to) {
                    self.discovered
                        .entry(event.sentinel)
                        .or_default()
                        .insert(to);
                    events.extend(self.sync_nodes(event.at, probe_tx, tasks, shutdown));
                }
                if let Some(prober) = self.probers.get(&to) {
                    prober.wake.notify_one();
                }
                events.extend(self.router.observe_failover(
                    FailoverHint {
                        sentinel: event.sentinel,
                        to,
                    },
                    event.at,
                ));
                events
            }
        }
    }

    /// Brings the node set (and the probers) in line with the static nodes,
    /// what the sentinels name, and the route.
    fn sync_nodes(
        &mut self,
        now: Instant,
        probe_tx: &mpsc::Sender<ProbeReport>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Vec<Event> {
        let mut wanted: BTreeSet<NodeAddr> = self.service.nodes.iter().copied().collect();
        wanted.extend(self.discovered.values().flatten().copied());
        wanted.extend(self.router.route());
        let current: BTreeSet<NodeAddr> = self.probers.keys().copied().collect();
        for gone in current.difference(&wanted) {
            if let Some(prober) = self.probers.remove(gone) {
                prober.stop.cancel();
            }
            self.latencies.remove(gone);
            self.probe_counts.remove(gone);
            tracing::info!(service = %self.service.name, node = %gone, "node no longer named; probe stopped");
        }
        for new in wanted.difference(&current) {
            tracing::info!(service = %self.service.name, node = %new, "node discovered; probing");
            self.start_prober(*new, probe_tx, tasks, shutdown);
        }
        self.router.set_nodes(wanted, now)
    }

    fn start_prober(
        &mut self,
        node: NodeAddr,
        probe_tx: &mpsc::Sender<ProbeReport>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let prober = Prober::new(
            node,
            self.service.check,
            self.service.auth.clone(),
            probe_tx.clone(),
        );
        let stop = shutdown.child_token();
        let wake = prober.waker();
        tasks.spawn(prober.run(stop.clone()));
        self.probers.insert(node, RunningProber { stop, wake });
    }

    /// Logs and records `events`, then publishes the route and the status.
    fn publish(&mut self, events: Vec<Event>) {
        for event in &events {
            if matches!(event, Event::RouteChanged { .. }) {
                self.route_changes += 1;
            }
            record(&self.service.name, &self.timeline, event);
        }
        let route = self.router.route();
        self.route.send_if_modified(|current| {
            let changed = *current != route;
            *current = route;
            changed
        });
        self.status.send_replace(self.snapshot());
    }

    fn snapshot(&self) -> ServiceStatus {
        ServiceStatus {
            route: self.router.route(),
            decided: self.router.has_decided(),
            nodes: self
                .router
                .nodes()
                .map(|(addr, s)| NodeStatus {
                    addr,
                    health: s.health,
                    role: s.role,
                    last_error: s.last_error.clone(),
                    last_latency: self.latencies.get(&addr).copied(),
                    probes: self.probe_counts.get(&addr).cloned().unwrap_or_default(),
                })
                .collect(),
            sentinels: self
                .router
                .sentinel_votes()
                .map(|(addr, vote, reachable)| SentinelStatus {
                    addr,
                    reachable,
                    master: vote.and_then(|v| v.master),
                })
                .collect(),
            sentinel_master: match self.router.majority() {
                Some(Majority::Agreed(m)) => Some(m),
                _ => None,
            },
            conflicts: self.router.conflicting_masters(),
            route_changes: self.route_changes,
        }
    }
}

/// The sentinel set of a service and how old a view may be to count. Three
/// missed queries make a view stale: one slow answer does not lose the majority.
fn sentinel_set(service: &Service) -> Option<(Vec<SentinelAddr>, Duration)> {
    service
        .sentinel
        .as_ref()
        .map(|s| (s.nodes.clone(), s.interval * 3 + s.timeout))
}

/// The node a sentinel event says our master is failing over to, if any:
/// `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>`, or
/// `+failover-state-send-slaveof-noone` / `+promoted-slave` with the payload
/// `slave <ip>:<port> <ip> <port> @ <name> <master-ip> <master-port>`.
pub fn failover_target(event: &SentinelEvent, master_name: &str) -> Option<NodeAddr> {
    match event.kind.as_str() {
        "+switch-master" => {
            let words: Vec<&str> = event.payload.split_whitespace().collect();
            (words.first() == Some(&master_name)).then_some(())?;
            event.new_master
        }
        "+failover-state-send-slaveof-noone" | "+promoted-slave" => {
            let words: Vec<&str> = event.payload.split_whitespace().collect();
            match words.as_slice() {
                ["slave", _, ip, port, "@", name, ..] if *name == master_name => {
                    let ip: std::net::IpAddr = ip.parse().ok()?;
                    let port: u16 = port.parse().ok()?;
                    Some(NodeAddr((ip, port).into()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The node a `-sdown`, `-odown` or `+reboot` event says is back, from the
/// payloads `master <name> <ip> <port>` and
/// `slave <ip>:<port> <ip> <port> @ <name> <master-ip> <master-port>`.
pub fn recovered_node(event: &SentinelEvent, master_name: &str) -> Option<NodeAddr> {
    if !matches!(event.kind.as_str(), "-sdown" | "-odown" | "+reboot") {
        return None;
    }
    let words: Vec<&str> = event.payload.split_whitespace().collect();
    let (ip, port) = match words.as_slice() {
        ["master", name, ip, port, ..] if *name == master_name => (*ip, *port),
        ["slave", _, ip, port, "@", name, ..] if *name == master_name => (*ip, *port),
        _ => return None,
    };
    let ip: std::net::IpAddr = ip.parse().ok()?;
    Some(NodeAddr((ip, port.parse::<u16>().ok()?).into()))
}

/// Logs one decision event and puts it on the timeline.
fn record(service: &str, timeline: &Timeline, event: &Event) {
    let show = |n: &Option<NodeAddr>| n.map(|n| n.to_string()).unwrap_or_else(|| "none".into());
    let (kind, message) = match event {
        Event::NodeUp { node } => ("node_up", format!("node {node} up")),
        Event::NodeDown { node, reason } => ("node_down", format!("node {node} down: {reason}")),
        Event::RoleChanged { node, from, to } => (
            "role_changed",
            format!(
                "node {node} role {} -> {}{}",
                from.map(|r| r.role.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                to.role,
                if to.loading { " (loading)" } else { "" }
            ),
        ),
        Event::RouteChanged { from, to } => (
            "route_changed",
            format!("route {} -> {}", show(from), show(to)),
        ),
        Event::MasterConflict { route, claimants } => (
            "master_conflict",
            format!("nodes {claimants:?} claim master; route stays on {route}"),
        ),
        Event::AmbiguousMasters { claimants } => (
            "ambiguous_masters",
            format!("nodes {claimants:?} all claim master and none is routed; holding clients"),
        ),
        Event::SentinelMajority {
            master,
            votes,
            needed,
        } => (
            "sentinel_majority",
            match master {
                Some(m) => format!("sentinel majority names {m} ({votes} votes, {needed} needed)"),
                None => format!(
                    "no sentinel majority ({votes} agree, {needed} needed): keeping the current route, adopting no new master"
                ),
            },
        ),
        Event::RouteWithdrawn { from, to, sentinel } => (
            "route_withdrawn",
            format!(
                "sentinel {sentinel} reports a failover to {to}: route withdrawn from {from}, clients held"
            ),
        ),
    };
    match event {
        Event::RouteChanged { .. }
        | Event::MasterConflict { .. }
        | Event::NodeDown { .. }
        | Event::RouteWithdrawn { .. } => tracing::warn!(service, kind, "{message}"),
        Event::AmbiguousMasters { .. } => tracing::error!(service, kind, "{message}"),
        Event::SentinelMajority { master: None, .. } => tracing::warn!(service, kind, "{message}"),
        _ => tracing::info!(service, kind, "{message}"),
    }
    timeline.push(service, kind, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str, new_master: Option<NodeAddr>) -> SentinelEvent {
        SentinelEvent {
            sentinel: SentinelAddr(([127, 0, 0, 1], 26379).into()),
            at: Instant::now(),
            kind: kind.into(),
            payload: payload.into(),
            new_master,
        }
    }

    fn node(port: u16) -> NodeAddr {
        NodeAddr(([127, 0, 0, 1], port).into())
    }

    #[test]
    fn recovered_nodes_from_sentinel_payloads() {
        let e = event("-sdown", "master mymaster 127.0.0.1 6379", None);
        assert_eq!(recovered_node(&e, "mymaster"), Some(node(6379)));
        assert_eq!(recovered_node(&e, "other"), None);
        let e = event(
            "+reboot",
            "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
            None,
        );
        assert_eq!(recovered_node(&e, "mymaster"), Some(node(6380)));
        let e = event("+sdown", "master mymaster 127.0.0.1 6379", None);
        assert_eq!(
            recovered_node(&e, "mymaster"),
            None,
            "+sdown is not a recovery"
        );
        let e = event(
            "-sdown",
            "sentinel 127.0.0.1:26380 127.0.0.1 26380 @ mymaster 127.0.0.1 6379",
            None,
        );
        assert_eq!(
            recovered_node(&e, "mymaster"),
            None,
            "sentinels are not nodes"
        );
    }

    #[test]
    fn failover_targets_from_sentinel_payloads() {
        let e = event(
            "+failover-state-send-slaveof-noone",
            "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
            None,
        );
        assert_eq!(failover_target(&e, "mymaster"), Some(node(6380)));
        assert_eq!(failover_target(&e, "other"), None);
        let e = event(
            "+promoted-slave",
            "slave 127.0.0.1:6381 127.0.0.1 6381 @ mymaster 127.0.0.1 6379",
            None,
        );
        assert_eq!(failover_target(&e, "mymaster"), Some(node(6381)));
        let e = event(
            "+switch-master",
            "mymaster 127.0.0.1 6379 127.0.0.1 6380",
            Some(node(6380)),
        );
        assert_eq!(failover_target(&e, "mymaster"), Some(node(6380)));
        assert_eq!(failover_target(&e, "other"), None);
        for (kind, payload) in [
            ("+sdown", "master mymaster 127.0.0.1 6379"),
            ("+promoted-slave", "slave garbage"),
            (
                "+promoted-slave",
                "slave x 999.1.1.1 6380 @ mymaster 127.0.0.1 6379",
            ),
            (
                "+promoted-slave",
                "slave x 127.0.0.1 99999 @ mymaster 127.0.0.1 6379",
            ),
        ] {
            assert_eq!(
                failover_target(&event(kind, payload, None), "mymaster"),
                None,
                "{kind} {payload}"
            );
        }
    }
}
