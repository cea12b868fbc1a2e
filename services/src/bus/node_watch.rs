//! The watch of the nodes bucket that the scheduler and the failover share: every
//! heartbeat handed on as it is written, across the watch's restarts.
//!
//! A KV watch (`watch_all`, deliver policy *new*) brings only the entries written after it
//! starts; one can fail or end while the connection stays up (idle heartbeats missed on a
//! busy server, the bucket deleted), and is noticed only when the client misses two idle
//! heartbeats (10 s). Between its end and the next watch's start the watcher hears no
//! heartbeat: it is told so ([`Watched::Deaf`], then [`Watched::Again`]), so that the
//! silence of that gap is not taken for the nodes'.

use std::time::Duration;

use async_nats::jetstream::kv::Entry;
use futures::StreamExt;
use tracing::{error, warn};

use super::Bus;

/// What [`follow`] hands on.
#[derive(Debug)]
pub enum Watched {
    /// A new entry: a heartbeat put, a key deleted or expired.
    Entry(Entry),
    /// The watch failed or ended at this time (Unix ms): nothing is heard until `Again`.
    Deaf(u64),
    /// A new watch started at this time: heartbeats are heard again.
    Again(u64),
}

/// The first pause before a watch is started again, and the longest.
const PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Hands every new entry of the nodes bucket (heartbeats put, keys deleted or expired)
/// to `take` until it returns false, and when the watch goes deaf and hears again. A watch
/// that fails or ends is started again after a pause that doubles while watches bring
/// nothing, and starts short again after one that did.
pub async fn follow(bus: &Bus, who: &str, mut take: impl FnMut(Watched) -> bool) {
    let mut pause = PAUSE.0;
    let mut deaf = false;
    loop {
        let mut watch = match bus.watch_nodes().await {
            Ok(w) => w,
            Err(e) => {
                error!(who, error = %e, "no node heartbeats; trying again");
                if !deaf && !take(Watched::Deaf(bulkhead_schemas::now_ms())) {
                    return;
                }
                deaf = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(PAUSE.1);
                continue;
            }
        };
        if std::mem::take(&mut deaf) && !take(Watched::Again(bulkhead_schemas::now_ms())) {
            return;
        }
        let why = loop {
            let entry = match watch.next().await {
                Some(Ok(e)) => e,
                Some(Err(e)) => break e.to_string(),
                None => break "the watch's stream ended".to_owned(),
            };
            pause = PAUSE.0;
            if !take(Watched::Entry(entry)) {
                return;
            }
        };
        warn!(who, %why, "node watch ended; deaf to heartbeats until it starts again");
        if !take(Watched::Deaf(bulkhead_schemas::now_ms())) {
            return;
        }
        deaf = true;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(PAUSE.1);
    }
}
