//! Benchmarks. `throughput`: N sim nodes and M workloads submitted through NATS, reporting
//! placements per second, submit→running latency at a steady rate, scheduler restart-to-ready
//! and memory per workload, beside the raw JetStream append rate measured in the same run.
//! `c1m`: a million workloads on 5,000 sim nodes (by hand).
//! `cri`: submit → running on a real CRI runtime per runtime class, with per-call times.
//! `scan-cache`: CPU of cold scans, rescans, and many images sharing base layers.
//! `signing`: signatures and verifications per second per core, bytes added per event.
//! `audit`: `audit verify` speed on a log of N workloads, the running hash, a sealed secret.
//! `ops-delivery`: what each way of delivering nodes their ops costs nats-server.
//! `failover`: die → replacement running (sim fleet and real containerd), node lost → all
//! its replicas running elsewhere.

mod audit;
mod bench;
mod c1m;
mod cri;
mod failover;
mod ops_delivery;
mod placement;
mod procfs;
mod results;
mod scan_cache;
mod signing;

/// mimalloc, as the `bulkhead` binary uses (the services run in this process here).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bench::Bench;
use bulkhead::bus::{Bus, MAX_BATCH};
use bulkhead::natsd::Sync;
use bulkhead::scheduler;
use bulkhead_actors::node::NodeConfig;
use bulkhead_actors::ports::sim::SimRuntime;
use bulkhead_schemas::spec::RuntimeClass;
use bulkhead_schemas::{Resources, subjects};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    Throughput {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 100_000)]
        workloads: usize,
        /// Submissions per second in the latency phase.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of the latency phase.
        #[arg(long, default_value_t = 5)]
        latency_secs: u64,
        #[arg(long, value_enum, default_value = "both")]
        sync: SyncMode,
        /// The sim nodes' heartbeat interval, ms (a real node's default is 1,000; the
        /// recorded history is at 5,000).
        #[arg(long, default_value_t = SIM_HEARTBEAT_MS)]
        heartbeat_ms: u64,
        /// Append a row of figures (date, commit, machine) to this file, e.g.
        /// loadtest/RESULTS.md.
        #[arg(long)]
        record: Option<std::path::PathBuf>,
    },
    /// Nomad's C1M on one machine: a million workloads on 5,000 sim nodes, time to all
    /// running, placements/s, scheduler memory, log size on disk. By hand (it takes many
    /// minutes), not part of the test command.
    C1m {
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        #[arg(long, default_value_t = 1_000_000)]
        workloads: usize,
        #[arg(long, value_enum, default_value = "always")]
        sync: SyncMode,
        /// Give up waiting for all to run after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Internal: a scheduler's restart in a process of its own (as a restarted service
    /// starts), printing its time to ready and its memory as JSON for the scenario that
    /// spawned it.
    #[command(hide = true)]
    SchedulerRestart {
        #[arg(long)]
        url: String,
        #[arg(long)]
        creds: std::path::PathBuf,
    },
    /// Signatures and verifications per second on one core; bytes a signature adds.
    Signing,
    /// Microseconds a placement takes on one core, through the placement index and by a
    /// scan of every node, for clusters of these sizes.
    Placement {
        #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 5000])]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 20_000)]
        replicas: usize,
    },
    /// `audit verify` on a log of N workloads; the running hash; a sealed secret's size.
    Audit {
        #[arg(long, default_value_t = 100_000)]
        workloads: usize,
    },
    /// Submit → running on a real CRI runtime (start one with scripts/cri-env.sh).
    Cri {
        #[arg(long, env = "BULKHEAD_TEST_CRI_SOCKET")]
        socket: std::path::PathBuf,
        #[arg(long, env = "BULKHEAD_TEST_IMAGE")]
        image: String,
        /// CLASS=HANDLER (repeatable).
        #[arg(long = "handler", default_values_t = ["runc=runc".to_owned(), "gvisor=runsc".to_owned()])]
        handlers: Vec<String>,
        #[arg(long, default_value_t = 50)]
        workloads: usize,
        /// The workloads' network: `pod` (a namespace per sandbox on the CNI network, the
        /// host guarded) or `host`.
        #[arg(long, default_value = "pod", value_parser = ["pod", "host"])]
        network: String,
        #[arg(long, default_value_t = 250)]
        cpu_millicores: u64,
    },
    /// Die → replacement running, and node lost → its replicas running elsewhere.
    Failover {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 2000)]
        workloads: usize,
        #[arg(long, default_value_t = 300)]
        kills: usize,
        /// Replicas on the node that is lost.
        #[arg(long, default_value_t = 1000)]
        lost_workloads: usize,
        /// Nodes that take the lost node's replicas over.
        #[arg(long, default_value_t = 100)]
        lost_nodes: usize,
        #[arg(long, default_value_t = 3000)]
        lost_timeout_ms: u64,
        #[arg(long, env = "BULKHEAD_TEST_CRI_SOCKET")]
        cri_socket: Option<std::path::PathBuf>,
        #[arg(long, env = "BULKHEAD_TEST_IMAGE")]
        cri_image: Option<String>,
        #[arg(long, default_value_t = 30)]
        cri_kills: usize,
        /// Only the real containerd part (events, then polling).
        #[arg(long)]
        cri_only: bool,
    },
    /// What delivering each node its own ops costs nats-server, for each way considered:
    /// a push or a pull consumer per node, a republishing stream, core NATS.
    OpsDelivery {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Bytes per message (a start op with its spec and signature is about 1 KiB).
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "push,pull,republish,core"
        )]
        ways: Vec<ops_delivery::Way>,
    },
    /// Scan CPU cold vs rescan, and N images sharing base layers (needs a loopback
    /// registry: scripts/cri-env.sh starts one).
    ScanCache {
        #[arg(long, env = "BULKHEAD_TEST_REGISTRY")]
        registry: String,
        #[arg(long, default_value_t = 100)]
        images: usize,
        #[arg(long, default_value_t = 40)]
        base_mib: u64,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum SyncMode {
    Default,
    Always,
    Both,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the services run (and the children it starts: the restarted scheduler).
    bulkhead::memory::small_pages_only();
    tracing_subscriber::fmt()
        .with_env_filter("warn,bulkhead::snapshot=info,bulkhead::scheduler=info")
        .with_writer(std::io::stderr)
        .init();
    let (nodes, workloads, rate, latency_secs, sync, heartbeat_ms, record) = match Cli::parse().cmd
    {
        Scenario::Throughput {
            nodes,
            workloads,
            rate,
            latency_secs,
            sync,
            heartbeat_ms,
            record,
        } => (
            nodes,
            workloads,
            rate,
            latency_secs,
            sync,
            heartbeat_ms,
            record,
        ),
        Scenario::Failover {
            nodes,
            workloads,
            kills,
            lost_workloads,
            lost_nodes,
            lost_timeout_ms,
            cri_socket,
            cri_image,
            cri_kills,
            cri_only,
        } => {
            return failover::run(failover::Args {
                nodes,
                workloads,
                kills,
                lost_workloads,
                lost_nodes,
                lost_timeout_ms,
                cri_socket,
                cri_image,
                cri_kills,
                cri_only,
            })
            .await;
        }
        Scenario::ScanCache {
            registry,
            images,
            base_mib,
        } => {
            return scan_cache::run(scan_cache::Args {
                registry,
                images,
                base_mib,
            })
            .await;
        }
        Scenario::C1m {
            nodes,
            workloads,
            sync,
            timeout_secs,
        } => {
            let sync = if sync == SyncMode::Default {
                Sync::Default
            } else {
                Sync::Always
            };
            return c1m::run(nodes, workloads, sync, Duration::from_secs(timeout_secs)).await;
        }
        Scenario::OpsDelivery {
            nodes,
            rounds,
            payload,
            ways,
        } => {
            return ops_delivery::run(ops_delivery::Args {
                nodes,
                rounds,
                payload,
                ways,
            })
            .await;
        }
        Scenario::SchedulerRestart { url, creds } => {
            return scheduler_restart(&url, &creds).await;
        }
        Scenario::Signing => return signing::run(),
        Scenario::Placement { nodes, replicas } => return placement::run(&nodes, replicas),
        Scenario::Audit { workloads } => return audit::run(workloads).await,
        Scenario::Cri {
            socket,
            image,
            handlers,
            workloads,
            network,
            cpu_millicores,
        } => {
            return cri::run(cri::Args {
                socket,
                image,
                handlers,
                workloads,
                host_network: network == "host",
                cpu_millicores,
            })
            .await;
        }
    };
    let modes: Vec<(Sync, &str, &'static str)> = match sync {
        SyncMode::Default => vec![(Sync::Default, "default fsync interval", "default")],
        SyncMode::Always => vec![(Sync::Always, "sync_interval: always", "always")],
        SyncMode::Both => vec![
            (Sync::Default, "default fsync interval", "default"),
            (Sync::Always, "sync_interval: always", "always"),
        ],
    };
    let date = chrono_date();
    for (mode, label, short) in modes {
        println!(
            "\n## throughput: {nodes} sim nodes (a heartbeat every {heartbeat_ms} ms), {workloads} workloads, {label}"
        );
        let mut f = throughput(mode, nodes, workloads, rate, latency_secs, heartbeat_ms).await?;
        f.sync = short;
        println!("\n{}", f.table());
        if let Some(path) = &record {
            let row = f.history_row(&date, &results::commit(path), &results::machine());
            results::record(path, &row)?;
            println!("recorded in {}", path.display());
        }
    }
    Ok(())
}

/// When each workload was seen `scheduled` and `started`.
type Observed = (HashMap<String, Instant>, HashMap<String, Instant>);

pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn spec(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"id": id, "image": "localhost/app:1", "memory_mb": 64, "cpu_millicores": 50}))
        .expect("json")
}

/// Records when each workload is seen `scheduled` and `started`, as they are stored.
pub(crate) async fn observe(bus: &Bus) -> anyhow::Result<Arc<std::sync::Mutex<Observed>>> {
    let seen: Arc<std::sync::Mutex<Observed>> = Default::default();
    let mut sub = bus.client.subscribe("bulkhead.evt.*.wl.*.*").await?;
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let now = Instant::now();
            let Some(id) = subjects::workload_of(&m.subject)
                .map(|k| k.rsplit('/').next().unwrap_or_default().to_owned())
            else {
                continue;
            };
            let mut g = s.lock().expect("lock");
            if m.subject.ends_with(".scheduled") {
                g.0.insert(id.to_owned(), now);
            } else if m.subject.ends_with(".started") {
                g.1.insert(id.to_owned(), now);
            }
        }
    });
    Ok(seen)
}

/// A sim node and the runtime its containers live in (they outlive a restart of the node).
pub(crate) struct SimNode {
    pub handle: bulkhead::node::NodeHandle,
    pub runtime: Arc<SimRuntime>,
}

/// How often a sim node beats unless told otherwise, ms.
pub(crate) const SIM_HEARTBEAT_MS: u64 = 5000;

/// A sim node's settings: 64 GiB, 64 cores, 1,000 slots, a heartbeat every `heartbeat_ms`.
fn sim_config(name: String, heartbeat_ms: u64) -> NodeConfig {
    NodeConfig {
        name,
        capacity: Resources {
            memory_mb: 64 * 1024,
            cpu_millicores: 64_000,
            slots: 1000,
        },
        labels: BTreeMap::new(),
        heartbeat_ms,
        stop_grace: Duration::from_secs(10),
        instance: String::new(),
    }
}

/// Restarts the first sim node over the same runtime (its containers keep running);
/// returns seconds from the start until it is ready (the scheduler's view reconciled), and
/// how many replicas ran on it.
async fn node_restart(
    bench: &Bench,
    nodes: &mut [SimNode],
    heartbeat_ms: u64,
) -> anyhow::Result<(f64, usize)> {
    let Some(node) = nodes.first_mut() else {
        return Ok((0.0, 0));
    };
    let name = node.handle.name.clone();
    let running = node.runtime.running();
    node.handle.actor.stop(None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The sim's exits went to the stopped node; none come during the measure.
    let (_exits_tx, exits) = tokio::sync::mpsc::unbounded_channel();
    let t = Instant::now();
    node.handle = bench
        .node(
            sim_config(name.clone(), heartbeat_ms),
            node.runtime.clone(),
            exits,
        )
        .await?;
    anyhow::ensure!(
        tokio::time::timeout(Duration::from_secs(30), node.handle.synced())
            .await
            .unwrap_or(false),
        "node {name} was not ready 30 s after its restart"
    );
    let s = t.elapsed().as_secs_f64();
    println!("node restart-to-ready with {running} replicas running on it: {s:.2} s");
    Ok((s, running))
}

/// Starts a sim node (64 GiB, 64 cores, 1,000 slots, a heartbeat every `heartbeat_ms`) per
/// name, each as its own identity.
pub(crate) async fn sim_nodes(
    bench: &Bench,
    names: Vec<String>,
    heartbeat_ms: u64,
) -> anyhow::Result<Vec<SimNode>> {
    let t = Instant::now();
    let nodes = names.len();
    let mut handles = Vec::with_capacity(nodes);
    for name in names {
        let (rt, exits) = SimRuntime::new(&name, vec![RuntimeClass::Runc], Duration::ZERO);
        let runtime = Arc::new(rt);
        let handle = bench
            .node(sim_config(name, heartbeat_ms), runtime.clone(), exits)
            .await?;
        handles.push(SimNode { handle, runtime });
    }
    println!(
        "{nodes} sim nodes up in {:.1} s (one credential and connection each)",
        t.elapsed().as_secs_f64()
    );
    Ok(handles)
}

/// What a burst of submissions came to.
pub(crate) struct Burst {
    pub placements_per_s: f64,
    /// Seconds from the first submission to the last `started`.
    pub running_s: f64,
    /// CPU per workload from the first submission until all run, in µs: this process
    /// (every service and sim node) and the nats-server.
    pub cpu_us: (f64, f64),
}

/// Submits `workloads` specs in atomic batches and waits (up to `timeout`) until all run.
pub(crate) async fn burst(
    server: u32,
    tenant: &Bus,
    seen: &std::sync::Mutex<Observed>,
    workloads: usize,
    timeout: Duration,
) -> anyhow::Result<Burst> {
    let server = server.to_string();
    let cpu0 = (procfs::cpu_secs("self"), procfs::cpu_secs(&server));
    let t0 = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(30);
    for chunk in (0..workloads).collect::<Vec<_>>().chunks(MAX_BATCH) {
        let msgs: Vec<_> = chunk
            .iter()
            .map(|i| {
                let id = format!("burst-{i}");
                (
                    subjects::cmd(subjects::DEFAULT_TENANT, "submit"),
                    HeaderMap::new(),
                    Bytes::from(spec(&id)),
                )
            })
            .collect();
        tenant
            .publish_atomic(&msgs)
            .await
            .map_err(|e| anyhow::anyhow!("submit: {e}"))?;
    }
    let ingest = t0.elapsed();
    let deadline = Instant::now() + timeout;
    loop {
        let started = seen.lock().expect("lock").1.len();
        if started >= workloads || Instant::now() > deadline {
            break;
        }
        if Instant::now() > next_report {
            // From now: a submission that took longer than the period prints one line.
            next_report = Instant::now() + Duration::from_secs(30);
            println!(
                "  … {started} running after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_us = (
        (procfs::cpu_secs("self") - cpu0.0) * 1e6 / workloads.max(1) as f64,
        (procfs::cpu_secs(&server) - cpu0.1) * 1e6 / workloads.max(1) as f64,
    );
    let g = seen.lock().expect("lock");
    let first_sched = g.0.values().min().copied().unwrap_or(t0);
    let last_sched = g.0.values().max().copied().unwrap_or(t0);
    let last_started = g.1.values().max().copied().unwrap_or(t0);
    let (n_sched, n_started) = (g.0.len(), g.1.len());
    let placements_per_s = n_sched as f64
        / last_sched
            .duration_since(first_sched)
            .as_secs_f64()
            .max(1e-3);
    let running_s = last_started.duration_since(t0).as_secs_f64();
    println!(
        "burst: {workloads} submitted in {:.2} s ({:.0}/s ingest); {n_sched} placed at {placements_per_s:.0} placements/s; {n_started} running after {running_s:.2} s",
        ingest.as_secs_f64(),
        workloads as f64 / ingest.as_secs_f64(),
    );
    println!(
        "CPU per workload in the burst: {:.0} µs in bulkhead (every service and sim node), {:.0} µs in nats-server",
        cpu_us.0, cpu_us.1
    );
    Ok(Burst {
        placements_per_s,
        running_s,
        cpu_us,
    })
}

/// The services' restarts: how long each takes to be ready, and the scheduler's memory.
pub(crate) struct Restart {
    pub ready_s: f64,
    pub kib_per_workload: f64,
    pub kib: u64,
    pub failover_s: f64,
    pub api_s: f64,
}

/// A failover, active at once, as the cluster runs it (to write its snapshots).
pub(crate) async fn failover(bench: &Bench) -> anyhow::Result<bulkhead::failover::FailoverHandle> {
    bulkhead::failover::start(
        &bench.failover().await?,
        bulkhead::failover::FailoverConfig::default(),
    )
    .await
}

/// A scheduler's restart, in this process (spawned for it): connects as the scheduler,
/// rebuilds its core from its snapshot and the log, and prints the time that took and
/// the memory it grew by.
async fn scheduler_restart(url: &str, creds: &std::path::Path) -> anyhow::Result<()> {
    let before = procfs::rss_kib("self");
    let t = Instant::now();
    let bus = Bus::connect_as(url, &bulkhead::auth::Credential::load(creds)?).await?;
    let (core, follower) = scheduler::rebuild(&bus).await?;
    let ready_s = t.elapsed().as_secs_f64();
    let tail = tail_of(&follower);
    // What the core holds once the replay's buffers are given back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kib = procfs::rss_kib("self").saturating_sub(before);
    let workloads = core.projection.len();
    println!(
        "{}",
        serde_json::json!({"ready_s": ready_s, "kib": kib, "workloads": workloads, "tail": tail})
    );
    Ok(())
}

/// How many messages a restart replayed after its snapshot (the whole log without one):
/// what a restart's time follows, run to run.
fn tail_of(follower: &bulkhead::follow::Follower) -> u64 {
    follower
        .end_at_start
        .saturating_sub(follower.from_seq.saturating_sub(1))
}

/// Restart-to-ready and memory, the services stopped first: a scheduler's core, then the
/// failover's and the query API's projections, each from its snapshot and the log's tail
/// (or the whole log when there is none).
pub(crate) async fn restart(bench: &Bench) -> anyhow::Result<Restart> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    // In a process of its own: its memory is the core's alone, not the earlier phases'
    // freed memory reused.
    let creds = bench
        .cluster
        .data
        .creds_path(bulkhead_schemas::identity::Role::Scheduler, "scheduler");
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg("scheduler-restart")
        .arg("--url")
        .arg(&bench.cluster.server.url)
        .arg("--creds")
        .arg(&creds)
        // What it frees is given back at once: mimalloc gives freed memory back a second
        // later, on a later call into it, which an idle process never makes, so the figure
        // counted the snapshot's freed buffers (2.50 KiB per workload against 1.46 in two
        // runs of one build, 98,000 and 88,000 workloads from the snapshot).
        .env("MIMALLOC_PURGE_DELAY", "0")
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "the scheduler's restart failed");
    let child: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let number = |k: &str| child[k].as_f64().unwrap_or(0.0);
    let (ready_s, kib, count) = (number("ready_s"), number("kib") as u64, number("workloads"));
    let tail = number("tail");
    let kib_per_workload = kib as f64 / count.max(1.0);
    println!(
        "scheduler restart-to-ready with {count} workloads in the log: {ready_s:.2} s (a tail of {tail} messages after its snapshot); resident memory +{kib} KiB ({kib_per_workload:.2} KiB per workload)",
    );
    let projection = async |bus: Bus, service: &str| -> anyhow::Result<f64> {
        let t = Instant::now();
        let (p, follower) = bulkhead::snapshot::projection(&bus, service).await?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "{service} restart-to-ready with {} workloads: {s:.2} s (a tail of {} messages)",
            p.len(),
            tail_of(&follower)
        );
        Ok(s)
    };
    let failover = bench.failover().await?;
    let mut failover_s = projection(failover.clone(), bulkhead::failover::SERVICE).await?;
    // The failover also reads each node's heartbeat interval before it is ready.
    let t = Instant::now();
    let known = bulkhead::bus::node_watch::intervals(&failover).await?;
    let intervals_s = t.elapsed().as_secs_f64();
    println!(
        "failover's heartbeat intervals at start: {} nodes in {intervals_s:.2} s (counted in its restart-to-ready)",
        known.len()
    );
    failover_s += intervals_s;
    let api_s = projection(
        bench
            .connect(bulkhead_schemas::identity::Role::Api, "api")
            .await?,
        bulkhead::api::SERVICE,
    )
    .await?;
    Ok(Restart {
        ready_s,
        kib_per_workload,
        kib,
        failover_s,
        api_s,
    })
}

/// Raw append rates on a scratch stream: single async publishes, and atomic batches of 500.
async fn raw_append_rate(bus: &Bus) -> anyhow::Result<(f64, f64)> {
    bus.js
        .create_or_update_stream(stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            storage: stream::StorageType::File,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await?;
    let payload = Bytes::from(vec![b'x'; 300]);
    let n = 20_000;
    let t = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        acks.push(
            bus.js
                .publish(format!("raw.s.{i}"), payload.clone())
                .await?
                .into_future(),
        );
        if acks.len() >= 256 {
            acks.next().await.transpose()?;
        }
    }
    while acks.next().await.transpose()?.is_some() {}
    let single = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for b in 0..(n / 500) {
        let msgs: Vec<_> = (0..500)
            .map(|i| (format!("raw.b.{b}.{i}"), HeaderMap::new(), payload.clone()))
            .collect();
        bus.publish_atomic(&msgs)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let batched = n as f64 / t.elapsed().as_secs_f64();
    Ok((single, batched))
}

/// The steady phase second by second: the p50 and max from submission until `what` (seen
/// at the times in `seen`) of the workloads submitted in each second. A latency that grows
/// from second to second is a rate the machine cannot keep up with; a flat one a fixed delay.
fn by_second(times: &[(String, Instant)], seen: &HashMap<String, Instant>, what: &str) -> String {
    let Some(first) = times.first().map(|(_, t)| *t) else {
        return String::new();
    };
    let mut seconds: Vec<Vec<Duration>> = Vec::new();
    for (id, t) in times {
        let s = t.duration_since(first).as_secs() as usize;
        if seconds.len() <= s {
            seconds.resize_with(s + 1, Vec::new);
        }
        if let Some(r) = seen.get(id) {
            seconds[s].push(r.duration_since(*t));
        }
    }
    let mut out = format!("  submit→{what} by second submitted (p50 / max ms):");
    for (s, lat) in seconds.iter_mut().enumerate() {
        if lat.is_empty() {
            out.push_str(&format!(" [{s}] none seen"));
            continue;
        }
        lat.sort();
        out.push_str(&format!(
            " [{s}] {:.0} / {:.0}",
            pct(lat, 0.5).as_secs_f64() * 1e3,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        ));
    }
    out
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn chrono_date() -> String {
    bulkhead_schemas::now_rfc3339()
        .split('T')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn throughput(
    mode: Sync,
    nodes: usize,
    workloads: usize,
    rate: u64,
    latency_secs: u64,
    heartbeat_ms: u64,
) -> anyhow::Result<results::Figures> {
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), mode).await?;
    let bus = bench.admin().clone();
    let (single, batched) = raw_append_rate(&bus).await?;
    println!(
        "raw JetStream appends (300 B): {single:.0}/s one by one (256 in flight), {batched:.0}/s in atomic batches of 500"
    );
    let names: Vec<String> = (0..nodes).map(|i| format!("sim-{i}")).collect();
    bench.enroll_nodes(&names).await?;
    let tenant = bench.tenant().await?;

    let seen = observe(&bus).await?;

    let mut handles = sim_nodes(&bench, names, heartbeat_ms).await?;
    let control = bench.control().await?;
    let failover = failover(&bench).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Phase 1: a burst of `workloads` submissions, published in atomic batches.
    let server = bench.cluster.server.pid();
    let b = burst(server, &tenant, &seen, workloads, Duration::from_secs(600)).await?;
    let place_rate = b.placements_per_s;

    // What the system spends idle (heartbeats, the burst's snapshots), for the steady
    // phase's CPU to be read beside.
    let idle_secs = 3.0;
    let server = server.to_string();
    let idle0 = (procfs::cpu_secs("self"), procfs::cpu_secs(&server));
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let idle = (
        (procfs::cpu_secs("self") - idle0.0) / idle_secs,
        (procfs::cpu_secs(&server) - idle0.1) / idle_secs,
    );

    // Phase 2: a steady rate, one submission at a time, latency submit → running.
    let cpu0 = (procfs::cpu_secs("self"), procfs::cpu_secs(&server));
    let t0 = Instant::now();
    let n = (rate * latency_secs) as usize;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut times = Vec::with_capacity(n);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + every * i as u32).await;
        let id = format!("steady-{i}");
        times.push((id.clone(), Instant::now()));
        tenant
            .client
            .publish(
                subjects::cmd(subjects::DEFAULT_TENANT, "submit"),
                spec(&id).into(),
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let span = t0.elapsed().as_secs_f64();
    let cpu = (
        procfs::cpu_secs("self") - cpu0.0,
        procfs::cpu_secs(&server) - cpu0.1,
    );
    println!(
        "CPU in the steady phase ({span:.1} s): {:.2} + {:.2} cores (bulkhead + nats-server; idle before it: {:.2} + {:.2}), {:.0} + {:.0} µs a workload above idle",
        cpu.0 / span,
        cpu.1 / span,
        idle.0,
        idle.1,
        (cpu.0 - idle.0 * span) * 1e6 / n.max(1) as f64,
        (cpu.1 - idle.1 * span) * 1e6 / n.max(1) as f64,
    );
    let mut lat: Vec<Duration> = {
        let g = seen.lock().expect("lock");
        println!("{}", by_second(&times, &g.0, "scheduled"));
        println!("{}", by_second(&times, &g.1, "running"));
        times
            .iter()
            .filter_map(|(id, t)| g.1.get(id).map(|s| s.duration_since(*t)))
            .collect()
    };
    lat.sort();
    println!(
        "steady {rate}/s for {latency_secs} s: {} of {n} running; submit→running p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let (node_restart_s, node_replicas) = node_restart(&bench, &mut handles, heartbeat_ms).await?;
    drop((control, failover, handles));

    let r = restart(&bench).await?;
    drop(bench);
    Ok(results::Figures {
        nodes,
        workloads,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sync: "",
        heartbeat_ms,
        raw_single: single,
        raw_batched: batched,
        placements_per_s: place_rate,
        burst_running_s: b.running_s,
        cpu_us: b.cpu_us,
        steady_rate: rate,
        p50_ms: pct(&lat, 0.5).as_secs_f64() * 1e3,
        p99_ms: pct(&lat, 0.99).as_secs_f64() * 1e3,
        restart_s: r.ready_s,
        failover_restart_s: r.failover_s,
        api_restart_s: r.api_s,
        node_restart_s,
        node_replicas,
        kib_per_workload: r.kib_per_workload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_phase_is_shown_by_the_second_each_was_submitted_in() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let times: Vec<(String, Instant)> = [("a", 0), ("b", 200), ("c", 1_500), ("d", 2_100)]
            .into_iter()
            .map(|(id, at)| (id.to_owned(), t0 + ms(at)))
            .collect();
        // a took 100 ms, b 300 ms, c 40 ms; d was never seen.
        let seen: HashMap<String, Instant> = [("a", 100), ("b", 500), ("c", 1_540)]
            .into_iter()
            .map(|(id, at)| (id.to_owned(), t0 + ms(at)))
            .collect();
        let line = by_second(&times, &seen, "running");
        assert_eq!(
            line,
            "  submit→running by second submitted (p50 / max ms): [0] 300 / 300 [1] 40 / 40 [2] none seen"
        );
        assert_eq!(by_second(&[], &seen, "running"), "");
    }
}
