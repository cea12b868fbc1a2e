//! Large but valid input against a real nats-server: a workload of 1,000 replicas runs all
//! its copies (its append is over the 1,000 messages an atomic batch holds), and specs near
//! the size ceiling with many replicas start every copy without holding up another tenant's
//! workload (their ops are over what one message may carry); a node holding 500 replicas of
//! one workload is lost at once and every copy runs again elsewhere.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(90);

fn big_node(env: &mut Env, name: &str) -> u32 {
    env.spawn(
        name,
        &[
            "node",
            "--name",
            name,
            "--heartbeat-ms",
            "200",
            "--slots",
            "5000",
            "--memory-mb",
            "100000000",
            "--cpu-millicores",
            "100000000",
        ],
    )
}

fn started(by: &std::collections::BTreeMap<String, Vec<&'static str>>, id: &str) -> usize {
    by.get(id)
        .map_or(0, |k| k.iter().filter(|k| **k == "started").count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_replicas_all_run() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    // As in a cluster: nodes re-chain their facts with heads they ask the API for.
    env.spawn("api", &["api"]);
    let _ = big_node(&mut env, "n1");
    wait_until("the node to heartbeat", LONG, async || {
        env.log("scheduler").contains("node n1 heartbeats")
    })
    .await;
    let mut s = spec(Some("thousand"));
    s["replicas"] = 1000.into();
    s["memory_mb"] = 1.into();
    s["cpu_millicores"] = 1.into();
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    env.wait_for("1,000 copies to run", LONG, |by| {
        started(by, "thousand") == 1000
    })
    .await;
    let evs = env.events(&subjects_of("thousand")).await;
    assert_eq!(
        evs.iter()
            .filter(|(_, _, e)| e.kind() == "scheduled")
            .count(),
        1000,
        "each replica placed once"
    );
    assert_chains(&evs);
}

/// A node holding 500 replicas of one workload is lost at once: the failover's 1,000 events
/// for that workload (a `lost` and a `replica_requested` each) go in head-checked batches,
/// and every copy runs again on the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_500_replicas_of_one_workload_lost_at_once() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "2000"]);
    let n2 = big_node(&mut env, "n2");
    env.wait_ready("n2").await;
    let mut s = spec(Some("five-hundred"));
    s["replicas"] = 500.into();
    s["memory_mb"] = 1.into();
    s["cpu_millicores"] = 1.into();
    s["restart"] = serde_json::json!({"policy": "always"});
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    env.wait_for("500 copies to run on n2", LONG, |by| {
        started(by, "five-hundred") == 500
    })
    .await;
    let _ = big_node(&mut env, "n1");
    env.wait_ready("n1").await;
    env.sigkill(n2);
    env.wait_for("500 copies to run again on n1", LONG, |by| {
        started(by, "five-hundred") == 1000
    })
    .await;
    let evs = env.events(&subjects_of("five-hundred")).await;
    let on_n1 = evs
        .iter()
        .filter(|(_, _, e)| {
            matches!(&e.body, bulkhead_schemas::event::EventBody::Started(s) if s.node == "n1")
        })
        .count();
    assert_eq!(on_n1, 500, "each lost copy once, on n1");
    assert_eq!(
        evs.iter().filter(|(_, _, e)| e.kind() == "lost").count(),
        500
    );
    assert_chains(&evs);
}

fn subjects_of(id: &str) -> String {
    bulkhead_schemas::subjects::workload_events(&key(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_specs_with_many_replicas_start_and_hold_up_no_one() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    // As in a cluster: nodes re-chain their facts with heads they ask the API for.
    env.spawn("api", &["api"]);
    let _ = big_node(&mut env, "n1");
    let _ = big_node(&mut env, "n2");
    wait_until("the nodes to heartbeat", LONG, async || {
        let log = env.log("scheduler");
        log.contains("node n1 heartbeats") && log.contains("node n2 heartbeats")
    })
    .await;
    // About 60 KiB of spec (the ceiling is 64 KiB) and 200 replicas: 12 MB of start ops,
    // over the server's 8 MB max_payload had they gone in one message.
    let mut big = spec(Some("big"));
    big["replicas"] = 200.into();
    big["memory_mb"] = 1.into();
    big["cpu_millicores"] = 1.into();
    big["env"] = serde_json::json!({ "PADDING": "x".repeat(60 * 1024) });
    let small = spec(Some("small"));
    env.natspy_pub_many(
        SUBMIT,
        &[big.to_string().into_bytes(), small.to_string().into_bytes()],
    );
    env.wait_for("every copy of both to run", LONG, |by| {
        started(by, "big") == 200 && started(by, "small") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_would_leave_its_subject_is_refused_at_enrolment() {
    let env = env().await;
    for (what, name) in [
        ("node", "n1.evil"),
        ("node", "n1>"),
        ("tenant", "a.b"),
        ("tenant", "*"),
    ] {
        let mut c = env.cli();
        c.args([what, "add", name]);
        if what == "node" {
            c.args(["--classes", "runc"]);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{what} {name} enrolled");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("[A-Za-z0-9_-]"), "{what} {name}: {err}");
    }
}
