//! The node: turns operations from its ops subject into runtime calls and runtime facts
//! into events (`started`, `exited`, `stopped`); reconciles with its runtime after a
//! restart; reports its capacity and isolation by heartbeat.
//!
//! Runtime calls (pulls, starts, stops with a grace period) run in tasks, never in the
//! handler: their results come back as a message, so heartbeats and exits keep flowing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_schemas::event::{Event, EventBody, Exited, Started, Stopped};
use bulkhead_schemas::node::IsolationReport;
use bulkhead_schemas::{ChainHead, NodeHeartbeat, NodeOp, Resources, RuntimeClass};
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, info, info_span, warn};

use crate::log::{EventLog, Outcome, WorkloadAppend};
use crate::projection::Head;
use crate::reconcile::{Action, LogView, reconcile};
use crate::runtime::{ContainerRuntime, ExitNotice, RuntimeError, StartSpec};

/// Exits seen before their start finished are kept this long (in count) at most.
const MAX_EARLY_EXITS: usize = 4096;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub capacity: Resources,
    pub labels: BTreeMap<String, String>,
    pub heartbeat_ms: u64,
    /// Grace period of a stop that names none.
    pub stop_grace: Duration,
}

#[derive(Clone, Debug)]
struct Container {
    workload: String,
    replica: u32,
    need: Resources,
}

/// A node's bookkeeping: which containers run which replicas, and each workload's head.
#[derive(Debug)]
pub struct NodeCore {
    pub config: NodeConfig,
    containers: HashMap<String, Container>,
    by_replica: HashMap<(String, u32), String>,
    heads: HashMap<String, Head>,
    /// Per replica, the head sequence of the last start op taken: a redelivered op (same
    /// or older head) is not started again.
    handled: HashMap<(String, u32), u64>,
    /// Containers being stopped: their exit is a `stopped`, not an `exited`.
    stopping: HashSet<String>,
    /// Exits reported before the start that made the container was recorded.
    early_exits: HashMap<String, ExitNotice>,
    /// Events whose append failed, retried on the next heartbeat.
    unlogged: Vec<(String, Event)>,
}

impl NodeCore {
    pub fn new(config: NodeConfig) -> Self {
        NodeCore {
            config,
            containers: HashMap::new(),
            by_replica: HashMap::new(),
            heads: HashMap::new(),
            handled: HashMap::new(),
            stopping: HashSet::new(),
            early_exits: HashMap::new(),
            unlogged: Vec::new(),
        }
    }

    pub fn running(&self) -> usize {
        self.containers.len()
    }

    pub fn container_of(&self, workload: &str, replica: u32) -> Option<&str> {
        self.by_replica
            .get(&(workload.to_owned(), replica))
            .map(String::as_str)
    }

    fn service(&self) -> String {
        format!("node/{}", self.config.name)
    }

    /// Remembers the newest head known for a workload.
    fn learn(&mut self, workload: &str, head: &ChainHead) {
        if let Some(hash) = parse_hash(&head.hash) {
            self.learn_head(
                workload,
                Head {
                    seq: head.seq,
                    hash,
                },
            );
        }
    }

    fn learn_head(&mut self, workload: &str, h: Head) {
        let e = self.heads.entry(workload.to_owned()).or_insert(h);
        if h.seq > e.seq {
            *e = h;
        }
    }

    /// Whether a start op with this head is new for the replica (and takes it if so).
    fn take_start(&mut self, workload: &str, replica: u32, head_seq: u64) -> bool {
        if self.container_of(workload, replica).is_some() {
            return false;
        }
        let key = (workload.to_owned(), replica);
        if self.handled.get(&key).is_some_and(|&s| s >= head_seq) {
            return false;
        }
        self.handled.insert(key, head_seq);
        true
    }

    fn record(&mut self, container: String, workload: &str, replica: u32, need: Resources) {
        self.by_replica
            .insert((workload.to_owned(), replica), container.clone());
        self.containers.insert(
            container,
            Container {
                workload: workload.to_owned(),
                replica,
                need,
            },
        );
    }

    fn forget(&mut self, container: &str) -> Option<Container> {
        let c = self.containers.remove(container)?;
        self.by_replica.remove(&(c.workload.clone(), c.replica));
        Some(c)
    }

    fn event(&self, workload: &str, body: EventBody) -> Event {
        Event::new(&self.service(), workload, None, body)
    }

    fn exited(&self, workload: &str, replica: u32, n: ExitNotice) -> Event {
        self.event(
            workload,
            EventBody::Exited(Exited {
                replica,
                node: self.config.name.clone(),
                code: n.code,
                reason: n.reason,
                finished_at: n.finished_at,
            }),
        )
    }

    fn started(&self, workload: &str, replica: u32, container: &str) -> Event {
        self.event(
            workload,
            EventBody::Started(Started {
                replica,
                node: self.config.name.clone(),
                container: container.to_owned(),
            }),
        )
    }

    /// Groups events by workload into appends after each workload's known head.
    fn appends(&self, events: Vec<(String, Event)>) -> Vec<WorkloadAppend> {
        let mut by: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        for (w, e) in events {
            by.entry(w).or_default().push(e);
        }
        by.into_iter()
            .map(|(workload, events)| WorkloadAppend {
                head: self.heads.get(&workload).copied(),
                workload,
                events,
                rechain_on_conflict: true,
            })
            .collect()
    }

    /// Takes the heads of stored appends; returns the events of failed ones.
    fn stored(
        &mut self,
        outcomes: Vec<Outcome>,
        appends: Vec<WorkloadAppend>,
    ) -> Vec<(String, Event)> {
        let mut failed = Vec::new();
        for (o, a) in outcomes.into_iter().zip(appends) {
            match o {
                Outcome::Stored(s) => {
                    if let Some(last) = s.last() {
                        self.heads.insert(
                            a.workload.clone(),
                            Head {
                                seq: last.seq,
                                hash: last.hash,
                            },
                        );
                    }
                }
                Outcome::Conflict | Outcome::Failed(_) => {
                    if let Outcome::Failed(e) = &o {
                        warn!(workload = %a.workload, error = %e, "could not log; will retry");
                    }
                    failed.extend(a.events.into_iter().map(|e| (a.workload.clone(), e)));
                }
            }
        }
        failed
    }

    pub fn heartbeat(
        &self,
        runtime: &str,
        classes: Vec<RuntimeClass>,
        isolation: Vec<IsolationReport>,
    ) -> NodeHeartbeat {
        let used = self
            .containers
            .values()
            .fold(Resources::default(), |acc, c| acc.add(&c.need));
        NodeHeartbeat {
            name: self.config.name.clone(),
            capacity: self.config.capacity,
            free: self.config.capacity.saturating_sub(&used),
            runtime_classes: classes,
            labels: self.config.labels.clone(),
            runtime: runtime.to_owned(),
            running: self.containers.len() as u32,
            interval_ms: self.config.heartbeat_ms,
            at: bulkhead_schemas::now_rfc3339(),
            isolation,
        }
    }
}

fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex_hash).ok()?;
    v.try_into().ok()
}

/// Where heartbeats go (the `bulkhead-nodes` KV bucket).
pub trait HeartbeatSink: Clone + Send + Sync + 'static {
    fn beat(&self, hb: NodeHeartbeat) -> impl Future<Output = Result<(), String>> + Send;
}

/// What reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: usize,
    pub exited: usize,
    pub vanished: usize,
    pub removed: usize,
}

/// The result of one runtime call made for an ops message.
pub enum OpResult {
    Start {
        workload: String,
        replica: u32,
        need: Resources,
        traceparent: Option<String>,
        result: Result<String, RuntimeError>,
    },
    Stop {
        workload: String,
        replica: u32,
        container: String,
        need: Resources,
        traceparent: Option<String>,
        result: Result<(), RuntimeError>,
    },
}

pub enum NodeMsg {
    /// Operations from the node's ops subject; the reply says when they are done and logged.
    Ops(Vec<NodeOp>, RpcReplyPort<Result<(), String>>),
    /// The runtime calls of an ops message finished.
    OpsDone(Vec<OpResult>, RpcReplyPort<Result<(), String>>),
    Exit(ExitNotice),
    /// Compare the log's view with the runtime and act; sent once at start, before ops.
    Reconcile(LogView, RpcReplyPort<Result<ReconcileReport, String>>),
    Heartbeat,
}

pub struct NodeActor<R, L, H>(std::marker::PhantomData<(R, L, H)>);

impl<R, L, H> Default for NodeActor<R, L, H> {
    fn default() -> Self {
        NodeActor(std::marker::PhantomData)
    }
}

pub struct NodeState<R, L, H> {
    pub core: NodeCore,
    runtime: Arc<R>,
    log: L,
    sink: H,
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
        let every = Duration::from_millis(args.config.heartbeat_ms.max(10));
        myself.send_interval(every, || NodeMsg::Heartbeat);
        let _ = myself.send_message(NodeMsg::Heartbeat);
        Ok(NodeState {
            core: NodeCore::new(args.config),
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
            NodeMsg::Exit(notice) => {
                if st.core.stopping.contains(&notice.container) {
                    return Ok(());
                }
                let Some(c) = st.core.forget(&notice.container) else {
                    if st.core.early_exits.len() >= MAX_EARLY_EXITS {
                        st.core.early_exits.clear();
                    }
                    st.core.early_exits.insert(notice.container.clone(), notice);
                    return Ok(());
                };
                remove_later(st, &notice.container);
                let ev = st.core.exited(&c.workload, c.replica, notice);
                log_events(st, vec![(c.workload, ev)]).await;
            }
            NodeMsg::Reconcile(view, reply) => {
                let r = reconcile_with_runtime(st, view).await;
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
                if !st.core.unlogged.is_empty() {
                    let retry = std::mem::take(&mut st.core.unlogged);
                    log_events(st, retry).await;
                }
            }
        }
        Ok(())
    }
}

/// Takes the ops that need doing and returns their runtime calls, not yet run.
fn take_ops<R: ContainerRuntime, L, H>(
    st: &mut NodeState<R, L, H>,
    ops: Vec<NodeOp>,
) -> Vec<BoxFuture<'static, OpResult>> {
    let node = st.core.config.name.clone();
    let mut work = Vec::new();
    for op in ops {
        match op {
            NodeOp::Start {
                workload,
                replica,
                spec,
                head,
                traceparent,
            } => {
                st.core.learn(&workload, &head);
                if !st.core.take_start(&workload, replica, head.seq) {
                    continue; // running already, or a redelivered op
                }
                let span = info_span!("start", workload = %workload, replica, node = %node);
                crate::set_parent(&span, traceparent.as_deref());
                let need = Resources::of(&spec);
                let rt = st.runtime.clone();
                let req = StartSpec {
                    workload: workload.clone(),
                    replica,
                    node: node.clone(),
                    spec,
                };
                work.push(
                    async move {
                        let result = rt.start(req).instrument(span).await;
                        OpResult::Start {
                            workload,
                            replica,
                            need,
                            traceparent,
                            result,
                        }
                    }
                    .boxed(),
                );
            }
            NodeOp::Stop {
                workload,
                replica,
                head,
                grace_secs,
                traceparent,
            } => {
                st.core.learn(&workload, &head);
                let Some(container) = st.core.container_of(&workload, replica).map(str::to_owned)
                else {
                    continue;
                };
                let Some(c) = st.core.forget(&container) else {
                    continue;
                };
                st.core.stopping.insert(container.clone());
                let grace = grace_secs
                    .map(|s| Duration::from_secs(s.into()))
                    .unwrap_or(st.core.config.stop_grace);
                let span = info_span!("stop", workload = %workload, replica, node = %node);
                crate::set_parent(&span, traceparent.as_deref());
                let rt = st.runtime.clone();
                work.push(
                    async move {
                        let result = rt.stop(&container, grace).instrument(span).await;
                        OpResult::Stop {
                            workload,
                            replica,
                            container,
                            need: c.need,
                            traceparent,
                            result,
                        }
                    }
                    .boxed(),
                );
            }
        }
    }
    work
}

/// Records what the runtime calls did and logs it.
async fn ops_done<R: ContainerRuntime, L: EventLog, H>(
    st: &mut NodeState<R, L, H>,
    results: Vec<OpResult>,
) -> Result<(), String> {
    let node = st.core.config.name.clone();
    let mut events: Vec<(String, Event)> = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            OpResult::Start {
                workload,
                replica,
                need,
                traceparent,
                result,
            } => {
                let mut evs = match result {
                    Ok(container) => {
                        let mut evs = vec![st.core.started(&workload, replica, &container)];
                        match st.core.early_exits.remove(&container) {
                            Some(exit) => {
                                remove_later(st, &container);
                                evs.push(st.core.exited(&workload, replica, exit));
                            }
                            None => st.core.record(container, &workload, replica, need),
                        }
                        evs
                    }
                    Err(e) => vec![st.core.exited(
                        &workload,
                        replica,
                        ExitNotice {
                            container: String::new(),
                            code: -1,
                            reason: e.to_string(),
                            finished_at: bulkhead_schemas::now_rfc3339(),
                        },
                    )],
                };
                for ev in &mut evs {
                    ev.traceparent = traceparent.clone();
                }
                events.extend(evs.into_iter().map(|e| (workload.clone(), e)));
            }
            OpResult::Stop {
                workload,
                replica,
                container,
                need,
                traceparent,
                result,
            } => {
                st.core.stopping.remove(&container);
                if let Err(e) = result {
                    // Still there: keep it, and let the redelivered op try again.
                    failures.push(format!("{workload}/{replica}: {e}"));
                    st.core.record(container, &workload, replica, need);
                    continue;
                }
                let mut ev = st.core.event(
                    &workload,
                    EventBody::Stopped(Stopped {
                        replica,
                        node: node.clone(),
                    }),
                );
                ev.traceparent = traceparent;
                events.push((workload, ev));
            }
        }
    }
    log_events(st, events).await;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Appends events; what fails is kept and retried on the next heartbeat.
async fn log_events<R, L: EventLog, H>(st: &mut NodeState<R, L, H>, events: Vec<(String, Event)>) {
    if events.is_empty() {
        return;
    }
    let appends = st.core.appends(events);
    let out = st.log.append(appends.clone()).await;
    let failed = st.core.stored(out, appends);
    st.core.unlogged.extend(failed);
}

/// Removes an ended container in the background (its log file stays).
fn remove_later<R: ContainerRuntime, L, H>(st: &NodeState<R, L, H>, container: &str) {
    let rt = st.runtime.clone();
    let container = container.to_owned();
    tokio::spawn(async move {
        if let Err(e) = rt.stop(&container, Duration::ZERO).await {
            warn!(%container, error = %e, "could not remove an ended container");
        }
    });
}

async fn reconcile_with_runtime<R: ContainerRuntime, L: EventLog, H>(
    st: &mut NodeState<R, L, H>,
    view: LogView,
) -> Result<ReconcileReport, String> {
    for (w, h) in view.heads {
        st.core.learn_head(&w, h);
    }
    st.core.handled.extend(view.handled);
    let node = st.core.config.name.clone();
    let observed = st.runtime.observe(&node).await.map_err(|e| e.to_string())?;
    let mut report = ReconcileReport::default();
    let mut events = Vec::new();
    let mut removals = Vec::new();
    for action in reconcile(&view.desired, &observed) {
        match action {
            Action::Adopt {
                workload,
                replica,
                container,
                need,
                log_started,
            } => {
                info!(%workload, replica, %container, "adopting a running container");
                if log_started {
                    events.push((
                        workload.clone(),
                        st.core.started(&workload, replica, &container),
                    ));
                }
                st.core.record(container, &workload, replica, need);
                report.adopted += 1;
            }
            Action::LogExit {
                workload,
                replica,
                exit,
                log_started,
            } => {
                info!(%workload, replica, code = exit.code, "container exited while the node was down");
                let container = exit.container.clone();
                st.core.forget(&container);
                if log_started {
                    events.push((
                        workload.clone(),
                        st.core.started(&workload, replica, &container),
                    ));
                }
                events.push((workload.clone(), st.core.exited(&workload, replica, exit)));
                remove_later(st, &container);
                report.exited += 1;
            }
            Action::Vanished {
                workload,
                replica,
                container,
            } => {
                warn!(%workload, replica, %container, "container vanished while the node was down");
                st.core.forget(&container);
                let exit = ExitNotice {
                    container,
                    code: -1,
                    reason: "vanished: the runtime no longer has the container".into(),
                    finished_at: bulkhead_schemas::now_rfc3339(),
                };
                events.push((workload.clone(), st.core.exited(&workload, replica, exit)));
                report.vanished += 1;
            }
            Action::Remove { container, why } => {
                info!(%container, why, "removing a container");
                // Its end is not news: the log has moved on from it.
                st.core.forget(&container);
                st.core.stopping.insert(container.clone());
                removals.push(container);
            }
        }
    }
    // Removals are independent (and slow under a sandboxed runtime): all at once.
    let rt = &st.runtime;
    let removed = join_all(removals.iter().map(|c| rt.stop(c, Duration::ZERO))).await;
    for (c, r) in removals.iter().zip(removed) {
        st.core.stopping.remove(c);
        match r {
            Ok(()) => report.removed += 1,
            Err(e) => warn!(container = %c, error = %e, "could not remove"),
        }
    }
    log_events(st, events).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> NodeCore {
        NodeCore::new(NodeConfig {
            name: "n".into(),
            capacity: Resources {
                memory_mb: 1024,
                cpu_millicores: 1000,
                slots: 10,
            },
            labels: BTreeMap::new(),
            heartbeat_ms: 1000,
            stop_grace: Duration::from_secs(10),
        })
    }

    #[test]
    fn a_start_op_is_taken_once_per_head() {
        let mut c = core();
        assert!(c.take_start("w", 0, 5));
        assert!(!c.take_start("w", 0, 5), "redelivered op");
        assert!(!c.take_start("w", 0, 4), "older op");
        assert!(c.take_start("w", 1, 5), "other replica");
        assert!(
            c.take_start("w", 0, 9),
            "a later placement of the same replica"
        );
    }

    #[test]
    fn a_running_replica_is_not_started_again() {
        let mut c = core();
        c.record("c1".into(), "w", 0, Resources::default());
        assert!(!c.take_start("w", 0, 100));
        c.forget("c1");
        assert!(c.take_start("w", 0, 100));
    }

    #[test]
    fn heartbeat_counts_what_runs() {
        let mut c = core();
        let need = Resources {
            memory_mb: 256,
            cpu_millicores: 100,
            slots: 1,
        };
        c.record("c1".into(), "w", 0, need);
        let hb = c.heartbeat("cri", vec![RuntimeClass::Runc], Vec::new());
        assert_eq!(hb.free.memory_mb, 768);
        assert_eq!(hb.free.slots, 9);
        assert_eq!(hb.running, 1);
    }
}
