//! A node declared lost while it still runs (a pause, a partition) learns it from its own
//! `lost` event, reconciles again (copies replaced elsewhere meanwhile are removed) and
//! says it is back.

use std::time::Duration;

use bulkhead_actors::node::NodeMsg;
use bulkhead_schemas::event::NodeJoined;
use bulkhead_schemas::subjects;
use futures::StreamExt;
use ractor::ActorRef;
use tracing::{info, warn};

use super::{announce, log_view};
use crate::bus::Bus;

/// Stream sequence of this node's last `lost` event (0: never lost).
pub(super) async fn last_loss(bus: &Bus, name: &str) -> anyhow::Result<u64> {
    let subject = subjects::node_event(name, "lost");
    Ok(bus.last_event(&subject).await?.map_or(0, |h| h.seq))
}

/// How often a node looks in the log for its own `lost` event, in case it missed the
/// message (it was cut off from NATS when the failover appended it).
const LOSS_CHECK_EVERY: Duration = Duration::from_secs(5);

/// A node declared lost while it still runs (a pause, a partition) learns it from its own
/// `lost` event (as it is appended, or from the log within [`LOSS_CHECK_EVERY`] if it
/// missed that), reconciles again (copies replaced elsewhere meanwhile are removed) and
/// says it is back with a new `joined`.
pub(super) async fn reconcile_when_lost(
    bus: Bus,
    name: String,
    hello: NodeJoined,
    mut lost_seen: u64,
    actor: ActorRef<NodeMsg>,
) {
    let mut sub = match bus
        .client
        .subscribe(subjects::node_event(&name, "lost"))
        .await
    {
        Ok(s) => s,
        Err(e) => return warn!(node = %name, error = %e, "cannot watch for this node's loss"),
    };
    let mut check = tokio::time::interval(LOSS_CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The message is news in itself (the log may not show it yet); the log is checked.
        let heard = tokio::select! {
            m = sub.next() => if m.is_none() { return } else { true },
            _ = check.tick() => false,
        };
        if !heard {
            match last_loss(&bus, &name).await {
                Ok(seq) if seq > lost_seen => {}
                Ok(_) => continue,
                Err(e) => {
                    warn!(node = %name, error = %e, "cannot read this node's losses");
                    continue;
                }
            }
        }
        warn!(node = %name, "this node was declared lost; reconciling with the log");
        // A node that was frozen or cut off reads a log where its replicas were long since
        // replaced: reconcile at once. A node that hears of its loss as it happens reads the
        // log before the failover has appended the replicas' fate: reconcile once more after.
        for pass in [Duration::ZERO, AFTER_LOSS_AGAIN] {
            tokio::time::sleep(pass).await;
            let began = std::time::Instant::now();
            let view = match log_view(&bus, &name).await {
                Ok(v) => v,
                Err(e) => {
                    warn!(node = %name, error = %e, "cannot read the log to reconcile");
                    continue;
                }
            };
            let read_ms = began.elapsed().as_millis() as u64;
            match ractor::call!(actor, NodeMsg::Reconcile, view) {
                Ok(Ok(r)) => info!(node = %name, adopted = r.adopted, removed = r.removed,
                    exited = r.exited, read_ms, took_ms = began.elapsed().as_millis() as u64,
                    "reconciled after being declared lost"),
                Ok(Err(e)) => warn!(node = %name, error = %e, "reconciling failed"),
                Err(_) => return,
            }
            if pass.is_zero()
                && let Err(e) = announce(&bus, &name, &hello).await
            {
                warn!(node = %name, error = %e, "cannot say the node is back");
            }
        }
        // Settled up to here (by now the log holds what was heard).
        if let Ok(seq) = last_loss(&bus, &name).await {
            lost_seen = lost_seen.max(seq);
        }
    }
}

/// The second reconcile after a `lost` event, once the failover has had time to act on it.
const AFTER_LOSS_AGAIN: Duration = Duration::from_millis(1000);
