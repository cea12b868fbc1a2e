//! Poison never stops the world, and whatever refused it, it is counted in one place: a
//! heartbeat out of limits is set aside by the scheduler and the failover (no sign of life,
//! no placements) and both report it to the query API; every durable consumer bounds its
//! redeliveries; a message JetStream gives up on is listed by the API with its consumer; a
//! node flooding its heartbeat key is held to its budget and reported; a tenant flooding
//! its commands does not hold up another tenant's.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream;
use bulkhead::bus::Bus;
use bulkhead::bus::redeliver::MAX_DELIVER;
use bulkhead_schemas::api::AsideReply;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;
use futures::StreamExt;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// How many `code` the reporters whose name starts with `who` reported.
fn reported(a: &AsideReply, who: &str, code: &str) -> u64 {
    a.by_who
        .iter()
        .filter(|(k, _)| k.starts_with(who))
        .map(|(_, r)| r.by_code.get(code).copied().unwrap_or(0))
        .sum()
}

/// The scheduler, the failover, the API and node n1 running; n2 enrolled (offering `runc`)
/// and connected as itself, running nothing: its heartbeats are the test's.
async fn both_readers_and_n2() -> (Env, Bus) {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "2000"]);
    env.spawn("api", &["api"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.wait_ready("n1").await;
    env.enroll_node("n2", Some("runc"));
    let n2 = Bus::connect_as(&env.server.url, &env.data.creds(Role::Node, "n2").unwrap())
        .await
        .unwrap();
    (env, n2)
}

/// Waits until the scheduler and the failover have each reported `code` at least once.
async fn reported_by_both(env: &Env, code: &str) {
    let what = format!("the scheduler and the failover to report {code}");
    wait_until(&what, LONG, async || {
        let a = env.aside().await;
        reported(&a, "scheduler/", code) >= 1 && reported(&a, "failover/", code) >= 1
    })
    .await;
}

/// Submits workload `w` of two replicas and waits until both have started.
async fn two_replicas_run(env: &Env) {
    let mut s = spec(Some("w"));
    s["replicas"] = serde_json::json!(2);
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    env.wait_for("both copies to run", LONG, |by| {
        by.get("w")
            .is_some_and(|k| k.iter().filter(|k| **k == "started").count() == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_out_of_limits_is_set_aside_by_every_reader_and_counted_once_each() {
    let (env, n2) = both_readers_and_n2().await;

    // n2's own key heartbeats with an interval of 584 million years and more free than it
    // has: were it believed, the failover would never find it silent.
    let beat = serde_json::json!({
        "name": "n2",
        "capacity": {"memory_mb": 1024, "cpu_millicores": 1000, "slots": 4},
        "free": {"memory_mb": 1024, "cpu_millicores": 1000, "slots": 4},
        "runtime_classes": ["runc"], "runtime": "sim", "running": 0,
        "interval_ms": u64::MAX, "at": "now"
    });
    n2.client
        .publish(
            format!("$KV.{}.n2", subjects::NODES_BUCKET),
            beat.to_string().into(),
        )
        .await
        .unwrap();
    n2.client.flush().await.unwrap();
    reported_by_both(&env, "out_of_limits").await;
    let a = env.aside().await;
    let why = a
        .recent
        .iter()
        .find(|v| v.by.starts_with("scheduler/") && v.code == "out_of_limits")
        .map(|v| v.reason.clone())
        .unwrap_or_default();
    assert!(why.contains("interval"), "{why}");
    assert_eq!(
        a.total,
        a.by_who.values().map(|r| r.total).sum::<u64>(),
        "the total is the sum of its reporters: {a:?}"
    );

    // The world goes on: a workload of two replicas runs, on n1 only.
    two_replicas_run(&env).await;
    for (_, _, ev) in env.events(&subjects::workload_events(&key("w"))).await {
        if let bulkhead_schemas::event::EventBody::Started(st) = &ev.body {
            assert_eq!(st.node, "n1", "nothing placed on a node it cannot believe");
        }
    }
}

/// A node that ignores its pace and writes its key as fast as its connection goes: its
/// watchers hand on its budget (`bulkhead_actors::beat_budget`), drop the rest unread, and
/// set the flood aside, naming the node; the other nodes and the world go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_flooding_its_heartbeat_key_is_held_to_its_budget_and_reported() {
    let (env, n2) = both_readers_and_n2().await;

    // n2 beats within limits, with nothing free (so nothing is placed on it), 3,000 times,
    // one at a time a millisecond or so apart: several times its budget. Paced so that the
    // watchers see the beats: the bucket keeps one entry a key, and a watch delivers the
    // latest when it wakes, so beats written together are replaced unseen (20,000 at once:
    // in one run of six on main, only the first was seen; ten at a time, 10 ms apart: too
    // few to pass the budget, six runs of six), a flood that costs the server, not the
    // watchers, and goes unnamed.
    let beat = serde_json::json!({
        "name": "n2",
        "capacity": {"memory_mb": 1024, "cpu_millicores": 1000, "slots": 4},
        "free": {"memory_mb": 0, "cpu_millicores": 0, "slots": 0},
        "runtime_classes": ["runc"], "runtime": "sim", "running": 0,
        "interval_ms": 10, "at": "now"
    });
    let subject = format!("$KV.{}.n2", subjects::NODES_BUCKET);
    for _ in 0..3_000 {
        n2.client
            .publish(subject.clone(), beat.to_string().into())
            .await
            .unwrap();
        n2.client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    reported_by_both(&env, "beat_flood").await;
    let a = env.aside().await;
    for v in a.recent.iter().filter(|v| v.code == "beat_flood") {
        assert!(
            v.reason.contains("node n2 wrote") && v.reason.contains("dropped unread"),
            "{v:?}"
        );
        assert!(v.subject.ends_with(".n2"), "{v:?}");
    }

    // The world goes on: a workload of two replicas runs, and n1, beating at its own
    // interval, is never reported.
    two_replicas_run(&env).await;
    let a = env.aside().await;
    assert!(
        a.recent
            .iter()
            .filter(|v| v.code == "beat_flood")
            .all(|v| v.subject.ends_with(".n2")),
        "{a:?}"
    );
}

/// The scheduler reads a lane a tenant, in turn: mallory's 5,000 submissions, stored before
/// default's one (no scheduler runs yet), do not all go first. First in, first out, all
/// 5,000 were handled before it; here it is admitted in the first round or the second. Every
/// command handled then leaves the stream, lane by lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_its_commands_does_not_hold_up_another() {
    const FLOOD: usize = 5000;
    let mut env = env().await;
    env.cli_ok(["tenant", "add", "mallory"]);
    let creds = env.data.creds(Role::Tenant, "mallory").unwrap();
    let mallory = Bus::connect_as(&env.server.url, &creds).await.unwrap();
    let subject = subjects::cmd("mallory", "submit");
    let stored = (0..FLOOD).map(|i| {
        let (js, subject) = (mallory.js.clone(), subject.clone());
        async move { js.publish(subject, format!("junk {i}").into()).await?.await }
    });
    futures::future::try_join_all(stored).await.unwrap();
    env.natspy_pub(SUBMIT, spec(Some("first")).to_string().as_bytes(), None);
    env.spawn("scheduler", &["scheduler"]);

    let mallorys = "bulkhead.evt.mallory.wl.*.rejected";
    let env_ref = &env;
    wait_until("every command to be handled", LONG, async || {
        let by = env_ref.kinds_by_workload().await;
        let first = by.get("first").is_some_and(|k| k.contains(&"accepted"));
        first && env_ref.events(mallorys).await.len() == FLOOD
    })
    .await;
    let events = env.events(subjects::EVT_WORKLOADS).await;
    let accepted = events
        .iter()
        .find(|(_, _, e)| id_of(&e.subject) == "first" && e.kind() == "accepted")
        .map(|(seq, _, _)| *seq)
        .unwrap();
    let before = env
        .events(mallorys)
        .await
        .iter()
        .filter(|(seq, _, _)| *seq < accepted)
        .count();
    assert!(
        before < FLOOD / 2,
        "{before} of mallory's {FLOOD} were handled before default's one"
    );

    wait_until(
        "the commands handled to leave the stream",
        LONG,
        async || {
            let mut s = env_ref
                .bus
                .js
                .get_stream(subjects::CMD_STREAM)
                .await
                .unwrap();
            s.info().await.unwrap().state.messages == 0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durable_consumer_bounds_its_redeliveries() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    let osv = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/osv");
    env.spawn("scanner", &["scanner", "--id", "w1", "--db", osv]);
    // The scheduler opens its tenant's lane at the tenant's first command.
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    let lane = subjects::cmd_lane(SUBMIT).unwrap().consumer;
    let env_ref = &env;
    for (stream, consumer) in [
        (subjects::CMD_STREAM, lane),
        (subjects::OPS_STREAM, subjects::node_consumer("n1")),
        (subjects::SCAN_STREAM, subjects::SCAN_CONSUMER.to_owned()),
    ] {
        let info = async || {
            let s = env_ref.bus.js.get_stream(stream).await.ok()?;
            s.consumer_info(&consumer).await.ok()
        };
        wait_until(&format!("{consumer} to exist"), LONG, async || {
            info().await.is_some()
        })
        .await;
        let info = info().await.unwrap();
        assert_eq!(
            info.config.max_deliver, MAX_DELIVER,
            "{stream}/{consumer}: {:?}",
            info.config
        );
    }
}

/// JetStream's own word that a consumer gave up on a message (its handler never answered,
/// as one that crashes on it would not) reaches the same list, naming the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_consumer_gives_up_on_is_listed_with_its_consumer() {
    let mut env = env().await;
    env.spawn("api", &["api"]);
    let env_ref = &env;
    wait_until("the API to answer", LONG, async || {
        env_ref
            .bus
            .client
            .request(subjects::API_ASIDE_LIST, "".into())
            .await
            .is_ok()
    })
    .await;
    let s = env
        .bus
        .js
        .create_stream(stream::Config {
            name: "POISON_PROBE".into(),
            subjects: vec!["probe.poison".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let c = s
        .create_consumer(pull::Config {
            durable_name: Some("probe".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(300),
            max_deliver: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    env.bus
        .js
        .publish("probe.poison", "crashes whoever reads it".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Delivered twice, never answered.
    let mut got = 0;
    let mut msgs = c.messages().await.unwrap();
    while got < 2 {
        let _ = tokio::time::timeout(Duration::from_secs(5), msgs.next())
            .await
            .expect("delivered again");
        got += 1;
    }
    wait_until("the API to list it", LONG, async || {
        env_ref.aside().await.recent.iter().any(|v| {
            v.code == "max_deliveries" && v.subject == "POISON_PROBE" && v.reason.contains("probe")
        })
    })
    .await;
    let a = env.aside().await;
    assert!(a.by_code["max_deliveries"] >= 1, "{a:?}");
    assert!(
        a.by_who.keys().any(|k| k.starts_with("api/")),
        "recorded by the API as itself: {:?}",
        a.by_who.keys()
    );
}
