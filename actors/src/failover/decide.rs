//! The failover's decisions: from the projection of the log, which ended replicas come
//! back (`replica_requested`, after a backoff) or are given up (`gave_up`), and what a lost
//! node costs each workload (`lost`, then the restart decision). Pure: time is an argument.
//!
//! Decisions are level-triggered: they read the replica's state in the log, not a queue of
//! exits. A replica that ended and has no decision after its ending is undecided, whoever
//! restarts; a decision moves it out of that state. With appends checked against the
//! workload's head, an ending is decided exactly once, even by two failover instances.

use std::collections::BTreeMap;

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::event::{Event, EventBody, GaveUp, Lost, ReplicaRequested};

use super::restart::{self, Decision, Ending};
use crate::ports::log::WorkloadAppend;
use crate::projection::{Projection, Replica, Workload};

use super::SERVICE;

/// How a replica's copy ended, if it ended in a way the failover decides on.
fn ending(r: &Replica) -> Option<Ending> {
    match r.state {
        WorkloadState::Lost => Some(Ending::Lost),
        WorkloadState::Failed | WorkloadState::Succeeded => Some(Ending::Exited {
            code: r.exit_code.unwrap_or(-1),
        }),
        _ => None,
    }
}

fn cause(r: &Replica, ending: Ending) -> String {
    let reason = r.reason.as_deref().unwrap_or("");
    match ending {
        Ending::Lost => format!("lost: {reason}"),
        Ending::Exited { code } => format!("exited: code {code} ({reason})"),
    }
}

/// The decision event for replica `i`, ended as `ending`; None when the policy leaves it.
fn decide_replica(
    id: &str,
    w: &Workload,
    i: usize,
    r: &Replica,
    ending: Ending,
    now_ms: u64,
) -> Option<EventBody> {
    let spec = w.spec.as_deref()?;
    // The same replica and restart count always draw the same jitter.
    let jitter = restart::jitter_of(&format!("{id}/{i}/{}", r.restarts));
    match restart::decide(&spec.restart, ending, &r.recent_restarts, now_ms, jitter) {
        Decision::Leave => None,
        Decision::GiveUp { reason } => Some(EventBody::GaveUp(GaveUp {
            replica: i as u32,
            reason,
            restarts: r.restarts,
        })),
        Decision::Restart {
            attempt,
            not_before_ms,
        } => Some(EventBody::ReplicaRequested(ReplicaRequested {
            replica: i as u32,
            cause: cause(r, ending),
            attempt,
            not_before: bulkhead_schemas::rfc3339_from_ms(not_before_ms),
        })),
    }
}

/// Whether the failover may act on the workload at all.
fn in_scope(w: &Workload) -> bool {
    w.spec.is_some() && !w.rejected && !w.stop_requested
}

fn event(id: &str, w: &Workload, body: EventBody) -> Event {
    let mut e = Event::new(SERVICE, id, None, body);
    e.traceparent = w.traceparent.as_deref().map(str::to_owned);
    e
}

/// What to append for one workload now: a decision for every ended, undecided replica.
pub fn plan_workload(id: &str, w: &Workload, now_ms: u64) -> Option<WorkloadAppend> {
    if !in_scope(w) {
        return None;
    }
    let events: Vec<Event> = w
        .replicas
        .iter()
        .enumerate()
        .take(w.desired as usize)
        .filter(|(_, r)| !r.gave_up)
        .filter_map(|(i, r)| {
            let body = decide_replica(id, w, i, r, ending(r)?, now_ms)?;
            Some(event(id, w, body))
        })
        .collect();
    (!events.is_empty()).then(|| WorkloadAppend::after(id, w.head, events))
}

/// A node is lost: each replica it held (or a drain was moving off it) gets `lost`, and
/// right behind it, in the same append, its restart decision.
pub fn lose_node(
    projection: &Projection,
    node: &str,
    reason: &str,
    now_ms: u64,
) -> Vec<WorkloadAppend> {
    lose_node_in(projection.iter(), node, reason, now_ms)
}

/// [`lose_node`] over some workloads only (those that changed since a node was lost).
pub fn lose_node_in<'a>(
    workloads: impl IntoIterator<Item = (&'a String, &'a Workload)>,
    node: &str,
    reason: &str,
    now_ms: u64,
) -> Vec<WorkloadAppend> {
    let mut out = Vec::new();
    for (id, w) in workloads {
        if w.spec.is_none() {
            continue;
        }
        let mut events = Vec::new();
        for (i, r) in w.replicas.iter().enumerate() {
            let here = r.holds() && r.node.as_deref() == Some(node);
            let old_copy = r.replacing.as_deref() == Some(node);
            if !here && !old_copy {
                continue;
            }
            events.push(event(
                id,
                w,
                EventBody::Lost(Lost {
                    replica: Some(i as u32),
                    node: node.to_owned(),
                    reason: reason.to_owned(),
                }),
            ));
            if !here || !in_scope(w) || i as u32 >= w.desired {
                continue;
            }
            let lost = Replica {
                state: WorkloadState::Lost,
                reason: Some(reason.into()),
                ..r.clone()
            };
            if let Some(body) = decide_replica(id, w, i, &lost, Ending::Lost, now_ms) {
                events.push(event(id, w, body));
            }
        }
        if !events.is_empty() {
            out.push(WorkloadAppend::after(id, w.head, events));
        }
    }
    out
}

/// Nodes the projection places replicas on.
pub fn nodes_in_use(projection: &Projection) -> Vec<String> {
    let mut nodes: BTreeMap<&str, ()> = BTreeMap::new();
    for (_, w) in projection.iter() {
        for r in &w.replicas {
            if r.holds()
                && let Some(n) = r.node.as_deref()
            {
                nodes.insert(n, ());
            }
            if let Some(n) = r.replacing.as_deref() {
                nodes.insert(n, ());
            }
        }
    }
    nodes.into_keys().map(str::to_owned).collect()
}
