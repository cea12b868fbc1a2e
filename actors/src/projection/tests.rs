//! The projection event by event: lifecycles, replays, node marks, pinned images.

use super::*;
use crate::aside::Aside;
use crate::ports::log::Stored;
use bulkhead_schemas::WorkloadSpec;
use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::event::*;

fn spec(replicas: u32) -> WorkloadSpec {
    let mut s: WorkloadSpec = serde_json::from_value(
        serde_json::json!({"image": "i", "memory_mb": 10, "cpu_millicores": 5}),
    )
    .unwrap();
    s.replicas = replicas;
    s.id = Some("w".into());
    s
}

fn ev(body: EventBody) -> Event {
    Event::new("test", "w", None, body)
}

/// `accepted` for a workload of `replicas`, nothing pending.
fn accepted(replicas: u32, cmd_seq: u64) -> EventBody {
    EventBody::Accepted(Accepted {
        spec: spec(replicas),
        cmd_seq,
        by: Default::default(),
        pending: None,
    })
}

/// `scheduled` for `replica` on node `n`.
fn scheduled(replica: u32) -> EventBody {
    EventBody::Scheduled(Scheduled {
        replica,
        node: "n".into(),
        runtime_class: Default::default(),
        replaces: None,
    })
}

#[test]
fn images_are_pinned_to_the_scanned_digest() {
    let d = "sha256:abc";
    assert_eq!(
        pin_image("127.0.0.1:5000/bulkhead/app:1", d),
        "127.0.0.1:5000/bulkhead/app@sha256:abc"
    );
    assert_eq!(
        pin_image("127.0.0.1:5000/app", d),
        "127.0.0.1:5000/app@sha256:abc"
    );
    assert_eq!(pin_image("busybox:1.36", d), "busybox@sha256:abc");
    assert_eq!(pin_image("busybox", d), "busybox@sha256:abc");
    assert_eq!(
        pin_image("r/app:1@sha256:def", d),
        "r/app:1@sha256:def",
        "pinned already"
    );
    assert_eq!(
        pin_image("r/app:1", ""),
        "r/app:1",
        "no digest (a failed scan)"
    );
}

#[test]
fn node_events_mark_drains_and_losses_until_undrained_or_joined() {
    let mut p = Projection::default();
    let mut seq = 0;
    let mut on = |p: &mut Projection, body: EventBody| {
        seq += 1;
        let ev = Event::new("test", "n", None, body);
        let before = p.node_marks("n");
        let r = p.apply(seq, [0; 32], &ev);
        assert!(
            matches!(r, Err(Skip::NotWorkload)),
            "not applied as a workload event"
        );
        assert_eq!(p.node_marks("n"), before, "nor does it mark the node");
        p.node_event(&ev);
        p.node_marks("n").status()
    };
    let joined = || {
        EventBody::Joined(NodeJoined {
            capacity: Default::default(),
            runtime_classes: vec![],
            runtime: "sim".into(),
        })
    };
    let lost = || {
        EventBody::Lost(Lost {
            replica: None,
            node: "n".into(),
            reason: "silent".into(),
        })
    };
    assert_eq!(p.node_marks("n").status(), "ready", "never mentioned");
    assert_eq!(on(&mut p, joined()), "ready");
    assert_eq!(
        on(&mut p, EventBody::Draining(NodeDraining { cmd_seq: 1 })),
        "draining"
    );
    assert_eq!(on(&mut p, lost()), "lost+draining");
    assert_eq!(on(&mut p, joined()), "draining", "back, still cordoned");
    let drained = EventBody::Drained(NodeDrained {
        reason: "empty".into(),
    });
    assert_eq!(on(&mut p, drained), "drained");
    let undrained = EventBody::Undrained(NodeUndrained { cmd_seq: 2 });
    assert_eq!(on(&mut p, undrained), "ready");
    assert_eq!(p.node_marks("other").status(), "ready");
}

#[test]
fn lifecycle_moves_state_and_allocations() {
    let mut p = Projection::default();
    let h = [0u8; 32];
    p.apply(1, h, &ev(accepted(2, 9))).unwrap();
    assert_eq!(p.get("w").unwrap().state(), WorkloadState::Pending);
    let ch = p.apply(2, h, &ev(scheduled(0))).unwrap();
    assert!(
        matches!(&ch[..], [Change::Placed { node, need }] if &**node == "n" && need.memory_mb == 10)
    );
    assert_eq!(
        p.get("w").unwrap().state(),
        WorkloadState::Pending,
        "replica 1 still pending"
    );
    p.apply(3, h, &ev(scheduled(1))).unwrap();
    p.apply(
        4,
        h,
        &ev(EventBody::Started(Started {
            replica: 0,
            node: "n".into(),
            container: "c0".into(),
            confinement: None,
        })),
    )
    .unwrap();
    assert_eq!(p.get("w").unwrap().state(), WorkloadState::Scheduled);
    p.apply(
        5,
        h,
        &ev(EventBody::Started(Started {
            replica: 1,
            node: "n".into(),
            container: "c1".into(),
            confinement: None,
        })),
    )
    .unwrap();
    assert_eq!(p.get("w").unwrap().state(), WorkloadState::Running);
    let ch = p
        .apply(
            6,
            h,
            &ev(EventBody::Exited(Exited {
                replica: 0,
                node: "n".into(),
                code: 7,
                reason: "error".into(),
                finished_at: "t".into(),
            })),
        )
        .unwrap();
    assert!(matches!(&ch[..], [Change::Released { .. }]));
    assert_eq!(p.get("w").unwrap().state(), WorkloadState::Running);
    p.apply(
        7,
        h,
        &ev(EventBody::Exited(Exited {
            replica: 1,
            node: "n".into(),
            code: 0,
            reason: "completed".into(),
            finished_at: "t".into(),
        })),
    )
    .unwrap();
    let w = p.get("w").unwrap();
    assert_eq!(w.state(), WorkloadState::Failed);
    assert_eq!(w.replicas[0].exit_code, Some(7));
    assert_eq!(w.events, 7);
    assert_eq!(w.head.seq, 7);
}

#[test]
fn replays_are_skipped_and_unknown_workloads_reported() {
    let mut p = Projection::default();
    let h = [1u8; 32];
    let acc = ev(EventBody::Accepted(Accepted {
        spec: spec(1),
        cmd_seq: 1,
        by: Default::default(),
        pending: Some("no node".into()),
    }));
    p.apply(5, h, &acc).unwrap();
    assert_eq!(p.get("w").unwrap().reason.as_deref(), Some("no node"));
    assert!(matches!(p.apply(5, h, &acc), Err(Skip::Stale { .. })));
    let sch = ev(scheduled(0));
    p.apply(6, h, &sch).unwrap();
    assert!(matches!(p.apply(6, h, &sch), Err(Skip::Stale { .. })));
    let mut other = sch.clone();
    other.subject = "x".into();
    assert!(matches!(
        p.apply(7, h, &other),
        Err(Skip::UnknownWorkload(_))
    ));
    let bad = ev(scheduled(3));
    assert_eq!(p.apply(8, h, &bad), Err(Skip::BadReplica(3)));
}

#[test]
fn stop_ends_pending_replicas_and_releases_placed_ones() {
    let mut p = Projection::default();
    let h = [0u8; 32];
    p.apply(1, h, &ev(accepted(2, 1))).unwrap();
    p.apply(2, h, &ev(scheduled(0))).unwrap();
    p.apply(
        3,
        h,
        &ev(EventBody::StopRequested(StopRequested {
            cmd_seq: 2,
            grace_secs: None,
        })),
    )
    .unwrap();
    assert_eq!(p.get("w").unwrap().pending_replicas().count(), 0);
    assert_eq!(p.get("w").unwrap().state(), WorkloadState::Scheduled);
    let ch = p
        .apply(
            4,
            h,
            &ev(EventBody::Stopped(Stopped {
                replica: 0,
                node: "n".into(),
            })),
        )
        .unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(p.get("w").unwrap().state(), WorkloadState::Stopped);
}

#[test]
fn a_fact_from_a_node_that_never_held_the_replica_is_set_aside() {
    let mut p = Projection::default();
    let mut chain = Chain::default();
    p.ingest(&chain.next(accepted(1, 1)));
    p.ingest(&chain.next(scheduled(0)));
    let forged = EventBody::Exited(Exited {
        replica: 0,
        node: "x".into(),
        code: 0,
        reason: "completed".into(),
        finished_at: "t".into(),
    });
    assert!(p.ingest(&chain.next(forged)).is_none());
    assert_eq!(p.set_aside.by_code().get("not_its_node"), Some(&1));
    assert_eq!(
        p.get("w").unwrap().state(),
        WorkloadState::Scheduled,
        "unchanged"
    );
}

/// Events of workload `w`, each naming the previous one's hash as `prev`.
#[derive(Default)]
struct Chain {
    seq: u64,
    prev: Option<String>,
}

impl Chain {
    fn next(&mut self, body: EventBody) -> Stored {
        let mut event = ev(body);
        event.prev = self.prev.take();
        let (_, hash) = event.seal();
        self.seq += 1;
        self.prev = Some(hex::encode(hash));
        Stored {
            seq: self.seq,
            hash,
            event,
        }
    }
}

/// An event that does not name the workload's head (a writer that skipped the server's
/// sequence check) neither forks nor rewrites the chain: it is set aside.
#[test]
fn an_event_off_the_chain_is_set_aside() {
    let mut p = Projection::default();
    let mut chain = Chain::default();
    p.ingest(&chain.next(accepted(1, 1)));
    let mut forked = chain.next(scheduled(0));
    forked.event.prev = Some(hex::encode([7u8; 32]));
    assert!(p.ingest(&forked).is_none());
    let mut unchained = chain.next(scheduled(0));
    unchained.event.prev = None;
    assert!(p.ingest(&unchained).is_none());
    assert_eq!(p.set_aside.by_code().get("broken_chain"), Some(&2));
    assert_eq!(p.get("w").unwrap().state(), WorkloadState::Pending);
    // A second `accepted` claiming to start the chain again is refused too.
    let again = accepted(1, 2);
    let mut restart = chain.next(again);
    restart.event.prev = None;
    assert!(p.ingest(&restart).is_none());
}

/// A message readers set aside still holds its place in the stream: the workload's head
/// sequence moves past it (what the next append expects), its hash stays the last applied
/// event's (what the next event names). An id taken by set-aside messages alone is
/// remembered, so its first real append expects them too. Without this, one forged
/// message would wedge a workload's chain for good.
#[test]
fn set_aside_messages_hold_their_place_in_the_chain() {
    let mut p = Projection::default();
    let mut chain = Chain::default();
    p.ingest(&chain.next(accepted(1, 1)));
    let applied = p.get("w").unwrap().head;
    // Seq 7: set aside by the verifier (a bad signature); seq 8: by the projection.
    p.note_set_aside(vec![Aside::new(7, "w", "bad_signature", "forged")]);
    let mut off_chain = chain.next(scheduled(0));
    off_chain.seq = 8;
    off_chain.event.prev = Some(hex::encode([9u8; 32]));
    assert!(p.ingest(&off_chain).is_none());
    let head = p.get("w").unwrap().head;
    assert_eq!(head.seq, 8, "past both");
    assert_eq!(head.hash, applied.hash, "still the last applied event's");
    // An id nobody admitted, taken by a set-aside message.
    p.note_set_aside(vec![Aside::new(
        9,
        "bulkhead.evt.default.wl.squatted.accepted",
        "no_authority",
        "a node's accepted",
    )]);
    assert_eq!(p.set_aside_seq("default/squatted"), 9);
    assert_eq!(p.set_aside_seq("default/free"), 0);
}

/// A snapshot's workloads come back in id order, node names shared again; a later copy of
/// an id wins over an earlier one, into an empty projection as into one that holds some.
#[test]
fn a_restore_takes_every_workload_and_the_last_copy_of_an_id() {
    let head = crate::ports::log::Head {
        seq: 1,
        hash: [0; 32],
    };
    let on = |node: &str, cmd_seq: u64| {
        let mut w = Workload::accepted(&spec(1), cmd_seq, head, None, None);
        w.replicas[0].node = Some(Arc::from(node));
        w
    };
    let ids: Vec<String> = (0..100).map(|i| format!("w-{i:03}")).collect();
    // As read from JSON: each workload its own, replicas with room to spare.
    let snapshot = || {
        let mut all: Workloads = ids
            .iter()
            .map(|id| {
                let mut w = on("n1", 1);
                w.replicas.reserve(7);
                (id.clone(), Arc::new(w))
            })
            .collect();
        // A second copy of w-050 right after the first.
        all.insert(51, (ids[50].clone(), Arc::new(on("n2", 2))));
        all
    };

    let mut empty = Projection::default();
    empty.restore(snapshot(), 9);
    let mut holding = Projection::default();
    holding.restore(vec![(ids[0].clone(), Arc::new(on("n3", 3)))], 2);
    holding.restore(snapshot(), 9);

    for p in [&empty, &holding] {
        assert_eq!(p.len(), 100);
        assert_eq!(p.last_seq, 9);
        let keys: Vec<&String> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ids.iter().collect::<Vec<_>>());
        assert_eq!(p.get("w-050").unwrap().cmd_seq, 2);
        assert_eq!(p.get("w-049").unwrap().cmd_seq, 1);
        assert_eq!(p.get("w-000").unwrap().cmd_seq, 1);
        let (a, b) = (p.get("w-001").unwrap(), p.get("w-002").unwrap());
        let node = |w: &Workload| w.replicas[0].node.clone().unwrap();
        assert!(Arc::ptr_eq(&node(a), &node(b)), "node names interned");
        for (_, w) in p.iter() {
            assert_eq!(
                w.replicas.capacity(),
                w.replicas.len(),
                "no spare room kept"
            );
        }
    }
}

/// A snapshot shares the projection's workloads: what it took stays as it was while the
/// projection moves on (the workload changed is copied, the others still shared).
#[test]
fn a_snapshot_keeps_what_it_took_while_the_projection_moves_on() {
    let mut p = Projection::default();
    let h = [0u8; 32];
    for (seq, id) in [(1, "w"), (2, "v")] {
        let mut e = ev(accepted(1, seq));
        e.subject = id.into();
        p.apply(seq, h, &e).unwrap();
    }
    let taken = p.shared();
    p.apply(3, h, &ev(scheduled(0))).unwrap();
    let of = |id: &str| &taken.iter().find(|(k, _)| k == id).unwrap().1;
    assert_eq!(of("w").head.seq, 1, "the snapshot's copy is as it was");
    assert!(of("w").replicas[0].node.is_none());
    assert_eq!(p.get("w").unwrap().head.seq, 3);
    assert_eq!(p.get("w").unwrap().replicas[0].node.as_deref(), Some("n"));
    assert!(
        std::ptr::eq(of("v").as_ref(), p.get("v").unwrap()),
        "an unchanged workload is still shared, not copied"
    );
}
