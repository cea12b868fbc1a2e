//! The node service: announces the node (`joined`), runs the node actor over a container
//! runtime, and feeds it the node's signed ops and the runtime's exits. The node reads no
//! log: what it should hold comes from the scheduler as a view (`sync` op) when it joins,
//! when replicas on it are declared lost, and at a takeover; the chain heads it appends
//! after come with its ops, or from the query API for its own workloads.
//!
//! - [`config`]: the node's settings (TOML file and flags);
//! - [`cri`]: the CRI runtime (containerd, CRI-O, Kata, Edera, gVisor through a handler);
//! - [`ops`]: the consumer of the node's ops, which runs only what the scheduler signed;
//! - [`delivery`]: receiving them over core NATS (a node's account has no JetStream);
//! - [`instance`]: one live process per node name;
//! - [`logs`]: its workloads' output, served to their tenants.

pub mod config;
pub mod cri;
mod delivery;
pub mod instance;
pub mod logs;
mod ops;

use std::sync::Arc;
use std::time::Duration;

use bulkhead_actors::node::{NodeActor, NodeArgs, NodeConfig, NodeMsg};
use bulkhead_actors::ports::log::EventLog;
use bulkhead_actors::ports::runtime::{ContainerRuntime, ExitNotice};
use bulkhead_actors::ports::sim::SimRuntime;
use bulkhead_schemas::event::{Event, EventBody, NodeJoined};
use bulkhead_schemas::subjects;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::aside::Ledger;
use crate::bus::{Bus, KvHeartbeat, NatsLog};
use crate::tasks::AbortOnDrop;
use config::NodeFile;
use cri::CriRuntime;

/// A running node; dropping it stops the node.
pub struct NodeHandle {
    pub name: String,
    pub actor: ActorRef<NodeMsg>,
    /// What the node set aside (ops not signed for it, out of limits, given up on),
    /// reported to the query API.
    pub refused: Ledger,
    /// True once the scheduler's first view of the log is reconciled (the node runs ops
    /// from then on).
    synced: tokio::sync::watch::Receiver<bool>,
    _tasks: Vec<AbortOnDrop>,
}

impl NodeHandle {
    /// Waits until the node is ready: the scheduler's first view of the log has come, the
    /// node reconciled its runtime with it and ran the ops held until then. False when the
    /// node stopped first.
    pub async fn synced(&self) -> bool {
        self.synced.clone().wait_for(|s| *s).await.is_ok()
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}

/// Starts a node named `name` with the settings of `f`, over the runtime they name.
/// Launches node `name` with the settings of `f`, its instance id kept under `dir`; refused
/// while another live instance holds the name.
pub async fn launch(
    bus: &Bus,
    f: &NodeFile,
    name: String,
    dir: &std::path::Path,
) -> anyhow::Result<NodeHandle> {
    let mut config = f.node_config(name.clone());
    config.instance = instance::instance_id(dir, &name)?;
    instance::check(bus, &name, &config.instance).await?;
    let (mut handle, log_dir) = match f.runtime.as_str() {
        "sim" => {
            let delay = Duration::from_millis(f.sim_start_delay_ms);
            let (rt, exits) = SimRuntime::new(&name, f.classes.clone(), delay);
            (start(bus, config, Arc::new(rt), exits).await?, None)
        }
        "cri" => {
            let (rt, exits) = CriRuntime::connect(&name, f.cri.clone()).await?;
            for r in rt.isolation() {
                info!(node = %name, class = %r.class, handler = %r.handler, ok = r.ok, detail = %r.detail, "isolation");
            }
            if rt.runtime_classes().is_empty() {
                warn!(node = %name, "no runtime class passed its isolation probe: this node offers nothing");
            }
            let dir = f.cri.log_dir.clone();
            (start(bus, config, rt, exits).await?, Some(dir))
        }
        other => anyhow::bail!("unknown runtime {other:?} (sim or cri)"),
    };
    handle._tasks.push(logs::serve(bus, &name, log_dir).await?);
    Ok(handle)
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
    let began = std::time::Instant::now();
    let name = config.name.clone();
    let hello = NodeJoined {
        capacity: config.capacity,
        runtime_classes: runtime.runtime_classes(),
        runtime: runtime.kind().into(),
    };
    let log = bus.log()?;
    announce(&log, &name, &hello).await?;
    let sink = KvHeartbeat::new(bus).await?;
    let (actor, _) = Actor::spawn(
        None,
        NodeActor::<R, NatsLog, KvHeartbeat>::default(),
        NodeArgs {
            config,
            runtime,
            log: log.clone(),
            sink,
        },
    )
    .await?;

    let a = actor.clone();
    let exit_task = tokio::spawn(async move {
        while let Some(n) = exits.recv().await {
            if a.send_message(NodeMsg::Exit(n)).is_err() {
                return;
            }
        }
    });

    let refused = Ledger::default();
    let reporting = crate::aside::reporting(bus, refused.clone());
    let on_lost: ops::OnLost = {
        let (log, name, hello) = (log.clone(), name.clone(), hello.clone());
        Arc::new(move || {
            let (log, name, hello) = (log.clone(), name.clone(), hello.clone());
            Box::pin(async move {
                if let Err(e) = announce(&log, &name, &hello).await {
                    warn!(node = %name, error = %e, "cannot say the node is back");
                }
            })
        })
    };
    let (ready, synced) = tokio::sync::watch::channel(false);
    let ready = ops::Ready {
        tell: ready,
        since: began,
    };
    let ops_task = ops::consume(bus, &name, actor.clone(), refused.clone(), on_lost, ready).await?;
    info!(node = %name, "node up; waiting for the scheduler's view before running ops");
    Ok(NodeHandle {
        name,
        actor,
        refused,
        synced,
        _tasks: [AbortOnDrop(exit_task), ops_task]
            .into_iter()
            .chain(reporting)
            .collect(),
    })
}

/// Appends the node's `joined` event, signed: it is up (or back) with this capacity.
async fn announce(log: &NatsLog, name: &str, hello: &NodeJoined) -> anyhow::Result<()> {
    let joined = Event::new(
        &format!("node/{name}"),
        name,
        None,
        EventBody::Joined(hello.clone()),
    );
    log.publish_node(joined).await?;
    Ok(())
}
