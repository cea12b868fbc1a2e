//! The failover's decisions, scenario by scenario: exits, crash loops, lost nodes.

use crate::failover::decide::*;
use crate::ports::log::WorkloadAppend;
use crate::projection::{Projection, Workload};
use bulkhead_schemas::WorkloadSpec;
use bulkhead_schemas::api::WorkloadState;
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
            by: Default::default(),
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
            confinement: None,
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
