//! The control plane when NATS itself fails: a nats-server down for 6 s and started again
//! (same port, same store) declares no healthy node lost, loses nothing acknowledged, and
//! the cluster takes work again.

mod common;

use std::time::Duration;

use bulkhead::auth::server;
use bulkhead::natsd::{NatsServer, Security, Sync};
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

    // Down for 6 s, then up again on the same port with the same store and users.
    let port: u16 = env.server.url.rsplit(':').next().unwrap().parse().unwrap();
    env.server.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
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
    env.bus = bulkhead::bus::Bus::connect_as(
        &env.server.url,
        &env.data
            .creds(bulkhead_schemas::identity::Role::Admin, "admin")
            .unwrap(),
    )
    .await
    .unwrap();

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
    assert!(
        env.log("failover").contains("cut off from NATS"),
        "{}",
        env.log("failover")
    );
}
