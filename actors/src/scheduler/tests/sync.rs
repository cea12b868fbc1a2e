//! The nodes' views: who is told what the log says it holds, and why.

use super::*;
use bulkhead_schemas::SyncReason;
use bulkhead_schemas::event::Lost;

fn node_lost(node: &str) -> Event {
    let body = EventBody::Lost(Lost {
        replica: None,
        node: node.into(),
        reason: "silent for 5000 ms".into(),
    });
    Event::new("failover/main", node, None, body)
}

fn reasons(w: &mut World) -> Vec<(String, SyncReason)> {
    w.core
        .take_syncs()
        .into_iter()
        .flat_map(|(n, ops)| {
            ops.into_iter().filter_map(move |op| match op {
                NodeOp::Sync { view } => Some((n.to_string(), view.reason)),
                _ => None,
            })
        })
        .collect()
}

#[test]
fn an_empty_node_declared_lost_is_told_so_and_leaves_placement_until_it_beats() {
    let mut w = World::new(&["a", "b"]);
    w.core.node_event(&node_lost("a"));
    assert_eq!(reasons(&mut w), [("a".to_owned(), SyncReason::Lost)]);
    assert!(reasons(&mut w).is_empty(), "taken once");
    let c = w.cmd(CommandKind::Submit, spec("w", 2));
    assert_eq!(starts(&c), [("b".to_owned(), 0), ("b".to_owned(), 1)]);
    beat_in(&mut w.core, &hb("a", 1000), 10);
    let c = w.cmd(CommandKind::Submit, spec("v", 2));
    assert!(
        starts(&c).iter().any(|(n, _)| n == "a"),
        "back in placement"
    );
}

#[test]
fn a_loss_outranks_a_join_in_the_one_view_a_node_is_sent() {
    let mut w = World::new(&["a"]);
    let joined = joined("a");
    w.core.node_event(&joined);
    w.core.node_event(&node_lost("a"));
    w.core.node_event(&joined);
    assert_eq!(reasons(&mut w), [("a".to_owned(), SyncReason::Lost)]);
}
