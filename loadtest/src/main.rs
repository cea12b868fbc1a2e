//! Benchmarks, one module a scenario. `throughput`: N sim nodes and M workloads submitted
//! through NATS, reporting placements per second, submit→running latency at a steady rate,
//! scheduler restart-to-ready and memory per workload, beside the raw JetStream append rate
//! measured in the same run. `c1m`: a million workloads on 5,000 sim nodes (by hand).
//! `cri`: submit → running on a real CRI runtime per runtime class, with per-call times.
//! `scan-cache`: CPU of cold scans, rescans, and many images sharing base layers.
//! `signing`: signatures and verifications per second per core, bytes added per event.
//! `seal`: a snapshot's seal and open, CPU a workload, with no cluster around it.
//! `audit`: `audit verify` speed on a log of N workloads, the running hash, a sealed secret.
//! `ops-delivery`: what each way of delivering nodes their ops costs nats-server.
//! `failover`: die → replacement running (sim fleet and real containerd), node lost → all
//! its replicas running elsewhere. `placement`: one placement's CPU, index against scan.
//! `append-latency`: how long an append waits for its acknowledgement, by the way it is sent.
//! `tenants`: a noisy neighbour, one tenant's burst beside another's trickle.
//!
//! The parts the sim scenarios share: `bench` (a cluster set up as `bulkhead up` does),
//! `fleet` (sim nodes, a failover, a node's restart), `burst` (submissions watched until
//! all run), `restart` (the services' restart-to-ready), `results` (tables and history).

mod append_latency;
mod audit;
mod bench;
mod burst;
mod c1m;
mod cri;
mod failover;
mod fleet;
mod floor;
mod hops;
mod ops_delivery;
mod placement;
mod procfs;
mod restart;
mod results;
mod scan_cache;
mod scratch;
mod seal;
mod signing;
mod tenants;
mod throughput;

/// mimalloc, as the `bulkhead` binary uses (the services run in this process here).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// bulkhead's benchmarks: each scenario sets up its own cluster and prints its figures.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Scenario,
}

// Each scenario's flags are its module's `Args`.
#[derive(Subcommand)]
enum Scenario {
    Throughput(throughput::Args),
    C1m(c1m::Args),
    #[command(hide = true)]
    SchedulerRestart(restart::ChildArgs),
    /// Signatures and verifications per second on one core; bytes a signature adds.
    Signing,
    Placement(placement::Args),
    Audit(audit::Args),
    Seal(seal::Args),
    Cri(cri::Args),
    Failover(failover::Args),
    OpsDelivery(ops_delivery::Args),
    ScanCache(scan_cache::Args),
    AppendLatency(append_latency::Args),
    /// What nats-server alone spends on a burst's placements: their messages stored and delivered as bulkhead does, with no deciding, signing or checking
    ServerFloor(floor::Args),
    Tenants(tenants::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the services run (and the children it starts: the restarted scheduler).
    bulkhead::memory::small_pages_only();
    tracing_subscriber::fmt()
        .with_env_filter("warn,bulkhead::snapshot=info,bulkhead::scheduler=info")
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Scenario::Throughput(args) => throughput::run(args).await,
        Scenario::C1m(args) => c1m::run(args).await,
        Scenario::SchedulerRestart(args) => restart::scheduler_restart(args).await,
        Scenario::Signing => signing::run(),
        Scenario::Placement(args) => placement::run(args),
        Scenario::Audit(args) => audit::run(args).await,
        Scenario::Seal(args) => seal::run(args),
        Scenario::Cri(args) => cri::run(args).await,
        Scenario::Failover(args) => failover::run(args).await,
        Scenario::OpsDelivery(args) => ops_delivery::run(args).await,
        Scenario::ScanCache(args) => scan_cache::run(args).await,
        Scenario::AppendLatency(args) => append_latency::run(args).await,
        Scenario::ServerFloor(args) => floor::run(args).await,
        Scenario::Tenants(args) => tenants::run(args).await,
    }
}
