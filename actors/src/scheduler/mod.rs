//! The scheduler: a pure core that admits commands and places replicas, turning them into
//! per-workload appends and node operations, and the ractor actor that drives it.
//!
//! | file | concern |
//! |---|---|
//! | this file | [`SchedulerCore`]: its state, and what the log, heartbeats and node events tell it |
//! | [`command`] | the commands read from `BULKHEAD_CMD` and their dispositions |
//! | [`admission`] | `submit`: accept (placing what fits) or reject with a reason |
//! | [`stop`], [`scale`] | the `stop` and `scale` commands |
//! | [`drain`] | `drain` / `undrain`, and moving replicas off draining nodes |
//! | [`verdicts`] | scan verdicts: gate, reject, quarantine |
//! | [`scan_policy`] | the pure policy per trust level |
//! | [`placement`] | placing waiting replicas (backoffs, lost nodes) |
//! | [`pace`] | the nodes' heartbeat pace within a budget a second |
//! | [`pending`] | the queue of workloads waiting for capacity, each once |
//! | [`cluster`] | the pure filter and score over the nodes |
//! | [`sync`] | the views of the log sent to nodes (which read none) |
//! | [`plan`] | a round's decisions ([`Plan`]) and what is left once stored ([`Commit`]) |
//! | [`commit`] | committing a round; resending after a takeover |
//! | [`outbox`] | node ops sent in order by a task of their own, what failed handed back |
//! | [`actor`] | the ractor shell over the core and the ports |
//!
//! How the decisions reach the log (atomic batches, one expectation per workload) is in
//! `docs/ARCHITECTURE.md`.

pub mod actor;
mod admission;
pub mod cluster;
pub mod command;
mod commit;
mod drain;
mod outbox;
pub mod pace;
mod pending;
pub mod placement;
pub mod plan;
mod scale;
pub mod scan_policy;
mod stop;
mod sync;
mod verdicts;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::event::{Event, EventBody, NodeEvent, ScanCompleted};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::{NodeHeartbeat, NodeOp, WorkloadSpec};

use crate::aside::Aside;
use crate::directory::Directory;
use crate::liveness::NodeWatch;
use crate::ports::log::{Batch, Stored};
use crate::projection::{self, Change, Projection};
use cluster::Cluster;
pub use command::{Command, CommandKind, Disposition};
use plan::chain_head;
pub use plan::{Commit, Plan};
use scan_policy::ScanPolicy;

/// The name the scheduler signs its events with.
pub const SERVICE: &str = "scheduler";

/// The scheduler's state: projection, cluster and the queue of workloads awaiting capacity.
#[derive(Default, Debug)]
pub struct SchedulerCore {
    pub projection: Projection,
    pub cluster: Cluster,
    pending: pending::Pending,
    /// Cluster generation at the last full pending pass; retry only when it changed.
    pending_pass_gen: u64,
    generation: u64,
    /// The scan policy in force: the flags, overlaid with the cluster policy's `scan`.
    pub policy: ScanPolicy,
    /// Its own events its reader of the log passed by (applied as they were stored).
    pub own_passed: u64,
    /// The scheduler's own scan flags (what the cluster policy leaves out).
    scan_flags: ScanPolicy,
    /// The latest scan outcome per image reference, with its time (Unix ms); it answers
    /// for the image for the policy's `verdict_ttl_ms`.
    verdicts: HashMap<String, (ScanCompleted, u64)>,
    /// Scan workers alive as last counted (None until the service counts them).
    scanners_live: Option<usize>,
    /// A verdict's append did not land: settle the known verdicts again.
    resettle: bool,
    /// The earliest time (Unix ms) a backed-off replica may be placed.
    next_due_ms: Option<u64>,
    /// Stop ops for copies a drain replaced, once their successor started.
    replaced: BTreeMap<Arc<str>, Vec<NodeOp>>,
    /// Drained nodes whose `drained` event was published.
    drained: BTreeSet<String>,
    /// Which nodes heartbeat: a silent one takes no new placements.
    watch: NodeWatch,
    /// The identities the log enrolled: tenants' keys, nodes' classes.
    pub directory: Directory,
    /// Nodes that joined (some time): each is sent its view at a takeover.
    joined: BTreeSet<String>,
    /// Nodes due their view of the log, and why.
    syncs: BTreeMap<Arc<str>, bulkhead_schemas::SyncReason>,
    /// Replicas the log brought `scheduled` that this scheduler did not store itself (an
    /// append stored though its outcome was an error: a lost acknowledgement, a later part
    /// of a split append that failed): their start ops are owed. Noted once active
    /// ([`SchedulerCore::owe_from_now`]): at a takeover every unstarted replica's op goes
    /// out anyway.
    owed: BTreeSet<(String, u32)>,
    noting_owed: bool,
    /// The scheduler's curve key: re-seals a spec's secrets for the node a start op goes to.
    pub sealer: Option<crate::secrets::Sealer>,
    /// The cluster's heartbeat pace, told to each node that beats faster (off by default;
    /// the service sets its budget).
    pacer: pace::Pacer,
    /// `pace` ops to send, one a node.
    paces: BTreeMap<Arc<str>, Vec<NodeOp>>,
}

impl SchedulerCore {
    /// At most `beats_per_sec` heartbeats a second from the whole cluster (0: no pacing).
    pub fn set_heartbeat_budget(&mut self, beats_per_sec: u64) {
        self.pacer = pace::Pacer::new(beats_per_sec);
    }

    /// Notes a `pace` op for the node of a heartbeat taken at `now_ms`, if it should be
    /// told the cluster's pace; they go out together ([`SchedulerCore::take_paces`]).
    pub fn pace(&mut self, hb: &NodeHeartbeat, now_ms: u64) {
        let nodes = self.cluster.nodes().len();
        if let Some(every_ms) = self.pacer.beat(&hb.name, hb.interval_ms, nodes, now_ms) {
            let node = self.cluster.intern(&hb.name);
            self.paces.insert(node, vec![NodeOp::Pace { every_ms }]);
        }
    }

    /// The `pace` ops noted since the last call.
    pub fn take_paces(&mut self) -> BTreeMap<Arc<str>, Vec<NodeOp>> {
        std::mem::take(&mut self.paces)
    }

    /// The scheduler's scan flags; the cluster policy's `scan` rules win over them.
    pub fn set_scan_flags(&mut self, flags: ScanPolicy) {
        self.policy = flags.overlay(&self.directory.policy.current().scan);
        self.scan_flags = flags;
    }

    /// The spec a start op on `node` carries: its secrets re-sealed to that node's curve
    /// key (left as they are when there is no sealer or the node has no key: the node then
    /// cannot open them, and its start fails naming them).
    pub(super) fn spec_for(&self, spec: &WorkloadSpec, node: &str) -> WorkloadSpec {
        let mut spec = spec.clone();
        if spec.secrets.is_empty() {
            return spec;
        }
        if let Some(sealer) = &self.sealer {
            let xkey = self
                .directory
                .get(Role::Node, node)
                .and_then(|n| n.xkey.as_deref());
            spec.secrets = sealer.for_node(&spec.secrets, xkey);
        }
        spec
    }

    /// What the log brought (any writer's, verified, in stream order), and what the reader
    /// set aside on the way. Returns the plans new scan verdicts call for.
    pub fn logged(&mut self, batch: Batch) -> Vec<Plan> {
        let version = self.directory.policy.current().version;
        for s in &batch.identities {
            self.directory.apply(s.seq, &s.event);
        }
        if self.directory.policy.current().version != version {
            self.policy = self
                .scan_flags
                .overlay(&self.directory.policy.current().scan);
        }
        for s in &batch.nodes {
            self.node_event(&s.event);
        }
        for s in &batch.events {
            if self.apply(s)
                && self.noting_owed
                && let EventBody::Scheduled(sc) = &s.event.body
            {
                self.owed.insert((s.event.subject.clone(), sc.replica));
            }
        }
        self.projection.note_set_aside(batch.set_aside);
        self.own_passed += batch.own.count;
        let mut plans = Vec::new();
        for (s, stored_ms) in batch.scans {
            if let EventBody::ScanCompleted(c) = s.event.body {
                // The server's time, not the event's own: a verdict cannot date itself later.
                let plan = self.scan_completed(c, stored_ms);
                if !plan.is_empty() {
                    plans.push(plan);
                }
            }
        }
        plans
    }

    /// Applies a stored event (own append or from the log) and its allocation changes;
    /// false when it was not applied (a repeat of what was, or set aside).
    pub fn apply(&mut self, stored: &Stored) -> bool {
        let Some(changes) = self.projection.ingest(stored) else {
            return false;
        };
        for c in changes {
            match c {
                Change::Placed { node, need } => self.cluster.allocate(&node, &need),
                Change::Released { node, need } => {
                    self.cluster.release(&node, &need);
                    self.generation += 1;
                }
            }
        }
        let id = &stored.event.subject;
        match &stored.event.body {
            // New work: worth a placement pass even if no node changed. A stopped copy that
            // a quarantine moves (placed again in its new class) is new work too.
            EventBody::ReplicaRequested(_)
            | EventBody::Scaled(_)
            | EventBody::Stopped(_)
            | EventBody::Quarantined(_) => {
                self.generation += 1;
                self.queue_if_pending(id);
            }
            EventBody::Accepted(_) => {
                self.queue_if_pending(id);
            }
            EventBody::Started(st) => self.stop_replaced(id, st.replica),
            // The node may still run the copy (a pause, a partition): it must hear.
            EventBody::Lost(l) => self.sync_due(&l.node, bulkhead_schemas::SyncReason::Lost),
            EventBody::Rejected(_)
            | EventBody::Scheduled(_)
            | EventBody::Exited(_)
            | EventBody::StopRequested(_)
            | EventBody::ScanRequested(_)
            | EventBody::ScanCompleted(_)
            | EventBody::ScanWaiting(_)
            | EventBody::GaveUp(_)
            | EventBody::Joined(_)
            | EventBody::Draining(_)
            | EventBody::Drained(_)
            | EventBody::Undrained(_)
            | EventBody::Enrolled(_)
            | EventBody::Revoked(_)
            | EventBody::PolicyProposed(_)
            | EventBody::PolicyApproved(_)
            | EventBody::Checkpoint(_) => {}
        }
        true
    }

    /// Takes the workloads of a snapshot (the log through `last_seq`): the nodes' shares
    /// and the queue of pending placements follow from them, as a replay would leave them
    /// (a copy holds its node's share until it ends, and so does the copy a drain move
    /// replaces).
    pub fn restore(&mut self, workloads: projection::Workloads, last_seq: u64) {
        self.projection.restore(workloads, last_seq);
        let mut shares = Vec::new();
        let mut pending = Vec::new();
        for (id, w) in self.projection.iter() {
            let need = w.need();
            for r in &w.replicas {
                if let (true, Some(node)) = (r.holds(), &r.node) {
                    shares.push((node.clone(), need));
                }
                if let Some(old) = &r.replacing {
                    shares.push((old.clone(), need));
                }
            }
            if w.pending_replicas().next().is_some() {
                pending.push(id.clone());
            }
        }
        for (node, need) in shares {
            self.cluster.allocate(&node, &need);
        }
        for id in pending {
            self.pending.push(&id);
        }
        self.generation += 1;
    }

    /// Puts the workload in the queue of pending placements if it has replicas waiting
    /// and is not queued yet; returns whether it did.
    fn queue_if_pending(&mut self, id: &str) -> bool {
        !self.pending.contains(id)
            && self
                .projection
                .get(id)
                .is_some_and(|w| w.pending_replicas().next().is_some())
            && self.pending.push(id)
    }

    /// The successor of a drained replica runs: stop the copy it replaces.
    fn stop_replaced(&mut self, id: &str, replica: u32) {
        let Some(w) = self.projection.get(id) else {
            return;
        };
        let Some(r) = w.replicas.get(replica as usize) else {
            return;
        };
        if let (Some(old), WorkloadState::Running) = (&r.replacing, r.state) {
            self.replaced
                .entry(old.clone())
                .or_default()
                .push(NodeOp::Stop {
                    workload: id.to_owned(),
                    replica,
                    head: chain_head(w),
                    grace_secs: None,
                    traceparent: w.traceparent.as_deref().map(str::to_owned),
                });
        }
    }

    pub fn has_replaced(&self) -> bool {
        !self.replaced.is_empty()
    }

    /// Stop ops for copies whose replacements now run (taken once).
    pub fn take_replaced(&mut self) -> BTreeMap<Arc<str>, Vec<NodeOp>> {
        std::mem::take(&mut self.replaced)
    }

    /// An event about a node, from the log: a drain cordons it (through restarts of the
    /// node) until an undrain, a loss takes it out of placement until it heartbeats again
    /// and sends it its view (it says it is back once it hears).
    pub fn node_event(&mut self, ev: &Event) {
        let node = ev.subject.as_str();
        let Some(node_event) = ev.body.node_event() else {
            return;
        };
        match node_event {
            NodeEvent::Draining(_) => {
                self.cluster.update(node, |n| n.cordoned = true);
                self.drained.remove(node);
                self.generation += 1;
            }
            NodeEvent::Undrained(_) => {
                self.cluster.update(node, |n| n.cordoned = false);
                self.drained.remove(node);
                self.generation += 1;
            }
            NodeEvent::Drained(_) => {
                self.drained.insert(node.to_owned());
            }
            // Out of placement until it beats again; and it must hear of its loss even if
            // no replica of it was lost (an empty node): a node learns it was lost only from
            // a view, and says it is back (`joined`) only then.
            NodeEvent::Lost(_) => {
                self.node_gone(node);
                self.sync_due(node, bulkhead_schemas::SyncReason::Lost);
            }
            // Back: its heartbeats make it ready; it needs its view of the log.
            NodeEvent::Joined(_) => {
                self.joined.insert(node.to_owned());
                self.sync_due(node, bulkhead_schemas::SyncReason::Joined);
            }
        }
    }

    /// A heartbeat arrived at `now_ms`: the node is ready with this capacity. Returns true
    /// when the node was not taking placements before (new, or back from silence). A
    /// heartbeat of a node that is not enrolled, or that offers a class it was not enrolled
    /// with, is refused (and changes nothing).
    pub fn heartbeat(&mut self, hb: &NodeHeartbeat, now_ms: u64) -> Result<bool, Aside> {
        let subject = format!("$KV.bulkhead-nodes.{}", hb.name);
        let refuse = |code, why: String| Aside::new(0, &subject, code, why);
        let id = self.directory.get(Role::Node, &hb.name).ok_or_else(|| {
            refuse(
                "unenrolled_node",
                format!("no node {} is enrolled", hb.name),
            )
        })?;
        if let Some(c) = hb.runtime_classes.iter().find(|c| !id.classes.contains(c)) {
            let why = format!(
                "node {} offers {c}, which it was not enrolled with",
                hb.name
            );
            return Err(refuse("unenrolled_class", why));
        }
        self.watch.beat(&hb.name, now_ms, hb.interval_ms);
        let (back, changed) = self.cluster.update(&hb.name, |slot| {
            let back = !slot.ready;
            let changed = back
                || slot.capacity != hb.capacity
                || slot.classes != hb.runtime_classes
                || slot.labels != hb.labels;
            slot.capacity = hb.capacity;
            slot.classes = hb.runtime_classes.clone();
            slot.labels = hb.labels.clone();
            slot.ready = true;
            (back, changed)
        });
        if changed {
            self.generation += 1;
        }
        Ok(back)
    }

    /// Nodes silent for [`crate::liveness::MISSED_BEATS`] of their intervals at `now_ms`
    /// take no new placements until they beat again; returns them (each once).
    pub fn check_silent(&mut self, now_ms: u64) -> Vec<String> {
        let silent: Vec<String> = self
            .watch
            .silent(now_ms, 0)
            .into_iter()
            .map(|(node, _)| node)
            .filter(|node| self.cluster.get(node).is_some_and(|n| n.ready))
            .collect();
        for node in &silent {
            self.node_gone(node);
        }
        silent
    }

    /// The node stopped heartbeating (or its heartbeat entry was removed): place nothing
    /// more there.
    pub fn node_gone(&mut self, name: &str) {
        if self.cluster.get(name).is_some_and(|n| n.ready) {
            self.cluster.update(name, |n| n.ready = false);
        }
    }

    /// Whether work waits for a backoff to pass or a node to change.
    pub fn placement_due(&self, now_ms: u64) -> bool {
        !self.pending.is_empty()
            && (self.pending_pass_gen != self.generation
                || self.next_due_ms.is_some_and(|t| t <= now_ms))
    }

    /// When the next backed-off replica may be placed (Unix ms).
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_due_ms
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests;
