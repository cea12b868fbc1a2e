//! Snapshots against a real nats-server: a scheduler writes its snapshot at a checkpoint
//! of the log and a restart starts from it, replaying only the tail, to the same state as
//! a replay of the whole log; a snapshot that is not the scheduler's, or not the log's, is
//! ignored and the whole log replayed. The failover's snapshot likewise.

mod common;

use std::time::Duration;

use bulkhead::bus::Bus;
use bulkhead::snapshot::{self, Snapshot};
use bulkhead_actors::audit::Report;
use bulkhead_actors::scheduler::{SERVICE, SchedulerCore};
use bulkhead_actors::signing::Signer;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;

use common::*;

const LONG: Duration = Duration::from_secs(30);

/// A service's flags to write a snapshot at every checkpoint (no message count, minimum
/// interval or spacing after a costly one holds it back).
const EVERY_CHECKPOINT: [&str; 6] = [
    "--snapshot-messages",
    "1",
    "--snapshot-min-secs",
    "0",
    "--snapshot-spacing",
    "0",
];

/// The query API's flags: a checkpoint every second, a snapshot at each.
fn api_every_checkpoint() -> Vec<&'static str> {
    [&["api", "--checkpoint-secs", "1"][..], &EVERY_CHECKPOINT].concat()
}

async fn connect(env: &Env, role: Role, name: &str) -> Bus {
    Bus::connect_as(&env.server.url, &env.data.creds(role, name).unwrap())
        .await
        .unwrap()
}

/// A cluster whose scheduler writes a snapshot at every checkpoint (the API's, every
/// second), with `n` workloads running; the scheduler's pid.
async fn ran(ids: &[&str]) -> (Env, u32) {
    let mut env = env().await;
    let pid = env.spawn(
        "scheduler",
        &[&["scheduler"][..], &EVERY_CHECKPOINT].concat(),
    );
    env.spawn("api", &["api", "--checkpoint-secs", "1"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    for id in ids {
        env.natspy_pub(SUBMIT, spec(Some(id)).to_string().as_bytes(), None);
    }
    let n = ids.len();
    env.wait_for("the workloads to run", LONG, |by| {
        by.len() == n && by.values().all(|k| k.contains(&"started"))
    })
    .await;
    (env, pid)
}

/// The scheduler's snapshot as stored, once it covers `seq`.
async fn snapshot_through(env: &Env, seq: u64) -> Vec<u8> {
    stored_through(env, SERVICE, seq).await
}

/// `service`'s snapshot as stored, once it covers `seq`.
async fn stored_through(env: &Env, service: &str, seq: u64) -> Vec<u8> {
    let store = env
        .bus
        .js
        .get_object_store(subjects::SNAPSHOTS_BUCKET)
        .await
        .unwrap();
    let mut found = Vec::new();
    wait_until("a snapshot past the last event", LONG, async || {
        use tokio::io::AsyncReadExt;
        // A read that overlaps the next write loses its chunks: tried again.
        let read = async {
            let mut obj = store.get(service).await.ok()?;
            let mut bytes = Vec::new();
            obj.read_to_end(&mut bytes).await.ok()?;
            Some(bytes)
        };
        let Ok(Some(bytes)) = tokio::time::timeout(Duration::from_secs(5), read).await else {
            return false;
        };
        let snap = snapshot::unchecked(&bytes).unwrap();
        found = bytes;
        snap.seq >= seq
    })
    .await;
    found
}

/// `bulkhead <args>` (service `service`) snapshots while two workloads come to run on a
/// node; it is killed, a third is submitted, and another instance starts from its snapshot
/// while the third comes to run.
async fn restart_from_snapshot(env: &mut Env, service: &str, args: &[&str]) {
    let pid = env.spawn(service, args);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    for id in ["w1", "w2"] {
        env.natspy_pub(SUBMIT, spec(Some(id)).to_string().as_bytes(), None);
    }
    env.wait_for("two to run", LONG, |by| {
        by.len() == 2 && by.values().all(|k| k.contains(&"started"))
    })
    .await;
    let last = env.last_seq(subjects::EVT_ALL).await;
    stored_through(env, service, last).await;
    env.sigkill(pid);
    env.natspy_pub(SUBMIT, spec(Some("w3")).to_string().as_bytes(), None);
    let again = format!("{service}2");
    env.spawn(&again, args);
    wait_until(
        &format!("the {service} to start from its snapshot"),
        LONG,
        async || env.log(&again).contains("snapshot loaded and checked"),
    )
    .await;
    env.wait_for("three to run", LONG, |by| {
        by.len() == 3 && by.values().all(|k| k.contains(&"started"))
    })
    .await;
}

/// What a core holds, to compare two: each workload's head and replicas, each node's share.
fn state(core: &SchedulerCore) -> (Vec<String>, Vec<String>) {
    let workloads = core
        .projection
        .iter()
        .map(|(k, w)| format!("{k} {:?} {:?}", w.head, w.replicas))
        .collect();
    let mut nodes: Vec<String> = core
        .cluster
        .nodes()
        .iter()
        .map(|n| format!("{} {:?}", n.name, n.allocated))
        .collect();
    nodes.sort();
    (workloads, nodes)
}

#[tokio::test]
async fn a_restarted_scheduler_starts_from_its_snapshot_and_replays_only_the_tail() {
    let (mut env, pid) = ran(&["w1", "w2", "w3"]).await;
    let last = env.last_seq(subjects::EVT_ALL).await;
    let stored = snapshot_through(&env, last).await;
    let sched = connect(&env, Role::Scheduler, "scheduler").await;
    let loaded = snapshot::load(&sched, SERVICE)
        .await
        .expect("it passes its checks");
    assert_eq!(loaded.workloads.len(), 3);

    // The scheduler dies; work comes while none runs; another starts from the snapshot.
    env.sigkill(pid);
    for id in ["w4", "w5"] {
        env.natspy_pub(SUBMIT, spec(Some(id)).to_string().as_bytes(), None);
    }
    env.spawn(
        "scheduler2",
        &[&["scheduler"][..], &EVERY_CHECKPOINT].concat(),
    );
    env.wait_for("all five to run", LONG, |by| {
        by.len() == 5 && by.values().all(|k| k.contains(&"started"))
    })
    .await;
    let log = env.log("scheduler2");
    assert!(log.contains("snapshot loaded and checked"), "{log}");

    // From the snapshot and the tail: what the whole log gives.
    let (from_snapshot, _f) = bulkhead::scheduler::rebuild(&sched).await.unwrap();
    let store = env
        .bus
        .js
        .get_object_store(subjects::SNAPSHOTS_BUCKET)
        .await
        .unwrap();
    store.delete(SERVICE).await.unwrap();
    assert!(snapshot::load(&sched, SERVICE).await.is_none(), "deleted");
    let (replayed, _f) = bulkhead::scheduler::rebuild(&sched).await.unwrap();
    assert_eq!(replayed.projection.len(), 5);
    assert_eq!(state(&from_snapshot), state(&replayed));
    drop(stored);
}

#[tokio::test]
async fn a_snapshot_not_the_schedulers_or_not_the_logs_is_ignored() {
    let (env, _pid) = ran(&["w1", "w2"]).await;
    let last = env.last_seq(subjects::EVT_ALL).await;
    let good = snapshot_through(&env, last).await;
    let sched = connect(&env, Role::Scheduler, "scheduler").await;
    let signer = sched.identity().unwrap().signer.clone();
    let body = || -> Snapshot { snapshot::unchecked(&good).unwrap() };
    let seal = |s: &Signer, snap: &Snapshot| snapshot::seal(s, snap).unwrap();

    let mut flipped = good.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 1;
    let mut other_hash = body();
    other_hash.running.hash[0] ^= 1;
    let mut not_the_checkpoint = body();
    not_the_checkpoint.seq -= 1;
    let mut forged = body();
    if let Some(m) = std::sync::Arc::make_mut(&mut forged.raw).first_mut() {
        // Still the same JSON, but not the bytes its writer signed.
        m.payload.push(' ');
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a byte changed", flipped),
        ("signed by the failover's key", {
            let failover = connect(&env, Role::Failover, "failover").await;
            seal(&failover.identity().unwrap().signer, &body())
        }),
        (
            "another running hash, signed by the scheduler",
            seal(&signer, &other_hash),
        ),
        (
            "anchored where the log holds no checkpoint",
            seal(&signer, &not_the_checkpoint),
        ),
        ("a message it carries altered", seal(&signer, &forged)),
    ];
    for (what, bytes) in cases {
        snapshot::save(&env.bus, SERVICE, bytes).await.unwrap();
        assert!(
            snapshot::load(&sched, SERVICE).await.is_none(),
            "{what}: ignored"
        );
        // The scheduler still rebuilds, from the whole log.
        let (core, _f) = bulkhead::scheduler::rebuild(&sched).await.unwrap();
        assert_eq!(core.projection.len(), 2, "{what}");
    }
    snapshot::save(&env.bus, SERVICE, good).await.unwrap();
    assert!(
        snapshot::load(&sched, SERVICE).await.is_some(),
        "the good one"
    );
}

#[tokio::test]
async fn a_restarted_failover_starts_from_its_snapshot() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api", "--checkpoint-secs", "1"]);
    let failover = [&["failover"][..], &EVERY_CHECKPOINT].concat();
    restart_from_snapshot(&mut env, bulkhead::failover::SERVICE, &failover).await;
    let bus = connect(&env, Role::Failover, "failover").await;
    let (restored, _f) = snapshot::projection(&bus, bulkhead::failover::SERVICE)
        .await
        .unwrap();
    let (replayed, _f) = bulkhead::follow::Follower::rebuild(&bus).await.unwrap();
    let view = |p: &bulkhead_actors::projection::Projection| -> Vec<String> {
        p.iter()
            .map(|(k, w)| format!("{k} {:?} {:?}", w.head, w.replicas))
            .collect()
    };
    assert_eq!(replayed.len(), 3);
    assert_eq!(view(&restored), view(&replayed));
}

/// Restarted from its snapshot, the query API answers as a replay of the whole log; and its
/// auditor, which reads what the API's follower reads (the server delivers the log to the API
/// once), reads what came before the snapshot from the log itself: its report is that of
/// `bulkhead audit verify`, every message counted and nothing found.
#[tokio::test]
async fn a_restarted_query_api_starts_from_its_snapshot() {
    let mut env = env().await;
    let api = api_every_checkpoint();
    env.spawn("scheduler", &["scheduler"]);
    restart_from_snapshot(&mut env, bulkhead::api::SERVICE, &api).await;
    // Its answers are those of a whole-log replay, the tail's workload included.
    let bus = connect(&env, Role::Api, "api").await;
    let (replayed, _f) = bulkhead::follow::Follower::rebuild(&bus).await.unwrap();
    assert_eq!(replayed.len(), 3);
    let want: Vec<serde_json::Value> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| {
            let k = key(id);
            serde_json::to_value(replayed.get(&k).unwrap().view(&k)).unwrap()
        })
        .collect();
    let get = subjects::api_workloads_get(TENANT);
    let mut got: Vec<serde_json::Value> = Vec::new();
    wait_until("the API to answer as the log", LONG, async || {
        got = ["w1", "w2", "w3"]
            .iter()
            .map(|id| {
                let reply = env.natspy_req(&get, id).unwrap_or_default();
                serde_json::from_str(&reply).unwrap_or_default()
            })
            .collect();
        got == want
    })
    .await;
    assert_eq!(got, want);
    audits_the_whole_log(&env).await;
}

/// The same on a log that stays quiet after the snapshot: nothing comes through the
/// follower, and the auditor reads the log up to it at once all the same.
#[tokio::test]
async fn a_query_api_restarted_from_its_snapshot_on_a_quiet_log_audits_it() {
    let mut env = env().await;
    let api = api_every_checkpoint();
    env.spawn("scheduler", &["scheduler"]);
    let pid = env.spawn("api", &api);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.natspy_pub(SUBMIT, spec(Some("w1")).to_string().as_bytes(), None);
    env.wait_for("w1 to run", LONG, |by| {
        by.len() == 1 && by.values().all(|k| k.contains(&"started"))
    })
    .await;
    let last = env.last_seq(subjects::EVT_ALL).await;
    stored_through(&env, bulkhead::api::SERVICE, last).await;
    env.sigkill(pid);
    env.spawn("api2", &api);
    wait_until("the API to start from its snapshot", LONG, async || {
        env.log("api2").contains("snapshot loaded and checked")
    })
    .await;
    audits_the_whole_log(&env).await;
}

/// Waits for the API's audit to reach the log's end; it must be `audit verify`'s report.
async fn audits_the_whole_log(env: &Env) {
    let report = |args: &[&str]| -> Option<Report> {
        let out = env.cli().args(args).output().unwrap();
        serde_json::from_slice(&out.stdout).ok()
    };
    let (mut audited, mut verified) = (None, None);
    wait_until("the API's audit to reach the log's end", LONG, async || {
        let last = env.last_seq(subjects::EVT_ALL).await;
        audited = report(&["audit", "status", "--json"]);
        verified = report(&["audit", "verify", "--json"]);
        audited.as_ref().is_some_and(|a| a.through_seq == last)
            && verified.as_ref().is_some_and(|v| v.through_seq == last)
    })
    .await;
    let (audited, verified) = (audited.unwrap(), verified.unwrap());
    assert_eq!(audited.first, None, "{audited:?}");
    assert_eq!(audited.findings, 0);
    assert_eq!(
        (audited.messages, &audited.hash),
        (verified.messages, &verified.hash),
        "the API's audit and `audit verify` read the same log"
    );
    assert!(
        audited.checkpoints_matched >= 1,
        "the checkpoints before the snapshot: {audited:?}"
    );
}
