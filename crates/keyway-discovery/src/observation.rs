//! What a probe saw: the input of the decision.
//!
//! These types carry no I/O and no clock: a probe stamps its report with the
//! `Instant` it finished, and the decision takes that as `now`.

use std::fmt;
use std::time::{Duration, Instant};

use keyway_config::{NodeAddr, SentinelAddr};

/// A node's replication role, as its own `ROLE` (or `INFO replication`) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Master,
    Replica,
    /// The address answers as a Redis Sentinel, not a data node.
    Sentinel,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Replica => "replica",
            Role::Sentinel => "sentinel",
        })
    }
}

/// What one successful probe learnt about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRole {
    pub role: Role,
    /// The node is loading its dataset and refuses commands (`-LOADING`).
    pub loading: bool,
}

impl NodeRole {
    /// A node that can take writes right now, by its own word.
    pub fn is_writable_master(&self) -> bool {
        self.role == Role::Master && !self.loading
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The node answered and its answer made sense.
    Answered(NodeRole),
    /// No usable answer: refused, timed out, closed, garbage, auth failure.
    Failed(String),
}

/// One probe's report, sent by a `Prober` to its service's monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub node: NodeAddr,
    /// When the probe finished; the decision's `now`.
    pub at: Instant,
    /// Round-trip time of the probe (connect excluded when the connection was reused).
    pub latency: Duration,
    pub outcome: ProbeOutcome,
}

/// What one sentinel says about the service's master name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelView {
    /// `SENTINEL get-master-addr-by-name`: the master it names, `None` when it
    /// does not know the name.
    pub master: Option<NodeAddr>,
    /// `SENTINEL replicas`: every replica it knows of, whatever its flags (the
    /// probes decide their health).
    pub replicas: Vec<NodeAddr>,
}

/// The result of one query of one sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentinelOutcome {
    Answered(SentinelView),
    /// No usable answer: refused, timed out, closed, garbage, auth failure.
    Failed(String),
}

/// One sentinel query's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelReport {
    pub sentinel: SentinelAddr,
    /// When the query finished; the decision's `now`.
    pub at: Instant,
    pub outcome: SentinelOutcome,
}

/// One message a sentinel published on its event channels (`+switch-master`,
/// `+sdown`, `-sdown`, `+odown`, `-odown`, `+convert-to-slave`,
/// `+failover-end`, ...), for the timeline and to trigger re-checks. Events are
/// hints: the decision never routes on an event alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelEvent {
    pub sentinel: SentinelAddr,
    pub at: Instant,
    /// The channel, e.g. `+switch-master`.
    pub kind: String,
    /// The message as published (addresses, names, no secrets).
    pub payload: String,
    /// For `+switch-master` of our master name: the new master's address.
    pub new_master: Option<NodeAddr>,
}

/// What a `SentinelWatcher` sends to its service's monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentinelMessage {
    Report(SentinelReport),
    Event(SentinelEvent),
}
