//! One handler per workload event type: how each fact moves a workload's replicas and the
//! nodes' allocations. The dispatch over every event type is in [`super::Projection::apply`].

use std::sync::Arc;

use bulkhead_schemas::Resources;
use bulkhead_schemas::api::{ScanSummary, WorkloadState};
use bulkhead_schemas::event::{
    Exited, GaveUp, Lost, QuarantineAction, Quarantined, ReplicaRequested, Scaled, ScanCompleted,
    ScanRequested, ScanWaiting, Scheduled, Started, Stopped,
};

use super::{Change, Skip};
use crate::projection::workload::{Replica, Workload};

/// A workload being updated by one event, with what the event changes on the nodes.
pub(super) struct Update<'a> {
    pub w: &'a mut Workload,
    /// What one replica holds on its node.
    pub need: Resources,
    /// When the event was emitted (Unix ms; 0 when it does not say).
    pub at_ms: u64,
    pub changes: Vec<Change>,
}

/// Replica `r` of `w`; an index the workload does not have is refused.
fn replica(w: &mut Workload, r: u32) -> Result<&mut Replica, Skip> {
    w.replicas.get_mut(r as usize).ok_or(Skip::BadReplica(r))
}

/// Replica `r` of `w`, about which `node` reports a fact: only a node that holds (or held
/// just before) a copy of it may.
fn fact<'w>(w: &'w mut Workload, r: u32, node: &str) -> Result<&'w mut Replica, Skip> {
    let rep = replica(w, r)?;
    if rep.knows(node) {
        Ok(rep)
    } else {
        Err(Skip::NotItsNode {
            node: node.to_owned(),
            replica: r,
        })
    }
}

impl Update<'_> {
    /// The replica's copy stops holding its node.
    fn release(rep: &Replica, need: Resources, changes: &mut Vec<Change>) {
        if rep.holds()
            && let Some(node) = &rep.node
        {
            changes.push(Change::Released {
                node: node.clone(),
                need,
            });
        }
    }

    /// The copy a drain replaces ended on `node`: that node's share is free.
    fn retire_old(rep: &mut Replica, node: &str, need: Resources, changes: &mut Vec<Change>) {
        if rep.replacing.as_deref() == Some(node)
            && let Some(old) = rep.replacing.take()
        {
            changes.push(Change::Released { node: old, need });
        }
    }

    pub fn scheduled(&mut self, s: &Scheduled, node: Arc<str>) -> Result<(), Skip> {
        let Update {
            w, need, changes, ..
        } = self;
        let (need, changes) = (*need, changes);
        let rep = replica(w, s.replica)?;
        match s.replaces.as_deref() {
            // A drain move: the old copy keeps its share until it has stopped.
            Some(old) if rep.holds() && rep.is_on(old) => rep.replacing = rep.node.take(),
            _ => Self::release(rep, need, changes),
        }
        changes.push(Change::Placed {
            node: node.clone(),
            need,
        });
        rep.state = WorkloadState::Scheduled;
        rep.node = Some(node);
        rep.container = None;
        rep.confinement = None;
        rep.not_before_ms = None;
        w.reason = None;
        Ok(())
    }

    pub fn started(&mut self, s: &Started) -> Result<(), Skip> {
        let rep = fact(self.w, s.replica, &s.node)?;
        if rep.holds() && rep.is_on(&s.node) {
            rep.state = WorkloadState::Running;
            rep.container = Some(s.container.as_str().into());
            rep.confinement = s.confinement.clone().map(Box::new);
        }
        Ok(())
    }

    pub fn exited(&mut self, x: &Exited) -> Result<(), Skip> {
        let Update {
            w, need, changes, ..
        } = self;
        let (need, changes) = (*need, changes);
        let rep = fact(w, x.replica, &x.node)?;
        Self::retire_old(rep, &x.node, need, changes);
        // A fact about a copy the replica has moved on from changes nothing.
        if rep.holds() && rep.is_on(&x.node) {
            Self::release(rep, need, changes);
            rep.requeue = false;
            rep.state = if x.code == 0 {
                WorkloadState::Succeeded
            } else {
                WorkloadState::Failed
            };
            rep.exit_code = Some(x.code);
            rep.reason = Some(x.reason.as_str().into());
        }
        Ok(())
    }

    /// A replica's node was lost (a node's own `lost` is not a workload event).
    pub fn lost(&mut self, l: &Lost, index: u32, node: Arc<str>) -> Result<(), Skip> {
        let Update {
            w, need, changes, ..
        } = self;
        let (need, changes) = (*need, changes);
        let rep = replica(w, index)?;
        Self::retire_old(rep, &l.node, need, changes);
        if rep.holds() && rep.is_on(&l.node) {
            Self::release(rep, need, changes);
            rep.requeue = false;
            rep.state = WorkloadState::Lost;
            rep.reason = Some(l.reason.as_str().into());
            rep.lost_on = Some(node);
        }
        Ok(())
    }

    pub fn scan_requested(&mut self, r: &ScanRequested) -> Result<(), Skip> {
        self.w.scan_gate = Some(r.gate);
        self.w.scan_requested_ms = self.at_ms;
        if r.gate {
            self.w.reason = Some(format!("waiting for the scan verdict of {}", r.image).into());
        }
        Ok(())
    }

    pub fn scan_waiting(&mut self, s: &ScanWaiting) -> Result<(), Skip> {
        self.w.scan_waiting = true;
        if self.w.scan_gate == Some(true) && self.w.scan.is_none() && !self.w.rejected {
            self.w.reason = Some(s.reason.as_str().into());
        }
        Ok(())
    }

    pub fn scan_completed(&mut self, c: &ScanCompleted) -> Result<(), Skip> {
        self.w.scan = Some(Box::new(ScanSummary {
            digest: c.digest.clone(),
            worst: c.verdict.as_ref().and_then(|v| v.worst()),
            findings: c.verdict.as_ref().map_or(0, |v| v.findings.len()),
            error: c.error.clone(),
        }));
        if self.w.scan_gate == Some(true) && !self.w.rejected {
            self.w.reason = None;
        }
        Ok(())
    }

    pub fn replica_requested(&mut self, r: &ReplicaRequested) -> Result<(), Skip> {
        let keep = self
            .w
            .spec
            .as_deref()
            .map_or(1, |s| s.restart.max_restarts as usize + 1);
        let Update {
            w,
            need,
            at_ms,
            changes,
        } = self;
        let (need, at_ms, changes) = (*need, *at_ms, changes);
        let rep = replica(w, r.replica)?;
        Self::release(rep, need, changes);
        let lost_on = (rep.state == WorkloadState::Lost)
            .then(|| rep.lost_on.clone())
            .flatten();
        rep.last_node = rep.node.take().or(rep.last_node.take());
        rep.lost_on = lost_on;
        rep.state = WorkloadState::Pending;
        rep.container = None;
        rep.confinement = None;
        rep.restarts += 1;
        rep.recent_restarts.push(at_ms);
        if rep.recent_restarts.len() > keep {
            let drop = rep.recent_restarts.len() - keep;
            rep.recent_restarts.drain(..drop);
        }
        rep.not_before_ms = bulkhead_schemas::parse_rfc3339_ms(&r.not_before);
        rep.gave_up = false;
        Ok(())
    }

    pub fn gave_up(&mut self, g: &GaveUp) -> Result<(), Skip> {
        let rep = replica(self.w, g.replica)?;
        rep.gave_up = true;
        rep.reason = Some(g.reason.as_str().into());
        self.w.reason = Some(format!("replica {}: {}", g.replica, g.reason).into());
        Ok(())
    }

    pub fn scaled(&mut self, sc: &Scaled) -> Result<(), Skip> {
        let w = &mut *self.w;
        let n = sc.replicas as usize;
        if w.replicas.len() < n {
            w.replicas.resize(n, Replica::pending());
        }
        for (i, rep) in w.replicas.iter_mut().enumerate() {
            if i >= n && rep.state == WorkloadState::Pending {
                rep.state = WorkloadState::Stopped;
            } else if i < n && i >= w.desired as usize && rep.state.is_terminal() && !rep.holds() {
                // Scaled up again into a retired slot: a fresh replica.
                *rep = Replica::pending();
            }
        }
        w.desired = sc.replicas;
        Ok(())
    }

    pub fn stop_requested(&mut self) -> Result<(), Skip> {
        self.w.stop_requested = true;
        for rep in self
            .w
            .replicas
            .iter_mut()
            .filter(|r| r.state == WorkloadState::Pending)
        {
            rep.state = WorkloadState::Stopped;
        }
        Ok(())
    }

    pub fn stopped(&mut self, s: &Stopped) -> Result<(), Skip> {
        let Update {
            w, need, changes, ..
        } = self;
        let (need, changes, stop_requested) = (*need, changes, w.stop_requested);
        let rep = fact(w, s.replica, &s.node)?;
        Self::retire_old(rep, &s.node, need, changes);
        if rep.holds() && rep.is_on(&s.node) {
            Self::release(rep, need, changes);
            if std::mem::take(&mut rep.requeue) && !stop_requested {
                // Stopped for a quarantine move: placed again in the new class.
                rep.last_node = rep.node.take();
                rep.container = None;
                rep.confinement = None;
                rep.state = WorkloadState::Pending;
            } else {
                rep.state = WorkloadState::Stopped;
            }
        }
        Ok(())
    }

    pub fn quarantined(&mut self, q: &Quarantined) -> Result<(), Skip> {
        let w = &mut *self.w;
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
        Ok(())
    }
}
