//! When heartbeats stop reaching the watchers rather than the nodes stopping. The nodes
//! bucket deleted (its stream: every watch of it ends, and no node can beat) for 22 s, on a
//! live connection: the scheduler and the failover are deaf until a new watch starts, and
//! declare no node lost. A whole cluster falling silent at once is held, not declared lost,
//! while a node killed on its own is still lost. A failover that takes over knows how often
//! each node beats before it hears one (the watch brings only beats to come). A failover
//! that is not run for a while (stopped) does not take its own pause for the nodes' silence.

mod common;

use std::time::Duration;

use bulkhead::bus::Topology;
use bulkhead_schemas::subjects;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// Deletes the heartbeat bucket, waits `gone`, and makes it again as `bulkhead up` does.
async fn bucket_gone(env: &Env, gone: Duration) {
    let stream = format!("KV_{}", subjects::NODES_BUCKET);
    env.bus.js.delete_stream(&stream).await.unwrap();
    tokio::time::sleep(gone).await;
    env.bus.ensure(&Topology::default()).await.unwrap();
}

/// How many lines of `who`'s log hold every one of `parts`.
fn lines(env: &Env, who: &str, parts: &[&str]) -> usize {
    let log = env.log(who);
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Where the scenario begins in the log: a node declared lost before it (a stall of this
/// busy machine while the cluster starts; the node says it is back and is ready again) is
/// not the scenario's.
async fn scenario_start(env: &Env) -> u64 {
    env.last_seq("bulkhead.evt.>").await
}

/// The nodes declared lost after log sequence `after`, in the log's order.
async fn lost_nodes(env: &Env, after: u64) -> Vec<String> {
    let events = env.events("bulkhead.evt.node.*.lost").await;
    events
        .iter()
        .filter(|(seq, _, _)| *seq > after)
        .map(|(_, _, e)| e.subject.clone())
        .collect()
}

/// No node was declared lost after `after` (else the failover's log, from `failover`,
/// says why).
async fn assert_no_node_lost(env: &Env, failover: &str, after: u64) {
    let lost = lost_nodes(env, after).await;
    assert!(
        lost.is_empty(),
        "declared lost: {lost:?}\n{}",
        env.log(failover)
    );
}

/// The scheduler, the API, a failover (lost timeout 1.5 s) and `nodes` beating every 200 ms,
/// all ready and past their start: the failover's pid, the nodes' and where the scenario
/// begins in the log.
async fn cluster(env: &mut Env, nodes: &[&str]) -> (u32, Vec<u32>, u64) {
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    let failover = env.spawn("failover", &["failover", "--lost-timeout-ms", "1500"]);
    let mut pids = Vec::new();
    for n in nodes {
        pids.push(env.spawn(n, &["node", "--name", n, "--heartbeat-ms", "200"]));
    }
    for n in nodes {
        env.wait_ready(n).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = scenario_start(env).await;
    (failover, pids, from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_watch_that_ends_is_deafness_not_a_silent_node() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    // One node, and a lost timeout (15 s) longer than the client takes to notice a watch
    // that ended (two missed idle heartbeats, 10 s) but shorter than the bucket is gone.
    env.spawn("failover", &["failover", "--lost-timeout-ms", "15000"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.wait_ready("n1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let from = scenario_start(&env).await;
    bucket_gone(&env, Duration::from_secs(22)).await;
    // The first watch's start is heard too ("deaf first"), then the one after the bucket.
    wait_until("the failover's watch to start again", LONG, async || {
        lines(&env, "failover", &["hears heartbeats again", "ear=Watch"]) >= 2
    })
    .await;
    // Past the lost timeout from there: n1's beats are heard again, not only forgiven.
    tokio::time::sleep(Duration::from_secs(17)).await;

    assert_no_node_lost(&env, "failover", from).await;
    for watcher in ["failover", "scheduler"] {
        assert!(
            env.log(watcher).contains("node watch ended"),
            "{watcher} knew its watch had ended: {}",
            env.log(watcher)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_silent_at_once_is_held_and_a_node_killed_alone_is_lost() {
    let mut env = env().await;
    let (_, pids, from) = cluster(&mut env, &["n1", "n2", "n3"]).await;

    // Every node silent at once for 12 s, eight times the lost timeout, before the watch's
    // end is noticed (10 s): the mass-silence guard, not deafness, keeps them.
    bucket_gone(&env, Duration::from_secs(12)).await;
    wait_until("the failover to hear again", LONG, async || {
        env.log("failover").contains("the mass silence is over")
    })
    .await;
    // Past the lost timeout from there: the nodes beat again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_no_node_lost(&env, "failover", from).await;
    assert!(
        env.log("failover").contains("every node is silent at once"),
        "the failover held them: {}",
        env.log("failover")
    );

    // One node of three killed: its own fault, lost as before.
    env.sigkill(pids[2]);
    wait_until("n3 to be declared lost", LONG, async || {
        !env.events("bulkhead.evt.node.n3.lost").await.is_empty()
    })
    .await;
    assert_eq!(lost_nodes(&env, from).await, ["n3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_taking_over_knows_how_often_each_node_beats() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    let first = env.spawn("failover", &["failover", "--lost-timeout-ms", "3000"]);
    // n1 beats every 5 s: its limit is 15 s, not the 3 s lost timeout.
    let n1 = env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "5000"]);
    env.wait_ready("n1").await;
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    env.wait_for("w to run on n1", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"started"))
    })
    .await;

    // n1 frozen, and the failover replaced: the new one knows n1 from the log, and hears no
    // beat from it for 6 s after it is active (twice the lost timeout, under n1's limit).
    let from = scenario_start(&env).await;
    env.signal(n1, "-STOP");
    env.sigkill(first);
    env.spawn("failover2", &["failover", "--lost-timeout-ms", "3000"]);
    wait_until("the new failover to be active", LONG, async || {
        env.log("failover2").contains("failover active")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    env.signal(n1, "-CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_no_node_lost(&env, "failover2", from).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_paused_declares_no_one_for_its_pause_and_a_node_killed_meanwhile_after() {
    let mut env = env().await;
    let (failover, pids, from) = cluster(&mut env, &["n1", "n2"]).await;

    // The failover stopped for 5 s (three lost timeouts and more); n2 killed 1 s into it. On
    // waking, its first tick is 5 s late and its beats unread: n1 is not lost, and n2 is a
    // lost timeout after the failover woke, its silence counted from then.
    env.signal(failover, "-STOP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.sigkill(pids[1]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.signal(failover, "-CONT");
    wait_until("n2 to be declared lost", LONG, async || {
        !env.events("bulkhead.evt.node.n2.lost").await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lost_nodes(&env, from).await,
        ["n2"],
        "{}",
        env.log("failover")
    );
    assert_eq!(
        lines(&env, "failover", &["this failover was not run for a while"]),
        1,
        "{}",
        env.log("failover")
    );
    let lost = env.events("bulkhead.evt.node.n2.lost").await;
    let bulkhead_schemas::event::EventBody::Lost(l) = &lost[0].2.body else {
        panic!("not a loss: {:?}", lost[0].2)
    };
    let silent_ms: u64 = l
        .reason
        .split("silent for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no silence in {:?}", l.reason));
    assert!(
        (1500..4000).contains(&silent_ms),
        "silent from the failover's waking, not from the kill 4 s before it: {}",
        l.reason
    );
}
