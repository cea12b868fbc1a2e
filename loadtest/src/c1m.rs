//! C1M: Nomad's million-container challenge on one machine. A million workloads on 5,000
//! sim nodes through NATS (`sync_interval: always` by default): time to all running,
//! placements/s, the scheduler's memory after a restart, and the log's size on disk. Run by
//! hand; it is not part of the test command.

use std::path::Path;
use std::time::{Duration, Instant};

use bulkhead::natsd::Sync;

use crate::bench::{Bench, SyncMode};
use crate::burst::{burst, observe};
use crate::fleet::{SIM_HEARTBEAT_MS, failover, sim_nodes};
use crate::restart::restart;

/// Nomad's C1M on one machine: a million workloads on 5,000 sim nodes, time to all
/// running, placements/s, scheduler memory, log size on disk. By hand (it takes many
/// minutes), not part of the test command.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub workloads: usize,
    /// `both` runs as `always`.
    #[arg(long, value_enum, default_value = "always")]
    pub sync: SyncMode,
    /// Give up waiting for all to run after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
}

pub async fn run(
    Args {
        nodes,
        workloads,
        sync,
        timeout_secs,
    }: Args,
) -> anyhow::Result<()> {
    let sync = if sync == SyncMode::Default {
        Sync::Default
    } else {
        Sync::Always
    };
    let timeout = Duration::from_secs(timeout_secs);
    println!("\n## c1m: {workloads} workloads on {nodes} sim nodes");
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), sync).await?;
    let names: Vec<String> = (0..nodes).map(|i| format!("sim-{i}")).collect();
    let t = Instant::now();
    bench.enroll_nodes(&names).await?;
    println!(
        "{nodes} nodes enrolled in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let tenant = bench.tenant().await?;
    let seen = observe(bench.admin()).await?;
    let handles = sim_nodes(&bench, names, SIM_HEARTBEAT_MS).await?;
    let control = bench.control().await?;
    let failover = failover(&bench).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let b = burst(
        bench.cluster.server.pid(),
        &tenant,
        &seen,
        workloads,
        timeout,
    )
    .await?;
    drop((control, failover, handles));
    let r = restart(&bench).await?;
    let log = dir_size(&dir.path().join("data"), "BULKHEAD_EVT");
    println!(
        "\n| figure | value | goal |\n|---|---|---|\n\
         | all {workloads} running | {:.0} s | < 300 s (Nomad's C1M), stretch < 120 s |\n\
         | placements/s | {:.0}/s | |\n\
         | scheduler restart-to-ready | {:.1} s | < 2 s |\n\
         | failover / query API restart-to-ready | {:.1} s / {:.1} s | < 2 s |\n\
         | scheduler memory (projection) | {:.0} MiB ({:.2} KiB per workload) | ≤ 1.5 KiB per workload |\n\
         | event log on disk | {:.0} MiB ({:.0} B per workload) | |",
        b.running_s,
        b.placements_per_s,
        r.ready_s,
        r.failover_s,
        r.api_s,
        r.kib as f64 / 1024.0,
        r.kib_per_workload,
        log as f64 / (1 << 20) as f64,
        log as f64 / workloads.max(1) as f64,
    );
    drop(bench);
    Ok(())
}

/// Bytes under the directory named `name` somewhere below `root` (the stream's store).
fn dir_size(root: &Path, name: &str) -> u64 {
    fn walk(p: &Path, inside: bool, name: &str) -> u64 {
        let Ok(entries) = std::fs::read_dir(p) else {
            return 0;
        };
        let mut total = 0;
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                let here = inside || e.file_name() == name;
                total += walk(&path, here, name);
            } else if inside {
                total += meta.len();
            }
        }
        total
    }
    walk(root, false, name)
}
