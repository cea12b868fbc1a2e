//! The watch of the nodes bucket that the scheduler and the failover share: every
//! heartbeat handed on once, across the watch's restarts.
//!
//! A KV watch starts with each key's latest entry. A watch started again (after a missed
//! idle heartbeat on a busy server, or an outage) would hand on a node's last heartbeat,
//! however old, as if it had just arrived, and a silent node would look alive again for
//! as long as its entry lives in the bucket (`Topology::node_ttl`). Each entry carries its
//! revision (its sequence in the bucket's stream): one seen already is not handed on.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt;
use tracing::{error, warn};

use super::Bus;

/// The latest revision handed on for each node.
#[derive(Default, Debug)]
pub struct Revisions {
    latest: HashMap<String, u64>,
}

impl Revisions {
    /// Whether the entry of `key` at `revision` is news (and, if so, it is now the
    /// latest): the revision handed on last for that key is not. A watch brings each key's
    /// revisions in order, and a new watch starts again at the latest, so one lower than
    /// the last can only come from a bucket made again: news too.
    pub fn news(&mut self, key: &str, revision: u64) -> bool {
        match self.latest.get_mut(key) {
            Some(seen) if *seen == revision => false,
            Some(seen) => {
                *seen = revision;
                true
            }
            None => {
                self.latest.insert(key.to_owned(), revision);
                true
            }
        }
    }
}

/// The first pause before a watch is started again, and the longest.
const PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Hands every new entry of the nodes bucket (heartbeats put, keys deleted or expired)
/// to `take` until it returns false. A watch that fails or ends is started again after a
/// pause that doubles while watches bring nothing, and starts short again after one that
/// did.
pub async fn follow(bus: &Bus, who: &str, mut take: impl FnMut(Entry) -> bool) {
    let mut revisions = Revisions::default();
    let mut pause = PAUSE.0;
    loop {
        let mut watch = match bus.watch_nodes().await {
            Ok(w) => w,
            Err(e) => {
                error!(who, error = %e, "no node heartbeats; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(PAUSE.1);
                continue;
            }
        };
        let why = loop {
            let entry = match watch.next().await {
                Some(Ok(e)) => e,
                Some(Err(e)) => break e.to_string(),
                None => break "the watch's stream ended".to_owned(),
            };
            // A deletion or expiry is news whatever came before (its own revision).
            if entry.operation == Operation::Put && !revisions.news(&entry.key, entry.revision) {
                continue;
            }
            pause = PAUSE.0;
            if !take(entry) {
                return;
            }
        };
        warn!(who, %why, "node watch ended; starting it again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(PAUSE.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_handed_on_once_across_watches() {
        let mut r = Revisions::default();
        assert!(r.news("n1", 10));
        assert!(!r.news("n1", 10), "the same entry again, from a new watch");
        assert!(r.news("n2", 10), "each node on its own");
        assert!(r.news("n1", 11));
        assert!(!r.news("n1", 11));
        assert!(
            r.news("n1", 3),
            "a bucket made again starts its revisions over"
        );
        assert!(!r.news("n1", 3));
    }
}
