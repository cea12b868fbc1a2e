//! Test harness: a real nats-server in a temp dir, bulkhead processes, the nats-py client,
//! and readers of the event log.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bulkhead::auth::DataDir;
use bulkhead::auth::setup::{self, Auth, Listen};
use bulkhead::bus::{Bus, Topology};
use bulkhead::natsd::{NatsServer, Sync};
use bulkhead_schemas::event::{Event, hash_bytes};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;
use futures::StreamExt;

/// The tenant of the tests' workloads, and its subjects.
pub const TENANT: &str = subjects::DEFAULT_TENANT;
pub const SUBMIT: &str = "bulkhead.cmd.default.submit";
pub const STOP: &str = "bulkhead.cmd.default.stop";
pub const SCALE: &str = "bulkhead.cmd.default.scale";
pub const GET: &str = "bulkhead.api.default.workloads.get";
pub const LIST: &str = "bulkhead.api.default.workloads.list";

/// The key of the tests' workload `id`.
pub fn key(id: &str) -> String {
    subjects::workload_key(TENANT, id)
}

/// The id part of a workload key.
pub fn id_of(key: &str) -> &str {
    subjects::split_key(key).map_or(key, |(_, id)| id)
}

pub struct Env {
    pub server: NatsServer,
    pub dir: tempfile::TempDir,
    /// The admin's connection.
    pub bus: Bus,
    /// The admin's data directory: every identity's credential.
    pub data: DataDir,
    children: Vec<Child>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

impl Env {
    /// The last lines of every process's log and the server's (for a failed test).
    fn print_logs(&self) {
        let server = self.data.nats_dir().join("nats-server.log");
        let mut logs: Vec<std::path::PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        logs.push(server);
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("==== {} (last {} lines)", p.display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// A cluster set up as `bulkhead up` sets it up: identities, nats-server with one nkey
/// user per identity (anonymous connections refused), streams, enrolments.
pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(&dir.path().join("data"));
    let listen = Listen {
        host: "127.0.0.1".into(),
        port: 0,
        sync: Sync::Default,
    };
    let cluster = setup::start(&data, &listen, &Topology::default(), Auth::Required)
        .await
        .expect("the cluster sets up");
    Env {
        server: cluster.server,
        dir,
        bus: cluster.admin,
        data,
        children: Vec::new(),
    }
}

impl Env {
    /// Starts `bulkhead <args>` against this server; its log goes to `<dir>/<log>.log`.
    pub fn spawn(&mut self, log: &str, args: &[&str]) -> u32 {
        self.spawn_env(log, args, &[])
    }

    /// As [`Env::spawn`], with extra environment variables. A node is enrolled first (with
    /// every runtime class, or those of `--classes`) unless it is already.
    pub fn spawn_env(&mut self, log: &str, args: &[&str], vars: &[(&str, &str)]) -> u32 {
        if args.first() == Some(&"node")
            && let Some(i) = args.iter().position(|a| *a == "--name")
        {
            let classes = args
                .iter()
                .position(|a| *a == "--classes")
                .map(|i| args[i + 1].to_owned());
            self.enroll_node(args[i + 1], classes.as_deref());
        }
        let out = std::fs::File::create(self.dir.path().join(format!("{log}.log"))).unwrap();
        let child = self
            .cli()
            .args(args)
            .envs(vars.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// `bulkhead --nats <this server> --data-dir <this cluster's>`, to add arguments to.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        c.arg("--nats")
            .arg(&self.server.url)
            .arg("--data-dir")
            .arg(self.data.root());
        c
    }

    /// Runs `bulkhead <args>` against this cluster; panics with its stderr unless it
    /// succeeds. Returns its output (stdout and stderr, for what it says).
    pub fn cli_ok<I, A>(&self, args: I) -> std::process::Output
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        let out = self.cli().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Enrols node `name` (`bulkhead node add`) with `classes` (comma-separated; default
    /// every class) unless the book has it already.
    pub fn enroll_node(&self, name: &str, classes: Option<&str>) {
        if let Ok(book) = self.data.book()
            && book.get(Role::Node, name).is_some()
        {
            return;
        }
        let all = "runc,gvisor,kata,edera-zone,confidential";
        let out = self
            .cli()
            .args(["node", "add", name, "--classes", classes.unwrap_or(all)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "node add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What the query API lists for `node` (asked as the admin).
    fn node_view(&self, node: &str) -> Option<bulkhead_schemas::api::NodeView> {
        let reply = self
            .natspy_req_as(Role::Admin, "admin", subjects::API_NODES_LIST, "")
            .ok()?;
        let reply: bulkhead_schemas::api::NodesReply = serde_json::from_str(&reply).ok()?;
        reply.nodes.into_iter().find(|n| n.heartbeat.name == node)
    }

    /// A node's status as the query API gives it (empty when it lists none).
    pub fn node_status(&self, node: &str) -> String {
        self.node_view(node)
            .map(|n| n.marks.status())
            .unwrap_or_default()
    }

    /// The interval `node`'s latest heartbeat states, as the query API has it.
    pub fn node_interval_ms(&self, node: &str) -> Option<u64> {
        self.node_view(node).map(|n| n.heartbeat.interval_ms)
    }

    /// Waits until the query API shows `node` ready.
    pub async fn wait_ready(&self, node: &str) {
        let long = Duration::from_secs(60);
        wait_until(&format!("node {node} to be ready"), long, async || {
            self.node_status(node) == "ready"
        })
        .await;
    }

    /// The credential file of `role` `name`.
    pub fn creds_path(&self, role: Role, name: &str) -> std::path::PathBuf {
        self.data.creds_path(role, name)
    }

    pub fn sigkill(&mut self, pid: u32) {
        let c = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("our child");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to process `pid` (a child of this test).
    pub fn signal(&self, pid: u32, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {pid}");
    }

    /// Scan workers alive now (as `bulkhead scan` and the scheduler count them); 0 when
    /// they cannot be listed.
    pub async fn scan_workers(&self) -> usize {
        let Ok(kv) = self
            .bus
            .js
            .get_key_value(bulkhead_schemas::subjects::SCANNERS_BUCKET)
            .await
        else {
            return 0;
        };
        bulkhead::scan::worker::live_workers(&kv).await.unwrap_or(0)
    }

    /// The sequence of the last message of the log under `filter`.
    pub async fn last_seq(&self, filter: &str) -> u64 {
        self.bus.last_event(filter).await.unwrap().unwrap().seq
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// nats-py, connected as the default tenant (as `nats --nkey …` would be).
    fn natspy(&self) -> Command {
        let mut c = Command::new("python3");
        c.arg(script())
            .env("NATSPY_CREDS", self.creds_path(Role::Tenant, TENANT));
        c
    }

    /// Publishes raw bytes with nats-py as the admin (drains are an operator's).
    pub fn natspy_pub_admin(&self, subject: &str, payload: &[u8]) {
        let f = self.dir.path().join(format!("payload-{}", uuid_like()));
        std::fs::write(&f, payload).unwrap();
        let st = Command::new("python3")
            .arg(script())
            .env("NATSPY_CREDS", self.creds_path(Role::Admin, "admin"))
            .args([&self.server.url, "pub", subject, &f.display().to_string()])
            .status()
            .expect("python3 runs");
        assert!(st.success(), "nats-py publish failed");
    }

    /// Publishes raw bytes with nats-py, as `nats pub` would.
    pub fn natspy_pub(&self, subject: &str, payload: &[u8], msg_id: Option<&str>) {
        let f = self.dir.path().join(format!("payload-{}", uuid_like()));
        std::fs::write(&f, payload).unwrap();
        let mut args = vec![
            self.server.url.clone(),
            "pub".into(),
            subject.into(),
            f.display().to_string(),
        ];
        if let Some(id) = msg_id {
            args.push(id.into());
        }
        let st = self.natspy().args(&args).status().expect("python3 runs");
        assert!(st.success(), "nats-py publish failed");
    }

    /// Publishes many payloads from one nats-py process, in order.
    pub fn natspy_pub_many(&self, subject: &str, payloads: &[Vec<u8>]) {
        let d = self.dir.path().join(format!("many-{}", uuid_like()));
        std::fs::create_dir_all(&d).unwrap();
        for (i, p) in payloads.iter().enumerate() {
            std::fs::write(d.join(format!("{i:08}")), p).unwrap();
        }
        let st = self
            .natspy()
            .args([
                &self.server.url,
                "pubmany",
                subject,
                &d.display().to_string(),
            ])
            .status()
            .expect("python3 runs");
        assert!(st.success(), "nats-py publish failed");
    }

    /// Requests with nats-py, as `nats req` would; Err carries the service error.
    pub fn natspy_req(&self, subject: &str, data: &str) -> Result<String, String> {
        self.natspy_req_as(Role::Tenant, TENANT, subject, data)
    }

    /// As [`Env::natspy_req`], connected as `role` `name`.
    pub fn natspy_req_as(
        &self,
        role: Role,
        name: &str,
        subject: &str,
        data: &str,
    ) -> Result<String, String> {
        let out = Command::new("python3")
            .arg(script())
            .env("NATSPY_CREDS", self.creds_path(role, name))
            .args([&self.server.url, "req", subject, data])
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Everything set aside, as the query API answers an admin.
    pub async fn aside(&self) -> bulkhead_schemas::api::AsideReply {
        let reply = self
            .bus
            .client
            .request(subjects::API_ASIDE_LIST, "".into())
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    /// Every workload event in the log, in order: (seq, raw bytes, parsed).
    pub async fn events(&self, filter: &str) -> Vec<(u64, Vec<u8>, Event)> {
        let end = self
            .bus
            .last_event(filter)
            .await
            .unwrap()
            .map(|h| h.seq)
            .unwrap_or(0);
        let mut out = Vec::new();
        if end == 0 {
            return out;
        }
        let stream = self.bus.js.get_stream(subjects::EVT_STREAM).await.unwrap();
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.into(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = consumer.messages().await.unwrap();
        while let Some(m) = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("log readable")
        {
            let m = m.unwrap();
            let seq = m.info().unwrap().stream_sequence;
            out.push((
                seq,
                m.payload.to_vec(),
                Event::parse(&m.payload).expect("events parse"),
            ));
            if seq >= end {
                break;
            }
        }
        out
    }

    /// Event types of each workload, in log order.
    pub async fn kinds_by_workload(&self) -> BTreeMap<String, Vec<&'static str>> {
        let mut by: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for (_, _, e) in self.events(subjects::EVT_WORKLOADS).await {
            by.entry(id_of(&e.subject).to_owned())
                .or_default()
                .push(e.kind());
        }
        by
    }

    /// Waits until `check` holds for the log, or panics after `timeout` with `what`.
    pub async fn wait_for<F>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut(&BTreeMap<String, Vec<&'static str>>) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let by = self.kinds_by_workload().await;
            if check(&by) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; log: {by:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Checks that each workload's events chain: `prev` is the hash of the previous stored bytes.
pub fn assert_chains(events: &[(u64, Vec<u8>, Event)]) {
    let mut last: BTreeMap<&str, [u8; 32]> = BTreeMap::new();
    for (seq, bytes, e) in events {
        let expected = last.get(e.subject.as_str()).map(hex::encode);
        assert_eq!(
            e.prev,
            expected,
            "event {seq} ({} of {}) breaks the chain",
            e.kind(),
            e.subject
        );
        last.insert(e.subject.as_str(), hash_bytes(bytes));
    }
}

pub fn spec(id: Option<&str>) -> serde_json::Value {
    let mut v =
        serde_json::json!({"image": "localhost/busybox:1", "memory_mb": 16, "cpu_millicores": 10});
    if let Some(id) = id {
        v["id"] = id.into();
    }
    v
}

fn script() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/natspy_client.py"
    ))
}

fn uuid_like() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub fn done(kinds: &[&str]) -> bool {
    kinds.contains(&"started") || kinds.contains(&"rejected")
}

/// Holder of the scheduler lease.
pub async fn lease_holder(bus: &Bus) -> Option<String> {
    lease_holder_of(bus, subjects::SCHEDULER_LEASE_KEY).await
}

/// Holder of lease `key` (its instance name, `scheduler-<pid>`, `failover-<pid>`).
pub async fn lease_holder_of(bus: &Bus, key: &str) -> Option<String> {
    let kv = bus.js.get_key_value(subjects::LEASES_BUCKET).await.unwrap();
    kv.get(key)
        .await
        .unwrap()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
