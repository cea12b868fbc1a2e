//! What the scheduler watches besides commands and the workload log: node heartbeats (the
//! silence rule itself is the core's), node events (drains, losses) and scan verdicts,
//! each from the start of its history.

use async_nats::jetstream::kv::Operation;
use bulkhead_actors::scheduler::actor::SchedulerMsg;
use bulkhead_schemas::event::EventBody;
use bulkhead_schemas::{NodeHeartbeat, subjects};
use futures::StreamExt;
use ractor::ActorRef;
use tracing::{error, warn};

use crate::bus::Bus;
use crate::follow::read_events;
use crate::tasks::AbortOnDrop;

/// Starts every watch; they stop when the returned guards are dropped.
pub(super) fn start(bus: &Bus, actor: &ActorRef<SchedulerMsg>) -> [AbortOnDrop; 3] {
    [
        AbortOnDrop(tokio::spawn(heartbeats(bus.clone(), actor.clone()))),
        AbortOnDrop(tokio::spawn(scans(bus.clone(), actor.clone()))),
        AbortOnDrop(tokio::spawn(node_events(bus.clone(), actor.clone()))),
    ]
}

/// Every scan outcome in the log, from the first: past verdicts settle workloads that
/// waited while no scheduler ran; new ones arrive as they are stored.
async fn scans(bus: Bus, actor: ActorRef<SchedulerMsg>) {
    read_events(&bus, subjects::EVT_SCANS, "scan events", |read| {
        let msg = match read {
            Ok(ev) => {
                let done_ms = bulkhead_schemas::parse_rfc3339_ms(&ev.at).unwrap_or(0);
                match ev.body {
                    EventBody::ScanCompleted(c) => {
                        SchedulerMsg::ScanCompleted(Box::new(c), done_ms)
                    }
                    _ => return true,
                }
            }
            Err(aside) => SchedulerMsg::SetAside(aside),
        };
        actor.send_message(msg).is_ok()
    })
    .await;
}

/// Every node event in the log, from the first: drains in force survive a restart, a lost
/// node takes no work until it heartbeats again.
async fn node_events(bus: Bus, actor: ActorRef<SchedulerMsg>) {
    read_events(&bus, subjects::EVT_NODES, "node events", |read| {
        let msg = match read {
            Ok(ev) => SchedulerMsg::NodeEvent(Box::new(ev)),
            Err(aside) => SchedulerMsg::SetAside(aside),
        };
        actor.send_message(msg).is_ok()
    })
    .await;
}

/// Every heartbeat put in the nodes bucket, and every removal, to the actor (which keeps
/// the silence rule).
async fn heartbeats(bus: Bus, actor: ActorRef<SchedulerMsg>) {
    let mut watch = match bus.watch_nodes().await {
        Ok(w) => w,
        Err(e) => return error!(error = %e, "no node heartbeats"),
    };
    while let Some(entry) = watch.next().await {
        let Ok(entry) = entry else {
            return warn!("node watch ended");
        };
        let msg = if entry.operation != Operation::Put {
            SchedulerMsg::NodeGone(entry.key)
        } else {
            match serde_json::from_slice::<NodeHeartbeat>(&entry.value) {
                Ok(hb) => SchedulerMsg::Heartbeat(hb, bulkhead_schemas::now_ms()),
                Err(e) => {
                    warn!(key = %entry.key, error = %e, "ignoring malformed heartbeat");
                    continue;
                }
            }
        };
        if actor.send_message(msg).is_err() {
            return;
        }
    }
    warn!("node watch ended");
}
