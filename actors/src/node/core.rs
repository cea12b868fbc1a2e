//! A node's bookkeeping, free of I/O: which containers run which replicas, each workload's
//! chain head, which start ops were taken, which containers are being stopped, exits that
//! came before their start finished, and facts still to be logged.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bulkhead_schemas::event::{Event, EventBody, Exited, Started};
use bulkhead_schemas::node::IsolationReport;
use bulkhead_schemas::{ChainHead, NodeHeartbeat, Resources, RuntimeClass};
use tracing::warn;

use super::NodeConfig;
use crate::ports::log::{Head, Outcome, WorkloadAppend};
use crate::ports::runtime::ExitNotice;

/// At most this many early exits are kept while starts are under way (the oldest go
/// first): a bound against a runtime that floods exits of containers the node never knew.
pub const MAX_EARLY_EXITS: usize = 4096;

#[derive(Clone, Debug)]
pub(super) struct Container {
    pub workload: String,
    pub replica: u32,
    pub need: Resources,
}

/// A node's bookkeeping: which containers run which replicas, and each workload's head.
#[derive(Debug)]
pub struct NodeCore {
    pub config: NodeConfig,
    containers: HashMap<String, Container>,
    by_replica: HashMap<(String, u32), String>,
    heads: HashMap<String, Head>,
    /// Per replica, the head sequence of the last start op taken: a redelivered op (same
    /// or older head) is not started again.
    handled: HashMap<(String, u32), u64>,
    /// Containers being stopped: their exit is a `stopped`, not an `exited`.
    pub(super) stopping: HashSet<String>,
    /// Start calls made and not yet back.
    starting: usize,
    /// Exits of containers the node does not know yet, kept while a start is under way
    /// (the container may be that start's); dropped once no start is.
    early_exits: VecDeque<ExitNotice>,
    /// Events whose append failed, retried every `heartbeat_ms` (whatever the pace).
    pub(super) unlogged: Vec<(String, Event)>,
    /// The cluster's heartbeat pace as the scheduler last set it (0: none).
    pace_ms: u64,
}

impl NodeCore {
    pub fn new(config: NodeConfig) -> Self {
        NodeCore {
            config,
            containers: HashMap::new(),
            by_replica: HashMap::new(),
            heads: HashMap::new(),
            handled: HashMap::new(),
            stopping: HashSet::new(),
            starting: 0,
            early_exits: VecDeque::new(),
            unlogged: Vec::new(),
            pace_ms: 0,
        }
    }

    pub fn running(&self) -> usize {
        self.containers.len()
    }

    pub fn container_of(&self, workload: &str, replica: u32) -> Option<&str> {
        self.by_replica
            .get(&(workload.to_owned(), replica))
            .map(String::as_str)
    }

    fn service(&self) -> String {
        format!("node/{}", self.config.name)
    }

    /// Remembers the newest head known for a workload.
    pub(super) fn learn(&mut self, workload: &str, head: &ChainHead) {
        if let Some(hash) = parse_hash(&head.hash) {
            self.learn_head(
                workload,
                Head {
                    seq: head.seq,
                    hash,
                },
            );
        }
    }

    pub(super) fn learn_head(&mut self, workload: &str, h: Head) {
        let e = self.heads.entry(workload.to_owned()).or_insert(h);
        if h.seq > e.seq {
            *e = h;
        }
    }

    /// The workloads this node logged a fact about after stream sequence `seq`.
    pub(super) fn logged_after(&self, seq: u64) -> std::collections::HashSet<String> {
        self.heads
            .iter()
            .filter(|(_, h)| h.seq > seq)
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// Remembers start ops taken before (from the log, at reconciliation).
    pub(super) fn learn_handled(&mut self, handled: Vec<((String, u32), u64)>) {
        self.handled.extend(handled);
    }

    /// Whether a start op with this head is new for the replica (and takes it if so: its
    /// start call is then under way until [`NodeCore::start_done`]).
    pub fn take_start(&mut self, workload: &str, replica: u32, head_seq: u64) -> bool {
        if self.container_of(workload, replica).is_some() {
            return false;
        }
        let key = (workload.to_owned(), replica);
        if self.handled.get(&key).is_some_and(|&s| s >= head_seq) {
            return false;
        }
        self.handled.insert(key, head_seq);
        self.starting += 1;
        true
    }

    /// A start call is back (with its container, when it made one): the exit of that
    /// container, if it came first. Once no start is under way, exits of containers the
    /// node never knew are dropped: none can belong to a start any more.
    pub fn start_done(&mut self, container: Option<&str>) -> Option<ExitNotice> {
        self.starting = self.starting.saturating_sub(1);
        let exit = container.and_then(|c| {
            let i = self.early_exits.iter().position(|n| n.container == c)?;
            self.early_exits.remove(i)
        });
        if self.starting == 0 {
            self.early_exits.clear();
        }
        exit
    }

    /// The exit of a container the node does not know: kept if a start is under way (it
    /// may be that start's container), else dropped. Returns whether it was kept.
    pub fn early_exit(&mut self, notice: ExitNotice) -> bool {
        if self.starting == 0 {
            return false;
        }
        if self.early_exits.len() >= MAX_EARLY_EXITS
            && let Some(old) = self.early_exits.pop_front()
        {
            warn!(container = %old.container, "dropping the oldest exit of an unknown container");
        }
        self.early_exits.push_back(notice);
        true
    }

    /// Exits kept for starts under way.
    pub fn early_exits(&self) -> usize {
        self.early_exits.len()
    }

    pub(super) fn record(
        &mut self,
        container: String,
        workload: &str,
        replica: u32,
        need: Resources,
    ) {
        self.by_replica
            .insert((workload.to_owned(), replica), container.clone());
        self.containers.insert(
            container,
            Container {
                workload: workload.to_owned(),
                replica,
                need,
            },
        );
    }

    pub(super) fn forget(&mut self, container: &str) -> Option<Container> {
        let c = self.containers.remove(container)?;
        self.by_replica.remove(&(c.workload.clone(), c.replica));
        Some(c)
    }

    pub(super) fn event(&self, workload: &str, body: EventBody) -> Event {
        Event::new(&self.service(), workload, None, body)
    }

    pub(super) fn exited(&self, workload: &str, replica: u32, n: ExitNotice) -> Event {
        self.event(
            workload,
            EventBody::Exited(Exited {
                replica,
                node: self.config.name.clone(),
                code: n.code,
                reason: n.reason,
                finished_at: n.finished_at,
            }),
        )
    }

    pub(super) fn started(
        &self,
        workload: &str,
        replica: u32,
        container: &str,
        confinement: Option<bulkhead_schemas::event::Confinement>,
    ) -> Event {
        self.event(
            workload,
            EventBody::Started(Started {
                replica,
                node: self.config.name.clone(),
                container: container.to_owned(),
                confinement,
            }),
        )
    }

    /// Groups events by workload into appends after each workload's known head.
    pub(super) fn appends(&self, events: Vec<(String, Event)>) -> Vec<WorkloadAppend> {
        let mut by: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        for (w, e) in events {
            by.entry(w).or_default().push(e);
        }
        by.into_iter()
            .map(|(workload, events)| {
                WorkloadAppend::at(&workload, self.heads.get(&workload).copied(), events)
                    .rechaining()
            })
            .collect()
    }

    /// Takes the heads of stored appends; returns the events of failed ones.
    pub(super) fn stored(
        &mut self,
        outcomes: Vec<Outcome>,
        appends: Vec<WorkloadAppend>,
    ) -> Vec<(String, Event)> {
        let mut failed = Vec::new();
        for (o, a) in outcomes.into_iter().zip(appends) {
            match o {
                Ok(s) => {
                    if let Some(last) = s.last() {
                        self.heads.insert(
                            a.workload.clone(),
                            Head {
                                seq: last.seq,
                                hash: last.hash,
                            },
                        );
                    }
                }
                Err(e) => {
                    warn!(workload = %a.workload, error = %e, "could not log; will retry");
                    failed.extend(a.events.into_iter().map(|e| (a.workload.clone(), e)));
                }
            }
        }
        failed
    }

    /// How often this node beats: its own interval, or the cluster's pace when that is
    /// longer, never past the longest interval a heartbeat may state.
    pub fn interval_ms(&self) -> u64 {
        self.config
            .heartbeat_ms
            .max(self.pace_ms)
            .min(*super::limits::HEARTBEAT_MS.end())
    }

    /// The scheduler set the cluster's pace (0: none); returns the new interval if it
    /// changed.
    pub fn pace(&mut self, every_ms: u64) -> Option<u64> {
        let before = self.interval_ms();
        self.pace_ms = every_ms;
        let after = self.interval_ms();
        (after != before).then_some(after)
    }

    pub fn heartbeat(
        &self,
        runtime: &str,
        classes: Vec<RuntimeClass>,
        isolation: Vec<IsolationReport>,
    ) -> NodeHeartbeat {
        let used = self
            .containers
            .values()
            .fold(Resources::default(), |acc, c| acc.add(&c.need));
        NodeHeartbeat {
            name: self.config.name.clone(),
            capacity: self.config.capacity,
            free: self.config.capacity.saturating_sub(&used),
            runtime_classes: classes,
            labels: self.config.labels.clone(),
            runtime: runtime.to_owned(),
            running: self.containers.len() as u32,
            interval_ms: self.interval_ms(),
            at: bulkhead_schemas::now_rfc3339(),
            isolation,
            instance: self.config.instance.clone(),
        }
    }
}

fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex_hash).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> NodeCore {
        NodeCore::new(NodeConfig::example("n"))
    }

    #[test]
    fn the_cluster_s_pace_slows_a_node_s_beats_but_never_past_the_longest_interval() {
        let mut c = core();
        let stated = |c: &NodeCore| c.heartbeat("sim", Vec::new(), Vec::new()).interval_ms;
        assert_eq!(stated(&c), 1000);
        assert_eq!(c.pace(500), None, "its own interval is longer: it holds");
        assert_eq!(c.pace(4000), Some(4000));
        assert_eq!(stated(&c), 4000, "a beat states the interval it keeps");
        assert_eq!(c.pace(4000), None, "told again: nothing changes");
        assert_eq!(c.pace(u64::MAX), Some(10_000), "never past the longest");
        assert_eq!(c.pace(0), Some(1000), "no pace: its own again");
        assert_eq!(stated(&c), 1000);
    }

    fn exit(container: &str) -> ExitNotice {
        ExitNotice {
            container: container.into(),
            code: 3,
            reason: "error".into(),
            finished_at: "2026-12-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_start_op_is_taken_once_per_head() {
        let mut c = core();
        assert!(c.take_start("w", 0, 5));
        assert!(!c.take_start("w", 0, 5), "redelivered op");
        assert!(!c.take_start("w", 0, 4), "older op");
        assert!(c.take_start("w", 1, 5), "other replica");
        assert!(
            c.take_start("w", 0, 9),
            "a later placement of the same replica"
        );
    }

    #[test]
    fn a_running_replica_is_not_started_again() {
        let mut c = core();
        c.record("c1".into(), "w", 0, Resources::default());
        assert!(!c.take_start("w", 0, 100));
        c.forget("c1");
        assert!(c.take_start("w", 0, 100));
    }

    #[test]
    fn heartbeat_counts_what_runs() {
        let mut c = core();
        let need = Resources {
            memory_mb: 256,
            cpu_millicores: 100,
            slots: 1,
        };
        c.record("c1".into(), "w", 0, need);
        let hb = c.heartbeat("cri", vec![RuntimeClass::Runc], Vec::new());
        assert_eq!(hb.free.memory_mb, 768);
        assert_eq!(hb.free.slots, 9);
        assert_eq!(hb.running, 1);
    }

    /// The exit of a container whose start is under way is never lost, however many exits
    /// of unknown containers the node saw before (they used to pile up until the map was
    /// cleared whole at 4,096, taking the exit with them).
    #[test]
    fn an_early_exit_survives_whatever_exits_of_unknown_containers_came_before() {
        let mut c = core();
        for i in 0..MAX_EARLY_EXITS - 1 {
            assert!(
                !c.early_exit(exit(&format!("old-{i}"))),
                "no start under way"
            );
        }
        assert_eq!(c.early_exits(), 0, "nothing piles up");
        assert!(c.take_start("w", 0, 1));
        assert!(c.early_exit(exit("mine")), "kept for the start under way");
        assert!(c.early_exit(exit("stranger")));
        let got = c.start_done(Some("mine")).expect("the exit came first");
        assert_eq!((got.container.as_str(), got.code), ("mine", 3));
        assert_eq!(
            c.early_exits(),
            0,
            "the rest dropped once no start is under way"
        );
    }

    #[test]
    fn early_exits_are_bounded_dropping_the_oldest() {
        let mut c = core();
        assert!(c.take_start("w", 0, 1));
        for i in 0..MAX_EARLY_EXITS + 10 {
            c.early_exit(exit(&format!("c{i}")));
        }
        assert_eq!(c.early_exits(), MAX_EARLY_EXITS);
        assert!(c.start_done(Some("c0")).is_none(), "the oldest went first");
        assert!(c.take_start("w", 1, 1));
        let last = format!("c{}", MAX_EARLY_EXITS + 9);
        c.early_exit(exit(&last));
        assert!(c.start_done(Some(&last)).is_some());
    }
}
