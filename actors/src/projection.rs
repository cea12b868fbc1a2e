//! The workload projection: folds log events, in stream order, into the current state of
//! every workload and its replicas. Pure; the scheduler and the query API both run one.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_schemas::api::{ReplicaView, ScanSummary, WorkloadState, WorkloadView};
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
    pub exit_code: Option<i32>,
    pub reason: Option<Box<str>>,
}

impl Replica {
    fn pending() -> Self {
        Replica {
            state: WorkloadState::Pending,
            node: None,
            container: None,
            exit_code: None,
            reason: None,
        }
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
    pub reason: Option<Box<str>>,
    pub head: Head,
    pub events: u32,
    /// Stream sequence of the submission that created it.
    pub cmd_seq: u64,
    /// Trace context of its admission: later events of the workload join that trace.
    pub traceparent: Option<Box<str>>,
    /// A scan of its image was requested; `Some(true)`: placement waits for the verdict.
    pub scan_gate: Option<bool>,
    /// Its image's verdict, once recorded on the workload.
    pub scan: Option<Box<ScanSummary>>,
}

impl Workload {
    pub fn state(&self) -> WorkloadState {
        if self.rejected {
            return WorkloadState::Rejected;
        }
        let live = self
            .replicas
            .iter()
            .filter(|r| !r.state.is_terminal())
            .map(|r| r.state)
            .min();
        if let Some(s) = live {
            return s;
        }
        let any = |s| self.replicas.iter().any(|r| r.state == s);
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
        self.replicas
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.state == WorkloadState::Pending && !held)
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
                })
                .collect(),
            reason: self.reason.as_deref().map(str::to_owned),
            last_seq: self.head.seq,
            events: self.events,
            scan: self.scan.as_deref().cloned(),
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
                        reason: a.pending.as_deref().map(Into::into),
                        head,
                        events: 1,
                        cmd_seq: a.cmd_seq,
                        traceparent: ev.traceparent.as_deref().map(Into::into),
                        scan_gate: None,
                        scan: None,
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
                        reason: Some(r.rejection.reason.as_str().into()),
                        head,
                        events: 1,
                        cmd_seq: r.cmd_seq,
                        traceparent: None,
                        scan_gate: None,
                        scan: None,
                    },
                );
                return Ok(changes);
            }
            EventBody::Joined(_) | EventBody::Drained(_) => {
                return Err(Skip::NotWorkload);
            }
            _ => {}
        }
        let node_of = |b: &EventBody| match b {
            EventBody::Scheduled(s) => Some(s.node.clone()),
            _ => None,
        };
        let interned = node_of(&ev.body).map(|n| self.intern(&n));
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
        match &ev.body {
            EventBody::Scheduled(s) => {
                let i = replica(w, s.replica)?;
                let rep = &mut w.replicas[i];
                release(rep, &mut changes);
                let node = interned.expect("interned above");
                changes.push(Change::Placed {
                    node: node.clone(),
                    need,
                });
                *rep = Replica {
                    state: WorkloadState::Scheduled,
                    node: Some(node),
                    ..Replica::pending()
                };
                w.reason = None;
            }
            EventBody::Started(s) => {
                let i = replica(w, s.replica)?;
                let rep = &mut w.replicas[i];
                if rep.holds() {
                    rep.state = WorkloadState::Running;
                    rep.container = Some(s.container.as_str().into());
                }
            }
            EventBody::Exited(x) => {
                let i = replica(w, x.replica)?;
                let rep = &mut w.replicas[i];
                release(rep, &mut changes);
                rep.state = if x.code == 0 {
                    WorkloadState::Succeeded
                } else {
                    WorkloadState::Failed
                };
                rep.exit_code = Some(x.code);
                rep.reason = Some(x.reason.as_str().into());
            }
            EventBody::Lost(l) => {
                if let Some(r) = l.replica {
                    let i = replica(w, r)?;
                    let rep = &mut w.replicas[i];
                    release(rep, &mut changes);
                    rep.state = WorkloadState::Lost;
                    rep.reason = Some(l.reason.as_str().into());
                }
            }
            EventBody::ScanRequested(r) => {
                w.scan_gate = Some(r.gate);
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
                let rep = &mut w.replicas[i];
                release(rep, &mut changes);
                *rep = Replica::pending();
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
                release(rep, &mut changes);
                rep.state = WorkloadState::Stopped;
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
