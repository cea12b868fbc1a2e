//! The workload projection: folds log events, in stream order, into the current state of
//! every workload and its replicas. Pure; the scheduler, the failover, the query API, the
//! CLI and a restarting node each run one.
//!
//! - [`workload`]: a workload and its replicas, and the views served of them;
//! - [`events`]: one handler per workload event type;
//! - this file: the projection, and [`Projection::apply`], which matches every event type
//!   (a new type is a compile error here, not a panic).

mod events;
pub mod workload;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bulkhead_schemas::api::{DrainMark, NodeMarks};
use bulkhead_schemas::event::{Event, EventBody, Hash, HashHex, NodeEvent};
use bulkhead_schemas::{Resources, subjects};

use crate::aside::{Aside, SetAside};
pub use crate::ports::log::Head;
use crate::ports::log::{Batch, Stored};
use events::Update;
pub use workload::{Replica, Workload, pin_image};

/// What applying an event changed in node allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Placed { node: Arc<str>, need: Resources },
    Released { node: Arc<str>, need: Resources },
}

/// Why an event left the projection unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// At or below the workload's head: seen already (a writer's own append coming back
    /// from the log, or a redelivery). The one benign skip.
    #[error("already applied (seq {seq} <= {head})")]
    Stale { seq: u64, head: u64 },
    #[error("`accepted` for workload {0}, which the log has admitted already")]
    Exists(String),
    #[error("event for unknown workload {0}")]
    UnknownWorkload(String),
    #[error("replica {0} out of range")]
    BadReplica(u32),
    #[error("a node event stored as a workload event")]
    NotWorkload,
    /// A fact from a node the replica was never placed on (its copy there or the one it
    /// moved away from): a node's key writing about what it does not run.
    #[error("node {node} never held replica {replica}")]
    NotItsNode { node: String, replica: u32 },
    /// `prev` is not the hash of the workload's last event.
    #[error("prev {prev} is not the workload's head {head}")]
    BrokenChain { prev: String, head: String },
}

impl Skip {
    /// Whether the skip is expected in normal operation (nothing to count or report).
    pub fn is_benign(&self) -> bool {
        matches!(self, Skip::Stale { .. })
    }

    /// The set-aside code of a skip that is not benign.
    pub fn code(&self) -> &'static str {
        match self {
            Skip::Stale { .. } => "stale",
            Skip::Exists(_) => "duplicate_accepted",
            Skip::UnknownWorkload(_) => "unknown_workload",
            Skip::BadReplica(_) => "bad_replica",
            Skip::NotWorkload => "not_a_workload_event",
            Skip::NotItsNode { .. } => "not_its_node",
            Skip::BrokenChain { .. } => "broken_chain",
        }
    }
}

/// Ids the log never admitted whose set-aside sequences are remembered, at most.
pub const MAX_SET_ASIDE_IDS: usize = 100_000;

/// A projection's workloads as a snapshot takes them: each shared with the projection,
/// which copies one only when it changes while the snapshot still holds it.
pub type Workloads = Vec<(String, Arc<Workload>)>;

#[derive(Default, Debug)]
pub struct Projection {
    /// Each workload behind an `Arc`: a snapshot takes them all without copying one, so
    /// the actor that holds the projection is not held up while they are copied (a deep
    /// copy of 100,000 stalled the scheduler for its whole length).
    workloads: BTreeMap<String, Arc<Workload>>,
    /// Highest stream sequence applied.
    pub last_seq: u64,
    /// Interned node names.
    nodes: BTreeMap<Box<str>, Arc<str>>,
    /// What node events say of each node.
    marks: BTreeMap<String, NodeMarks>,
    /// Events this projection would not apply.
    pub set_aside: SetAside,
    /// Per workload key the log never admitted: the last sequence set aside under it.
    set_aside_seqs: HashMap<String, u64>,
}

impl Projection {
    pub fn get(&self, id: &str) -> Option<&Workload> {
        self.workloads.get(id).map(Arc::as_ref)
    }

    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Workload)> {
        self.workloads.iter().map(|(k, w)| (k, w.as_ref()))
    }

    /// Every workload, shared: what a snapshot holds (no workload is copied).
    pub fn shared(&self) -> Workloads {
        self.workloads
            .iter()
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect()
    }

    /// What the log says of a node (drains, loss); default for a node it never mentioned.
    pub fn node_marks(&self, node: &str) -> NodeMarks {
        self.marks.get(node).copied().unwrap_or_default()
    }

    /// The nodes the log says joined and were not declared lost since: the cluster's
    /// members whether or not work is placed on them.
    pub fn members(&self) -> impl Iterator<Item = &str> + '_ {
        self.marks
            .iter()
            .filter(|(_, m)| !m.lost)
            .map(|(n, _)| n.as_str())
    }

    /// Applies a node event (`bulkhead.evt.node.>`, read apart from the workload events).
    pub fn node_event(&mut self, ev: &Event) {
        let Some(node_event) = ev.body.node_event() else {
            return;
        };
        let m = self.marks.entry(ev.subject.clone()).or_default();
        match node_event {
            NodeEvent::Joined(_) => m.lost = false,
            NodeEvent::Lost(_) => m.lost = true,
            NodeEvent::Draining(_) => m.drain = Some(DrainMark::Draining),
            NodeEvent::Drained(_) => m.drain = Some(DrainMark::Drained),
            NodeEvent::Undrained(_) => m.drain = None,
        }
    }

    /// A tenant's workloads with ids after `after`, in id order, with their keys.
    pub fn tenant_range<'a>(
        &'a self,
        tenant: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a Workload)> + 'a {
        use std::ops::Bound;
        let prefix = format!("{tenant}/");
        let start = match after {
            Some(a) => Bound::Excluded(format!("{prefix}{a}")),
            None => Bound::Included(prefix.clone()),
        };
        self.workloads
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, w)| (k, w.as_ref()))
    }

    /// Takes the workloads a snapshot holds (the log through `last_seq`), node names
    /// interned again. Into an empty projection the map is built in one go, its nodes full:
    /// inserted one by one in id order (a snapshot's order), every node split would stay
    /// little over half full, and the projection would hold that much more memory.
    pub fn restore(&mut self, mut workloads: Workloads, last_seq: u64) {
        self.last_seq = self.last_seq.max(last_seq);
        for (_, w) in &mut workloads {
            // Unshared when it comes from a snapshot just read: no copy.
            let w = Arc::make_mut(w);
            // A list read from JSON grows by doubling (a lone replica in room for four):
            // the spare room would stay for as long as the workload.
            w.replicas.shrink_to_fit();
            for r in &mut w.replicas {
                for n in [
                    &mut r.node,
                    &mut r.last_node,
                    &mut r.lost_on,
                    &mut r.replacing,
                ] {
                    if let Some(name) = n.as_deref() {
                        *n = Some(self.intern(name));
                    }
                }
            }
        }
        if self.workloads.is_empty() {
            // Sorted already (a stable sort of a sorted list is one pass); a later copy
            // of an id wins, as an insert's would.
            self.workloads = workloads.into_iter().collect();
        } else {
            self.workloads.extend(workloads);
        }
    }

    fn intern(&mut self, node: &str) -> Arc<str> {
        if let Some(n) = self.nodes.get(node) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(node);
        self.nodes.insert(node.into(), n.clone());
        n
    }

    /// Applies a batch read from the log (workload events, and node events for the marks),
    /// counting what its reader set aside.
    pub fn logged(&mut self, batch: Batch) {
        for s in &batch.nodes {
            self.node_event(&s.event);
        }
        for s in &batch.events {
            self.ingest(s);
        }
        self.note_set_aside(batch.set_aside);
    }

    /// Counts what a reader set aside, after the batch's events are applied: a set-aside
    /// message on a workload's subjects still holds its place in the stream, so the
    /// workload's head sequence (what the next append expects) moves past it, while its
    /// hash stays the last applied event's. (After the events: one set aside before an
    /// applied event of the same batch is already behind the head.)
    pub fn note_set_aside(&mut self, items: Vec<Aside>) {
        for a in &items {
            self.hold_place(a.seq, &a.subject);
        }
        self.set_aside.record_all(items);
    }

    /// A message at `seq` under `subject` (a log subject, or a workload key) that was not
    /// applied.
    fn hold_place(&mut self, seq: u64, subject: &str) {
        let key = if subject.starts_with("bulkhead.") {
            match subjects::workload_of(subject) {
                Some(k) => k,
                None => return, // not a workload's
            }
        } else {
            subject.to_owned()
        };
        // What the view a node is sent covers: it must not lag the heads it carries.
        self.last_seq = self.last_seq.max(seq);
        match self.workloads.get_mut(&key) {
            Some(w) if w.head.seq < seq => Arc::make_mut(w).head.seq = seq,
            Some(_) => {}
            None => {
                if self.set_aside_seqs.len() >= MAX_SET_ASIDE_IDS
                    && !self.set_aside_seqs.contains_key(&key)
                {
                    // A flood of junk on made-up ids: forget a tenth of them (an id
                    // forgotten and then submitted conflicts until an admin looks).
                    let drop: Vec<String> = self
                        .set_aside_seqs
                        .keys()
                        .take(MAX_SET_ASIDE_IDS / 10)
                        .cloned()
                        .collect();
                    for k in drop {
                        self.set_aside_seqs.remove(&k);
                    }
                }
                let e = self.set_aside_seqs.entry(key).or_default();
                *e = (*e).max(seq);
            }
        }
    }

    /// The last set-aside sequence under the subjects of `key`, a workload the log never
    /// admitted (0: none): what its first append must expect.
    pub fn set_aside_seq(&self, key: &str) -> u64 {
        self.set_aside_seqs.get(key).copied().unwrap_or(0)
    }

    /// Applies a stored event; what it will not apply (but a repeat) is set aside.
    pub fn ingest(&mut self, s: &Stored) -> Option<Vec<Change>> {
        let applied = self
            .chained(s)
            .and_then(|()| self.apply(s.seq, s.hash, &s.event));
        match applied {
            Ok(changes) => Some(changes),
            Err(skip) if skip.is_benign() => None,
            Err(skip) => {
                let a = Aside::new(s.seq, &s.event.subject, skip.code(), &skip);
                self.hold_place(a.seq, &a.subject);
                self.set_aside.record(a);
                None
            }
        }
    }

    /// Whether a new event names its workload's head as `prev` (none for a workload's
    /// first): a writer that skipped the server's sequence check cannot fork or rewrite a
    /// chain. What is at or below the head is left to [`Projection::apply`] (a repeat).
    fn chained(&self, s: &Stored) -> Result<(), Skip> {
        let expected = match self.workloads.get(&s.event.subject) {
            Some(w) if s.seq <= w.head.seq => return Ok(()),
            Some(w) => Some(HashHex::of(&w.head.hash)),
            None => None,
        };
        if s.event.prev.as_deref() == expected.as_ref().map(HashHex::as_str) {
            Ok(())
        } else {
            Err(Skip::BrokenChain {
                prev: s.event.prev.clone().unwrap_or_else(|| "none".into()),
                head: expected.map_or_else(|| "none".into(), |h| h.as_str().to_owned()),
            })
        }
    }

    /// Applies one stored event. Events at or below the workload's head are skipped, so
    /// the same event may arrive twice (own append, then the log) without harm.
    pub fn apply(&mut self, seq: u64, hash: Hash, ev: &Event) -> Result<Vec<Change>, Skip> {
        self.last_seq = self.last_seq.max(seq);
        let id = ev.subject.as_str();
        let head = Head { seq, hash };
        match &ev.body {
            EventBody::Accepted(a) => {
                if let Some(w) = self.workloads.get(id) {
                    return Err(if seq <= w.head.seq {
                        Skip::Stale {
                            seq,
                            head: w.head.seq,
                        }
                    } else {
                        Skip::Exists(id.to_owned())
                    });
                }
                let w = Workload::accepted(
                    &a.spec,
                    a.cmd_seq,
                    head,
                    a.pending.as_deref(),
                    ev.traceparent.as_deref(),
                );
                self.workloads.insert(id.to_owned(), Arc::new(w));
                Ok(Vec::new())
            }
            EventBody::Rejected(r) => {
                let reason = r.rejection.reason.as_str();
                if !self.workloads.contains_key(id) {
                    let w = Workload::rejected(r.cmd_seq, head, reason);
                    self.workloads.insert(id.to_owned(), Arc::new(w));
                    return Ok(Vec::new());
                }
                // An accepted workload rejected later (its scan verdict failed the gate).
                self.update(id, head, &ev.at, |u| {
                    u.w.rejected = true;
                    u.w.reason = Some(reason.into());
                    Ok(())
                })
            }
            EventBody::Scheduled(s) => {
                let node = self.intern(&s.node);
                self.update(id, head, &ev.at, |u| u.scheduled(s, node))
            }
            EventBody::Lost(l) => match l.replica {
                Some(replica) => {
                    let node = self.intern(&l.node);
                    self.update(id, head, &ev.at, |u| u.lost(l, replica, node))
                }
                None => Err(Skip::NotWorkload),
            },
            EventBody::Started(s) => self.update(id, head, &ev.at, |u| u.started(s)),
            EventBody::Exited(x) => self.update(id, head, &ev.at, |u| u.exited(x)),
            EventBody::ReplicaRequested(r) => {
                self.update(id, head, &ev.at, |u| u.replica_requested(r))
            }
            EventBody::StopRequested(_) => self.update(id, head, &ev.at, |u| u.stop_requested()),
            EventBody::Stopped(s) => self.update(id, head, &ev.at, |u| u.stopped(s)),
            EventBody::ScanRequested(r) => self.update(id, head, &ev.at, |u| u.scan_requested(r)),
            EventBody::ScanCompleted(c) => self.update(id, head, &ev.at, |u| u.scan_completed(c)),
            EventBody::ScanWaiting(s) => self.update(id, head, &ev.at, |u| u.scan_waiting(s)),
            EventBody::GaveUp(g) => self.update(id, head, &ev.at, |u| u.gave_up(g)),
            EventBody::Scaled(sc) => self.update(id, head, &ev.at, |u| u.scaled(sc)),
            EventBody::Quarantined(q) => self.update(id, head, &ev.at, |u| u.quarantined(q)),
            EventBody::Joined(_)
            | EventBody::Draining(_)
            | EventBody::Drained(_)
            | EventBody::Undrained(_)
            | EventBody::Enrolled(_)
            | EventBody::Revoked(_)
            | EventBody::PolicyProposed(_)
            | EventBody::PolicyApproved(_)
            | EventBody::Checkpoint(_) => Err(Skip::NotWorkload),
        }
    }

    /// Applies `handle` to an admitted workload whose head is older than the event, and
    /// moves the head to the event.
    fn update(
        &mut self,
        id: &str,
        head: Head,
        at: &str,
        handle: impl FnOnce(&mut Update<'_>) -> Result<(), Skip>,
    ) -> Result<Vec<Change>, Skip> {
        let w = self
            .workloads
            .get_mut(id)
            .ok_or_else(|| Skip::UnknownWorkload(id.to_owned()))?;
        if head.seq <= w.head.seq {
            return Err(Skip::Stale {
                seq: head.seq,
                head: w.head.seq,
            });
        }
        let w = Arc::make_mut(w);
        let mut u = Update {
            need: w.need(),
            at_ms: bulkhead_schemas::parse_rfc3339_ms(at).unwrap_or(0),
            changes: Vec::new(),
            w,
        };
        handle(&mut u)?;
        let Update { w, changes, .. } = u;
        w.head = head;
        w.events += 1;
        Ok(changes)
    }
}

#[cfg(test)]
mod tests;
