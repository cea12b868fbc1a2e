//! Placement of waiting replicas: which replicas of which workloads go where now, over
//! the pure filter and score of [`super::cluster`]. A replica backing off waits for its
//! time; one whose node was lost never goes back there; one that failed prefers another
//! node; replicas of one workload spread over nodes while others fit.

use std::sync::Arc;

use bulkhead_schemas::{Resources, WorkloadSpec};

use super::SchedulerCore;
use super::cluster::{Names, Overlay, Request};
use super::plan::{Effect, Plan, Want, event, scheduled};
use crate::ports::log::WorkloadAppend;

impl SchedulerCore {
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
        let mut keep = Vec::new();
        for id in self.pending.take_front(limit) {
            let Some(w) = self.projection.get(&id) else {
                continue;
            };
            let Some(spec) = w.spec.clone() else { continue };
            let mut waiting: Vec<Want> = Vec::new();
            let mut later = false;
            for i in w.pending_replicas() {
                let Some(r) = w.replicas.get(i as usize) else {
                    continue;
                };
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
                    keep.push(id.clone());
                }
                continue;
            }
            let placed: Vec<Arc<str>> = w
                .replicas
                .iter()
                .filter(|r| r.holds())
                .filter_map(|r| r.node.clone())
                .collect();
            let (to, still) = self.place_replicas(&spec, &waiting, &placed, &mut overlay);
            if still.is_some() || later {
                keep.push(id.clone());
            }
            if to.is_empty() {
                continue;
            }
            // A later placement joins the trace of the workload's admission.
            let tp = w.traceparent.as_deref();
            let mut effect = Effect::traced(tp);
            let mut events = Vec::with_capacity(to.len());
            for (replica, node) in to {
                let body = scheduled(replica, &node, spec.runtime_class, None);
                events.push(event(&id, body, tp));
                effect.starts.push((replica, node));
            }
            plan.push(WorkloadAppend::after(&id, w.head, events), effect);
        }
        self.pending.put_front(keep);
        plan
    }

    /// Places what fits now; returns the placements and, if some replica did not fit, why.
    pub(super) fn place_replicas(
        &self,
        spec: &WorkloadSpec,
        replicas: &[Want],
        already: &[Arc<str>],
        overlay: &mut Overlay,
    ) -> (Vec<(u32, Arc<str>)>, Option<String>) {
        let need = Resources::of(spec);
        let mut avoid: Names = already.iter().cloned().collect();
        let mut placed = Vec::new();
        for want in replicas {
            let replica = want.replica;
            let req = Request {
                need,
                class: spec.runtime_class,
                selector: &spec.node_selector,
                strategy: spec.placement,
                avoid: &avoid,
                // After a failure, prefer another node than the one it failed on.
                prefer_not: want.prefer_not.as_ref(),
                exclude: want.never.as_slice(),
            };
            match self.cluster.place(&req, overlay) {
                Ok(i) => {
                    overlay.add(&self.cluster, i, &need);
                    let Some(node) = self.cluster.nodes().get(i) else {
                        return (placed, Some(format!("node {i} vanished from the cluster")));
                    };
                    avoid.insert(node.name.clone());
                    placed.push((replica, node.name.clone()));
                }
                Err(u) => return (placed, Some(u.reason)),
            }
        }
        (placed, None)
    }
}
