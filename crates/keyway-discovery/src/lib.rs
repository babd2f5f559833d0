//! Keyway's view of Redis: what each node says about itself, and where to route.
//!
//! This crate is the control plane of one proxy. It is not the data path (see
//! `keyway-io`) and it never touches a client connection.
//!
//! Modules, bottom up:
//! - [`observation`]: what a probe saw (role, loading, failure), plain data.
//! - [`reply`]: Redis replies (`ROLE`, `INFO replication`, `PING`) to observations; pure.
//! - [`decision`]: the routing decision, a pure state machine taking `now` as an argument.
//! - `conn` (private): what the two tasks below share: one authenticated RESP
//!   connection, failure reasons, back-off of connection attempts, redaction.
//! - [`probe`]: the `Prober` task, one long-lived connection per node.
//! - [`sentinel`]: the `SentinelWatcher` task, queries and event subscription per sentinel.
//! - [`timeline`]: the bounded, shared ring of what happened, for post-mortems.
//! - [`monitor`]: the `Monitor` task of one service: runs its probers and
//!   sentinel watchers, feeds the decision, publishes the route on a watch channel.
//! - `fake` (tests only): the scripted RESP server the unit tests of `probe`
//!   and `sentinel` talk to.

mod conn;
pub mod decision;
#[cfg(test)]
mod fake;
pub mod monitor;
pub mod observation;
pub mod probe;
pub mod reply;
pub mod sentinel;
pub mod timeline;

pub use decision::{Event, FailoverHint, Health, Majority, NodeState, Router};
pub use monitor::{
    Monitor, MonitorHandle, NodeStatus, PROBE_BUCKETS, ProbeCounts, RouteWatch, SentinelStatus,
    ServiceStatus,
};
pub use observation::{
    NodeRole, ProbeOutcome, ProbeReport, Role, SentinelEvent, SentinelMessage, SentinelOutcome,
    SentinelReport, SentinelView,
};
pub use timeline::{Timeline, TimelineEntry};
