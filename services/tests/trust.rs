//! Signed facts against stolen-but-valid keys (each identity's key used for what its role
//! may not say), poison a reader must rebuild past, ops not signed by the scheduler, and
//! revocation. Real nats-server with authentication; sim nodes as processes.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use bulkhead::bus::Bus;
use bulkhead_actors::ports::log::{EventLog, WorkloadAppend};
use bulkhead_actors::signing::{
    CERT_HEADER, Context, SIG_HEADER, Signer, seal_event, sign_batch_in,
};
use bulkhead_schemas::event::{
    Accepted, Event, EventBody, Exited, Hash, ScanCompleted, Scheduled, hash_bytes,
};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::scan::Verdict;
use bulkhead_schemas::{ChainHead, NodeOp, NodeOps, RuntimeClass, subjects};
use common::*;

const LONG: Duration = Duration::from_secs(60);

fn node(name: &str) -> Vec<String> {
    [
        "node",
        "--name",
        name,
        "--runtime",
        "sim",
        "--heartbeat-ms",
        "200",
        "--slots",
        "100",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn spawn_node(env: &mut Env, name: &str, extra: &[&str]) {
    let mut args = node(name);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.spawn(name, &args);
}

/// A connection as `role` `name`: what a thief of that key could do.
async fn stolen(env: &Env, role: Role, name: &str) -> Bus {
    Bus::connect_as(&env.server.url, &env.data.creds(role, name).unwrap())
        .await
        .unwrap()
}

async fn wait_aside(env: &Env, code: &str, n: u64) {
    wait_until(&format!("{n} set aside as {code}"), LONG, async || {
        env.aside().await.by_code.get(code).copied().unwrap_or(0) >= n
    })
    .await;
}

/// The workload `id` as the query API shows it.
fn get(env: &Env, id: &str) -> serde_json::Value {
    serde_json::from_str(&env.natspy_req(GET, id).unwrap()).unwrap()
}

/// Appends `body` to workload `id`'s chain as `bus`'s identity, chain-correct: after the
/// last message stored, naming `prev` (the last applied event's hash; by default the last
/// message's).
async fn append_as(env: &Env, bus: &Bus, id: &str, body: EventBody, prev: Option<Hash>) {
    let mut head = env.bus.head(&key(id)).await.unwrap().unwrap();
    if let Some(prev) = prev {
        head.hash = prev;
    }
    let ev = Event::new("forger", &key(id), None, body);
    let out = bus
        .log()
        .unwrap()
        .append(vec![WorkloadAppend::after(&key(id), head, vec![ev])])
        .await;
    assert!(out[0].is_ok(), "stored: {:?}", out[0]);
}

fn submit(env: &Env, id: &str, extra: serde_json::Value) {
    let mut s = spec(Some(id));
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
}

async fn wait_started(env: &Env, id: &str) {
    env.wait_for(&format!("{id} to start"), LONG, |by| {
        by.get(id).is_some_and(|k| k.contains(&"started"))
    })
    .await;
}

fn scan_event(image: &str, at_ms: u64) -> Event {
    let body = ScanCompleted {
        image: image.into(),
        digest: "sha256:aa".into(),
        job: "forged".into(),
        worker: "w1".into(),
        verdict: Some(Verdict {
            ecosystem: Some("Debian:12".into()),
            os: "debian".into(),
            packages: 1,
            counts: Default::default(),
            findings: Vec::new(),
            note: None,
        }),
        error: None,
        layers: Vec::new(),
    };
    let mut ev = Event::new(
        "scanner/w1",
        "sha256:aa",
        None,
        EventBody::ScanCompleted(body),
    );
    ev.at = bulkhead_schemas::rfc3339_from_ms(at_ms);
    ev
}

/// A node's key writing about a copy it does not run, a scanner's key replaying an old
/// clean verdict, a heartbeat offering a class the node was not enrolled with: none is
/// applied, each is counted as set aside, and every service goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stolen_keys_forge_no_fact() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("failover", &["failover"]);
    env.spawn("api", &["api"]);
    spawn_node(&mut env, "n1", &[]);
    env.wait_ready("n1").await;
    submit(&env, "w", serde_json::json!({}));
    wait_started(&env, "w").await;
    spawn_node(&mut env, "n2", &[]);
    env.wait_ready("n2").await;

    let n2 = stolen(&env, Role::Node, "n2").await;
    let applied = env.bus.head(&key("w")).await.unwrap().unwrap().hash;
    // n2 says the copy on n1 ended.
    let about_n1 = EventBody::Exited(Exited {
        replica: 0,
        node: "n1".into(),
        code: 0,
        reason: "completed".into(),
        finished_at: bulkhead_schemas::now_rfc3339(),
    });
    append_as(&env, &n2, "w", about_n1, Some(applied)).await;
    wait_aside(&env, "no_authority", 1).await;
    // n2 says, under its own name, that it ran the copy and it ended.
    let own_name = EventBody::Exited(Exited {
        replica: 0,
        node: "n2".into(),
        code: 0,
        reason: "completed".into(),
        finished_at: bulkhead_schemas::now_rfc3339(),
    });
    append_as(&env, &n2, "w", own_name, Some(applied)).await;
    wait_aside(&env, "not_its_node", 1).await;
    assert_eq!(get(&env, "w")["state"], "running", "neither was applied");
    // The chain is not wedged: the real writers go on appending to it (a stop).
    env.natspy_pub(STOP, br#"{"id":"w","grace_secs":0}"#, None);
    env.wait_for("w to stop", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"stopped"))
    })
    .await;

    // The scanner's key replays a clean verdict from yesterday for an image a gate waits on.
    submit(
        &env,
        "gated",
        serde_json::json!({"image": "localhost/gated:1", "trust": "untrusted", "runtime_class": "gvisor"}),
    );
    env.wait_for("gated to wait for its scan", LONG, |by| {
        by.get("gated")
            .is_some_and(|k| k.contains(&"scan_requested"))
    })
    .await;
    let scanner = stolen(&env, Role::Scanner, "scanner").await;
    let yesterday = bulkhead_schemas::now_ms() - 86_400_000;
    scanner
        .log()
        .unwrap()
        .publish_scan(scan_event("localhost/gated:1", yesterday))
        .await
        .unwrap();
    wait_aside(&env, "out_of_limits", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gated = get(&env, "gated");
    assert!(gated["scan"].is_null(), "no verdict reached it: {gated}");
    let kinds = env.kinds_by_workload().await;
    assert!(!kinds["gated"].contains(&"scan_completed"), "{kinds:?}");

    // A node enrolled for runc heartbeats runc and confidential: ignored, and counted.
    env.enroll_node("n3", Some("runc"));
    spawn_node(&mut env, "n3", &["--classes", "runc,confidential"]);
    let env_ref = &env;
    wait_until(
        "the scheduler to set the heartbeat aside",
        LONG,
        async || env_ref.log("scheduler").contains("unenrolled_class"),
    )
    .await;
    submit(
        &env,
        "secret",
        serde_json::json!({"runtime_class": "confidential"}),
    );
    env.wait_for("secret to be admitted", LONG, |by| {
        by.contains_key("secret")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get(&env, "secret")["state"],
        "pending",
        "no node may run it"
    );

    // Everyone still serves: a new workload runs.
    submit(&env, "after", serde_json::json!({}));
    wait_started(&env, "after").await;
    let counts = env.aside().await;
    assert!(counts.total >= 3, "{counts:?}");
    assert!(
        counts.recent.iter().all(|a| a.seq > 0),
        "each with its sequence"
    );
}

/// Poison signed with keys whose role may write those types (stolen scheduler and scanner
/// keys): a replica count past any limit, a verdict dated a year ahead, a node name with
/// dots. Every reader sets them aside live and rebuilds past them after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_set_aside_live_and_after_every_restart() {
    let mut env = env().await;
    let readers = [
        ("scheduler", vec!["scheduler"]),
        ("failover", vec!["failover"]),
        ("api", vec!["api"]),
    ];
    let mut pids: Vec<u32> = readers
        .iter()
        .map(|(log, args)| env.spawn(log, args))
        .collect();
    spawn_node(&mut env, "n1", &[]);
    env.wait_ready("n1").await;
    submit(&env, "victim", serde_json::json!({}));
    wait_started(&env, "victim").await;

    let scheduler = stolen(&env, Role::Scheduler, "scheduler").await;
    let mut huge: bulkhead_schemas::WorkloadSpec =
        serde_json::from_value(spec(Some("huge"))).unwrap();
    huge.replicas = u32::MAX;
    let accepted = Event::new(
        "scheduler",
        &key("huge"),
        None,
        EventBody::Accepted(Accepted {
            spec: huge,
            cmd_seq: 1,
            by: Default::default(),
            pending: None,
        }),
    );
    let out = scheduler
        .log()
        .unwrap()
        .append(vec![WorkloadAppend::new(&key("huge"), vec![accepted])])
        .await;
    assert!(out[0].is_ok());
    let dotted = EventBody::Scheduled(Scheduled {
        replica: 0,
        node: "a.b".into(),
        runtime_class: RuntimeClass::Runc,
        replaces: None,
    });
    append_as(&env, &scheduler, "victim", dotted, None).await;
    let scanner = stolen(&env, Role::Scanner, "scanner").await;
    let next_year = bulkhead_schemas::now_ms() + 365 * 86_400_000;
    scanner
        .log()
        .unwrap()
        .publish_scan(scan_event("localhost/busybox:1", next_year))
        .await
        .unwrap();
    wait_aside(&env, "out_of_limits", 3).await;

    // Every reader, restarted, rebuilds past the poison and serves.
    for (pid, (log, args)) in pids.iter_mut().zip(&readers) {
        env.sigkill(*pid);
        *pid = env.spawn(&format!("{log}-again"), args);
    }
    let env_ref = &env;
    for log in ["scheduler-again", "failover-again"] {
        wait_until(&format!("{log} to rebuild"), LONG, async || {
            let l = env_ref.log(log);
            l.contains("rebuilt") && l.contains("out_of_limits")
        })
        .await;
    }
    wait_aside(&env, "out_of_limits", 3).await;
    assert_eq!(get(&env, "victim")["state"], "running");
    let err = env.natspy_req(GET, "huge").unwrap_err();
    assert!(err.contains("no workload huge"), "{err}");
    submit(&env, "after", serde_json::json!({}));
    wait_started(&env, "after").await;
}

/// Signed ops, as the scheduler sends them: `by`'s key over the payload, with `cert`.
/// The scheduler's enrolment as its ops carry it (`Bulkhead-Cert`), and its key.
async fn scheduler_cert(env: &Env) -> (String, Signer) {
    let (cert_payload, _, cert_sig) = env
        .bus
        .last_message_signed(&subjects::sys_event("scheduler", "scheduler", "enrolled"))
        .await
        .unwrap()
        .unwrap();
    let cert = format!("{} {}", hex::encode(&cert_payload), cert_sig.unwrap());
    let scheduler_key =
        Signer::from_seed(&env.data.creds(Role::Scheduler, "scheduler").unwrap().seed).unwrap();
    (cert, scheduler_key)
}

fn signed_ops(by: &Signer, node: &str, ops: Vec<NodeOp>) -> (Vec<u8>, String) {
    let payload = serde_json::to_vec(&NodeOps {
        node: node.into(),
        by: by.public_key().into(),
        ops,
    })
    .unwrap();
    let proof = sign_batch_in(Context::Ops, by, &[hash_bytes(&payload)]).remove(0);
    (payload, proof.encode())
}

/// A node runs only ops the scheduler signed for it: unsigned ops, ops signed by another
/// key, and the scheduler's ops for another node are set aside; it goes on running the
/// real scheduler's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_no_op_the_scheduler_did_not_sign_for_it() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    spawn_node(&mut env, "n1", &[]);
    env.wait_ready("n1").await;
    env.enroll_node("n2", None);
    let spec: bulkhead_schemas::WorkloadSpec =
        serde_json::from_value(spec(Some("intruder"))).unwrap();
    let start = || NodeOp::Start {
        workload: key("intruder"),
        replica: 0,
        spec: spec.clone(),
        head: ChainHead {
            seq: 0,
            hash: hex::encode([0u8; 32]),
        },
        traceparent: None,
    };
    let (cert, scheduler_key) = scheduler_cert(&env).await;
    let node_key = Signer::from_seed(&env.data.creds(Role::Node, "n2").unwrap().seed).unwrap();
    let mut forged = Vec::new();
    // Unsigned.
    let unsigned = serde_json::to_vec(&NodeOps {
        node: "n1".into(),
        by: scheduler_key.public_key().into(),
        ops: vec![start()],
    })
    .unwrap();
    forged.push((unsigned, HeaderMap::new()));
    // Signed by a node's key, with the scheduler's certificate.
    let (payload, sig) = signed_ops(&node_key, "n1", vec![start()]);
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, sig.as_str());
    h.insert(CERT_HEADER, cert.as_str());
    forged.push((payload, h));
    // Signed by the scheduler, for n2, sent to n1.
    let (payload, sig) = signed_ops(&scheduler_key, "n2", vec![start()]);
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, sig.as_str());
    h.insert(CERT_HEADER, cert.as_str());
    forged.push((payload, h));
    for (payload, headers) in forged {
        env.bus
            .publish_stored(subjects::node_ops("n1"), headers, payload.into())
            .await
            .unwrap();
    }
    let env_ref = &env;
    wait_until("n1 to report the three set aside", LONG, async || {
        env_ref
            .aside()
            .await
            .by_who
            .get("node/n1")
            .is_some_and(|r| r.by_code.get("untrusted_ops") == Some(&3))
    })
    .await;
    let log = env.log("n1");
    assert!(log.contains("unsigned"), "{log}");
    assert!(log.contains("no enrolled scheduler"), "{log}");
    assert!(log.contains("for node n2"), "{log}");
    // Nothing ran: no container was started, so no fact about the intruder exists.
    assert!(
        env.events(&subjects::workload_events(&key("intruder")))
            .await
            .is_empty()
    );
    assert!(!log.contains("intruder\""), "no start was attempted: {log}");
    // The real scheduler's ops still run.
    submit(&env, "real", serde_json::json!({}));
    wait_started(&env, "real").await;
}

/// Ops the scheduler did sign, with values no admission lets through (a stolen scheduler
/// key, a bug): a workload key that is a path, a memory limit that would wrap, a grace of
/// 136 years. The node refuses each with its reason and runs nothing of them; a valid op in
/// the same message runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_signed_ops_whose_values_are_out_of_limits() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    spawn_node(&mut env, "n1", &[]);
    env.wait_ready("n1").await;
    let ok: bulkhead_schemas::WorkloadSpec = serde_json::from_value(spec(Some("fine"))).unwrap();
    let head = ChainHead {
        seq: 0,
        hash: hex::encode([0u8; 32]),
    };
    let start = |workload: String, spec: bulkhead_schemas::WorkloadSpec| NodeOp::Start {
        workload,
        replica: 0,
        spec,
        head: head.clone(),
        traceparent: None,
    };
    let mut huge = ok.clone();
    huge.memory_mb = 1 << 44;
    let ops = vec![
        start("../../../tmp/escape".into(), ok.clone()),
        start(key("huge"), huge),
        NodeOp::Stop {
            workload: key("fine"),
            replica: 0,
            head: head.clone(),
            grace_secs: Some(u32::MAX),
            traceparent: None,
        },
    ];
    let (cert, scheduler_key) = scheduler_cert(&env).await;
    let (payload, sig) = signed_ops(&scheduler_key, "n1", ops);
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, sig.as_str());
    h.insert(CERT_HEADER, cert.as_str());
    env.bus
        .publish_stored(subjects::node_ops("n1"), h, payload.into())
        .await
        .unwrap();
    // Refused by the node, and counted where everything refused is: the query API.
    let env_ref = &env;
    wait_until("n1 to report the three refused", LONG, async || {
        env_ref
            .aside()
            .await
            .by_who
            .get("node/n1")
            .is_some_and(|r| r.by_code.get("out_of_limits") == Some(&3))
    })
    .await;
    let reasons: Vec<String> = env
        .aside()
        .await
        .recent
        .into_iter()
        .filter(|a| a.by == "node/n1" && a.code == "out_of_limits")
        .map(|a| a.reason)
        .collect();
    let all = reasons.join("\n");
    assert!(all.contains("not a tenant/id key"), "{all}");
    assert!(all.contains("memory_mb"), "{all}");
    assert!(all.contains("a grace of 4294967295 s"), "{all}");
    assert!(!std::path::Path::new("/tmp/escape").exists());
    assert!(
        env.events(&subjects::workload_events(&key("huge")))
            .await
            .is_empty(),
        "nothing started"
    );
    // The node goes on: the real scheduler's ops still run.
    submit(&env, "real", serde_json::json!({}));
    wait_started(&env, "real").await;
}

/// `bulkhead revoke node n1` cuts n1's connection at once, records the revocation in the
/// log, and a fact signed with n1's key afterwards is set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_and_its_key_writes_no_more() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    spawn_node(&mut env, "n1", &[]);
    env.wait_ready("n1").await;
    submit(&env, "w", serde_json::json!({}));
    wait_started(&env, "w").await;
    let n1_key = Signer::from_seed(&env.data.creds(Role::Node, "n1").unwrap().seed).unwrap();

    env.cli_ok(["revoke", "node", "n1"]);
    let env_ref = &env;
    wait_until("n1 to be cut off", LONG, async || {
        let log = env_ref.log("n1").to_lowercase();
        log.contains("authorization violation") || log.contains("disconnected")
    })
    .await;
    wait_until("the revocation in the log", LONG, async || {
        !env_ref
            .events(&subjects::sys_event("node", "n1", "revoked"))
            .await
            .is_empty()
    })
    .await;
    // n1's key, stolen after the revocation, writes a fact: set aside.
    let head = env.bus.head(&key("w")).await.unwrap().unwrap();
    let mut ev = Event::new(
        "node/n1",
        &key("w"),
        Some(&head.hash),
        EventBody::Exited(Exited {
            replica: 0,
            node: "n1".into(),
            code: 0,
            reason: "completed".into(),
            finished_at: bulkhead_schemas::now_rfc3339(),
        }),
    );
    let (payload, proof) = seal_event(&n1_key, &mut ev);
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, proof.encode().as_str());
    env.bus
        .publish_stored(
            subjects::workload_event(&key("w"), "exited"),
            h,
            payload.into(),
        )
        .await
        .unwrap();
    wait_aside(&env, "unknown_writer", 1).await;
    assert_eq!(get(&env, "w")["state"], "running");
}

/// `bulkhead submit` signs the spec with the tenant's key and `accepted` keeps the proof, so
/// the log shows who asked; a raw `nats pub` records the tenant the server authenticated;
/// a submission signed with another tenant's key is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_proves_who_asked() {
    use bulkhead_actors::signing::{KEY_HEADER, sign_command, verify_command};
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    spawn_node(&mut env, "n1", &[]);
    let file = env.dir.path().join("signed.json");
    std::fs::write(&file, spec(Some("signed")).to_string()).unwrap();
    env.cli_ok([
        std::ffi::OsStr::new("submit"),
        std::ffi::OsStr::new("--no-follow"),
        file.as_os_str(),
    ]);
    submit(&env, "raw", serde_json::json!({}));
    wait_started(&env, "signed").await;
    wait_started(&env, "raw").await;
    let accepted = |id: &str| {
        let env = &env;
        let id = id.to_owned();
        async move {
            let evs = env.events(&subjects::workload_events(&key(&id))).await;
            match &evs[0].2.body {
                EventBody::Accepted(a) => a.by.clone(),
                other => panic!("{other:?}"),
            }
        }
    };
    let by = accepted("signed").await;
    let tenant_key = env
        .data
        .creds(Role::Tenant, TENANT)
        .unwrap()
        .signer()
        .unwrap();
    assert_eq!(by.tenant, TENANT);
    assert_eq!(by.key.as_deref(), Some(tenant_key.public_key()));
    let signed = by.signed.expect("the signed spec");
    verify_command(
        tenant_key.public_key(),
        SUBMIT,
        signed.as_bytes(),
        by.sig.as_deref().unwrap(),
    )
    .expect("anyone can check who asked");
    let raw = accepted("raw").await;
    assert_eq!((raw.tenant.as_str(), raw.key), (TENANT, None));

    // Signed with tenant acme's key, on tenant default's subject.
    env.cli_ok(["tenant", "add", "acme"]);
    let acme = env
        .data
        .creds(Role::Tenant, "acme")
        .unwrap()
        .signer()
        .unwrap();
    let payload = spec(Some("impostor")).to_string();
    let mut h = HeaderMap::new();
    h.insert(KEY_HEADER, acme.public_key());
    h.insert(
        SIG_HEADER,
        sign_command(&acme, SUBMIT, payload.as_bytes()).as_str(),
    );
    env.bus
        .publish_stored(SUBMIT.into(), h, payload.into())
        .await
        .unwrap();
    env.wait_for("the impostor to be rejected", LONG, |by| {
        by.get("impostor").is_some_and(|k| k.contains(&"rejected"))
    })
    .await;
    let v = get(&env, "impostor");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("not tenant default's key"),
        "{v}"
    );
}
