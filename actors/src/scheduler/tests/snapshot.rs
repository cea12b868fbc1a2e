//! A core restored from a snapshot's workloads holds what a replay of the log holds: the
//! nodes' shares (a drain move's old copy included), the pending queue, the same next
//! placement.

use super::*;

/// The workloads of a core as a snapshot carries them (through JSON and back).
fn through_json(core: &SchedulerCore) -> crate::projection::Workloads {
    let all = core.projection.shared();
    serde_json::from_slice(&serde_json::to_vec(&all).unwrap()).unwrap()
}

fn allocations(core: &SchedulerCore) -> Vec<(String, Resources)> {
    let mut v: Vec<_> = core
        .cluster
        .nodes()
        .iter()
        .map(|n| (n.name.to_string(), n.allocated))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_restored_core_holds_what_the_replay_holds() {
    let mut w = World::new(&["a", "b"]);
    w.core.node_gone("b");
    w.cmd(CommandKind::Submit, spec("moving", 1));
    w.cmd(CommandKind::Submit, spec("two", 2));
    w.started("moving", 0);
    w.started("two", 0);
    // Too large for any node: waits for capacity.
    w.cmd(
        CommandKind::Submit,
        serde_json::json!({"id": "big", "image": "i", "memory_mb": 5000, "cpu_millicores": 10}),
    );
    w.cmd(CommandKind::Submit, spec("gone", 1));
    w.cmd(CommandKind::Stop, serde_json::json!({"id": "gone"}));
    // A drain move under way: the old copy on `a` keeps its share until it stops.
    beat_in(&mut w.core, &hb("b", 1000), 0);
    w.cmd(CommandKind::Drain, serde_json::json!({"node": "a"}));
    let plan = w.core.drain_step();
    w.run(plan);
    assert!(
        w.core
            .projection
            .iter()
            .any(|(_, wl)| wl.replicas.iter().any(|r| r.replacing.is_some())),
        "a move is under way"
    );

    let mut restored = SchedulerCore::default();
    for n in ["a", "b"] {
        beat_in(&mut restored, &hb(n, 1000), 0);
    }
    restored.restore(through_json(&w.core), w.core.projection.last_seq);

    assert_eq!(allocations(&restored), allocations(&w.core));
    assert!(allocations(&restored).iter().any(|(_, r)| r.memory_mb > 0));
    assert_eq!(restored.pending_count(), 1, "the big one waits");
    assert_eq!(restored.projection.len(), w.core.projection.len());
    for (id, wl) in w.core.projection.iter() {
        let back = restored.projection.get(id).expect("restored");
        assert_eq!(back.head, wl.head, "{id}: the chain head");
        assert_eq!(
            format!("{:?}", back.replicas),
            format!("{:?}", wl.replicas),
            "{id}: its replicas"
        );
    }
    // The same next placement from both.
    let next = |core: &mut SchedulerCore| {
        let cmd = Command {
            cmd_seq: 9999,
            stored_ms: 1_700_000_000_000,
            kind: CommandKind::Submit,
            tenant: T.into(),
            payload: spec("next", 1).to_string().into_bytes(),
            traceparent: None,
            signature: None,
        };
        let mut plan = core.decide(&[cmd]);
        let mut seq = 10_000;
        let out = store_all(&mut plan, &mut seq);
        starts(&core.commit(plan, out))
    };
    assert_eq!(next(&mut restored), next(&mut w.core));
}
