//! The control plane when NATS itself fails, or its own processes die: a nats-server down
//! for 6 s and started again (same port, same store) declares no healthy node lost, loses
//! nothing acknowledged, and the cluster takes work again; under a steady submission load,
//! the same outage and then a SIGKILL of the active scheduler, the active failover and a
//! node, in turn, lose no acknowledged submission, place no replica twice and declare no
//! living node lost; a heartbeat bucket that comes back shorter from a crash is heard again.

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

/// A crash of the server's machine can lose the heartbeats written unsynced: the bucket comes
/// back with its sequence below what the watchers had seen. They start their watch again when
/// the connection comes back, and hear the node's next beats; a watch resumed after the last
/// entry it had delivered would hear nothing until the bucket caught up, and the failover
/// would declare the beating node lost meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_bucket_come_back_shorter_is_heard_again() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover", "--lost-timeout-ms", "3000"]);
    env.spawn("api", &["api"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.wait_ready("n1").await;

    // The bucket as a crash will leave it: copied while the server is down.
    let bucket = nodes_bucket_dir(&env);
    let saved = env.dir.path().join("saved-bucket");
    restart_server_with(&mut env, Duration::from_secs(1), |_| {
        copy_dir(&bucket, &saved)
    })
    .await;
    let kept = bucket_seq(&env).await;
    // 15 s of beats (75) the crash will lose.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let seen = bucket_seq(&env).await;
    assert!(seen >= kept + 50, "beats went on: {kept} then {seen}");
    restart_server_with(&mut env, Duration::from_secs(1), |_| {
        copy_dir(&saved, &bucket)
    })
    .await;
    assert!(
        bucket_seq(&env).await < kept + 10,
        "the bucket came back shorter"
    );

    // Twice the lost timeout, and less than the bucket takes to catch up (n1 beats 5 times a
    // second).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(bucket_seq(&env).await < seen, "still behind");
    let lost: Vec<_> = (env.events("bulkhead.evt.node.n1.lost").await)
        .into_iter()
        .map(|(_, _, e)| e.body)
        .collect();
    assert!(
        lost.is_empty(),
        "n1 was declared lost: {lost:?}\n{}",
        env.log("failover")
    );
    for watcher in ["failover", "scheduler"] {
        assert!(
            env.log(watcher).contains("the connection came back"),
            "{watcher} started its watch again: {}",
            env.log(watcher)
        );
    }
}

/// Stops the server, waits `down`, and starts it again on the same port with the same store
/// and users; the test's admin connection is made again.
async fn restart_server(env: &mut Env, down: Duration) {
    restart_server_with(env, down, |_| ()).await;
}

/// As [`restart_server`], doing `meanwhile` to the server's store once it is down (killed, as
/// a crash would).
async fn restart_server_with(env: &mut Env, down: Duration, meanwhile: impl FnOnce(&Env)) {
    let port: u16 = env.server.url.rsplit(':').next().unwrap().parse().unwrap();
    env.server.kill();
    meanwhile(env);
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

/// The directory where the server stores the heartbeat bucket's stream.
fn nodes_bucket_dir(env: &Env) -> std::path::PathBuf {
    let name = format!("KV_{}", subjects::NODES_BUCKET);
    let mut todo = vec![env.data.nats_dir().join("jetstream")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name() == name.as_str() {
                return path;
            }
            todo.push(path);
        }
    }
    panic!("no {name} under the server's store");
}

/// Copies the directory `from` to `to` (replacing `to`).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// The heartbeat bucket's last sequence (each beat is one).
async fn bucket_seq(env: &Env) -> u64 {
    last_seq_of(env, &format!("KV_{}", subjects::NODES_BUCKET)).await
}

/// The event log's last sequence.
async fn last_seq(env: &Env) -> u64 {
    last_seq_of(env, subjects::EVT_STREAM).await
}

/// The last sequence of the stream `name`.
async fn last_seq_of(env: &Env, name: &str) -> u64 {
    let mut s = env.bus.js.get_stream(name).await.unwrap();
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
