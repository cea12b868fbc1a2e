//! Tests of the scheduler's core, one file per scenario, with the helpers they share: a
//! heartbeat, a command, a log that stores every append, and a small world of nodes.

mod actor;
mod admission;
mod drain;
mod owed;
mod restarts;
mod scale;
mod scan;
mod snapshot;
mod stop;
mod sync;

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_schemas::event::{Event, EventBody, Started};
use bulkhead_schemas::spec::RuntimeClass;
use bulkhead_schemas::{NodeHeartbeat, NodeOp, Resources};

use super::*;
use crate::ports::log::{LogError, Outcome, Stored};

/// The tenant of every test command.
pub(super) const T: &str = "t";

/// The key of workload `id` of tenant [`T`].
pub(super) fn key(id: &str) -> String {
    bulkhead_schemas::subjects::workload_key(T, id)
}

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
        instance: String::new(),
    }
}

/// A heartbeat of node `hb.name`, enrolled first (with the classes it offers) if the
/// scheduler's directory does not know it yet.
pub(super) fn beat_in(core: &mut SchedulerCore, hb: &NodeHeartbeat, at_ms: u64) {
    use crate::directory::Identity;
    use bulkhead_schemas::identity::Role;
    if core.directory.get(Role::Node, &hb.name).is_none() {
        core.directory.enroll(Identity {
            role: Role::Node,
            name: hb.name.clone(),
            key: format!("U-{}", hb.name),
            classes: hb.runtime_classes.clone(),
            revoked_at: None,
            xkey: None,
        });
    }
    core.heartbeat(hb, at_ms)
        .expect("an enrolled node's heartbeat");
}

fn submit(seq: u64, json: serde_json::Value) -> Command {
    Command {
        cmd_seq: seq,
        stored_ms: 1_700_000_000_000,
        kind: CommandKind::Submit,
        tenant: T.into(),
        payload: json.to_string().into_bytes(),
        traceparent: None,
        signature: None,
    }
}

/// Stores every append at consecutive sequences, as the log would.
pub(super) fn store_all(plan: &mut Plan, next_seq: &mut u64) -> Vec<Outcome> {
    plan.appends
        .iter_mut()
        .map(|a| {
            let sealed = a.seal("");
            Ok(sealed
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
                .collect())
        })
        .collect()
}

struct World {
    core: SchedulerCore,
    seq: u64,
}

impl World {
    fn new(nodes: &[&str]) -> World {
        let mut core = SchedulerCore::default();
        for n in nodes {
            beat_in(&mut core, &hb(n, 1000), 0);
        }
        World { core, seq: 0 }
    }
    fn cmd(&mut self, kind: CommandKind, json: serde_json::Value) -> Commit {
        self.seq += 1;
        let cmd = Command {
            cmd_seq: 1000 + self.seq,
            stored_ms: 1_700_000_000_000,
            kind,
            tenant: T.into(),
            payload: json.to_string().into_bytes(),
            traceparent: None,
            signature: None,
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
    /// An event from another writer (node, failover) about workload `id` of tenant
    /// [`T`], as the log delivers it.
    fn logged(&mut self, id: &str, body: EventBody) {
        self.seq += 1;
        let prev = self.core.projection.get(&key(id)).map(|w| w.head.hash);
        let event = Event::new("other", &key(id), prev.as_ref(), body);
        let (_, hash) = event.seal();
        self.core.apply(&Stored {
            seq: self.seq,
            hash,
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
                confinement: None,
            }),
        );
    }
    fn node_of(&self, id: &str, replica: u32) -> String {
        self.core.projection.get(&key(id)).unwrap().replicas[replica as usize]
            .node
            .as_deref()
            .unwrap()
            .to_owned()
    }
}

fn starts(c: &Commit) -> Vec<(String, u32)> {
    starts_in(&c.ops)
}

/// The start ops among `ops`: (node, replica).
fn starts_in(ops: &BTreeMap<Arc<str>, Vec<NodeOp>>) -> Vec<(String, u32)> {
    ops.iter()
        .flat_map(|(n, ops)| {
            ops.iter().filter_map(move |op| match op {
                NodeOp::Start { replica, .. } => Some((n.to_string(), *replica)),
                _ => None,
            })
        })
        .collect()
}

/// Node `node`'s `joined` (a start of the node), as the log delivers it.
fn joined(node: &str) -> Event {
    let body = EventBody::Joined(bulkhead_schemas::event::NodeJoined {
        capacity: hb(node, 1000).capacity,
        runtime_classes: vec![],
        runtime: "sim".into(),
    });
    Event::new(&format!("node/{node}"), node, None, body)
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
