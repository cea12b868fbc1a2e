//! The watch of the nodes bucket that the scheduler and the failover share: every
//! heartbeat handed on as it is written, across the watch's restarts.
//!
//! A KV watch (`watch_all`, deliver policy *new*) brings the entries written after it
//! starts; one can fail or end while the connection stays up (idle heartbeats missed on a
//! busy server, the bucket deleted), and is noticed only when the client misses two idle
//! heartbeats (10 s). Until the first watch starts, and between a watch's end and the next
//! one's start, the watcher hears no heartbeat: it is told so ([`Watched::Hearing`], down
//! then up), so that the silence of that gap is not taken for the nodes'. When the connection
//! comes back the watch is started again rather than resumed (the bucket's sequence may have
//! gone back: see [`follow`]).
//!
//! Each entry carries its revision (its sequence in the bucket's stream) and the time it was
//! stored; one handed on already is skipped ([`Revisions`]), so a silent node's last heartbeat
//! is never taken for a new one. A guard: the client is not known to hand one on twice (a
//! consumer it makes again after a reconnect resumes after the last entry it delivered, or
//! from the bucket's start when it had delivered none).
//!
//! A node may write its own key as often as it likes: past its budget
//! ([`bulkhead_actors::beat_budget`]) its entries are dropped unread, and the flood is set
//! aside (`beat_flood`) at once and then every ten seconds while it lasts, one item each time.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt;
use tracing::{error, warn};

use bulkhead_actors::aside::Aside;
use bulkhead_actors::beat_budget::{Admit, BeatBudget};
use bulkhead_schemas::subjects;

use super::Bus;
use crate::aside::Ledger;

/// The latest entry handed on for each node: its revision and when the server stored it
/// (Unix ns).
#[derive(Default, Debug)]
pub struct Revisions {
    latest: HashMap<String, (u64, i128)>,
}

impl Revisions {
    /// Whether the entry of `key` at `revision`, stored at `stored_ns`, is news (and, if so,
    /// it is now the latest): the entry handed on last for that key is not. Any other is:
    /// a later one, or one from a bucket made again (its revisions start over and may meet
    /// the last one seen; the time it was stored tells them apart).
    pub fn news(&mut self, key: &str, revision: u64, stored_ns: i128) -> bool {
        let entry = (revision, stored_ns);
        match self.latest.get_mut(key) {
            Some(seen) if *seen == entry => false,
            Some(seen) => {
                *seen = entry;
                true
            }
            None => {
                self.latest.insert(key.to_owned(), entry);
                true
            }
        }
    }
}

/// Each node's heartbeat interval as its latest entry in the bucket states (a watch brings
/// only the beats to come; this is what was before). An entry that is not a heartbeat within
/// limits tells nothing; a bucket that cannot be read, nothing at all (the caller goes on).
pub async fn intervals(bus: &Bus) -> Result<HashMap<String, u64>, super::BusError> {
    let store = bus.bucket(subjects::NODES_BUCKET).await?;
    let failed =
        |e: &dyn std::fmt::Display| super::BusError::Nats(format!("reading the nodes bucket: {e}"));
    let values = super::latest_values(&store).await.map_err(|e| failed(&e))?;
    Ok(values
        .into_iter()
        .filter_map(|(key, value)| {
            let hb = super::ops::heartbeat_of(&key, &value).ok()?;
            Some((key, hb.interval_ms))
        })
        .collect())
}

/// What [`follow`] hands on.
#[derive(Debug)]
pub enum Watched {
    /// A new entry: a heartbeat put, a key deleted or expired.
    Entry(Entry),
    /// The watch failed or ended (`up: false`: nothing is heard until the next), or a new
    /// one started (`up: true`), at `at_ms` (Unix ms).
    Hearing { up: bool, at_ms: u64 },
}

/// The watch went down (`false`) or came up (`true`) now.
fn hearing(up: bool) -> Watched {
    let at_ms = bulkhead_schemas::now_ms();
    Watched::Hearing { up, at_ms }
}

/// Why a watch is started again when the connection comes back.
const RECONNECTED: &str = "the connection came back: a watch resumed where it was would miss \
                           the beats of a bucket whose sequence went back";

/// Resolves once the client's connection has gone down and come back.
async fn reconnected(client: &async_nats::Client) {
    super::watch_connection(client.clone(), |up, _| !up).await;
}

/// The first pause before a watch is started again, and the longest.
const PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Hands every new entry of the nodes bucket (heartbeats put, keys deleted or expired)
/// to `take` until it returns false, and when the watch goes deaf and hears again (deaf
/// first: nothing is heard before the first watch starts). A watch that fails or ends is
/// started again after a pause that doubles while watches bring nothing, and starts short
/// again after one that did. A watch is also started again (after the short pause) when the
/// connection comes back: the client would resume it after the last entry it delivered, and
/// a server whose machine crashed can come back with the bucket's sequence below that (beats
/// written unsynced and lost), so the resumed watch would hand on nothing until the bucket
/// caught up; a new one starts at the bucket's end. A node's entries past its budget are
/// not handed on: the flood goes in `ledger`.
pub async fn follow(bus: &Bus, who: &str, ledger: &Ledger, mut take: impl FnMut(Watched) -> bool) {
    let mut revisions = Revisions::default();
    let mut budget = BeatBudget::default();
    let mut pause = PAUSE.0;
    if !take(hearing(false)) {
        return;
    }
    let mut deaf = true;
    loop {
        let mut watch = match bus.watch_nodes().await {
            Ok(w) => w,
            Err(e) => {
                error!(who, error = %e, "no node heartbeats; trying again");
                if !deaf && !take(hearing(false)) {
                    return;
                }
                deaf = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(PAUSE.1);
                continue;
            }
        };
        if std::mem::take(&mut deaf) && !take(hearing(true)) {
            return;
        }
        let back = reconnected(&bus.client);
        tokio::pin!(back);
        let why = loop {
            let next = tokio::select! {
                next = watch.next() => next,
                () = &mut back => {
                    pause = PAUSE.0;
                    break RECONNECTED.to_owned();
                }
            };
            let entry = match next {
                Some(Ok(e)) => e,
                Some(Err(e)) => break e.to_string(),
                None => break "the watch's stream ended".to_owned(),
            };
            match budget.admit(&entry.key, bulkhead_schemas::now_ms()) {
                Admit::Pass => {}
                Admit::Drop => continue,
                Admit::Report(flood) => {
                    let subject = format!("$KV.{}.{}", subjects::NODES_BUCKET, flood.node);
                    ledger.record(Aside::new(0, &subject, "beat_flood", flood));
                    continue;
                }
            }
            // A deletion or expiry is news whatever came before (its own revision).
            let stored_ns = entry.created.unix_timestamp_nanos();
            if entry.operation == Operation::Put
                && !revisions.news(&entry.key, entry.revision, stored_ns)
            {
                continue;
            }
            pause = PAUSE.0;
            if !take(Watched::Entry(entry)) {
                return;
            }
        };
        warn!(who, %why, "node watch ended; deaf to heartbeats until it starts again");
        if !take(hearing(false)) {
            return;
        }
        deaf = true;
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
        assert!(r.news("n1", 10, 1_000));
        assert!(
            !r.news("n1", 10, 1_000),
            "the same entry again, from a consumer made again"
        );
        assert!(r.news("n2", 10, 1_000), "each node on its own");
        assert!(r.news("n1", 11, 2_000));
        assert!(!r.news("n1", 11, 2_000));
        assert!(
            r.news("n1", 3, 3_000),
            "a bucket made again starts its revisions over"
        );
        assert!(!r.news("n1", 3, 3_000));
        assert!(
            r.news("n1", 3, 4_000),
            "made again once more: the same revision, stored later"
        );
    }
}
