//! The node service: announces the node, runs the node actor over a container runtime,
//! reconciles the runtime with the log, then feeds the actor the node's ops subject and
//! the runtime's exits.
//!
//! - [`config`]: the node's settings (TOML file and flags);
//! - [`cri`]: the CRI runtime (containerd, CRI-O, Kata, Edera, gVisor through a handler);
//! - [`ops`]: the consumer of the node's ops;
//! - [`lost`]: what a node does on hearing it was declared lost.

pub mod config;
pub mod cri;
mod lost;
mod ops;

use std::sync::Arc;
use std::time::Duration;

use bulkhead_actors::node::reconcile::LogView;
use bulkhead_actors::node::{NodeActor, NodeArgs, NodeConfig, NodeMsg, ReconcileReport};
use bulkhead_actors::ports::runtime::{ContainerRuntime, ExitNotice};
use bulkhead_actors::ports::sim::SimRuntime;
use bulkhead_schemas::event::{Event, EventBody, NodeJoined};
use bulkhead_schemas::subjects;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::bus::{Bus, KvHeartbeat, NatsLog};
use crate::follow::Follower;
use crate::tasks::AbortOnDrop;
use config::NodeFile;
use cri::CriRuntime;
use lost::{last_loss, reconcile_when_lost};

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

/// Starts a node named `name` with the settings of `f`, over the runtime they name.
pub async fn launch(bus: &Bus, f: &NodeFile, name: String) -> anyhow::Result<NodeHandle> {
    let config = f.node_config(name.clone());
    match f.runtime.as_str() {
        "sim" => {
            let delay = Duration::from_millis(f.sim_start_delay_ms);
            let (rt, exits) = SimRuntime::new(&name, f.classes.clone(), delay);
            start(bus, config, Arc::new(rt), exits).await
        }
        "cri" => {
            let (rt, exits) = CriRuntime::connect(&name, f.cri.clone()).await?;
            for r in rt.isolation() {
                info!(node = %name, class = %r.class, handler = %r.handler, ok = r.ok, detail = %r.detail, "isolation");
            }
            if rt.runtime_classes().is_empty() {
                warn!(node = %name, "no runtime class passed its isolation probe: this node offers nothing");
            }
            start(bus, config, rt, exits).await
        }
        other => anyhow::bail!("unknown runtime {other:?} (sim or cri)"),
    }
}

/// Starts a node over `runtime`, whose exits arrive on `exits`.
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

    let ops_task = ops::consume(bus, &name, actor.clone()).await?;
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
        _tasks: vec![AbortOnDrop(exit_task), ops_task, AbortOnDrop(lost_task)],
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
    let subject = subjects::node_event(name, "joined");
    let headers = async_nats::HeaderMap::new();
    bus.publish_stored(subject, headers, joined.seal().0.into())
        .await?;
    Ok(())
}

/// What the log says this node should run: a projection of the whole log, cut to the node.
pub(super) async fn log_view(bus: &Bus, node: &str) -> anyhow::Result<LogView> {
    let (projection, _) = Follower::rebuild(bus).await?;
    Ok(LogView::of(&projection, node))
}
