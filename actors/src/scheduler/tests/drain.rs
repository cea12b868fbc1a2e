//! Drains: one move at a time, the old copy stops after the new one runs, held through restarts.

use super::*;
use bulkhead_schemas::api::WorkloadState;

#[test]
fn drain_moves_one_replica_at_a_time_and_stops_the_old_copy_after_the_new_one_runs() {
    let mut w = World::new(&["a", "b"]);
    w.core.node_gone("b");
    w.cmd(CommandKind::Submit, spec("w", 2));
    assert_eq!(w.node_of("w", 0), "a");
    assert_eq!(w.node_of("w", 1), "a");
    w.started("w", 0);
    w.started("w", 1);
    beat_in(&mut w.core, &hb("b", 1000), 0);
    w.cmd(CommandKind::Drain, serde_json::json!({"node": "a"}));
    assert!(w.core.cluster.get("a").unwrap().cordoned);
    let plan = w.core.drain_step();
    let c = w.run(plan);
    assert_eq!(starts(&c), [("b".to_owned(), 0)], "one move at a time");
    assert!(w.core.drain_step().appends.is_empty(), "waits for the move");
    let wl = w.core.projection.get(&key("w")).unwrap();
    assert_eq!(wl.replicas[0].replacing.as_deref(), Some("a"));
    assert!(w.core.take_replaced().is_empty(), "old copy runs on");
    w.started("w", 0);
    assert_eq!(stops(&w.core.take_replaced()), [("a".to_owned(), 0)]);
    w.logged(
        "w",
        EventBody::Stopped(bulkhead_schemas::event::Stopped {
            replica: 0,
            node: "a".into(),
        }),
    );
    let wl = w.core.projection.get(&key("w")).unwrap();
    assert_eq!(wl.replicas[0].state, WorkloadState::Running, "the new copy");
    assert_eq!(wl.replicas[0].replacing, None);
    let plan = w.core.drain_step();
    let c = w.run(plan);
    assert_eq!(starts(&c), [("b".to_owned(), 1)]);
    w.started("w", 1);
    w.logged(
        "w",
        EventBody::Stopped(bulkhead_schemas::event::Stopped {
            replica: 1,
            node: "a".into(),
        }),
    );
    let plan = w.core.drain_step();
    assert!(plan.appends.is_empty());
    assert_eq!(plan.node_events.len(), 1);
    assert_eq!(plan.node_events[0].1.kind(), "drained");
    assert_eq!(w.core.cluster.get("a").unwrap().allocated.slots, 0);
    assert_eq!(w.core.cluster.get("b").unwrap().allocated.slots, 2);
    // Nothing new lands on a drained node.
    let c = w.cmd(CommandKind::Submit, spec("v", 1));
    assert_eq!(starts(&c), [("b".to_owned(), 0)]);
}

#[test]
fn a_drain_outlives_a_restart_of_the_node_and_only_an_undrain_lifts_it() {
    let mut w = World::new(&["a", "b"]);
    w.cmd(CommandKind::Drain, serde_json::json!({"node": "a"}));
    let plan = w.core.drain_step();
    let c = w.run(plan);
    assert!(c.ops.is_empty());
    assert!(w.core.drained.contains("a"), "empty: drained at once");
    // The node restarts: joined, heartbeats.
    let joined = joined("a");
    w.core.node_event(&joined);
    beat_in(&mut w.core, &hb("a", 1000), 0);
    let c = w.cmd(CommandKind::Submit, spec("v", 2));
    assert_eq!(starts(&c), [("b".to_owned(), 0), ("b".to_owned(), 1)]);

    let undrain = |w: &mut World, node: &str| {
        w.seq += 1;
        w.core.decide(&[Command {
            cmd_seq: 1000 + w.seq,
            stored_ms: 1_700_000_000_000,
            kind: CommandKind::Undrain,
            tenant: String::new(),
            payload: serde_json::json!({ "node": node }).to_string().into_bytes(),
            traceparent: None,
            signature: None,
        }])
    };
    for quiet in ["b", "nope"] {
        let plan = undrain(&mut w, quiet);
        assert!(
            plan.node_events.is_empty() && plan.appends.is_empty(),
            "{quiet}"
        );
        assert_eq!(plan.commands.len(), 1, "the command is settled");
    }
    let plan = undrain(&mut w, "a");
    assert_eq!(plan.node_events.len(), 1);
    assert_eq!(plan.node_events[0].1.kind(), "undrained");
    assert_eq!(plan.node_events[0].1.subject, "a");
    w.run(plan);
    assert!(!w.core.cluster.get("a").unwrap().cordoned);
    assert!(!w.core.drained.contains("a"));
    let c = w.cmd(CommandKind::Submit, spec("u", 1));
    assert_eq!(starts(&c), [("a".to_owned(), 0)], "the emptier node again");
}
