//! The control plane when NATS itself fails, or its own processes die: a nats-server down
//! for 6 s and started again (same port, same store) declares no healthy node lost, loses
//! nothing acknowledged, and the cluster takes work again; under a steady submission load,
//! the same outage and then a SIGKILL of the active scheduler, the active failover and a
//! node, in turn, lose no acknowledged submission, place no replica twice and declare no
//! living node lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead::auth::server;
use bulkhead::bus::Bus;
use bulkhead::natsd::{NatsServer, Security, Sync};
use bulkhead_schemas::event::EventBody;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;

use common::*;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_down_for_six_seconds_declares_no_node_lost() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "3000"]);
    env.spawn("api", &["api"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    let mut s = spec(Some("always"));
    s["restart"] = serde_json::json!({"policy": "always"});
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    env.wait_for("the workload to run", LONG, |by| {
        by.get("always").is_some_and(|k| k.contains(&"started"))
    })
    .await;

    restart_server(&mut env, Duration::from_secs(6)).await;

    // The cluster takes work again: the acknowledged submission and a new one both run.
    env.natspy_pub(SUBMIT, spec(Some("after")).to_string().as_bytes(), None);
    env.wait_for("work submitted after the outage to run", LONG, |by| {
        by.get("after").is_some_and(|k| k.contains(&"started"))
    })
    .await;
    // Well past the lost timeout since the server came back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lost = env.events("bulkhead.evt.node.n1.lost").await;
    assert!(
        lost.is_empty(),
        "n1 was declared lost: {lost:?}\n{}",
        env.log("failover")
    );
    let by = env.kinds_by_workload().await;
    assert!(!by["always"].contains(&"lost"), "{:?}", by["always"]);
    assert_eq!(
        by["always"].iter().filter(|k| **k == "started").count(),
        1,
        "still the one copy: {:?}",
        by["always"]
    );
    assert_chains(&env.events(subjects::EVT_WORKLOADS).await);
    for detector in ["failover", "scheduler"] {
        assert!(
            env.log(detector).contains("deaf to heartbeats")
                && env.log(detector).contains("ear=Connection"),
            "{detector} knew its blindness: {}",
            env.log(detector)
        );
    }
}

/// Stops the server, waits `down`, and starts it again on the same port with the same store
/// and users; the test's admin connection is made again.
async fn restart_server(env: &mut Env, down: Duration) {
    let port: u16 = env.server.url.rsplit(':').next().unwrap().parse().unwrap();
    env.server.kill();
    tokio::time::sleep(down).await;
    let security = Security::Users {
        authorization: server::authorization(&env.data.book().unwrap()),
        tls: None,
    };
    env.server = NatsServer::start(
        &env.data.nats_dir(),
        "127.0.0.1",
        port,
        Sync::Default,
        &security,
    )
    .expect("the server starts again");
    env.bus = Bus::connect_as(
        &env.server.url,
        &env.data.creds(Role::Admin, "admin").unwrap(),
    )
    .await
    .unwrap();
}

/// The event log's last sequence.
async fn last_seq(env: &Env) -> u64 {
    let mut s = env.bus.js.get_stream(subjects::EVT_STREAM).await.unwrap();
    s.info().await.unwrap().state.last_sequence
}

/// The pid in a lease holder's instance name (`scheduler-<pid>`, `failover-<pid>`).
async fn holder_pid(bus: &Bus, key: &str) -> Option<u32> {
    lease_holder_of(bus, key)
        .await?
        .rsplit('-')
        .next()?
        .parse()
        .ok()
}

fn sim_node(env: &mut Env, name: &str) -> u32 {
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
        ],
    )
}

/// Submissions at a steady pace until told to stop, each with its id as `Nats-Msg-Id`;
/// the ids JetStream acknowledged, and how many were tried.
async fn submitting(
    bus: Bus,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> usize {
    let mut tried = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let id = format!("c{tried}");
        tried += 1;
        let mut s = spec(Some(&id));
        s["restart"] = serde_json::json!({"policy": "always"});
        // Spread: the node killed later holds replicas that must run again elsewhere.
        s["placement"] = "spread".into();
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        let sent = async {
            bus.js
                .publish_with_headers(SUBMIT, h, s.to_string().into())
                .await
                .ok()?
                .await
                .ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), sent).await {
            acked.lock().unwrap().push(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tried
}

/// What the log says of a run: acknowledged submissions never accepted or not running on a
/// node other than `dead`, replicas with two copies live at once, workloads accepted twice,
/// nodes declared lost.
#[derive(Debug, Default)]
struct Tally {
    lost: Vec<String>,
    not_running: Vec<String>,
    duplicated: Vec<String>,
    nodes_lost: Vec<String>,
}

async fn tally(env: &Env, acked: &[String], dead: &str) -> Tally {
    let mut t = Tally::default();
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    // Live copies: (workload, replica) → nodes.
    let mut live: BTreeMap<(String, u32), BTreeSet<String>> = BTreeMap::new();
    let mut ever_started = BTreeSet::new();
    for (_, _, e) in env.events(subjects::EVT_WORKLOADS).await {
        let id = id_of(&e.subject).to_owned();
        match &e.body {
            EventBody::Accepted(_) => *accepted.entry(id).or_default() += 1,
            EventBody::Started(s) => {
                ever_started.insert(id.clone());
                let copies = live.entry((id.clone(), s.replica)).or_default();
                if !copies.is_empty() {
                    t.duplicated
                        .push(format!("{id}/{} on {copies:?} and {}", s.replica, s.node));
                }
                copies.insert(s.node.clone());
            }
            EventBody::Exited(x) => {
                live.entry((id, x.replica)).or_default().remove(&x.node);
            }
            EventBody::Stopped(x) => {
                live.entry((id, x.replica)).or_default().remove(&x.node);
            }
            EventBody::Lost(l) => {
                if let Some(r) = l.replica {
                    live.entry((id, r)).or_default().remove(&l.node);
                }
            }
            _ => {}
        }
    }
    t.duplicated.extend(
        accepted
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| format!("{id} accepted {n} times")),
    );
    for id in acked {
        if !accepted.contains_key(id) {
            t.lost.push(id.clone());
        } else if !live
            .iter()
            .any(|((w, _), nodes)| w == id && nodes.iter().any(|n| n != dead))
        {
            t.not_running.push(id.clone());
        }
    }
    for (_, _, e) in env.events(subjects::EVT_NODES).await {
        if let EventBody::Lost(l) = &e.body {
            t.nodes_lost.push(l.node.clone());
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_an_outage_and_sigkills_lose_nothing_acknowledged_and_place_nothing_twice() {
    let mut env = env().await;
    env.spawn("api", &["api"]);
    env.spawn("scheduler-a", &["scheduler"]);
    env.spawn("scheduler-b", &["scheduler"]);
    env.spawn("failover-a", &["failover", "--lost-timeout-ms", "3000"]);
    env.spawn("failover-b", &["failover", "--lost-timeout-ms", "3000"]);
    sim_node(&mut env, "n1");
    let n2 = sim_node(&mut env, "n2");
    env.wait_ready("n1").await;
    env.wait_ready("n2").await;

    let tenant = Bus::connect_as(
        &env.server.url,
        &env.data.creds(Role::Tenant, TENANT).unwrap(),
    )
    .await
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(submitting(tenant, stop.clone(), acked.clone()));
    let pace = Duration::from_secs(5);

    // 1. nats-server down for 6 s.
    tokio::time::sleep(pace).await;
    restart_server(&mut env, Duration::from_secs(6)).await;
    tokio::time::sleep(pace).await;
    // 2. The active scheduler, SIGKILLed (the standby takes over; a new standby starts).
    let pid = holder_pid(&env.bus, subjects::SCHEDULER_LEASE_KEY)
        .await
        .expect("a scheduler holds the lease");
    env.sigkill(pid);
    env.spawn("scheduler-c", &["scheduler"]);
    tokio::time::sleep(pace).await;
    // 3. The active failover, likewise.
    let pid = holder_pid(&env.bus, subjects::FAILOVER_LEASE_KEY)
        .await
        .expect("a failover holds the lease");
    env.sigkill(pid);
    env.spawn("failover-c", &["failover", "--lost-timeout-ms", "3000"]);
    tokio::time::sleep(pace).await;
    // 4. Node n2, SIGKILLed for good: rightly lost, its replicas run again on n1.
    let killed_at = last_seq(&env).await;
    env.sigkill(n2);
    tokio::time::sleep(pace).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tried = load.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    // Everything acknowledged runs in the end.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let t = loop {
        let t = tally(&env, &acked, "n2").await;
        if t.lost.is_empty() && t.not_running.is_empty() && t.nodes_lost.iter().any(|n| n == "n2") {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acknowledged submissions not running after 90 s: {t:?}\n{}",
            ["failover-a", "failover-b", "failover-c"]
                .map(|f| format!("== {f}\n{}", env.log(f)))
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wrongly_lost: Vec<&String> = t.nodes_lost.iter().filter(|n| *n != "n2").collect();
    let n2_lost_after_kill = env
        .events(&subjects::node_event("n2", "lost"))
        .await
        .iter()
        .all(|(seq, _, _)| *seq > killed_at);
    eprintln!(
        "chaos: tried={tried} acknowledged={} lost={} not_running={} duplicated={} \
         nodes_wrongly_lost={} (n2 lost after its kill: {n2_lost_after_kill})",
        acked.len(),
        t.lost.len(),
        t.not_running.len(),
        t.duplicated.len(),
        wrongly_lost.len()
    );
    assert!(
        acked.len() > 100,
        "the load ran: {} of {tried}",
        acked.len()
    );
    assert!(
        t.lost.is_empty(),
        "acknowledged, never accepted: {:?}",
        t.lost
    );
    assert!(t.duplicated.is_empty(), "placed twice: {:?}", t.duplicated);
    assert!(
        wrongly_lost.is_empty(),
        "living nodes declared lost: {wrongly_lost:?}"
    );
    assert!(n2_lost_after_kill, "n2 declared lost before it was killed");
    // Every service lived through the outage: none exited (a standby used to, on the
    // lease's timeout while the server was away).
    for service in ["scheduler-a", "scheduler-b", "failover-a", "failover-b"] {
        let log = env.log(service);
        assert!(!log.contains("\nerror: "), "{service} exited:\n{log}");
    }
    assert!(
        t.nodes_lost.iter().any(|n| n == "n2"),
        "the killed node is lost: {:?}",
        t.nodes_lost
    );
    assert_chains(&env.events(subjects::EVT_WORKLOADS).await);
}
