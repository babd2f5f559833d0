//! The routing decision: probe reports in, route out. Pure: no I/O, no clock.
//!
//! A [`Router`] keeps, per node, the streaks of good and failed probes and the
//! last role the node gave for itself, and from them one route (or none).
//!
//! Invariants, checked by the property tests at the bottom of this file:
//!
//! - The route is a node whose last answer was "master, not loading", and which
//!   has not failed `fall` probes in a row since.
//! - A node takes the route only after `rise` consecutive "master" answers, and
//!   only when it is the one such node: two claimants and no route means no
//!   route, never a guess.
//! - The route is sticky: while the routed node keeps answering master, another
//!   node claiming master does not take it (the restarted old master case); it
//!   raises a conflict event instead.
//! - A route that is lost is re-decided in the same step, so a demotion of the
//!   old master hands the route to an already-confirmed new one at once.

use std::collections::BTreeMap;
use std::time::Instant;

use keyway_config::NodeAddr;

use crate::observation::{NodeRole, ProbeOutcome, Role};

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
    /// When `health` last changed (or the node was added).
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
}

/// The pure routing state of one service.
#[derive(Debug, Clone)]
pub struct Router {
    rise: u32,
    fall: u32,
    nodes: BTreeMap<NodeAddr, NodeState>,
    route: Option<NodeAddr>,
    /// The conflict or ambiguity in force, so each is an event once, not per probe.
    last_claim: Option<Event>,
}

impl Router {
    /// A router over `nodes`; `rise` and `fall` of 0 are treated as 1.
    pub fn new(nodes: impl IntoIterator<Item = NodeAddr>, rise: u32, fall: u32) -> Self {
        Router {
            rise: rise.max(1),
            fall: fall.max(1),
            nodes: nodes.into_iter().map(|n| (n, NodeState::new())).collect(),
            route: None,
            last_claim: None,
        }
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

    /// Nodes other than the route that currently claim master (an alert when non-empty).
    pub fn conflicting_masters(&self) -> Vec<NodeAddr> {
        match self.route {
            Some(route) => self.claimants_except(route),
            None => Vec::new(),
        }
    }

    /// Every node has been probed at least once: the first decision is made.
    pub fn has_decided(&self) -> bool {
        self.nodes.values().all(|s| s.last_report.is_some())
    }

    /// Replaces the node set (reload, discovery). Kept nodes keep their state; a
    /// removed routed node loses the route.
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeAddr>) -> Vec<Event> {
        let mut next: BTreeMap<NodeAddr, NodeState> = BTreeMap::new();
        for node in nodes {
            let state = self.nodes.remove(&node).unwrap_or_else(NodeState::new);
            next.insert(node, state);
        }
        self.nodes = next;
        let mut events = Vec::new();
        self.decide(&mut events);
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
        self.decide(&mut events);
        events
    }

    /// The routed node may keep the route: its last answer was a writable
    /// master and it has not failed `fall` probes in a row since.
    fn keeps_route(&self, node: NodeAddr) -> bool {
        self.nodes.get(&node).is_some_and(|s| {
            s.role.is_some_and(|r| r.is_writable_master()) && s.fail_streak < self.fall
        })
    }

    /// The node may take a free route: its last `rise` probes all said master.
    fn can_take_route(&self, state: &NodeState) -> bool {
        state.master_streak >= self.rise
    }

    fn claimants_except(&self, route: NodeAddr) -> Vec<NodeAddr> {
        self.nodes
            .iter()
            .filter(|(addr, s)| **addr != route && s.fail_streak == 0)
            .filter(|(_, s)| s.role.is_some_and(|r| r.role == Role::Master))
            .map(|(addr, _)| *addr)
            .collect()
    }

    fn decide(&mut self, events: &mut Vec<Event>) {
        let before = self.route;
        if let Some(route) = self.route
            && !self.keeps_route(route)
        {
            self.route = None;
        }
        let mut ambiguous = Vec::new();
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
        let events = r.set_nodes([addr(1)]);
        assert_eq!(r.route(), None);
        assert_eq!(events.len(), 1);
        assert!(r.observe(addr(0), &master(), c.tick()).is_empty());
        assert_eq!(r.route(), None);
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
}
