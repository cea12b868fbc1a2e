//! The core slice against a real nats-server on loopback: raw `nats pub` submissions run,
//! malformed ones are rejected with reasons, Nats-Msg-Id deduplicates, a killed scheduler
//! loses nothing, and a standby scheduler takes over.

mod common;

use std::time::Duration;

use bulkhead_schemas::event::EventBody;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::spec::RejectCode;
use bulkhead_schemas::subjects;
use common::*;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_submission_runs_with_an_unbroken_chain_and_is_queryable() {
    let mut env = env().await;
    // Submitted while no scheduler runs: kept and processed once one starts.
    env.natspy_pub(SUBMIT, spec(Some("web-1")).to_string().as_bytes(), None);
    env.spawn("up", &["up", "--nodes", "2", "--heartbeat-ms", "200"]);
    env.wait_for("web-1 to start", LONG, |by| {
        by.get("web-1").is_some_and(|k| done(k))
    })
    .await;

    let events = env.events(&subjects::workload_events(&key("web-1"))).await;
    let kinds: Vec<_> = events.iter().map(|(_, _, e)| e.kind()).collect();
    assert_eq!(kinds, ["accepted", "scheduled", "started"]);
    assert_chains(&events);
    let actors: Vec<_> = events
        .iter()
        .map(|(_, _, e)| e.actor.service.as_str())
        .collect();
    assert_eq!(actors[..2], ["scheduler", "scheduler"]);
    assert!(actors[2].starts_with("node/"), "{actors:?}");
    // One trace covers admit → scheduled → started: every event names the same trace id.
    let trace_ids: Vec<_> = events
        .iter()
        .map(|(_, _, e)| {
            e.traceparent
                .as_deref()
                .and_then(|t| t.split('-').nth(1))
                .map(str::to_owned)
        })
        .collect();
    assert!(trace_ids[0].is_some(), "accepted carries a traceparent");
    assert!(
        trace_ids.iter().all(|t| *t == trace_ids[0]),
        "{trace_ids:?}"
    );
    let node = match &events[1].2.body {
        EventBody::Scheduled(s) => s.node.clone(),
        other => panic!("{other:?}"),
    };

    let mut reply = String::new();
    wait_until("the query API to show web-1 running", LONG, async || {
        reply = env.natspy_req(GET, "web-1").unwrap_or_default();
        reply.contains("\"state\":\"running\"")
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["replicas"][0]["node"], node.as_str());
    assert_eq!(v["spec"]["image"], "localhost/busybox:1");
    let err = env.natspy_req(GET, "nope").unwrap_err();
    assert!(err.contains("no workload nope"), "{err}");
    let list = env.natspy_req(LIST, r#"{"state":"running"}"#).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["total"], 1);
    // The nodes are an operator's business: an admin may ask, a tenant may not.
    let nodes = env
        .natspy_req_as(Role::Admin, "admin", subjects::API_NODES_LIST, "")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2);
    let refused = env.natspy_req(subjects::API_NODES_LIST, "").unwrap_err();
    assert!(
        refused.to_lowercase().contains("permissions violation"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_submissions_are_rejected_with_reasons_and_service_goes_on() {
    let mut env = env().await;
    env.spawn("up", &["up", "--nodes", "1", "--heartbeat-ms", "200"]);
    let mut wrong_type = spec(Some("wrong-type"));
    wrong_type["memory_mb"] = "lots".into();
    let mut missing = spec(Some("missing-image"));
    missing.as_object_mut().unwrap().remove("image");
    let mut class = spec(Some("bad-class"));
    class["runtime_class"] = "firecracker".into();
    let mut zero = spec(Some("zero-mem"));
    zero["memory_mb"] = 0.into();
    let mut absurd = spec(Some("absurd-cpu"));
    absurd["cpu_millicores"] = 99_999_999u64.into();
    let mut replicas = spec(Some("many-replicas"));
    replicas["replicas"] = 5000.into();
    let mut big = spec(Some("too-big"));
    big["env"] = serde_json::json!({"PAD": "x".repeat(70 * 1024)});
    let cases: Vec<(Vec<u8>, RejectCode, &str)> = vec![
        (
            b"{this is not json".to_vec(),
            RejectCode::NotJson,
            "not JSON",
        ),
        (
            wrong_type.to_string().into_bytes(),
            RejectCode::InvalidField,
            "memory_mb: invalid type",
        ),
        (
            missing.to_string().into_bytes(),
            RejectCode::InvalidField,
            "missing field `image`",
        ),
        (
            class.to_string().into_bytes(),
            RejectCode::InvalidField,
            "unknown variant `firecracker`",
        ),
        (
            zero.to_string().into_bytes(),
            RejectCode::InvalidValue,
            "at least 1",
        ),
        (
            absurd.to_string().into_bytes(),
            RejectCode::InvalidValue,
            "exceeds the ceiling",
        ),
        (
            replicas.to_string().into_bytes(),
            RejectCode::InvalidValue,
            "replicas must be between",
        ),
        (
            big.to_string().into_bytes(),
            RejectCode::TooLarge,
            "payload too large",
        ),
    ];
    for (payload, _, _) in &cases {
        env.natspy_pub(SUBMIT, payload, None);
    }
    env.natspy_pub(SUBMIT, spec(Some("good")).to_string().as_bytes(), None);
    env.wait_for("the valid submission to start", LONG, |by| {
        by.get("good").is_some_and(|k| done(k))
    })
    .await;

    let rejected: Vec<_> = env
        .events(subjects::EVT_WORKLOADS)
        .await
        .into_iter()
        .filter_map(|(_, _, e)| match e.body {
            EventBody::Rejected(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), cases.len(), "{rejected:?}");
    for (r, (_, code, text)) in rejected.iter().zip(&cases) {
        assert_eq!(r.rejection.code, *code, "{r:?}");
        assert!(
            r.rejection.reason.contains(text),
            "{:?} should mention {text:?}",
            r.rejection.reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_msg_id_twice_gives_one_workload() {
    let mut env = env().await;
    env.spawn("up", &["up", "--nodes", "1", "--heartbeat-ms", "200"]);
    let body = spec(None).to_string();
    env.natspy_pub(SUBMIT, body.as_bytes(), Some("order-42"));
    env.natspy_pub(SUBMIT, body.as_bytes(), Some("order-42"));
    env.natspy_pub(SUBMIT, spec(Some("marker")).to_string().as_bytes(), None);
    env.wait_for("the marker to start", LONG, |by| {
        by.get("marker").is_some_and(|k| done(k))
    })
    .await;
    let by = env.kinds_by_workload().await;
    assert_eq!(
        by.len(),
        2,
        "one workload from the two publishes, plus the marker: {by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_scheduler_loses_nothing_and_places_nothing_twice() {
    let mut env = env().await;
    env.spawn(
        "node",
        &[
            "node",
            "--name",
            "n1",
            "--heartbeat-ms",
            "200",
            "--slots",
            "5000",
            "--memory-mb",
            "1000000",
            "--cpu-millicores",
            "1000000",
        ],
    );
    let first = env.spawn("sched-a", &["scheduler"]);
    wait_until("scheduler a to be active", LONG, async || {
        env.log("sched-a").contains("scheduler active")
    })
    .await;
    const N: usize = 2000;
    let payloads: Vec<Vec<u8>> = (0..N)
        .map(|i| spec(Some(&format!("w{i}"))).to_string().into_bytes())
        .collect();
    env.natspy_pub_many(SUBMIT, &payloads[..N / 2]);
    env.sigkill(first);
    env.natspy_pub_many(SUBMIT, &payloads[N / 2..]);
    env.spawn("sched-b", &["scheduler"]);
    env.wait_for("every submission to start", LONG, |by| {
        by.len() == N && by.values().all(|k| done(k))
    })
    .await;
    for (id, kinds) in env.kinds_by_workload().await {
        assert_eq!(kinds, ["accepted", "scheduled", "started"], "{id}");
    }
    assert_chains(&env.events(subjects::EVT_WORKLOADS).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_schedulers_is_active_and_the_other_takes_over() {
    let mut env = env().await;
    env.spawn("node", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    let a = env.spawn("sched-a", &["scheduler"]);
    let b = env.spawn("sched-b", &["scheduler"]);
    let mut holder = None;
    wait_until("a lease holder", LONG, async || {
        holder = lease_holder(&env.bus).await;
        holder.is_some()
    })
    .await;
    let holder = holder.unwrap();
    let (active, active_log, standby, standby_log) = if holder == format!("scheduler-{a}") {
        (a, "sched-a", b, "sched-b")
    } else {
        (b, "sched-b", a, "sched-a")
    };
    assert_eq!(holder, format!("scheduler-{active}"));
    env.natspy_pub(SUBMIT, spec(Some("before")).to_string().as_bytes(), None);
    env.wait_for("`before` to start", LONG, |by| {
        by.get("before").is_some_and(|k| done(k))
    })
    .await;
    assert!(env.log(active_log).contains("scheduler active"));
    assert!(
        !env.log(standby_log).contains("scheduler active"),
        "standby must not schedule"
    );
    assert!(env.log(standby_log).contains("standby"));

    env.sigkill(active);
    env.natspy_pub(SUBMIT, spec(Some("after")).to_string().as_bytes(), None);
    env.wait_for("`after` to start under the standby", LONG, |by| {
        by.get("after").is_some_and(|k| done(k))
    })
    .await;
    assert_eq!(
        lease_holder(&env.bus).await,
        Some(format!("scheduler-{standby}"))
    );
    assert!(env.log(standby_log).contains("scheduler active"));
    let by = env.kinds_by_workload().await;
    assert_eq!(by["before"], ["accepted", "scheduled", "started"]);
}

/// The command stream stores the command subjects only, and each command only until the
/// scheduler has handled it (it purges them, up to its ack floor): a publish to
/// `bulkhead.cmd.<anything else>` finds no stream, and a backlog is bounded (a full stream
/// refuses new commands instead of growing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_stream_keeps_only_commands_and_only_until_handled() {
    use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy};
    let mut env = env().await;
    let refused = env
        .bus
        .js
        .publish("bulkhead.cmd.foo", "{}".into())
        .await
        .unwrap()
        .await;
    assert!(refused.is_err(), "an unknown command subject is not stored");
    env.natspy_pub("bulkhead.cmd.foo", br#"{"id":"x"}"#, None);
    let mut stream = env.bus.js.get_stream(subjects::CMD_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 0,
        "nothing stored from bulkhead.cmd.foo"
    );
    assert_eq!(info.config.retention, RetentionPolicy::Limits);
    assert_eq!(info.config.discard, DiscardPolicy::New);
    assert!(info.config.max_messages > 0 && info.config.max_bytes > 0);

    for id in ["kept-1", "kept-2"] {
        env.natspy_pub(SUBMIT, spec(Some(id)).to_string().as_bytes(), None);
    }
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 2, "kept while no scheduler runs");
    env.spawn("scheduler", &["scheduler"]);
    env.wait_for("both to be admitted", LONG, |by| by.len() == 2)
        .await;
    wait_until(
        "the handled commands to leave the stream",
        LONG,
        async || stream.info().await.unwrap().state.messages == 0,
    )
    .await;
}

/// Stream `name` made again as an older bulkhead made it: a work queue on `subjects`.
async fn older_work_queue(
    bus: &bulkhead::bus::Bus,
    name: &str,
    subjects: &str,
) -> async_nats::jetstream::stream::Stream {
    use async_nats::jetstream::stream::{Config, RetentionPolicy};
    bus.js.delete_stream(name).await.unwrap();
    let old = Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    };
    bus.js.create_stream(old).await.unwrap()
}

/// With one message stored on `subject` in the older `stream`, `ensure` refuses, saying
/// `waiting`, and drops nothing; once the stream is purged, `ensure` passes.
async fn refused_until_purged(
    bus: &bulkhead::bus::Bus,
    stream: &mut async_nats::jetstream::stream::Stream,
    subject: String,
    payload: Vec<u8>,
    waiting: &str,
) {
    use bulkhead::bus::Topology;
    bus.js
        .publish(subject, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let e = bus
        .ensure(&Topology::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(waiting), "{e}");
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "nothing dropped"
    );
    stream.purge().await.unwrap();
    bus.ensure(&Topology::default()).await.unwrap();
}

/// A command stream made by an older bulkhead (a work queue) is replaced only once nothing
/// in it waits for a scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_command_stream_is_replaced_only_when_nothing_in_it_waits() {
    use async_nats::jetstream::stream::RetentionPolicy;
    let env = env().await;
    let bus = &env.bus;
    let mut stream = older_work_queue(bus, subjects::CMD_STREAM, "bulkhead.cmd.>").await;
    let submit = spec(Some("old")).to_string().into_bytes();
    refused_until_purged(
        bus,
        &mut stream,
        SUBMIT.into(),
        submit,
        "1 are still unhandled",
    )
    .await;
    let info = bus
        .js
        .get_stream(subjects::CMD_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.retention, RetentionPolicy::Limits);
}

/// An ops stream made by an older bulkhead (a work queue, whose every ack asks each node's
/// consumer for interest) is replaced by one of limits only once no op in it waits, and the
/// consumers it had are made again on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_ops_stream_is_replaced_only_when_no_op_in_it_waits() {
    use async_nats::jetstream::stream::RetentionPolicy;
    use bulkhead::bus::Topology;
    let env = env().await;
    let bus = &env.bus;
    let mut stream = older_work_queue(bus, subjects::OPS_STREAM, subjects::OPS_ALL).await;
    bulkhead::auth::enroll::node_consumers(bus, &["n9"])
        .await
        .unwrap();
    let op = subjects::node_ops("n9");
    refused_until_purged(
        bus,
        &mut stream,
        op,
        b"{}".to_vec(),
        "1 ops in it still wait",
    )
    .await;
    let topo = Topology::default();
    let mut stream = bus.js.get_stream(subjects::OPS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.retention, RetentionPolicy::Limits);
    assert_eq!(info.config.max_age, topo.ops_ttl);
    let consumer = stream
        .consumer_info(subjects::node_consumer("n9"))
        .await
        .expect("the node's consumer is made again");
    assert_eq!(
        consumer.config.deliver_subject.as_deref(),
        Some(subjects::node_deliver("n9").as_str())
    );
    assert_eq!(
        consumer.config.filter_subject,
        subjects::node_ops("n9"),
        "{:?}",
        consumer.config
    );
}

/// The buckets of beats are written unsynced (a heartbeat is not an fsync); one made by an
/// older bulkhead, synced, is made again unsynced, the latest beat of each key put back; a
/// later setup keeps the bucket and what it holds. Layers and leases stay synced, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_bucket_of_beats_is_made_again_unsynced() {
    use async_nats::jetstream::stream::{Config, PersistenceMode};
    use bulkhead::bus::Topology;
    let env = env().await;
    let bus = &env.bus;
    let mode = async |bucket: &str| {
        let mut s = bus.js.get_stream(format!("KV_{bucket}")).await.unwrap();
        s.info().await.unwrap().config.persist_mode
    };
    for bucket in [subjects::NODES_BUCKET, subjects::SCANNERS_BUCKET] {
        assert_eq!(mode(bucket).await, Some(PersistenceMode::Async), "{bucket}");
    }
    for bucket in [subjects::LAYERS_BUCKET, subjects::LEASES_BUCKET] {
        assert_ne!(mode(bucket).await, Some(PersistenceMode::Async), "{bucket}");
    }

    // As an older bulkhead made it: synced.
    let name = format!("KV_{}", subjects::NODES_BUCKET);
    let old = bus
        .js
        .get_stream(&name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    bus.js.delete_stream(&name).await.unwrap();
    bus.js
        .create_stream(Config {
            persist_mode: None,
            ..old
        })
        .await
        .unwrap();
    let kv = bus.js.get_key_value(subjects::NODES_BUCKET).await.unwrap();
    kv.put("old-beat", "{\"n\":1}".into()).await.unwrap();
    assert_ne!(
        mode(subjects::NODES_BUCKET).await,
        Some(PersistenceMode::Async)
    );
    // What the other buckets hold is not touched.
    let layers = bus.js.get_key_value(subjects::LAYERS_BUCKET).await.unwrap();
    layers.put("f1-abc", "{}".into()).await.unwrap();
    let leases = bus.js.get_key_value(subjects::LEASES_BUCKET).await.unwrap();
    leases.put("scheduler", "{}".into()).await.unwrap();

    bus.ensure(&Topology::default()).await.unwrap();
    assert_eq!(
        mode(subjects::NODES_BUCKET).await,
        Some(PersistenceMode::Async)
    );
    let kv = bus.js.get_key_value(subjects::NODES_BUCKET).await.unwrap();
    assert_eq!(
        kv.get("old-beat").await.unwrap().as_deref(),
        Some(&b"{\"n\":1}"[..]),
        "the latest beat is put back in the bucket made again (a failover reads intervals)"
    );
    assert!(layers.get("f1-abc").await.unwrap().is_some());
    assert!(leases.get("scheduler").await.unwrap().is_some());
    kv.put("new-beat", "{}".into()).await.unwrap();
    bus.ensure(&Topology::default()).await.unwrap();
    assert!(
        kv.get("new-beat").await.unwrap().is_some(),
        "an unsynced bucket is kept"
    );
}

/// A node's ops consumer made otherwise (an earlier build's) is made again from where it
/// stood: an op it acknowledged is not taken again (an ack deletes nothing from the stream
/// of limits), one it did not is; a later setup keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_consumer_made_again_takes_neither_more_nor_less() {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    use futures::StreamExt;
    let env = env().await;
    let bus = &env.bus;
    let stream = bus.js.get_stream(subjects::OPS_STREAM).await.unwrap();
    let durable = subjects::node_consumer("n8");
    let older = stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: subjects::node_ops("n8"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for op in ["first", "second"] {
        let ack = bus
            .js
            .publish(subjects::node_ops("n8"), op.into())
            .await
            .unwrap()
            .await
            .unwrap();
        seqs.push(ack.sequence);
    }
    let mut batch = older.fetch().max_messages(1).messages().await.unwrap();
    let first = batch.next().await.unwrap().unwrap();
    assert_eq!(&first.payload[..], b"first");
    first.double_ack().await.unwrap();
    drop(batch);
    bulkhead::auth::enroll::node_consumers(bus, &["n8"])
        .await
        .unwrap();
    let info = stream.consumer_info(&durable).await.unwrap().clone();
    assert_eq!(
        info.config.deliver_subject.as_deref(),
        Some(subjects::node_deliver("n8").as_str()),
        "a push consumer now"
    );
    assert_eq!(
        info.config.deliver_policy,
        DeliverPolicy::ByStartSequence {
            start_sequence: seqs[1]
        }
    );
    assert_eq!(info.num_pending, 1, "the second op only");
    // The next setup keeps it as it is: not deleted and made again from its ack floor.
    bulkhead::auth::enroll::node_consumers(bus, &["n8"])
        .await
        .unwrap();
    let again = stream.consumer_info(&durable).await.unwrap().clone();
    assert_eq!(again.created, info.created, "the same consumer");
    assert_eq!(again.num_pending, 1);
}

/// A log written before events were signed is refused at start with a clear message, by
/// the admin's setup and by every reader: it is never mixed with signed events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_unsigned_log_is_refused_at_start() {
    use async_nats::jetstream::stream::Config;
    use bulkhead::bus::Topology;
    let mut env = env().await;
    env.bus
        .js
        .delete_stream(subjects::EVT_STREAM)
        .await
        .unwrap();
    let old = Config {
        name: subjects::EVT_STREAM.into(),
        subjects: vec![subjects::EVT_ALL.into()],
        allow_direct: true,
        ..Default::default()
    };
    env.bus.js.create_stream(old).await.unwrap();
    let unsigned = serde_json::json!({"v": 1, "id": "e1", "at": "2026-01-01T00:00:00Z",
        "actor": {"service": "scheduler"}, "subject": "default/old",
        "type": "accepted", "body": {}});
    env.bus
        .js
        .publish(
            "bulkhead.evt.default.wl.old.accepted",
            unsigned.to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let e = env
        .bus
        .ensure(&Topology::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("older, unsigned log"), "{e}");
    // A service started on it says so and exits.
    env.spawn("api", &["api"]);
    let env = &env;
    wait_until("the API to refuse the log", LONG, async || {
        env.log("api").contains("older, unsigned log")
    })
    .await;
}
