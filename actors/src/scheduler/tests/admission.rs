//! Admission: placing, redeliveries, reused ids, invalid submissions, waiting for capacity.

use super::*;
use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::ids;
use bulkhead_schemas::spec::RejectCode;

#[test]
fn admits_places_and_emits_start_ops_with_chain_heads() {
    let mut core = SchedulerCore::default();
    beat_in(&mut core, &hb("n1", 1000), 0);
    let mut plan = core.decide(&[submit(1, serde_json::json!({"id": "a", "image": "i", "memory_mb": 100, "cpu_millicores": 10, "replicas": 2}))]);
    assert_eq!(plan.appends.len(), 1);
    let kinds: Vec<_> = plan.appends[0].events.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, ["accepted", "scheduled", "scheduled"]);
    let mut seq = 0;
    let outcomes = store_all(&mut plan, &mut seq);
    let last_hash = match &outcomes[0] {
        Ok(s) => s[2].hash,
        Err(e) => panic!("{e}"),
    };
    let commit = core.commit(plan, outcomes);
    assert_eq!(commit.commands, [(1, Disposition::Ack)]);
    let ops = &commit.ops[&Arc::from("n1")];
    assert_eq!(ops.len(), 2);
    match &ops[1] {
        NodeOp::Start {
            workload,
            replica,
            head,
            ..
        } => {
            assert_eq!((workload.as_str(), *replica, head.seq), ("t/a", 1, 3));
            assert_eq!(head.hash, hex::encode(last_hash));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(core.cluster.get("n1").unwrap().allocated.memory_mb, 200);
    assert_eq!(
        core.projection.get(&key("a")).unwrap().state(),
        WorkloadState::Scheduled
    );
    assert_eq!(
        core.unstarted_ops()[&Arc::from("n1")].len(),
        2,
        "both replicas await their start"
    );
}

#[test]
fn redelivered_submission_is_not_placed_twice_and_reused_ids_are_rejected() {
    let mut core = SchedulerCore::default();
    beat_in(&mut core, &hb("n1", 1000), 0);
    let spec = serde_json::json!({"image": "i", "memory_mb": 100, "cpu_millicores": 10});
    let mut seq = 0;
    let mut plan = core.decide(&[submit(5, spec.clone())]);
    let out = store_all(&mut plan, &mut seq);
    core.commit(plan, out);
    // same stored message again (redelivery): same derived id, nothing to write
    let plan = core.decide(&[submit(5, spec.clone())]);
    assert!(plan.appends.is_empty());
    assert_eq!(plan.commands, [(5, plan::Settle::Done)]);
    // same explicit id from another command: rejected under the command's own id
    let mut with_id = spec.clone();
    with_id["id"] = "x".into();
    let mut plan = core.decide(&[submit(6, with_id.clone()), submit(7, with_id)]);
    assert_eq!(plan.appends.len(), 2);
    assert_eq!(plan.appends[0].workload, key("x"));
    assert_eq!(plan.appends[1].events[0].kind(), "rejected");
    assert_eq!(
        plan.appends[1].workload,
        key(&ids::derived_workload_id(7, 1_700_000_000_000))
    );
    let out = store_all(&mut plan, &mut seq);
    core.commit(plan, out);
    assert_eq!(core.cluster.get("n1").unwrap().allocated.memory_mb, 200);
}

#[test]
fn invalid_submissions_are_rejected_under_their_id_when_usable() {
    let mut core = SchedulerCore::default();
    let plan = core.decide(&[
        submit(
            1,
            serde_json::json!({"id": "bad-mem", "image": "i", "memory_mb": 0, "cpu_millicores": 1}),
        ),
        Command {
            payload: b"garbage".to_vec(),
            ..submit(2, serde_json::json!({}))
        },
    ]);
    assert_eq!(plan.appends[0].workload, key("bad-mem"));
    match &plan.appends[0].events[0].body {
        EventBody::Rejected(r) => assert_eq!(r.rejection.field.as_deref(), Some("memory_mb")),
        other => panic!("{other:?}"),
    }
    match &plan.appends[1].events[0].body {
        EventBody::Rejected(r) => assert_eq!(r.rejection.code, RejectCode::NotJson),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unplaceable_workloads_wait_with_a_reason_and_are_placed_when_capacity_appears() {
    let mut core = SchedulerCore::default();
    let mut seq = 0;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut cmd = submit(
        1,
        serde_json::json!({"id": "p", "image": "i", "memory_mb": 500, "cpu_millicores": 10}),
    );
    cmd.traceparent = Some(tp.into());
    let mut plan = core.decide(&[cmd]);
    match &plan.appends[0].events[0].body {
        EventBody::Accepted(a) => assert!(
            a.pending.as_deref().unwrap().contains("no ready node"),
            "{:?}",
            a.pending
        ),
        other => panic!("{other:?}"),
    }
    let out = store_all(&mut plan, &mut seq);
    core.commit(plan, out);
    assert_eq!(
        core.projection.get(&key("p")).unwrap().state(),
        WorkloadState::Pending
    );
    assert!(
        core.place_pending(100, bulkhead_schemas::now_ms())
            .appends
            .is_empty(),
        "nothing changed, no pass"
    );
    beat_in(&mut core, &hb("n1", 1000), 0);
    let mut plan = core.place_pending(100, bulkhead_schemas::now_ms());
    assert_eq!(plan.appends.len(), 1);
    assert_eq!(plan.appends[0].head.map(|h| h.seq), Some(1));
    // The later placement stays in the admission's trace: event and start op.
    assert_eq!(plan.appends[0].events[0].traceparent.as_deref(), Some(tp));
    let out = store_all(&mut plan, &mut seq);
    let commit = core.commit(plan, out);
    assert_eq!(commit.placed, 1);
    let op_tp = commit.ops.values().flatten().find_map(|op| match op {
        NodeOp::Start { traceparent, .. } => traceparent.clone(),
        _ => None,
    });
    assert_eq!(op_tp.as_deref(), Some(tp));
    assert_eq!(
        core.projection.get(&key("p")).unwrap().state(),
        WorkloadState::Scheduled
    );
    assert_eq!(core.pending_count(), 0);
}

#[test]
fn conflicting_new_workload_is_acked_and_failed_appends_retried() {
    let mut core = SchedulerCore::default();
    let plan = core.decide(&[
        submit(
            1,
            serde_json::json!({"id": "a", "image": "i", "memory_mb": 1, "cpu_millicores": 1}),
        ),
        submit(
            2,
            serde_json::json!({"id": "b", "image": "i", "memory_mb": 1, "cpu_millicores": 1}),
        ),
    ]);
    let commit = core.commit(
        plan,
        vec![
            Err(LogError::Conflict),
            Err(LogError::Refused("timeout".into())),
        ],
    );
    assert!(
        matches!(
            commit.commands.as_slice(),
            [(1, Disposition::Ack), (2, Disposition::Retry(why))] if why.contains("timeout")
        ),
        "{:?}",
        commit.commands
    );
}

#[test]
fn a_workload_of_the_most_replicas_puts_each_on_a_node_of_its_own() {
    use bulkhead_schemas::spec::MAX_REPLICAS;
    let mut core = SchedulerCore::default();
    for i in 0..MAX_REPLICAS {
        beat_in(&mut core, &hb(&format!("n{i}"), 100_000), 0);
    }
    let json = serde_json::json!({"id": "wide", "image": "i", "memory_mb": 100,
        "cpu_millicores": 10, "replicas": MAX_REPLICAS, "placement": "binpack"});
    let mut plan = core.decide(&[submit(1, json.clone())]);
    let mut seq = 0;
    let outcomes = store_all(&mut plan, &mut seq);
    let commit = core.commit(plan, outcomes);
    assert_eq!(commit.ops.len(), MAX_REPLICAS as usize, "one node each");
    assert!(commit.ops.values().all(|ops| ops.len() == 1));
    // One more replica than nodes: the last shares a node (avoiding is soft).
    let mut core2 = SchedulerCore::default();
    for i in 0..MAX_REPLICAS - 1 {
        beat_in(&mut core2, &hb(&format!("n{i}"), 100_000), 0);
    }
    let mut plan = core2.decide(&[submit(1, json)]);
    let outcomes = store_all(&mut plan, &mut seq);
    let commit = core2.commit(plan, outcomes);
    assert_eq!(commit.ops.len(), MAX_REPLICAS as usize - 1);
    assert_eq!(
        commit.ops.values().map(Vec::len).sum::<usize>(),
        MAX_REPLICAS as usize
    );
}
