//! The node's ops: its durable consumer of `bulkhead.node.<name>.ops`, each message handed
//! to the actor and acknowledged once its ops are done and logged (redelivered when a stop
//! failed; set aside for good when it is not an ops message).

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use bulkhead_actors::node::NodeMsg;
use bulkhead_schemas::{NodeOps, subjects};
use futures::StreamExt;
use ractor::ActorRef;
use tracing::warn;

use crate::bus::Bus;
use crate::tasks::{AbortOnDrop, with_progress};

/// An ops message not acknowledged within this is redelivered.
const OPS_ACK_WAIT: Duration = Duration::from_secs(30);
/// How often a node tells JetStream it still works on an ops message (pulls and slow
/// starts can outlast the ack wait).
const OPS_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Consumes the node's ops and hands them to its actor, in a task.
pub(super) async fn consume(
    bus: &Bus,
    name: &str,
    actor: ActorRef<NodeMsg>,
) -> anyhow::Result<AbortOnDrop> {
    let stream = bus.js.get_stream(subjects::OPS_STREAM).await?;
    let durable = subjects::node_consumer(name);
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: subjects::node_ops(name),
                ack_policy: AckPolicy::Explicit,
                ack_wait: OPS_ACK_WAIT,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    let node = name.to_owned();
    Ok(AbortOnDrop(tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    warn!(node = %node, error = %e, "ops consumer error");
                    continue;
                }
            };
            let ops: NodeOps = match serde_json::from_slice(&m.payload) {
                Ok(o) => o,
                Err(e) => {
                    warn!(node = %node, error = %e, "dropping malformed ops message");
                    let _ = m.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let call = async { ractor::call!(actor, NodeMsg::Ops, ops.ops) };
            let kind = match with_progress(&m, OPS_PROGRESS_EVERY, call).await {
                Ok(Ok(())) => AckKind::Ack,
                Ok(Err(e)) => {
                    warn!(node = %node, error = %e, "ops partly failed; will retry");
                    AckKind::Nak(Some(Duration::from_secs(1)))
                }
                Err(_) => return,
            };
            let _ = m.ack_with(kind).await;
        }
    })))
}
