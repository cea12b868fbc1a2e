//! The workload projection: folds log events, in stream order, into the current state of
//! every workload and its replicas. Pure; the scheduler and the query API both run one.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_schemas::api::{
    DrainMark, NodeMarks, ReplicaView, ScanSummary, WorkloadState, WorkloadView,
};
use bulkhead_schemas::event::{Event, EventBody, Hash};
use bulkhead_schemas::{Resources, WorkloadSpec};

/// The last stored event of a workload: what the next append expects and chains to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

#[derive(Clone, Debug)]
pub struct Replica {
    pub state: WorkloadState,
    pub node: Option<Arc<str>>,
    pub container: Option<Box<str>>,
    /// The last exit's code and reason (kept across restarts).
    pub exit_code: Option<i32>,
    pub reason: Option<Box<str>>,
    /// Restarts requested by the failover, in all.
    pub restarts: u32,
    /// Times (Unix ms) of the latest restarts, newest last, at most `max_restarts + 1`.
    pub recent_restarts: Vec<u64>,
    /// A requested restart waits until then (backoff), Unix ms.
    pub not_before_ms: Option<u64>,
    /// The node of the copy that ended: placement prefers another one.
    pub last_node: Option<Arc<str>>,
    /// The copy ended because its node was lost: never place the replica there again.
    pub lost_on: Option<Arc<str>>,
    /// The failover gave up on it.
    pub gave_up: bool,
    /// A drain moves it: the copy on this node runs until the new one has started.
    pub replacing: Option<Arc<str>>,
    /// A quarantine moves it to a stronger class: once its copy has stopped, it is placed
    /// again (pending) instead of ending.
    pub requeue: bool,
}

impl Replica {
    fn pending() -> Self {
        Replica {
            state: WorkloadState::Pending,
            node: None,
            container: None,
            exit_code: None,
            reason: None,
            restarts: 0,
            recent_restarts: Vec::new(),
            not_before_ms: None,
            last_node: None,
            lost_on: None,
            gave_up: false,
            replacing: None,
            requeue: false,
        }
    }

    /// Whether a runtime fact from `node` is about this replica's current copy.
    fn is_on(&self, node: &str) -> bool {
        self.node.as_deref() == Some(node)
    }
    /// Holds resources on its node.
    pub fn holds(&self) -> bool {
        matches!(
            self.state,
            WorkloadState::Scheduled | WorkloadState::Starting | WorkloadState::Running
        )
    }
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub spec: Option<Arc<WorkloadSpec>>,
    pub rejected: bool,
    pub stop_requested: bool,
    pub replicas: Vec<Replica>,
    /// How many replicas it should run (the spec's count until a scale changes it);
    /// replicas at or past this index are retired.
    pub desired: u32,
    pub reason: Option<Box<str>>,
    pub head: Head,
    pub events: u32,
    /// Stream sequence of the submission that created it.
    pub cmd_seq: u64,
    /// Trace context of its admission: later events of the workload join that trace.
    pub traceparent: Option<Box<str>>,
    /// A scan of its image was requested; `Some(true)`: placement waits for the verdict.
    pub scan_gate: Option<bool>,
    /// When the scan was requested (Unix ms; 0 if never).
    pub scan_requested_ms: u64,
    /// Its image's verdict, once recorded on the workload.
    pub scan: Option<Box<ScanSummary>>,
    /// What a failed `async` verdict did to it.
    pub quarantine: Option<Box<str>>,
}

/// `image` pinned to `digest`: `registry/repo:tag` → `registry/repo@digest`. A reference
/// that names a digest already is left as it is.
pub fn pin_image(image: &str, digest: &str) -> String {
    if image.contains('@') || !digest.starts_with("sha256:") {
        return image.to_owned();
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let name = match image[slash..].find(':') {
        Some(colon) => &image[..slash + colon],
        None => image,
    };
    format!("{name}@{digest}")
}

impl Workload {
    /// The spec a node runs: once the image was scanned, pinned to the digest the verdict
    /// is about, so a tag pushed again (or an older copy cached on a node) cannot run in
    /// place of what was judged.
    pub fn run_spec(&self) -> Option<WorkloadSpec> {
        let mut spec = self.spec.as_deref()?.clone();
        if let Some(scan) = &self.scan
            && scan.error.is_none()
        {
            spec.image = pin_image(&spec.image, &scan.digest);
        }
        Some(spec)
    }

    /// Replicas that count: the desired ones, and retired ones still holding a node.
    pub fn counted(&self) -> impl Iterator<Item = &Replica> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(i, r)| (*i as u32) < self.desired || r.holds())
            .map(|(_, r)| r)
    }

    pub fn state(&self) -> WorkloadState {
        if self.rejected {
            return WorkloadState::Rejected;
        }
        let live = self
            .counted()
            .filter(|r| !r.state.is_terminal())
            .map(|r| r.state)
            .min();
        if let Some(s) = live {
            return s;
        }
        let any = |s| self.counted().any(|r| r.state == s);
        if self.stop_requested || any(WorkloadState::Stopped) {
            WorkloadState::Stopped
        } else if any(WorkloadState::Failed) {
            WorkloadState::Failed
        } else if any(WorkloadState::Lost) {
            WorkloadState::Lost
        } else {
            WorkloadState::Succeeded
        }
    }

    pub fn need(&self) -> Resources {
        self.spec.as_deref().map(Resources::of).unwrap_or_default()
    }

    /// Replicas waiting for a node (none once a stop was requested or the workload was
    /// rejected, or while a scan verdict is awaited).
    pub fn pending_replicas(&self) -> impl Iterator<Item = u32> + '_ {
        let held = self.stop_requested || self.rejected || self.awaits_verdict();
        let desired = self.desired;
        self.replicas
            .iter()
            .enumerate()
            .filter(move |(i, r)| {
                r.state == WorkloadState::Pending && !held && (*i as u32) < desired
            })
            .map(|(i, _)| i as u32)
    }

    /// Placement waits for the image's scan verdict (scan policy `gate`).
    pub fn awaits_verdict(&self) -> bool {
        self.scan_gate == Some(true) && self.scan.is_none() && !self.rejected
    }

    /// A scan was requested and its verdict is not recorded yet.
    pub fn wants_verdict(&self) -> bool {
        self.scan_gate.is_some() && self.scan.is_none() && !self.rejected
    }

    pub fn view(&self, id: &str) -> WorkloadView {
        WorkloadView {
            id: id.to_owned(),
            state: self.state(),
            spec: self.spec.as_deref().cloned(),
            replicas: self
                .replicas
                .iter()
                .enumerate()
                .map(|(i, r)| ReplicaView {
                    replica: i as u32,
                    state: r.state,
                    node: r.node.as_deref().map(str::to_owned),
                    container: r.container.as_deref().map(str::to_owned),
                    exit_code: r.exit_code,
                    reason: r.reason.as_deref().map(str::to_owned),
                    restarts: r.restarts,
                    backoff_until: r
                        .not_before_ms
                        .filter(|_| r.state == WorkloadState::Pending)
                        .map(bulkhead_schemas::rfc3339_from_ms),
                    gave_up: r.gave_up,
                    replacing: r.replacing.as_deref().map(str::to_owned),
                })
                .collect(),
            desired: self.desired,
            reason: self.reason.as_deref().map(str::to_owned),
            last_seq: self.head.seq,
            events: self.events,
            scan: self.scan.as_deref().cloned(),
            quarantine: self.quarantine.as_deref().map(str::to_owned),
        }
    }
}

/// What applying an event changed in node allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Placed { node: Arc<str>, need: Resources },
    Released { node: Arc<str>, need: Resources },
}

/// Why an event left the projection unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("already applied (seq {seq} <= {head})")]
    Stale { seq: u64, head: u64 },
    #[error("event for unknown workload {0}")]
    UnknownWorkload(String),
    #[error("replica {0} out of range")]
    BadReplica(u32),
    #[error("not a workload event")]
    NotWorkload,
}

#[derive(Default, Debug)]
pub struct Projection {
    workloads: BTreeMap<String, Workload>,
    /// Highest stream sequence applied.
    pub last_seq: u64,
    /// Interned node names.
    nodes: BTreeMap<Box<str>, Arc<str>>,
    /// What node events say of each node.
    marks: BTreeMap<String, NodeMarks>,
}

impl Projection {
    pub fn get(&self, id: &str) -> Option<&Workload> {
        self.workloads.get(id)
    }

    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Workload)> {
        self.workloads.iter()
    }

    /// What the log says of a node (drains, loss); default for a node it never mentioned.
    pub fn node_marks(&self, node: &str) -> NodeMarks {
        self.marks.get(node).copied().unwrap_or_default()
    }

    /// Applies a node event (`bulkhead.evt.node.>`, read apart from the workload events).
    pub fn node_event(&mut self, ev: &Event) {
        if ev.body.is_node_event() {
            self.mark_node(&ev.subject, &ev.body);
        }
    }

    fn mark_node(&mut self, node: &str, body: &EventBody) {
        let m = self.marks.entry(node.to_owned()).or_default();
        match body {
            EventBody::Joined(_) => m.lost = false,
            EventBody::Lost(_) => m.lost = true,
            EventBody::Draining(_) => m.drain = Some(DrainMark::Draining),
            EventBody::Drained(_) => m.drain = Some(DrainMark::Drained),
            EventBody::Undrained(_) => m.drain = None,
            _ => {}
        }
    }

    /// Workloads with ids after `after`, in id order.
    pub fn range_after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a Workload)> + 'a> {
        match after {
            Some(a) => Box::new(
                self.workloads
                    .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(self.workloads.iter()),
        }
    }

    fn intern(&mut self, node: &str) -> Arc<str> {
        if let Some(n) = self.nodes.get(node) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(node);
        self.nodes.insert(node.into(), n.clone());
        n
    }

    /// Applies one stored event. Events at or below the workload's head are skipped, so
    /// the same event may arrive twice (own append, then the log) without harm.
    pub fn apply(&mut self, seq: u64, hash: Hash, ev: &Event) -> Result<Vec<Change>, Skip> {
        self.last_seq = self.last_seq.max(seq);
        let id = ev.subject.as_str();
        let head = Head { seq, hash };
        let mut changes = Vec::new();
        match &ev.body {
            EventBody::Accepted(a) => {
                if let Some(w) = self.workloads.get(id) {
                    return Err(Skip::Stale {
                        seq,
                        head: w.head.seq,
                    });
                }
                let n = a.spec.replicas as usize;
                self.workloads.insert(
                    id.to_owned(),
                    Workload {
                        spec: Some(Arc::new(a.spec.clone())),
                        rejected: false,
                        stop_requested: false,
                        replicas: vec![Replica::pending(); n],
                        desired: a.spec.replicas,
                        reason: a.pending.as_deref().map(Into::into),
                        head,
                        events: 1,
                        cmd_seq: a.cmd_seq,
                        traceparent: ev.traceparent.as_deref().map(Into::into),
                        scan_gate: None,
                        scan_requested_ms: 0,
                        scan: None,
                        quarantine: None,
                    },
                );
                return Ok(changes);
            }
            EventBody::Rejected(r) => {
                if let Some(w) = self.workloads.get_mut(id) {
                    if seq <= w.head.seq {
                        return Err(Skip::Stale {
                            seq,
                            head: w.head.seq,
                        });
                    }
                    // An accepted workload rejected later (its scan verdict failed the gate).
                    w.rejected = true;
                    w.reason = Some(r.rejection.reason.as_str().into());
                    w.head = head;
                    w.events += 1;
                    return Ok(changes);
                }
                self.workloads.insert(
                    id.to_owned(),
                    Workload {
                        spec: None,
                        rejected: true,
                        stop_requested: false,
                        replicas: Vec::new(),
                        desired: 0,
                        reason: Some(r.rejection.reason.as_str().into()),
                        head,
                        events: 1,
                        cmd_seq: r.cmd_seq,
                        traceparent: None,
                        scan_gate: None,
                        scan_requested_ms: 0,
                        scan: None,
                        quarantine: None,
                    },
                );
                return Ok(changes);
            }
            b if b.is_node_event() => {
                self.mark_node(id, b);
                return Err(Skip::NotWorkload);
            }
            _ => {}
        }
        let node_of = |b: &EventBody| match b {
            EventBody::Scheduled(s) => Some(s.node.clone()),
            EventBody::Lost(l) => Some(l.node.clone()),
            _ => None,
        };
        let interned = node_of(&ev.body).map(|n| self.intern(&n));
        let at_ms = bulkhead_schemas::parse_rfc3339_ms(&ev.at).unwrap_or(0);
        let w = self
            .workloads
            .get_mut(id)
            .ok_or_else(|| Skip::UnknownWorkload(id.to_owned()))?;
        if seq <= w.head.seq {
            return Err(Skip::Stale {
                seq,
                head: w.head.seq,
            });
        }
        let need = w.spec.as_deref().map(Resources::of).unwrap_or_default();
        let replica = |w: &mut Workload, r: u32| -> Result<usize, Skip> {
            if (r as usize) < w.replicas.len() {
                Ok(r as usize)
            } else {
                Err(Skip::BadReplica(r))
            }
        };
        let release = |rep: &mut Replica, changes: &mut Vec<Change>| {
            if rep.holds()
                && let Some(node) = &rep.node
            {
                changes.push(Change::Released {
                    node: node.clone(),
                    need,
                });
            }
        };
        // The copy a drain replaces ended: its node's share is free.
        let retire_old = |rep: &mut Replica, node: &str, changes: &mut Vec<Change>| {
            if rep.replacing.as_deref() == Some(node)
                && let Some(old) = rep.replacing.take()
            {
                changes.push(Change::Released { node: old, need });
            }
        };
        match &ev.body {
            EventBody::Scheduled(s) => {
                let i = replica(w, s.replica)?;
                let rep = &mut w.replicas[i];
                let node = interned.expect("interned above");
                match s.replaces.as_deref() {
                    // A drain move: the old copy keeps its share until it has stopped.
                    Some(old) if rep.holds() && rep.is_on(old) => {
                        rep.replacing = rep.node.take();
                    }
                    _ => release(rep, &mut changes),
                }
                changes.push(Change::Placed {
                    node: node.clone(),
                    need,
                });
                rep.state = WorkloadState::Scheduled;
                rep.node = Some(node);
                rep.container = None;
                rep.not_before_ms = None;
                w.reason = None;
            }
            EventBody::Started(s) => {
                let i = replica(w, s.replica)?;
                let rep = &mut w.replicas[i];
                if rep.holds() && rep.is_on(&s.node) {
                    rep.state = WorkloadState::Running;
                    rep.container = Some(s.container.as_str().into());
                }
            }
            EventBody::Exited(x) => {
                let i = replica(w, x.replica)?;
                let rep = &mut w.replicas[i];
                retire_old(rep, &x.node, &mut changes);
                // A fact about a copy the replica has moved on from changes nothing.
                if rep.holds() && rep.is_on(&x.node) {
                    release(rep, &mut changes);
                    rep.requeue = false;
                    rep.state = if x.code == 0 {
                        WorkloadState::Succeeded
                    } else {
                        WorkloadState::Failed
                    };
                    rep.exit_code = Some(x.code);
                    rep.reason = Some(x.reason.as_str().into());
                }
            }
            EventBody::Lost(l) => {
                if let Some(r) = l.replica {
                    let i = replica(w, r)?;
                    let rep = &mut w.replicas[i];
                    retire_old(rep, &l.node, &mut changes);
                    if rep.holds() && rep.is_on(&l.node) {
                        release(rep, &mut changes);
                        rep.requeue = false;
                        rep.state = WorkloadState::Lost;
                        rep.reason = Some(l.reason.as_str().into());
                        rep.lost_on = interned.clone();
                    }
                }
            }
            EventBody::ScanRequested(r) => {
                w.scan_gate = Some(r.gate);
                w.scan_requested_ms = at_ms;
                if r.gate {
                    w.reason = Some(format!("waiting for the scan verdict of {}", r.image).into());
                }
            }
            EventBody::ScanCompleted(c) => {
                w.scan = Some(Box::new(ScanSummary {
                    digest: c.digest.clone(),
                    worst: c.verdict.as_ref().and_then(|v| v.worst()),
                    findings: c.verdict.as_ref().map_or(0, |v| v.findings.len()),
                    error: c.error.clone(),
                }));
                if w.scan_gate == Some(true) && !w.rejected {
                    w.reason = None;
                }
            }
            EventBody::ReplicaRequested(r) => {
                let i = replica(w, r.replica)?;
                let keep = w
                    .spec
                    .as_deref()
                    .map_or(1, |s| s.restart.max_restarts as usize + 1);
                let rep = &mut w.replicas[i];
                release(rep, &mut changes);
                let lost_on = (rep.state == WorkloadState::Lost)
                    .then(|| rep.lost_on.clone())
                    .flatten();
                rep.last_node = rep.node.take().or(rep.last_node.take());
                rep.lost_on = lost_on;
                rep.state = WorkloadState::Pending;
                rep.container = None;
                rep.restarts += 1;
                rep.recent_restarts.push(at_ms);
                if rep.recent_restarts.len() > keep {
                    let drop = rep.recent_restarts.len() - keep;
                    rep.recent_restarts.drain(..drop);
                }
                rep.not_before_ms = bulkhead_schemas::parse_rfc3339_ms(&r.not_before);
                rep.gave_up = false;
            }
            EventBody::GaveUp(g) => {
                let i = replica(w, g.replica)?;
                let rep = &mut w.replicas[i];
                rep.gave_up = true;
                rep.reason = Some(g.reason.as_str().into());
                w.reason = Some(format!("replica {}: {}", g.replica, g.reason).into());
            }
            EventBody::Scaled(sc) => {
                let n = sc.replicas as usize;
                if w.replicas.len() < n {
                    w.replicas.resize(n, Replica::pending());
                }
                for (i, rep) in w.replicas.iter_mut().enumerate() {
                    if i >= n && rep.state == WorkloadState::Pending {
                        rep.state = WorkloadState::Stopped;
                    } else if i < n
                        && i >= w.desired as usize
                        && rep.state.is_terminal()
                        && !rep.holds()
                    {
                        // Scaled up again into a retired slot: a fresh replica.
                        *rep = Replica::pending();
                    }
                }
                w.desired = sc.replicas;
            }
            EventBody::StopRequested(_) => {
                w.stop_requested = true;
                for rep in w
                    .replicas
                    .iter_mut()
                    .filter(|r| r.state == WorkloadState::Pending)
                {
                    rep.state = WorkloadState::Stopped;
                }
            }
            EventBody::Stopped(s) => {
                let i = replica(w, s.replica)?;
                let rep = &mut w.replicas[i];
                retire_old(rep, &s.node, &mut changes);
                if rep.holds() && rep.is_on(&s.node) {
                    release(rep, &mut changes);
                    if std::mem::take(&mut rep.requeue) && !w.stop_requested {
                        // Stopped for a quarantine move: placed again in the new class.
                        rep.last_node = rep.node.take();
                        rep.container = None;
                        rep.state = WorkloadState::Pending;
                    } else {
                        rep.state = WorkloadState::Stopped;
                    }
                }
            }
            EventBody::Quarantined(q) => {
                use bulkhead_schemas::event::QuarantineAction;
                let what = match (q.action, q.to) {
                    (QuarantineAction::Move, Some(to)) => {
                        if let Some(spec) = w.spec.as_mut() {
                            Arc::make_mut(spec).runtime_class = to;
                        }
                        for rep in w.replicas.iter_mut().filter(|r| r.holds()) {
                            rep.requeue = true;
                        }
                        format!("moved from {} to {to}", q.from)
                    }
                    (QuarantineAction::Contained, _) => format!("left running in {}", q.from),
                    _ => "stopped".to_owned(),
                };
                w.quarantine = Some(format!("{what}: {}", q.reason).into());
            }
            _ => unreachable!("handled above"),
        }
        w.head = head;
        w.events += 1;
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_schemas::event::*;

    fn spec(replicas: u32) -> WorkloadSpec {
        let mut s: WorkloadSpec = serde_json::from_value(
            serde_json::json!({"image": "i", "memory_mb": 10, "cpu_millicores": 5}),
        )
        .unwrap();
        s.replicas = replicas;
        s.id = Some("w".into());
        s
    }

    fn ev(body: EventBody) -> Event {
        Event::new("test", "w", None, body)
    }

    #[test]
    fn images_are_pinned_to_the_scanned_digest() {
        let d = "sha256:abc";
        assert_eq!(
            pin_image("127.0.0.1:5000/bulkhead/app:1", d),
            "127.0.0.1:5000/bulkhead/app@sha256:abc"
        );
        assert_eq!(
            pin_image("127.0.0.1:5000/app", d),
            "127.0.0.1:5000/app@sha256:abc"
        );
        assert_eq!(pin_image("busybox:1.36", d), "busybox@sha256:abc");
        assert_eq!(pin_image("busybox", d), "busybox@sha256:abc");
        assert_eq!(
            pin_image("r/app:1@sha256:def", d),
            "r/app:1@sha256:def",
            "pinned already"
        );
        assert_eq!(
            pin_image("r/app:1", ""),
            "r/app:1",
            "no digest (a failed scan)"
        );
    }

    #[test]
    fn node_events_mark_drains_and_losses_until_undrained_or_joined() {
        let mut p = Projection::default();
        let mut seq = 0;
        let mut on = |p: &mut Projection, body: EventBody| {
            seq += 1;
            let r = p.apply(seq, [0; 32], &Event::new("test", "n", None, body));
            assert!(matches!(r, Err(Skip::NotWorkload)));
            p.node_marks("n").status()
        };
        let joined = || {
            EventBody::Joined(NodeJoined {
                capacity: Default::default(),
                runtime_classes: vec![],
                runtime: "sim".into(),
            })
        };
        let lost = || {
            EventBody::Lost(Lost {
                replica: None,
                node: "n".into(),
                reason: "silent".into(),
            })
        };
        assert_eq!(p.node_marks("n").status(), "ready", "never mentioned");
        assert_eq!(on(&mut p, joined()), "ready");
        assert_eq!(
            on(&mut p, EventBody::Draining(NodeDraining { cmd_seq: 1 })),
            "draining"
        );
        assert_eq!(on(&mut p, lost()), "lost+draining");
        assert_eq!(on(&mut p, joined()), "draining", "back, still cordoned");
        let drained = EventBody::Drained(NodeDrained {
            reason: "empty".into(),
        });
        assert_eq!(on(&mut p, drained), "drained");
        let undrained = EventBody::Undrained(NodeUndrained { cmd_seq: 2 });
        assert_eq!(on(&mut p, undrained), "ready");
        assert_eq!(p.node_marks("other").status(), "ready");
    }

    #[test]
    fn lifecycle_moves_state_and_allocations() {
        let mut p = Projection::default();
        let h = [0u8; 32];
        p.apply(
            1,
            h,
            &ev(EventBody::Accepted(Accepted {
                spec: spec(2),
                cmd_seq: 9,
                pending: None,
            })),
        )
        .unwrap();
        assert_eq!(p.get("w").unwrap().state(), WorkloadState::Pending);
        let ch = p
            .apply(
                2,
                h,
                &ev(EventBody::Scheduled(Scheduled {
                    replica: 0,
                    node: "n".into(),
                    runtime_class: Default::default(),
                    replaces: None,
                })),
            )
            .unwrap();
        assert!(
            matches!(&ch[..], [Change::Placed { node, need }] if &**node == "n" && need.memory_mb == 10)
        );
        assert_eq!(
            p.get("w").unwrap().state(),
            WorkloadState::Pending,
            "replica 1 still pending"
        );
        p.apply(
            3,
            h,
            &ev(EventBody::Scheduled(Scheduled {
                replica: 1,
                node: "n".into(),
                runtime_class: Default::default(),
                replaces: None,
            })),
        )
        .unwrap();
        p.apply(
            4,
            h,
            &ev(EventBody::Started(Started {
                replica: 0,
                node: "n".into(),
                container: "c0".into(),
            })),
        )
        .unwrap();
        assert_eq!(p.get("w").unwrap().state(), WorkloadState::Scheduled);
        p.apply(
            5,
            h,
            &ev(EventBody::Started(Started {
                replica: 1,
                node: "n".into(),
                container: "c1".into(),
            })),
        )
        .unwrap();
        assert_eq!(p.get("w").unwrap().state(), WorkloadState::Running);
        let ch = p
            .apply(
                6,
                h,
                &ev(EventBody::Exited(Exited {
                    replica: 0,
                    node: "n".into(),
                    code: 7,
                    reason: "error".into(),
                    finished_at: "t".into(),
                })),
            )
            .unwrap();
        assert!(matches!(&ch[..], [Change::Released { .. }]));
        assert_eq!(p.get("w").unwrap().state(), WorkloadState::Running);
        p.apply(
            7,
            h,
            &ev(EventBody::Exited(Exited {
                replica: 1,
                node: "n".into(),
                code: 0,
                reason: "completed".into(),
                finished_at: "t".into(),
            })),
        )
        .unwrap();
        let w = p.get("w").unwrap();
        assert_eq!(w.state(), WorkloadState::Failed);
        assert_eq!(w.replicas[0].exit_code, Some(7));
        assert_eq!(w.events, 7);
        assert_eq!(w.head.seq, 7);
    }

    #[test]
    fn replays_are_skipped_and_unknown_workloads_reported() {
        let mut p = Projection::default();
        let h = [1u8; 32];
        let acc = ev(EventBody::Accepted(Accepted {
            spec: spec(1),
            cmd_seq: 1,
            pending: Some("no node".into()),
        }));
        p.apply(5, h, &acc).unwrap();
        assert_eq!(p.get("w").unwrap().reason.as_deref(), Some("no node"));
        assert!(matches!(p.apply(5, h, &acc), Err(Skip::Stale { .. })));
        let sch = ev(EventBody::Scheduled(Scheduled {
            replica: 0,
            node: "n".into(),
            runtime_class: Default::default(),
            replaces: None,
        }));
        p.apply(6, h, &sch).unwrap();
        assert!(matches!(p.apply(6, h, &sch), Err(Skip::Stale { .. })));
        let mut other = sch.clone();
        other.subject = "x".into();
        assert!(matches!(
            p.apply(7, h, &other),
            Err(Skip::UnknownWorkload(_))
        ));
        let bad = ev(EventBody::Scheduled(Scheduled {
            replica: 3,
            node: "n".into(),
            runtime_class: Default::default(),
            replaces: None,
        }));
        assert_eq!(p.apply(8, h, &bad), Err(Skip::BadReplica(3)));
    }

    #[test]
    fn stop_ends_pending_replicas_and_releases_placed_ones() {
        let mut p = Projection::default();
        let h = [0u8; 32];
        p.apply(
            1,
            h,
            &ev(EventBody::Accepted(Accepted {
                spec: spec(2),
                cmd_seq: 1,
                pending: None,
            })),
        )
        .unwrap();
        p.apply(
            2,
            h,
            &ev(EventBody::Scheduled(Scheduled {
                replica: 0,
                node: "n".into(),
                runtime_class: Default::default(),
                replaces: None,
            })),
        )
        .unwrap();
        p.apply(
            3,
            h,
            &ev(EventBody::StopRequested(StopRequested {
                cmd_seq: 2,
                grace_secs: None,
            })),
        )
        .unwrap();
        assert_eq!(p.get("w").unwrap().pending_replicas().count(), 0);
        assert_eq!(p.get("w").unwrap().state(), WorkloadState::Scheduled);
        let ch = p
            .apply(
                4,
                h,
                &ev(EventBody::Stopped(Stopped {
                    replica: 0,
                    node: "n".into(),
                })),
            )
            .unwrap();
        assert_eq!(ch.len(), 1);
        assert_eq!(p.get("w").unwrap().state(), WorkloadState::Stopped);
    }
}
