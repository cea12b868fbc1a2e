//! What the scheduler watches besides commands and the log: node heartbeats (the silence
//! rule itself is the core's), and how many scan workers are alive (a gated workload is
//! told when its verdict cannot come). A heartbeat that does not decode or is out of
//! limits is set aside in the service's ledger.

use async_nats::jetstream::kv::Operation;
use bulkhead_actors::liveness::Ear;
use bulkhead_actors::scheduler::actor::SchedulerMsg;
use bulkhead_schemas::subjects;
use ractor::ActorRef;

use crate::aside::Ledger;
use crate::bus::Bus;
use crate::bus::node_watch::{self, Watched};
use crate::bus::ops::heartbeat_of;
use crate::tasks::AbortOnDrop;

/// Starts the watches; they stop when the returned guards are dropped.
pub(super) fn start(bus: &Bus, actor: &ActorRef<SchedulerMsg>, ledger: Ledger) -> [AbortOnDrop; 2] {
    [
        AbortOnDrop(tokio::spawn(heartbeats(bus.clone(), actor.clone(), ledger))),
        AbortOnDrop(tokio::spawn(scanners(bus.clone(), actor.clone()))),
    ]
}

/// How often the live scan workers are counted: their keys expire unrenewed, and an
/// expiry is not a watchable event, so they are listed.
const SCANNERS_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Counts the scan workers alive (keys in the scanners bucket) every few seconds, for the
/// actor. A count that fails says nothing (an outage is not the absence of workers).
async fn scanners(bus: Bus, actor: ActorRef<SchedulerMsg>) {
    loop {
        let listed = async {
            let bucket = bus.bucket(subjects::SCANNERS_BUCKET).await.ok()?;
            crate::scan::worker::live_workers(&bucket).await
        };
        if let Some(live) = listed.await
            && actor.send_message(SchedulerMsg::Scanners(live)).is_err()
        {
            return;
        }
        tokio::time::sleep(SCANNERS_EVERY).await;
    }
}

/// Every new heartbeat put in the nodes bucket, and every removal, to the actor (which
/// keeps the silence rule), until the actor's end.
async fn heartbeats(bus: Bus, actor: ActorRef<SchedulerMsg>, ledger: Ledger) {
    node_watch::follow(&bus, "scheduler", &ledger, |watched| {
        let entry = match watched {
            Watched::Entry(entry) => entry,
            Watched::Hearing { up, at_ms } => {
                let ear = Ear::Watch;
                return actor
                    .send_message(SchedulerMsg::Hearing { ear, up, at_ms })
                    .is_ok();
            }
        };
        let msg = if entry.operation != Operation::Put {
            SchedulerMsg::NodeGone(entry.key)
        } else {
            match heartbeat_of(&entry.key, &entry.value) {
                Ok(hb) => SchedulerMsg::Heartbeat(hb, bulkhead_schemas::now_ms()),
                Err(aside) => {
                    ledger.record(aside);
                    return true;
                }
            }
        };
        actor.send_message(msg).is_ok()
    })
    .await
}
