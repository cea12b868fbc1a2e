//! The one rule that decides a node went silent: no heartbeat for [`MISSED_BEATS`] of its
//! own intervals, or for a caller's timeout when that is longer. The scheduler stops
//! placing on a silent node; the failover declares it lost. Pure: time is an argument.
//! Work on failure detection changes this file only.

use std::collections::HashMap;

/// Which nodes heartbeat, and which fell silent. Times are Unix ms of arrival, so node
/// clocks do not matter.
#[derive(Debug, Default)]
pub struct NodeWatch {
    last: HashMap<String, u64>,
    /// Each node's heartbeat interval, as it last said.
    interval: HashMap<String, u64>,
    /// Declared lost and silent since.
    lost: HashMap<String, u64>,
    /// The watcher itself hears nothing (it is cut off from NATS): no one is silent.
    blind: bool,
}

/// A node is silent only after missing this many heartbeats in a row, whatever the timeout.
/// The longest heartbeat interval the silence rule believes (a minute).
pub const MAX_INTERVAL_MS: u64 = 60_000;

pub const MISSED_BEATS: u64 = 3;

/// A node's interval counts as at least this (a heartbeat saying 0 or 1 ms is not trusted
/// to mean the node is gone after 3 ms).
pub const MIN_INTERVAL_MS: u64 = 100;

impl NodeWatch {
    /// A heartbeat arrived from a node beating every `interval_ms` (0: unknown). Returns
    /// true when the node had been declared lost (it is back).
    pub fn beat(&mut self, node: &str, now_ms: u64, interval_ms: u64) -> bool {
        self.last.insert(node.to_owned(), now_ms);
        // A heartbeat that claims an endless interval must not make its node never silent.
        self.interval
            .insert(node.to_owned(), interval_ms.min(MAX_INTERVAL_MS));
        self.lost.remove(node).is_some()
    }

    /// Watch a node that has not beaten yet (known from the log), as if it beat now.
    pub fn expect(&mut self, node: &str, now_ms: u64) {
        self.last.entry(node.to_owned()).or_insert(now_ms);
    }

    /// Nodes silent for longer than `timeout_ms` (or than [`MISSED_BEATS`] of their own
    /// intervals, when that is longer), each reported once, with its silence. The
    /// scheduler asks with no timeout (three missed beats take a node out of placement);
    /// the failover with its lost timeout (then the node is declared lost).
    pub fn silent(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<(String, u64)> {
        if self.blind {
            return Vec::new();
        }
        let gone: Vec<(String, u64)> = self
            .last
            .iter()
            .filter(|(n, at)| {
                let every = self.interval.get(*n).copied().unwrap_or(0);
                let every = every.max(MIN_INTERVAL_MS);
                let limit = timeout_ms.max(every.saturating_mul(MISSED_BEATS));
                now_ms.saturating_sub(**at) > limit && !self.lost.contains_key(*n)
            })
            .map(|(n, at)| (n.clone(), now_ms.saturating_sub(*at)))
            .collect();
        for (n, _) in &gone {
            self.lost.insert(n.clone(), now_ms);
        }
        gone
    }

    /// The watcher is cut off: until it hears again, a node's silence is its own.
    pub fn blind(&mut self) {
        self.blind = true;
    }

    /// The watcher hears again at `now_ms`: every node gets a fresh interval from then (a
    /// silence that began while it was deaf is not the node's).
    pub fn hears_again(&mut self, now_ms: u64) {
        self.blind = false;
        for at in self.last.values_mut() {
            *at = (*at).max(now_ms);
        }
    }

    pub fn is_lost(&self, node: &str) -> bool {
        self.lost.contains_key(node)
    }

    /// The nodes declared lost and silent since.
    pub fn lost(&self) -> Vec<String> {
        self.lost.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_nodes_are_reported_once_until_they_beat_again() {
        let mut nw = NodeWatch::default();
        nw.beat("a", 1000, 1000);
        nw.beat("b", 1000, 1000);
        nw.expect("c", 1500);
        nw.beat("b", 3500, 1000);
        assert!(nw.silent(3900, 3000).is_empty());
        let mut lost = nw.silent(4100, 3000);
        lost.sort();
        assert_eq!(lost, [("a".to_owned(), 3100)]);
        assert!(nw.silent(4200, 3000).is_empty(), "reported once");
        assert!(nw.is_lost("a"));
        assert_eq!(nw.silent(4600, 3000), [("c".to_owned(), 3100)]);
        assert!(nw.beat("a", 5000, 1000), "back");
        assert!(!nw.is_lost("a"));
    }

    #[test]
    fn a_node_that_beats_slowly_is_lost_only_after_three_missed_beats() {
        let mut nw = NodeWatch::default();
        nw.beat("slow", 0, 5000);
        nw.beat("fast", 0, 200);
        let lost = nw.silent(3100, 3000);
        assert_eq!(
            lost,
            [("fast".to_owned(), 3100)],
            "3 s timeout for a 200 ms beat"
        );
        assert!(
            nw.silent(14_000, 3000).is_empty(),
            "5 s beats: not before 15 s"
        );
        assert_eq!(nw.silent(15_100, 3000), [("slow".to_owned(), 15_100)]);
    }

    #[test]
    fn a_watcher_cut_off_declares_no_one_and_gives_everyone_a_fresh_interval() {
        let mut w = NodeWatch::default();
        w.beat("n", 1000, 1000);
        w.blind();
        assert!(w.silent(60_000, 3000).is_empty(), "deaf: no one is silent");
        w.hears_again(60_000);
        assert!(
            w.silent(62_000, 3000).is_empty(),
            "a fresh interval from the reconnect"
        );
        assert_eq!(w.silent(63_100, 3000), [("n".to_owned(), 3100)]);
    }

    #[test]
    fn an_endless_interval_does_not_make_a_node_immortal() {
        let mut w = NodeWatch::default();
        w.beat("n", 0, u64::MAX);
        let silence = MAX_INTERVAL_MS * MISSED_BEATS + 1;
        assert_eq!(
            w.silent(silence, 0).len(),
            1,
            "lost after three capped intervals"
        );
    }
}
