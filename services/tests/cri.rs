//! Real containers: a bulkhead node driving a real containerd over CRI (runc and gVisor's
//! runsc), with a real nats-server, images imported offline and pulled from a loopback
//! registry. The environment comes from `scripts/cri-env.sh start DIR` (the README's test
//! command starts it and exports its variables).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bulkhead::node::cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata,
};
use bulkhead::node::cri::{Cri, LABEL_NODE, LABEL_REPLICA, LABEL_ROLE, LABEL_WORKLOAD};
use bulkhead_schemas::event::{Event, EventBody, Exited};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;
use common::*;

const LONG: Duration = Duration::from_secs(60);

/// The CRI test environment's coordinates.
struct CriEnv {
    socket: PathBuf,
    image: String,
    pull_image: String,
}

fn cri_env() -> CriEnv {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: these tests need the CRI test environment. Run ./scripts/test.sh, \
                 or `eval \"$(scripts/cri-env.sh start /tmp/bulkhead-cri)\"` before cargo nextest"
            )
        })
    };
    CriEnv {
        socket: var("BULKHEAD_TEST_CRI_SOCKET").into(),
        image: var("BULKHEAD_TEST_IMAGE"),
        pull_image: var("BULKHEAD_TEST_PULL_IMAGE"),
    }
}

/// A scheduler, the query API and one CRI node named `node` (separate processes).
struct Cluster {
    env: Env,
    cri: CriEnv,
    node: String,
    handlers: Vec<&'static str>,
    /// Further node flags.
    node_flags: Vec<String>,
    node_pid: u32,
}

impl Cluster {
    async fn start(node: &str, handlers: &[&'static str]) -> Cluster {
        Cluster::start_with(node, handlers, &[]).await
    }

    async fn start_with(node: &str, handlers: &[&'static str], flags: &[&str]) -> Cluster {
        Cluster::start_full(node, handlers, flags, &["scheduler"]).await
    }

    /// With the scheduler run as `scheduler` (its command line).
    async fn start_full(
        node: &str,
        handlers: &[&'static str],
        flags: &[&str],
        scheduler: &[&str],
    ) -> Cluster {
        let mut env = env().await;
        let cri = cri_env();
        env.spawn("scheduler", scheduler);
        env.spawn("api", &["api"]);
        let mut c = Cluster {
            env,
            cri,
            node: node.to_owned(),
            handlers: handlers.to_vec(),
            node_flags: flags.iter().map(|f| f.to_string()).collect(),
            node_pid: 0,
        };
        c.start_node().await;
        c
    }

    fn log_dir(&self) -> PathBuf {
        self.env.dir.path().join("logs")
    }

    /// Starts the node process and waits until it has announced itself.
    async fn start_node(&mut self) {
        let log = format!("node-{}", self.node_pid);
        let name = self.node.clone();
        self.node_pid = self.spawn_node(&name, &log).await;
    }

    /// Starts a node process named `name` on this containerd, logging to `log`, and waits
    /// until it has announced itself; returns its pid.
    async fn spawn_node(&mut self, name: &str, log: &str) -> u32 {
        let socket = self.cri.socket.display().to_string();
        let log_dir = self.log_dir().display().to_string();
        let mut args = vec![
            "node",
            "--runtime",
            "cri",
            "--name",
            name,
            "--cri-socket",
            &socket,
            "--log-dir",
            &log_dir,
            "--probe-image",
            &self.cri.image,
            "--heartbeat-ms",
            "200",
        ];
        for h in &self.handlers {
            args.extend(["--handler", h]);
        }
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args.extend(self.node_flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = self.env.spawn(log, &args);
        let env = &self.env;
        wait_until("the node to come up", LONG, async || {
            env.log(log).contains("node up")
        })
        .await;
        pid
    }

    fn submit(&self, spec: serde_json::Value) {
        self.env
            .natspy_pub(SUBMIT, spec.to_string().as_bytes(), None);
    }

    fn spec(&self, id: &str, class: &str, script: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id,
            "image": self.cri.image,
            "runtime_class": class,
            "memory_mb": 64,
            "cpu_millicores": 200,
            "command": ["sh", "-c", script],
        })
    }

    async fn events(&self, id: &str) -> Vec<Event> {
        self.env
            .events(&subjects::workload_events(&key(id)))
            .await
            .into_iter()
            .map(|(_, _, e)| e)
            .collect()
    }

    /// Waits until workload `id` has an event of type `kind`; returns its events.
    async fn wait_event(&self, id: &str, kind: &str) -> Vec<Event> {
        self.env
            .wait_for(&format!("{id} to log {kind}"), LONG, |by| {
                by.get(id).is_some_and(|k| k.contains(&kind))
            })
            .await;
        self.events(id).await
    }

    fn workload_log(&self, id: &str, replica: u32) -> String {
        let dir = self.log_dir().join(TENANT).join(id);
        std::fs::read_to_string(dir.join(format!("{replica}.log"))).unwrap_or_default()
    }

    async fn runtime(&self) -> Cri {
        Cri::connect(&self.cri.socket)
            .await
            .expect("containerd answers")
            .0
    }

    /// Containers and sandboxes containerd holds for workload `id` of this node.
    async fn held(&self, id: &str) -> (usize, usize) {
        let cri = self.runtime().await;
        let key = key(id);
        let sel = [
            (LABEL_NODE, self.node.as_str()),
            (LABEL_WORKLOAD, key.as_str()),
        ];
        (
            cri.list_containers(&sel, None).await.unwrap().len(),
            cri.list_sandboxes(&sel).await.unwrap().len(),
        )
    }

    /// Asks the query API as the admin (who may ask about nodes and every tenant).
    fn api(&self, subject: &str, data: &str) -> serde_json::Value {
        let reply = self
            .env
            .natspy_req_as(Role::Admin, "admin", subject, data)
            .expect("API answers");
        serde_json::from_str(&reply).expect("JSON reply")
    }
}

fn exited(events: &[Event]) -> &Exited {
    events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Exited(x) => Some(x),
            _ => None,
        })
        .expect("an exited event")
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_logs_and_cleanup_on_runc() {
    let c = Cluster::start("cri-exit", &["runc=runc"]).await;
    c.submit(c.spec("seven", "runc", "echo hello from seven; exit 7"));
    c.submit(c.spec("zero", "runc", "echo all good; exit 0"));

    let ev = c.wait_event("seven", "exited").await;
    assert_eq!(
        kinds(&ev),
        ["accepted", "scheduled", "started", "exited"],
        "{ev:?}"
    );
    let x = exited(&ev);
    assert_eq!((x.code, x.reason.as_str()), (7, "error"));
    assert!(
        c.workload_log("seven", 0)
            .contains("stdout F hello from seven"),
        "log: {}",
        c.workload_log("seven", 0)
    );

    let ev = c.wait_event("zero", "exited").await;
    let x = exited(&ev);
    assert_eq!((x.code, x.reason.as_str()), (0, "completed"));
    assert!(c.workload_log("zero", 0).contains("all good"));

    let v = c.api(GET, "seven");
    assert_eq!(v["state"], "failed");
    let v = c.api(GET, "zero");
    assert_eq!(v["state"], "succeeded");

    // Ended containers are removed (their logs stay).
    wait_until("ended containers to be removed", LONG, async || {
        c.held("seven").await == (0, 0) && c.held("zero").await == (0, 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gvisor_hides_the_host_kernel_runc_does_not_and_unoffered_classes_wait() {
    // kata is mapped to a handler containerd does not have: its probe fails, so it is not offered.
    let c = Cluster::start("cri-iso", &["runc=runc", "gvisor=runsc", "kata=kata"]).await;
    let host = std::fs::read_to_string("/proc/version").unwrap();
    let host = host.trim();

    // The node's own probes, as `bulkhead nodes` shows them.
    let v = c.api(subjects::API_NODES_LIST, "");
    let node = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == c.node.as_str())
        .expect("node listed")
        .clone();
    let iso: HashMap<String, serde_json::Value> = node["isolation"]
        .as_array()
        .expect("isolation reports")
        .iter()
        .map(|r| (r["class"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    assert_eq!(iso["runc"]["ok"], true);
    assert_eq!(iso["runc"]["host_kernel_visible"], true);
    assert_eq!(iso["gvisor"]["ok"], true, "{:?}", iso["gvisor"]);
    assert_eq!(iso["gvisor"]["host_kernel_visible"], false);
    assert_eq!(iso["kata"]["ok"], false);
    assert!(
        iso["kata"]["detail"].as_str().unwrap().contains("kata"),
        "{:?}",
        iso["kata"]
    );
    assert_eq!(
        node["runtime_classes"],
        serde_json::json!(["runc", "gvisor"])
    );

    // Workloads see the same.
    let script = "cat /proc/version";
    c.submit(c.spec("in-gvisor", "gvisor", script));
    c.submit(c.spec("in-runc", "runc", script));
    let ev = c.wait_event("in-gvisor", "exited").await;
    assert_eq!(exited(&ev).code, 0);
    let seen = c.workload_log("in-gvisor", 0);
    assert!(seen.contains("Linux version"), "gVisor log: {seen}");
    assert!(
        !seen.contains(host),
        "gVisor showed the host kernel: {seen}"
    );
    c.wait_event("in-runc", "exited").await;
    let seen = c.workload_log("in-runc", 0);
    assert!(seen.contains(host), "runc log: {seen} (host: {host})");

    // No node offers kata: the workload waits, saying why.
    c.submit(serde_json::json!({
        "id": "wants-kata", "image": c.cri.image, "runtime_class": "kata",
        "memory_mb": 64, "cpu_millicores": 100,
    }));
    let mut v = serde_json::Value::Null;
    wait_until("wants-kata to be listed", LONG, async || {
        v = c
            .env
            .natspy_req(GET, "wants-kata")
            .ok()
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default();
        !v.is_null()
    })
    .await;
    assert_eq!(v["state"], "pending");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("kata"), "reason: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced_by_an_oom_kill() {
    let c = Cluster::start("cri-oom", &["runc=runc"]).await;
    let mut spec = c.spec("hog", "runc", "tail /dev/zero");
    spec["memory_mb"] = 16.into();
    c.submit(spec);
    let ev = c.wait_event("hog", "exited").await;
    let x = exited(&ev);
    assert_eq!(x.reason, "oom_killed", "{x:?}");
    assert_eq!(x.code, 137);
    assert_eq!(c.api(GET, "hog")["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_a_running_container_and_leaves_nothing_behind() {
    let mut c = Cluster::start("cri-stop", &["runc=runc"]).await;
    // A failover with `always`: a stop is not a death, nothing respawns it.
    c.env.spawn("failover", &["failover"]);
    let mut spec = c.spec("sleeper", "runc", "echo up; sleep 3600");
    spec["restart"] = serde_json::json!({"policy": "always", "backoff_initial_ms": 1});
    c.submit(spec);
    c.wait_event("sleeper", "started").await;
    assert_eq!(c.held("sleeper").await, (1, 1));

    // As `nats pub bulkhead.cmd.stop '{"id": "sleeper", "grace_secs": 1}'` would.
    c.env
        .natspy_pub(STOP, br#"{"id": "sleeper", "grace_secs": 1}"#, None);
    let ev = c.wait_event("sleeper", "stopped").await;
    assert_eq!(
        kinds(&ev),
        [
            "accepted",
            "scheduled",
            "started",
            "stop_requested",
            "stopped"
        ]
    );
    assert_eq!(c.held("sleeper").await, (0, 0));
    assert_eq!(c.api(GET, "sleeper")["state"], "stopped");
    // Give the failover time to (wrongly) act: with backoff_initial_ms 1 it would by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kinds(&c.events("sleeper").await).last(), Some(&"stopped"));
    assert_eq!(c.held("sleeper").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_adopts_running_containers_and_reports_exits_it_missed() {
    let mut c = Cluster::start("cri-restart", &["runc=runc"]).await;
    c.submit(c.spec("keeps", "runc", "echo started once; sleep 3600"));
    c.submit(c.spec("dies", "runc", "sleep 4; exit 5"));
    c.wait_event("keeps", "started").await;
    c.wait_event("dies", "started").await;
    let container = |ev: &[Event]| {
        ev.iter()
            .find_map(|e| match &e.body {
                EventBody::Started(s) => Some(s.container.clone()),
                _ => None,
            })
            .unwrap()
    };
    let keeps = container(&c.events("keeps").await);

    // The node dies; its containers do not.
    let pid = c.node_pid;
    c.env.sigkill(pid);
    // A container of this node the log never heard of (as if a start was cut short).
    let cri = c.runtime().await;
    let ghost = start_ghost(&cri, &c.node, &c.cri.image).await;
    // `dies` exits while the node is down.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(kinds(&c.events("dies").await).ends_with(&["started"]));

    c.start_node().await;
    // It says when it is ready: the scheduler's view came and its containers are reconciled.
    let log = format!("node-{pid}");
    wait_until("the restarted node to be ready", LONG, async || {
        c.env.log(&log).contains("node ready")
    })
    .await;
    let ev = c.wait_event("dies", "exited").await;
    let x = exited(&ev);
    assert_eq!((x.code, x.reason.as_str()), (5, "error"));

    // `keeps` was adopted: same container, still running, started once, no new event.
    let ev = c.events("keeps").await;
    assert_eq!(kinds(&ev), ["accepted", "scheduled", "started"]);
    let running = cri
        .list_containers(
            &[
                (LABEL_NODE, c.node.as_str()),
                (LABEL_WORKLOAD, key("keeps").as_str()),
            ],
            Some(bulkhead::node::cri::v1::ContainerState::ContainerRunning),
        )
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, keeps);
    assert_eq!(
        c.workload_log("keeps", 0).matches("started once").count(),
        1
    );

    // The ghost is gone.
    wait_until("the unknown container to be removed", LONG, async || {
        cri.list_containers(&[(LABEL_WORKLOAD, key("ghost").as_str())], None)
            .await
            .unwrap()
            .iter()
            .all(|g| g.id != ghost)
    })
    .await;

    // The adopted container is still this node's: a stop reaches it.
    c.env
        .natspy_pub(STOP, br#"{"id": "keeps", "grace_secs": 0}"#, None);
    c.wait_event("keeps", "stopped").await;
    assert_eq!(c.held("keeps").await, (0, 0));
}

/// Starts a container labelled as a workload of `node` that no log knows.
async fn start_ghost(cri: &Cri, node: &str, image: &str) -> String {
    let labels: HashMap<String, String> = [
        (LABEL_NODE, node),
        (LABEL_ROLE, "workload"),
        (LABEL_WORKLOAD, key("ghost").as_str()),
        (LABEL_REPLICA, "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("ghost-{node}"),
            uid: format!("ghost-{node}"),
            namespace: "bulkhead".into(),
            attempt: 0,
        }),
        labels: labels.clone(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sb = cri.run_sandbox(&sandbox, "runc").await.unwrap();
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        labels,
        ..Default::default()
    };
    let id = cri.create_container(&sb, config, &sandbox).await.unwrap();
    cri.start_container(&id).await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_and_an_unpullable_one_fails_with_the_pull_error() {
    let c = Cluster::start("cri-pull", &["runc=runc"]).await;
    let mut spec = c.spec("pulled", "runc", "echo pulled and ran");
    spec["image"] = c.cri.pull_image.clone().into();
    c.submit(spec);
    let ev = c.wait_event("pulled", "exited").await;
    assert_eq!(exited(&ev).code, 0, "{ev:?}");
    assert!(c.workload_log("pulled", 0).contains("pulled and ran"));

    let mut spec = c.spec("unpullable", "runc", "true");
    spec["image"] = "127.0.0.1:9/no/such:image".into();
    c.submit(spec);
    let ev = c.wait_event("unpullable", "exited").await;
    let x = exited(&ev);
    assert_eq!(x.code, -1);
    assert!(
        x.reason
            .starts_with("pulling image 127.0.0.1:9/no/such:image failed:"),
        "{}",
        x.reason
    );
    assert_eq!(c.api(GET, "unpullable")["state"], "failed");
}

fn container_of(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Started(s) => Some(s.container.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_is_replaced_by_a_new_one() {
    let mut c = Cluster::start("fo1", &[]).await;
    c.env.spawn("failover", &["failover"]);
    let mut s = c.spec("phoenix", "runc", "exec sleep 3600");
    s["restart"] = serde_json::json!({"policy": "always"});
    c.submit(s);
    let events = c.wait_event("phoenix", "started").await;
    let first = container_of(&events).remove(0);
    let pid = c
        .runtime()
        .await
        .container_pid(&first)
        .await
        .unwrap()
        .expect("containerd reports the container's pid");
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -9 {pid}");
    c.env
        .wait_for("a second start", LONG, |by| {
            by["phoenix"].iter().filter(|k| **k == "started").count() == 2
        })
        .await;
    let events = c.events("phoenix").await;
    assert_eq!(
        kinds(&events),
        [
            "accepted",
            "scheduled",
            "started",
            "exited",
            "replica_requested",
            "scheduled",
            "started"
        ]
    );
    let x = exited(&events);
    assert_eq!(x.code, 137, "SIGKILL: {x:?}");
    let containers = container_of(&events);
    assert_ne!(containers[0], containers[1], "a new container");
    let cri = c.runtime().await;
    let st = cri.container_status(&containers[1]).await.unwrap();
    assert_eq!(
        st.state,
        bulkhead::node::cri::v1::ContainerState::ContainerRunning as i32
    );
    // The killed one is cleaned up: one container and one sandbox are left.
    wait_until("the dead container to be removed", LONG, async || {
        c.held("phoenix").await == (1, 1)
    })
    .await;
    // One trace: the restart joins the submission's trace.
    let EventBody::ReplicaRequested(r) = &events[4].body else {
        unreachable!()
    };
    assert_eq!(r.attempt, 1);
    assert!(r.cause.starts_with("exited: code 137"), "{}", r.cause);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_only_failures_and_never_restarts_nothing() {
    let mut c = Cluster::start("fo2", &[]).await;
    c.env.spawn("failover", &["failover"]);
    let with = |id: &str, policy: &str, script: &str| {
        let mut s = c.spec(id, "runc", script);
        s["restart"] = serde_json::json!({"policy": policy, "max_restarts": 1});
        s
    };
    c.submit(with("zero", "on-failure", "exit 0"));
    c.submit(with("never", "never", "exit 3"));
    c.wait_event("zero", "exited").await;
    c.wait_event("never", "exited").await;
    c.submit(with("three", "on-failure", "exit 3"));
    let three = c.wait_event("three", "gave_up").await;
    assert_eq!(
        kinds(&three),
        [
            "accepted",
            "scheduled",
            "started",
            "exited",
            "replica_requested",
            "scheduled",
            "started",
            "exited",
            "gave_up"
        ]
    );
    // The failover reads the log in order: it saw both earlier exits before this one.
    let plain = ["accepted", "scheduled", "started", "exited"];
    assert_eq!(kinds(&c.events("zero").await), plain);
    assert_eq!(kinds(&c.events("never").await), plain);
    let get = |id: &str| c.api(GET, id);
    assert_eq!(get("zero")["state"], "succeeded");
    assert_eq!(get("never")["state"], "failed");
    let t = get("three");
    assert_eq!(t["state"], "failed");
    assert_eq!(t["replicas"][0]["restarts"], 1);
    assert_eq!(t["replicas"][0]["exit_code"], 3);
}

/// The node's log (the first node process of the cluster).
fn node_log(c: &Cluster) -> String {
    c.env.log("node-0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_arrive_by_containerd_events_with_polling_slowed_to_ten_minutes() {
    // The poll looks once at start and after subscribing, then not for ten minutes: an exit
    // reported within the test's time came through containerd's /tasks/exit events.
    let c = Cluster::start_with("ev1", &[], &["--exit-poll-ms", "600000"]).await;
    assert!(
        node_log(&c).contains("following containerd's /tasks/exit"),
        "{}",
        node_log(&c)
    );
    c.submit(c.spec("evented", "runc", "sleep 1; exit 4"));
    let ev = c.wait_event("evented", "exited").await;
    let x = exited(&ev);
    assert_eq!((x.code, x.reason.as_str()), (4, "error"), "{x:?}");
    // one report for one exit, though the event and a poll could both see it
    assert_eq!(
        kinds(&c.events("evented").await)
            .iter()
            .filter(|k| **k == "exited")
            .count(),
        1
    );

    // OOM: the reason comes from CRI's status, read once the event has been handled there
    let mut s = c.spec("evented-oom", "runc", "tail /dev/zero");
    s["memory_mb"] = serde_json::json!(16);
    c.submit(s);
    let ev = c.wait_event("evented-oom", "exited").await;
    let x = exited(&ev);
    assert_eq!((x.code, x.reason.as_str()), (137, "oom_killed"), "{x:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_are_polled_when_containerd_events_cannot_be_had() {
    let c = Cluster::start_with(
        "ev2",
        &[],
        &[
            "--events-socket",
            "/nonexistent/containerd.sock",
            "--exit-poll-ms",
            "200",
        ],
    )
    .await;
    assert!(
        node_log(&c).contains("subscribing to containerd's exit events failed; polling"),
        "{}",
        node_log(&c)
    );
    c.submit(c.spec("polled", "runc", "sleep 1; exit 4"));
    let ev = c.wait_event("polled", "exited").await;
    let x = exited(&ev);
    assert_eq!((x.code, x.reason.as_str()), (4, "error"), "{x:?}");
}

/// Running containers containerd holds for `node`, by workload.
async fn running_on(cri: &Cri, node: &str) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for c in cri
        .list_containers(
            &[(LABEL_NODE, node), (LABEL_ROLE, "workload")],
            Some(bulkhead::node::cri::v1::ContainerState::ContainerRunning),
        )
        .await
        .unwrap()
    {
        *by.entry(id_of(&c.labels[LABEL_WORKLOAD]).to_owned())
            .or_default() += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_image_runs_pinned_to_the_digest_its_verdict_is_about() {
    // `internal` is gated here, and busybox (no OS package database) allowed through.
    let mut c = Cluster::start_full(
        "cri-pin",
        &["runc=runc"],
        &[],
        &[
            "scheduler",
            "--scan-policy",
            "internal=gate",
            "--scan-gate-unjudged",
            "allow",
        ],
    )
    .await;
    let osv = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/osv");
    // The test registry is on loopback: on the worker's allowlist.
    let reg = c.cri.pull_image.split('/').next().unwrap().to_owned();
    c.env
        .spawn("scanner", &["scanner", "--db", osv, "--registries", &reg]);
    let mut spec = c.spec("pinned", "runc", "exec sleep 3600");
    spec["image"] = c.cri.pull_image.clone().into();
    c.submit(spec);
    let ev = c.wait_event("pinned", "started").await;
    let digest = ev
        .iter()
        .find_map(|e| match &e.body {
            EventBody::ScanCompleted(s) => Some(s.digest.clone()),
            _ => None,
        })
        .expect("the verdict came before the start");
    assert!(digest.starts_with("sha256:"), "{digest}");
    let cri = c.runtime().await;
    let running = cri
        .list_containers(
            &[(LABEL_WORKLOAD, key("pinned").as_str())],
            Some(bulkhead::node::cri::v1::ContainerState::ContainerRunning),
        )
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    let name = c.cri.pull_image.rsplit_once(':').unwrap().0;
    assert_eq!(
        running[0].image.as_ref().map(|i| i.image.as_str()),
        Some(format!("{name}@{digest}").as_str()),
        "containerd was asked for the scanned digest, not the tag"
    );
    c.env
        .natspy_pub(STOP, br#"{"id":"pinned","grace_secs":0}"#, None);
    c.wait_event("pinned", "stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_lost_and_once_back_removes_the_copies_replaced_meanwhile() {
    // Two nodes on one containerd. Node `pa` is frozen (SIGSTOP): its containers keep
    // running, its heartbeats stop. The failover declares it lost and the replicas start
    // on `pb`. When `pa` thaws, it finds the scheduler's view (sent when its replicas were
    // lost) in its ops, reconciles, and removes its copies: in the end every workload runs
    // once, on `pb`.
    let mut c = Cluster::start("pa", &[]).await;
    let pa = c.node_pid;
    c.env
        .spawn("failover", &["failover", "--lost-timeout-ms", "1500"]);
    let ids: Vec<String> = (0..4).map(|i| format!("frozen-{i}")).collect();
    for id in &ids {
        let mut s = c.spec(id, "runc", "exec sleep 3600");
        s["restart"] = serde_json::json!({"policy": "always"});
        c.submit(s);
    }
    c.env
        .wait_for("all four to start on pa", LONG, |by| {
            ids.iter()
                .all(|id| by.get(id).is_some_and(|k| k.contains(&"started")))
        })
        .await;
    c.spawn_node("pb", "node-pb").await;
    let cri = c.runtime().await;
    assert_eq!(running_on(&cri, "pa").await.len(), 4);

    c.env.signal(pa, "-STOP");
    c.env
        .wait_for("every replica to start again on pb", LONG, |by| {
            ids.iter().all(|id| {
                by.get(id)
                    .is_some_and(|k| k.iter().filter(|k| **k == "started").count() == 2)
            })
        })
        .await;
    // Frozen, pa's copies still run: the overlap the thaw ends.
    assert_eq!(running_on(&cri, "pa").await.len(), 4);
    assert_eq!(running_on(&cri, "pb").await.len(), 4);
    c.env.signal(pa, "-CONT");
    wait_until("pa to remove its replaced copies", LONG, async || {
        running_on(&cri, "pa").await.is_empty()
    })
    .await;
    let env = &c.env;
    wait_until("pa to say it heard of its loss", LONG, async || {
        env.log("node-0").contains("reason=Lost")
    })
    .await;
    // Every workload: lost → replica_requested → scheduled(pb) → started, and nothing
    // from pa afterwards changes it; one copy each, on pb, still running.
    for id in &ids {
        let ev = c.events(id).await;
        assert_eq!(
            kinds(&ev),
            [
                "accepted",
                "scheduled",
                "started",
                "lost",
                "replica_requested",
                "scheduled",
                "started"
            ],
            "{id}"
        );
        let v = c.api(GET, id);
        assert_eq!(v["state"], "running", "{v}");
        assert_eq!(v["replicas"][0]["node"], "pb", "{v}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_b = running_on(&cri, "pb").await;
    assert!(
        ids.iter().all(|id| on_b.get(id) == Some(&1)),
        "one copy each on pb: {on_b:?}"
    );
    assert!(running_on(&cri, "pa").await.is_empty());
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            found.push(p);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_containers_environment_and_appears_nowhere_else() {
    use futures::StreamExt;
    use sha2::Digest;
    const SECRET: &str = "s3cr3t-7f1c9d2e-only-in-the-container";
    let c = Cluster::start("cri-secret", &["runc=runc"]).await;
    // Every message on the bus from here on, as the admin sees it (`>`): commands, ops,
    // deliveries, events, API answers.
    let mut wire = c.env.bus.client.subscribe(">").await.unwrap();
    let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = captured.clone();
    let tap = tokio::spawn(async move {
        while let Some(m) = wire.next().await {
            let mut all = sink.lock().unwrap();
            all.extend_from_slice(m.subject.as_bytes());
            for (k, vs) in m.headers.iter().flat_map(|h| h.iter()) {
                all.extend_from_slice(k.to_string().as_bytes());
                for v in vs {
                    all.extend_from_slice(v.as_str().as_bytes());
                }
            }
            all.extend_from_slice(&m.payload);
        }
    });

    // The container prints the SHA-256 of what it got, never the value.
    let mut spec = c.spec(
        "sealed",
        "runc",
        "printf %s \"$TOKEN\" | sha256sum; test -n \"$TOKEN\"",
    );
    spec["secrets"] = serde_json::json!({ "TOKEN": SECRET });
    let file = c.env.dir.path().join("sealed.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    c.env.cli_ok([
        std::ffi::OsStr::new("submit"),
        std::ffi::OsStr::new("--no-follow"),
        file.as_os_str(),
    ]);

    let ev = c.wait_event("sealed", "exited").await;
    let x = exited(&ev);
    assert_eq!((x.code, x.reason.as_str()), (0, "completed"), "{ev:?}");
    let digest = hex::encode(sha2::Sha256::digest(SECRET.as_bytes()));
    assert!(
        c.workload_log("sealed", 0).contains(&digest),
        "the container saw the secret: {}",
        c.workload_log("sealed", 0)
    );
    // The log keeps it sealed (to the schedulers), and the op the node got was sealed to
    // the node: another value.
    let EventBody::Accepted(a) = &ev[0].body else {
        panic!("{ev:?}")
    };
    assert!(a.spec.secrets["TOKEN"].starts_with("bhs1:"));

    // A raw `nats pub` with a plain secret is refused, the value not repeated.
    const PLAIN: &str = "plain-value-9a8b7c";
    let mut raw = c.spec("plain", "runc", "true");
    raw["secrets"] = serde_json::json!({ "TOKEN": PLAIN });
    c.submit(raw);
    let ev = c.wait_event("plain", "rejected").await;
    let EventBody::Rejected(r) = &ev[0].body else {
        panic!("{ev:?}")
    };
    assert!(r.rejection.reason.contains("not a sealed value"), "{r:?}");
    assert!(!r.rejection.reason.contains(PLAIN));

    // Nowhere else: the API's answer, every message on the bus, the streams' files, every
    // process's log.
    let answer = c.api(GET, "sealed").to_string();
    assert!(!answer.contains(SECRET), "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    tap.abort();
    let wire = captured.lock().unwrap().clone();
    assert!(
        wire.len() > 10_000,
        "the tap saw the traffic ({} bytes)",
        wire.len()
    );
    assert!(
        !wire.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the secret crossed the bus in the clear"
    );
    assert!(
        wire.windows(5).any(|w| w == b"bhs1:"),
        "sealed values did cross it"
    );
    let leaks = files_containing(c.env.dir.path(), SECRET.as_bytes());
    let leaks: Vec<_> = leaks
        .into_iter()
        .filter(|p| p != &file) // the spec file the user wrote
        .collect();
    assert!(leaks.is_empty(), "the secret is in {leaks:?}");
}

/// `bulkhead logs` reads a replica's output from the node that runs it, over NATS (the
/// program's lines, the runtime's prefix stripped), and `--follow` goes on printing what it
/// writes; another tenant can neither ask under the owner's name (the server refuses) nor
/// find it under its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_from_the_node_and_to_their_tenant_only() {
    let c = Cluster::start("cri-logs", &["runc=runc"]).await;
    c.submit(c.spec(
        "talk",
        "runc",
        "echo first line; echo second line >&2; for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.5; done; sleep 60",
    ));
    c.wait_event("talk", "started").await;
    let logs = |args: &[&str]| {
        let mut cmd = c.env.cli();
        cmd.arg("logs").args(args);
        cmd
    };
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let out = logs(&["talk"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // stdout and stderr each in order; the runtime interleaves them as they come.
        if text.contains("first line\n")
            && text.contains("second line\n")
            && text.contains("tick 1\n")
        {
            assert!(
                !text.contains(" stdout F "),
                "the runtime's prefix stripped: {text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs talk: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // --follow prints what comes later.
    let file = c.env.dir.path().join("follow.out");
    let mut follow = logs(&["talk", "--follow"])
        .stdout(std::fs::File::create(&file).unwrap())
        .spawn()
        .unwrap();
    wait_until("tick 8 to be followed", LONG, async || {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .contains("tick 8")
    })
    .await;
    follow.kill().unwrap();
    follow.wait().unwrap();
    let followed = std::fs::read_to_string(&file).unwrap();
    assert_eq!(followed.matches("tick 1\n").count(), 1, "{followed}");

    // Another tenant: refused under the owner's name, nothing under its own.
    c.env.cli_ok(["tenant", "add", "t2"]);
    let ask = serde_json::json!({"id": "talk"}).to_string();
    let foreign = c.env.natspy_req_as(
        Role::Tenant,
        "t2",
        &subjects::logs(TENANT, "cri-logs"),
        &ask,
    );
    assert!(foreign.is_err(), "{foreign:?}");
    let own = c
        .env
        .natspy_req_as(Role::Tenant, "t2", &subjects::logs("t2", "cri-logs"), &ask)
        .expect("the node answers t2 about t2's workloads");
    assert!(own.contains("no output of t2/talk"), "{own}");
    assert!(!own.contains("tick"), "{own}");
}

/// A network namespace beyond the pod bridge with a TCP server in it (`ip netns`, a veth
/// pair on 10.99.<n>.0/30): where an outbound connection from a workload should get to.
/// Removed when dropped.
struct Outside {
    ns: String,
    host_if: String,
    addr: String,
    port: u16,
    server: std::process::Child,
}

impl Outside {
    fn new() -> Outside {
        let n = std::process::id() % 200 + 20;
        let ns = format!("bh-out-{n}");
        let host_if = format!("bhout{n}");
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &ns])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &host_if])
            .output();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth-out", "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("10.99.{n}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.99.{n}.2/30"),
            "dev",
            "eth-out",
        ]);
        ip(&["-n", &ns, "link", "set", "eth-out", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let port = 18_000 + n as u16;
        let addr = format!("10.99.{n}.2");
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-c",
                SERVER,
                &addr,
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Outside {
            ns,
            host_if,
            addr,
            port,
            server,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.host_if])
            .output();
    }
}

/// A TCP server that greets every connection and closes it.
const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(b"hello-from-outside\n")
    c.close()
"#;

/// The host's own IPv4 addresses (every interface's, the pod bridge's gateway included).
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .filter(|a| !a.starts_with("127.") && !a.starts_with("10.99."))
        .map(str::to_owned)
        .collect()
}

/// Every container is restricted whatever its class: the runtime's default seccomp
/// profile (mode 2, filter), `no_new_privs`, no capability but `NET_BIND_SERVICE` (bit 10),
/// so no raw socket; on runc read from the kernel's view of the process, on gVisor (which
/// shows its own `/proc`) from the raw socket it refuses. And a network of its own: no
/// connection to the host's services (a listener on all the host's addresses, and
/// nats-server's port), one to a server beyond the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_restricted_and_kept_off_the_host_on_runc_and_gvisor() {
    let c = Cluster::start("cri-restricted", &["runc=runc", "gvisor=runsc"]).await;
    // A host service listening everywhere: what a workload must not reach.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let nats_port = c.env.server.url.rsplit(':').next().unwrap().to_owned();
    let outside = Outside::new();
    let mut targets: Vec<String> = host_addresses()
        .iter()
        .map(|a| format!("{a}:{host_port}"))
        .collect();
    targets.push(format!("127.0.0.1:{nats_port}"));
    targets.push("10.88.0.1:".to_owned() + &nats_port);
    assert!(targets.len() >= 3, "host addresses: {targets:?}");
    let mut script = "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status; \
                      ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1 && echo raw=yes || echo raw=no; "
        .to_owned();
    for t in &targets {
        let (a, p) = t.rsplit_once(':').unwrap();
        script += &format!(
            "nc -w 2 {a} {p} </dev/null >/dev/null 2>&1 && echo 'reach {t}' || echo 'closed {t}'; "
        );
    }
    script += &format!(
        "echo \"out=$(nc -w 3 {} {} </dev/null 2>&1)\"",
        outside.addr, outside.port
    );
    c.submit(c.spec("on-runc", "runc", &script));
    c.submit(c.spec("on-gvisor", "gvisor", &format!(": on-gvisor; {script}")));
    for id in ["on-runc", "on-gvisor"] {
        let ev = c.wait_event(id, "exited").await;
        let log = c.workload_log(id, 0);
        assert_eq!(exited(&ev).code, 0, "{id}: {log}");
        assert!(log.contains("raw=no"), "{id}: a raw socket: {log}");
        for t in &targets {
            assert!(
                log.contains(&format!("closed {t}")),
                "{id}: the host's {t}: {log}"
            );
        }
        assert!(
            log.contains("out=hello-from-outside"),
            "{id}: the server beyond the bridge: {log}"
        );
    }
    let log = c.workload_log("on-runc", 0);
    for line in [
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000400",
        "CapBnd:\t0000000000000400",
    ] {
        assert!(log.contains(line), "runc: {line}: {log}");
    }
    // gVisor shows its own /proc: what it was given is in the OCI spec it received (kept by
    // the test environment's runsc wrapper).
    let specs =
        std::path::Path::new(&std::env::var("BULKHEAD_TEST_CRI_DIR").unwrap()).join("specs");
    let spec: serde_json::Value = std::fs::read_dir(&specs)
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .find(|v| {
            v["process"]["args"][2]
                .as_str()
                .is_some_and(|a| a.starts_with(": on-gvisor;"))
        })
        .expect("the gVisor container's OCI spec");
    assert_eq!(spec["process"]["noNewPrivileges"], true, "{spec}");
    assert_eq!(
        spec["process"]["capabilities"]["effective"],
        serde_json::json!(["CAP_NET_BIND_SERVICE"]),
        "{spec}"
    );
    assert_eq!(
        spec["process"]["capabilities"]["bounding"],
        serde_json::json!(["CAP_NET_BIND_SERVICE"])
    );
    let seccomp = &spec["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO", "{seccomp}");
    assert!(
        seccomp["syscalls"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    drop(host_service);

    // The node's guard is its own, and goes when the node stops.
    let tables = || {
        let out = std::process::Command::new("nft")
            .args(["list", "tables", "inet"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = format!("bulkhead_cri_restricted_{}", c.node_pid);
    assert!(tables().contains(&table), "{table}: {}", tables());
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &c.node_pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    wait_until("the stopped node's guard to be removed", LONG, async || {
        !tables().contains(&table)
    })
    .await;
}

/// A spec's own settings on top of the restricted default: a user id, a read-only root
/// filesystem, an added capability, each applied and reported in `started` and `get`;
/// host networking refused by a policy that does not allow it (the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_specs_security_settings_are_applied_reported_and_host_network_refused() {
    let c = Cluster::start("cri-settings", &["runc=runc"]).await;
    let mut user = c.spec(
        "as-user",
        "runc",
        "echo uid=$(id -u); touch /probe 2>/dev/null && echo rootfs=writable || echo rootfs=read-only",
    );
    user["security"] = serde_json::json!({"run_as_user": 1000, "read_only_rootfs": true});
    c.submit(user);
    let mut raw = c.spec(
        "with-raw",
        "runc",
        "grep CapEff /proc/self/status; ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1 && echo raw=yes || echo raw=no",
    );
    raw["security"] = serde_json::json!({"add_capabilities": ["NET_RAW"]});
    c.submit(raw);
    let mut host = c.spec("on-host", "runc", "true");
    host["security"] = serde_json::json!({"host_network": true});
    c.submit(host);

    let ev = c.wait_event("as-user", "exited").await;
    let log = c.workload_log("as-user", 0);
    assert!(log.contains("uid=1000"), "{log}");
    assert!(log.contains("rootfs=read-only"), "{log}");
    let started = ev
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Started(s) => Some(s.clone()),
            _ => None,
        })
        .expect("started");
    let conf = started
        .confinement
        .expect("a CRI node reports its confinement");
    assert_eq!(
        (
            conf.network.as_str(),
            conf.run_as_user,
            conf.read_only_rootfs
        ),
        ("pod", Some(1000), true)
    );
    assert_eq!(conf.capabilities, ["NET_BIND_SERVICE"]);
    assert!(conf.no_new_privs);
    let v = c.api(GET, "as-user");
    assert_eq!(v["replicas"][0]["confinement"]["run_as_user"], 1000, "{v}");

    c.wait_event("with-raw", "exited").await;
    let log = c.workload_log("with-raw", 0);
    assert!(log.contains("raw=yes"), "an added NET_RAW: {log}");
    assert!(log.contains("CapEff:\t0000000000002400"), "{log}");

    let ev = c.wait_event("on-host", "rejected").await;
    let EventBody::Rejected(r) = &ev[0].body else {
        panic!("{ev:?}")
    };
    assert!(
        r.rejection.reason.contains("allow_host_network"),
        "{}",
        r.rejection.reason
    );
}
