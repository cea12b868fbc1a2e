//! The `cri` scenario: submit → running on a real CRI runtime, one workload at a time per
//! runtime class, with the time of each CRI call on that path.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead::natsd::Sync;

use crate::bench::Bench;
use crate::burst::{id_of, stored_events};
use bulkhead::node::config::NodeFile;
use bulkhead::node::cri::CriRuntime;
use bulkhead_actors::ports::runtime::ContainerRuntime;
use bulkhead_schemas::subjects;
use futures::StreamExt;

use crate::results::pct_ms;

/// Submit → running on a real CRI runtime (start one with scripts/cri-env.sh).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, env = "BULKHEAD_TEST_CRI_SOCKET")]
    pub socket: PathBuf,
    #[arg(long, env = "BULKHEAD_TEST_IMAGE")]
    pub image: String,
    /// CLASS=HANDLER (repeatable).
    #[arg(long = "handler", default_values_t = ["runc=runc".to_owned(), "gvisor=runsc".to_owned()])]
    pub handlers: Vec<String>,
    #[arg(long, default_value_t = 50)]
    pub workloads: usize,
    /// The workloads' network: `pod` (a namespace per sandbox on the CNI network, the
    /// host guarded) or `host`.
    #[arg(long, default_value = "pod", value_parser = ["pod", "host"])]
    pub network: String,
    /// CPU of each workload. Under gVisor the sandbox's own kernel runs inside this quota,
    /// so a tiny quota makes the start itself slow.
    #[arg(long, default_value_t = 250)]
    pub cpu_millicores: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Always).await?;
    let bus = bench.admin().clone();

    let mut file = NodeFile::default();
    for h in &args.handlers {
        file.add_handler(h)?;
    }
    file.cri.socket = args.socket.clone();
    file.cri.log_dir = dir.path().join("logs");
    file.cri.probe_image = args.image.clone();
    if args.network == "host" {
        file.cri.network = bulkhead::node::config::Network::Host;
    }
    println!("network: {:?}", file.cri.network);
    file.memory_mb = 1024 * 1024;
    file.cpu_millicores = 1_000_000;
    file.slots = 10_000;
    let (rt, exits) = CriRuntime::connect("bench", file.cri.clone()).await?;
    println!(
        "{}; classes offered: {:?}",
        rt.version,
        rt.runtime_classes()
    );
    bench.enroll_nodes(&["bench".into()]).await?;
    let node = bench
        .node(file.node_config("bench".into()), rt.clone(), exits)
        .await?;
    let control = bench.control().await?;

    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut sub = bus.client.subscribe(stored_events("started")).await?;
    let s = started.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(id) = id_of(&m.subject) {
                s.lock().expect("lock").insert(id, Instant::now());
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    for class in rt.runtime_classes() {
        let before: BTreeMap<&str, usize> = rt
            .client()
            .call_times()
            .into_iter()
            .map(|(k, v)| (k, v.len()))
            .collect();
        let mut lat = Vec::new();
        let mut ids = Vec::new();
        for i in 0..args.workloads {
            let id = format!("{class}-{i}");
            let spec = serde_json::json!({
                "id": id, "image": args.image, "runtime_class": class,
                "memory_mb": 32, "cpu_millicores": args.cpu_millicores,
                "command": ["sleep", "3600"],
            });
            let t = Instant::now();
            bus.client
                .publish(
                    subjects::cmd(subjects::DEFAULT_TENANT, "submit"),
                    serde_json::to_vec(&spec)?.into(),
                )
                .await?;
            let deadline = t + Duration::from_secs(60);
            let at = loop {
                if let Some(at) = started.lock().expect("lock").get(&id) {
                    break *at;
                }
                anyhow::ensure!(Instant::now() < deadline, "{id} did not start in 60 s");
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            lat.push(at.duration_since(t));
            ids.push(id);
        }
        lat.sort();
        println!(
            "\n## {class}: submit → running over {} workloads: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            lat.len(),
            pct_ms(&lat, 0.5),
            pct_ms(&lat, 0.99),
            pct_ms(&lat, 1.0)
        );
        println!("| CRI call | calls | p50 ms | p99 ms |\n|---|---|---|---|");
        for (call, times) in rt.client().call_times() {
            let mut t = times[before.get(call).copied().unwrap_or(0)..].to_vec();
            if t.is_empty() {
                continue;
            }
            t.sort();
            println!(
                "| {call} | {} | {:.1} | {:.1} |",
                t.len(),
                pct_ms(&t, 0.5),
                pct_ms(&t, 0.99)
            );
        }
        crate::failover::stop_all(&bus, &ids).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !rt.observe("bench").await?.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    control.stop_scheduler();
    drop(node);
    Ok(())
}
