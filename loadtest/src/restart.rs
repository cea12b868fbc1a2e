//! Restart-to-ready: the scheduler in a process of its own (its memory its core's alone),
//! then the failover's and the query API's projections, each from its snapshot and the tail.

use std::time::{Duration, Instant};

use bulkhead::bus::Bus;
use bulkhead::scheduler;

use crate::bench::Bench;
use crate::procfs;

/// Internal: a scheduler's restart in a process of its own (as a restarted service
/// starts), printing its time to ready and its memory as JSON for the scenario that
/// spawned it.
#[derive(clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub creds: std::path::PathBuf,
}

/// The services' restarts: how long each takes to be ready, and the scheduler's memory.
pub struct Restart {
    pub ready_s: f64,
    pub kib_per_workload: f64,
    pub kib: u64,
    pub failover_s: f64,
    pub api_s: f64,
}

/// A scheduler's restart, in this process (spawned for it): connects as the scheduler,
/// rebuilds its core from its snapshot and the log, and prints the time that took and
/// the memory it grew by.
pub async fn scheduler_restart(ChildArgs { url, creds }: ChildArgs) -> anyhow::Result<()> {
    let before = procfs::rss_kib("self");
    let t = Instant::now();
    let bus = Bus::connect_as(&url, &bulkhead::auth::Credential::load(&creds)?).await?;
    let (core, follower) = scheduler::rebuild(&bus).await?;
    let ready_s = t.elapsed().as_secs_f64();
    let tail = follower.tail_at_start();
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

/// Restart-to-ready and memory, the services stopped first: a scheduler's core, then the
/// failover's and the query API's projections, each from its snapshot and the log's tail
/// (or the whole log when there is none).
pub async fn restart(bench: &Bench) -> anyhow::Result<Restart> {
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
            follower.tail_at_start()
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
