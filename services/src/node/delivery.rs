//! A node's ops as they are delivered, over core NATS only: its push consumer (made by the
//! admin at enrolment) delivers to `bulkhead.deliver.<node>`, and the node acknowledges on
//! each message's `$JS.ACK…` reply. A node lives in its own account and reaches the ops
//! stream through that stream import and the acks' service import alone: it may create,
//! inspect, pull from or delete nothing. (Pulls across accounts leave a response mapping per
//! request on the server; with a thousand nodes that cost a p99 of hundreds of ms.)

use std::time::Duration;

use async_nats::{Client, HeaderMap, Subscriber};
use bulkhead_schemas::subjects;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};

/// One delivered ops message.
pub(super) struct Delivered {
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
    /// The stream sequence (0 when the ack subject does not say).
    pub seq: u64,
    /// Which delivery of it this is (1 the first; 1 when the ack subject does not say).
    pub delivered: i64,
    ack: String,
}

/// What a node answers for a message.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reply {
    Done,
    /// Redeliver after this long.
    Nak(Duration),
    /// Never redeliver.
    Term,
    /// Still working on it.
    Progress,
}

impl Delivered {
    pub(super) async fn ack(&self, client: &Client, kind: Reply) {
        let body = match kind {
            Reply::Done => "+ACK".to_owned(),
            Reply::Nak(d) => format!("-NAK {{\"delay\": {}}}", d.as_nanos()),
            Reply::Term => "+TERM".to_owned(),
            Reply::Progress => "+WPI".to_owned(),
        };
        let _ = client.publish(self.ack.clone(), body.into()).await;
    }
}

/// The delivery count and stream sequence in a `$JS.ACK` subject: `$JS.ACK.<stream>.
/// <consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>` (or, with a domain
/// and account hash, two tokens more before the stream and a random one at the end).
fn delivered_and_seq(ack: &str) -> (i64, u64) {
    let t: Vec<&str> = ack.split('.').collect();
    let i = match t.len() {
        9 => 4,
        n if n >= 11 => 6,
        _ => return (1, 0),
    };
    let delivered = t.get(i).and_then(|s| s.parse().ok()).unwrap_or(1);
    let seq = t.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (delivered, seq)
}

/// The deliveries of a node's push consumer, on `bulkhead.deliver.<node>` (exported to the
/// nodes' account as a stream; the node may subscribe to its own only).
pub(super) struct Deliveries {
    sub: Subscriber,
}

impl Deliveries {
    pub(super) async fn new(client: &Client, node: &str) -> anyhow::Result<Deliveries> {
        let sub = client.subscribe(subjects::node_deliver(node)).await?;
        Ok(Deliveries { sub })
    }

    /// The next message and those delivered already behind it, up to `max` in all; None
    /// when the connection is gone.
    pub(super) async fn next_together(&mut self, max: usize) -> Option<Vec<Delivered>> {
        let mut all = vec![self.next().await?];
        while all.len() < max {
            match self.next().now_or_never() {
                Some(Some(m)) => all.push(m),
                _ => break,
            }
        }
        Some(all)
    }

    /// The next message; None when the connection is gone.
    pub(super) async fn next(&mut self) -> Option<Delivered> {
        loop {
            let m = self.sub.next().await?;
            // A status (an idle heartbeat) carries no op; a message without an ack
            // subject came from no consumer.
            if m.status.is_some() || m.payload.is_empty() {
                continue;
            }
            let Some(ack) = m.reply.map(|r| r.to_string()) else {
                continue;
            };
            let (delivered, seq) = delivered_and_seq(&ack);
            return Some(Delivered {
                seq,
                delivered,
                payload: m.payload,
                headers: m.headers,
                ack,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_and_stream_sequence_come_from_either_ack_format() {
        assert_eq!(
            delivered_and_seq("$JS.ACK.OPS.c1.3.42.7.1796110122885739725.2"),
            (3, 42)
        );
        assert_eq!(
            delivered_and_seq("$JS.ACK.dom.ACCHASH.OPS.c1.1.42.7.1796110122885739725.2.rand"),
            (1, 42)
        );
        assert_eq!(delivered_and_seq("nonsense"), (1, 0));
    }
}
