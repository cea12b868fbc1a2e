//! The failover actor: keeps a projection of the log, decides restarts for replicas that
//! ended (see [`crate::failover`]), and declares nodes lost when their heartbeats stop.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bulkhead_schemas::event::{Event, EventBody, Lost, NodeEvent};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{info, info_span, warn};

use crate::clock::Clock;
use crate::failover::{self, decide};
use crate::liveness::{Ear, NodeWatch, Silence};
use crate::ports::log::{Batch, EventLog, LogError, Stored, WorkloadAppend};
use crate::projection::{Projection, Workload};

pub enum FailoverMsg {
    /// Events read from the log, in stream order.
    Logged(Batch),
    /// A heartbeat of this node arrived, with the interval it beats at (ms).
    Beat {
        node: String,
        interval_ms: u64,
        /// When it arrived (Unix ms), stamped by whoever read it.
        at_ms: u64,
    },
    /// Check for silent nodes and retry what did not land.
    Tick(u64),
    /// The failover's own connection to NATS, or its watch of the heartbeats, went down
    /// (false) or came back (true), at `at_ms`: while either is down it hears no heartbeat,
    /// so it declares no node lost.
    Hearing { ear: Ear, up: bool, at_ms: u64 },
    /// Decisions taken (restarts requested, replicas given up) and nodes declared lost.
    Stats(RpcReplyPort<FailoverStats>),
    /// Every workload as the projection holds it now: a snapshot's (sent right after the
    /// batch that ends at its checkpoint).
    Snapshot(RpcReplyPort<crate::projection::Workloads>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailoverStats {
    pub restarts: u64,
    pub gave_up: u64,
    pub nodes_lost: u64,
    /// Nodes past their lost timeout but not declared lost, at the last tick: most of the
    /// cluster fell silent at once ([`Silence`]).
    pub held: u64,
    pub conflicts: u64,
    /// Events the failover's projection would not apply.
    pub set_aside: u64,
}

pub struct FailoverArgs<L> {
    /// The projection rebuilt from the log before the actor starts.
    pub projection: Projection,
    pub log: L,
    /// A node silent this long is lost.
    pub lost_timeout: Duration,
    pub tick: Duration,
    pub clock: Clock,
    /// Each node's heartbeat interval as its latest heartbeat says, read at start: the
    /// heartbeat watch brings only beats to come, and a node known from the log but not
    /// heard yet would otherwise have the lost timeout as its limit.
    pub intervals: HashMap<String, u64>,
}

pub struct FailoverState<L> {
    pub projection: Projection,
    log: L,
    clock: Clock,
    watch: NodeWatch,
    lost_timeout_ms: u64,
    /// How often it ticks (a tick far later than this: it was not run meanwhile).
    tick_ms: u64,
    /// Workloads whose decision did not land (the log moved or the append failed).
    retry: BTreeSet<String>,
    /// Workloads the log changed since the last sweep for replicas on lost nodes.
    unswept: BTreeSet<String>,
    stats: FailoverStats,
}

pub struct FailoverActor<L>(std::marker::PhantomData<L>);

impl<L> Default for FailoverActor<L> {
    fn default() -> Self {
        FailoverActor(std::marker::PhantomData)
    }
}

impl<L: EventLog> FailoverState<L> {
    /// Node events from the log: a node that joins is watched from then, heartbeat or not
    /// (one that dies before its first beat reaches this failover is still lost).
    fn members(&mut self, nodes: &[Stored]) {
        let now = self.clock.now_ms();
        for s in nodes {
            self.projection.node_event(&s.event);
            match s.event.body.node_event() {
                Some(NodeEvent::Joined(_)) => self.watch.expect(&s.event.subject, now, None),
                Some(
                    NodeEvent::Lost(_)
                    | NodeEvent::Draining(_)
                    | NodeEvent::Drained(_)
                    | NodeEvent::Undrained(_),
                )
                | None => {}
            }
        }
    }

    /// Decides for these workloads and appends the decisions.
    async fn decide(&mut self, ids: impl IntoIterator<Item = String>) {
        let now = self.clock.now_ms();
        let appends: Vec<WorkloadAppend> = ids
            .into_iter()
            .filter_map(|id| {
                let w = self.projection.get(&id)?;
                decide::plan_workload(&id, w, now)
            })
            .collect();
        self.append(appends).await;
    }

    /// Appends, applies what was stored, and keeps what did not land for a retry.
    async fn append(&mut self, mut appends: Vec<WorkloadAppend>) {
        if appends.is_empty() {
            return;
        }
        for a in &mut appends {
            // One span per workload decision, in the workload's trace.
            let span = info_span!("failover", workload = %a.workload, events = a.events.len());
            crate::set_parent(
                &span,
                a.events.first().and_then(|e| e.traceparent.as_deref()),
            );
            let tp = crate::trace::traceparent(&span);
            for e in &mut a.events {
                if tp.is_some() {
                    e.traceparent = tp.clone();
                }
            }
        }
        let ids: Vec<String> = appends.iter().map(|a| a.workload.clone()).collect();
        let outcomes = self.log.append(appends).await;
        for (id, outcome) in ids.into_iter().zip(outcomes) {
            match outcome {
                Ok(stored) => {
                    for s in &stored {
                        match &s.event.body {
                            EventBody::ReplicaRequested(r) => {
                                info!(workload = %id, replica = r.replica, attempt = r.attempt,
                                    cause = %r.cause, not_before = %r.not_before, "replica requested");
                                self.stats.restarts += 1;
                            }
                            EventBody::GaveUp(g) => {
                                warn!(workload = %id, replica = g.replica, reason = %g.reason, "gave up");
                                self.stats.gave_up += 1;
                            }
                            _ => {}
                        }
                        self.projection.ingest(s);
                    }
                }
                Err(LogError::Conflict) => {
                    // The log moved under us: its events are on their way; decide again then.
                    self.stats.conflicts += 1;
                    self.retry.insert(id);
                }
                Err(e) => {
                    warn!(workload = %id, error = %e, "could not append a failover decision; will retry");
                    self.retry.insert(id);
                }
            }
        }
    }

    /// Declares silent nodes lost; re-checks nodes already lost for replicas placed there
    /// since (or whose loss did not land).
    async fn check_nodes(&mut self, now: u64) {
        let mut appends = Vec::new();
        let declared = self.watch.declare(now, self.lost_timeout_ms);
        self.stats.held = declared.held as u64;
        let changed =
            std::mem::discriminant(&declared.silence) != std::mem::discriminant(&declared.was);
        if changed {
            match declared.silence {
                Silence::Normal => info!(
                    "the mass silence is over: every node has a fresh interval, then silent nodes are lost again"
                ),
                Silence::Mass { quiet, watched } => warn!(
                    quiet,
                    watched,
                    "most of the cluster is silent at once: one node declared lost every {} ms",
                    crate::liveness::TRICKLE_MS
                ),
                Silence::Total { quiet } => warn!(
                    quiet,
                    "every node is silent at once: the fault is likelier ours or the server's; none is declared lost"
                ),
            }
        }
        for (node, silent_ms) in declared.lost {
            let reason = format!(
                "node {node} stopped heartbeating: silent for {silent_ms} ms (lost timeout {} ms)",
                self.lost_timeout_ms
            );
            warn!(%node, silent_ms, "node lost");
            self.stats.nodes_lost += 1;
            let ev = Event::new(
                failover::SERVICE,
                &node,
                None,
                EventBody::Lost(Lost {
                    replica: None,
                    node: node.clone(),
                    reason: reason.clone(),
                }),
            );
            if let Err(e) = self.log.publish_node(ev).await {
                warn!(%node, error = %e, "could not publish the node's loss");
            }
            appends.extend(decide::lose_node(&self.projection, &node, &reason, now));
        }
        self.append(appends).await;
    }

    /// Replicas on nodes already lost, placed there since the loss (or whose loss did not
    /// land): only workloads the log changed since the last sweep, or to retry, can hold
    /// one (a node's loss walks every workload once, when it is declared).
    async fn sweep_lost(&mut self) {
        let mut ids = std::mem::take(&mut self.unswept);
        let lost = self.watch.lost();
        if lost.is_empty() {
            return;
        }
        ids.extend(self.retry.iter().cloned());
        let now = self.clock.now_ms();
        let workloads: Vec<(&String, &Workload)> = ids
            .iter()
            .filter_map(|id| Some((id, self.projection.get(id)?)))
            .collect();
        let mut appends = Vec::new();
        for node in lost {
            let reason = format!("node {node} is lost (no heartbeat)");
            appends.extend(decide::lose_node_in(
                workloads.iter().copied(),
                &node,
                &reason,
                now,
            ));
        }
        self.append(appends).await;
    }
}

impl<L: EventLog> Actor for FailoverActor<L> {
    type Msg = FailoverMsg;
    type State = FailoverState<L>;
    type Arguments = FailoverArgs<L>;

    async fn pre_start(
        &self,
        myself: ActorRef<FailoverMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let clock = args.clock;
        myself.send_interval(args.tick, move || FailoverMsg::Tick(clock.now_ms()));
        let now = args.clock.now_ms();
        let mut watch = NodeWatch::default();
        // Nodes the log places work on, and the members it knows (an empty node too: its
        // loss is what tells it, and the listing, that it was lost), are watched from now,
        // heartbeat or not.
        let mut watched: BTreeSet<String> =
            decide::nodes_in_use(&args.projection).into_iter().collect();
        watched.extend(args.projection.members().map(str::to_owned));
        for node in watched {
            watch.expect(&node, now, args.intervals.get(&node).copied());
        }
        let mut st = FailoverState {
            projection: args.projection,
            log: args.log,
            clock: args.clock,
            watch,
            lost_timeout_ms: args.lost_timeout.as_millis() as u64,
            tick_ms: args.tick.as_millis() as u64,
            retry: BTreeSet::new(),
            unswept: BTreeSet::new(),
            stats: FailoverStats::default(),
        };
        // Exits that ended while no failover ran are decided now.
        let all: Vec<String> = st.projection.iter().map(|(id, _)| id.clone()).collect();
        st.decide(all).await;
        Ok(st)
    }

    async fn handle(
        &self,
        _me: ActorRef<FailoverMsg>,
        msg: FailoverMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FailoverMsg::Logged(batch) => {
                st.members(&batch.nodes);
                let mut touched = BTreeSet::new();
                for s in &batch.events {
                    if st.projection.ingest(s).is_some() {
                        touched.insert(s.event.subject.clone());
                    }
                }
                st.projection.note_set_aside(batch.set_aside);
                st.unswept.extend(touched.iter().cloned());
                touched.extend(std::mem::take(&mut st.retry));
                st.decide(touched).await;
            }
            FailoverMsg::Beat {
                node,
                interval_ms,
                at_ms,
            } => {
                if st.watch.beat(&node, at_ms, interval_ms) {
                    info!(%node, "lost node heartbeats again");
                }
            }
            FailoverMsg::Hearing {
                ear,
                up: false,
                at_ms,
            } => {
                warn!(
                    ?ear,
                    "deaf to heartbeats: no node is declared lost until it hears again"
                );
                st.watch.blind(ear, at_ms);
            }
            FailoverMsg::Hearing {
                ear,
                up: true,
                at_ms,
            } => {
                info!(
                    ?ear,
                    "hears heartbeats again: every node gets a fresh interval (once until it beats)"
                );
                st.watch.hears_again(ear, at_ms);
            }
            FailoverMsg::Tick(fired_ms) => {
                if let Some(late_ms) = st.watch.tick(fired_ms, st.tick_ms) {
                    warn!(
                        late_ms,
                        "this failover was not run for a while (its tick came late): that time is no node's silence"
                    );
                }
                // Silence as of when the tick fired (beats that came before are handled).
                st.check_nodes(fired_ms).await;
                st.sweep_lost().await;
                if !st.retry.is_empty() {
                    let retry = std::mem::take(&mut st.retry);
                    st.decide(retry).await;
                }
            }
            FailoverMsg::Snapshot(reply) => {
                let _ = reply.send(st.projection.shared());
            }
            FailoverMsg::Stats(reply) => {
                let stats = FailoverStats {
                    set_aside: st.projection.set_aside.total(),
                    ..st.stats.clone()
                };
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }
}
