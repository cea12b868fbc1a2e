//! What the scheduler watches besides commands and the log: node heartbeats (the silence
//! rule itself is the core's).

use async_nats::jetstream::kv::Operation;
use bulkhead_actors::scheduler::actor::SchedulerMsg;
use futures::StreamExt;
use ractor::ActorRef;
use tracing::{error, warn};

use crate::bus::Bus;
use crate::bus::ops::heartbeat_of;
use crate::tasks::AbortOnDrop;

/// Starts the watch; it stops when the returned guard is dropped.
pub(super) fn start(bus: &Bus, actor: &ActorRef<SchedulerMsg>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(heartbeats(bus.clone(), actor.clone())))
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
            match heartbeat_of(&entry.key, &entry.value) {
                Ok(hb) => SchedulerMsg::Heartbeat(hb, bulkhead_schemas::now_ms()),
                Err(aside) => SchedulerMsg::SetAside(aside),
            }
        };
        if actor.send_message(msg).is_err() {
            return;
        }
    }
    warn!("node watch ended");
}
