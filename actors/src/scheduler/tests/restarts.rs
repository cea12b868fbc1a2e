//! Restarts and lost nodes as placement sees them: backoffs, other nodes, never the lost one.

use super::*;
use bulkhead_schemas::event::{Exited, Lost, ReplicaRequested};

#[test]
fn a_restart_waits_out_its_backoff_and_prefers_another_node() {
    let mut w = World::new(&["a", "b"]);
    w.cmd(CommandKind::Submit, spec("w", 1));
    let first = w.node_of("w", 0);
    w.started("w", 0);
    w.logged(
        "w",
        EventBody::Exited(Exited {
            replica: 0,
            node: first.clone(),
            code: 1,
            reason: "error".into(),
            finished_at: "t".into(),
        }),
    );
    let now = bulkhead_schemas::now_ms();
    w.logged(
        "w",
        EventBody::ReplicaRequested(ReplicaRequested {
            replica: 0,
            cause: "exited".into(),
            attempt: 1,
            not_before: bulkhead_schemas::rfc3339_from_ms(now + 5_000),
        }),
    );
    assert!(w.core.placement_due(now), "new work is due for a pass");
    let plan = w.core.place_pending(100, now);
    assert!(plan.appends.is_empty(), "still backing off");
    assert_eq!(w.core.next_due_ms(), Some(now + 5_000));
    assert!(!w.core.placement_due(now + 1_000));
    assert!(w.core.placement_due(now + 5_000));
    let plan = w.core.place_pending(100, now + 5_000);
    let c = w.run(plan);
    let again = starts(&c);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].0, first, "placed away from the node it failed on");
}

#[test]
fn a_replica_lost_with_its_node_never_returns_there() {
    let mut w = World::new(&["a", "b"]);
    w.cmd(CommandKind::Submit, spec("w", 1));
    let first = w.node_of("w", 0);
    w.started("w", 0);
    // Only the lost node has room: the replica waits rather than go back there.
    let other = if first == "a" { "b" } else { "a" };
    w.core.node_gone(other);
    w.logged(
        "w",
        EventBody::Lost(Lost {
            replica: Some(0),
            node: first.clone(),
            reason: "silent".into(),
        }),
    );
    w.logged(
        "w",
        EventBody::ReplicaRequested(ReplicaRequested {
            replica: 0,
            cause: "lost".into(),
            attempt: 1,
            not_before: bulkhead_schemas::now_rfc3339(),
        }),
    );
    let now = bulkhead_schemas::now_ms() + 1;
    assert!(w.core.place_pending(100, now).appends.is_empty());
    beat_in(&mut w.core, &hb(other, 1000), 0);
    let plan = w.core.place_pending(100, now);
    let c = w.run(plan);
    assert_eq!(starts(&c), [(other.to_owned(), 0)]);
}
