//! Heartbeat pacing: how often the nodes beat, so that all of them together send at most a
//! budget of heartbeats a second (Nomad's `max_heartbeats_per_second`). Each beat is a
//! stored write and a delivery to every watcher: 5,000 idle nodes beating every 5 s cost this
//! 2-core machine 0.33–0.39 cores, paced to 10 s 0.12–0.16. Pure: the scheduler asks at each
//! heartbeat whether that node should be told the pace ([`Pacer::beat`]) and sends it a
//! `pace` op when so.

use std::collections::HashMap;

use crate::node::limits::HEARTBEAT_MS;

/// The default budget: heartbeats a second from the whole cluster.
pub const BEATS_PER_SEC: u64 = 500;

/// The pace for `nodes` nodes within `budget` heartbeats a second: 0 (each node's own
/// interval) while a beat a second each fits, else the interval that fits rounded up to a
/// power of two seconds (so a growing cluster moves its nodes a few times, not at every
/// join), at most the longest interval a heartbeat may state. A budget of 0 paces nothing.
pub fn pace_ms(nodes: usize, budget: u64) -> u64 {
    if budget == 0 || nodes as u64 <= budget {
        return 0;
    }
    let secs = (nodes as u64)
        .div_ceil(budget)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX);
    secs.saturating_mul(1000).min(*HEARTBEAT_MS.end())
}

/// What each node was told, and when.
#[derive(Debug, Default)]
pub struct Pacer {
    budget: u64,
    told: HashMap<String, Told>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Told {
    every_ms: u64,
    at_ms: u64,
}

impl Pacer {
    pub fn new(budget: u64) -> Self {
        Pacer {
            budget,
            told: HashMap::new(),
        }
    }

    /// A heartbeat of `node`, stating `interval_ms`, arrived at `now_ms` with `nodes` in
    /// the cluster: the pace to tell it, if it should be told. A node beating faster than
    /// the pace is told it (again, once two paces passed since: the op was lost, or the
    /// node restarted and forgot it); a node told another pace before is told the new one
    /// (back to 0 when the cluster shrank within the budget). A node whose own interval
    /// is longer than the pace is left alone.
    pub fn beat(&mut self, node: &str, interval_ms: u64, nodes: usize, now_ms: u64) -> Option<u64> {
        let pace = pace_ms(nodes, self.budget);
        let told = self.told.get(node).copied();
        let due = match told {
            None => interval_ms < pace,
            Some(t) if t.every_ms != pace => true,
            Some(t) => interval_ms < pace && now_ms >= t.at_ms.saturating_add(2 * pace),
        };
        if !due {
            return None;
        }
        if pace == 0 {
            self.told.remove(node);
        } else {
            self.told.insert(
                node.to_owned(),
                Told {
                    every_ms: pace,
                    at_ms: now_ms,
                },
            );
        }
        Some(pace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_keeps_the_cluster_within_its_budget_in_steps_up_to_the_longest_interval() {
        assert_eq!(pace_ms(0, 500), 0);
        assert_eq!(pace_ms(500, 500), 0, "a beat a second each fits");
        assert_eq!(pace_ms(501, 500), 2000);
        assert_eq!(pace_ms(1000, 500), 2000);
        assert_eq!(pace_ms(1001, 500), 4000);
        assert_eq!(pace_ms(3000, 500), 8000);
        assert_eq!(pace_ms(5000, 500), 10_000, "at most the longest interval");
        assert_eq!(pace_ms(usize::MAX, 1), 10_000, "no overflow");
        assert_eq!(pace_ms(1_000_000, 0), 0, "a budget of 0 paces nothing");
        for nodes in [501, 999, 1000, 1001, 2000, 4000] {
            let p = pace_ms(nodes, 500);
            assert!(
                nodes as u64 * 1000 / p <= 500,
                "{nodes} nodes every {p} ms beat more than 500 times a second"
            );
        }
    }

    #[test]
    fn a_node_beating_faster_than_the_pace_is_told_once_and_again_only_if_it_did_not_listen() {
        let mut p = Pacer::new(500);
        assert_eq!(
            p.beat("n", 1000, 100, 0),
            None,
            "within the budget: no pace"
        );
        assert_eq!(p.beat("n", 1000, 1000, 0), Some(2000));
        assert_eq!(
            p.beat("n", 1000, 1000, 1000),
            None,
            "told: its op is on the way"
        );
        assert_eq!(p.beat("n", 2000, 1000, 3000), None, "it listened");
        assert_eq!(
            p.beat("n", 1000, 1000, 4000),
            Some(2000),
            "two paces on it beats fast again (restarted, or the op was lost): told again"
        );
        assert_eq!(
            p.beat("slow", 5000, 1000, 0),
            None,
            "its own interval is longer"
        );
    }

    #[test]
    fn a_paced_node_follows_the_pace_up_and_down_and_back_to_its_own() {
        let mut p = Pacer::new(500);
        assert_eq!(p.beat("n", 1000, 1000, 0), Some(2000));
        assert_eq!(p.beat("n", 2000, 3000, 10), Some(8000), "the cluster grew");
        assert_eq!(p.beat("n", 8000, 1000, 20), Some(2000), "it shrank");
        assert_eq!(
            p.beat("n", 2000, 400, 30),
            Some(0),
            "back within the budget"
        );
        assert_eq!(p.beat("n", 1000, 400, 40), None, "nothing more to tell");
        assert!(p.told.is_empty());
    }

    #[test]
    fn a_budget_of_0_paces_nothing() {
        let mut p = Pacer::new(0);
        assert_eq!(p.beat("n", 10, 1_000_000, 0), None);
    }
}
