//! The `failover` scenario: how fast a replacement runs after a container dies (sim nodes
//! by the thousand, and real containerd), and after a node carrying many replicas is lost.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead::bus::{Bus, MAX_BATCH};
use bulkhead::failover::{self, FailoverConfig};
use bulkhead::natsd::Sync;
use bulkhead::node::NodeHandle;
use bulkhead::node::config::NodeFile;
use bulkhead::node::cri::CriRuntime;
use bulkhead_actors::node::NodeConfig;
use bulkhead_actors::ports::sim::SimRuntime;
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::spec::RuntimeClass;
use bulkhead_schemas::{Resources, subjects};
use futures::StreamExt;

use crate::bench::{Bench, Control};
use crate::burst::stored_events;
use crate::results::pct_ms;

/// Die → replacement running, and node lost → its replicas running elsewhere.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 2000)]
    pub workloads: usize,
    #[arg(long, default_value_t = 300)]
    pub kills: usize,
    /// Replicas on the node that is lost.
    #[arg(long, default_value_t = 1000)]
    pub lost_workloads: usize,
    /// Nodes that take the lost node's replicas over.
    #[arg(long, default_value_t = 100)]
    pub lost_nodes: usize,
    #[arg(long, default_value_t = 3000)]
    pub lost_timeout_ms: u64,
    /// Real containerd (from scripts/cri-env.sh); its part is skipped when absent.
    #[arg(long, env = "BULKHEAD_TEST_CRI_SOCKET")]
    pub cri_socket: Option<PathBuf>,
    #[arg(long, env = "BULKHEAD_TEST_IMAGE")]
    pub cri_image: Option<String>,
    #[arg(long, default_value_t = 30)]
    pub cri_kills: usize,
    /// Only the real containerd part (events, then polling).
    #[arg(long)]
    pub cri_only: bool,
}

/// Starts (workload id → times of each `started`), as they are stored.
type Starts = Arc<Mutex<HashMap<String, Vec<(Instant, String, String)>>>>;

async fn watch_starts(bus: &Bus) -> anyhow::Result<Starts> {
    let starts: Starts = Arc::default();
    let mut sub = bus.client.subscribe(stored_events("started")).await?;
    let s = starts.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Ok(e) = Event::parse(&m.payload) else {
                continue;
            };
            if let EventBody::Started(st) = e.body {
                let id = e.subject.rsplit('/').next().unwrap_or_default().to_owned();
                s.lock().expect("lock").entry(id).or_default().push((
                    Instant::now(),
                    st.node,
                    st.container,
                ));
            }
        }
    });
    Ok(starts)
}

/// Times each workload's `exited` was stored.
async fn watch_exits(bus: &Bus) -> anyhow::Result<Arc<Mutex<HashMap<String, Vec<Instant>>>>> {
    let exits: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let mut sub = bus.client.subscribe(stored_events("exited")).await?;
    let x = exits.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Ok(e) = Event::parse(&m.payload) {
                let id = e.subject.rsplit('/').next().unwrap_or_default().to_owned();
                x.lock()
                    .expect("lock")
                    .entry(id)
                    .or_default()
                    .push(Instant::now());
            }
        }
    });
    Ok(exits)
}

fn count(starts: &Starts, id: &str) -> usize {
    starts.lock().expect("lock").get(id).map_or(0, Vec::len)
}

async fn wait_starts(starts: &Starts, ids: &[String], n: usize, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while ids.iter().any(|id| count(starts, id) < n) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} workloads did not reach {n} starts in {secs} s",
            ids.iter().filter(|id| count(starts, id) < n).count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn sim_node(
    name: &str,
    slots: u32,
    heartbeat_ms: u64,
) -> (
    NodeConfig,
    SimRuntime,
    tokio::sync::mpsc::UnboundedReceiver<bulkhead_actors::ports::runtime::ExitNotice>,
) {
    let (rt, exits) = SimRuntime::new(name, vec![RuntimeClass::Runc], Duration::ZERO);
    let cfg = NodeConfig {
        name: name.to_owned(),
        capacity: Resources {
            memory_mb: 1024 * 1024,
            cpu_millicores: 1_000_000,
            slots,
        },
        labels: BTreeMap::new(),
        heartbeat_ms,
        stop_grace: Duration::from_secs(1),
        instance: String::new(),
    };
    (cfg, rt, exits)
}

fn spec(id: &str, image: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "image": image, "memory_mb": 16, "cpu_millicores": 10,
        "placement": "spread",
        "restart": {"policy": "always", "max_restarts": 1000, "backoff_initial_ms": 1,
                    "backoff_max_ms": 1000}})
}

/// A workload of `spec` that runs `sleep 3600` (for real containers to kill).
fn sleeper(id: &str, image: &str) -> serde_json::Value {
    let mut s = spec(id, image);
    s["command"] = serde_json::json!(["sleep", "3600"]);
    s
}

/// Publishes `bulkhead.cmd.stop` with no grace for each of `ids`.
pub(crate) async fn stop_all(bus: &Bus, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        let stop = serde_json::json!({"id": id, "grace_secs": 0});
        bus.client
            .publish(
                subjects::cmd(subjects::DEFAULT_TENANT, "stop"),
                serde_json::to_vec(&stop)?.into(),
            )
            .await?;
    }
    Ok(())
}

async fn submit_all(bus: &Bus, specs: &[serde_json::Value]) -> anyhow::Result<()> {
    for chunk in specs.chunks(MAX_BATCH) {
        let msgs: Vec<_> = chunk
            .iter()
            .map(|s| {
                (
                    subjects::cmd(subjects::DEFAULT_TENANT, "submit"),
                    async_nats::HeaderMap::new(),
                    bytes::Bytes::from(serde_json::to_vec(s).expect("json")),
                )
            })
            .collect();
        bus.publish_atomic(&msgs)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(())
}

fn report(label: &str, lat: &mut [Duration]) {
    lat.sort();
    println!(
        "{label}: n {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct_ms(lat, 0.5),
        pct_ms(lat, 0.99),
        pct_ms(lat, 1.0)
    );
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !args.cri_only {
        sim_die(&args).await?;
        node_lost(&args).await?;
    }
    if let (Some(socket), Some(image)) = (&args.cri_socket, &args.cri_image) {
        cri_die(socket, image, args.cri_kills, true).await?;
        cri_die(socket, image, args.cri_kills, false).await?;
        cri_overlap(socket, image, 20).await?;
    } else {
        println!("\n(real containerd part skipped: no BULKHEAD_TEST_CRI_SOCKET)");
    }
    Ok(())
}

/// The query API, a scheduler and a failover losing nodes after `lost_timeout_ms`.
async fn start_control(
    bench: &Bench,
    lost_timeout_ms: u64,
) -> anyhow::Result<(Control, failover::FailoverHandle)> {
    let control = bench.control().await?;
    let failover = failover::start(
        &bench.failover().await?,
        FailoverConfig {
            lost_timeout: Duration::from_millis(lost_timeout_ms),
            ..Default::default()
        },
    )
    .await?;
    Ok((control, failover))
}

/// Containers die one by one on a fleet of sim nodes: kill → replacement `started`.
async fn sim_die(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Always).await?;
    let bus = bench.admin().clone();
    println!(
        "\n## failover, sim: {} nodes (heartbeat 5 s), {} workloads (restart always, backoff_initial_ms 1), {} kills, sync_interval: always",
        args.nodes, args.workloads, args.kills
    );
    let t = Instant::now();
    let mut runtimes = HashMap::new();
    let mut handles = Vec::new();
    let names: Vec<String> = (0..args.nodes).map(|i| format!("sim-{i}")).collect();
    bench.enroll_nodes(&names).await?;
    for name in names {
        // Heartbeats every 5 s: a thousand in-process nodes beating every second saturate
        // this 2-core machine (the lost-node part below beats every second).
        let (cfg, rt, exits) = sim_node(&name, 1000, 5000);
        let rt = Arc::new(rt);
        runtimes.insert(name, rt.clone());
        handles.push(bench.node(cfg, rt, exits).await?);
    }
    println!(
        "{} sim nodes up in {:.1} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    let (_control, failover) = start_control(&bench, 20_000).await?;
    let starts = watch_starts(&bus).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<String> = (0..args.workloads).map(|i| format!("die-{i}")).collect();
    let specs: Vec<_> = ids.iter().map(|id| spec(id, "localhost/app:1")).collect();
    submit_all(&bus, &specs).await?;
    wait_starts(&starts, &ids, 1, 120).await?;
    println!("{} workloads running", ids.len());

    let mut lat = Vec::new();
    for id in ids.iter().cycle().step_by(7).take(args.kills) {
        let (node, container) = {
            let s = starts.lock().expect("lock");
            let last = s[id].last().expect("started").clone();
            (last.1, last.2)
        };
        let before = count(&starts, id);
        let t = Instant::now();
        anyhow::ensure!(
            runtimes[&node].inject_exit(&container, 137),
            "{container} not on {node}"
        );
        let deadline = t + Duration::from_secs(10);
        while count(&starts, id) == before {
            anyhow::ensure!(Instant::now() < deadline, "{id} not replaced in 10 s");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let at = starts.lock().expect("lock")[id].last().expect("started").0;
        lat.push(at.duration_since(t));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    report("die → replacement running (sim)", &mut lat);
    println!("failover: {:?}", failover.stats().await?);
    drop(handles);
    Ok(())
}

/// A node carrying `lost_workloads` replicas vanishes: kill → every replica running
/// elsewhere.
async fn node_lost(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Always).await?;
    let bus = bench.admin().clone();
    println!(
        "\n## failover, node lost: {} workloads on the lost node, {} other sim nodes, heartbeat 1 s, lost timeout {} ms",
        args.lost_workloads, args.lost_nodes, args.lost_timeout_ms
    );
    let mut names: Vec<String> = (0..args.lost_nodes).map(|i| format!("sim-{i}")).collect();
    names.push("victim".into());
    bench.enroll_nodes(&names).await?;
    let (cfg, rt, exits) = sim_node("victim", args.lost_workloads as u32 + 10, 1000);
    let victim: NodeHandle = bench.node(cfg, Arc::new(rt), exits).await?;
    let (_control, failover) = start_control(&bench, args.lost_timeout_ms).await?;
    let starts = watch_starts(&bus).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<String> = (0..args.lost_workloads)
        .map(|i| format!("lost-{i}"))
        .collect();
    let specs: Vec<_> = ids.iter().map(|id| spec(id, "localhost/app:1")).collect();
    submit_all(&bus, &specs).await?;
    wait_starts(&starts, &ids, 1, 120).await?;
    let mut others = Vec::new();
    for i in 0..args.lost_nodes {
        let name = format!("sim-{i}");
        let (cfg, rt, exits) = sim_node(&name, 1000, 1000);
        others.push(bench.node(cfg, Arc::new(rt), exits).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lost_sub = bus
        .client
        .subscribe(subjects::node_event("victim", "lost"))
        .await?;
    let t = Instant::now();
    drop(victim);
    let lost_at = tokio::time::timeout(Duration::from_secs(60), lost_sub.next())
        .await?
        .map(|_| Instant::now())
        .ok_or_else(|| anyhow::anyhow!("no lost event"))?;
    wait_starts(&starts, &ids, 2, 120).await?;
    let mut lat: Vec<Duration> = {
        let s = starts.lock().expect("lock");
        ids.iter().map(|id| s[id][1].0.duration_since(t)).collect()
    };
    let elsewhere = {
        let s = starts.lock().expect("lock");
        ids.iter().filter(|id| s[*id][1].1 != "victim").count()
    };
    println!(
        "node silent → declared lost: {:.2} s; all {} replicas running elsewhere ({} on other nodes) {:.2} s after the kill, {:.0} ms after the loss",
        lost_at.duration_since(t).as_secs_f64(),
        ids.len(),
        elsewhere,
        lat.iter().max().copied().unwrap_or_default().as_secs_f64(),
        (lat.iter().max().copied().unwrap_or_default() - lost_at.duration_since(t)).as_secs_f64()
            * 1e3
    );
    report("kill → replica running elsewhere", &mut lat);
    println!("failover: {:?}", failover.stats().await?);
    drop(others);
    Ok(())
}

/// Real containerd: kill -9 a container's process → its `exited` is logged → the
/// replacement runs; exits found by containerd's `/tasks/exit` events or by the poll alone.
async fn cri_die(
    socket: &std::path::Path,
    image: &str,
    kills: usize,
    events: bool,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Always).await?;
    let bus = bench.admin().clone();
    println!(
        "\n## failover, real containerd (runc): {kills} kills of `sleep` containers, restart always, backoff_initial_ms 1, exits by {}",
        if events {
            "containerd's /tasks/exit events"
        } else {
            "a 200 ms poll"
        }
    );
    let mut file = NodeFile::default();
    file.add_handler("runc=runc")?;
    file.cri.socket = socket.to_owned();
    file.cri.log_dir = dir.path().join("logs");
    file.cri.probe_image = image.to_owned();
    file.slots = 1000;
    file.cri.exit_events = events;
    let (rt, exits) = CriRuntime::connect("fo-bench", file.cri.clone()).await?;
    bench.enroll_nodes(&["fo-bench".into()]).await?;
    let node = bench
        .node(file.node_config("fo-bench".into()), rt.clone(), exits)
        .await?;
    let (_control, failover) = start_control(&bench, 3000).await?;
    let starts = watch_starts(&bus).await?;
    let exited = watch_exits(&bus).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<String> = (0..kills.min(10)).map(|i| format!("cri-{i}")).collect();
    let specs: Vec<_> = ids.iter().map(|id| sleeper(id, image)).collect();
    submit_all(&bus, &specs).await?;
    wait_starts(&starts, &ids, 1, 120).await?;
    let cri = rt.client();
    let mut lat = Vec::new();
    let mut detect = Vec::new();
    for id in ids.iter().cycle().take(kills) {
        let container = starts.lock().expect("lock")[id]
            .last()
            .expect("started")
            .2
            .clone();
        let pid = cri
            .container_pid(&container)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no pid for {container}"))?;
        let before = count(&starts, id);
        let t = Instant::now();
        let st = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        anyhow::ensure!(st.success(), "kill -9 {pid}");
        let deadline = t + Duration::from_secs(30);
        while count(&starts, id) == before {
            anyhow::ensure!(Instant::now() < deadline, "{id} not replaced in 30 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let at = starts.lock().expect("lock")[id].last().expect("started").0;
        lat.push(at.duration_since(t));
        if let Some(x) = exited.lock().expect("lock").get(id).and_then(|v| v.last()) {
            detect.push(x.duration_since(t));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    report("kill → `exited` stored (containerd, runc)", &mut detect);
    report("die → replacement running (containerd, runc)", &mut lat);
    println!("failover: {:?}", failover.stats().await?);
    stop_all(&bus, &ids).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bulkhead_actors::ports::runtime::ContainerRuntime::observe(&*rt, "fo-bench")
        .await?
        .is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(node);
    Ok(())
}

/// Waits until `node` has a heartbeat in the nodes bucket.
async fn wait_heartbeat(bus: &Bus, node: &str) -> anyhow::Result<()> {
    let kv = bus.js.get_key_value(subjects::NODES_BUCKET).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while kv.get(node).await?.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "node {node} never beat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A node process whose name and pid the overlap part needs; killed on drop.
struct NodeProcess(std::process::Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Real containerd, two node processes: node `pa` is frozen (SIGSTOP) with `n` replicas,
/// they run again on `pb`, then `pa` thaws and removes its replaced copies. Times the
/// thaw → copies gone, and each replica's overlap (replacement started → old copy gone).
pub async fn cri_overlap(socket: &std::path::Path, image: &str, n: usize) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.with_file_name("bulkhead");
    if !bin.exists() {
        println!(
            "\n(overlap part skipped: no {} — `cargo build --release -p bulkhead` first)",
            bin.display()
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Always).await?;
    let bus = bench.admin().clone();
    println!(
        "\n## node frozen and thawed, real containerd (runc): {n} replicas on it, heartbeats 200 ms, lost timeout 1.5 s"
    );
    let _control = start_control(&bench, 1500).await?;
    bench.enroll_nodes(&["pa".into(), "pb".into()]).await?;
    let url = bench.cluster.server.url.clone();
    let data_dir = bench.cluster.data.root().to_owned();
    let spawn = |name: &str| -> anyhow::Result<NodeProcess> {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
        Ok(NodeProcess(
            std::process::Command::new(&bin)
                .args(["--nats", &url])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["node", "--runtime", "cri", "--name", name])
                .arg("--cri-socket")
                .arg(socket)
                .arg("--log-dir")
                .arg(dir.path().join("logs"))
                .args(["--probe-image", image, "--heartbeat-ms", "200"])
                .args(["--slots", "1000"])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()?,
        ))
    };
    let pa = spawn("pa")?;
    wait_heartbeat(&bus, "pa").await?;
    let starts = watch_starts(&bus).await?;
    let ids: Vec<String> = (0..n).map(|i| format!("frozen-{i}")).collect();
    let specs: Vec<_> = ids.iter().map(|id| sleeper(id, image)).collect();
    submit_all(&bus, &specs).await?;
    wait_starts(&starts, &ids, 1, 120).await?;
    let pb = spawn("pb")?;
    wait_heartbeat(&bus, "pb").await?;
    let (cri, _) = bulkhead::node::cri::Cri::connect(socket).await?;
    let on = async |node: &str| -> anyhow::Result<Vec<String>> {
        Ok(cri
            .list_containers(
                &[
                    (bulkhead::node::cri::LABEL_NODE, node),
                    (bulkhead::node::cri::LABEL_ROLE, "workload"),
                ],
                Some(bulkhead::node::cri::v1::ContainerState::ContainerRunning),
            )
            .await?
            .into_iter()
            .map(|c| c.labels[bulkhead::node::cri::LABEL_WORKLOAD].clone())
            .collect())
    };
    anyhow::ensure!(on("pa").await?.len() == n, "all {n} on pa first");
    let signal = |sig: &str| -> anyhow::Result<()> {
        let st = std::process::Command::new("kill")
            .args([sig, &pa.0.id().to_string()])
            .status()?;
        anyhow::ensure!(st.success(), "kill {sig}");
        Ok(())
    };
    let t = Instant::now();
    signal("-STOP")?;
    wait_starts(&starts, &ids, 2, 60).await?;
    let all_again = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let thaw = Instant::now();
    signal("-CONT")?;
    let mut gone: HashMap<String, Instant> = HashMap::new();
    let deadline = thaw + Duration::from_secs(60);
    loop {
        let still = on("pa").await?;
        let now = Instant::now();
        for id in &ids {
            if !still.contains(id) {
                gone.entry(id.clone()).or_insert(now);
            }
        }
        if gone.len() == n {
            break;
        }
        anyhow::ensure!(
            now < deadline,
            "{} copies still on pa after 60 s",
            still.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut after_thaw: Vec<Duration> = gone.values().map(|g| g.duration_since(thaw)).collect();
    let mut overlap: Vec<Duration> = ids
        .iter()
        .map(|id| {
            let started = starts.lock().expect("lock")[id].last().expect("started").0;
            gone[id].duration_since(started)
        })
        .collect();
    println!(
        "frozen → all {n} running on pb: {:.2} s; pa thawed 1 s later",
        all_again.as_secs_f64()
    );
    report("thaw → pa's replaced copy removed", &mut after_thaw);
    report(
        "overlap: replacement started → old copy removed (includes the 1 s still frozen)",
        &mut overlap,
    );
    let on_b = on("pb").await?;
    anyhow::ensure!(
        ids.iter()
            .all(|id| on_b.iter().filter(|w| *w == id).count() == 1),
        "each runs once on pb: {on_b:?}"
    );
    stop_all(&bus, &ids).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !on("pb").await?.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((pa, pb));
    Ok(())
}
