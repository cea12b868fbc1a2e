//! The event log's appends against a real nats-server: events stored by an attempt whose
//! acknowledgement was lost, sent again re-chained (as a node sends its facts), are found
//! stored by their ids, reported stored without a hash the log does not hold, and the
//! writer's next append chains onto what the log holds. A reader counts what it has yet to
//! read, and passes by its own service's appends. A log fenced by a lease left unrenewed
//! stops writing (and its ops sending) no later than the lease's key expires.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead::bus::{Bus, NatsOps};
use bulkhead::follow::{Follower, Resume};
use bulkhead::lease::Lease;
use bulkhead_actors::ports::SinkError;
use bulkhead_actors::ports::log::{EventLog, Head, LogError, WorkloadAppend};
use bulkhead_actors::ports::ops::OpsSink;
use bulkhead_schemas::event::{Accepted, Event, EventBody, Lost, Scheduled};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::scan::ScanJob;
use bulkhead_schemas::{NodeOp, RuntimeClass, subjects};
use common::*;

fn accepted(w: &str) -> Event {
    let body = EventBody::Accepted(Accepted {
        spec: serde_json::from_value(spec(Some(id_of(w)))).unwrap(),
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
    let mut follower = Follower::start(&bus, start + 1).await.unwrap();
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

/// A service's reader passes by the events its own log stored (it applied them as they
/// were stored) and reads every other writer's; an own event whose stored bytes are not
/// what the service noted is read and verified as any other. Without the passing, every
/// event comes through the reader; without the hash check, the forged note hides one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_passes_its_services_own_appends_by_and_reads_the_rest() {
    let env = env().await;
    let creds = env.data.creds(Role::Scheduler, "scheduler").unwrap();
    let bus = Bus::connect_as(&env.server.url, &creds).await.unwrap();
    let resume = Resume::fresh(&bus.identity().unwrap().creds.admins);
    let own = resume.own.clone();
    let mine = bus.log().unwrap().noting(own.clone());
    // The same key, not noting: as a scheduler before a takeover would have written.
    let theirs = bus.log().unwrap();
    let start = env.last_seq(subjects::EVT_ALL).await;
    let two = |w: &str| vec![accepted(w), scheduled(w)];
    let appends = |who: &str, n: usize| -> Vec<WorkloadAppend> {
        (0..n)
            .map(|i| {
                let w = key(&format!("{who}-{i}"));
                WorkloadAppend::new(&w, two(&w))
            })
            .collect()
    };
    for stored in mine.append(appends("mine", 20)).await {
        assert_eq!(stored.unwrap().len(), 2);
    }
    for stored in theirs.append(appends("theirs", 10)).await {
        stored.unwrap();
    }
    assert_eq!(own.len(), 40, "each stored event noted");
    // A note the log does not bear out, at the next sequence (the other log's event).
    let forged = env.last_seq(subjects::EVT_ALL).await + 1;
    own.note([(forged, [7; 32])]);
    let w = key("noted-wrongly");
    theirs
        .append(vec![WorkloadAppend::new(&w, vec![accepted(&w)])])
        .await
        .remove(0)
        .unwrap();

    // From the log's first message: the enrolments that make the keys known.
    let mut follower = Follower::resume(&bus, 1, resume).await.unwrap();
    assert_eq!(follower.end_at_start, start + 61);
    let mut read = Vec::new();
    let mut passed = 0;
    follower
        .catch_up(|batch| {
            assert!(batch.set_aside.is_empty(), "{:?}", batch.set_aside);
            read.extend(batch.events.iter().map(|s| s.event.subject.clone()));
            passed += batch.own.count;
        })
        .await;
    assert_eq!(passed, 40, "the service's own events passed by");
    assert_eq!(read.len(), 21, "every other event read: {read:?}");
    assert!(
        read.iter()
            .all(|s| s.contains("theirs") || s.contains("noted-wrongly")),
        "{read:?}"
    );
    assert!(read.iter().any(|s| s.contains("noted-wrongly")));
    assert!(own.is_empty(), "what was passed is forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_and_ops_fenced_by_a_lease_left_unrenewed_stop_writing_before_another_can_take_it() {
    let env = env().await;
    let creds = env.data.creds(Role::Scheduler, "scheduler").unwrap();
    let bus = Bus::connect_as(&env.server.url, &creds).await.unwrap();
    let key_name = subjects::SCHEDULER_LEASE_KEY;
    let ttl = bulkhead::bus::Topology::default().lease_ttl;
    let lease = Lease::acquire(&bus, key_name, "s1", ttl).await.unwrap();
    let fence = lease.fence.clone();
    let log = bus.log().unwrap().fenced(fence.clone());
    let w = key("w");
    let first = log
        .append(vec![WorkloadAppend::new(&w, vec![accepted(&w)])])
        .await;
    let head = first[0].as_ref().expect("written while the lease holds")[0].clone();
    let ops = NatsOps::new(&bus).unwrap().fenced(fence.clone());
    let pace = || {
        BTreeMap::from([(
            Arc::<str>::from("n1"),
            vec![NodeOp::Pace { every_ms: 2000 }],
        )])
    };
    assert!(
        ops.send(pace()).await.is_empty(),
        "sent while the lease holds"
    );
    let stored = |stream: &'static str| {
        let js = env.bus.js.clone();
        async move {
            js.get_stream(stream)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages
        }
    };
    let ops_before = stored(subjects::OPS_STREAM).await;
    assert_eq!(ops_before, 1);
    // Renewed every third of its TTL, it holds past the TTL.
    tokio::time::sleep(ttl + ttl / 3).await;
    assert!(fence.holds(), "renewed");

    // Renewals stop (the lease's task ends with it, as a process that is not run renews
    // nothing). Both looked at every 10 ms: the fence gives out no later than the key
    // expires, which is when another instance could take the lease.
    drop(lease);
    let store = bus.js.get_key_value(subjects::LEASES_BUCKET).await.unwrap();
    let started = std::time::Instant::now();
    let (mut fenced_at, mut expired_at) = (None, None);
    for look in 0u32.. {
        if fenced_at.is_none() && !fence.holds() {
            fenced_at = Some(look);
        }
        if expired_at.is_none() && store.get(key_name).await.unwrap().is_none() {
            expired_at = Some(look);
        }
        if fenced_at.is_some() && expired_at.is_some() {
            break;
        }
        assert!(started.elapsed() < 3 * ttl, "neither gave out in time");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        fenced_at <= expired_at,
        "fenced at look {fenced_at:?}, the key expired at look {expired_at:?}"
    );

    // Fenced out: an append and a node event fail as the log unavailable, naming the lease,
    // and nothing more is stored.
    let before = env.last_seq("bulkhead.evt.>").await;
    let head = Head {
        seq: head.seq,
        hash: head.hash,
    };
    let out = log
        .append(vec![WorkloadAppend::after(&w, head, vec![scheduled(&w)])])
        .await;
    match &out[0] {
        Err(e @ LogError::Unavailable(_)) => {
            assert!(e.to_string().contains("lease ran out"), "{e}")
        }
        other => panic!("written past the fence: {other:?}"),
    }
    let lost = Event::new(
        "scheduler",
        "n1",
        None,
        EventBody::Lost(Lost {
            replica: None,
            node: "n1".into(),
            reason: "a stale decision".into(),
        }),
    );
    assert!(matches!(
        log.publish_node(lost).await,
        Err(LogError::Unavailable(_))
    ));
    assert_eq!(env.last_seq("bulkhead.evt.>").await, before);

    // Nor do its ops go out: a node's op, a scan job.
    let failed = ops.send(pace()).await;
    assert!(
        matches!(&failed[..], [(n, e @ SinkError::Unavailable(_))] if &**n == "n1" && e.to_string().contains("lease ran out")),
        "sent past the fence: {failed:?}"
    );
    let scans_before = stored(subjects::SCAN_STREAM).await;
    let job = ScanJob {
        id: "job-1".into(),
        image: "registry.local/app:1".into(),
    };
    let failed = ops.queue_scans(vec![job]).await;
    assert!(
        matches!(&failed[..], [(id, SinkError::Unavailable(_))] if id == "job-1"),
        "{failed:?}"
    );
    assert_eq!(stored(subjects::OPS_STREAM).await, ops_before);
    assert_eq!(stored(subjects::SCAN_STREAM).await, scans_before);
}
