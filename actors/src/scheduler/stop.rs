//! `bulkhead.cmd.stop`: every copy of a workload stops; nothing brings it back.

use bulkhead_schemas::command::{MAX_GRACE_SECS, StopCommand};
use bulkhead_schemas::event::{EventBody, StopRequested};
use bulkhead_schemas::subjects;

use super::SchedulerCore;
use super::admission::InPlan;
use super::command::Command;
use super::plan::{Effect, Plan, Settle, event};
use crate::ports::log::WorkloadAppend;

impl SchedulerCore {
    pub(super) fn decide_stop(&self, cmd: &Command, plan: &mut Plan, in_plan: &InPlan) {
        let stop: StopCommand = match serde_json::from_slice(&cmd.payload) {
            Ok(s) => s,
            Err(e) => {
                plan.notes.push(format!(
                    "stop command {} ignored: not {{\"id\": …}}: {e}",
                    cmd.cmd_seq
                ));
                plan.settle(cmd.cmd_seq, Settle::Done);
                return;
            }
        };
        let key = subjects::workload_key(&cmd.tenant, &stop.id);
        let Some(w) = self.projection.get(&key) else {
            if in_plan.contains_key(&key) {
                // Submitted in this very batch: stop it once the submission is in the log.
                plan.settle(cmd.cmd_seq, Settle::Later);
            } else {
                plan.notes.push(format!(
                    "stop command {} ignored: no workload {}",
                    cmd.cmd_seq, stop.id
                ));
                plan.settle(cmd.cmd_seq, Settle::Done);
            }
            return;
        };
        if w.stop_requested || w.state().is_terminal() {
            plan.settle(cmd.cmd_seq, Settle::Done);
            return;
        }
        let grace_secs = stop.grace_secs.map(|g| g.min(MAX_GRACE_SECS));
        let tp = cmd.traceparent.as_deref();
        let body = EventBody::StopRequested(StopRequested {
            cmd_seq: cmd.cmd_seq,
            grace_secs,
        });
        let effect = Effect {
            stop: true,
            grace_secs,
            ..Effect::traced(tp)
        };
        let append = WorkloadAppend::after(&key, w.head, vec![event(&key, body, tp)]);
        let i = plan.push(append, effect);
        plan.settle(cmd.cmd_seq, Settle::By(i));
    }
}
