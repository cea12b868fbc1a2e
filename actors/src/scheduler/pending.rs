//! The queue of workloads waiting for capacity (or a backoff): first in, first placed, each
//! workload at most once, and whether one is queued known without walking the queue (a
//! burst of a hundred thousand submissions queues as many: a walk per event was the
//! scheduler's largest cost).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Pending {
    order: VecDeque<Arc<str>>,
    queued: HashSet<Arc<str>>,
}

impl Pending {
    /// Queues `id` at the back unless it is queued already; returns whether it was added.
    pub fn push(&mut self, id: &str) -> bool {
        if self.queued.contains(id) {
            return false;
        }
        let id: Arc<str> = Arc::from(id);
        self.queued.insert(id.clone());
        self.order.push_back(id);
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.queued.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Takes the first `n` out of the queue.
    pub fn take_front(&mut self, n: usize) -> Vec<Arc<str>> {
        let n = n.min(self.order.len());
        let taken: Vec<Arc<str>> = self.order.drain(..n).collect();
        for id in &taken {
            self.queued.remove(id);
        }
        taken
    }

    /// Puts `ids` back at the front, in their order (those queued meanwhile stay where
    /// they are).
    pub fn put_front(&mut self, ids: Vec<Arc<str>>) {
        for id in ids.into_iter().rev() {
            if self.queued.insert(id.clone()) {
                self.order.push_front(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_is_queued_once_in_order() {
        let mut p = Pending::default();
        assert!(p.push("t/a"));
        assert!(p.push("t/b"));
        assert!(!p.push("t/a"));
        assert_eq!(p.len(), 2);
        let taken = p.take_front(1);
        assert_eq!(taken, vec![Arc::from("t/a")]);
        assert!(!p.contains("t/a"));
        assert!(p.push("t/c"));
        p.put_front(taken);
        let all: Vec<String> = p.take_front(10).iter().map(|s| s.to_string()).collect();
        assert_eq!(all, ["t/a", "t/b", "t/c"]);
        assert!(p.is_empty());
    }

    #[test]
    fn put_front_keeps_a_workload_queued_meanwhile_where_it_is() {
        let mut p = Pending::default();
        p.push("t/a");
        p.push("t/b");
        let taken = p.take_front(2);
        p.push("t/b");
        p.put_front(taken);
        let all: Vec<String> = p.take_front(10).iter().map(|s| s.to_string()).collect();
        assert_eq!(all, ["t/a", "t/b"]);
    }
}
