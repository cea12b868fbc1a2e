//! The event log's appends against a real nats-server: events stored by an attempt whose
//! acknowledgement was lost, sent again re-chained (as a node sends its facts), are found
//! stored by their ids, reported stored without a hash the log does not hold, and the
//! writer's next append chains onto what the log holds.

mod common;

use bulkhead::bus::Bus;
use bulkhead_actors::ports::log::{EventLog, Head, WorkloadAppend};
use bulkhead_schemas::event::{Accepted, Event, EventBody, Scheduled};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::{RuntimeClass, subjects};
use common::*;

fn accepted(w: &str) -> Event {
    let body = EventBody::Accepted(Accepted {
        spec: serde_json::from_value(spec(Some("w"))).unwrap(),
        cmd_seq: 1,
        by: Default::default(),
        pending: None,
    });
    Event::new("scheduler", w, None, body)
}

fn scheduled(w: &str) -> Event {
    let body = EventBody::Scheduled(Scheduled {
        replica: 0,
        node: "n1".into(),
        runtime_class: RuntimeClass::Runc,
        replaces: None,
    });
    Event::new("scheduler", w, None, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_before_their_retry_are_not_given_the_retrys_hash() {
    let env = env().await;
    let creds = env.data.creds(Role::Scheduler, "scheduler").unwrap();
    let bus = Bus::connect_as(&env.server.url, &creds).await.unwrap();
    let log = bus.log().unwrap();
    let w = key("w");
    let event = accepted(&w);

    let first = log
        .append(vec![WorkloadAppend::new(&w, vec![event.clone()])])
        .await;
    let stored = first[0].as_ref().unwrap()[0].clone();
    // The same event again, from a writer that never got that outcome: the log's head has
    // moved (by the event itself), the append re-chains onto it, and the copy, another
    // `prev`, finds its id stored.
    let again = log
        .append(vec![WorkloadAppend::new(&w, vec![event]).rechaining()])
        .await;
    let again = again[0].as_ref().expect("stored already is stored");
    assert!(
        again.iter().all(|s| s.hash == stored.hash),
        "no hash but the one stored: {again:?} against {stored:?}"
    );
    let held = env.events(&subjects::workload_events(&w)).await;
    assert_eq!(held.len(), 1, "stored once");

    // The writer's next append, after the head it knows (an older one, or the stored one),
    // chains onto the stored event.
    let next = log
        .append(vec![
            WorkloadAppend::new(&w, vec![scheduled(&w)]).rechaining(),
        ])
        .await;
    let next = next[0].as_ref().unwrap();
    let held = env.events(&subjects::workload_events(&w)).await;
    assert_eq!(held.len(), 2);
    assert_eq!(held[1].2.prev, Some(hex::encode(stored.hash)));
    assert_eq!(next[0].seq, held[1].0);
    let head = bus.head(&w).await.unwrap().unwrap();
    assert_eq!(
        head,
        Head {
            seq: next[0].seq,
            hash: next[0].hash
        }
    );
}

/// A reader of the log counts how far behind its end it reads, starting from the whole
/// tail, and comes down to none once it has read everything: the scheduler takes no
/// commands while it is far behind, so a count stuck above zero would hold them all up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_counts_what_it_has_yet_to_read() {
    let env = env().await;
    let creds = env.data.creds(Role::Scheduler, "scheduler").unwrap();
    let bus = Bus::connect_as(&env.server.url, &creds).await.unwrap();
    let log = bus.log().unwrap();
    let start = env.last_seq(subjects::EVT_ALL).await;
    for round in 0..6 {
        let appends = (0..500)
            .map(|i| {
                let w = key(&format!("w{round}-{i}"));
                WorkloadAppend::new(&w, vec![accepted(&w)])
            })
            .collect();
        for stored in log.append(appends).await {
            stored.unwrap();
        }
    }
    let mut follower = bulkhead::follow::Follower::start(&bus, start + 1)
        .await
        .unwrap();
    let mut behind = follower.behind.clone();
    assert_eq!(follower.end_at_start, start + 3000);
    let read = follower.catch_up(|_| {}).await;
    assert_eq!(read, 3000, "every event appended, read");
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        behind.wait_for(|&n| n == 0),
    )
    .await
    .expect("the count of what is left to read came down to none")
    .unwrap();
}
