//! The scheduler: a pure core that admits commands and places replicas, turning them
//! into per-workload appends and node operations, and the ractor actor that drives it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::command::{DrainCommand, ScaleCommand, StopCommand};
use bulkhead_schemas::event::{
    Accepted, Event, EventBody, NodeDrained, NodeDraining, NodeUndrained, QuarantineAction,
    Quarantined, Rejected, Scaled, ScanCompleted, ScanRequested, Scheduled, StopRequested,
};
use bulkhead_schemas::scan::ScanJob;
use bulkhead_schemas::spec::{RejectCode, Rejection, parse_submission};
use bulkhead_schemas::{ChainHead, NodeHeartbeat, NodeOp, Resources, WorkloadSpec, ids, subjects};

use crate::log::{Outcome, Stored, WorkloadAppend};
use crate::placement::{Cluster, Overlay, Request};
use crate::projection::{Change, Projection};
use crate::scan_policy::{ScanMode, ScanPolicy};

/// The name the scheduler signs its events with.
pub const SERVICE: &str = "scheduler";

/// A command read from `BULKHEAD_CMD`.
#[derive(Clone, Debug)]
pub struct Command {
    pub cmd_seq: u64,
    /// Stream timestamp of the command, Unix milliseconds.
    pub stored_ms: u64,
    pub kind: CommandKind,
    pub payload: Vec<u8>,
    /// W3C trace context of the span handling this command.
    pub traceparent: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Submit,
    Stop,
    Scale,
    Drain,
    Undrain,
}

impl CommandKind {
    /// The kind of a command by its subject.
    pub fn of_subject(subject: &str) -> Option<CommandKind> {
        match subject {
            subjects::CMD_SUBMIT => Some(CommandKind::Submit),
            subjects::CMD_STOP => Some(CommandKind::Stop),
            subjects::CMD_SCALE => Some(CommandKind::Scale),
            subjects::CMD_DRAIN => Some(CommandKind::Drain),
            subjects::CMD_UNDRAIN => Some(CommandKind::Undrain),
            _ => None,
        }
    }
}

/// What to do with a command message once its plan is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Redeliver later (the log moved under us, or the append failed).
    Retry,
}

/// The decisions of one round, before anything was written.
#[derive(Debug, Default)]
pub struct Plan {
    pub appends: Vec<WorkloadAppend>,
    /// For each append: which replicas start where, and whether it stops the workload.
    effects: Vec<Effect>,
    /// For each command: the append it rides on (None: settled without writing).
    commands: Vec<(u64, Option<usize>)>,
    /// Things worth a log line (unknown stop target, duplicates).
    pub notes: Vec<String>,
    /// Node events to publish before the appends, with the command each settles (if any).
    pub node_events: Vec<(Option<u64>, Event)>,
}

#[derive(Debug, Default)]
struct Effect {
    starts: Vec<(u32, Arc<str>)>,
    stop: bool,
    /// Replicas to stop (scaled away), wherever they hold a node.
    stop_replicas: Vec<u32>,
    grace_secs: Option<u32>,
    traceparent: Option<String>,
    new_pending: bool,
    /// A scan to queue once the append is stored.
    scan_job: Option<ScanJob>,
}

/// What committing a plan leaves to do.
#[derive(Debug, Default)]
pub struct Commit {
    pub ops: BTreeMap<Arc<str>, Vec<NodeOp>>,
    pub commands: Vec<(u64, Disposition)>,
    pub placed: usize,
    pub failures: Vec<String>,
    /// Scan jobs to queue (`bulkhead.scan.jobs`, deduplicated by job id).
    pub scan_jobs: Vec<ScanJob>,
}

/// The scheduler's state: projection, cluster and the queue of workloads awaiting capacity.
#[derive(Default, Debug)]
pub struct SchedulerCore {
    pub projection: Projection,
    pub cluster: Cluster,
    pending: VecDeque<String>,
    /// Cluster generation at the last full pending pass; retry only when it changed.
    pending_pass_gen: u64,
    generation: u64,
    pub policy: ScanPolicy,
    /// The latest scan outcome per image reference, with its time (Unix ms); it answers
    /// for the image for the policy's `verdict_ttl_ms`.
    verdicts: HashMap<String, (ScanCompleted, u64)>,
    /// The earliest time (Unix ms) a backed-off replica may be placed.
    next_due_ms: Option<u64>,
    /// Stop ops for copies a drain replaced, once their successor started.
    replaced: BTreeMap<Arc<str>, Vec<NodeOp>>,
    /// Drained nodes whose `drained` event was published.
    drained: BTreeSet<String>,
}

/// A `rejected` for an image whose verdict fails the scan policy.
fn vulnerable(image: &str, why: &str, cmd_seq: u64) -> EventBody {
    EventBody::Rejected(Rejected {
        rejection: Rejection {
            code: RejectCode::Vulnerable,
            field: Some("image".into()),
            reason: format!("image {image}: {why}"),
        },
        cmd_seq,
    })
}

/// The scan job of a workload: one per admission, named so that requeueing it is idempotent.
fn scan_job(workload: &str, cmd_seq: u64, image: &str) -> ScanJob {
    ScanJob {
        id: format!("{workload}-{cmd_seq}"),
        image: image.to_owned(),
    }
}

impl SchedulerCore {
    /// Applies a stored event (own append or from the log) and its allocation changes.
    pub fn apply(&mut self, stored: &Stored) {
        if let Ok(changes) = self
            .projection
            .apply(stored.seq, stored.hash, &stored.event)
        {
            for c in changes {
                match c {
                    Change::Placed { node, need } => self.cluster.allocate(&node, &need),
                    Change::Released { node, need } => {
                        self.cluster.release(&node, &need);
                        self.generation += 1;
                    }
                }
            }
            let id = &stored.event.subject;
            match &stored.event.body {
                // New work; a stopped copy that a quarantine moves (placed again in
                // its new class) is new work too.
                EventBody::Accepted(_)
                | EventBody::ReplicaRequested(_)
                | EventBody::Scaled(_)
                | EventBody::Stopped(_)
                | EventBody::Quarantined(_) => {
                    if !matches!(stored.event.body, EventBody::Accepted(_)) {
                        // New work: worth a placement pass even if no node changed.
                        self.generation += 1;
                    }
                    if self
                        .projection
                        .get(id)
                        .is_some_and(|w| w.pending_replicas().next().is_some())
                        && !self.pending.contains(id)
                    {
                        self.pending.push_back(id.clone());
                    }
                }
                EventBody::Started(st) => self.stop_replaced(id, st.replica),
                _ => {}
            }
        }
    }

    /// The successor of a drained replica runs: stop the copy it replaces.
    fn stop_replaced(&mut self, id: &str, replica: u32) {
        let Some(w) = self.projection.get(id) else {
            return;
        };
        let Some(r) = w.replicas.get(replica as usize) else {
            return;
        };
        if let (Some(old), WorkloadState::Running) = (&r.replacing, r.state) {
            self.replaced
                .entry(old.clone())
                .or_default()
                .push(NodeOp::Stop {
                    workload: id.to_owned(),
                    replica,
                    head: chain_head(w),
                    grace_secs: None,
                    traceparent: w.traceparent.as_deref().map(str::to_owned),
                });
        }
    }

    pub fn has_replaced(&self) -> bool {
        !self.replaced.is_empty()
    }

    /// Stop ops for copies whose replacements now run (taken once).
    pub fn take_replaced(&mut self) -> BTreeMap<Arc<str>, Vec<NodeOp>> {
        std::mem::take(&mut self.replaced)
    }

    /// An event about a node, from the log: a drain cordons it (through restarts of the
    /// node) until an undrain, a loss takes it out of placement until it heartbeats again.
    pub fn node_event(&mut self, ev: &Event) {
        let node = ev.subject.as_str();
        match &ev.body {
            EventBody::Draining(_) => {
                self.cluster.slot_mut(node).1.cordoned = true;
                self.drained.remove(node);
                self.generation += 1;
            }
            EventBody::Undrained(_) => {
                self.cluster.slot_mut(node).1.cordoned = false;
                self.drained.remove(node);
                self.generation += 1;
            }
            EventBody::Drained(_) => {
                self.drained.insert(node.to_owned());
            }
            EventBody::Lost(_) => self.node_gone(node),
            _ => {}
        }
    }

    /// A heartbeat: the node is ready with this capacity.
    pub fn heartbeat(&mut self, hb: &NodeHeartbeat) {
        let (_, slot) = self.cluster.slot_mut(&hb.name);
        let changed = !slot.ready
            || slot.capacity != hb.capacity
            || slot.classes != hb.runtime_classes
            || slot.labels != hb.labels;
        slot.capacity = hb.capacity;
        slot.classes = hb.runtime_classes.clone();
        slot.labels = hb.labels.clone();
        slot.ready = true;
        if changed {
            self.generation += 1;
        }
    }

    /// The node stopped heartbeating: place nothing more there.
    pub fn node_gone(&mut self, name: &str) {
        if self.cluster.get(name).is_some_and(|n| n.ready) {
            self.cluster.slot_mut(name).1.ready = false;
        }
    }

    /// Whether work waits for a backoff to pass or a node to change.
    pub fn placement_due(&self, now_ms: u64) -> bool {
        !self.pending.is_empty()
            && (self.pending_pass_gen != self.generation
                || self.next_due_ms.is_some_and(|t| t <= now_ms))
    }

    /// When the next backed-off replica may be placed (Unix ms).
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_due_ms
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The verdict of `image` that still answers for it at `at_ms`: a tag can be pushed
    /// again with a fix, and the advisory database changes, so an older one is scanned anew.
    fn fresh_verdict(&self, image: &str, at_ms: u64) -> Option<&ScanCompleted> {
        self.verdicts
            .get(image)
            .filter(|(_, done)| self.policy.fresh(*done, at_ms))
            .map(|(c, _)| c)
    }

    /// Why the known verdict of `spec`'s image fails its trust level's scan policy.
    fn verdict_fails(&self, spec: &WorkloadSpec, now_ms: u64) -> Option<String> {
        let mode = self.policy.mode(spec.trust);
        if mode == ScanMode::Off {
            return None;
        }
        let c = self.fresh_verdict(&spec.image, now_ms)?;
        self.policy
            .judge(mode, c.verdict.as_ref(), c.error.as_deref())
    }

    /// A scan finished: record it, and decide for every workload waiting on that image.
    /// `gate`: place it (the verdict passes) or reject it; `async`: keep it, or
    /// quarantine it by stopping it.
    /// `done_ms`: when the scan finished. It settles only workloads that asked for a scan
    /// within the verdict's lifetime (an old verdict replayed from the log does not settle a
    /// workload that asked for a new scan).
    pub fn scan_completed(&mut self, c: ScanCompleted, done_ms: u64) -> Plan {
        let mut plan = Plan::default();
        let record = ScanCompleted {
            layers: Vec::new(),
            ..c.clone()
        };
        if self
            .verdicts
            .get(&c.image)
            .is_none_or(|(_, at)| *at <= done_ms)
        {
            self.verdicts.insert(c.image.clone(), (c, done_ms));
        }
        let judge = |mode| {
            self.policy
                .judge(mode, record.verdict.as_ref(), record.error.as_deref())
        };
        let (fails_gate, fails_async) = (judge(ScanMode::Gate), judge(ScanMode::Async));
        for (id, w) in self.projection.iter() {
            let Some(spec) = w.spec.as_deref() else {
                continue;
            };
            if spec.image != record.image
                || !w.wants_verdict()
                || w.state().is_terminal()
                || !self.policy.fresh(done_ms, w.scan_requested_ms)
            {
                continue;
            }
            let mut events =
                vec![self.plain_event(id, EventBody::ScanCompleted(record.clone()), w)];
            let mut effect = Effect {
                traceparent: w.traceparent.as_deref().map(str::to_owned),
                ..Effect::default()
            };
            let fails = if w.scan_gate == Some(true) {
                &fails_gate
            } else {
                &fails_async
            };
            match (fails, w.scan_gate) {
                (None, _) => effect.new_pending = w.scan_gate == Some(true),
                (Some(why), Some(true)) => {
                    events.push(self.plain_event(id, vulnerable(&record.image, why, w.cmd_seq), w))
                }
                (Some(why), _) => {
                    let from = spec.runtime_class;
                    let (action, to) = self.policy.quarantine(from);
                    plan.notes
                        .push(format!("quarantining {id} ({}): {why}", action.as_str()));
                    events.push(self.plain_event(
                        id,
                        EventBody::Quarantined(Quarantined {
                            action,
                            from,
                            to,
                            reason: why.clone(),
                        }),
                        w,
                    ));
                    match action {
                        QuarantineAction::Stop => {
                            events.push(self.plain_event(
                                id,
                                EventBody::StopRequested(StopRequested {
                                    cmd_seq: 0,
                                    grace_secs: None,
                                }),
                                w,
                            ));
                            effect.stop = true;
                        }
                        // Every copy stops; the projection makes each pending again, in
                        // the new class, as its `stopped` comes in.
                        QuarantineAction::Move => effect.stop = true,
                        QuarantineAction::Contained => {}
                    }
                }
            }
            plan.appends.push(WorkloadAppend {
                workload: id.clone(),
                head: Some(w.head),
                events,
                rechain_on_conflict: false,
            });
            plan.effects.push(effect);
        }
        plan
    }

    /// A verdict finished just now (tests).
    #[cfg(test)]
    fn scan_completed_now(&mut self, c: ScanCompleted) -> Plan {
        self.scan_completed(c, bulkhead_schemas::now_ms())
    }

    /// Scan jobs for workloads still waiting for a verdict (a scheduler that died after
    /// `scan_requested` but before queueing the job): queued again, idempotently.
    pub fn unqueued_scans(&self) -> Vec<ScanJob> {
        self.projection
            .iter()
            .filter(|(_, w)| w.wants_verdict() && !w.state().is_terminal())
            .filter_map(|(id, w)| {
                let spec = w.spec.as_deref()?;
                self.fresh_verdict(&spec.image, w.scan_requested_ms)
                    .is_none()
                    .then(|| scan_job(id, w.cmd_seq, &spec.image))
            })
            .collect()
    }

    fn plain_event(&self, id: &str, body: EventBody, w: &crate::projection::Workload) -> Event {
        let mut e = Event::new(SERVICE, id, None, body);
        e.traceparent = w.traceparent.as_deref().map(str::to_owned);
        e
    }

    /// Decides what a batch of commands does.
    pub fn decide(&mut self, commands: &[Command]) -> Plan {
        let mut plan = Plan::default();
        let mut overlay = Overlay::new();
        let mut in_plan: HashMap<String, u64> = HashMap::new();
        for cmd in commands {
            match cmd.kind {
                CommandKind::Submit => {
                    self.decide_submit(cmd, &mut plan, &mut overlay, &mut in_plan)
                }
                CommandKind::Stop => self.decide_stop(cmd, &mut plan, &in_plan),
                CommandKind::Scale => self.decide_scale(cmd, &mut plan, &mut overlay),
                CommandKind::Drain => self.decide_drain(cmd, &mut plan),
                CommandKind::Undrain => self.decide_undrain(cmd, &mut plan),
            }
        }
        plan
    }

    fn decide_submit(
        &self,
        cmd: &Command,
        plan: &mut Plan,
        overlay: &mut Overlay,
        in_plan: &mut HashMap<String, u64>,
    ) {
        let derived = || ids::derived_workload_id(cmd.cmd_seq, cmd.stored_ms);
        let parsed = parse_submission(&cmd.payload);
        let id = match &parsed {
            Ok(spec) => spec.id.clone().unwrap_or_else(derived),
            Err(_) => loose_id(&cmd.payload).unwrap_or_else(derived),
        };
        let existing = self
            .projection
            .get(&id)
            .map(|w| w.cmd_seq)
            .or_else(|| in_plan.get(&id).copied());
        let (id, outcome) = match existing {
            Some(seq) if seq == cmd.cmd_seq => {
                plan.commands.push((cmd.cmd_seq, None));
                return;
            }
            Some(_) => {
                let dup = derived();
                if self.projection.get(&dup).is_some() || in_plan.contains_key(&dup) {
                    plan.commands.push((cmd.cmd_seq, None));
                    return;
                }
                plan.notes.push(format!(
                    "submission {} reuses workload id {id}",
                    cmd.cmd_seq
                ));
                let reason = format!(
                    "workload id {id} already exists (submitted as command {})",
                    existing.unwrap_or(0)
                );
                (
                    dup,
                    Err(Rejection {
                        code: RejectCode::Duplicate,
                        field: Some("id".into()),
                        reason,
                    }),
                )
            }
            None => (id, parsed),
        };
        in_plan.insert(id.clone(), cmd.cmd_seq);
        let mut effect = Effect {
            traceparent: cmd.traceparent.clone(),
            ..Effect::default()
        };
        let mut events = Vec::new();
        let known_bad = match &outcome {
            Ok(spec) => self.verdict_fails(spec, cmd.stored_ms),
            Err(_) => None,
        };
        // `async` with a known bad verdict: admitted already quarantined when the policy
        // moves (or leaves) rather than stops; otherwise rejected.
        let quarantine = match (&outcome, &known_bad) {
            (Ok(spec), Some(why)) if self.policy.mode(spec.trust) == ScanMode::Async => {
                match self.policy.quarantine(spec.runtime_class) {
                    (QuarantineAction::Stop, _) => None,
                    (action, to) => Some(Quarantined {
                        action,
                        from: spec.runtime_class,
                        to,
                        reason: why.clone(),
                    }),
                }
            }
            _ => None,
        };
        match outcome {
            Err(rejection) => {
                events.push(self.event(
                    &id,
                    EventBody::Rejected(Rejected {
                        rejection,
                        cmd_seq: cmd.cmd_seq,
                    }),
                    cmd,
                ));
            }
            Ok(spec) if known_bad.is_some() && quarantine.is_none() => {
                // The image's verdict is already known and over the threshold.
                let why = known_bad.as_deref().unwrap_or_default();
                events.push(self.event(&id, vulnerable(&spec.image, why, cmd.cmd_seq), cmd));
            }
            Ok(mut spec) => {
                spec.id = Some(id.clone());
                let mode = self.policy.mode(spec.trust);
                let known = self.fresh_verdict(&spec.image, cmd.stored_ms).cloned();
                let gate = mode == ScanMode::Gate && known.is_none();
                let replicas: Vec<Want> = if gate {
                    Vec::new()
                } else {
                    (0..spec.replicas).map(Want::new).collect()
                };
                let mut placed_as = spec.clone();
                if let Some(to) = quarantine.as_ref().and_then(|q| q.to) {
                    placed_as.runtime_class = to;
                }
                let (scheduled, mut pending) =
                    self.place_replicas(&placed_as, &replicas, &[], overlay);
                if gate {
                    pending = Some(format!("waiting for the scan verdict of {}", spec.image));
                }
                effect.new_pending = pending.is_some() && !gate;
                let image = spec.image.clone();
                let accepted = Accepted {
                    spec,
                    cmd_seq: cmd.cmd_seq,
                    pending,
                };
                let class = placed_as.runtime_class;
                events.push(self.event(&id, EventBody::Accepted(accepted), cmd));
                if mode != ScanMode::Off {
                    match known {
                        // Known and within the threshold: recorded, nothing to wait for.
                        Some(c) => events.push(self.event(
                            &id,
                            EventBody::ScanCompleted(ScanCompleted {
                                layers: Vec::new(),
                                ..c
                            }),
                            cmd,
                        )),
                        None => {
                            let job = scan_job(&id, cmd.cmd_seq, &image);
                            events.push(self.event(
                                &id,
                                EventBody::ScanRequested(ScanRequested {
                                    image,
                                    job: job.id.clone(),
                                    gate,
                                }),
                                cmd,
                            ));
                            effect.scan_job = Some(job);
                        }
                    }
                }
                if let Some(q) = quarantine {
                    events.push(self.event(&id, EventBody::Quarantined(q), cmd));
                }
                for (replica, node) in scheduled {
                    events.push(self.event(
                        &id,
                        EventBody::Scheduled(Scheduled {
                            replica,
                            node: node.to_string(),
                            runtime_class: class,
                            replaces: None,
                        }),
                        cmd,
                    ));
                    effect.starts.push((replica, node));
                }
            }
        }
        plan.commands.push((cmd.cmd_seq, Some(plan.appends.len())));
        plan.appends.push(WorkloadAppend {
            workload: id,
            head: None,
            events,
            rechain_on_conflict: false,
        });
        plan.effects.push(effect);
    }

    fn decide_stop(&self, cmd: &Command, plan: &mut Plan, in_plan: &HashMap<String, u64>) {
        let stop: StopCommand = match serde_json::from_slice(&cmd.payload) {
            Ok(s) => s,
            Err(e) => {
                plan.notes.push(format!(
                    "stop command {} ignored: not {{\"id\": …}}: {e}",
                    cmd.cmd_seq
                ));
                plan.commands.push((cmd.cmd_seq, None));
                return;
            }
        };
        let Some(w) = self.projection.get(&stop.id) else {
            if in_plan.contains_key(&stop.id) {
                // Submitted in this very batch: stop it once the submission is in the log.
                plan.commands.push((cmd.cmd_seq, Some(usize::MAX)));
            } else {
                plan.notes.push(format!(
                    "stop command {} ignored: no workload {}",
                    cmd.cmd_seq, stop.id
                ));
                plan.commands.push((cmd.cmd_seq, None));
            }
            return;
        };
        if w.stop_requested || w.state().is_terminal() {
            plan.commands.push((cmd.cmd_seq, None));
            return;
        }
        let grace_secs = stop
            .grace_secs
            .map(|g| g.min(bulkhead_schemas::command::MAX_GRACE_SECS));
        let ev = self.event(
            &stop.id,
            EventBody::StopRequested(StopRequested {
                cmd_seq: cmd.cmd_seq,
                grace_secs,
            }),
            cmd,
        );
        plan.commands.push((cmd.cmd_seq, Some(plan.appends.len())));
        plan.appends.push(WorkloadAppend {
            workload: stop.id,
            head: Some(w.head),
            events: vec![ev],
            rechain_on_conflict: false,
        });
        plan.effects.push(Effect {
            stop: true,
            grace_secs,
            traceparent: cmd.traceparent.clone(),
            ..Effect::default()
        });
    }

    fn decide_scale(&self, cmd: &Command, plan: &mut Plan, overlay: &mut Overlay) {
        plan.commands.push((cmd.cmd_seq, None));
        let scale: ScaleCommand = match serde_json::from_slice(&cmd.payload) {
            Ok(s) => s,
            Err(e) => {
                plan.notes.push(format!(
                    "scale command {} ignored: not {{\"id\": …, \"replicas\": n}}: {e}",
                    cmd.cmd_seq
                ));
                return;
            }
        };
        let max = bulkhead_schemas::spec::MAX_REPLICAS;
        if scale.replicas > max {
            plan.notes.push(format!(
                "scale command {} ignored: replicas must be between 0 and {max}, got {}",
                cmd.cmd_seq, scale.replicas
            ));
            return;
        }
        let Some(w) = self.projection.get(&scale.id) else {
            plan.notes.push(format!(
                "scale command {} ignored: no workload {}",
                cmd.cmd_seq, scale.id
            ));
            return;
        };
        let Some(spec) = w.spec.as_deref() else {
            return;
        };
        if w.rejected || w.stop_requested || scale.replicas == w.desired {
            return;
        }
        let mut events = vec![self.event(
            &scale.id,
            EventBody::Scaled(Scaled {
                replicas: scale.replicas,
                cmd_seq: cmd.cmd_seq,
            }),
            cmd,
        )];
        let mut effect = Effect {
            traceparent: cmd.traceparent.clone(),
            ..Effect::default()
        };
        if scale.replicas > w.desired && !w.awaits_verdict() {
            let new: Vec<Want> = (w.desired..scale.replicas).map(Want::new).collect();
            let placed: Vec<Arc<str>> = w
                .counted()
                .filter(|r| r.holds())
                .filter_map(|r| r.node.clone())
                .collect();
            let (scheduled, pending) = self.place_replicas(spec, &new, &placed, overlay);
            effect.new_pending = pending.is_some();
            for (replica, node) in scheduled {
                events.push(self.event(
                    &scale.id,
                    EventBody::Scheduled(Scheduled {
                        replica,
                        node: node.to_string(),
                        runtime_class: spec.runtime_class,
                        replaces: None,
                    }),
                    cmd,
                ));
                effect.starts.push((replica, node));
            }
        } else {
            effect.stop_replicas = (scale.replicas..w.replicas.len() as u32).collect();
        }
        plan.commands.last_mut().expect("pushed above").1 = Some(plan.appends.len());
        plan.appends.push(WorkloadAppend {
            workload: scale.id,
            head: Some(w.head),
            events,
            rechain_on_conflict: false,
        });
        plan.effects.push(effect);
    }

    /// The node a drain or undrain command names, if it is one the scheduler knows.
    fn drain_target(&self, cmd: &Command, what: &str, plan: &mut Plan) -> Option<String> {
        plan.commands.push((cmd.cmd_seq, None));
        let drain: DrainCommand = match serde_json::from_slice(&cmd.payload) {
            Ok(d) => d,
            Err(e) => {
                plan.notes.push(format!(
                    "{what} command {} ignored: not {{\"node\": …}}: {e}",
                    cmd.cmd_seq
                ));
                return None;
            }
        };
        if self.cluster.get(&drain.node).is_none() {
            plan.notes.push(format!(
                "{what} command {} ignored: no node {}",
                cmd.cmd_seq, drain.node
            ));
            return None;
        }
        Some(drain.node)
    }

    fn decide_undrain(&mut self, cmd: &Command, plan: &mut Plan) {
        let Some(node) = self.drain_target(cmd, "undrain", plan) else {
            return;
        };
        if !self.cluster.get(&node).is_some_and(|n| n.cordoned) {
            plan.notes.push(format!(
                "undrain command {} ignored: node {node} is not drained",
                cmd.cmd_seq
            ));
            return;
        }
        plan.notes.push(format!("node {node} takes work again"));
        let body = EventBody::Undrained(NodeUndrained {
            cmd_seq: cmd.cmd_seq,
        });
        self.command_node_event(cmd, &node, body, plan);
    }

    fn decide_drain(&mut self, cmd: &Command, plan: &mut Plan) {
        let Some(node) = self.drain_target(cmd, "drain", plan) else {
            return;
        };
        plan.notes.push(format!("draining node {node}"));
        let body = EventBody::Draining(NodeDraining {
            cmd_seq: cmd.cmd_seq,
        });
        self.command_node_event(cmd, &node, body, plan);
    }

    /// A node event a command causes: it takes effect here at once (as it will again when
    /// the log delivers it) and is appended with the plan.
    fn command_node_event(&mut self, cmd: &Command, node: &str, body: EventBody, plan: &mut Plan) {
        let mut ev = Event::new(SERVICE, node, None, body);
        ev.traceparent = cmd.traceparent.clone();
        self.node_event(&ev);
        plan.node_events.push((Some(cmd.cmd_seq), ev));
    }

    /// Moves one replica off each draining node whose previous move has finished: the new
    /// copy is placed elsewhere and the old one stops once the new one has started. A
    /// node left with nothing gets its `drained` event.
    pub fn drain_step(&mut self) -> Plan {
        let mut plan = Plan::default();
        let cordoned: Vec<Arc<str>> = self
            .cluster
            .nodes()
            .iter()
            .filter(|n| n.cordoned && !self.drained.contains(&*n.name))
            .map(|n| n.name.clone())
            .collect();
        let mut overlay = Overlay::new();
        for node in cordoned {
            if self.moving_off(&node) {
                continue; // one move at a time per node
            }
            let mut holds_any = false;
            let mut next = None;
            for (id, w) in self.projection.iter() {
                for (i, r) in w.replicas.iter().enumerate() {
                    if !(r.holds() && r.node.as_deref() == Some(&*node)) {
                        continue;
                    }
                    holds_any = true;
                    if next.is_none() && r.state == WorkloadState::Running && !w.stop_requested {
                        next = Some((id.clone(), i as u32));
                    }
                }
            }
            if let Some((id, replica)) = next {
                self.plan_move(&id, replica, &node, &mut overlay, &mut plan);
            } else if !holds_any {
                self.drained.insert(node.to_string());
                plan.node_events.push((
                    None,
                    Event::new(
                        SERVICE,
                        &node,
                        None,
                        EventBody::Drained(NodeDrained {
                            reason: "every replica moved off the node".into(),
                        }),
                    ),
                ));
            }
        }
        plan
    }

    /// Whether a drain move off `node` is under way (its new copy has not started yet).
    fn moving_off(&self, node: &str) -> bool {
        self.projection.iter().any(|(_, w)| {
            w.replicas
                .iter()
                .any(|r| r.replacing.as_deref() == Some(node))
        })
    }

    fn plan_move(
        &self,
        id: &str,
        replica: u32,
        node: &Arc<str>,
        overlay: &mut Overlay,
        plan: &mut Plan,
    ) {
        let Some(w) = self.projection.get(id) else {
            return;
        };
        let Some(spec) = w.spec.as_deref() else {
            return;
        };
        let others: Vec<Arc<str>> = w
            .counted()
            .filter(|r| r.holds())
            .filter_map(|r| r.node.clone())
            .filter(|n| n != node)
            .collect();
        let want = [Want {
            replica,
            prefer_not: None,
            never: Some(node.clone()),
        }];
        let (scheduled, _) = self.place_replicas(spec, &want, &others, overlay);
        let Some((replica, to)) = scheduled.into_iter().next() else {
            return; // nowhere to go yet; tried again on the next tick
        };
        plan.notes
            .push(format!("drain: moving {id}/{replica} from {node} to {to}"));
        let mut ev = Event::new(
            SERVICE,
            id,
            None,
            EventBody::Scheduled(Scheduled {
                replica,
                node: to.to_string(),
                runtime_class: spec.runtime_class,
                replaces: Some(node.to_string()),
            }),
        );
        ev.traceparent = w.traceparent.as_deref().map(str::to_owned);
        plan.appends.push(WorkloadAppend {
            workload: id.to_owned(),
            head: Some(w.head),
            events: vec![ev],
            rechain_on_conflict: false,
        });
        plan.effects.push(Effect {
            starts: vec![(replica, to)],
            traceparent: w.traceparent.as_deref().map(str::to_owned),
            ..Effect::default()
        });
    }

    /// Tries again to place replicas that wait for capacity. Only runs when the cluster
    /// changed since the last pass, and looks at no more than `limit` workloads.
    pub fn place_pending(&mut self, limit: usize, now_ms: u64) -> Plan {
        let mut plan = Plan::default();
        if !self.placement_due(now_ms) {
            return plan;
        }
        self.pending_pass_gen = self.generation;
        self.next_due_ms = None;
        let mut overlay = Overlay::new();
        let mut keep = VecDeque::new();
        let n = self.pending.len().min(limit);
        for _ in 0..n {
            let id = self.pending.pop_front().expect("counted");
            let Some(w) = self.projection.get(&id) else {
                continue;
            };
            let Some(spec) = w.spec.clone() else { continue };
            let mut waiting: Vec<Want> = Vec::new();
            let mut later = false;
            for i in w.pending_replicas() {
                let r = &w.replicas[i as usize];
                match r.not_before_ms {
                    Some(t) if t > now_ms => {
                        // Backing off: placed on a pass after `t`.
                        later = true;
                        self.next_due_ms = Some(self.next_due_ms.map_or(t, |d| d.min(t)));
                    }
                    _ => waiting.push(Want {
                        replica: i,
                        prefer_not: r.last_node.clone(),
                        never: r.lost_on.clone(),
                    }),
                }
            }
            if waiting.is_empty() {
                if later {
                    keep.push_back(id.clone());
                }
                continue;
            }
            let placed: Vec<Arc<str>> = w
                .replicas
                .iter()
                .filter(|r| r.holds())
                .filter_map(|r| r.node.clone())
                .collect();
            let (scheduled, still) = self.place_replicas(&spec, &waiting, &placed, &mut overlay);
            if still.is_some() || later {
                keep.push_back(id.clone());
            }
            if scheduled.is_empty() {
                continue;
            }
            let head = w.head;
            // A later placement joins the trace of the workload's admission.
            let traceparent = w.traceparent.as_deref().map(str::to_owned);
            let mut effect = Effect {
                traceparent: traceparent.clone(),
                ..Effect::default()
            };
            let events = scheduled
                .into_iter()
                .map(|(replica, node)| {
                    effect.starts.push((replica, node.clone()));
                    let body = EventBody::Scheduled(Scheduled {
                        replica,
                        node: node.to_string(),
                        runtime_class: spec.runtime_class,
                        replaces: None,
                    });
                    let mut e = Event::new(SERVICE, &id, None, body);
                    e.traceparent = traceparent.clone();
                    e
                })
                .collect();
            plan.appends.push(WorkloadAppend {
                workload: id,
                head: Some(head),
                events,
                rechain_on_conflict: false,
            });
            plan.effects.push(effect);
        }
        keep.extend(self.pending.drain(..));
        self.pending = keep;
        plan
    }

    /// Places what fits now; returns the placements and, if some replica did not fit, why.
    fn place_replicas(
        &self,
        spec: &WorkloadSpec,
        replicas: &[Want],
        already: &[Arc<str>],
        overlay: &mut Overlay,
    ) -> (Vec<(u32, Arc<str>)>, Option<String>) {
        let need = Resources::of(spec);
        let mut avoid: Vec<Arc<str>> = already.to_vec();
        let mut placed = Vec::new();
        for want in replicas {
            let replica = want.replica;
            // After a failure, prefer another node than the one it failed on.
            let mut avoid_here = avoid.clone();
            avoid_here.extend(want.prefer_not.clone());
            let never: Vec<Arc<str>> = want.never.iter().cloned().collect();
            let req = Request {
                need,
                class: spec.runtime_class,
                selector: &spec.node_selector,
                strategy: spec.placement,
                avoid: &avoid_here,
                exclude: &never,
            };
            match self.cluster.place(&req, overlay) {
                Ok(i) => {
                    let e = overlay.entry(i).or_default();
                    *e = e.add(&need);
                    let name = self.cluster.nodes()[i].name.clone();
                    avoid.push(name.clone());
                    placed.push((replica, name));
                }
                Err(u) => return (placed, Some(u.reason)),
            }
        }
        (placed, None)
    }

    fn event(&self, id: &str, body: EventBody, cmd: &Command) -> Event {
        let mut e = Event::new(SERVICE, id, None, body);
        e.traceparent = cmd.traceparent.clone();
        e
    }

    /// Start ops for replicas the log shows scheduled but not started: sent again when a
    /// scheduler takes over, in case the previous one died between the event and the op.
    pub fn unstarted_ops(&self) -> BTreeMap<Arc<str>, Vec<NodeOp>> {
        let mut ops: BTreeMap<Arc<str>, Vec<NodeOp>> = BTreeMap::new();
        for (id, w) in self.projection.iter() {
            let Some(spec) = w.run_spec() else {
                continue;
            };
            if w.stop_requested {
                continue;
            }
            let head = chain_head(w);
            for (i, r) in w.replicas.iter().enumerate() {
                if let (WorkloadState::Scheduled, Some(node)) = (r.state, &r.node) {
                    ops.entry(node.clone()).or_default().push(NodeOp::Start {
                        workload: id.clone(),
                        replica: i as u32,
                        spec: spec.clone(),
                        head: head.clone(),
                        traceparent: w.traceparent.as_deref().map(str::to_owned),
                    });
                }
            }
        }
        ops
    }

    /// Records what was stored and says what follows: node ops, and each command's fate.
    pub fn commit(&mut self, plan: Plan, outcomes: Vec<Outcome>) -> Commit {
        let mut commit = Commit::default();
        let mut ok = vec![false; plan.appends.len()];
        let mut conflict = vec![false; plan.appends.len()];
        for (i, (outcome, effect)) in outcomes.into_iter().zip(&plan.effects).enumerate() {
            match outcome {
                Outcome::Stored(stored) => {
                    ok[i] = true;
                    for s in &stored {
                        self.apply(s);
                    }
                    let last = stored.last().expect("appends are never empty");
                    let workload = &plan.appends[i].workload;
                    let head = ChainHead {
                        seq: last.seq,
                        hash: hex::encode(last.hash),
                    };
                    if let Some(job) = &effect.scan_job {
                        commit.scan_jobs.push(job.clone());
                    }
                    let w = self.projection.get(workload);
                    if effect.new_pending
                        && w.is_some_and(|w| w.pending_replicas().next().is_some())
                        && !self.pending.contains(workload)
                    {
                        // A verdict let a gated workload through: place it on the next pass.
                        self.generation += 1;
                        self.pending.push_back(workload.clone());
                    }
                    for (replica, node) in &effect.starts {
                        let Some(spec) = w.and_then(|w| w.run_spec()) else {
                            continue;
                        };
                        commit.placed += 1;
                        commit
                            .ops
                            .entry(node.clone())
                            .or_default()
                            .push(NodeOp::Start {
                                workload: workload.clone(),
                                replica: *replica,
                                spec: spec.clone(),
                                head: head.clone(),
                                traceparent: effect.traceparent.clone(),
                            });
                    }
                    if let Some(w) = w
                        && (effect.stop || !effect.stop_replicas.is_empty())
                    {
                        for (replica, r) in w.replicas.iter().enumerate() {
                            if !effect.stop && !effect.stop_replicas.contains(&(replica as u32)) {
                                continue;
                            }
                            if let (true, Some(node)) = (r.holds(), &r.node) {
                                commit
                                    .ops
                                    .entry(node.clone())
                                    .or_default()
                                    .push(NodeOp::Stop {
                                        workload: workload.clone(),
                                        replica: replica as u32,
                                        head: head.clone(),
                                        grace_secs: effect.grace_secs,
                                        traceparent: effect.traceparent.clone(),
                                    });
                            }
                        }
                    }
                }
                Outcome::Conflict => {
                    conflict[i] = true;
                    if effect.new_pending || !effect.starts.is_empty() {
                        // A pending placement lost a race; it is retried on a later pass.
                        self.generation += 1;
                        self.pending.push_back(plan.appends[i].workload.clone());
                    }
                }
                Outcome::Failed(why) => commit
                    .failures
                    .push(format!("{}: {why}", plan.appends[i].workload)),
            }
        }
        for (cmd_seq, append) in plan.commands {
            let d = match append {
                None => Disposition::Ack,
                Some(usize::MAX) => Disposition::Retry,
                Some(i) if ok[i] => Disposition::Ack,
                // A new workload whose id is already in the log: a redelivery raced its
                // first handling, which stored it. Its events reach us through the log.
                Some(i) if conflict[i] && plan.appends[i].head.is_none() => Disposition::Ack,
                Some(_) => Disposition::Retry,
            };
            commit.commands.push((cmd_seq, d));
        }
        commit
    }
}

/// A replica to place, with the nodes it should not (or must not) go to.
#[derive(Clone, Debug)]
struct Want {
    replica: u32,
    /// Where its last copy ended: used only when nothing else fits.
    prefer_not: Option<Arc<str>>,
    /// Where its node was lost: never.
    never: Option<Arc<str>>,
}

impl Want {
    fn new(replica: u32) -> Self {
        Want {
            replica,
            prefer_not: None,
            never: None,
        }
    }
}

fn chain_head(w: &crate::projection::Workload) -> ChainHead {
    ChainHead {
        seq: w.head.seq,
        hash: hex::encode(w.head.hash),
    }
}

/// The `id` of a submission that failed validation, if it has a usable one.
fn loose_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    let id = serde_json::from_slice::<IdOnly>(payload).ok()?.id?;
    subjects::is_valid_token(&id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Head;
    use bulkhead_schemas::event::hash_bytes;
    use bulkhead_schemas::spec::RuntimeClass;

    pub(super) fn hb(name: &str, mem: u64) -> NodeHeartbeat {
        let cap = Resources {
            memory_mb: mem,
            cpu_millicores: 4000,
            slots: 100,
        };
        NodeHeartbeat {
            name: name.into(),
            capacity: cap,
            free: cap,
            runtime_classes: vec![RuntimeClass::Runc],
            labels: Default::default(),
            runtime: "sim".into(),
            running: 0,
            interval_ms: 1000,
            at: String::new(),
            isolation: Vec::new(),
        }
    }

    fn submit(seq: u64, json: serde_json::Value) -> Command {
        Command {
            cmd_seq: seq,
            stored_ms: 1_700_000_000_000,
            kind: CommandKind::Submit,
            payload: json.to_string().into_bytes(),
            traceparent: None,
        }
    }

    /// Stores every append at consecutive sequences, as the log would.
    pub(super) fn store_all(plan: &mut Plan, next_seq: &mut u64) -> Vec<Outcome> {
        plan.appends
            .iter_mut()
            .map(|a| {
                let sealed = a.seal();
                Outcome::Stored(
                    sealed
                        .into_iter()
                        .zip(a.events.clone())
                        .map(|(s, event)| {
                            *next_seq += 1;
                            Stored {
                                seq: *next_seq,
                                hash: s.hash,
                                event,
                            }
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn admits_places_and_emits_start_ops_with_chain_heads() {
        let mut core = SchedulerCore::default();
        core.heartbeat(&hb("n1", 1000));
        let mut plan = core.decide(&[submit(1, serde_json::json!({"id": "a", "image": "i", "memory_mb": 100, "cpu_millicores": 10, "replicas": 2}))]);
        assert_eq!(plan.appends.len(), 1);
        let kinds: Vec<_> = plan.appends[0].events.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, ["accepted", "scheduled", "scheduled"]);
        let mut seq = 0;
        let outcomes = store_all(&mut plan, &mut seq);
        let last_hash = match &outcomes[0] {
            Outcome::Stored(s) => s[2].hash,
            _ => unreachable!(),
        };
        let commit = core.commit(plan, outcomes);
        assert_eq!(commit.commands, [(1, Disposition::Ack)]);
        let ops = &commit.ops[&Arc::from("n1")];
        assert_eq!(ops.len(), 2);
        match &ops[1] {
            NodeOp::Start {
                workload,
                replica,
                head,
                ..
            } => {
                assert_eq!((workload.as_str(), *replica, head.seq), ("a", 1, 3));
                assert_eq!(head.hash, hex::encode(last_hash));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(core.cluster.get("n1").unwrap().allocated.memory_mb, 200);
        assert_eq!(
            core.projection.get("a").unwrap().state(),
            WorkloadState::Scheduled
        );
        assert_eq!(
            core.unstarted_ops()[&Arc::from("n1")].len(),
            2,
            "both replicas await their start"
        );
    }

    #[test]
    fn redelivered_submission_is_not_placed_twice_and_reused_ids_are_rejected() {
        let mut core = SchedulerCore::default();
        core.heartbeat(&hb("n1", 1000));
        let spec = serde_json::json!({"image": "i", "memory_mb": 100, "cpu_millicores": 10});
        let mut seq = 0;
        let mut plan = core.decide(&[submit(5, spec.clone())]);
        let out = store_all(&mut plan, &mut seq);
        core.commit(plan, out);
        // same stored message again (redelivery): same derived id, nothing to write
        let plan = core.decide(&[submit(5, spec.clone())]);
        assert!(plan.appends.is_empty());
        assert_eq!(plan.commands, [(5, None)]);
        // same explicit id from another command: rejected under the command's own id
        let mut with_id = spec.clone();
        with_id["id"] = "x".into();
        let mut plan = core.decide(&[submit(6, with_id.clone()), submit(7, with_id)]);
        assert_eq!(plan.appends.len(), 2);
        assert_eq!(plan.appends[0].workload, "x");
        assert_eq!(plan.appends[1].events[0].kind(), "rejected");
        assert_eq!(
            plan.appends[1].workload,
            ids::derived_workload_id(7, 1_700_000_000_000)
        );
        let out = store_all(&mut plan, &mut seq);
        core.commit(plan, out);
        assert_eq!(core.cluster.get("n1").unwrap().allocated.memory_mb, 200);
    }

    #[test]
    fn invalid_submissions_are_rejected_under_their_id_when_usable() {
        let mut core = SchedulerCore::default();
        let plan = core.decide(&[
            submit(1, serde_json::json!({"id": "bad-mem", "image": "i", "memory_mb": 0, "cpu_millicores": 1})),
            Command { payload: b"garbage".to_vec(), ..submit(2, serde_json::json!({})) },
        ]);
        assert_eq!(plan.appends[0].workload, "bad-mem");
        match &plan.appends[0].events[0].body {
            EventBody::Rejected(r) => assert_eq!(r.rejection.field.as_deref(), Some("memory_mb")),
            other => panic!("{other:?}"),
        }
        match &plan.appends[1].events[0].body {
            EventBody::Rejected(r) => assert_eq!(r.rejection.code, RejectCode::NotJson),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unplaceable_workloads_wait_with_a_reason_and_are_placed_when_capacity_appears() {
        let mut core = SchedulerCore::default();
        let mut seq = 0;
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut cmd = submit(
            1,
            serde_json::json!({"id": "p", "image": "i", "memory_mb": 500, "cpu_millicores": 10}),
        );
        cmd.traceparent = Some(tp.into());
        let mut plan = core.decide(&[cmd]);
        match &plan.appends[0].events[0].body {
            EventBody::Accepted(a) => assert!(
                a.pending.as_deref().unwrap().contains("no ready node"),
                "{:?}",
                a.pending
            ),
            other => panic!("{other:?}"),
        }
        let out = store_all(&mut plan, &mut seq);
        core.commit(plan, out);
        assert_eq!(
            core.projection.get("p").unwrap().state(),
            WorkloadState::Pending
        );
        assert!(
            core.place_pending(100, bulkhead_schemas::now_ms())
                .appends
                .is_empty(),
            "nothing changed, no pass"
        );
        core.heartbeat(&hb("n1", 1000));
        let mut plan = core.place_pending(100, bulkhead_schemas::now_ms());
        assert_eq!(plan.appends.len(), 1);
        assert_eq!(plan.appends[0].head.map(|h| h.seq), Some(1));
        // The later placement stays in the admission's trace: event and start op.
        assert_eq!(plan.appends[0].events[0].traceparent.as_deref(), Some(tp));
        let out = store_all(&mut plan, &mut seq);
        let commit = core.commit(plan, out);
        assert_eq!(commit.placed, 1);
        let op_tp = commit.ops.values().flatten().find_map(|op| match op {
            NodeOp::Start { traceparent, .. } => traceparent.clone(),
            _ => None,
        });
        assert_eq!(op_tp.as_deref(), Some(tp));
        assert_eq!(
            core.projection.get("p").unwrap().state(),
            WorkloadState::Scheduled
        );
        assert_eq!(core.pending_count(), 0);
    }

    #[test]
    fn conflicting_new_workload_is_acked_and_failed_appends_retried() {
        let mut core = SchedulerCore::default();
        let plan = core.decide(&[
            submit(
                1,
                serde_json::json!({"id": "a", "image": "i", "memory_mb": 1, "cpu_millicores": 1}),
            ),
            submit(
                2,
                serde_json::json!({"id": "b", "image": "i", "memory_mb": 1, "cpu_millicores": 1}),
            ),
        ]);
        let commit = core.commit(
            plan,
            vec![Outcome::Conflict, Outcome::Failed("timeout".into())],
        );
        assert_eq!(
            commit.commands,
            [(1, Disposition::Ack), (2, Disposition::Retry)]
        );
    }

    #[test]
    fn stop_writes_stop_requested_after_the_head_and_stops_placed_replicas() {
        let mut core = SchedulerCore::default();
        core.heartbeat(&hb("n1", 1000));
        let mut seq = 0;
        let mut plan = core.decide(&[submit(
            1,
            serde_json::json!({"id": "s", "image": "i", "memory_mb": 1, "cpu_millicores": 1}),
        )]);
        let out = store_all(&mut plan, &mut seq);
        core.commit(plan, out);
        let head = core.projection.get("s").unwrap().head;
        let stop = Command {
            kind: CommandKind::Stop,
            payload: br#"{"id":"s"}"#.to_vec(),
            ..submit(2, serde_json::json!({}))
        };
        let mut plan = core.decide(std::slice::from_ref(&stop));
        assert_eq!(plan.appends[0].head, Some(head));
        let out = store_all(&mut plan, &mut seq);
        let commit = core.commit(plan, out);
        assert!(matches!(
            &commit.ops[&Arc::from("n1")][..],
            [NodeOp::Stop { replica: 0, .. }]
        ));
        // a second stop is a no-op
        let plan = core.decide(&[stop]);
        assert!(plan.appends.is_empty());
        let _ = Head {
            seq: 0,
            hash: hash_bytes(b""),
        };
    }
}

#[cfg(test)]
mod scan_policy_tests {
    use super::*;
    use bulkhead_schemas::scan::{Finding, Severity, Verdict};
    use bulkhead_schemas::spec::RuntimeClass;

    fn core() -> SchedulerCore {
        let mut core = SchedulerCore::default();
        let mut hb = super::tests::hb("n1", 4096);
        hb.runtime_classes = vec![RuntimeClass::Runc, RuntimeClass::Gvisor];
        core.heartbeat(&hb);
        core
    }

    fn submit(seq: u64, id: &str, trust: &str) -> Command {
        Command {
            cmd_seq: seq,
            stored_ms: 1_700_000_000_000,
            kind: CommandKind::Submit,
            payload: serde_json::json!({"id": id, "image": "reg/app:1", "trust": trust,
                "runtime_class": "gvisor", "memory_mb": 64, "cpu_millicores": 10})
            .to_string()
            .into_bytes(),
            traceparent: None,
        }
    }

    /// Stores a plan's appends at consecutive sequences and commits it.
    fn run(core: &mut SchedulerCore, mut plan: Plan, seq: &mut u64) -> Commit {
        let out = super::tests::store_all(&mut plan, seq);
        core.commit(plan, out)
    }

    fn verdict(sev: Option<Severity>) -> ScanCompleted {
        ScanCompleted {
            image: "reg/app:1".into(),
            digest: "sha256:abc".into(),
            job: "j".into(),
            worker: "w".into(),
            verdict: Some(Verdict {
                findings: sev
                    .into_iter()
                    .map(|s| Finding {
                        severity: s,
                        advisory: "CVE-1".into(),
                        aliases: vec![],
                        package: "openssl".into(),
                        installed: "1".into(),
                        fixed: Some("2".into()),
                        summary: String::new(),
                    })
                    .collect(),
                ..Verdict::default()
            }),
            error: None,
            layers: Vec::new(),
        }
    }

    fn kinds(plan: &Plan) -> Vec<&'static str> {
        plan.appends
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.kind()))
            .collect()
    }

    #[test]
    fn gate_waits_for_a_clean_verdict_then_places() {
        let mut c = core();
        let mut seq = 0;
        let plan = c.decide(&[submit(1, "u", "untrusted")]);
        assert_eq!(kinds(&plan), ["accepted", "scan_requested"]);
        let commit = run(&mut c, plan, &mut seq);
        assert_eq!(commit.placed, 0);
        assert_eq!(commit.scan_jobs.len(), 1);
        assert_eq!(commit.scan_jobs[0].image, "reg/app:1");
        assert!(
            c.place_pending(10, bulkhead_schemas::now_ms())
                .appends
                .is_empty(),
            "held by the gate"
        );
        assert_eq!(c.unqueued_scans().len(), 1);

        let plan = c.scan_completed_now(verdict(Some(Severity::Medium)));
        assert_eq!(kinds(&plan), ["scan_completed"]);
        run(&mut c, plan, &mut seq);
        let plan = c.place_pending(10, bulkhead_schemas::now_ms());
        assert_eq!(kinds(&plan), ["scheduled"]);
        let commit = run(&mut c, plan, &mut seq);
        assert_eq!(commit.placed, 1);
        assert!(c.unqueued_scans().is_empty());
        // The node runs what was judged: the image pinned to the scanned digest.
        let Some(NodeOp::Start { spec, .. }) = commit.ops.values().flatten().next() else {
            panic!("a start op")
        };
        assert_eq!(spec.image, "reg/app@sha256:abc");
        let again = c.unstarted_ops();
        let Some(NodeOp::Start { spec, .. }) = again.values().flatten().next() else {
            panic!("sent again to a new scheduler")
        };
        assert_eq!(spec.image, "reg/app@sha256:abc");
        assert_eq!(
            c.projection
                .get("u")
                .unwrap()
                .spec
                .as_deref()
                .unwrap()
                .image,
            "reg/app:1",
            "the spec in the log keeps its reference"
        );
    }

    #[test]
    fn gate_rejects_a_bad_verdict_with_the_findings() {
        let mut c = core();
        let mut seq = 0;
        let plan = c.decide(&[submit(1, "u", "untrusted")]);
        run(&mut c, plan, &mut seq);
        let plan = c.scan_completed_now(verdict(Some(Severity::Critical)));
        assert_eq!(kinds(&plan), ["scan_completed", "rejected"]);
        run(&mut c, plan, &mut seq);
        assert!(
            c.place_pending(10, bulkhead_schemas::now_ms())
                .appends
                .is_empty(),
            "a rejected workload is never placed"
        );
        let w = c.projection.get("u").unwrap();
        assert_eq!(w.state(), WorkloadState::Rejected);
        let reason = w.reason.as_deref().unwrap();
        assert!(reason.contains("critical CVE-1 in openssl"), "{reason}");
        // The verdict is known now: the next untrusted submission is rejected at once.
        let plan = c.decide(&[submit(2, "u2", "untrusted")]);
        assert_eq!(kinds(&plan), ["rejected"]);
    }

    #[test]
    fn async_places_at_once_and_quarantines_on_a_bad_verdict() {
        let mut c = core();
        let mut seq = 0;
        let plan = c.decide(&[submit(1, "t", "multi_tenant")]);
        assert_eq!(kinds(&plan), ["accepted", "scan_requested", "scheduled"]);
        let commit = run(&mut c, plan, &mut seq);
        assert_eq!((commit.placed, commit.scan_jobs.len()), (1, 1));
        let plan = c.scan_completed_now(verdict(Some(Severity::High)));
        assert_eq!(
            kinds(&plan),
            ["scan_completed", "quarantined", "stop_requested"]
        );
        let commit = run(&mut c, plan, &mut seq);
        assert!(matches!(
            commit.ops.values().flatten().next(),
            Some(NodeOp::Stop { .. })
        ));
    }

    #[test]
    fn async_quarantine_moves_to_the_stronger_class_after_the_old_copy_stopped() {
        let mut c = core();
        let mut hb = super::tests::hb("n1", 4096);
        hb.runtime_classes = vec![RuntimeClass::Runc, RuntimeClass::Gvisor, RuntimeClass::Kata];
        c.heartbeat(&hb);
        c.policy.quarantine_class = Some(RuntimeClass::Kata);
        let mut seq = 0;
        let plan = c.decide(&[submit(1, "t", "multi_tenant")]);
        run(&mut c, plan, &mut seq);
        let plan = c.scan_completed_now(verdict(Some(Severity::High)));
        assert_eq!(kinds(&plan), ["scan_completed", "quarantined"]);
        let EventBody::Quarantined(q) = &plan.appends[0].events[1].body else {
            unreachable!()
        };
        assert_eq!(
            (q.action, q.from, q.to),
            (
                QuarantineAction::Move,
                RuntimeClass::Gvisor,
                Some(RuntimeClass::Kata)
            )
        );
        assert!(q.reason.contains("CVE-1"), "{}", q.reason);
        let commit = run(&mut c, plan, &mut seq);
        let ops: Vec<_> = commit.ops.values().flatten().collect();
        assert!(
            matches!(ops[..], [NodeOp::Stop { replica: 0, .. }]),
            "{ops:?}"
        );
        // Nothing is placed while the old copy still runs.
        assert!(
            c.place_pending(10, bulkhead_schemas::now_ms())
                .appends
                .is_empty()
        );
        // The node reports the stop: the replica is placed again, now in kata.
        seq += 1;
        c.apply(&Stored {
            seq,
            hash: Default::default(),
            event: Event::new(
                "node/n1",
                "t",
                None,
                EventBody::Stopped(bulkhead_schemas::event::Stopped {
                    replica: 0,
                    node: "n1".into(),
                }),
            ),
        });
        let plan = c.place_pending(10, bulkhead_schemas::now_ms());
        assert_eq!(kinds(&plan), ["scheduled"]);
        let EventBody::Scheduled(s) = &plan.appends[0].events[0].body else {
            unreachable!()
        };
        assert_eq!(s.runtime_class, RuntimeClass::Kata);
        let commit = run(&mut c, plan, &mut seq);
        let Some(NodeOp::Start { spec, .. }) = commit.ops.values().flatten().next() else {
            panic!("a start op")
        };
        assert_eq!(
            spec.runtime_class,
            RuntimeClass::Kata,
            "the node starts it in kata"
        );
        let view = c.projection.get("t").unwrap().view("t");
        assert!(
            view.quarantine
                .as_deref()
                .is_some_and(|q| q.starts_with("moved from gvisor to kata: ")),
            "{view:?}"
        );
    }

    #[test]
    fn a_known_bad_verdict_rejects_async_work_or_admits_it_quarantined() {
        let mut c = core();
        let mut hb = super::tests::hb("n1", 4096);
        hb.runtime_classes = vec![RuntimeClass::Gvisor, RuntimeClass::Kata];
        c.heartbeat(&hb);
        let mut seq = 0;
        c.scan_completed_now(verdict(Some(Severity::High)));
        let plan = c.decide(&[submit(1, "a", "multi_tenant")]);
        assert_eq!(
            kinds(&plan),
            ["rejected"],
            "quarantine stops: never started"
        );
        run(&mut c, plan, &mut seq);
        c.policy.quarantine_class = Some(RuntimeClass::Kata);
        let plan = c.decide(&[submit(2, "b", "multi_tenant")]);
        assert_eq!(
            kinds(&plan),
            ["accepted", "scan_completed", "quarantined", "scheduled"]
        );
        let EventBody::Accepted(a) = &plan.appends[0].events[0].body else {
            unreachable!()
        };
        assert_eq!(a.spec.runtime_class, RuntimeClass::Gvisor, "as submitted");
        let EventBody::Scheduled(s) = &plan.appends[0].events[3].body else {
            unreachable!()
        };
        assert_eq!(s.runtime_class, RuntimeClass::Kata);
        let commit = run(&mut c, plan, &mut seq);
        let Some(NodeOp::Start { spec, .. }) = commit.ops.values().flatten().next() else {
            panic!("a start op")
        };
        assert_eq!(spec.runtime_class, RuntimeClass::Kata);
    }

    #[test]
    fn an_old_verdict_is_scanned_again_and_does_not_settle_a_newer_request() {
        const T: u64 = 1_700_000_000_000; // the commands' stored time
        let mut c = core();
        let mut seq = 0;
        let ttl = c.policy.verdict_ttl_ms;
        // Bad, and just young enough: the untrusted submission is rejected at once.
        c.scan_completed(verdict(Some(Severity::High)), T - ttl + 1);
        assert_eq!(
            kinds(&c.decide(&[submit(1, "a", "untrusted")])),
            ["rejected"]
        );
        // A millisecond later it is older than the TTL: a new scan is asked for instead.
        let mut later = submit(2, "b", "untrusted");
        later.stored_ms = T + 1;
        let plan = c.decide(&[later]);
        assert_eq!(kinds(&plan), ["accepted", "scan_requested"]);
        run(&mut c, plan, &mut seq);
        let requested = c.projection.get("b").unwrap().scan_requested_ms;
        assert_eq!(c.unqueued_scans().len(), 1, "its job is still owed");
        // The old verdict replayed (a restarted scheduler reading the log) settles nothing.
        let plan = c.scan_completed(verdict(Some(Severity::High)), requested - ttl - 1);
        assert!(plan.appends.is_empty(), "{:?}", kinds(&plan));
        // The new scan: the tag was pushed again with the fix.
        let plan = c.scan_completed(verdict(None), requested + 5);
        assert_eq!(kinds(&plan), ["scan_completed"]);
        run(&mut c, plan, &mut seq);
        assert!(c.unqueued_scans().is_empty());
        assert_eq!(
            kinds(&c.place_pending(10, bulkhead_schemas::now_ms())),
            ["scheduled"]
        );
    }

    #[test]
    fn async_quarantine_leaves_a_workload_already_in_the_quarantine_class() {
        let mut c = core();
        c.policy.quarantine_class = Some(RuntimeClass::Gvisor);
        let mut seq = 0;
        let plan = c.decide(&[submit(1, "t", "multi_tenant")]);
        run(&mut c, plan, &mut seq);
        let plan = c.scan_completed_now(verdict(Some(Severity::Critical)));
        assert_eq!(kinds(&plan), ["scan_completed", "quarantined"]);
        let commit = run(&mut c, plan, &mut seq);
        assert!(commit.ops.is_empty(), "no stop: {:?}", commit.ops);
        let view = c.projection.get("t").unwrap().view("t");
        assert_eq!(view.state, WorkloadState::Scheduled);
        assert!(
            view.quarantine
                .unwrap()
                .starts_with("left running in gvisor")
        );
    }

    #[test]
    fn internal_is_not_scanned_and_a_clean_known_verdict_is_recorded() {
        let mut c = core();
        let mut seq = 0;
        let plan = c.decide(&[submit(1, "i", "internal")]);
        assert_eq!(kinds(&plan), ["accepted", "scheduled"]);
        run(&mut c, plan, &mut seq);
        let plan = c.scan_completed_now(verdict(None));
        assert!(plan.appends.is_empty(), "nobody waited for it");
        let plan = c.decide(&[submit(2, "u", "untrusted")]);
        assert_eq!(kinds(&plan), ["accepted", "scan_completed", "scheduled"]);
    }
}

#[cfg(test)]
mod failover_tests {
    use super::tests::{hb, store_all};
    use super::*;
    use bulkhead_schemas::event::{Exited, Lost, ReplicaRequested, Started};

    struct World {
        core: SchedulerCore,
        seq: u64,
    }

    impl World {
        fn new(nodes: &[&str]) -> World {
            let mut core = SchedulerCore::default();
            for n in nodes {
                core.heartbeat(&hb(n, 1000));
            }
            World { core, seq: 0 }
        }
        fn cmd(&mut self, kind: CommandKind, json: serde_json::Value) -> Commit {
            self.seq += 1;
            let cmd = Command {
                cmd_seq: 1000 + self.seq,
                stored_ms: 1_700_000_000_000,
                kind,
                payload: json.to_string().into_bytes(),
                traceparent: None,
            };
            let mut plan = self.core.decide(&[cmd]);
            self.node_events(&mut plan);
            let out = store_all(&mut plan, &mut self.seq);
            self.core.commit(plan, out)
        }
        fn node_events(&mut self, plan: &mut Plan) {
            for (_, ev) in std::mem::take(&mut plan.node_events) {
                self.core.node_event(&ev);
            }
        }
        /// An event from another writer (node, failover), as the log delivers it.
        fn logged(&mut self, id: &str, body: EventBody) {
            self.seq += 1;
            let event = Event::new("other", id, None, body);
            self.core.apply(&Stored {
                seq: self.seq,
                hash: [0; 32],
                event,
            });
        }
        fn run(&mut self, plan: Plan) -> Commit {
            let mut plan = plan;
            self.node_events(&mut plan);
            let out = store_all(&mut plan, &mut self.seq);
            self.core.commit(plan, out)
        }
        fn started(&mut self, id: &str, replica: u32) {
            let node = self.node_of(id, replica);
            self.logged(
                id,
                EventBody::Started(Started {
                    replica,
                    node,
                    container: format!("c{}", self.seq),
                }),
            );
        }
        fn node_of(&self, id: &str, replica: u32) -> String {
            self.core.projection.get(id).unwrap().replicas[replica as usize]
                .node
                .as_deref()
                .unwrap()
                .to_owned()
        }
    }

    fn starts(c: &Commit) -> Vec<(String, u32)> {
        c.ops
            .iter()
            .flat_map(|(n, ops)| {
                ops.iter().filter_map(move |op| match op {
                    NodeOp::Start { replica, .. } => Some((n.to_string(), *replica)),
                    _ => None,
                })
            })
            .collect()
    }

    fn stops(ops: &BTreeMap<Arc<str>, Vec<NodeOp>>) -> Vec<(String, u32)> {
        ops.iter()
            .flat_map(|(n, ops)| {
                ops.iter().filter_map(move |op| match op {
                    NodeOp::Stop { replica, .. } => Some((n.to_string(), *replica)),
                    _ => None,
                })
            })
            .collect()
    }

    fn spec(id: &str, replicas: u32) -> serde_json::Value {
        serde_json::json!({"id": id, "image": "i", "memory_mb": 100, "cpu_millicores": 10,
            "replicas": replicas, "placement": "spread"})
    }

    #[test]
    fn a_restart_waits_out_its_backoff_and_prefers_another_node() {
        let mut w = World::new(&["a", "b"]);
        w.cmd(CommandKind::Submit, spec("w", 1));
        let first = w.node_of("w", 0);
        w.started("w", 0);
        w.logged(
            "w",
            EventBody::Exited(Exited {
                replica: 0,
                node: first.clone(),
                code: 1,
                reason: "error".into(),
                finished_at: "t".into(),
            }),
        );
        let now = bulkhead_schemas::now_ms();
        w.logged(
            "w",
            EventBody::ReplicaRequested(ReplicaRequested {
                replica: 0,
                cause: "exited".into(),
                attempt: 1,
                not_before: bulkhead_schemas::rfc3339_from_ms(now + 5_000),
            }),
        );
        assert!(w.core.placement_due(now), "new work is due for a pass");
        let plan = w.core.place_pending(100, now);
        assert!(plan.appends.is_empty(), "still backing off");
        assert_eq!(w.core.next_due_ms(), Some(now + 5_000));
        assert!(!w.core.placement_due(now + 1_000));
        assert!(w.core.placement_due(now + 5_000));
        let plan = w.core.place_pending(100, now + 5_000);
        let c = w.run(plan);
        let again = starts(&c);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].0, first, "placed away from the node it failed on");
    }

    #[test]
    fn a_replica_lost_with_its_node_never_returns_there() {
        let mut w = World::new(&["a", "b"]);
        w.cmd(CommandKind::Submit, spec("w", 1));
        let first = w.node_of("w", 0);
        w.started("w", 0);
        // Only the lost node has room: the replica waits rather than go back there.
        let other = if first == "a" { "b" } else { "a" };
        w.core.node_gone(other);
        w.logged(
            "w",
            EventBody::Lost(Lost {
                replica: Some(0),
                node: first.clone(),
                reason: "silent".into(),
            }),
        );
        w.logged(
            "w",
            EventBody::ReplicaRequested(ReplicaRequested {
                replica: 0,
                cause: "lost".into(),
                attempt: 1,
                not_before: bulkhead_schemas::now_rfc3339(),
            }),
        );
        let now = bulkhead_schemas::now_ms() + 1;
        assert!(w.core.place_pending(100, now).appends.is_empty());
        w.core.heartbeat(&hb(other, 1000));
        let plan = w.core.place_pending(100, now);
        let c = w.run(plan);
        assert_eq!(starts(&c), [(other.to_owned(), 0)]);
    }

    #[test]
    fn scale_adds_and_retires_replicas() {
        let mut w = World::new(&["a", "b"]);
        w.cmd(CommandKind::Submit, spec("w", 1));
        w.started("w", 0);
        let c = w.cmd(
            CommandKind::Scale,
            serde_json::json!({"id": "w", "replicas": 3}),
        );
        assert_eq!(c.commands[0].1, Disposition::Ack);
        assert_eq!(starts(&c).len(), 2);
        let wl = w.core.projection.get("w").unwrap();
        assert_eq!((wl.desired, wl.replicas.len()), (3, 3));
        w.started("w", 1);
        w.started("w", 2);
        let c = w.cmd(
            CommandKind::Scale,
            serde_json::json!({"id": "w", "replicas": 1}),
        );
        let mut stopped: Vec<u32> = stops(&c.ops).into_iter().map(|(_, r)| r).collect();
        stopped.sort();
        assert_eq!(stopped, [1, 2]);
        let wl = w.core.projection.get("w").unwrap();
        assert_eq!(wl.desired, 1);
        assert_eq!(wl.state(), WorkloadState::Running);
        // Bad scale commands settle without writing anything.
        let before = w.seq;
        for bad in [
            serde_json::json!({"id": "w", "replicas": 5000}),
            serde_json::json!({"id": "nope", "replicas": 2}),
            serde_json::json!({"id": "w"}),
        ] {
            let c = w.cmd(CommandKind::Scale, bad);
            assert_eq!(c.commands[0].1, Disposition::Ack);
        }
        assert_eq!(w.seq, before + 3, "only the command counter moved");
    }

    #[test]
    fn drain_moves_one_replica_at_a_time_and_stops_the_old_copy_after_the_new_one_runs() {
        let mut w = World::new(&["a", "b"]);
        w.core.node_gone("b");
        w.cmd(CommandKind::Submit, spec("w", 2));
        assert_eq!(w.node_of("w", 0), "a");
        assert_eq!(w.node_of("w", 1), "a");
        w.started("w", 0);
        w.started("w", 1);
        w.core.heartbeat(&hb("b", 1000));
        w.cmd(CommandKind::Drain, serde_json::json!({"node": "a"}));
        assert!(w.core.cluster.get("a").unwrap().cordoned);
        let plan = w.core.drain_step();
        let c = w.run(plan);
        assert_eq!(starts(&c), [("b".to_owned(), 0)], "one move at a time");
        assert!(w.core.drain_step().appends.is_empty(), "waits for the move");
        let wl = w.core.projection.get("w").unwrap();
        assert_eq!(wl.replicas[0].replacing.as_deref(), Some("a"));
        assert!(w.core.take_replaced().is_empty(), "old copy runs on");
        w.started("w", 0);
        assert_eq!(stops(&w.core.take_replaced()), [("a".to_owned(), 0)]);
        w.logged(
            "w",
            EventBody::Stopped(bulkhead_schemas::event::Stopped {
                replica: 0,
                node: "a".into(),
            }),
        );
        let wl = w.core.projection.get("w").unwrap();
        assert_eq!(wl.replicas[0].state, WorkloadState::Running, "the new copy");
        assert_eq!(wl.replicas[0].replacing, None);
        let plan = w.core.drain_step();
        let c = w.run(plan);
        assert_eq!(starts(&c), [("b".to_owned(), 1)]);
        w.started("w", 1);
        w.logged(
            "w",
            EventBody::Stopped(bulkhead_schemas::event::Stopped {
                replica: 1,
                node: "a".into(),
            }),
        );
        let plan = w.core.drain_step();
        assert!(plan.appends.is_empty());
        assert_eq!(plan.node_events.len(), 1);
        assert_eq!(plan.node_events[0].1.kind(), "drained");
        assert_eq!(w.core.cluster.get("a").unwrap().allocated.slots, 0);
        assert_eq!(w.core.cluster.get("b").unwrap().allocated.slots, 2);
        // Nothing new lands on a drained node.
        let c = w.cmd(CommandKind::Submit, spec("v", 1));
        assert_eq!(starts(&c), [("b".to_owned(), 0)]);
    }

    #[test]
    fn a_drain_outlives_a_restart_of_the_node_and_only_an_undrain_lifts_it() {
        let mut w = World::new(&["a", "b"]);
        w.cmd(CommandKind::Drain, serde_json::json!({"node": "a"}));
        let plan = w.core.drain_step();
        let c = w.run(plan);
        assert!(c.ops.is_empty());
        assert!(w.core.drained.contains("a"), "empty: drained at once");
        // The node restarts: joined, heartbeats.
        let joined = Event::new(
            "node/a",
            "a",
            None,
            EventBody::Joined(bulkhead_schemas::event::NodeJoined {
                capacity: hb("a", 1000).capacity,
                runtime_classes: vec![],
                runtime: "sim".into(),
            }),
        );
        w.core.node_event(&joined);
        w.core.heartbeat(&hb("a", 1000));
        let c = w.cmd(CommandKind::Submit, spec("v", 2));
        assert_eq!(starts(&c), [("b".to_owned(), 0), ("b".to_owned(), 1)]);

        let undrain = |w: &mut World, node: &str| {
            w.seq += 1;
            w.core.decide(&[Command {
                cmd_seq: 1000 + w.seq,
                stored_ms: 1_700_000_000_000,
                kind: CommandKind::Undrain,
                payload: serde_json::json!({ "node": node }).to_string().into_bytes(),
                traceparent: None,
            }])
        };
        for quiet in ["b", "nope"] {
            let plan = undrain(&mut w, quiet);
            assert!(
                plan.node_events.is_empty() && plan.appends.is_empty(),
                "{quiet}"
            );
            assert_eq!(plan.commands.len(), 1, "the command is settled");
        }
        let plan = undrain(&mut w, "a");
        assert_eq!(plan.node_events.len(), 1);
        assert_eq!(plan.node_events[0].1.kind(), "undrained");
        assert_eq!(plan.node_events[0].1.subject, "a");
        w.run(plan);
        assert!(!w.core.cluster.get("a").unwrap().cordoned);
        assert!(!w.core.drained.contains("a"));
        let c = w.cmd(CommandKind::Submit, spec("u", 1));
        assert_eq!(starts(&c), [("a".to_owned(), 0)], "the emptier node again");
    }
}
