//! `bulkhead.cmd.scale`: new replicas are placed at once; shrinking stops the highest.

use std::sync::Arc;

use bulkhead_schemas::command::ScaleCommand;
use bulkhead_schemas::event::{EventBody, Scaled};
use bulkhead_schemas::spec::MAX_REPLICAS;
use bulkhead_schemas::subjects;

use super::SchedulerCore;
use super::cluster::Overlay;
use super::command::Command;
use super::plan::{Effect, Plan, Settle, Want, event, scheduled};
use crate::ports::log::WorkloadAppend;

impl SchedulerCore {
    pub(super) fn decide_scale(&self, cmd: &Command, plan: &mut Plan, overlay: &mut Overlay) {
        let scale: ScaleCommand = match serde_json::from_slice(&cmd.payload) {
            Ok(s) => s,
            Err(e) => {
                plan.notes.push(format!(
                    "scale command {} ignored: not {{\"id\": …, \"replicas\": n}}: {e}",
                    cmd.cmd_seq
                ));
                plan.settle(cmd.cmd_seq, Settle::Done);
                return;
            }
        };
        if scale.replicas > MAX_REPLICAS {
            plan.notes.push(format!(
                "scale command {} ignored: replicas must be between 0 and {MAX_REPLICAS}, got {}",
                cmd.cmd_seq, scale.replicas
            ));
            plan.settle(cmd.cmd_seq, Settle::Done);
            return;
        }
        let key = subjects::workload_key(&cmd.tenant, &scale.id);
        let Some(w) = self.projection.get(&key) else {
            plan.notes.push(format!(
                "scale command {} ignored: no workload {}",
                cmd.cmd_seq, scale.id
            ));
            plan.settle(cmd.cmd_seq, Settle::Done);
            return;
        };
        let Some(spec) = w.spec.as_deref() else {
            plan.settle(cmd.cmd_seq, Settle::Done);
            return;
        };
        if w.rejected || w.stop_requested || scale.replicas == w.desired {
            plan.settle(cmd.cmd_seq, Settle::Done);
            return;
        }
        let tp = cmd.traceparent.as_deref();
        let body = EventBody::Scaled(Scaled {
            replicas: scale.replicas,
            cmd_seq: cmd.cmd_seq,
        });
        let mut events = vec![event(&key, body, tp)];
        let mut effect = Effect::traced(tp);
        if scale.replicas > w.desired && !w.awaits_verdict() {
            let new: Vec<Want> = (w.desired..scale.replicas).map(Want::new).collect();
            let placed: Vec<Arc<str>> = w
                .counted()
                .filter(|r| r.holds())
                .filter_map(|r| r.node.clone())
                .collect();
            let (to, pending) = self.place_replicas(spec, &new, &placed, overlay);
            effect.new_pending = pending.is_some();
            for (replica, node) in to {
                let body = scheduled(replica, &node, spec.runtime_class, None);
                events.push(event(&key, body, tp));
                effect.starts.push((replica, node));
            }
        } else {
            effect.stop_replicas = (scale.replicas..w.replicas.len() as u32).collect();
        }
        let i = plan.push(WorkloadAppend::after(&key, w.head, events), effect);
        plan.settle(cmd.cmd_seq, Settle::By(i));
    }
}
