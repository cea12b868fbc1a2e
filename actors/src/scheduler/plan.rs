//! A round's decisions before anything is written (a [`Plan`]), and what is left to do
//! once its appends are stored (a [`Commit`]); the small constructors every decision
//! uses for its events.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_schemas::event::{Event, EventBody, Scheduled};
use bulkhead_schemas::scan::ScanJob;
use bulkhead_schemas::spec::RuntimeClass;
use bulkhead_schemas::{ChainHead, NodeOp};

use super::{Disposition, SERVICE};
use crate::ports::log::{LogError, WorkloadAppend};
use crate::projection::Workload;

/// The decisions of one round, before anything was written.
#[derive(Debug, Default)]
pub struct Plan {
    pub appends: Vec<WorkloadAppend>,
    /// For each append: which replicas start where, and whether it stops the workload.
    pub(super) effects: Vec<Effect>,
    /// For each command: how it is settled.
    pub(super) commands: Vec<(u64, Settle)>,
    /// Things worth a log line (unknown stop target, duplicates).
    pub notes: Vec<String>,
    /// Node events to publish before the appends, with the command each settles (if any).
    pub node_events: Vec<(Option<u64>, Event)>,
    /// What tenants with a quota take, counting this round's admissions.
    pub(super) usage: std::collections::HashMap<String, crate::policy::Usage>,
}

/// How a command is settled by its round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settle {
    /// Nothing to write: acknowledged.
    Done,
    /// Acknowledged once this append of the plan is stored.
    By(usize),
    /// Not yet (it needs what this round writes first): redelivered.
    Later,
}

impl Plan {
    /// Adds an append with what follows from it once stored; returns its index.
    pub(super) fn push(&mut self, append: WorkloadAppend, effect: Effect) -> usize {
        self.appends.push(append);
        self.effects.push(effect);
        self.appends.len() - 1
    }

    /// Records how command `cmd_seq` is settled.
    pub(super) fn settle(&mut self, cmd_seq: u64, how: Settle) {
        self.commands.push((cmd_seq, how));
    }

    /// Whether the round writes anything.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.node_events.is_empty()
    }
}

/// What follows from one append once it is stored.
#[derive(Debug, Default)]
pub(super) struct Effect {
    pub starts: Vec<(u32, Arc<str>)>,
    pub stop: bool,
    /// Replicas to stop (scaled away), wherever they hold a node.
    pub stop_replicas: Vec<u32>,
    pub grace_secs: Option<u32>,
    pub traceparent: Option<String>,
    pub new_pending: bool,
    /// A scan to queue once the append is stored.
    pub scan_job: Option<ScanJob>,
    /// It carries a verdict to a workload: if it does not land, verdicts are settled again.
    pub verdict: bool,
}

impl Effect {
    /// An effect in the trace `traceparent` (that of the command or of the workload).
    pub fn traced(traceparent: Option<&str>) -> Effect {
        Effect {
            traceparent: traceparent.map(str::to_owned),
            ..Effect::default()
        }
    }
}

/// What committing a plan leaves to do.
#[derive(Debug, Default)]
pub struct Commit {
    pub ops: BTreeMap<Arc<str>, Vec<NodeOp>>,
    pub commands: Vec<(u64, Disposition)>,
    pub placed: usize,
    /// Appends that failed (for another reason than a conflict), by workload.
    pub failures: Vec<(String, LogError)>,
    /// Scan jobs to queue (`bulkhead.scan.jobs`, deduplicated by job id).
    pub scan_jobs: Vec<ScanJob>,
}

/// A replica to place, with the nodes it should not (or must not) go to.
#[derive(Clone, Debug)]
pub struct Want {
    pub replica: u32,
    /// Where its last copy ended: used only when nothing else fits.
    pub prefer_not: Option<Arc<str>>,
    /// Where its node was lost: never.
    pub never: Option<Arc<str>>,
}

impl Want {
    pub fn new(replica: u32) -> Self {
        Want {
            replica,
            prefer_not: None,
            never: None,
        }
    }
}

/// The head of a workload's chain, as node ops carry it.
pub(super) fn chain_head(w: &Workload) -> ChainHead {
    ChainHead {
        seq: w.head.seq,
        hash: hex::encode(w.head.hash),
    }
}

/// An event of the scheduler about workload `id`, in the trace `traceparent`.
pub(super) fn event(id: &str, body: EventBody, traceparent: Option<&str>) -> Event {
    let mut e = Event::new(SERVICE, id, None, body);
    e.traceparent = traceparent.map(str::to_owned);
    e
}

/// `scheduled`: replica `replica` goes to `node` in `class` (replacing the copy on
/// `replaces`, for a drain).
pub(super) fn scheduled(
    replica: u32,
    node: &str,
    class: RuntimeClass,
    replaces: Option<&str>,
) -> EventBody {
    EventBody::Scheduled(Scheduled {
        replica,
        node: node.to_owned(),
        runtime_class: class,
        replaces: replaces.map(str::to_owned),
    })
}
