//! The failover service: campaigns for the failover lease, rebuilds its projection from
//! the log, then feeds the failover actor the log's events and the nodes' heartbeats.

use std::time::Duration;

use bulkhead_actors::clock::Clock;
use bulkhead_actors::failover::actor::{FailoverActor, FailoverArgs, FailoverMsg, FailoverStats};
use bulkhead_actors::liveness::Ear;
use bulkhead_schemas::subjects;
use ractor::{Actor, ActorRef};
use tracing::{error, info, warn};

use crate::aside::Ledger;
use crate::bus::node_watch::Watched;
use crate::bus::{Bus, NatsLog, Topology};
/// The name the failover's snapshot is stored under.
pub const SERVICE: &str = "failover";
use crate::lease::{Fence, Lease};
use crate::tasks::{AbortOnDrop, StopOnDrop};

#[derive(Clone, Debug)]
pub struct FailoverConfig {
    pub instance: String,
    pub topology: Topology,
    /// A node silent this long is lost (default 3 s).
    pub lost_timeout: Duration,
    /// How often silent nodes are checked.
    pub tick: Duration,
    pub snapshots: crate::snapshot::SnapshotEvery,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            instance: format!("failover-{}", std::process::id()),
            topology: Topology::default(),
            lost_timeout: Duration::from_secs(3),
            tick: Duration::from_millis(100),
            snapshots: crate::snapshot::SnapshotEvery::default(),
        }
    }
}

/// Runs forever: standby until the lease is won, active until it is lost, and again.
pub async fn run(bus: Bus, cfg: FailoverConfig) -> anyhow::Result<()> {
    crate::lease::serve(
        &bus,
        subjects::FAILOVER_LEASE_KEY,
        &cfg.instance,
        cfg.topology.lease_ttl,
        |lease| {
            let (bus, cfg) = (bus.clone(), cfg.clone());
            async move { run_active(&bus, &cfg, lease).await }
        },
    )
    .await
}

/// A running failover (for tests and load tests): the actor, to ask for its stats.
pub struct FailoverHandle {
    pub actor: ActorRef<FailoverMsg>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FailoverHandle {
    fn drop(&mut self) {
        self.actor.stop(None);
        self.task.abort();
    }
}

impl FailoverHandle {
    pub async fn stats(&self) -> anyhow::Result<FailoverStats> {
        Ok(ractor::call!(self.actor, FailoverMsg::Stats)?)
    }
}

/// Starts an active failover at once (no lease) and returns when it has rebuilt its state.
pub async fn start(bus: &Bus, cfg: FailoverConfig) -> anyhow::Result<FailoverHandle> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let bus = bus.clone();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        if let Err(e) = run_active_inner(&bus, &cfg, None, &mut tx).await {
            error!(error = %e, "failover stopped");
        }
    });
    let actor = rx
        .await
        .map_err(|_| anyhow::anyhow!("failover did not start"))?;
    Ok(FailoverHandle { actor, task })
}

async fn run_active(bus: &Bus, cfg: &FailoverConfig, mut lease: Lease) -> anyhow::Result<()> {
    let mut none = None;
    let fence = Some(lease.fence.clone());
    tokio::select! {
        r = run_active_inner(bus, cfg, fence, &mut none) => r,
        _ = async {
            while lease.held.changed().await.is_ok() && *lease.held.borrow() {}
        } => Ok(()),
    }
}

/// How long a failover that starts waits for the nodes' heartbeat intervals.
const INTERVALS_PATIENCE: Duration = Duration::from_secs(5);

type Ready = Option<tokio::sync::oneshot::Sender<ActorRef<FailoverMsg>>>;

/// The active failover, writing only while `fence` holds (when it has a lease).
async fn run_active_inner(
    bus: &Bus,
    cfg: &FailoverConfig,
    fence: Option<Fence>,
    ready: &mut Ready,
) -> anyhow::Result<()> {
    let (projection, follower) = crate::snapshot::projection(bus, SERVICE).await?;
    // Bounded: a stalled server must not keep the cluster without an active failover.
    let read = tokio::time::timeout(INTERVALS_PATIENCE, crate::bus::node_watch::intervals(bus));
    let intervals = match read.await {
        Ok(Ok(known)) => known,
        Ok(Err(e)) => {
            warn!(error = %e, "no heartbeat intervals at start: nodes not heard yet have the lost timeout as their limit");
            Default::default()
        }
        Err(_) => {
            warn!(
                patience_s = INTERVALS_PATIENCE.as_secs(),
                "no heartbeat intervals at start (too slow): nodes not heard yet have the lost timeout as their limit"
            );
            Default::default()
        }
    };
    let (actor, handle) = Actor::spawn(
        None,
        FailoverActor::<NatsLog>::default(),
        FailoverArgs {
            projection,
            log: match fence {
                Some(fence) => bus.log()?.fenced(fence),
                None => bus.log()?,
            },
            lost_timeout: cfg.lost_timeout,
            tick: cfg.tick,
            clock: Clock::Wall,
            intervals,
        },
    )
    .await?;
    let _stop = StopOnDrop(actor.clone());
    let _log = crate::snapshot::forward(
        bus,
        SERVICE,
        cfg.snapshots,
        follower,
        &actor,
        FailoverMsg::Logged,
        FailoverMsg::Snapshot,
    );
    let ledger = Ledger::default();
    let _reporting = crate::aside::reporting(bus, ledger.clone());
    let _beats = AbortOnDrop(tokio::spawn(watch_beats(
        bus.clone(),
        actor.clone(),
        ledger,
    )));
    let _connection = {
        let a = actor.clone();
        AbortOnDrop(tokio::spawn(crate::bus::watch_connection(
            bus.client.clone(),
            move |up, at_ms| {
                let ear = Ear::Connection;
                a.send_message(FailoverMsg::Hearing { ear, up, at_ms })
                    .is_ok()
            },
        )))
    };
    info!(instance = %cfg.instance, lost_timeout_ms = cfg.lost_timeout.as_millis() as u64, "failover active");
    if let Some(tx) = ready.take() {
        let _ = tx.send(actor.clone());
    }
    handle.await?;
    anyhow::bail!("failover actor stopped")
}

/// Every new heartbeat put in the nodes bucket, as it arrives, until the actor's end. A
/// heartbeat that does not decode or is out of limits is set aside: it is no sign of life.
async fn watch_beats(bus: Bus, actor: ActorRef<FailoverMsg>, ledger: Ledger) {
    crate::bus::node_watch::follow(&bus, "failover", &ledger, |watched| {
        let entry = match watched {
            Watched::Entry(entry) => entry,
            Watched::Hearing { up, at_ms } => {
                let ear = Ear::Watch;
                return actor
                    .send_message(FailoverMsg::Hearing { ear, up, at_ms })
                    .is_ok();
            }
        };
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            return true;
        }
        // Its interval sets how long a silence means lost (no fewer than three beats).
        let hb = match crate::bus::ops::heartbeat_of(&entry.key, &entry.value) {
            Ok(hb) => hb,
            Err(aside) => {
                ledger.record(aside);
                return true;
            }
        };
        let beat = FailoverMsg::Beat {
            node: entry.key,
            interval_ms: hb.interval_ms,
            at_ms: bulkhead_schemas::now_ms(),
        };
        actor.send_message(beat).is_ok()
    })
    .await
}
