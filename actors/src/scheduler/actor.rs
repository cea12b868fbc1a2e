//! The scheduler actor: feeds commands, log events, heartbeats and ticks to the
//! [`SchedulerCore`] and carries out its plans through the event log and the ops sink.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_schemas::{NodeHeartbeat, NodeOp};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info, warn};

use crate::aside::Aside;
use crate::clock::Clock;
use crate::liveness::Ear;
use crate::ports::log::{Batch, EventLog};
use crate::ports::ops::OpsSink;
use crate::scheduler::outbox::{NodeOps, Outbox};
use crate::scheduler::{Command, Disposition, Plan, SchedulerCore};

pub enum SchedulerMsg {
    Commands(Vec<Command>, RpcReplyPort<Vec<(u64, Disposition)>>),
    /// What the log brought (any writer's, verified): workload and node events, scan
    /// verdicts, enrolments, and what was set aside.
    Logged(Batch),
    /// A heartbeat, and when it arrived (Unix ms, stamped by whoever read it: a busy
    /// actor does not make nodes look silent).
    Heartbeat(NodeHeartbeat, u64),
    NodeGone(String),
    /// A command (or anything else) the service would not hand over: counted, listed.
    SetAside(Aside),
    /// The service's connection to NATS, or its watch of the heartbeats, went down (`up:
    /// false`: no heartbeat can come, so no node's silence counts) or came back at `at_ms`
    /// (once both are up, every node gets a fresh interval).
    Hearing {
        ear: Ear,
        up: bool,
        at_ms: u64,
    },
    /// Retry pending placements, move drained replicas, notice silent nodes.
    Tick(u64),
    /// A backoff ended: place what is due.
    Due,
    /// How many scan workers are alive (counted by the service every few seconds); gated
    /// workloads waiting in vain are told so.
    Scanners(usize),
    /// Carry out what the verdicts known at start mean (sent to itself once, at start).
    Settle,
    Stats(RpcReplyPort<SchedulerStats>),
    /// Every workload as the core holds it now: a snapshot's (sent right after the batch
    /// that ends at its checkpoint).
    Snapshot(RpcReplyPort<crate::projection::Workloads>),
    /// Ops the outbox could not send: starts and stops are sent again on the next tick, a
    /// node's view is due again, a pace is told again if the node goes on beating faster.
    Unsent(NodeOps),
}

/// What the scheduler holds, for tests and load tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Workloads in the projection.
    pub workloads: usize,
    /// Workloads waiting for capacity (or a backoff).
    pub pending: usize,
    /// Events the scheduler would not apply.
    pub set_aside: u64,
    /// Its own events its reader of the log passed by unparsed.
    pub own_passed: u64,
}

pub struct SchedulerArgs<L, O> {
    /// The projection rebuilt from the log before the actor starts.
    pub core: SchedulerCore,
    pub log: L,
    pub ops: O,
    pub tick: Duration,
    pub clock: Clock,
}

pub struct SchedulerState<L, O> {
    pub core: SchedulerCore,
    log: L,
    /// Scan jobs go here; node ops through the outbox.
    ops: O,
    outbox: Outbox,
    clock: Clock,
    /// How often it ticks (a tick far later than this: it was not run meanwhile).
    tick_ms: u64,
    /// Ops that could not be sent, sent again on every tick until they are: a stop, a
    /// quarantine or a drain's stop must not silently not happen (a start sent twice is
    /// harmless: a node starts a replica once per head).
    unsent: BTreeMap<Arc<str>, Vec<NodeOp>>,
}

/// Unsent ops kept at most (past it the oldest node's are dropped, with a warning).
const MAX_UNSENT: usize = 100_000;

pub struct SchedulerActor<L, O>(std::marker::PhantomData<(L, O)>);

impl<L, O> Default for SchedulerActor<L, O> {
    fn default() -> Self {
        SchedulerActor(std::marker::PhantomData)
    }
}

impl<L: EventLog, O: OpsSink> SchedulerState<L, O> {
    async fn execute(&mut self, mut plan: Plan) -> Vec<(u64, Disposition)> {
        for note in &plan.notes {
            info!("{note}");
        }
        let mut unpublished = Vec::new();
        for (cmd, ev) in std::mem::take(&mut plan.node_events) {
            if let Err(e) = self.log.publish_node(ev).await {
                warn!(error = %e, "could not publish a node event; the command will be retried");
                unpublished.extend(cmd);
            }
        }
        let mut dispositions = self.commit_plan(plan).await;
        for (seq, d) in &mut dispositions {
            if unpublished.contains(seq) {
                *d = Disposition::Retry("a node event could not be published".into());
            }
        }
        dispositions
    }

    async fn commit_plan(&mut self, plan: Plan) -> Vec<(u64, Disposition)> {
        let appends = plan.appends.clone();
        if appends.is_empty() {
            return self.core.commit(plan, Vec::new()).commands;
        }
        let outcomes = self.log.append(appends).await;
        let commit = self.core.commit(plan, outcomes);
        for (workload, e) in &commit.failures {
            warn!(%workload, error = %e, "append failed; the command will be retried");
        }
        if !commit.scan_jobs.is_empty() {
            for (job, err) in self.ops.queue_scans(commit.scan_jobs).await {
                // `scan_requested` is in the log: the job is queued again at takeover.
                warn!(%job, error = %err, "could not queue a scan");
            }
        }
        self.outbox.send(commit.ops);
        debug!(placed = commit.placed, "round committed");
        commit.commands
    }

    /// Keeps what the outbox could not send: starts and stops to send again on the next
    /// tick, views due again; a pace is not kept (the node is told again if it goes on
    /// beating faster than the pace).
    fn unsent(&mut self, ops: NodeOps) {
        for (node, ops) in ops {
            for op in ops {
                match op {
                    NodeOp::Sync { view } => self.core.sync_failed(&node, view.reason),
                    NodeOp::Pace { .. } => {}
                    op @ (NodeOp::Start { .. } | NodeOp::Stop { .. }) => {
                        self.unsent.entry(node.clone()).or_default().push(op);
                    }
                }
            }
        }
        let mut total: usize = self.unsent.values().map(Vec::len).sum();
        while total > MAX_UNSENT {
            let Some((node, dropped)) = self.unsent.pop_first() else {
                break;
            };
            warn!(%node, dropped = dropped.len(), "too many unsent ops: dropping a node's");
            total -= dropped.len();
        }
    }

    /// Places what is due (new work, ended backoffs, changed nodes), moves drained
    /// replicas, stops replaced copies; wakes itself for the next backoff to end.
    async fn progress(&mut self, me: &ActorRef<SchedulerMsg>) {
        let now = self.clock.now_ms();
        let plan = self.core.place_pending(5_000, now);
        if !plan.is_empty() {
            self.execute(plan).await;
        }
        let plan = self.core.drain_step();
        if !plan.is_empty() {
            self.execute(plan).await;
        }
        self.outbox.send(self.core.take_replaced());
        self.outbox.send(std::mem::take(&mut self.unsent));
        self.outbox.send(self.core.take_syncs());
        if let Some(due) = self.core.next_due_ms() {
            let wait = Duration::from_millis(due.saturating_sub(self.clock.now_ms()));
            me.send_after(wait, || SchedulerMsg::Due);
        }
    }
}

impl<L: EventLog, O: OpsSink> Actor for SchedulerActor<L, O> {
    type Msg = SchedulerMsg;
    type State = SchedulerState<L, O>;
    type Arguments = SchedulerArgs<L, O>;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let clock = args.clock;
        let back = myself.clone();
        let outbox = Outbox::start(args.ops.clone(), move |ops| {
            let _ = back.send_message(SchedulerMsg::Unsent(ops));
        });
        myself.send_interval(args.tick, move || SchedulerMsg::Tick(clock.now_ms()));
        let _ = myself.send_message(SchedulerMsg::Settle);
        Ok(SchedulerState {
            core: args.core,
            log: args.log,
            ops: args.ops,
            outbox,
            clock: args.clock,
            tick_ms: args.tick.as_millis() as u64,
            unsent: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Commands(cmds, reply) => {
                let plan = st.core.decide(&cmds);
                let dispositions = st.execute(plan).await;
                let _ = reply.send(dispositions);
            }
            SchedulerMsg::Logged(batch) => {
                for plan in st.core.logged(batch) {
                    st.execute(plan).await;
                }
                let owed = st.core.take_owed();
                if !owed.is_empty() {
                    let replicas: usize = owed.values().map(Vec::len).sum();
                    warn!(
                        replicas,
                        "the log holds replicas scheduled by an append whose outcome this scheduler did not get; sending their start ops"
                    );
                    st.outbox.send(owed);
                }
                // Restarts and scale-ups are placed at once, not on the next tick.
                if st.core.placement_due(st.clock.now_ms()) || st.core.has_replaced() {
                    st.progress(&me).await;
                }
                st.outbox.send(st.core.take_syncs());
            }
            SchedulerMsg::Heartbeat(hb, arrived_ms) => match st.core.heartbeat(&hb, arrived_ms) {
                Ok(back) => {
                    st.core.pace(&hb, arrived_ms);
                    if back {
                        info!("node {} heartbeats: it takes placements", hb.name);
                        // What waited for a node is placed now, not on the next tick.
                        if st.core.placement_due(st.clock.now_ms()) {
                            st.progress(&me).await;
                        }
                    }
                }
                Err(refused) => st.core.projection.set_aside.record(refused),
            },
            SchedulerMsg::SetAside(a) => st.core.projection.set_aside.record(a),
            SchedulerMsg::NodeGone(name) => st.core.node_gone(&name),
            SchedulerMsg::Hearing {
                ear,
                up: false,
                at_ms,
            } => {
                warn!(
                    ?ear,
                    "deaf to heartbeats: no node's silence counts until it hears again"
                );
                st.core.watch.blind(ear, at_ms);
            }
            SchedulerMsg::Hearing {
                ear,
                up: true,
                at_ms,
            } => {
                info!(
                    ?ear,
                    "hears heartbeats again: every node gets a fresh interval (once until it beats)"
                );
                st.core.watch.hears_again(ear, at_ms);
            }
            SchedulerMsg::Tick(fired_ms) => {
                if let Some(late_ms) = st.core.watch.tick(fired_ms, st.tick_ms) {
                    warn!(
                        late_ms,
                        "this scheduler was not run for a while (its tick came late): that time is no node's silence"
                    );
                }
                // Silence as of when the tick fired: heartbeats that arrived before it are
                // ahead of it in the mailbox, however long the actor was busy.
                for node in st.core.check_silent(fired_ms) {
                    warn!(%node, "node stopped heartbeating; no more placements there");
                }
                if st.core.take_resettle() {
                    for plan in st.core.settle_known() {
                        st.execute(plan).await;
                    }
                }
                st.progress(&me).await;
                st.outbox.send(st.core.take_paces());
            }
            // Each count (every few seconds, not every tick: the look goes over every
            // workload) tells the gated ones that wait in vain.
            SchedulerMsg::Scanners(live) => {
                st.core.scanners(live);
                let stalled = st.core.stalled_scans(st.clock.now_ms());
                if !stalled.is_empty() {
                    st.execute(stalled).await;
                }
            }
            SchedulerMsg::Settle => {
                for plan in st.core.settle_known() {
                    st.execute(plan).await;
                }
                // Whatever the previous scheduler sent or not, every node gets its view.
                st.core.sync_all();
                st.core.owe_from_now();
                st.outbox.send(st.core.take_syncs());
            }
            SchedulerMsg::Due => {
                if st.core.placement_due(st.clock.now_ms()) {
                    st.progress(&me).await;
                }
            }
            SchedulerMsg::Unsent(ops) => st.unsent(ops),
            SchedulerMsg::Snapshot(reply) => {
                let _ = reply.send(st.core.projection.shared());
            }
            SchedulerMsg::Stats(reply) => {
                let _ = reply.send(SchedulerStats {
                    workloads: st.core.projection.len(),
                    pending: st.core.pending_count(),
                    set_aside: st.core.projection.set_aside.total(),
                    own_passed: st.core.own_passed,
                });
            }
        }
        Ok(())
    }
}
