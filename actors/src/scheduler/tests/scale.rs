//! Scale: up places at once, down retires the highest replicas.

use super::*;
use bulkhead_schemas::api::WorkloadState;

#[test]
fn scale_adds_and_retires_replicas() {
    let mut w = World::new(&["a", "b"]);
    w.cmd(CommandKind::Submit, spec("w", 1));
    w.started("w", 0);
    let c = w.cmd(
        CommandKind::Scale,
        serde_json::json!({"id": "w", "replicas": 3}),
    );
    assert_eq!(c.commands[0].1, Disposition::Ack);
    assert_eq!(starts(&c).len(), 2);
    let wl = w.core.projection.get(&key("w")).unwrap();
    assert_eq!((wl.desired, wl.replicas.len()), (3, 3));
    w.started("w", 1);
    w.started("w", 2);
    let c = w.cmd(
        CommandKind::Scale,
        serde_json::json!({"id": "w", "replicas": 1}),
    );
    let mut stopped: Vec<u32> = stops(&c.ops).into_iter().map(|(_, r)| r).collect();
    stopped.sort();
    assert_eq!(stopped, [1, 2]);
    let wl = w.core.projection.get(&key("w")).unwrap();
    assert_eq!(wl.desired, 1);
    assert_eq!(wl.state(), WorkloadState::Running);
    // Bad scale commands settle without writing anything.
    let before = w.seq;
    for bad in [
        serde_json::json!({"id": "w", "replicas": 5000}),
        serde_json::json!({"id": "nope", "replicas": 2}),
        serde_json::json!({"id": "w"}),
    ] {
        let c = w.cmd(CommandKind::Scale, bad);
        assert_eq!(c.commands[0].1, Disposition::Ack);
    }
    assert_eq!(w.seq, before + 3, "only the command counter moved");
}
