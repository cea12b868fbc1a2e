//! The node service: announces the node, runs the node actor over a container runtime,
//! reconciles the runtime with the log, then feeds the actor the node's ops subject and
//! the runtime's exits.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use bulkhead_actors::node::{NodeActor, NodeArgs, NodeConfig, NodeMsg, ReconcileReport};
use bulkhead_actors::reconcile::LogView;
use bulkhead_actors::runtime::{ContainerRuntime, ExitNotice};
use bulkhead_schemas::event::{Event, EventBody, NodeJoined};
use bulkhead_schemas::{NodeOps, subjects};
use futures::StreamExt;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::bus::{Bus, KvHeartbeat, NatsLog};
use crate::follow::Follower;

/// How often a node tells JetStream it still works on an ops message (ack wait is 30 s).
const OPS_PROGRESS_EVERY: Duration = Duration::from_secs(10);
use crate::scheduler_svc::AbortOnDrop;

/// A running node; dropping it stops the node.
pub struct NodeHandle {
    pub name: String,
    pub actor: ActorRef<NodeMsg>,
    /// What reconciliation with the runtime did at start.
    pub reconciled: ReconcileReport,
    _tasks: Vec<AbortOnDrop>,
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}

pub async fn start<R: ContainerRuntime>(
    bus: &Bus,
    config: NodeConfig,
    runtime: Arc<R>,
    mut exits: mpsc::UnboundedReceiver<ExitNotice>,
) -> anyhow::Result<NodeHandle> {
    anyhow::ensure!(
        subjects::is_valid_token(&config.name),
        "node name {:?} must be 1-64 characters of [A-Za-z0-9_-]",
        config.name
    );
    let name = config.name.clone();
    let hello = NodeJoined {
        capacity: config.capacity,
        runtime_classes: runtime.runtime_classes(),
        runtime: runtime.kind().into(),
    };
    announce(bus, &name, &hello).await?;
    let sink = KvHeartbeat::new(bus).await?;
    let (actor, _) = Actor::spawn(
        None,
        NodeActor::<R, NatsLog, KvHeartbeat>::default(),
        NodeArgs {
            config,
            runtime,
            log: bus.log(),
            sink,
        },
    )
    .await?;

    // A loss already in the log is settled by this first reconcile.
    let lost_seen = last_loss(bus, &name).await?;
    let view = log_view(bus, &name).await?;
    let reconciled = ractor::call!(actor, NodeMsg::Reconcile, view)?
        .map_err(|e| anyhow::anyhow!("reconciling with the runtime: {e}"))?;
    info!(node = %name, adopted = reconciled.adopted, exited = reconciled.exited,
        vanished = reconciled.vanished, removed = reconciled.removed, "reconciled with the runtime");

    let a = actor.clone();
    let exit_task = tokio::spawn(async move {
        while let Some(n) = exits.recv().await {
            if a.send_message(NodeMsg::Exit(n)).is_err() {
                return;
            }
        }
    });

    let stream = bus.js.get_stream(subjects::OPS_STREAM).await?;
    let durable = subjects::node_consumer(&name);
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: subjects::node_ops(&name),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    let a = actor.clone();
    let node = name.clone();
    let ops_task = tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    warn!(node = %node, error = %e, "ops consumer error");
                    continue;
                }
            };
            let ops: NodeOps = match serde_json::from_slice(&m.payload) {
                Ok(o) => o,
                Err(e) => {
                    warn!(node = %node, error = %e, "dropping malformed ops message");
                    let _ = m.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            // Pulls and slow starts can outlast the ack wait: say the work is in progress.
            let call = async { ractor::call!(a, NodeMsg::Ops, ops.ops) };
            tokio::pin!(call);
            let mut progress = tokio::time::interval(OPS_PROGRESS_EVERY);
            progress.tick().await;
            let result = loop {
                tokio::select! {
                    r = &mut call => break r,
                    _ = progress.tick() => { let _ = m.ack_with(AckKind::Progress).await; }
                }
            };
            let kind = match result {
                Ok(Ok(())) => AckKind::Ack,
                Ok(Err(e)) => {
                    warn!(node = %node, error = %e, "ops partly failed; will retry");
                    AckKind::Nak(Some(Duration::from_secs(1)))
                }
                Err(_) => return,
            };
            let _ = m.ack_with(kind).await;
        }
    });
    let lost_task = tokio::spawn(reconcile_when_lost(
        bus.clone(),
        name.clone(),
        hello,
        lost_seen,
        actor.clone(),
    ));
    info!(node = %name, "node up");
    Ok(NodeHandle {
        name,
        actor,
        reconciled,
        _tasks: vec![
            AbortOnDrop(exit_task),
            AbortOnDrop(ops_task),
            AbortOnDrop(lost_task),
        ],
    })
}

/// Appends the node's `joined` event: it is up (or back) with this capacity.
async fn announce(bus: &Bus, name: &str, hello: &NodeJoined) -> anyhow::Result<()> {
    let joined = Event::new(
        &format!("node/{name}"),
        name,
        None,
        EventBody::Joined(hello.clone()),
    );
    bus.js
        .publish(subjects::node_event(name, "joined"), joined.seal().0.into())
        .await?
        .await?;
    Ok(())
}

/// Stream sequence of this node's last `lost` event (0: never lost).
async fn last_loss(bus: &Bus, name: &str) -> anyhow::Result<u64> {
    let subject = subjects::node_event(name, "lost");
    Ok(bus.last_event(&subject).await?.map_or(0, |h| h.seq))
}

/// How often a node looks in the log for its own `lost` event, in case it missed the
/// message (it was cut off from NATS when the failover appended it).
const LOSS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// A node declared lost while it still runs (a pause, a partition) learns it from its own
/// `lost` event (as it is appended, or from the log within [`LOSS_CHECK_EVERY`] if it
/// missed that), reconciles again (copies replaced elsewhere meanwhile are removed) and
/// says it is back with a new `joined`.
async fn reconcile_when_lost(
    bus: Bus,
    name: String,
    hello: NodeJoined,
    mut lost_seen: u64,
    actor: ActorRef<NodeMsg>,
) {
    let mut sub = match bus
        .client
        .subscribe(subjects::node_event(&name, "lost"))
        .await
    {
        Ok(s) => s,
        Err(e) => return warn!(node = %name, error = %e, "cannot watch for this node's loss"),
    };
    let mut check = tokio::time::interval(LOSS_CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The message is news in itself (the log may not show it yet); the log is checked.
        let heard = tokio::select! {
            m = sub.next() => if m.is_none() { return } else { true },
            _ = check.tick() => false,
        };
        if !heard {
            match last_loss(&bus, &name).await {
                Ok(seq) if seq > lost_seen => {}
                Ok(_) => continue,
                Err(e) => {
                    warn!(node = %name, error = %e, "cannot read this node's losses");
                    continue;
                }
            }
        }
        warn!(node = %name, "this node was declared lost; reconciling with the log");
        // A node that was frozen or cut off reads a log where its replicas were long since
        // replaced: reconcile at once. A node that hears of its loss as it happens reads the
        // log before the failover has appended the replicas' fate: reconcile once more after.
        for pass in [Duration::ZERO, AFTER_LOSS_AGAIN] {
            tokio::time::sleep(pass).await;
            let began = std::time::Instant::now();
            let view = match log_view(&bus, &name).await {
                Ok(v) => v,
                Err(e) => {
                    warn!(node = %name, error = %e, "cannot read the log to reconcile");
                    continue;
                }
            };
            let read_ms = began.elapsed().as_millis() as u64;
            match ractor::call!(actor, NodeMsg::Reconcile, view) {
                Ok(Ok(r)) => info!(node = %name, adopted = r.adopted, removed = r.removed,
                    exited = r.exited, read_ms, took_ms = began.elapsed().as_millis() as u64,
                    "reconciled after being declared lost"),
                Ok(Err(e)) => warn!(node = %name, error = %e, "reconciling failed"),
                Err(_) => return,
            }
            if pass.is_zero()
                && let Err(e) = announce(&bus, &name, &hello).await
            {
                warn!(node = %name, error = %e, "cannot say the node is back");
            }
        }
        // Settled up to here (by now the log holds what was heard).
        if let Ok(seq) = last_loss(&bus, &name).await {
            lost_seen = lost_seen.max(seq);
        }
    }
}

/// The second reconcile after a `lost` event, once the failover has had time to act on it.
const AFTER_LOSS_AGAIN: Duration = Duration::from_millis(1000);

/// What the log says this node should run: a projection of the whole log, cut to the node.
async fn log_view(bus: &Bus, node: &str) -> anyhow::Result<LogView> {
    let (projection, _) = Follower::rebuild(bus).await?;
    Ok(LogView::of(&projection, node))
}
