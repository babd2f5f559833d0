//! Prometheus metrics, in the OpenMetrics text format of `prometheus-client`.
//!
//! Two kinds, paid for differently (every metric is listed in `docs/metrics.md`):
//!
//! - **Data path** (sessions, bytes, held clients, refusals): plain counters and
//!   gauges. Each service resolves its handles once, when it starts
//!   ([`Metrics::service`]); a session then touches a handful of atomics at open
//!   and close and adds its byte counts once, at close. Nothing is counted per
//!   read or write.
//! - **Control plane** (route, nodes, probes, sentinels): not stored here at all.
//!   A [`Collector`] reads each service's latest `ServiceStatus` snapshot at scrape
//!   time, so the monitor pays nothing for metrics and the numbers are the same as
//!   `/status` shows.
//!
//! Invariants: every name is registered once with HELP text; labels are
//! `service`, `node`, `sentinel`, `role`, `reason`, `result`, `version`, never one
//! per client; the gauges of sessions and held clients move only through
//! [`Tracked`] guards, so every exit path (error, cut, panic, cancelled task)
//! gives back what it took.

use std::fmt;

use keyway_discovery::{Health, NodeStatus, PROBE_BUCKETS, ProbeCounts, Role, ServiceStatus};
use keyway_io::Transfer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::admin::ServiceViews;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    service: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Why a client was closed before it could have a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_sessions` sessions were open.
    MaxSessions,
    /// There was no route and `limits.max_held` clients were already held.
    HoldFull,
    /// The service wants a PROXY protocol header and the client sent none, an
    /// invalid one, or not all of it within `timeouts.connect`.
    ProxyHeader,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::MaxSessions => "max_sessions",
            Refused::HoldFull => "hold_full",
            Refused::ProxyHeader => "proxy_header",
        }
    }
}

/// The outcome of a configuration reload, for `keyway_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration was valid and applied.
    Success,
    /// The new configuration was invalid; the running one was kept.
    Failure,
}

impl ReloadResult {
    fn label(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// How a session ended: the labels of `keyway_sessions_closed_total`, the same
/// words as `keyway_io::Close::reason` and the session log line.
const CLOSE_REASONS: [&str; 5] = ["done", "client_error", "node_error", "idle", "cut"];

/// Every metric of one proxy process. One per [`crate::Proxy`], not a global:
/// tests run several proxies in one process.
pub struct Metrics {
    registry: Registry,
    sessions_current: Family<ServiceLabels, Gauge>,
    sessions_total: Family<ServiceLabels, Counter>,
    sessions_closed: Family<ReasonLabels, Counter>,
    client_to_node_bytes: Family<ServiceLabels, Counter>,
    node_to_client_bytes: Family<ServiceLabels, Counter>,
    connect_errors: Family<ServiceLabels, Counter>,
    held_current: Family<ServiceLabels, Gauge>,
    hold_timeouts: Family<ServiceLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric. `services` is what the control-plane collector
    /// reads at each scrape.
    pub fn new(services: ServiceViews) -> Metrics {
        let mut registry = Registry::default();
        let sessions_current = Family::<ServiceLabels, Gauge>::default();
        let sessions_total = Family::<ServiceLabels, Counter>::default();
        let sessions_closed = Family::<ReasonLabels, Counter>::default();
        let client_to_node_bytes = Family::<ServiceLabels, Counter>::default();
        let node_to_client_bytes = Family::<ServiceLabels, Counter>::default();
        let connect_errors = Family::<ServiceLabels, Counter>::default();
        let held_current = Family::<ServiceLabels, Gauge>::default();
        let hold_timeouts = Family::<ServiceLabels, Counter>::default();
        let refused = Family::<ReasonLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        // Counters are registered without `_total`: the encoder adds it to the
        // samples, as OpenMetrics wants.
        registry.register(
            "keyway_sessions_current",
            "Sessions forwarding between a client and a node now",
            sessions_current.clone(),
        );
        registry.register(
            "keyway_sessions",
            "Sessions opened (client connected to the routed node)",
            sessions_total.clone(),
        );
        registry.register(
            "keyway_sessions_closed",
            "Sessions closed, by reason: done, client_error, node_error, idle, cut (route moved or shutdown)",
            sessions_closed.clone(),
        );
        registry.register_with_unit(
            "keyway_client_to_node",
            "Bytes forwarded from clients to nodes, added when each session closes",
            Unit::Bytes,
            client_to_node_bytes.clone(),
        );
        registry.register_with_unit(
            "keyway_node_to_client",
            "Bytes forwarded from nodes to clients, added when each session closes",
            Unit::Bytes,
            node_to_client_bytes.clone(),
        );
        registry.register(
            "keyway_connect_errors",
            "Failed or timed-out connects to the routed node (each attempt)",
            connect_errors.clone(),
        );
        registry.register(
            "keyway_held_clients_current",
            "Clients waiting for a route now",
            held_current.clone(),
        );
        registry.register(
            "keyway_hold_timeouts",
            "Clients closed because no route (or no node connect) came within timeouts.hold",
            hold_timeouts.clone(),
        );
        registry.register(
            "keyway_refused_clients",
            "Clients closed before a session, by reason: max_sessions, hold_full, proxy_header",
            refused.clone(),
        );
        registry.register(
            "keyway_config_reloads",
            "Configuration reloads, by result: success, failure (running config kept)",
            config_reloads.clone(),
        );
        registry.register(
            "keyway_build",
            "Keyway build information",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register_collector(Box::new(ControlPlane { services }));
        // Both results exist from the start, so `increase()` sees the first failure.
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            let _ = config_reloads.get_or_create(&ResultLabels {
                result: result.label(),
            });
        }
        Metrics {
            registry,
            sessions_current,
            sessions_total,
            sessions_closed,
            client_to_node_bytes,
            node_to_client_bytes,
            connect_errors,
            held_current,
            hold_timeouts,
            refused,
            config_reloads,
        }
    }

    /// The handles of one service, resolved once: call it when the service
    /// starts, never per session. Calling it again for the same name (a
    /// reload) returns the same counters.
    pub fn service(&self, name: &str) -> ServiceMetrics {
        let labels = ServiceLabels {
            service: name.to_string(),
        };
        let reason = |family: &Family<ReasonLabels, Counter>, reason: &'static str| {
            family
                .get_or_create(&ReasonLabels {
                    service: name.to_string(),
                    reason,
                })
                .clone()
        };
        ServiceMetrics {
            sessions_current: self.sessions_current.get_or_create(&labels).clone(),
            sessions_total: self.sessions_total.get_or_create(&labels).clone(),
            closed: CLOSE_REASONS.map(|r| (r, reason(&self.sessions_closed, r))),
            client_to_node_bytes: self.client_to_node_bytes.get_or_create(&labels).clone(),
            node_to_client_bytes: self.node_to_client_bytes.get_or_create(&labels).clone(),
            connect_errors: self.connect_errors.get_or_create(&labels).clone(),
            held_current: self.held_current.get_or_create(&labels).clone(),
            hold_timeouts: self.hold_timeouts.get_or_create(&labels).clone(),
            refused_max_sessions: reason(&self.refused, Refused::MaxSessions.label()),
            refused_hold_full: reason(&self.refused, Refused::HoldFull.label()),
            refused_proxy_header: reason(&self.refused, Refused::ProxyHeader.label()),
        }
    }

    /// Counts one configuration reload (the reload code calls this).
    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Every metric in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in a
        // collector, and a partial scrape is still better than none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// The data-path handles of one service. Cloning shares the counters.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    sessions_current: Gauge,
    sessions_total: Counter,
    closed: [(&'static str, Counter); CLOSE_REASONS.len()],
    client_to_node_bytes: Counter,
    node_to_client_bytes: Counter,
    connect_errors: Counter,
    held_current: Gauge,
    hold_timeouts: Counter,
    refused_max_sessions: Counter,
    refused_hold_full: Counter,
    refused_proxy_header: Counter,
}

impl ServiceMetrics {
    /// Counts a session that connected to its node; the returned guard keeps it
    /// in `keyway_sessions_current` until dropped.
    pub fn session_opened(&self) -> Tracked {
        self.sessions_total.inc();
        Tracked::new(&self.sessions_current)
    }

    /// Adds a closed session's byte counts and close reason.
    pub fn session_closed(&self, transfer: &Transfer, reason: &str) {
        self.client_to_node_bytes.inc_by(transfer.client_to_node);
        self.node_to_client_bytes.inc_by(transfer.node_to_client);
        if let Some((_, counter)) = self.closed.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }

    /// A client starts waiting for a route; it counts as held until the guard drops.
    pub fn held(&self) -> Tracked {
        Tracked::new(&self.held_current)
    }

    pub fn hold_timeout(&self) {
        self.hold_timeouts.inc();
    }

    pub fn connect_error(&self) {
        self.connect_errors.inc();
    }

    pub fn refused(&self, why: Refused) {
        match why {
            Refused::MaxSessions => self.refused_max_sessions.inc(),
            Refused::HoldFull => self.refused_hold_full.inc(),
            Refused::ProxyHeader => self.refused_proxy_header.inc(),
        };
    }

    /// Sessions forwarding now (for `/status`).
    pub fn sessions_current(&self) -> u64 {
        self.sessions_current.get().max(0) as u64
    }

    /// Clients held now (for `/status`).
    pub fn held_current(&self) -> u64 {
        self.held_current.get().max(0) as u64
    }
}

/// One unit of a gauge, given back on drop (RAII): a session or a held client.
#[derive(Debug)]
#[must_use = "the gauge goes back down when this is dropped"]
pub struct Tracked(Gauge);

impl Tracked {
    fn new(gauge: &Gauge) -> Tracked {
        gauge.inc();
        Tracked(gauge.clone())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The control-plane metrics, read from the monitors' status snapshots at
/// scrape time. See the module doc.
#[derive(Debug)]
struct ControlPlane {
    services: ServiceViews,
}

/// One service's snapshot, taken once per scrape so every metric of a scrape
/// describes the same moment.
struct Snapshot {
    service: String,
    sentinel: bool,
    status: ServiceStatus,
}

impl Collector for ControlPlane {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        // Clone the snapshots out: no watch lock is held while encoding.
        let snapshots: Vec<Snapshot> = self
            .services
            .borrow()
            .iter()
            .map(|s| Snapshot {
                service: s.name.clone(),
                sentinel: s.sentinel_master_name.is_some(),
                status: s.status.borrow().clone(),
            })
            .collect();
        let bool_gauge = |b: bool| ConstGauge::new(i64::from(b));

        let mut family = encoder.encode_descriptor(
            "keyway_route_up",
            "1 when the service has a confirmed route (a master to forward to), 0 while clients are held.",
            None,
            MetricType::Gauge,
        )?;
        for s in &snapshots {
            let labels = [("service", s.service.as_str())];
            bool_gauge(s.status.route.is_some()).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "keyway_route_info",
            "1 for the node each service routes to; no sample while there is no route.",
            None,
            MetricType::Gauge,
        )?;
        for s in &snapshots {
            if let Some(route) = s.status.route {
                let node = route.to_string();
                let labels = [("service", s.service.as_str()), ("node", node.as_str())];
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "keyway_route_changes",
            "Route changes since start, to or from no route included.",
            None,
            MetricType::Counter,
        )?;
        for s in &snapshots {
            let labels = [("service", s.service.as_str())];
            ConstCounter::new(s.status.route_changes).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "keyway_master_conflict",
            "Nodes other than the route that claim to be master (alert when > 0: a restarted old master, a split brain).",
            None,
            MetricType::Gauge,
        )?;
        for s in &snapshots {
            let labels = [("service", s.service.as_str())];
            ConstGauge::new(s.status.conflicts.len() as i64)
                .encode(family.encode_family(&labels)?)?;
        }

        per_node(
            &mut encoder,
            &snapshots,
            "keyway_node_up",
            "1 when the node passes its health checks (rise/fall), 0 when it is down.",
            MetricType::Gauge,
            |n| bool_gauge(n.health == Health::Up),
        )?;

        let mut family = encoder.encode_descriptor(
            "keyway_node_role",
            "1 for the role the node last reported (master or replica), 0 for the other; both 0 before it answers.",
            None,
            MetricType::Gauge,
        )?;
        for s in &snapshots {
            for n in &s.status.nodes {
                let node = n.addr.to_string();
                let role = n.role.map(|r| r.role);
                for (name, value) in [("master", Role::Master), ("replica", Role::Replica)] {
                    let labels = [
                        ("service", s.service.as_str()),
                        ("node", node.as_str()),
                        ("role", name),
                    ];
                    bool_gauge(role == Some(value)).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        per_node(
            &mut encoder,
            &snapshots,
            "keyway_node_loading",
            "1 while the node answers -LOADING (loading its dataset; never routed).",
            MetricType::Gauge,
            |n| bool_gauge(n.role.is_some_and(|r| r.loading)),
        )?;

        let mut family = encoder.encode_descriptor(
            "keyway_probe_duration",
            "Round-trip time of answered probes (ROLE + PING); failed probes are counted in keyway_probe_failures_total.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for s in &snapshots {
            for n in &s.status.nodes {
                let node = n.addr.to_string();
                let labels = [("service", s.service.as_str()), ("node", node.as_str())];
                let h = ProbeHistogram::from(&n.probes);
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
            }
        }

        per_node(
            &mut encoder,
            &snapshots,
            "keyway_probes",
            "Probes sent to the node, answered or not.",
            MetricType::Counter,
            |n| ConstCounter::new(n.probes.total),
        )?;
        per_node(
            &mut encoder,
            &snapshots,
            "keyway_probe_failures",
            "Probes that failed (connect error, timeout, error reply, unparsable reply).",
            MetricType::Counter,
            |n| ConstCounter::new(n.probes.failures),
        )?;

        let mut family = encoder.encode_descriptor(
            "keyway_sentinel_up",
            "1 when the sentinel answered its last query, 0 when it did not (services with [service.sentinel] only).",
            None,
            MetricType::Gauge,
        )?;
        for s in &snapshots {
            for sentinel in &s.status.sentinels {
                let addr = sentinel.addr.to_string();
                let labels = [("service", s.service.as_str()), ("sentinel", addr.as_str())];
                bool_gauge(sentinel.reachable).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "keyway_sentinel_majority",
            "1 when a majority of the configured sentinels name the same master, 0 otherwise (services with [service.sentinel] only).",
            None,
            MetricType::Gauge,
        )?;
        for s in snapshots.iter().filter(|s| s.sentinel) {
            let labels = [("service", s.service.as_str())];
            bool_gauge(s.status.sentinel_master.is_some())
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// One family with a sample per node of every service, labelled `service` and
/// `node`.
fn per_node<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    snapshots: &[Snapshot],
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl Fn(&NodeStatus) -> M,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for s in snapshots {
        for n in &s.status.nodes {
            let node = n.addr.to_string();
            let labels = [("service", s.service.as_str()), ("node", node.as_str())];
            value(n).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// A node's [`ProbeCounts`] in the shape the encoder wants: per-bucket counts
/// (it accumulates them), the overflow bucket last with the `+Inf` bound.
struct ProbeHistogram {
    sum: f64,
    count: u64,
    buckets: [(f64, u64); PROBE_BUCKETS.len() + 1],
}

impl From<&ProbeCounts> for ProbeHistogram {
    fn from(p: &ProbeCounts) -> Self {
        let mut buckets = [(f64::MAX, 0); PROBE_BUCKETS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            // `f64::MAX` is how the encoder spells `+Inf`.
            let bound = PROBE_BUCKETS.get(i).copied().unwrap_or(f64::MAX);
            *slot = (bound, p.duration_buckets[i]);
        }
        ProbeHistogram {
            sum: p.duration_sum.as_secs_f64(),
            count: p.duration_buckets.iter().sum(),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn metrics() -> Metrics {
        let (_tx, rx) =
            tokio::sync::watch::channel::<Arc<[crate::admin::ServiceView]>>(Arc::new([]));
        Metrics::new(rx)
    }

    #[test]
    fn every_metric_has_help_and_type_once() {
        let m = metrics();
        let _ = m.service("redis");
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let mut types = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string();
            assert!(name.starts_with("keyway_"), "{line}");
            assert!(types.insert(name.clone()), "declared twice: {name}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
        for name in [
            "keyway_sessions",
            "keyway_client_to_node_bytes",
            "keyway_probe_duration_seconds",
            "keyway_route_up",
            "keyway_build",
        ] {
            assert!(types.contains(name), "{name} missing:\n{text}");
        }
        assert!(text.contains(&format!(
            "keyway_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn session_counters_and_guards() {
        let m = metrics();
        let s = m.service("redis");
        let again = m.service("redis");
        {
            let _session = s.session_opened();
            let _held = again.held();
            assert_eq!(s.sessions_current(), 1);
            assert_eq!(s.held_current(), 1);
            s.session_closed(
                &Transfer {
                    client_to_node: 10,
                    node_to_client: 32,
                    ..Transfer::default()
                },
                "cut",
            );
            s.refused(Refused::HoldFull);
        }
        assert_eq!(s.sessions_current(), 0);
        assert_eq!(s.held_current(), 0);
        let text = m.encode();
        for sample in [
            "keyway_sessions_total{service=\"redis\"} 1",
            "keyway_sessions_current{service=\"redis\"} 0",
            "keyway_client_to_node_bytes_total{service=\"redis\"} 10",
            "keyway_node_to_client_bytes_total{service=\"redis\"} 32",
            "keyway_sessions_closed_total{service=\"redis\",reason=\"cut\"} 1",
            "keyway_refused_clients_total{service=\"redis\",reason=\"hold_full\"} 1",
            "keyway_refused_clients_total{service=\"redis\",reason=\"max_sessions\"} 0",
            "keyway_refused_clients_total{service=\"redis\",reason=\"proxy_header\"} 0",
        ] {
            assert!(text.contains(sample), "{sample} missing:\n{text}");
        }
        m.config_reload(ReloadResult::Failure);
        assert!(
            m.encode()
                .contains("keyway_config_reloads_total{result=\"failure\"} 1")
        );
    }

    #[test]
    fn probe_histogram_is_cumulative_with_inf_last() {
        let mut p = ProbeCounts::default();
        p.duration_buckets[0] = 2;
        p.duration_buckets[3] = 1;
        p.duration_buckets[PROBE_BUCKETS.len()] = 1;
        p.duration_sum = Duration::from_millis(1500);
        let h = ProbeHistogram::from(&p);
        assert_eq!(h.count, 4);
        assert_eq!(h.buckets[0], (PROBE_BUCKETS[0], 2));
        assert_eq!(h.buckets[PROBE_BUCKETS.len()], (f64::MAX, 1));
        assert!((h.sum - 1.5).abs() < 1e-9);
    }
}
