//! Drains: `bulkhead.cmd.drain` cordons a node and moves its replicas off one at a time
//! (the new copy runs before the old one stops); `bulkhead.cmd.undrain` lifts the cordon.
//! A drain holds through restarts of the node: its `draining` event is in the log, and
//! only `undrained` lifts it.

use std::sync::Arc;

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::command::DrainCommand;
use bulkhead_schemas::event::{EventBody, NodeDrained, NodeDraining, NodeUndrained};

use super::SchedulerCore;
use super::cluster::Overlay;
use super::command::Command;
use super::plan::{Effect, Plan, Settle, Want, event, scheduled};
use crate::ports::log::WorkloadAppend;

impl SchedulerCore {
    /// The node a drain or undrain command names, if it is one the scheduler knows.
    fn drain_target(&self, cmd: &Command, what: &str, plan: &mut Plan) -> Option<String> {
        plan.settle(cmd.cmd_seq, Settle::Done);
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

    pub(super) fn decide_undrain(&mut self, cmd: &Command, plan: &mut Plan) {
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

    pub(super) fn decide_drain(&mut self, cmd: &Command, plan: &mut Plan) {
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
        let ev = event(node, body, cmd.traceparent.as_deref());
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
                let body = EventBody::Drained(NodeDrained {
                    reason: "every replica moved off the node".into(),
                });
                plan.node_events.push((None, event(&node, body, None)));
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
        let (placed, _) = self.place_replicas(spec, &want, &others, overlay);
        let Some((replica, to)) = placed.into_iter().next() else {
            return; // nowhere to go yet; tried again on the next tick
        };
        plan.notes
            .push(format!("drain: moving {id}/{replica} from {node} to {to}"));
        let tp = w.traceparent.as_deref();
        let body = scheduled(replica, &to, spec.runtime_class, Some(node));
        let effect = Effect {
            starts: vec![(replica, to)],
            ..Effect::traced(tp)
        };
        plan.push(
            WorkloadAppend::after(id, w.head, vec![event(id, body, tp)]),
            effect,
        );
    }
}
