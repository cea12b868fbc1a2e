//! The event-log port: what an actor hands to the log (per-workload appends, chained and
//! checked against the workload's head) and what it gets back. Adapters implement it.

use std::future::Future;

use bulkhead_schemas::event::{Event, Hash};
use bulkhead_schemas::subjects;

use crate::projection::Head;

/// Events for one workload, appended in order after `head` (None: the workload is new).
#[derive(Clone, Debug)]
pub struct WorkloadAppend {
    pub workload: String,
    pub head: Option<Head>,
    pub events: Vec<Event>,
    /// On a concurrent write, re-read the head and append after it (node facts such as
    /// `started` stay true whatever came before); otherwise report the conflict.
    pub rechain_on_conflict: bool,
}

/// One event ready to publish.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub subject: String,
    pub bytes: Vec<u8>,
    pub hash: Hash,
}

impl WorkloadAppend {
    /// Chains the events after `head` (setting each `prev`) and serializes them.
    pub fn seal(&mut self) -> Vec<Sealed> {
        let mut prev = self.head.map(|h| h.hash);
        self.events
            .iter_mut()
            .map(|e| {
                e.prev = prev.map(hex::encode);
                let (bytes, hash) = e.seal();
                prev = Some(hash);
                Sealed {
                    subject: subjects::workload_event(&self.workload, e.kind()),
                    bytes,
                    hash,
                }
            })
            .collect()
    }

    /// The subject sequence the first event must find (0: no event yet).
    pub fn expected_seq(&self) -> u64 {
        self.head.map(|h| h.seq).unwrap_or(0)
    }
}

/// An event as stored: its stream sequence and hash.
#[derive(Clone, Debug)]
pub struct Stored {
    pub seq: u64,
    pub hash: Hash,
    pub event: Event,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Stored(Vec<Stored>),
    /// The workload's head moved (another writer appended first).
    Conflict,
    Failed(String),
}

/// Appends workload events durably, each append atomically and only after its head.
pub trait EventLog: Clone + Send + Sync + 'static {
    /// One outcome per append, in order. Appends are independent of each other.
    fn append(&self, appends: Vec<WorkloadAppend>) -> impl Future<Output = Vec<Outcome>> + Send;

    /// Publishes an event about a node (`bulkhead.evt.node.<node>.<type>`; the event's
    /// subject is the node). Node events are not chained.
    fn publish_node(&self, event: Event) -> impl Future<Output = Result<(), String>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_schemas::event::{EventBody, StopRequested, hash_bytes};

    #[test]
    fn seal_chains_events_after_the_head() {
        let body = || {
            EventBody::StopRequested(StopRequested {
                cmd_seq: 1,
                grace_secs: None,
            })
        };
        let mut a = WorkloadAppend {
            workload: "w".into(),
            head: Some(Head {
                seq: 4,
                hash: [7; 32],
            }),
            events: vec![
                Event::new("s", "w", None, body()),
                Event::new("s", "w", None, body()),
            ],
            rechain_on_conflict: false,
        };
        let sealed = a.seal();
        assert_eq!(a.expected_seq(), 4);
        assert_eq!(sealed[0].subject, "bulkhead.evt.wl.w.stop_requested");
        assert_eq!(
            a.events[0].prev.as_deref(),
            Some(hex::encode([7u8; 32]).as_str())
        );
        assert_eq!(
            a.events[1].prev,
            Some(hex::encode(hash_bytes(&sealed[0].bytes)))
        );
        assert_eq!(sealed[1].hash, hash_bytes(&sealed[1].bytes));
    }
}
