//! The failover core: from the projection of the log, which ended replicas come back
//! (`replica_requested`, after a backoff) or are given up (`gave_up`), and which nodes fell
//! silent (`lost`, for the node and each replica it held). Pure: time is an argument.
//!
//! Decisions are level-triggered: they read the replica's state in the log, not a queue of
//! exits. A replica that ended and has no decision after its ending is undecided, whoever
//! restarts; a decision moves it out of that state. With appends checked against the
//! workload's head, an ending is decided exactly once, even by two failover instances.

use std::collections::{BTreeMap, HashMap};

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::event::{Event, EventBody, GaveUp, Lost, ReplicaRequested};

use crate::log::WorkloadAppend;
use crate::projection::{Projection, Replica, Workload};
use crate::restart::{self, Decision, Ending};

/// The name the failover signs its events with.
pub const SERVICE: &str = "failover";

/// How a replica's copy ended, if it ended in a way the failover decides on.
fn ending(r: &Replica) -> Option<Ending> {
    match r.state {
        WorkloadState::Lost => Some(Ending::Lost),
        WorkloadState::Failed | WorkloadState::Succeeded => Some(Ending::Exited {
            code: r.exit_code.unwrap_or(-1),
        }),
        _ => None,
    }
}

fn cause(r: &Replica, ending: Ending) -> String {
    let reason = r.reason.as_deref().unwrap_or("");
    match ending {
        Ending::Lost => format!("lost: {reason}"),
        Ending::Exited { code } => format!("exited: code {code} ({reason})"),
    }
}

/// The decision event for replica `i`, ended as `ending`; None when the policy leaves it.
fn decide_replica(
    id: &str,
    w: &Workload,
    i: usize,
    r: &Replica,
    ending: Ending,
    now_ms: u64,
) -> Option<EventBody> {
    let spec = w.spec.as_deref()?;
    // The same replica and restart count always draw the same jitter.
    let jitter = restart::jitter_of(&format!("{id}/{i}/{}", r.restarts));
    match restart::decide(&spec.restart, ending, &r.recent_restarts, now_ms, jitter) {
        Decision::Leave => None,
        Decision::GiveUp { reason } => Some(EventBody::GaveUp(GaveUp {
            replica: i as u32,
            reason,
            restarts: r.restarts,
        })),
        Decision::Restart {
            attempt,
            not_before_ms,
        } => Some(EventBody::ReplicaRequested(ReplicaRequested {
            replica: i as u32,
            cause: cause(r, ending),
            attempt,
            not_before: bulkhead_schemas::rfc3339_from_ms(not_before_ms),
        })),
    }
}

/// Whether the failover may act on the workload at all.
fn in_scope(w: &Workload) -> bool {
    w.spec.is_some() && !w.rejected && !w.stop_requested
}

fn event(id: &str, w: &Workload, body: EventBody) -> Event {
    let mut e = Event::new(SERVICE, id, None, body);
    e.traceparent = w.traceparent.as_deref().map(str::to_owned);
    e
}

/// What to append for one workload now: a decision for every ended, undecided replica.
pub fn plan_workload(id: &str, w: &Workload, now_ms: u64) -> Option<WorkloadAppend> {
    if !in_scope(w) {
        return None;
    }
    let events: Vec<Event> = w
        .replicas
        .iter()
        .enumerate()
        .take(w.desired as usize)
        .filter(|(_, r)| !r.gave_up)
        .filter_map(|(i, r)| {
            let body = decide_replica(id, w, i, r, ending(r)?, now_ms)?;
            Some(event(id, w, body))
        })
        .collect();
    (!events.is_empty()).then(|| WorkloadAppend {
        workload: id.to_owned(),
        head: Some(w.head),
        events,
        rechain_on_conflict: false,
    })
}

/// A node is lost: each replica it held (or a drain was moving off it) gets `lost`, and
/// right behind it, in the same append, its restart decision.
pub fn lose_node(
    projection: &Projection,
    node: &str,
    reason: &str,
    now_ms: u64,
) -> Vec<WorkloadAppend> {
    let mut out = Vec::new();
    for (id, w) in projection.iter() {
        if w.spec.is_none() {
            continue;
        }
        let mut events = Vec::new();
        for (i, r) in w.replicas.iter().enumerate() {
            let here = r.holds() && r.node.as_deref() == Some(node);
            let old_copy = r.replacing.as_deref() == Some(node);
            if !here && !old_copy {
                continue;
            }
            events.push(event(
                id,
                w,
                EventBody::Lost(Lost {
                    replica: Some(i as u32),
                    node: node.to_owned(),
                    reason: reason.to_owned(),
                }),
            ));
            if !here || !in_scope(w) || i as u32 >= w.desired {
                continue;
            }
            let lost = Replica {
                state: WorkloadState::Lost,
                reason: Some(reason.into()),
                ..r.clone()
            };
            if let Some(body) = decide_replica(id, w, i, &lost, Ending::Lost, now_ms) {
                events.push(event(id, w, body));
            }
        }
        if !events.is_empty() {
            out.push(WorkloadAppend {
                workload: id.clone(),
                head: Some(w.head),
                events,
                rechain_on_conflict: false,
            });
        }
    }
    out
}

/// Nodes the projection places replicas on.
pub fn nodes_in_use(projection: &Projection) -> Vec<String> {
    let mut nodes: BTreeMap<&str, ()> = BTreeMap::new();
    for (_, w) in projection.iter() {
        for r in &w.replicas {
            if r.holds()
                && let Some(n) = r.node.as_deref()
            {
                nodes.insert(n, ());
            }
            if let Some(n) = r.replacing.as_deref() {
                nodes.insert(n, ());
            }
        }
    }
    nodes.into_keys().map(str::to_owned).collect()
}

/// Which nodes heartbeat, and which fell silent. Times are Unix ms of arrival, so node
/// clocks do not matter.
#[derive(Debug, Default)]
pub struct NodeWatch {
    last: HashMap<String, u64>,
    /// Each node's heartbeat interval, as it last said.
    interval: HashMap<String, u64>,
    /// Declared lost and silent since.
    lost: HashMap<String, u64>,
}

/// A node is lost only after missing this many heartbeats in a row, whatever the timeout.
pub const MISSED_BEATS: u64 = 3;

impl NodeWatch {
    /// A heartbeat arrived from a node beating every `interval_ms` (0: unknown). Returns
    /// true when the node had been declared lost (it is back).
    pub fn beat(&mut self, node: &str, now_ms: u64, interval_ms: u64) -> bool {
        self.last.insert(node.to_owned(), now_ms);
        self.interval.insert(node.to_owned(), interval_ms);
        self.lost.remove(node).is_some()
    }

    /// Watch a node that has not beaten yet (known from the log), as if it beat now.
    pub fn expect(&mut self, node: &str, now_ms: u64) {
        self.last.entry(node.to_owned()).or_insert(now_ms);
    }

    /// Nodes silent for longer than `timeout_ms` (or than [`MISSED_BEATS`] of their own
    /// intervals, when that is longer), each reported once, with its silence.
    pub fn silent(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<(String, u64)> {
        let gone: Vec<(String, u64)> = self
            .last
            .iter()
            .filter(|(n, at)| {
                let every = self.interval.get(*n).copied().unwrap_or(0);
                let limit = timeout_ms.max(every.saturating_mul(MISSED_BEATS));
                now_ms.saturating_sub(**at) > limit && !self.lost.contains_key(*n)
            })
            .map(|(n, at)| (n.clone(), now_ms - at))
            .collect();
        for (n, _) in &gone {
            self.lost.insert(n.clone(), now_ms);
        }
        gone
    }

    pub fn is_lost(&self, node: &str) -> bool {
        self.lost.contains_key(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_schemas::WorkloadSpec;
    use bulkhead_schemas::event::*;

    fn spec(policy: &str, replicas: u32) -> WorkloadSpec {
        serde_json::from_value(serde_json::json!({
            "id": "w", "image": "i", "memory_mb": 10, "cpu_millicores": 5,
            "replicas": replicas,
            "restart": {"policy": policy, "max_restarts": 2, "window_s": 60,
                        "backoff_initial_ms": 100, "backoff_max_ms": 1000}
        }))
        .unwrap()
    }

    struct Log {
        p: Projection,
        seq: u64,
    }

    impl Log {
        fn new(spec: WorkloadSpec) -> Log {
            let mut l = Log {
                p: Projection::default(),
                seq: 0,
            };
            l.put(EventBody::Accepted(Accepted {
                spec,
                cmd_seq: 1,
                pending: None,
            }));
            l
        }
        fn put(&mut self, body: EventBody) {
            self.seq += 1;
            let e = Event::new("t", "w", None, body);
            self.p.apply(self.seq, [0; 32], &e).unwrap();
        }
        fn store(&mut self, a: WorkloadAppend) {
            for e in a.events {
                self.put(e.body);
            }
        }
        fn run(&mut self, replica: u32, node: &str) {
            self.put(EventBody::Scheduled(Scheduled {
                replica,
                node: node.into(),
                runtime_class: Default::default(),
                replaces: None,
            }));
            self.put(EventBody::Started(Started {
                replica,
                node: node.into(),
                container: format!("c{}", self.seq),
            }));
        }
        fn exit(&mut self, replica: u32, node: &str, code: i32) {
            self.put(EventBody::Exited(Exited {
                replica,
                node: node.into(),
                code,
                reason: if code == 0 { "completed" } else { "error" }.into(),
                finished_at: "t".into(),
            }));
        }
        fn w(&self) -> &Workload {
            self.p.get("w").unwrap()
        }
    }

    fn kinds(a: &Option<WorkloadAppend>) -> Vec<&'static str> {
        a.iter()
            .flat_map(|a| a.events.iter().map(Event::kind))
            .collect()
    }

    #[test]
    fn an_exit_is_decided_once_by_policy() {
        let now = bulkhead_schemas::now_ms();
        let mut l = Log::new(spec("on-failure", 2));
        l.run(0, "a");
        l.run(1, "a");
        assert!(plan_workload("w", l.w(), now).is_none(), "all running");
        l.exit(0, "a", 0);
        assert!(
            plan_workload("w", l.w(), now).is_none(),
            "exit 0, on-failure"
        );
        l.exit(1, "a", 3);
        let plan = plan_workload("w", l.w(), now);
        assert_eq!(kinds(&plan), ["replica_requested"]);
        let ev = &plan.as_ref().unwrap().events[0];
        let EventBody::ReplicaRequested(r) = &ev.body else {
            panic!()
        };
        assert_eq!((r.replica, r.attempt), (1, 1));
        assert_eq!(r.cause, "exited: code 3 (error)");
        let nb = bulkhead_schemas::parse_rfc3339_ms(&r.not_before).unwrap();
        assert!(nb >= now + 75 && nb <= now + 100, "backoff {}", nb - now);
        l.store(plan.unwrap());
        // Decided: nothing more until the replica ends again.
        assert!(plan_workload("w", l.w(), now).is_none());
        assert_eq!(l.w().replicas[1].state, WorkloadState::Pending);
        assert_eq!(l.w().replicas[1].last_node.as_deref(), Some("a"));
    }

    #[test]
    fn never_leaves_and_stopped_workloads_are_not_restarted() {
        let now = bulkhead_schemas::now_ms();
        let mut l = Log::new(spec("never", 1));
        l.run(0, "a");
        l.exit(0, "a", 9);
        assert!(plan_workload("w", l.w(), now).is_none());

        let mut l = Log::new(spec("always", 1));
        l.run(0, "a");
        l.put(EventBody::StopRequested(StopRequested {
            cmd_seq: 2,
            grace_secs: None,
        }));
        l.exit(0, "a", 137);
        assert!(plan_workload("w", l.w(), now).is_none());
    }

    #[test]
    fn a_crash_loop_ends_with_gave_up() {
        let now = bulkhead_schemas::now_ms();
        let mut l = Log::new(spec("always", 1));
        for round in 0..2 {
            l.run(0, "a");
            l.exit(0, "a", 1);
            let plan = plan_workload("w", l.w(), now);
            assert_eq!(kinds(&plan), ["replica_requested"], "round {round}");
            l.store(plan.unwrap());
        }
        l.run(0, "a");
        l.exit(0, "a", 1);
        let plan = plan_workload("w", l.w(), now);
        assert_eq!(kinds(&plan), ["gave_up"]);
        l.store(plan.unwrap());
        assert!(
            plan_workload("w", l.w(), now).is_none(),
            "given up for good"
        );
        let v = l.w().view("w");
        assert_eq!(v.state, WorkloadState::Failed);
        assert!(v.reason.unwrap().contains("restart budget exhausted"));
        assert_eq!(v.replicas[0].restarts, 2);
        assert!(v.replicas[0].gave_up);
    }

    #[test]
    fn a_lost_node_loses_its_replicas_and_requests_them_elsewhere() {
        let now = bulkhead_schemas::now_ms();
        let mut l = Log::new(spec("on-failure", 3));
        l.run(0, "a");
        l.run(1, "b");
        l.run(2, "a");
        assert_eq!(nodes_in_use(&l.p), ["a", "b"]);
        let appends = lose_node(&l.p, "a", "silent 3 s", now);
        assert_eq!(appends.len(), 1);
        let kinds: Vec<_> = appends[0].events.iter().map(Event::kind).collect();
        assert_eq!(
            kinds,
            ["lost", "replica_requested", "lost", "replica_requested"]
        );
        for a in appends {
            l.store(a);
        }
        let w = l.w();
        assert_eq!(w.replicas[0].state, WorkloadState::Pending);
        assert_eq!(w.replicas[0].lost_on.as_deref(), Some("a"));
        assert_eq!(w.replicas[1].state, WorkloadState::Running);
        assert!(plan_workload("w", w, now).is_none());
        // A late exit from the lost node is about a copy the replica moved on from.
        l.exit(0, "a", 137);
        assert_eq!(l.w().replicas[0].state, WorkloadState::Pending);
        assert!(lose_node(&l.p, "a", "again", now).is_empty());
    }

    #[test]
    fn never_on_a_lost_node_still_records_the_loss() {
        let now = bulkhead_schemas::now_ms();
        let mut l = Log::new(spec("never", 1));
        l.run(0, "a");
        let appends = lose_node(&l.p, "a", "silent", now);
        let kinds: Vec<_> = appends[0].events.iter().map(Event::kind).collect();
        assert_eq!(kinds, ["lost"]);
        for a in appends {
            l.store(a);
        }
        assert_eq!(l.w().state(), WorkloadState::Lost);
    }

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
}
