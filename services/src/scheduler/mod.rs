//! The scheduler service: campaigns for the scheduler lease, rebuilds its projection from
//! the log, then feeds commands, log events, heartbeats and node events to the scheduler
//! actor (`bulkhead_actors::scheduler`).
//!
//! - [`commands`]: the commands of every lane served in turn, and each command's ack;
//! - [`lanes`]: the lanes of `BULKHEAD_CMD`, a durable consumer a tenant, and their purge;
//! - [`watch`]: heartbeats, node events and scan verdicts, as they come.

mod commands;
mod lanes;
mod watch;

use std::time::{Duration, Instant};

use bulkhead_actors::clock::Clock;
use bulkhead_actors::liveness::Ear;
use bulkhead_actors::ports::ops::OpsSink;
use bulkhead_actors::scheduler::actor::{SchedulerActor, SchedulerArgs, SchedulerMsg};
use bulkhead_actors::scheduler::scan_policy::ScanPolicy;
use bulkhead_actors::scheduler::{SERVICE, SchedulerCore};
use bulkhead_schemas::subjects;
use ractor::Actor;
use tracing::{debug, info, warn};

use crate::aside::Ledger;
use crate::bus::{Bus, NatsLog, NatsOps, Topology};
use crate::follow::Follower;
use crate::lease::Lease;
pub use crate::snapshot::SnapshotEvery;
use crate::tasks::StopOnDrop;

/// How far (in messages) the scheduler's reading of the log may fall behind its end before
/// it takes no more commands until it catches up. Placing outruns reading on a busy machine:
/// in C1M with the lanes, the scheduler, failover and query API read the log 1.1 million
/// messages behind when the last workload ran, so a restart then replayed all of them
/// (20–24 s) and what the scheduler knew of its nodes was a minute and a half old.
const MAX_BEHIND: u64 = 20_000;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Name of this instance in the lease.
    pub instance: String,
    pub topology: Topology,
    /// How long a delivered command may stay unacknowledged before redelivery.
    pub ack_wait: Duration,
    pub tick: Duration,
    pub scan_policy: ScanPolicy,
    pub snapshots: SnapshotEvery,
    /// The budget of heartbeats a second the nodes are paced to (0: none).
    pub heartbeats_per_sec: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            instance: format!("scheduler-{}", std::process::id()),
            topology: Topology::default(),
            ack_wait: Duration::from_secs(5),
            tick: Duration::from_millis(200),
            scan_policy: ScanPolicy::default(),
            snapshots: SnapshotEvery::default(),
            heartbeats_per_sec: bulkhead_actors::scheduler::pace::BEATS_PER_SEC,
        }
    }
}

/// Runs forever: standby until the lease is won, active until it is lost, and again.
pub async fn run(bus: Bus, cfg: SchedulerConfig) -> anyhow::Result<()> {
    let ledger = Ledger::default();
    let _reporting = crate::aside::reporting(&bus, ledger.clone());
    crate::lease::serve(
        &bus,
        subjects::SCHEDULER_LEASE_KEY,
        &cfg.instance,
        cfg.topology.lease_ttl,
        |lease| {
            let (bus, cfg, ledger) = (bus.clone(), cfg.clone(), ledger.clone());
            async move { run_active(&bus, &cfg, lease, ledger).await }
        },
    )
    .await
}

/// Rebuilds the scheduler's state: from its snapshot and the log's tail when a snapshot
/// passes its checks, else from the whole log.
pub async fn rebuild(bus: &Bus) -> anyhow::Result<(SchedulerCore, Follower)> {
    let started = Instant::now();
    let mut core = SchedulerCore::default();
    // The same anchor as the follower's verifier: the policy's changes are counted alike.
    core.directory = bulkhead_actors::directory::Directory::new(&bus.identity()?.creds.admins);
    core.sealer = Some(bulkhead_actors::secrets::Sealer::of(
        &bus.identity()?.signer,
    ));
    let mut follower = match crate::snapshot::load(bus, SERVICE).await {
        Some(snap) => {
            // Identities and node events first (a verdict then walks no workload), then
            // the workloads, then the tail.
            core.logged(snap.batch);
            core.restore(snap.workloads, snap.seq);
            Follower::resume(bus, snap.seq + 1, snap.resume).await?
        }
        None => Follower::start(bus, 1).await?,
    };
    // Verdicts found on the way are carried out once the actor runs (`Settle`).
    let n = follower
        .catch_up(|batch| {
            core.logged(batch);
        })
        .await;
    info!(
        events = n,
        workloads = core.projection.len(),
        pending = core.pending_count(),
        set_aside = core.projection.set_aside.total(),
        ms = started.elapsed().as_millis() as u64,
        "projection rebuilt from the log"
    );
    Ok((core, follower))
}

/// While the lease is held: the actor, fed by the log, the watches and the commands.
async fn run_active(
    bus: &Bus,
    cfg: &SchedulerConfig,
    mut lease: Lease,
    ledger: Ledger,
) -> anyhow::Result<()> {
    let (mut core, follower) = rebuild(bus).await?;
    core.set_scan_flags(cfg.scan_policy.clone());
    core.set_heartbeat_budget(cfg.heartbeats_per_sec);
    let ops = NatsOps::new(bus)?.fenced(lease.fence.clone());
    resend(&core, &ops).await;
    let (actor, handle) = Actor::spawn(
        None,
        SchedulerActor::<NatsLog, NatsOps>::default(),
        SchedulerArgs {
            core,
            // What it stores it applies at once: its reader passes the log's copies by. It
            // writes and sends ops only while its lease surely holds.
            log: bus
                .log()?
                .noting(follower.own.clone())
                .fenced(lease.fence.clone()),
            ops,
            tick: cfg.tick,
            clock: Clock::Wall,
        },
    )
    .await?;
    let _guard = StopOnDrop(actor.clone());
    let mut behind = follower.behind.clone();
    let _log = crate::snapshot::forward(
        bus,
        SERVICE,
        cfg.snapshots,
        follower,
        &actor,
        SchedulerMsg::Logged,
        SchedulerMsg::Snapshot,
    );
    let _watches = watch::start(bus, &actor, ledger.clone());
    let _connection = {
        let a = actor.clone();
        crate::tasks::AbortOnDrop(tokio::spawn(crate::bus::watch_connection(
            bus.client.clone(),
            move |up, at_ms| {
                let ear = Ear::Connection;
                a.send_message(SchedulerMsg::Hearing { ear, up, at_ms })
                    .is_ok()
            },
        )))
    };
    let mut commands = commands::consume(bus, cfg, &ledger).await?;
    info!(instance = %cfg.instance, "scheduler active");
    loop {
        tokio::select! {
            changed = lease.held.changed() => {
                if changed.is_err() || !*lease.held.borrow() {
                    return Ok(());
                }
            }
            chunk = async {
                caught_up(&mut behind).await;
                commands.next_chunk().await
            } => {
                let Some(chunk) = chunk else { anyhow::bail!("a command lane ended") };
                commands::handle_chunk(&actor, chunk, &ledger).await?;
            }
            _ = handle_closed(&handle) => anyhow::bail!("scheduler actor stopped"),
        }
    }
}

/// Returns once the scheduler's reading of the log is at most [`MAX_BEHIND`] messages
/// behind its end (at once if the reading ended).
async fn caught_up(behind: &mut tokio::sync::watch::Receiver<u64>) {
    let now = *behind.borrow();
    if now > MAX_BEHIND {
        debug!(
            behind = now,
            "commands wait for the reading of the log to catch up"
        );
    }
    let _ = behind.wait_for(|&n| n <= MAX_BEHIND).await;
}

/// After a takeover: what the previous instance may have decided but not sent (scan jobs
/// of workloads waiting for a verdict, start ops of replicas not started) goes out again.
async fn resend(core: &SchedulerCore, ops: &NatsOps) {
    let requeue = core.unqueued_scans();
    if !requeue.is_empty() {
        info!(
            jobs = requeue.len(),
            "queueing scans of workloads still waiting for a verdict"
        );
        for (job, err) in ops.queue_scans(requeue).await {
            warn!(%job, error = %err, "could not queue a scan");
        }
    }
    let unstarted = core.unstarted_ops();
    if !unstarted.is_empty() {
        info!(
            nodes = unstarted.len(),
            "resending start ops of replicas not yet started"
        );
        for (node, err) in ops.send(unstarted).await {
            warn!(%node, error = %err, "could not resend ops");
        }
    }
}

async fn handle_closed(handle: &tokio::task::JoinHandle<()>) {
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
