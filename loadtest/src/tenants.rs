//! The `tenants` scenario: a noisy neighbour. One tenant submits a burst of M workloads at
//! once while another submits a few a second throughout; what the quiet tenant waits,
//! submit → running, beside the burst's own placements per second. The scheduler reads a
//! lane a tenant and serves them in turn, so the quiet tenant waits about two rounds; through
//! one consumer, first in, first out, it waited for the backlog stored ahead of it
//! (`loadtest/RESULTS.md`). The burst counts the quiet tenant's workloads with its own (its
//! `running` may end a few hundred short of the burst's).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bulkhead::natsd::Sync;
use bulkhead_schemas::subjects;
use futures::StreamExt;

use crate::bench::Bench;
use crate::burst::{burst, observe, spec};
use crate::fleet::{SIM_HEARTBEAT_MS, failover, sim_nodes};
use crate::results::pct_ms;

/// A burst of one tenant's M workloads beside another's steady trickle.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// The noisy tenant's burst.
    #[arg(long, default_value_t = 50_000)]
    pub workloads: usize,
    /// The quiet tenant's submissions a second, while the burst lasts.
    #[arg(long, default_value_t = 10)]
    pub quiet_rate: u64,
}

/// The quiet tenant.
const QUIET: &str = "quiet";

/// A policy that trusts `tenant` as the first trusts `default` (internal: runc allowed, as
/// the sim nodes offer), proposed and approved by the admin.
async fn internal(admin: &bulkhead::bus::Bus, tenant: &str) -> anyhow::Result<()> {
    use bulkhead::auth::policy;
    use bulkhead_schemas::policy::TenantPolicy;
    use bulkhead_schemas::spec::TrustLevel;
    let mut next = policy::directory(admin).await?.policy.current().clone();
    next.replaces = Some(next.hash());
    next.version += 1;
    next.tenants
        .insert(tenant.to_owned(), TenantPolicy::at(TrustLevel::Internal));
    policy::propose(admin, &admin.identity()?.signer, next).await?;
    Ok(())
}

pub async fn run(
    Args {
        nodes,
        workloads,
        quiet_rate,
    }: Args,
) -> anyhow::Result<()> {
    println!(
        "\n## tenants: {workloads} workloads of one tenant at once, {quiet_rate}/s of another's, {nodes} sim nodes, sync_interval: always"
    );
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Always).await?;
    let names: Vec<String> = (0..nodes).map(|i| format!("sim-{i}")).collect();
    bench.enroll_nodes(&names).await?;
    bench.enroll_tenant(QUIET).await?;
    internal(bench.admin(), QUIET).await?;
    let noisy = bench.tenant().await?;
    let quiet = bench
        .connect(bulkhead_schemas::identity::Role::Tenant, QUIET)
        .await?;
    let seen = observe(bench.admin()).await?;
    let mut refused = bench
        .admin()
        .client
        .subscribe(format!("bulkhead.out.{QUIET}.wl.*.rejected"))
        .await?;
    let _nodes = sim_nodes(&bench, names, SIM_HEARTBEAT_MS).await?;
    let _control = bench.control().await?;
    let _failover = failover(&bench).await?;
    // Every node heard before the burst: a command that came sooner would wait for a
    // node's beat, not for the other tenant.
    tokio::time::sleep(Duration::from_millis(SIM_HEARTBEAT_MS + 2000)).await;

    // The quiet tenant's trickle, from the burst's start until it is told to stop.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let trickle = tokio::spawn(async move {
        let every = Duration::from_secs_f64(1.0 / quiet_rate.max(1) as f64);
        let mut tick = tokio::time::interval(every);
        let mut times = Vec::new();
        let subject = subjects::cmd(QUIET, "submit");
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            let id = format!("quiet-{}", times.len());
            times.push((id.clone(), Instant::now()));
            quiet
                .js
                .publish(subject.clone(), spec(&id).into())
                .await?
                .await?;
        }
        anyhow::Ok(times)
    });

    let server = bench.cluster.server.pid();
    let b = burst(server, &noisy, &seen, workloads, Duration::from_secs(900)).await?;
    let _ = stop.send(());
    let times = trickle.await??;
    tokio::time::sleep(Duration::from_secs(2)).await;

    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(10), refused.next()).await {
        let why = String::from_utf8_lossy(&m.payload);
        anyhow::bail!("the quiet tenant's submissions were rejected: {why}");
    }
    let (scheduled, started) = seen.lock().expect("lock").clone();
    let waits = |seen: &HashMap<String, Instant>| {
        let mut w: Vec<Duration> = times
            .iter()
            .filter_map(|(id, t)| seen.get(id).map(|s| s.saturating_duration_since(*t)))
            .collect();
        w.sort();
        w
    };
    let (to_scheduled, to_running) = (waits(&scheduled), waits(&started));
    println!(
        "the quiet tenant during the burst: {} submitted, {} running; submit→running p50 / p99 / max {:.1} / {:.1} / {:.1} ms (submit→scheduled {:.1} / {:.1} / {:.1})",
        times.len(),
        to_running.len(),
        pct_ms(&to_running, 0.5),
        pct_ms(&to_running, 0.99),
        pct_ms(&to_running, 1.0),
        pct_ms(&to_scheduled, 0.5),
        pct_ms(&to_scheduled, 0.99),
        pct_ms(&to_scheduled, 1.0)
    );
    println!(
        "the noisy tenant's burst beside it: {:.0} placements/s, all running after {:.1} s",
        b.placements_per_s, b.running_s
    );
    Ok(())
}
