//! The routing decision: probe and sentinel reports in, route out. Pure: no
//! I/O, no clock (`now` is an argument).
//!
//! A [`Router`] keeps, per node, the streaks of good and failed probes and the
//! last role the node gave for itself; with Sentinel, also the last view of
//! every configured sentinel. From them it keeps one route, or none.
//!
//! Invariants, checked by the property tests at the bottom of this file:
//!
//! - The route is a node whose last answer was "master, not loading", and which
//!   has not failed `fall` probes in a row since. Never two routes.
//! - Without Sentinel, a node takes the route only after `rise` consecutive
//!   "master" answers, and only when it is the one such node: two claimants and
//!   no route means no route, never a guess.
//! - With Sentinel, a node takes the route only when a majority of the
//!   *configured* sentinels names it (fresh views only) and its own last probe
//!   says master, not loading, after it passed `rise` probes. The route is
//!   dropped as soon as the majority names another node, even if the old node
//!   still says master (the graceful-failover case). Without a majority, the
//!   current route is kept while it keeps saying master, and no new one is
//!   adopted.
//! - The route is sticky: while the routed node keeps answering master (and,
//!   with Sentinel, the majority still names it or there is no majority),
//!   another node claiming master does not take it; a conflict event is raised.
//! - Sentinel events are hints. A failover event naming another node withdraws
//!   the route at once (withdrawing only ever holds clients), and for
//!   [`FAILOVER_HINT_WINDOW`] the withdrawn node is not re-adopted unless the
//!   majority still names it after the window; no event ever *adds* a route.
//! - A lost route is re-decided in the same step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keyway_config::{NodeAddr, SentinelAddr};

use crate::observation::{NodeRole, ProbeOutcome, Role, SentinelOutcome};

/// How long a failover hint keeps the old route withdrawn while the sentinels
/// converge on the new master. Past it, an aborted failover leaves the old
/// master routable again (if the majority still names it).
pub const FAILOVER_HINT_WINDOW: Duration = Duration::from_secs(5);

/// Whether a node passes its health checks (HAProxy's UP / DOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// What the router knows of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub health: Health,
    /// The last role the node gave (kept across failed probes); `None` until it answers.
    pub role: Option<NodeRole>,
    /// Why the last probe failed, when it did.
    pub last_error: Option<String>,
    /// When the last probe report (good or bad) arrived.
    pub last_report: Option<Instant>,
    /// When `health` last changed.
    pub health_since: Option<Instant>,
    ok_streak: u32,
    fail_streak: u32,
    master_streak: u32,
}

impl NodeState {
    fn new() -> Self {
        NodeState {
            // Rule 6: nothing is routable before its first probes complete.
            health: Health::Down,
            role: None,
            last_error: None,
            last_report: None,
            health_since: None,
            ok_streak: 0,
            fail_streak: 0,
            master_streak: 0,
        }
    }
}

/// The last answer of one sentinel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentinelVote {
    /// The master it names; `None` when it does not know the master name.
    pub master: Option<NodeAddr>,
    pub at: Instant,
}

/// What the configured sentinels agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Majority {
    /// At least a majority of the configured sentinels name this master.
    Agreed(NodeAddr),
    /// No master is named by a majority (sentinels down, split or unsure).
    None,
}

/// A hint from a sentinel event: a failover of our master to `to` is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverHint {
    pub sentinel: SentinelAddr,
    pub to: NodeAddr,
}

/// Something the caller should log and put on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    NodeUp {
        node: NodeAddr,
    },
    NodeDown {
        node: NodeAddr,
        reason: String,
    },
    RoleChanged {
        node: NodeAddr,
        from: Option<NodeRole>,
        to: NodeRole,
    },
    RouteChanged {
        from: Option<NodeAddr>,
        to: Option<NodeAddr>,
    },
    /// Nodes other than the route claim master; the route stays where it is.
    MasterConflict {
        route: NodeAddr,
        claimants: Vec<NodeAddr>,
    },
    /// There is no route and several nodes are confirmed masters: none is chosen.
    AmbiguousMasters {
        claimants: Vec<NodeAddr>,
    },
    /// What the sentinel majority names changed.
    SentinelMajority {
        master: Option<NodeAddr>,
        votes: usize,
        needed: usize,
    },
    /// A sentinel reported a failover to `to`; the route was withdrawn from `from`.
    RouteWithdrawn {
        from: NodeAddr,
        to: NodeAddr,
        sentinel: SentinelAddr,
    },
}

/// The sentinel side of a [`Router`].
#[derive(Debug, Clone)]
struct Sentinels {
    votes: BTreeMap<SentinelAddr, Option<SentinelVote>>,
    /// Sentinels that have answered or failed at least once.
    heard: std::collections::BTreeSet<SentinelAddr>,
    /// Sentinels whose last query failed. Their last vote still counts until
    /// it is `stale_after` old: one slow answer must not lose the majority.
    failing: std::collections::BTreeSet<SentinelAddr>,
    /// A view older than this has no vote.
    stale_after: Duration,
    majority: Majority,
    /// A route withdrawn by a failover hint: not re-adopted before the instant.
    withdrawn: Option<(NodeAddr, Instant)>,
}

impl Sentinels {
    fn needed(&self) -> usize {
        self.votes.len() / 2 + 1
    }

    /// The master named by a majority of the configured sentinels at `now`.
    fn count(&self, now: Instant) -> (Majority, usize) {
        let mut tally: BTreeMap<NodeAddr, usize> = BTreeMap::new();
        for vote in self.votes.values().flatten() {
            if now.saturating_duration_since(vote.at) <= self.stale_after
                && let Some(master) = vote.master
            {
                *tally.entry(master).or_default() += 1;
            }
        }
        // A majority of the configured set is more than half, so at most one
        // master can reach it.
        match tally.into_iter().max_by_key(|(_, n)| *n) {
            Some((master, n)) if n >= self.needed() => (Majority::Agreed(master), n),
            Some((_, n)) => (Majority::None, n),
            None => (Majority::None, 0),
        }
    }
}

/// The pure routing state of one service.
#[derive(Debug, Clone)]
pub struct Router {
    rise: u32,
    fall: u32,
    nodes: BTreeMap<NodeAddr, NodeState>,
    route: Option<NodeAddr>,
    sentinels: Option<Sentinels>,
    /// The conflict or ambiguity in force, so each is an event once, not per probe.
    last_claim: Option<Event>,
}

impl Router {
    /// A router over `nodes` without Sentinel; `rise` and `fall` of 0 are treated as 1.
    pub fn new(nodes: impl IntoIterator<Item = NodeAddr>, rise: u32, fall: u32) -> Self {
        Router {
            rise: rise.max(1),
            fall: fall.max(1),
            nodes: nodes.into_iter().map(|n| (n, NodeState::new())).collect(),
            route: None,
            sentinels: None,
            last_claim: None,
        }
    }

    /// Follows `sentinels`: from now on a route needs their majority. A view
    /// older than `stale_after` does not count.
    pub fn with_sentinels(
        mut self,
        sentinels: impl IntoIterator<Item = SentinelAddr>,
        stale_after: Duration,
    ) -> Self {
        self.set_sentinels(Some((sentinels.into_iter().collect(), stale_after)));
        self
    }

    /// Changes the sentinel set (reload). Votes of sentinels still configured
    /// are kept; `None` switches to routing on probes alone. Takes effect at
    /// the next observation.
    pub fn set_sentinels(&mut self, sentinels: Option<(Vec<SentinelAddr>, Duration)>) {
        let old = self.sentinels.take();
        self.sentinels = sentinels.map(|(addrs, stale_after)| {
            let votes = addrs
                .iter()
                .map(|a| {
                    (
                        *a,
                        old.as_ref().and_then(|o| o.votes.get(a).copied().flatten()),
                    )
                })
                .collect();
            let kept = |set: fn(&Sentinels) -> &std::collections::BTreeSet<SentinelAddr>| {
                addrs
                    .iter()
                    .filter(|a| old.as_ref().is_some_and(|o| set(o).contains(a)))
                    .copied()
                    .collect()
            };
            let heard = kept(|o| &o.heard);
            let failing = kept(|o| &o.failing);
            Sentinels {
                votes,
                heard,
                failing,
                stale_after,
                majority: old.as_ref().map_or(Majority::None, |o| o.majority),
                withdrawn: old.as_ref().and_then(|o| o.withdrawn),
            }
        });
    }

    /// Changes `rise` and `fall` (reload); streaks are kept.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// The node to forward new sessions to, if any.
    pub fn route(&self) -> Option<NodeAddr> {
        self.route
    }

    pub fn node(&self, node: NodeAddr) -> Option<&NodeState> {
        self.nodes.get(&node)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeAddr, &NodeState)> {
        self.nodes.iter().map(|(a, s)| (*a, s))
    }

    /// Every configured sentinel, its last vote (`None`: never answered) and
    /// whether its last query succeeded.
    pub fn sentinel_votes(
        &self,
    ) -> impl Iterator<Item = (SentinelAddr, Option<SentinelVote>, bool)> {
        self.sentinels.iter().flat_map(|s| {
            s.votes
                .iter()
                .map(|(a, v)| (*a, *v, !s.failing.contains(a)))
        })
    }

    /// What the sentinel majority names, as of the last decision.
    pub fn majority(&self) -> Option<Majority> {
        self.sentinels.as_ref().map(|s| s.majority)
    }

    /// Nodes other than the route that currently claim master (an alert when non-empty).
    pub fn conflicting_masters(&self) -> Vec<NodeAddr> {
        match self.route {
            Some(route) => self.claimants_except(route),
            None => Vec::new(),
        }
    }

    /// Every node and every sentinel has been heard from (answer or failure)
    /// at least once: the first decision is made.
    pub fn has_decided(&self) -> bool {
        self.nodes.values().all(|s| s.last_report.is_some())
            && self
                .sentinels
                .as_ref()
                .is_none_or(|s| s.heard.len() == s.votes.len())
    }

    /// Replaces the node set (reload, discovery). Kept nodes keep their state; a
    /// removed routed node loses the route.
    pub fn set_nodes(
        &mut self,
        nodes: impl IntoIterator<Item = NodeAddr>,
        now: Instant,
    ) -> Vec<Event> {
        let mut next: BTreeMap<NodeAddr, NodeState> = BTreeMap::new();
        for node in nodes {
            let state = self.nodes.remove(&node).unwrap_or_else(NodeState::new);
            next.insert(node, state);
        }
        self.nodes = next;
        let mut events = Vec::new();
        self.decide(now, &mut events);
        events
    }

    /// Takes one probe result for `node`, finished at `now`, and re-decides.
    /// Reports for unknown nodes (removed by a reload) are ignored.
    pub fn observe(&mut self, node: NodeAddr, outcome: &ProbeOutcome, now: Instant) -> Vec<Event> {
        let (rise, fall) = (self.rise, self.fall);
        let Some(state) = self.nodes.get_mut(&node) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        state.last_report = Some(now);
        match outcome {
            ProbeOutcome::Answered(role) => {
                state.ok_streak = state.ok_streak.saturating_add(1);
                state.fail_streak = 0;
                state.last_error = None;
                state.master_streak = if role.is_writable_master() {
                    state.master_streak.saturating_add(1)
                } else {
                    0
                };
                if state.role != Some(*role) {
                    events.push(Event::RoleChanged {
                        node,
                        from: state.role,
                        to: *role,
                    });
                    state.role = Some(*role);
                }
                if state.health == Health::Down && state.ok_streak >= rise {
                    state.health = Health::Up;
                    state.health_since = Some(now);
                    events.push(Event::NodeUp { node });
                }
            }
            ProbeOutcome::Failed(reason) => {
                state.fail_streak = state.fail_streak.saturating_add(1);
                state.ok_streak = 0;
                state.master_streak = 0;
                state.last_error = Some(reason.clone());
                // A node never answered counts as down from the start; only a
                // transition from up is news.
                if state.health == Health::Up && state.fail_streak >= fall {
                    state.health = Health::Down;
                    state.health_since = Some(now);
                    events.push(Event::NodeDown {
                        node,
                        reason: reason.clone(),
                    });
                }
            }
        }
        self.decide(now, &mut events);
        events
    }

    /// Takes one sentinel query result and re-decides. A failed query keeps
    /// the sentinel's last vote until it is stale (three missed intervals), so a
    /// single slow answer does not lose the majority. Unknown sentinels and
    /// routers without Sentinel ignore it.
    pub fn observe_sentinel(
        &mut self,
        sentinel: SentinelAddr,
        outcome: &SentinelOutcome,
        now: Instant,
    ) -> Vec<Event> {
        let Some(sentinels) = self.sentinels.as_mut() else {
            return Vec::new();
        };
        let Some(vote) = sentinels.votes.get_mut(&sentinel) else {
            return Vec::new();
        };
        sentinels.heard.insert(sentinel);
        match outcome {
            SentinelOutcome::Answered(view) => {
                *vote = Some(SentinelVote {
                    master: view.master,
                    at: now,
                });
                sentinels.failing.remove(&sentinel);
            }
            // The last vote stays and ages out after `stale_after`.
            SentinelOutcome::Failed(_) => {
                sentinels.failing.insert(sentinel);
            }
        }
        let mut events = Vec::new();
        self.decide(now, &mut events);
        events
    }

    /// A sentinel says a failover of our master to `hint.to` is under way
    /// (`+failover-state-send-slaveof-noone`, `+promoted-slave`,
    /// `+switch-master`). If the route is another node, it is withdrawn now:
    /// clients are held instead of writing to a master about to be demoted.
    /// The hint never routes to `hint.to`; only the majority and its ROLE can.
    pub fn observe_failover(&mut self, hint: FailoverHint, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(sentinels) = self.sentinels.as_mut() else {
            return events;
        };
        if !sentinels.votes.contains_key(&hint.sentinel) {
            return events;
        }
        if let Some(from) = self.route
            && from != hint.to
        {
            sentinels.withdrawn = Some((from, now + FAILOVER_HINT_WINDOW));
            self.route = None;
            events.push(Event::RouteWithdrawn {
                from,
                to: hint.to,
                sentinel: hint.sentinel,
            });
            events.push(Event::RouteChanged {
                from: Some(from),
                to: None,
            });
        }
        self.decide(now, &mut events);
        events
    }

    /// The routed node may keep the route on its own word: its last answer was
    /// a writable master and it has not failed `fall` probes in a row since.
    fn keeps_route(&self, node: NodeAddr) -> bool {
        self.nodes.get(&node).is_some_and(|s| {
            s.role.is_some_and(|r| r.is_writable_master()) && s.fail_streak < self.fall
        })
    }

    /// Without Sentinel: the node may take a free route, its last `rise` probes
    /// all said master.
    fn can_take_route(&self, state: &NodeState) -> bool {
        state.master_streak >= self.rise
    }

    /// With Sentinel (the majority is the second witness): the node is up and
    /// its last probe said master, not loading.
    fn confirms_master(&self, node: NodeAddr) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|s| s.health == Health::Up && s.fail_streak == 0 && s.master_streak >= 1)
    }

    fn claimants_except(&self, route: NodeAddr) -> Vec<NodeAddr> {
        self.nodes
            .iter()
            .filter(|(addr, s)| **addr != route && s.fail_streak == 0)
            .filter(|(_, s)| s.role.is_some_and(|r| r.role == Role::Master))
            .map(|(addr, _)| *addr)
            .collect()
    }

    fn decide(&mut self, now: Instant, events: &mut Vec<Event>) {
        let before = self.route;
        let mut ambiguous = Vec::new();
        match self.sentinels.as_ref().map(|s| (s.count(now), s.needed())) {
            None => {
                if let Some(route) = self.route
                    && !self.keeps_route(route)
                {
                    self.route = None;
                }
                if self.route.is_none() {
                    let candidates: Vec<NodeAddr> = self
                        .nodes
                        .iter()
                        .filter(|(_, s)| self.can_take_route(s))
                        .map(|(addr, _)| *addr)
                        .collect();
                    match candidates.as_slice() {
                        [only] => self.route = Some(*only),
                        _ => ambiguous = candidates,
                    }
                }
            }
            Some(((majority, votes), needed)) => {
                self.note_majority(majority, votes, needed, events);
                if let Some(route) = self.route {
                    let named = match majority {
                        Majority::Agreed(master) => master == route,
                        // No majority: keep what we have, adopt nothing new.
                        Majority::None => true,
                    };
                    if !named || !self.keeps_route(route) {
                        self.route = None;
                    }
                }
                if self.route.is_none()
                    && let Majority::Agreed(master) = majority
                    && self.confirms_master(master)
                    && !self.is_withdrawn(master, now)
                {
                    self.route = Some(master);
                }
                if let Some(s) = self.sentinels.as_mut()
                    && s.withdrawn.is_some_and(|(node, until)| {
                        now >= until || self.route.is_some_and(|r| r != node)
                    })
                {
                    s.withdrawn = None;
                }
            }
        }
        if self.route != before {
            events.push(Event::RouteChanged {
                from: before,
                to: self.route,
            });
        }
        // Conflicts (route kept, others claim) and ambiguity (no route, several
        // confirmed) are reported when they change, not on every probe.
        let claim = match self.route {
            Some(route) => {
                let claimants = self.claimants_except(route);
                (!claimants.is_empty()).then_some(Event::MasterConflict { route, claimants })
            }
            None if ambiguous.len() > 1 => Some(Event::AmbiguousMasters {
                claimants: ambiguous,
            }),
            None => None,
        };
        if claim.is_some() && claim != self.last_claim {
            events.extend(claim.clone());
        }
        self.last_claim = claim;
    }

    /// The node was withdrawn by a failover hint whose window is still open.
    fn is_withdrawn(&self, node: NodeAddr, now: Instant) -> bool {
        self.sentinels
            .as_ref()
            .and_then(|s| s.withdrawn)
            .is_some_and(|(withdrawn, until)| withdrawn == node && now < until)
    }

    fn note_majority(
        &mut self,
        majority: Majority,
        votes: usize,
        needed: usize,
        events: &mut Vec<Event>,
    ) {
        if let Some(s) = self.sentinels.as_mut()
            && s.majority != majority
        {
            s.majority = majority;
            events.push(Event::SentinelMajority {
                master: match majority {
                    Majority::Agreed(m) => Some(m),
                    Majority::None => None,
                },
                votes,
                needed,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn addr(i: u16) -> NodeAddr {
        NodeAddr(([127, 0, 0, 1], 7000 + i).into())
    }

    fn master() -> ProbeOutcome {
        ProbeOutcome::Answered(NodeRole {
            role: Role::Master,
            loading: false,
        })
    }

    fn replica() -> ProbeOutcome {
        ProbeOutcome::Answered(NodeRole {
            role: Role::Replica,
            loading: false,
        })
    }

    fn loading_master() -> ProbeOutcome {
        ProbeOutcome::Answered(NodeRole {
            role: Role::Master,
            loading: true,
        })
    }

    fn failed() -> ProbeOutcome {
        ProbeOutcome::Failed("connection refused".into())
    }

    struct Clock(Instant);
    impl Clock {
        fn tick(&mut self) -> Instant {
            self.0 += Duration::from_millis(500);
            self.0
        }
    }

    fn feed(r: &mut Router, c: &mut Clock, node: NodeAddr, o: &ProbeOutcome, n: usize) {
        for _ in 0..n {
            r.observe(node, o, c.tick());
        }
    }

    #[test]
    fn no_route_before_rise_probes() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0), addr(1)], 2, 2);
        assert!(!r.has_decided());
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(r.route(), None);
        r.observe(addr(1), &replica(), c.tick());
        assert!(r.has_decided());
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(r.route(), Some(addr(0)));
    }

    #[test]
    fn replica_answer_drops_route_at_once() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0), addr(1)], 2, 3);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        assert_eq!(r.route(), Some(addr(0)));
        let events = r.observe(addr(0), &replica(), c.tick());
        assert_eq!(r.route(), None);
        assert!(events.contains(&Event::RouteChanged {
            from: Some(addr(0)),
            to: None
        }));
    }

    #[test]
    fn route_survives_fewer_than_fall_failures() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0)], 1, 3);
        feed(&mut r, &mut c, addr(0), &master(), 1);
        feed(&mut r, &mut c, addr(0), &failed(), 2);
        assert_eq!(r.route(), Some(addr(0)));
        let events = r.observe(addr(0), &failed(), c.tick());
        assert_eq!(r.route(), None);
        assert!(matches!(events[0], Event::NodeDown { .. }));
    }

    #[test]
    fn sticky_against_a_second_master_with_one_conflict_event() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0), addr(1)], 2, 2);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        let mut conflicts = 0;
        for _ in 0..5 {
            for e in r.observe(addr(1), &master(), c.tick()) {
                conflicts += usize::from(matches!(e, Event::MasterConflict { .. }));
            }
            r.observe(addr(0), &master(), c.tick());
            assert_eq!(r.route(), Some(addr(0)));
        }
        assert_eq!(conflicts, 1);
        assert_eq!(r.conflicting_masters(), vec![addr(1)]);
    }

    #[test]
    fn manual_switch_hands_route_over_in_the_same_step() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0), addr(1)], 2, 2);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        feed(&mut r, &mut c, addr(1), &master(), 2); // REPLICAOF NO ONE on addr(1)
        assert_eq!(r.route(), Some(addr(0)));
        r.observe(addr(0), &replica(), c.tick()); // REPLICAOF on the old master
        assert_eq!(r.route(), Some(addr(1)));
        assert!(r.conflicting_masters().is_empty());
    }

    #[test]
    fn lost_route_with_two_claimants_picks_none() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0), addr(1), addr(2)], 1, 1);
        r.observe(addr(0), &master(), c.tick());
        r.observe(addr(1), &master(), c.tick());
        let events = r.observe(addr(2), &master(), c.tick());
        assert_eq!(r.route(), Some(addr(0)));
        assert!(events.contains(&Event::MasterConflict {
            route: addr(0),
            claimants: vec![addr(1), addr(2)]
        }));
        // The route is lost while two others claim master: neither is chosen.
        let events = r.observe(addr(0), &failed(), c.tick());
        assert_eq!(r.route(), None, "two confirmed masters, no route");
        assert!(events.contains(&Event::AmbiguousMasters {
            claimants: vec![addr(1), addr(2)]
        }));
        // One of them steps down: the other is the single candidate.
        let events = r.observe(addr(2), &replica(), c.tick());
        assert_eq!(r.route(), Some(addr(1)));
        assert!(events.contains(&Event::RouteChanged {
            from: None,
            to: Some(addr(1))
        }));
    }

    #[test]
    fn failed_route_moves_to_the_single_other_master() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0), addr(1)], 1, 1);
        r.observe(addr(0), &master(), c.tick());
        r.observe(addr(1), &master(), c.tick());
        r.observe(addr(0), &failed(), c.tick());
        assert_eq!(r.route(), Some(addr(1)));
    }

    #[test]
    fn loading_master_is_not_routable() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0)], 1, 1);
        feed(&mut r, &mut c, addr(0), &loading_master(), 3);
        assert_eq!(r.route(), None);
        assert_eq!(r.node(addr(0)).map(|s| s.health), Some(Health::Up));
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(r.route(), Some(addr(0)));
    }

    #[test]
    fn removed_node_loses_route_and_unknown_reports_are_ignored() {
        let mut c = Clock(Instant::now());
        let mut r = Router::new([addr(0), addr(1)], 1, 1);
        r.observe(addr(0), &master(), c.tick());
        let events = r.set_nodes([addr(1)], c.tick());
        assert_eq!(r.route(), None);
        assert_eq!(events.len(), 1);
        assert!(r.observe(addr(0), &master(), c.tick()).is_empty());
        assert_eq!(r.route(), None);
    }

    // ---- with Sentinel ----------------------------------------------------

    fn sentinel(i: u16) -> SentinelAddr {
        SentinelAddr(([127, 0, 0, 1], 26000 + i).into())
    }

    fn names(node: NodeAddr) -> SentinelOutcome {
        SentinelOutcome::Answered(crate::observation::SentinelView {
            master: Some(node),
            replicas: Vec::new(),
        })
    }

    fn sentinel_down() -> SentinelOutcome {
        SentinelOutcome::Failed("connection refused".into())
    }

    const STALE: Duration = Duration::from_secs(2);

    fn with_sentinels(nodes: &[NodeAddr]) -> Router {
        Router::new(nodes.iter().copied(), 2, 2).with_sentinels((0..3).map(sentinel), STALE)
    }

    /// All three sentinels name `node`.
    fn vote_all(r: &mut Router, c: &mut Clock, node: NodeAddr) -> Vec<Event> {
        (0..3)
            .flat_map(|i| r.observe_sentinel(sentinel(i), &names(node), c.tick()))
            .collect()
    }

    #[test]
    fn sentinel_route_needs_majority_and_role() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0), addr(1)]);
        feed(&mut r, &mut c, addr(0), &master(), 3);
        feed(&mut r, &mut c, addr(1), &replica(), 3);
        assert_eq!(r.route(), None, "no sentinel has spoken");
        r.observe_sentinel(sentinel(0), &names(addr(0)), c.tick());
        assert_eq!(r.route(), None, "1 of 3 is no majority");
        let events = r.observe_sentinel(sentinel(1), &names(addr(0)), c.tick());
        assert_eq!(r.route(), Some(addr(0)));
        assert!(events.contains(&Event::SentinelMajority {
            master: Some(addr(0)),
            votes: 2,
            needed: 2
        }));
    }

    #[test]
    fn majority_for_a_node_that_is_not_master_yet_holds_clients() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0), addr(1)]);
        feed(&mut r, &mut c, addr(1), &replica(), 3);
        vote_all(&mut r, &mut c, addr(1));
        assert_eq!(r.route(), None);
        // One master answer from an up node, with the majority behind it, is enough.
        r.observe(addr(1), &master(), c.tick());
        assert_eq!(r.route(), Some(addr(1)));
    }

    #[test]
    fn graceful_failover_moves_the_route_when_the_majority_moves() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0), addr(1)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        feed(&mut r, &mut c, addr(1), &replica(), 2);
        vote_all(&mut r, &mut c, addr(0));
        assert_eq!(r.route(), Some(addr(0)));
        // The replica is promoted; the old master still says master.
        r.observe(addr(1), &master(), c.tick());
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(
            r.route(),
            Some(addr(0)),
            "the majority still names the old master"
        );
        r.observe_sentinel(sentinel(0), &names(addr(1)), c.tick());
        assert_eq!(r.route(), Some(addr(0)));
        r.observe_sentinel(sentinel(1), &names(addr(1)), c.tick());
        assert_eq!(
            r.route(),
            Some(addr(1)),
            "majority moved, old master dropped"
        );
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(r.route(), Some(addr(1)));
        assert_eq!(r.conflicting_masters(), vec![addr(0)]);
    }

    #[test]
    fn restarted_old_master_is_never_routed() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0), addr(1)]);
        feed(&mut r, &mut c, addr(1), &master(), 2);
        vote_all(&mut r, &mut c, addr(1));
        assert_eq!(r.route(), Some(addr(1)));
        for _ in 0..10 {
            r.observe(addr(0), &master(), c.tick()); // the restarted old master
            r.observe(addr(1), &master(), c.tick());
            vote_all(&mut r, &mut c, addr(1));
            assert_eq!(r.route(), Some(addr(1)));
        }
        // Even when the true master fails, the claimant is not adopted.
        feed(&mut r, &mut c, addr(1), &failed(), 2);
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(r.route(), None);
    }

    #[test]
    fn without_majority_the_route_is_kept_but_nothing_new_is_adopted() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0), addr(1)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        feed(&mut r, &mut c, addr(1), &replica(), 2);
        vote_all(&mut r, &mut c, addr(0));
        r.observe_sentinel(sentinel(0), &sentinel_down(), c.tick());
        r.observe_sentinel(sentinel(1), &sentinel_down(), c.tick());
        // One failed query is not enough to lose the majority...
        assert_eq!(r.majority(), Some(Majority::Agreed(addr(0))));
        // ...but the failing sentinels' votes age out.
        let mut events = Vec::new();
        for _ in 0..5 {
            events.extend(r.observe(addr(0), &master(), c.tick()));
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::SentinelMajority { master: None, .. }))
        );
        assert_eq!(r.route(), Some(addr(0)), "kept while it says master");
        r.observe(addr(0), &replica(), c.tick());
        assert_eq!(r.route(), None);
        feed(&mut r, &mut c, addr(1), &master(), 5);
        assert_eq!(r.route(), None, "no majority: no new master");
    }

    #[test]
    fn one_failed_query_keeps_the_vote_until_it_is_stale() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        r.observe_sentinel(sentinel(0), &names(addr(0)), c.tick());
        r.observe_sentinel(sentinel(1), &names(addr(0)), c.tick());
        let events = r.observe_sentinel(sentinel(1), &sentinel_down(), c.tick());
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(r.majority(), Some(Majority::Agreed(addr(0))));
        let reachable: Vec<bool> = r.sentinel_votes().map(|(_, _, up)| up).collect();
        assert_eq!(reachable, [true, false, true]);
    }

    #[test]
    fn stale_votes_do_not_count() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        vote_all(&mut r, &mut c, addr(0));
        assert_eq!(r.route(), Some(addr(0)));
        // Probes go on, sentinels fall silent: their views age past STALE.
        r.observe(addr(0), &master(), c.0 + STALE * 2);
        assert_eq!(r.majority(), Some(Majority::None));
        assert_eq!(
            r.route(),
            Some(addr(0)),
            "no majority keeps the current route"
        );
    }

    #[test]
    fn failover_hint_withdraws_the_route_and_never_adds_one() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0), addr(1)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        feed(&mut r, &mut c, addr(1), &replica(), 2);
        vote_all(&mut r, &mut c, addr(0));
        let hint = FailoverHint {
            sentinel: sentinel(0),
            to: addr(1),
        };
        let events = r.observe_failover(hint, c.tick());
        assert_eq!(r.route(), None);
        assert!(matches!(events[0], Event::RouteWithdrawn { .. }));
        // Within the window the old master is not re-adopted, though named.
        vote_all(&mut r, &mut c, addr(0));
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(r.route(), None);
        // The promoted node is adopted only once the majority names it.
        r.observe(addr(1), &master(), c.tick());
        assert_eq!(r.route(), None, "a hint never routes");
        vote_all(&mut r, &mut c, addr(1));
        assert_eq!(r.route(), Some(addr(1)));
    }

    #[test]
    fn aborted_failover_gives_the_route_back_after_the_window() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0), addr(1)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        vote_all(&mut r, &mut c, addr(0));
        let at = c.tick();
        r.observe_failover(
            FailoverHint {
                sentinel: sentinel(2),
                to: addr(1),
            },
            at,
        );
        assert_eq!(r.route(), None);
        let later = at + FAILOVER_HINT_WINDOW;
        for i in 0..3 {
            r.observe_sentinel(sentinel(i), &names(addr(0)), later);
        }
        assert_eq!(r.route(), Some(addr(0)));
    }

    #[test]
    fn decided_once_every_node_and_sentinel_was_heard_even_failing() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0)]);
        r.observe(addr(0), &failed(), c.tick());
        assert!(!r.has_decided());
        for i in 0..3 {
            r.observe_sentinel(sentinel(i), &sentinel_down(), c.tick());
        }
        assert!(
            r.has_decided(),
            "all sentinels down is still a decision: no route"
        );
        assert_eq!(r.route(), None);
    }

    #[test]
    fn reconfigured_sentinels_keep_known_votes() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        vote_all(&mut r, &mut c, addr(0));
        // Sentinel 2 is replaced by sentinel 3: two known votes remain, a majority of 3.
        r.set_sentinels(Some((vec![sentinel(0), sentinel(1), sentinel(3)], STALE)));
        r.observe(addr(0), &master(), c.tick());
        assert_eq!(r.route(), Some(addr(0)));
        assert_eq!(r.majority(), Some(Majority::Agreed(addr(0))));
        // Back to probes alone.
        r.set_sentinels(None);
        r.set_thresholds(1, 1);
        r.observe(addr(0), &replica(), c.tick());
        assert_eq!(r.route(), None);
    }

    #[test]
    fn hints_and_reports_from_unknown_sentinels_are_ignored() {
        let mut c = Clock(Instant::now());
        let mut r = with_sentinels(&[addr(0)]);
        feed(&mut r, &mut c, addr(0), &master(), 2);
        vote_all(&mut r, &mut c, addr(0));
        let stranger = SentinelAddr(([127, 0, 0, 1], 1).into());
        assert!(
            r.observe_failover(
                FailoverHint {
                    sentinel: stranger,
                    to: addr(1)
                },
                c.tick()
            )
            .is_empty()
        );
        assert!(
            r.observe_sentinel(stranger, &names(addr(1)), c.tick())
                .is_empty()
        );
        assert_eq!(r.route(), Some(addr(0)));
    }

    // ---- property tests -------------------------------------------------
    //
    // The oracle reads each node's whole history of outcomes, independent of the
    // router's streak counters.

    const NODES: u16 = 3;

    fn outcome() -> impl Strategy<Value = ProbeOutcome> {
        prop_oneof![
            4 => Just(master()),
            3 => Just(replica()),
            1 => Just(loading_master()),
            1 => Just(ProbeOutcome::Answered(NodeRole { role: Role::Sentinel, loading: false })),
            3 => Just(failed()),
        ]
    }

    fn writable(o: &ProbeOutcome) -> bool {
        matches!(o, ProbeOutcome::Answered(r) if r.is_writable_master())
    }

    /// The last `rise` outcomes all said "writable master".
    fn candidate(h: &[ProbeOutcome], rise: u32) -> bool {
        let rise = rise as usize;
        h.len() >= rise && h[h.len() - rise..].iter().all(writable)
    }

    /// The last answer said "writable master" and fewer than `fall` failures follow it.
    fn keepable(h: &[ProbeOutcome], fall: u32) -> bool {
        let trailing_failures = h
            .iter()
            .rev()
            .take_while(|o| matches!(o, ProbeOutcome::Failed(_)))
            .count();
        let last_answer = h
            .iter()
            .rev()
            .find(|o| matches!(o, ProbeOutcome::Answered(_)));
        trailing_failures < fall as usize && last_answer.is_some_and(writable)
    }

    proptest! {
        #[test]
        fn routing_invariants(
            rise in 1u32..4,
            fall in 1u32..4,
            steps in prop::collection::vec((0..NODES, outcome()), 0..200),
        ) {
            let mut c = Clock(Instant::now());
            let mut r = Router::new((0..NODES).map(addr), rise, fall);
            let mut hist: BTreeMap<NodeAddr, Vec<ProbeOutcome>> = BTreeMap::new();
            for (i, o) in steps {
                let node = addr(i);
                let before = r.route();
                r.observe(node, &o, c.tick());
                hist.entry(node).or_default().push(o);
                let after = r.route();
                let h = |n: NodeAddr| hist.get(&n).map(Vec::as_slice).unwrap_or(&[]);
                let candidates: Vec<NodeAddr> =
                    (0..NODES).map(addr).filter(|n| candidate(h(*n), rise)).collect();

                // Never a node that did not last say "master, not loading".
                if let Some(route) = after {
                    prop_assert!(keepable(h(route), fall), "route {route} not keepable");
                }
                if before != after {
                    // A route is only left when it is no longer keepable...
                    if let Some(old) = before {
                        prop_assert!(!keepable(h(old), fall), "left keepable route {old}");
                        prop_assert_eq!(old, node, "route changed on another node's report");
                    }
                    // ...and only taken by the single confirmed candidate.
                    if let Some(new) = after {
                        prop_assert_eq!(&candidates, &vec![new]);
                    }
                }
                // Sticky: a keepable route never moves.
                if let Some(old) = before
                    && keepable(h(old), fall)
                {
                    prop_assert_eq!(after, Some(old));
                }
                // Available: no route while exactly one candidate exists is a bug.
                if after.is_none() {
                    prop_assert!(candidates.len() != 1, "free route not taken by {:?}", candidates);
                }
            }
        }
    }

    /// One step of a Sentinel-mode history.
    #[derive(Debug, Clone)]
    enum Step {
        Probe(u16, ProbeOutcome),
        /// Sentinel i names node j (None: does not know the master), or fails.
        Sentinel(u16, Option<Option<u16>>),
        Hint(u16, u16),
        /// Time passes (in units of 500 ms).
        Wait(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..NODES, outcome()).prop_map(|(n, o)| Step::Probe(n, o)),
            // Mostly sentinels naming a node, so majorities form and move often.
            4 => (0..3u16, 0..NODES).prop_map(|(s, n)| Step::Sentinel(s, Some(Some(n)))),
            1 => (0..3u16).prop_map(|s| Step::Sentinel(s, Some(None))),
            1 => (0..3u16).prop_map(|s| Step::Sentinel(s, None)),
            1 => (0..3u16, 0..NODES).prop_map(|(s, n)| Step::Hint(s, n)),
            1 => (1..12u8).prop_map(Step::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn sentinel_routing_invariants(
            rise in 1u32..3,
            fall in 1u32..3,
            steps in prop::collection::vec(step(), 0..200),
        ) {
            let mut now = Instant::now();
            let mut r = Router::new((0..NODES).map(addr), rise, fall)
                .with_sentinels((0..3).map(sentinel), STALE);
            let mut hist: BTreeMap<NodeAddr, Vec<ProbeOutcome>> = BTreeMap::new();
            // Oracle: each sentinel's last successful answer and when.
            let mut votes: BTreeMap<u16, (Option<u16>, Instant)> = BTreeMap::new();
            for step in steps {
                now += Duration::from_millis(100);
                let before = r.route();
                match &step {
                    Step::Probe(n, o) => {
                        r.observe(addr(*n), o, now);
                        hist.entry(addr(*n)).or_default().push(o.clone());
                    }
                    Step::Sentinel(s, Some(v)) => {
                        let view = crate::observation::SentinelView {
                            master: v.map(addr),
                            replicas: Vec::new(),
                        };
                        r.observe_sentinel(sentinel(*s), &SentinelOutcome::Answered(view), now);
                        votes.insert(*s, (*v, now));
                    }
                    Step::Sentinel(s, None) => {
                        // A failed query leaves the last vote to age out.
                        r.observe_sentinel(sentinel(*s), &sentinel_down(), now);
                    }
                    Step::Hint(s, n) => {
                        r.observe_failover(FailoverHint { sentinel: sentinel(*s), to: addr(*n) }, now);
                    }
                    Step::Wait(k) => {
                        now += Duration::from_millis(500) * u32::from(*k);
                        // A decision happens at the next observation; feed a failed
                        // sentinel query so time is seen.
                        r.observe_sentinel(SentinelAddr(([127, 0, 0, 2], 1).into()), &sentinel_down(), now);
                    }
                }
                let after = r.route();
                let h = |n: NodeAddr| hist.get(&n).map(Vec::as_slice).unwrap_or(&[]);
                let mut tally: BTreeMap<u16, usize> = BTreeMap::new();
                for (named, at) in votes.values() {
                    if let Some(n) = named
                        && now.saturating_duration_since(*at) <= STALE
                    {
                        *tally.entry(*n).or_default() += 1;
                    }
                }
                let majority = tally.iter().find(|(_, c)| **c >= 2).map(|(n, _)| addr(*n));

                // Never a node that did not last say "master, not loading".
                if let Some(route) = after {
                    prop_assert!(keepable(h(route), fall), "route {route} not keepable");
                    // Never against a majority.
                    if let Some(m) = majority {
                        prop_assert_eq!(route, m, "route against the majority");
                    }
                }
                // A hint naming another node withdraws the route from the old one.
                if let Step::Hint(_, to) = step
                    && let Some(old) = before
                    && old != addr(to)
                {
                    prop_assert_ne!(after, Some(old), "hint did not withdraw the route");
                }
                // A new route only with majority agreement.
                if after != before && let Some(new) = after {
                    prop_assert_eq!(majority, Some(new), "route to {} without majority", new);
                }
            }
        }
    }
}
