//! Stop: after the head, to every node holding a copy.

use super::*;
use crate::projection::Head;
use bulkhead_schemas::event::hash_bytes;

#[test]
fn stop_writes_stop_requested_after_the_head_and_stops_placed_replicas() {
    let mut core = SchedulerCore::default();
    beat_in(&mut core, &hb("n1", 1000), 0);
    let mut seq = 0;
    let mut plan = core.decide(&[submit(
        1,
        serde_json::json!({"id": "s", "image": "i", "memory_mb": 1, "cpu_millicores": 1}),
    )]);
    let out = store_all(&mut plan, &mut seq);
    core.commit(plan, out);
    let head = core.projection.get(&key("s")).unwrap().head;
    let stop = Command {
        kind: CommandKind::Stop,
        payload: br#"{"id":"s"}"#.to_vec(),
        ..submit(2, serde_json::json!({}))
    };
    let mut plan = core.decide(std::slice::from_ref(&stop));
    assert_eq!(plan.appends[0].head, Some(head));
    let out = store_all(&mut plan, &mut seq);
    let commit = core.commit(plan, out);
    assert!(matches!(
        &commit.ops[&Arc::from("n1")][..],
        [NodeOp::Stop { replica: 0, .. }]
    ));
    // a second stop is a no-op
    let plan = core.decide(&[stop]);
    assert!(plan.appends.is_empty());
    let _ = Head {
        seq: 0,
        hash: hash_bytes(b""),
    };
}
