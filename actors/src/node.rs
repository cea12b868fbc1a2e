//! The node: turns operations from its ops subject into runtime calls and runtime facts
//! into events (`started`, `exited`, `stopped`); reports its capacity by heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use bulkhead_schemas::event::{Event, EventBody, Exited, Started, Stopped};
use bulkhead_schemas::{ChainHead, NodeHeartbeat, NodeOp, Resources};
use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, info_span, warn};

use crate::log::{EventLog, Outcome, WorkloadAppend};
use crate::projection::Head;
use crate::runtime::{ContainerRuntime, ExitNotice, StartSpec};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub capacity: Resources,
    pub labels: BTreeMap<String, String>,
    pub heartbeat_ms: u64,
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
}

impl NodeCore {
    pub fn new(config: NodeConfig) -> Self {
        NodeCore {
            config,
            containers: HashMap::new(),
            by_replica: HashMap::new(),
            heads: HashMap::new(),
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
        let Some(hash) = parse_hash(&head.hash) else {
            return;
        };
        let h = Head {
            seq: head.seq,
            hash,
        };
        let e = self.heads.entry(workload.to_owned()).or_insert(h);
        if h.seq > e.seq {
            *e = h;
        }
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

    fn stored(&mut self, outcomes: &[Outcome], appends: &[WorkloadAppend]) -> Vec<String> {
        let mut failures = Vec::new();
        for (o, a) in outcomes.iter().zip(appends) {
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
                Outcome::Conflict => failures.push(format!("{}: conflict", a.workload)),
                Outcome::Failed(e) => failures.push(format!("{}: {e}", a.workload)),
            }
        }
        failures
    }

    pub fn heartbeat(
        &self,
        runtime: &str,
        classes: Vec<bulkhead_schemas::RuntimeClass>,
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

pub enum NodeMsg {
    /// Operations from the node's ops subject; the reply says when they are done and logged.
    Ops(Vec<NodeOp>, RpcReplyPort<Result<(), String>>),
    Exit(ExitNotice),
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
        let every = std::time::Duration::from_millis(args.config.heartbeat_ms.max(10));
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
        _me: ActorRef<NodeMsg>,
        msg: NodeMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Ops(ops, reply) => {
                let r = handle_ops(st, ops).await;
                let _ = reply.send(r);
            }
            NodeMsg::Exit(notice) => {
                let Some(c) = st.core.forget(&notice.container) else {
                    return Ok(());
                };
                let node = st.core.config.name.clone();
                let body = EventBody::Exited(Exited {
                    replica: c.replica,
                    node,
                    code: notice.code,
                    reason: notice.reason,
                    finished_at: notice.finished_at,
                });
                let ev = Event::new(&st.core.service(), &c.workload, None, body);
                let appends = st.core.appends(vec![(c.workload, ev)]);
                let out = st.log.append(appends.clone()).await;
                for f in st.core.stored(&out, &appends) {
                    warn!(failure = %f, "could not log exit");
                }
            }
            NodeMsg::Heartbeat => {
                let hb = st
                    .core
                    .heartbeat(st.runtime.kind(), st.runtime.runtime_classes());
                if let Err(e) = st.sink.beat(hb).await {
                    warn!(error = %e, "heartbeat failed");
                }
            }
        }
        Ok(())
    }
}

async fn handle_ops<R: ContainerRuntime, L: EventLog, H: HeartbeatSink>(
    st: &mut NodeState<R, L, H>,
    ops: Vec<NodeOp>,
) -> Result<(), String> {
    let node = st.core.config.name.clone();
    let service = st.core.service();
    let mut starts = Vec::new();
    let mut events: Vec<(String, Event)> = Vec::new();
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
                if st.core.container_of(&workload, replica).is_some() {
                    continue; // already running: a redelivered op
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
                starts.push(async move {
                    (
                        workload,
                        replica,
                        need,
                        traceparent,
                        rt.start(req).instrument(span).await,
                    )
                });
            }
            NodeOp::Stop {
                workload,
                replica,
                head,
                ..
            } => {
                st.core.learn(&workload, &head);
                let Some(container) = st.core.container_of(&workload, replica).map(str::to_owned)
                else {
                    continue;
                };
                if let Err(e) = st.runtime.stop(&container).await {
                    warn!(%workload, replica, error = %e, "stop failed");
                    continue;
                }
                st.core.forget(&container);
                let ev = Event::new(
                    &service,
                    &workload,
                    None,
                    EventBody::Stopped(Stopped {
                        replica,
                        node: node.clone(),
                    }),
                );
                events.push((workload, ev));
            }
        }
    }
    for (workload, replica, need, traceparent, result) in join_all(starts).await {
        let body = match result {
            Ok(container) => {
                st.core.record(container.clone(), &workload, replica, need);
                EventBody::Started(Started {
                    replica,
                    node: node.clone(),
                    container,
                })
            }
            Err(e) => EventBody::Exited(Exited {
                replica,
                node: node.clone(),
                code: -1,
                reason: e.to_string(),
                finished_at: bulkhead_schemas::now_rfc3339(),
            }),
        };
        let mut ev = Event::new(&service, &workload, None, body);
        ev.traceparent = traceparent;
        events.push((workload, ev));
    }
    if events.is_empty() {
        return Ok(());
    }
    let appends = st.core.appends(events);
    let out = st.log.append(appends.clone()).await;
    let failures = st.core.stored(&out, &appends);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
