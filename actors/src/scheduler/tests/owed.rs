//! Start ops owed: replicas the log brings scheduled that the scheduler stored without getting the outcome.

use super::*;

/// A submission of `replicas` copies decided, its appends stored, and the outcomes the
/// scheduler gets replaced by `outcome`: the events stored, and the commit.
fn stored_but_told(
    w: &mut World,
    replicas: u32,
    outcome: fn() -> LogError,
) -> (Vec<Stored>, Commit) {
    w.seq += 1;
    let mut plan = w.core.decide(&[submit(1000 + w.seq, spec("w", replicas))]);
    w.node_events(&mut plan);
    let out = store_all(&mut plan, &mut w.seq);
    let told = out.iter().map(|_| Err(outcome())).collect();
    let stored = out.into_iter().flat_map(Result::unwrap).collect();
    (stored, w.core.commit(plan, told))
}

fn owed_starts(w: &mut World) -> Vec<(String, u32)> {
    starts_in(&w.core.take_owed())
}

#[test]
fn replicas_stored_by_an_append_that_failed_get_their_start_ops_when_the_log_brings_them() {
    for told in [
        (|| LogError::Refused("a later part failed".into())) as fn() -> LogError,
        || LogError::Conflict,
    ] {
        let mut w = World::new(&["a"]);
        w.core.owe_from_now();
        let (stored, c) = stored_but_told(&mut w, 2, told);
        assert!(starts(&c).is_empty(), "no op for an append that failed");
        // The log brings what was stored: one replica has started meanwhile.
        let mut batch = stored.clone();
        let head = stored.last().unwrap();
        let started = Event::new(
            "node/a",
            &key("w"),
            Some(&head.hash),
            EventBody::Started(Started {
                replica: 1,
                node: "a".into(),
                container: "c1".into(),
                confinement: None,
            }),
        );
        let (_, hash) = started.seal();
        batch.push(Stored {
            seq: head.seq + 1,
            hash,
            event: started,
        });
        w.core.logged(Batch::from(batch));
        assert_eq!(owed_starts(&mut w), [("a".to_owned(), 0)]);
        assert!(owed_starts(&mut w).is_empty(), "taken once");
    }
}

#[test]
fn what_the_scheduler_stored_itself_or_read_before_it_was_active_is_owed_nothing() {
    let mut w = World::new(&["a"]);
    // Rebuilding: the log brings scheduled replicas (a takeover resends those itself).
    let (stored, _) = stored_but_told(&mut w, 1, || LogError::Conflict);
    w.core.logged(Batch::from(stored));
    assert!(owed_starts(&mut w).is_empty());
    // Active: its own append, stored and acknowledged, comes back through the log.
    w.core.owe_from_now();
    let mut plan = w.core.decide(&[submit(2000, spec("v", 2))]);
    let out = store_all(&mut plan, &mut w.seq);
    let again: Vec<Stored> = out.iter().flat_map(|o| o.clone().unwrap()).collect();
    let c = w.core.commit(plan, out);
    assert_eq!(starts(&c).len(), 2);
    w.core.logged(Batch::from(again));
    assert!(owed_starts(&mut w).is_empty());
}
