//! The node actor: one message at a time — ops, their results, exits, reconciliation,
//! heartbeats — over [`NodeCore`] and the ports (runtime, log, heartbeats).

use std::sync::Arc;
use std::time::Duration;

use bulkhead_schemas::NodeOp;
use bulkhead_schemas::event::Event;
use futures::future::join_all;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info, warn};

use super::ops::{OpResult, ops_done, take_ops};
use super::reconcile::LogView;
use super::{NodeConfig, NodeCore, NodeError, ReconcileReport, recover};
use crate::ports::heartbeat::HeartbeatSink;
use crate::ports::log::EventLog;
use crate::ports::runtime::{ContainerRuntime, ExitNotice};

pub enum NodeMsg {
    /// Operations from the node's ops subject; the reply says when they are done and logged.
    Ops(Vec<NodeOp>, RpcReplyPort<Result<(), NodeError>>),
    /// The runtime calls of an ops message finished.
    OpsDone(Vec<OpResult>, RpcReplyPort<Result<(), NodeError>>),
    Exit(ExitNotice),
    /// Compare the log's view with the runtime and act; sent once at start, before ops.
    Reconcile(LogView, RpcReplyPort<Result<ReconcileReport, NodeError>>),
    /// Beat: every `heartbeat_ms`, or the cluster's pace when longer.
    Heartbeat,
    /// Append again what the log refused: every `heartbeat_ms`, whatever the pace.
    Retry,
}

pub struct NodeActor<R, L, H>(std::marker::PhantomData<(R, L, H)>);

impl<R, L, H> Default for NodeActor<R, L, H> {
    fn default() -> Self {
        NodeActor(std::marker::PhantomData)
    }
}

pub struct NodeState<R, L, H> {
    pub core: NodeCore,
    pub(super) runtime: Arc<R>,
    log: L,
    sink: H,
    /// The timer of the heartbeats, at the interval in force.
    beats: JoinHandle<()>,
}

pub struct NodeArgs<R, L, H> {
    pub config: NodeConfig,
    pub runtime: Arc<R>,
    pub log: L,
    pub sink: H,
}

impl<R: ContainerRuntime, L: EventLog, H: HeartbeatSink> Actor for NodeActor<R, L, H> {
    type Msg = NodeMsg;
    type State = NodeState<R, L, H>;
    type Arguments = NodeArgs<R, L, H>;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let core = NodeCore::new(args.config);
        let own = Duration::from_millis(core.config.heartbeat_ms.max(10));
        myself.send_interval(own, || NodeMsg::Retry);
        Ok(NodeState {
            beats: beat_every(&myself, core.interval_ms()),
            core,
            runtime: args.runtime,
            log: args.log,
            sink: args.sink,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Ops(ops, reply) => {
                for op in &ops {
                    if let NodeOp::Pace { every_ms } = op {
                        pace(&myself, st, *every_ms);
                    }
                }
                // A view of the log comes alone in its message: reconcile with it first.
                let (syncs, ops): (Vec<_>, Vec<_>) = ops
                    .into_iter()
                    .partition(|o| matches!(o, NodeOp::Sync { .. }));
                for op in syncs {
                    let NodeOp::Sync { view } = op else { continue };
                    let reason = view.reason;
                    match recover::with_runtime(st, view.into()).await {
                        Ok(r) => info!(
                            ?reason,
                            adopted = r.adopted,
                            exited = r.exited,
                            vanished = r.vanished,
                            removed = r.removed,
                            "reconciled with the scheduler's view"
                        ),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return Ok(());
                        }
                    }
                }
                let work = take_ops(st, ops);
                if work.is_empty() {
                    let _ = reply.send(Ok(()));
                } else {
                    tokio::spawn(async move {
                        let results = join_all(work).await;
                        let _ = myself.send_message(NodeMsg::OpsDone(results, reply));
                    });
                }
            }
            NodeMsg::OpsDone(results, reply) => {
                let r = ops_done(st, results).await;
                let _ = reply.send(r);
            }
            NodeMsg::Exit(notice) => exit(st, notice).await,
            NodeMsg::Reconcile(view, reply) => {
                let r = recover::with_runtime(st, view).await;
                let _ = reply.send(r);
            }
            NodeMsg::Heartbeat => {
                let hb = st.core.heartbeat(
                    st.runtime.kind(),
                    st.runtime.runtime_classes(),
                    st.runtime.isolation(),
                );
                if let Err(e) = st.sink.beat(hb).await {
                    warn!(error = %e, "heartbeat failed");
                }
            }
            NodeMsg::Retry => {
                if !st.core.unlogged.is_empty() {
                    let retry = std::mem::take(&mut st.core.unlogged);
                    log_events(st, retry).await;
                }
            }
        }
        Ok(())
    }
}

/// Beats now and then every `interval_ms`; the timer's handle.
fn beat_every(myself: &ActorRef<NodeMsg>, interval_ms: u64) -> JoinHandle<()> {
    let _ = myself.send_message(NodeMsg::Heartbeat);
    myself.send_interval(Duration::from_millis(interval_ms.max(10)), || {
        NodeMsg::Heartbeat
    })
}

/// The scheduler set the cluster's heartbeat pace: when the interval changes, the node
/// beats at once, stating the new one (the watchers' silence rule follows what a node
/// states), and then at the new interval.
fn pace<R, L, H>(myself: &ActorRef<NodeMsg>, st: &mut NodeState<R, L, H>, every_ms: u64) {
    if let Some(interval) = st.core.pace(every_ms) {
        info!(interval_ms = interval, "heartbeat paced by the scheduler");
        st.beats.abort();
        st.beats = beat_every(myself, interval);
    }
}

/// A container ended by itself: log its exit, or keep the notice for the start under way
/// that made it.
async fn exit<R: ContainerRuntime, L: EventLog, H>(st: &mut NodeState<R, L, H>, n: ExitNotice) {
    if st.core.stopping.contains(&n.container) {
        return;
    }
    let Some(c) = st.core.forget(&n.container) else {
        let container = n.container.clone();
        if !st.core.early_exit(n) {
            debug!(%container, "exit of a container this node does not know; ignored");
        }
        return;
    };
    remove_later(st, &n.container);
    let ev = st.core.exited(&c.workload, c.replica, n);
    log_events(st, vec![(c.workload, ev)]).await;
}

/// Appends events; what fails is kept and retried on the next heartbeat.
pub(super) async fn log_events<R, L: EventLog, H>(
    st: &mut NodeState<R, L, H>,
    events: Vec<(String, Event)>,
) {
    if events.is_empty() {
        return;
    }
    let appends = st.core.appends(events);
    let out = st.log.append(appends.clone()).await;
    let failed = st.core.stored(out, appends);
    st.core.unlogged.extend(failed);
}

/// Tries to remove an ended container this many times, waiting 1, 2, 4 … s between.
const REMOVE_ATTEMPTS: u32 = 6;

/// Removes an ended container in the background (its log file stays); a removal that fails
/// (a runtime slow under load) is tried again, backing off, so that nothing is left behind.
pub(super) fn remove_later<R: ContainerRuntime, L, H>(st: &NodeState<R, L, H>, container: &str) {
    let rt = st.runtime.clone();
    let container = container.to_owned();
    tokio::spawn(async move {
        for attempt in 1..=REMOVE_ATTEMPTS {
            match rt.stop(&container, Duration::ZERO).await {
                Ok(()) => return,
                Err(e) if attempt == REMOVE_ATTEMPTS => {
                    warn!(%container, error = %e, attempt, "could not remove an ended container");
                }
                Err(e) => {
                    warn!(%container, error = %e, attempt, "could not remove an ended container; trying again");
                    tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                }
            }
        }
    });
}
