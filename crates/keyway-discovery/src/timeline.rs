//! The failover timeline: the last events of every service, for post-mortems.
//!
//! Bounded (the oldest entries are dropped), timestamped with wall-clock time
//! (operators compare it with Redis and Sentinel logs), shared by every monitor
//! of the process. A plain mutex: entries are pushed a few times per second at
//! most, never on the data path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// How many entries the timeline keeps.
pub const TIMELINE_CAPACITY: usize = 1000;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: SystemTime,
    pub service: String,
    /// A stable short name: `route_changed`, `node_down`, `sentinel_event`, ...
    pub kind: &'static str,
    pub message: String,
}

/// A shared, bounded ring of [`TimelineEntry`].
#[derive(Debug, Clone)]
pub struct Timeline {
    entries: Arc<Mutex<VecDeque<TimelineEntry>>>,
    capacity: usize,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new(TIMELINE_CAPACITY)
    }
}

impl Timeline {
    pub fn new(capacity: usize) -> Self {
        Timeline {
            entries: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(64)))),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&self, service: &str, kind: &'static str, message: String) {
        // A panic elsewhere while holding the lock leaves a valid deque: keep going.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(TimelineEntry {
            at: SystemTime::now(),
            service: service.to_string(),
            kind,
            message,
        });
    }

    /// The last `n` entries, oldest first.
    pub fn recent(&self, n: usize) -> Vec<TimelineEntry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .skip(entries.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_entries_oldest_first() {
        let t = Timeline::new(3);
        for i in 0..5 {
            t.push("redis", "test", format!("e{i}"));
        }
        assert_eq!(t.len(), 3);
        let msgs: Vec<String> = t.recent(10).into_iter().map(|e| e.message).collect();
        assert_eq!(msgs, ["e2", "e3", "e4"]);
        let last: Vec<String> = t.recent(2).into_iter().map(|e| e.message).collect();
        assert_eq!(last, ["e3", "e4"]);
    }

    #[test]
    fn default_capacity_is_a_thousand() {
        let t = Timeline::default();
        for i in 0..1500 {
            t.push("redis", "test", i.to_string());
        }
        assert_eq!(t.len(), TIMELINE_CAPACITY);
        assert_eq!(t.recent(1)[0].message, "1499");
    }
}
