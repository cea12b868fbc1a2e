//! The nodes' views of the log: a node reads no log, so the scheduler sends it what the
//! log says it should hold (a `sync` op) when it joins, when it or replicas on it are
//! declared lost, and when a scheduler takes over.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_schemas::{NodeOp, SyncReason};

use super::SchedulerCore;
use crate::node::reconcile::sync_of;

/// Which of two reasons a node is told when both came up: a loss asks more of it (it
/// says it is back) than a join, and both more than a takeover.
fn stronger(a: SyncReason, b: SyncReason) -> SyncReason {
    let rank = |r| match r {
        SyncReason::Lost => 2,
        SyncReason::Joined => 1,
        SyncReason::Takeover => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

impl SchedulerCore {
    /// Node `node` is due its view, for `reason`.
    pub(super) fn sync_due(&mut self, node: &str, reason: SyncReason) {
        let r = self
            .syncs
            .remove(node)
            .map_or(reason, |old| stronger(old, reason));
        self.syncs.insert(node.into(), r);
    }

    /// A scheduler takes over: every node that ever joined is due its view, for that
    /// reason only (the joins and losses met while rebuilding are history, not news: the
    /// view a node now gets covers them).
    pub fn sync_all(&mut self) {
        self.syncs.clear();
        let nodes: Vec<String> = self.joined.iter().cloned().collect();
        for n in nodes {
            self.sync_due(&n, SyncReason::Takeover);
        }
    }

    /// The views due, as ops (one message per node), taken once.
    pub fn take_syncs(&mut self) -> BTreeMap<Arc<str>, Vec<NodeOp>> {
        std::mem::take(&mut self.syncs)
            .into_iter()
            .map(|(node, reason)| {
                let view = sync_of(&self.projection, &node, reason);
                (node, vec![NodeOp::Sync { view }])
            })
            .collect()
    }

    /// Views that could not be sent are due again.
    pub fn sync_failed(&mut self, node: &str, reason: SyncReason) {
        self.sync_due(node, reason);
    }
}
