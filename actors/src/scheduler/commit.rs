//! Committing a round: what was stored becomes node ops and scan jobs, and each command
//! is acknowledged or retried; after a takeover, and when the log brings replicas stored by
//! an append whose outcome was an error, the ops that may have been lost are sent again.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::{ChainHead, NodeOp};

use super::plan::{Effect, Settle, chain_head};
use super::{Commit, Disposition, Plan, SchedulerCore};
use crate::ports::log::{LogError, Outcome, Stored};
use crate::projection::Workload;

/// What became of one append of the plan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Landed {
    Stored,
    Conflict,
    Failed,
}

impl SchedulerCore {
    /// Start ops for replicas the log shows scheduled but not started: sent again when a
    /// scheduler takes over, in case the previous one died between the event and the op.
    pub fn unstarted_ops(&self) -> BTreeMap<Arc<str>, Vec<NodeOp>> {
        let mut ops: BTreeMap<Arc<str>, Vec<NodeOp>> = BTreeMap::new();
        for (id, w) in self.projection.iter() {
            for replica in 0..w.replicas.len() as u32 {
                self.start_again(id, w, replica, &mut ops);
            }
        }
        ops
    }

    /// From now on (this scheduler is active), a replica the log brings `scheduled` that
    /// this scheduler did not store itself is owed its start op ([`SchedulerCore::take_owed`]).
    pub fn owe_from_now(&mut self) {
        self.noting_owed = true;
    }

    /// Start ops owed for replicas stored without them (an append stored though its
    /// outcome was an error), for those still scheduled, taken once. A node that already
    /// runs the replica ignores the op.
    pub fn take_owed(&mut self) -> BTreeMap<Arc<str>, Vec<NodeOp>> {
        let mut ops: BTreeMap<Arc<str>, Vec<NodeOp>> = BTreeMap::new();
        for (id, replica) in std::mem::take(&mut self.owed) {
            if let Some(w) = self.projection.get(&id) {
                self.start_again(&id, w, replica, &mut ops);
            }
        }
        ops
    }

    /// A start op for `replica` of workload `id` into `ops`, if the log shows it scheduled
    /// (not started, not stopping) on a node.
    fn start_again(
        &self,
        id: &str,
        w: &Workload,
        replica: u32,
        ops: &mut BTreeMap<Arc<str>, Vec<NodeOp>>,
    ) {
        if w.stop_requested {
            return;
        }
        let Some(r) = w.replicas.get(replica as usize) else {
            return;
        };
        let (WorkloadState::Scheduled, Some(node)) = (r.state, &r.node) else {
            return;
        };
        // Copied only for a replica that needs the op.
        if let Some(spec) = w.run_spec() {
            ops.entry(node.clone()).or_default().push(NodeOp::Start {
                workload: id.to_owned(),
                replica,
                spec: self.spec_for(&spec, node),
                head: chain_head(w),
                traceparent: w.traceparent.as_deref().map(str::to_owned),
            });
        }
    }

    /// Records what was stored and says what follows: node ops, and each command's fate.
    pub fn commit(&mut self, plan: Plan, outcomes: Vec<Outcome>) -> Commit {
        let mut commit = Commit::default();
        let mut landed = Vec::with_capacity(plan.appends.len());
        let appends = plan.appends.iter().zip(&plan.effects);
        for ((append, effect), outcome) in appends.zip(outcomes) {
            let workload = &append.workload;
            landed.push(match outcome {
                Ok(stored) => {
                    self.stored(workload, &stored, effect, &mut commit);
                    Landed::Stored
                }
                Err(LogError::Conflict) => {
                    // A verdict whose append lost a race is settled again on the next tick,
                    // against the workload's new head.
                    self.resettle |= effect.verdict;
                    if effect.new_pending || !effect.starts.is_empty() {
                        // A pending placement lost a race; it is retried on a later pass.
                        self.generation += 1;
                        self.pending.push(workload);
                    }
                    Landed::Conflict
                }
                Err(e) => {
                    self.resettle |= effect.verdict;
                    commit.failures.push((workload.clone(), e));
                    Landed::Failed
                }
            });
        }
        for (cmd_seq, settle) in plan.commands {
            let new_workload = |i: usize| plan.appends.get(i).is_some_and(|a| a.head.is_none());
            let d = match settle {
                Settle::Done => Disposition::Ack,
                Settle::Later => Disposition::Retry("it needs what this round writes first".into()),
                Settle::By(i) => match landed.get(i) {
                    Some(Landed::Stored) => Disposition::Ack,
                    // A new workload whose id is already in the log: a redelivery raced its
                    // first handling, which stored it. Its events reach us through the log.
                    Some(Landed::Conflict) if new_workload(i) => Disposition::Ack,
                    Some(Landed::Conflict) => {
                        Disposition::Retry("the workload's log moved under its append".into())
                    }
                    Some(Landed::Failed) | None => {
                        let why = plan
                            .appends
                            .get(i)
                            .and_then(|a| commit.failures.iter().find(|(w, _)| *w == a.workload))
                            .map(|(_, e)| format!(": {e}"))
                            .unwrap_or_default();
                        Disposition::Retry(format!("its append failed{why}"))
                    }
                },
            };
            commit.commands.push((cmd_seq, d));
        }
        commit
    }

    /// An append was stored: apply it, and gather the ops and scan jobs it calls for.
    fn stored(&mut self, workload: &str, stored: &[Stored], effect: &Effect, commit: &mut Commit) {
        for s in stored {
            self.apply(s);
        }
        let Some(last) = stored.last() else {
            return;
        };
        let head = ChainHead {
            seq: last.seq,
            hash: hex::encode(last.hash),
        };
        if let Some(job) = &effect.scan_job {
            commit.scan_jobs.push(job.clone());
        }
        if effect.new_pending && self.queue_if_pending(workload) {
            // A verdict let a gated workload through: place it on the next pass.
            self.generation += 1;
        }
        let Some(w) = self.projection.get(workload) else {
            return;
        };
        if let Some(spec) = w.run_spec() {
            for (replica, node) in &effect.starts {
                commit.placed += 1;
                commit
                    .ops
                    .entry(node.clone())
                    .or_default()
                    .push(NodeOp::Start {
                        workload: workload.to_owned(),
                        replica: *replica,
                        spec: self.spec_for(&spec, node),
                        head: head.clone(),
                        traceparent: effect.traceparent.clone(),
                    });
            }
        }
        if !effect.stop && effect.stop_replicas.is_empty() {
            return;
        }
        for (replica, r) in w.replicas.iter().enumerate() {
            let replica = replica as u32;
            if !effect.stop && !effect.stop_replicas.contains(&replica) {
                continue;
            }
            if let (true, Some(node)) = (r.holds(), &r.node) {
                commit
                    .ops
                    .entry(node.clone())
                    .or_default()
                    .push(NodeOp::Stop {
                        workload: workload.to_owned(),
                        replica,
                        head: head.clone(),
                        grace_secs: effect.grace_secs,
                        traceparent: effect.traceparent.clone(),
                    });
            }
        }
    }
}
