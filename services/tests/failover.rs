//! Failover across processes: a real nats-server, the scheduler, the failover and sim
//! nodes as separate `bulkhead` processes, commands published with nats-py. Restart
//! policy, crash loops and backoff, a SIGKILLed node, a node cut off or frozen and back, a
//! SIGKILLed failover mid-storm, scale and drain.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::{parse_rfc3339_ms, subjects};
use common::*;

const LONG: Duration = Duration::from_secs(60);

fn node_args<'a>(name: &'a str, hb: &'a str) -> Vec<&'a str> {
    vec![
        "node",
        "--name",
        name,
        "--heartbeat-ms",
        hb,
        "--slots",
        "1000",
        "--memory-mb",
        "1000000",
        "--cpu-millicores",
        "1000000",
    ]
}

/// A workload of the sim runtime that exits with `code` after `after_ms`.
fn crashing(id: &str, policy: &str, after_ms: u64, code: i32) -> serde_json::Value {
    let mut s = spec(Some(id));
    s["env"] = serde_json::json!({"SIM_EXIT_AFTER_MS": after_ms.to_string(),
                                  "SIM_EXIT_CODE": code.to_string()});
    s["restart"] = serde_json::json!({"policy": policy, "max_restarts": 4, "window_s": 600,
        "backoff_initial_ms": 200, "backoff_max_ms": 1000});
    s
}

async fn workload_events(env: &Env) -> BTreeMap<String, Vec<Event>> {
    let mut by: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for (_, _, e) in env.events(subjects::EVT_WORKLOADS).await {
        by.entry(id_of(&e.subject).to_owned()).or_default().push(e);
    }
    by
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::kind).collect()
}

/// Each `exited` of a replica is followed by exactly one failover decision before the
/// replica is placed again: never none (a missed exit), never two (a double restart).
fn assert_each_exit_decided_once(id: &str, events: &[Event]) {
    let mut open: BTreeMap<u32, bool> = BTreeMap::new(); // replica → undecided exit
    for e in events {
        match &e.body {
            EventBody::Exited(x) => {
                assert!(
                    !open.get(&x.replica).copied().unwrap_or(false),
                    "{id}: two exits of replica {} without a decision: {:?}",
                    x.replica,
                    kinds(events)
                );
                open.insert(x.replica, true);
            }
            EventBody::ReplicaRequested(r) => {
                assert_eq!(
                    open.insert(r.replica, false),
                    Some(true),
                    "{id}: replica {} requested without an undecided exit: {:?}",
                    r.replica,
                    kinds(events)
                );
            }
            EventBody::GaveUp(g) => {
                assert_eq!(
                    open.insert(g.replica, false),
                    Some(true),
                    "{id}: gave up without an exit: {:?}",
                    kinds(events)
                );
            }
            _ => {}
        }
    }
}

fn at_ms(e: &Event) -> u64 {
    parse_rfc3339_ms(&e.at).expect("event times parse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_backoff_and_budget() {
    let mut env = env().await;
    env.spawn("node", &node_args("n1", "200"));
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover"]);
    env.spawn("api", &["api"]);
    for s in [
        crashing("loop", "always", 100, 1),
        crashing("ok-once", "on-failure", 100, 0),
        crashing("never", "never", 100, 3),
    ] {
        env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    }
    env.wait_for("the crash loop to be given up", LONG, |by| {
        by.get("loop").is_some_and(|k| k.contains(&"gave_up"))
    })
    .await;
    let by = workload_events(&env).await;

    // on-failure: exit 0 ends it, succeeded; never: an exit 3 stays failed. The failover
    // read both before it gave up on `loop` (one log, in order), so nothing is pending.
    assert_eq!(
        kinds(&by["ok-once"]),
        ["accepted", "scheduled", "started", "exited"]
    );
    assert_eq!(
        kinds(&by["never"]),
        ["accepted", "scheduled", "started", "exited"]
    );

    let lp = &by["loop"];
    assert_each_exit_decided_once("loop", lp);
    let requested: Vec<_> = lp
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ReplicaRequested(r) => Some((e, r)),
            _ => None,
        })
        .collect();
    assert_eq!(requested.len(), 4, "max_restarts 4: {:?}", kinds(lp));
    let EventBody::GaveUp(g) = &lp.last().unwrap().body else {
        panic!("ends with gave_up: {:?}", kinds(lp))
    };
    assert!(
        g.reason.contains("restart budget exhausted"),
        "{}",
        g.reason
    );
    // The gaps follow the backoff: 200, 400, 800, 1000 ms (jitter takes up to a quarter
    // off), from the decision to the next placement.
    for (i, (ev, r)) in requested.iter().enumerate() {
        assert_eq!(r.attempt, i as u32 + 1);
        let full = (200u64 << i).min(1000);
        let nb = parse_rfc3339_ms(&r.not_before).unwrap();
        let delay = nb - at_ms(ev);
        assert!(
            delay >= full * 3 / 4 && delay <= full + 5,
            "attempt {}: backoff {delay} ms, expected {}..={full}",
            r.attempt,
            full * 3 / 4
        );
        let pos = lp.iter().position(|e| e.id == ev.id).unwrap();
        let placed = lp[pos..]
            .iter()
            .find(|e| e.kind() == "scheduled")
            .expect("placed after the request");
        assert!(
            at_ms(placed) + 2 >= nb,
            "attempt {} placed {} ms before its backoff ended",
            r.attempt,
            nb - at_ms(placed)
        );
    }
    // What `bulkhead get` shows: restarts, the last exit, that the failover gave up.
    let w: serde_json::Value = serde_json::from_str(&env.natspy_req(GET, "loop").unwrap()).unwrap();
    assert_eq!(w["state"], "failed", "{w}");
    let r = &w["replicas"][0];
    assert_eq!(
        (r["restarts"].as_u64(), r["exit_code"].as_i64()),
        (Some(4), Some(1)),
        "{w}"
    );
    assert_eq!(r["gave_up"], true);
    assert!(
        w["reason"]
            .as_str()
            .unwrap()
            .contains("restart budget exhausted")
    );
    // The CLI says the same.
    let cli = |args: &[&str]| {
        env.cli()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let got = cli(&["get", "loop", "-o", "json"])
        .wait_with_output()
        .unwrap();
    assert!(got.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(shown["replicas"][0]["restarts"], 4, "{shown}");
    assert_eq!(shown["replicas"][0]["exit_code"], 1);
    // For people: the replica's restarts and why it ended.
    let got = cli(&["get", "loop"]).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(text.contains("restart budget exhausted"), "{text}");
    // `bulkhead events --type exited,replica_requested` follows the failovers (it follows
    // until stopped: read what it printed in two seconds). The log's history is an
    // admin's to read.
    let admin = env.creds_path(bulkhead_schemas::identity::Role::Admin, "admin");
    let follower = cli(&[
        "--creds",
        admin.to_str().unwrap(),
        "events",
        "--workload",
        "loop",
        "--type",
        "exited,replica_requested",
        "--from-start",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let pid = follower.id().to_string();
    let _ = std::process::Command::new("kill").arg(&pid).status();
    let out = follower.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "exited").count(),
        5,
        "{text}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "replica_requested").count(),
        4,
        "{text}"
    );
    assert_eq!(kinds.len(), 9, "nothing else: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_past_the_heartbeat_budget_beat_at_the_cluster_s_pace_and_are_not_lost() {
    // A budget of one heartbeat a second: two nodes beating every 100 ms are told (by a
    // signed `pace` op) to beat every 2 s, and both watchers follow the interval their
    // beats now state; held to the old one, a node would be lost at the lost timeout
    // (1.5 s, under the pace).
    let mut env = env().await;
    env.spawn("api", &["api"]);
    env.spawn("scheduler", &["scheduler", "--heartbeats-per-sec", "1"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "1500"]);
    env.spawn("n1", &node_args("n1", "100"));
    env.spawn("n2", &node_args("n2", "100"));
    for n in ["n1", "n2"] {
        wait_until(&format!("{n} to beat at the pace"), LONG, async || {
            env.node_interval_ms(n) == Some(2000)
        })
        .await;
    }
    // Two paces and more: each node beat at least twice at its new interval.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for n in ["n1", "n2"] {
        assert!(
            env.events(&format!("bulkhead.evt.node.{n}.lost"))
                .await
                .is_empty(),
            "{n} was declared lost: {}",
            env.log("failover")
        );
        assert_eq!(env.node_status(n), "ready");
        assert_eq!(env.node_interval_ms(n), Some(2000));
        assert_eq!(
            env.log(n)
                .matches("heartbeat paced by the scheduler")
                .count(),
            1,
            "{n} was told the pace once: {}",
            env.log(n)
        );
    }
    // A paced node still runs what it is given.
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    wait_until("w to run", LONG, async || {
        env.kinds_by_workload()
            .await
            .get("w")
            .is_some_and(|k| k.contains(&"started"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_node_is_lost_and_its_workloads_run_on_the_other() {
    let mut env = env().await;
    env.spawn("api", &["api"]);
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "1000"]);
    let n1 = env.spawn("n1", &node_args("n1", "200"));
    env.spawn("n2", &node_args("n2", "200"));
    wait_until("the scheduler to see both nodes", LONG, async || {
        let log = env.log("scheduler");
        log.contains("node n1 heartbeats") && log.contains("node n2 heartbeats")
    })
    .await;
    const N: usize = 40;
    let payloads: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut s = spec(Some(&format!("w{i}")));
            s["placement"] = "spread".into();
            s["restart"] = serde_json::json!({"policy": "on-failure"});
            s.to_string().into_bytes()
        })
        .collect();
    env.natspy_pub_many(SUBMIT, &payloads);
    env.wait_for("every workload to run", LONG, |by| {
        by.len() == N && by.values().all(|k| k.contains(&"started"))
    })
    .await;
    let on_n1: Vec<String> = workload_events(&env)
        .await
        .into_iter()
        .filter(|(_, evs)| {
            evs.iter()
                .any(|e| matches!(&e.body, EventBody::Scheduled(s) if s.node == "n1"))
        })
        .map(|(id, _)| id)
        .collect();
    assert!(!on_n1.is_empty(), "spread placed work on n1");

    env.sigkill(n1);
    env.wait_for("n1's workloads to run on n2", LONG, |by| {
        on_n1.iter().all(|id| {
            let k = &by[id];
            k.ends_with(&["lost", "replica_requested", "scheduled", "started"])
        })
    })
    .await;
    let by = workload_events(&env).await;
    for id in &on_n1 {
        let evs = &by[id];
        let EventBody::Scheduled(s) = &evs[evs.len() - 2].body else {
            unreachable!()
        };
        assert_eq!(s.node, "n2", "{id} replaced on the live node");
        let lost = evs.iter().find(|e| e.kind() == "lost").unwrap();
        assert_eq!(lost.actor.service, "failover");
    }
    // None lost, none doubled: every workload has exactly one running copy, on n2 or
    // where it always ran.
    for (id, evs) in &by {
        let started = evs.iter().filter(|e| e.kind() == "started").count();
        let ended = evs
            .iter()
            .filter(|e| matches!(e.kind(), "lost" | "exited"))
            .count();
        assert_eq!(started - ended, 1, "{id}: {:?}", kinds(evs));
    }
    let node_lost = env.events("bulkhead.evt.node.n1.lost").await;
    assert_eq!(node_lost.len(), 1, "n1 declared lost once");
    assert_chains(&env.events(subjects::EVT_WORKLOADS).await);
}

/// A TCP proxy in front of the nats-server that can cut a client off and let it back.
struct Cutter {
    port: u16,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cutter {
    async fn start(upstream_url: &str) -> Cutter {
        let upstream = upstream_url.trim_start_matches("nats://").to_owned();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut c = Cutter {
            port,
            upstream,
            task: None,
        };
        c.serve(l);
        c
    }

    fn serve(&mut self, l: tokio::net::TcpListener) {
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut down, _)) = l.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        }));
    }

    /// Closes every connection and refuses new ones.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort(); // drops the listener and, with the JoinSet, every connection
        }
    }

    async fn restore(&mut self) {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(l);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A node cut off from NATS long enough to be declared lost reads no log: it hears of its
/// loss from the scheduler (a view sent when its replicas were lost, waiting in its ops
/// until it is back), removes the copies replaced meanwhile and says it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_hears_it_was_lost_and_removes_replaced_copies() {
    let mut env = env().await;
    env.spawn("api", &["api"]);
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "1000"]);
    env.spawn("n2", &node_args("n2", "200"));
    let mut cutter = Cutter::start(&env.server.url).await;
    let log = std::fs::File::create(env.dir.path().join("n1.log")).unwrap();
    env.enroll_node("n1", None);
    let mut n1 = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["--nats", &cutter.url()])
        .arg("--data-dir")
        .arg(env.data.root())
        .args(node_args("n1", "200"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until("the scheduler to see both nodes", LONG, async || {
        let log = env.log("scheduler");
        log.contains("node n1 heartbeats") && log.contains("node n2 heartbeats")
    })
    .await;
    let payloads: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let mut s = spec(Some(&format!("c{i}")));
            s["placement"] = "spread".into();
            s.to_string().into_bytes()
        })
        .collect();
    env.natspy_pub_many(SUBMIT, &payloads);
    env.wait_for("every workload to run", LONG, |by| {
        by.len() == 6 && by.values().all(|k| k.contains(&"started"))
    })
    .await;
    let on_n1: Vec<String> = workload_events(&env)
        .await
        .into_iter()
        .filter(|(_, evs)| nodes_of(evs) == ["n1"])
        .map(|(id, _)| id)
        .collect();
    assert!(!on_n1.is_empty(), "spread placed work on n1");

    // Cut off, n1 runs on but misses the `lost` message: its copies are replaced on n2.
    cutter.cut();
    env.wait_for("n1's workloads to run on n2", LONG, |by| {
        on_n1
            .iter()
            .all(|id| by[id].ends_with(&["lost", "replica_requested", "scheduled", "started"]))
    })
    .await;
    cutter.restore().await;
    // Back, it finds its loss in the log, removes the copies replaced meanwhile, and says
    // it is back (once per view of a loss: the losses may come in more than one).
    wait_until("n1 to join again", LONG, async || {
        env.events("bulkhead.evt.node.n1.joined").await.len() >= 2
    })
    .await;
    wait_until("n1 to remove its replaced copies", LONG, async || {
        let removed: usize = env
            .log("n1")
            .lines()
            .filter(|l| l.contains("reconciled with the scheduler's view"))
            .filter_map(|l| {
                l.split("removed=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        removed == on_n1.len()
    })
    .await;
    let _ = n1.kill();
    let _ = n1.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_node_frozen_past_its_limit_is_lost_and_listed_ready_once_it_hears() {
    // No replica of n1 is lost with it: only the node's own `lost` tells the scheduler to
    // send it its view, from which it learns of the loss and says it is back.
    let mut env = env().await;
    env.spawn("api", &["api"]);
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "1000"]);
    let n1 = env.spawn("n1", &node_args("n1", "200"));
    env.wait_ready("n1").await;
    assert_eq!(env.events("bulkhead.evt.node.n1.joined").await.len(), 1);

    env.signal(n1, "-STOP");
    wait_until("n1 to be declared lost", LONG, async || {
        !env.events("bulkhead.evt.node.n1.lost").await.is_empty()
    })
    .await;
    assert_eq!(env.node_status("n1"), "lost");
    env.signal(n1, "-CONT");
    wait_until("n1 to say it is back", LONG, async || {
        env.events("bulkhead.evt.node.n1.joined").await.len() >= 2
    })
    .await;
    env.wait_ready("n1").await;
    assert!(
        env.log("n1").contains("this node was declared lost"),
        "n1 heard of its loss: {}",
        env.log("n1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_killed_mid_storm_decides_every_exit_exactly_once() {
    let mut env = env().await;
    // The API too, as in a cluster: a node that the storm's load makes late to heartbeat
    // is declared lost, and re-chains its facts with heads it asks the API for.
    env.spawn("api", &["api"]);
    env.spawn("node", &node_args("n1", "200"));
    env.spawn("scheduler", &["scheduler"]);
    // Losses are another test's subject: on a loaded machine the storm can delay the
    // node's heartbeats by seconds, so the failovers wait long before calling it lost.
    let first = env.spawn("failover-a", &["failover", "--lost-timeout-ms", "30000"]);
    wait_until("failover a to be active", LONG, async || {
        env.log("failover-a").contains("failover active")
    })
    .await;
    const N: usize = 60;
    let payloads: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut s = crashing(&format!("c{i}"), "always", 150, 2);
            s["restart"]["backoff_initial_ms"] = 50.into();
            s["restart"]["backoff_max_ms"] = 200.into();
            s["restart"]["max_restarts"] = 3.into();
            s.to_string().into_bytes()
        })
        .collect();
    env.natspy_pub_many(SUBMIT, &payloads);
    // Kill the failover while the storm is under way: some restarts requested, not all.
    env.wait_for("the storm to be under way", LONG, |by| {
        by.values()
            .filter(|k| k.contains(&"replica_requested"))
            .count()
            >= N / 4
    })
    .await;
    env.sigkill(first);
    let killed_at = workload_events(&env).await;
    let decided_before: usize = killed_at
        .values()
        .flatten()
        .filter(|e| matches!(e.kind(), "replica_requested" | "gave_up"))
        .count();
    assert!(
        decided_before < N * 4,
        "the failover died before the storm ended"
    );
    env.spawn("failover-b", &["failover", "--lost-timeout-ms", "30000"]);
    env.wait_for("every crash loop to end", LONG, |by| {
        by.len() == N && by.values().all(|k| k.contains(&"gave_up"))
    })
    .await;
    let by = workload_events(&env).await;
    for (id, evs) in &by {
        assert_each_exit_decided_once(id, evs);
        let restarts = evs
            .iter()
            .filter(|e| e.kind() == "replica_requested")
            .count();
        assert_eq!(restarts, 3, "{id}: {:?}", kinds(evs));
        assert_eq!(evs.iter().filter(|e| e.kind() == "exited").count(), 4);
    }
    assert_chains(&env.events(subjects::EVT_WORKLOADS).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_drain_keep_the_replica_count() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover"]);
    env.spawn("api", &["api"]);
    let n1 = env.spawn("n1", &node_args("n1", "200"));
    let mut s = spec(Some("web"));
    s["replicas"] = 2.into();
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    env.wait_for("both replicas on n1", LONG, |by| {
        by.get("web")
            .is_some_and(|k| k.iter().filter(|x| **x == "started").count() == 2)
    })
    .await;
    env.spawn("n2", &node_args("n2", "200"));

    // Scale up to 4, then down to 3, as `nats pub` would.
    env.natspy_pub(SCALE, br#"{"id":"web","replicas":4}"#, None);
    env.wait_for("four replicas", LONG, |by| {
        by["web"].iter().filter(|x| **x == "started").count() == 4
    })
    .await;
    env.natspy_pub(SCALE, br#"{"id":"web","replicas":3}"#, None);
    env.wait_for("replica 3 stopped", LONG, |by| {
        by["web"].contains(&"stopped")
    })
    .await;
    let evs = &workload_events(&env).await["web"];
    let stopped: Vec<u32> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Stopped(s) => Some(s.replica),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, [3], "the highest replica is retired");
    assert!(evs.iter().any(|e| e.kind() == "scaled"));

    // Drain n1: each of its replicas starts on n2 before its n1 copy stops.
    env.natspy_pub_admin(subjects::CTL_DRAIN, br#"{"node":"n1"}"#);
    wait_until("n1 drained", LONG, async || {
        !env.events("bulkhead.evt.node.n1.drained").await.is_empty()
    })
    .await;
    let evs = &workload_events(&env).await["web"];
    let mut running: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut min_running = usize::MAX;
    let mut moved = 0;
    let mut drain_started = false;
    for e in evs {
        match &e.body {
            EventBody::Scheduled(s) if s.replaces.is_some() => {
                drain_started = true;
                moved += 1;
                assert_eq!(s.node, "n2");
            }
            EventBody::Started(s) => running.entry(s.replica).or_default().push(s.node.clone()),
            EventBody::Stopped(s) => {
                running
                    .entry(s.replica)
                    .or_default()
                    .retain(|n| *n != s.node);
            }
            _ => {}
        }
        if drain_started {
            let live = running.values().filter(|v| !v.is_empty()).count();
            min_running = min_running.min(live);
        }
    }
    assert!(moved >= 1, "n1's replicas moved: {:?}", kinds(evs));
    assert_eq!(min_running, 3, "the count never dropped during the drain");
    for (replica, nodes) in &running {
        if *replica < 3 {
            assert_eq!(nodes, &["n2"], "replica {replica} ends on n2 only");
        }
    }
    wait_until("the API to show n1 drained", LONG, async || {
        env.node_status("n1") == "drained"
    })
    .await;

    // Nothing new lands on the drained node, even once it has restarted.
    env.sigkill(n1);
    env.spawn("n1-again", &node_args("n1", "200"));
    wait_until("n1 to join again", LONG, async || {
        env.events("bulkhead.evt.node.n1.joined").await.len() == 2
    })
    .await;
    env.natspy_pub(SUBMIT, spec(Some("later")).to_string().as_bytes(), None);
    env.wait_for("`later` to start", LONG, |by| {
        by.get("later").is_some_and(|k| done(k))
    })
    .await;
    assert_eq!(nodes_of(&workload_events(&env).await["later"]), ["n2"]);
    assert_eq!(
        env.node_status("n1"),
        "drained",
        "a restart keeps the drain"
    );

    // Undrained (with the CLI), n1 takes work again: draining n2 moves everything to n1.
    let st = env.cli().args(["node", "undrain", "n1"]).status().unwrap();
    assert!(st.success());
    wait_until("the API to show n1 ready", LONG, async || {
        env.node_status("n1") == "ready"
    })
    .await;
    assert_eq!(env.events("bulkhead.evt.node.n1.undrained").await.len(), 1);
    env.natspy_pub_admin(subjects::CTL_DRAIN, br#"{"node":"n2"}"#);
    wait_until("n2 drained", LONG, async || {
        !env.events("bulkhead.evt.node.n2.drained").await.is_empty()
    })
    .await;
    for id in ["web", "later"] {
        let view: bulkhead_schemas::api::WorkloadView =
            serde_json::from_str(&env.natspy_req(GET, id).unwrap()).unwrap();
        let running: Vec<_> = view
            .replicas
            .iter()
            .take(view.desired as usize)
            .map(|r| (r.state, r.node.as_deref()))
            .collect();
        let on_n1 = (WorkloadState::Running, Some("n1"));
        assert!(running.iter().all(|r| *r == on_n1), "{id}: {running:?}");
    }
    // Undraining a node that is not drained writes nothing.
    env.natspy_pub_admin(subjects::CTL_UNDRAIN, br#"{"node":"n1"}"#);
    env.natspy_pub_admin(subjects::CTL_UNDRAIN, br#"{"node":"n2"}"#);
    wait_until("n2 ready", LONG, async || env.node_status("n2") == "ready").await;
    assert_eq!(env.events("bulkhead.evt.node.n1.undrained").await.len(), 1);
}

/// The nodes a workload's replicas were scheduled on, in log order.
fn nodes_of(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Scheduled(s) => Some(s.node.clone()),
            _ => None,
        })
        .collect()
}
