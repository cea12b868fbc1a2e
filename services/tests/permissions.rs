//! Least privilege as nats-server enforces it, tested from the permission table itself:
//! for every role, each probe of a common set of subjects (its own and a peer's commands,
//! queries, events, ops, heartbeats, leases, inboxes, consumers, streams) is published or
//! subscribed to over a real connection with that role's key, and the server refuses it
//! exactly when the table (`bulkhead::auth::perms`) leaves it out. Anonymous connections
//! are refused; a consumer's filter cannot reach past the one the subject names.

mod common;

use std::collections::BTreeSet;

use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead::auth::Credential;
use bulkhead::auth::perms;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects as s;
use common::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Publish,
    Subscribe,
}

/// The probes for an identity named `me` whose peer of the same role is `other`.
fn probes(me: &str, other: &str) -> Vec<(Op, String)> {
    let api = |rest: &str| format!("$JS.API.{rest}");
    let mut p: Vec<(Op, String)> = Vec::new();
    let mut publish = |subject: String| p.push((Op::Publish, subject));
    for who in [me, other] {
        publish(s::cmd(who, "submit"));
        publish(s::cmd(who, "stop"));
        let lane = s::cmd_lane(&s::cmd(who, "submit")).unwrap().consumer;
        publish(api(&format!("CONSUMER.MSG.NEXT.{}.{lane}", s::CMD_STREAM)));
        publish(s::api_workloads_get(who));
        publish(s::api_workloads_list(who));
        publish(s::api_node_heads(who));
        publish(s::node_ops(who));
        publish(format!("$KV.{}.{who}", s::NODES_BUCKET));
        publish(api(&format!(
            "CONSUMER.MSG.NEXT.{}.{}",
            s::OPS_STREAM,
            s::node_consumer(who)
        )));
        publish(api(&format!(
            "CONSUMER.CREATE.{}.{}.{}",
            s::OPS_STREAM,
            s::node_consumer(who),
            s::node_ops(who)
        )));
        publish(api(&format!(
            "CONSUMER.CREATE.{}.f1.{}",
            s::EVT_STREAM,
            s::tenant_events(who)
        )));
        publish(s::node_event(who, "joined"));
        publish(s::node_event(who, "lost"));
        publish(s::workload_event(&format!("{who}/w"), "accepted"));
        publish(s::workload_event(&format!("{who}/w"), "started"));
        publish(s::workload_event(&format!("{who}/w"), "lost"));
    }
    for subject in [
        s::CTL_DRAIN.to_owned(),
        s::API_NODES_LIST.to_owned(),
        s::API_ASIDE_LIST.to_owned(),
        s::SCAN_JOBS.to_owned(),
        s::scan_event("sha256:ab", "scan_completed"),
        s::sys_event("node", "x", "enrolled"),
        format!("$KV.{}.{}", s::LEASES_BUCKET, s::SCHEDULER_LEASE_KEY),
        format!("$KV.{}.{}", s::LEASES_BUCKET, s::FAILOVER_LEASE_KEY),
        api(&format!("CONSUMER.CREATE.{}", s::EVT_STREAM)),
        api(&format!(
            "CONSUMER.CREATE.{}.f1.bulkhead.evt.>",
            s::EVT_STREAM
        )),
        api(&format!("DIRECT.GET.{}", s::EVT_STREAM)),
        api(&format!("STREAM.INFO.{}", s::EVT_STREAM)),
        api("STREAM.CREATE.PROBE"),
        api(&format!("STREAM.UPDATE.{}", s::EVT_STREAM)),
        api(&format!("STREAM.PURGE.{}", s::EVT_STREAM)),
        api(&format!("STREAM.DELETE.{}", s::EVT_STREAM)),
        api(&format!("STREAM.MSG.DELETE.{}", s::EVT_STREAM)),
        api(&format!(
            "CONSUMER.DELETE.{}.{}",
            s::CMD_STREAM,
            s::SCHEDULER_CONSUMER
        )),
        api(&format!(
            "CONSUMER.MSG.NEXT.{}.{}",
            s::CMD_STREAM,
            s::SCHEDULER_CONSUMER
        )),
    ] {
        publish(subject);
    }
    for subject in [
        s::tenant_events(me),
        s::tenant_events(other),
        s::EVT_ALL.to_owned(),
        s::node_ops(me),
        s::node_ops(other),
        s::API_WORKLOADS_GET_ALL.to_owned(),
        s::scan_layer("w1"),
        "_INBOX.tenant.default.x".to_owned(),
        ">".to_owned(),
    ] {
        p.push((Op::Subscribe, subject));
    }
    p
}

/// Connects as `creds`, tries every probe, and returns what the server refused.
async fn refused(url: &str, creds: &Credential, probes: &[(Op, String)]) -> BTreeSet<(Op, String)> {
    let said: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = said.clone();
    let client = async_nats::ConnectOptions::with_nkey(creds.seed.clone())
        .custom_inbox_prefix(creds.inbox())
        .event_callback(move |e| {
            let s2 = s2.clone();
            async move {
                if let async_nats::Event::ServerError(e) = e {
                    s2.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .expect("a valid credential connects");
    let mut subs = Vec::new();
    for (op, subject) in probes {
        match op {
            Op::Publish => client.publish(subject.clone(), "{}".into()).await.unwrap(),
            Op::Subscribe => subs.push(client.subscribe(subject.clone()).await.unwrap()),
        }
    }
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let said = said.lock().unwrap().clone();
    let mut out = BTreeSet::new();
    for line in said {
        let lower = line.to_lowercase();
        let Some(subject) = line.split('"').nth(1) else {
            continue;
        };
        if lower.contains("permissions violation for publish") {
            out.insert((Op::Publish, subject.to_owned()));
        } else if lower.contains("permissions violation for subscription") {
            out.insert((Op::Subscribe, subject.to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_refused_exactly_what_its_row_leaves_out() {
    let env = env().await;
    env.enroll_node("n1", None);
    env.enroll_node("n2", None);
    for t in ["t1", "t2"] {
        env.cli_ok(["tenant", "add", t]);
    }
    let identities = [
        (Role::Tenant, "t1", "t2"),
        (Role::Node, "n1", "n2"),
        (Role::Scheduler, "scheduler", "other"),
        (Role::Failover, "failover", "other"),
        (Role::Api, "api", "other"),
        (Role::Scanner, "scanner", "other"),
    ];
    let mut refusals = 0;
    for (role, me, other) in identities {
        let creds = env.data.creds(role, me).unwrap();
        let table = perms::of(role, me);
        let probes = probes(me, other);
        let got = refused(&env.server.url, &creds, &probes).await;
        for (op, subject) in &probes {
            let allowed = match op {
                Op::Publish => table.may_publish(subject),
                Op::Subscribe => table.may_subscribe(subject),
            };
            let was_refused = got.contains(&(*op, subject.clone()));
            assert_eq!(
                was_refused,
                !allowed,
                "{role} {me}: {op:?} {subject}: the table says {}, the server {}",
                if allowed { "allowed" } else { "refused" },
                if was_refused {
                    "refused"
                } else {
                    "let it through"
                }
            );
            refusals += usize::from(was_refused);
        }
        // What the issue names, whatever the table says: never allowed outside the admin.
        for (op, subject) in [
            (
                Op::Publish,
                format!("$JS.API.STREAM.PURGE.{}", s::EVT_STREAM),
            ),
            (
                Op::Publish,
                format!("$JS.API.STREAM.DELETE.{}", s::EVT_STREAM),
            ),
            (Op::Publish, "$JS.API.STREAM.CREATE.PROBE".to_owned()),
            (Op::Subscribe, s::tenant_events(other)),
        ] {
            assert!(got.contains(&(op, subject.clone())), "{role}: {subject}");
        }
        if role != Role::Scheduler {
            let lease = format!("$KV.{}.{}", s::LEASES_BUCKET, s::SCHEDULER_LEASE_KEY);
            assert!(
                got.contains(&(Op::Publish, lease)),
                "{role} takes no scheduler lease"
            );
            assert!(
                got.contains(&(Op::Publish, s::node_ops(other))),
                "{role} sends no ops"
            );
        }
    }
    assert!(refusals > 100, "{refusals} refusals in all");
    // The tenant's and the node's rows, spelled out.
    let t = perms::of(Role::Tenant, "t1");
    for other_tenant in [
        s::cmd("t2", "submit"),
        s::api_workloads_get("t2"),
        s::api_workloads_list("t2"),
    ] {
        assert!(!t.may_publish(&other_tenant));
    }
    let n = perms::of(Role::Node, "n1");
    assert!(!n.may_publish(&format!("$KV.{}.n2", s::NODES_BUCKET)));
    assert!(!n.may_publish(&s::node_ops("n1")));
    assert!(!n.may_publish("$JS.API.CONSUMER.MSG.NEXT.BULKHEAD_OPS.bulkhead-node-n2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_unknown_keys_are_refused() {
    let env = env().await;
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(&env.server.url)
        .await;
    assert!(anonymous.is_err(), "no anonymous connection");
    let stranger = nkeys::KeyPair::new_user();
    let unknown = async_nats::ConnectOptions::with_nkey(stranger.seed().unwrap())
        .connection_timeout(Duration::from_secs(2))
        .connect(&env.server.url)
        .await;
    assert!(unknown.is_err(), "no key the book does not hold");
}

/// JetStream delivers a pulled message, and answers an ack, to whatever reply subject the
/// asker names, and a service answers to whatever reply a request carries. A node and a
/// tenant live in accounts of their own: naming the log's lease key, a stream's purge or
/// its deletion as the reply leads nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_from_jetstream_and_services_lead_nowhere_for_nodes_and_tenants() {
    let mut env = env().await;
    env.spawn("api", &["api"]);
    env.enroll_node("n1", None);
    for i in 0..3 {
        env.bus
            .publish_stored(
                s::node_ops("n1"),
                Default::default(),
                format!("{{\"junk\": {i}}}").into(),
            )
            .await
            .unwrap();
    }
    env.bus
        .publish_stored(s::cmd(TENANT, "stop"), Default::default(), "{}".into())
        .await
        .unwrap();
    let node = env.data.creds(Role::Node, "n1").unwrap();
    let client = async_nats::ConnectOptions::with_nkey(node.seed.clone())
        .custom_inbox_prefix(node.inbox())
        .connect(&env.server.url)
        .await
        .unwrap();
    // Pulls naming the lease key or a purge as their reply (a node may not pull at all).
    let next = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
        s::OPS_STREAM,
        s::node_consumer("n1")
    );
    let lease = format!("$KV.{}.{}", s::LEASES_BUCKET, s::SCHEDULER_LEASE_KEY);
    let purge = format!("$JS.API.STREAM.PURGE.{}", s::CMD_STREAM);
    for reply in [&lease, &purge] {
        client
            .publish_with_reply(next.clone(), reply.clone(), r#"{"batch":1}"#.into())
            .await
            .unwrap();
    }
    // A delivery, then its ack with the deletion of a stream as the reply.
    let mut sub = client.subscribe(s::node_deliver("n1")).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a delivery")
        .unwrap();
    let delete = format!("$JS.API.STREAM.DELETE.{}", s::SCAN_STREAM);
    client
        .publish_with_reply(m.reply.unwrap().to_string(), delete.clone(), "+ACK".into())
        .await
        .unwrap();
    // A tenant's query whose reply is the deletion of the ops stream.
    let tenant = env.data.creds(Role::Tenant, TENANT).unwrap();
    let t = async_nats::ConnectOptions::with_nkey(tenant.seed.clone())
        .custom_inbox_prefix(tenant.inbox())
        .connect(&env.server.url)
        .await
        .unwrap();
    let delete_ops = format!("$JS.API.STREAM.DELETE.{}", s::OPS_STREAM);
    wait_until("the API to serve", Duration::from_secs(30), async || {
        t.request(s::api_workloads_list(TENANT), "{}".into())
            .await
            .is_ok()
    })
    .await;
    t.publish_with_reply(s::api_workloads_get(TENANT), delete_ops, "nope".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    t.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Everything stands.
    for stream in [s::CMD_STREAM, s::OPS_STREAM, s::SCAN_STREAM, s::EVT_STREAM] {
        assert!(
            env.bus.js.get_stream(stream).await.is_ok(),
            "{stream} stands"
        );
    }
    let mut cmd = env.bus.js.get_stream(s::CMD_STREAM).await.unwrap();
    assert_eq!(
        cmd.info().await.unwrap().state.messages,
        1,
        "nothing purged"
    );
    let leases = env.bus.js.get_key_value(s::LEASES_BUCKET).await.unwrap();
    assert!(
        leases.get(s::SCHEDULER_LEASE_KEY).await.unwrap().is_none(),
        "no lease written"
    );
    // Nor can a node roll a bucket up, wiping everyone's heartbeats.
    env.bus
        .publish_stored(
            format!("$KV.{}.n2", s::NODES_BUCKET),
            Default::default(),
            "{}".into(),
        )
        .await
        .unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Rollup", "all");
    let ack = client
        .request_with_headers(format!("$KV.{}.n1", s::NODES_BUCKET), h, "{}".into())
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ack.payload).contains("error"),
        "refused"
    );
    let nodes = env.bus.js.get_key_value(s::NODES_BUCKET).await.unwrap();
    assert!(
        nodes.get("n2").await.unwrap().is_some(),
        "n2's entry stands"
    );
}

/// Listening beyond loopback, the server speaks TLS with the certificate made at setup:
/// every credential carries the CA and connects; a client that does not trust that CA, or
/// speaks plain NATS, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_server_speaks_tls_only() {
    use bulkhead::auth::DataDir;
    use bulkhead::auth::setup::{self, Auth, Listen};
    use bulkhead::bus::{Bus, Topology};
    use bulkhead::natsd::Sync;
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(&dir.path().join("data"));
    let listen = Listen {
        host: "0.0.0.0".into(),
        port: 0,
        sync: Sync::Default,
    };
    let cluster = setup::start(&data, &listen, &Topology::default(), Auth::Required)
        .await
        .unwrap();
    let port = cluster.server.url.rsplit(':').next().unwrap().to_owned();
    let url = format!("nats://127.0.0.1:{port}");
    let tenant = data.creds(Role::Tenant, TENANT).unwrap();
    assert!(
        tenant
            .ca
            .as_deref()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    );
    let bus = Bus::connect_as(&url, &tenant)
        .await
        .expect("TLS with the CA");
    bus.client.flush().await.unwrap();
    // The same key without TLS: refused.
    let plain = async_nats::ConnectOptions::with_nkey(tenant.seed.clone())
        .connection_timeout(Duration::from_secs(2))
        .connect(&url)
        .await;
    assert!(plain.is_err(), "no plain-text connection");
    // TLS trusting only the system's roots: the certificate does not verify.
    let untrusting = async_nats::ConnectOptions::with_nkey(tenant.seed.clone())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(2))
        .connect(&url)
        .await;
    assert!(untrusting.is_err(), "the CA is bulkhead's own");
}

/// `--insecure-no-auth` is loud and loopback-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_without_authentication_is_loopback_only() {
    use bulkhead::auth::DataDir;
    use bulkhead::auth::setup::{self, Auth, Listen};
    use bulkhead::bus::Topology;
    use bulkhead::natsd::Sync;
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(&dir.path().join("data"));
    let listen = |host: &str| Listen {
        host: host.into(),
        port: 0,
        sync: Sync::Default,
    };
    let err = setup::start(
        &data,
        &listen("0.0.0.0"),
        &Topology::default(),
        Auth::InsecureNoAuth,
    )
    .await
    .err()
    .expect("refused beyond loopback");
    assert!(err.to_string().contains("loopback only"), "{err}");
    let cluster = setup::start(
        &data,
        &listen("127.0.0.1"),
        &Topology::default(),
        Auth::InsecureNoAuth,
    )
    .await
    .unwrap();
    let anonymous = async_nats::connect(&cluster.server.url).await;
    assert!(anonymous.is_ok(), "the flag does what it says");
}
