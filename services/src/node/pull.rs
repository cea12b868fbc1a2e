//! A node's pull of its own ops consumer, over core NATS only: `$JS.API.CONSUMER.MSG.NEXT`
//! requests on its inbox and acknowledgements on each message's `$JS.ACK…` reply. A node
//! lives in its own account and reaches the ops stream through those two imports alone; it
//! may create, inspect or delete nothing (the admin makes its consumer at enrolment).

use std::time::Duration;

use async_nats::{Client, HeaderMap, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

/// How long one pull request waits on the server for a message.
const PULL_EXPIRES: Duration = Duration::from_secs(20);

/// One delivered ops message.
pub(super) struct Delivered {
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
    /// The stream sequence (0 when the ack subject does not say).
    pub seq: u64,
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

/// The stream sequence in a `$JS.ACK` subject: `$JS.ACK.<stream>.<consumer>.<delivered>.
/// <stream seq>.<consumer seq>.<time>.<pending>` (or, with a domain and account hash, two
/// tokens more before the stream and a random one at the end).
fn stream_seq(ack: &str) -> u64 {
    let t: Vec<&str> = ack.split('.').collect();
    let i = match t.len() {
        9 => 5,
        n if n >= 11 => 7,
        _ => return 0,
    };
    t.get(i).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A pull of one durable consumer.
pub(super) struct Pull {
    client: Client,
    next: String,
    inbox: String,
    sub: Subscriber,
}

impl Pull {
    pub(super) async fn new(client: &Client, stream: &str, consumer: &str) -> anyhow::Result<Pull> {
        let inbox = client.new_inbox();
        let sub = client.subscribe(inbox.clone()).await?;
        Ok(Pull {
            client: client.clone(),
            next: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            inbox,
            sub,
        })
    }

    /// The next message (waiting as long as it takes); None when the connection is gone.
    pub(super) async fn next(&mut self) -> Option<Delivered> {
        loop {
            let req = json!({"batch": 1, "expires": PULL_EXPIRES.as_nanos() as u64});
            if self
                .client
                .publish_with_reply(
                    self.next.clone(),
                    self.inbox.clone(),
                    req.to_string().into(),
                )
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let wait = PULL_EXPIRES + Duration::from_secs(5);
            match tokio::time::timeout(wait, self.sub.next()).await {
                Err(_) => continue, // the request was lost (a reconnect): ask again
                Ok(None) => return None,
                Ok(Some(m)) => {
                    // A status (no messages, request timeout, heartbeat) carries no op.
                    if m.status.is_some() || m.payload.is_empty() {
                        continue;
                    }
                    let Some(ack) = m.reply.map(|r| r.to_string()) else {
                        continue;
                    };
                    return Some(Delivered {
                        seq: stream_seq(&ack),
                        payload: m.payload,
                        headers: m.headers,
                        ack,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_sequence_comes_from_either_ack_format() {
        assert_eq!(
            stream_seq("$JS.ACK.OPS.c1.1.42.7.1796110122885739725.2"),
            42
        );
        assert_eq!(
            stream_seq("$JS.ACK.dom.ACCHASH.OPS.c1.1.42.7.1796110122885739725.2.rand"),
            42
        );
        assert_eq!(stream_seq("nonsense"), 0);
    }
}
