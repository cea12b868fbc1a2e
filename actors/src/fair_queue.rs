//! A queue of lanes served in turn: each lane keeps its own order, and a take hands out one
//! item of every lane that has one before a second of any (round robin, the turn carried
//! from one take to the next). A lane holding a thousand items delays another's next item
//! by one item, not a thousand. The scheduler reads its commands through one, a lane a
//! tenant (`services/src/scheduler/commands.rs`): a tenant's backlog no longer stands in
//! front of every other tenant's commands. Pure: no I/O, no clock.

use std::collections::{HashMap, VecDeque};

/// Items in lanes named by strings; see the module's documentation.
#[derive(Debug)]
pub struct FairQueue<T> {
    lanes: HashMap<String, VecDeque<T>>,
    /// The lanes that hold items, in the order they are served next.
    turn: VecDeque<String>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            lanes: HashMap::new(),
            turn: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Adds `item` at the end of `lane`; a lane that was empty joins the end of the turn.
    pub fn push(&mut self, lane: &str, item: T) {
        let queue = match self.lanes.get_mut(lane) {
            Some(q) => q,
            None => self.lanes.entry(lane.to_owned()).or_default(),
        };
        if queue.is_empty() {
            self.turn.push_back(lane.to_owned());
        }
        queue.push_back(item);
        self.len += 1;
    }

    /// At most `max` items, one of each lane in turn while any has one; a lane served goes
    /// to the end of the turn, so the next take starts with the lane after it.
    pub fn take(&mut self, max: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(max.min(self.len));
        while out.len() < max {
            let Some(lane) = self.turn.pop_front() else {
                break;
            };
            let Some(queue) = self.lanes.get_mut(&lane) else {
                continue;
            };
            let Some(item) = queue.pop_front() else {
                continue;
            };
            out.push(item);
            self.len -= 1;
            if !queue.is_empty() {
                self.turn.push_back(lane);
            }
        }
        out
    }

    /// Items in every lane.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no lane holds an item.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items in `lane`.
    pub fn lane_len(&self, lane: &str) -> usize {
        self.lanes.get(lane).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(lanes: &[(&str, usize)]) -> FairQueue<String> {
        let mut q = FairQueue::default();
        for (lane, n) in lanes {
            for i in 0..*n {
                q.push(lane, format!("{lane}{i}"));
            }
        }
        q
    }

    #[test]
    fn a_lane_with_a_backlog_delays_another_by_one_item_a_turn() {
        // The flood was there first: a first-in-first-out queue would serve all 1,000 of it.
        let mut q = filled(&[("flood", 1000), ("quiet", 2)]);
        assert_eq!(q.take(3), ["flood0", "quiet0", "flood1"]);
        assert_eq!(q.take(2), ["quiet1", "flood2"]);
        assert_eq!(q.len(), 997);
        assert_eq!(q.lane_len("quiet"), 0);
        assert!(q.take(1000).iter().all(|s| s.starts_with("flood")));
        assert!(q.is_empty());
        assert!(q.take(10).is_empty());
    }

    #[test]
    fn each_lane_keeps_its_order_and_every_item_comes_out_once() {
        let mut q = filled(&[("a", 5), ("b", 3), ("c", 4)]);
        let mut out = Vec::new();
        while !q.is_empty() {
            out.extend(q.take(2));
        }
        assert_eq!(out.len(), 12);
        for lane in ["a", "b", "c"] {
            let mine: Vec<_> = out.iter().filter(|s| s.starts_with(lane)).collect();
            let want: Vec<_> = (0..mine.len()).map(|i| format!("{lane}{i}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>(), "lane {lane}");
        }
    }

    #[test]
    fn the_turn_goes_on_from_one_take_to_the_next() {
        // Takes of one item each still visit every lane in turn: none is always first.
        let mut q = filled(&[("a", 3), ("b", 3), ("c", 3)]);
        let firsts: Vec<String> = (0..6).flat_map(|_| q.take(1)).collect();
        assert_eq!(firsts, ["a0", "b0", "c0", "a1", "b1", "c1"]);
    }

    #[test]
    fn a_lane_emptied_and_filled_again_waits_for_its_turn() {
        let mut q = filled(&[("a", 1), ("b", 3)]);
        assert_eq!(q.take(2), ["a0", "b0"]);
        q.push("a", "a1".into());
        // b is ahead in the turn; a rejoined behind it.
        assert_eq!(q.take(4), ["b1", "a1", "b2"]);
    }
}
