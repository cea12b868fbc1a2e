//! The event-log port: what an actor hands to the log (per-workload appends, chained and
//! checked against the workload's head) and what it gets back. Adapters implement it; the
//! twin is [`super::mem_log::MemLog`].

use std::future::Future;

use bulkhead_schemas::event::{Event, Hash};
use bulkhead_schemas::subjects;

use super::Cause;

/// The last stored event of a workload: what the next append expects and chains to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    #[serde(with = "hex32")]
    pub hash: Hash,
}

/// A hash as 64 hex digits (not an array of 32 numbers) in what is serialized.
pub mod hex32 {
    use bulkhead_schemas::event::HashHex;

    pub fn serialize<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(HashHex::of(h).as_str())
    }

    /// Read from the text as given (borrowed from the input when it can be), never copied
    /// into a `String` first.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        d.deserialize_str(Digits)
    }

    struct Digits;

    impl serde::de::Visitor<'_> for Digits {
        type Value = [u8; 32];

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("64 hex digits")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<[u8; 32], E> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out).map_err(E::custom)?;
            Ok(out)
        }
    }
}

/// Events for one workload, appended in order after `head` (None: the workload is new).
#[derive(Clone, Debug)]
pub struct WorkloadAppend {
    pub workload: String,
    pub head: Option<Head>,
    pub events: Vec<Event>,
    /// On a concurrent write, re-read the head and append after it (node facts such as
    /// `started` stay true whatever came before); otherwise report the conflict.
    pub rechain_on_conflict: bool,
    /// For a new workload: the last sequence stored under its subjects that every reader
    /// set aside (a forged event took the id first). The append expects it; `prev` stays
    /// empty, since nothing was applied.
    pub floor: u64,
}

/// One event ready to publish.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub subject: String,
    pub bytes: Vec<u8>,
    pub hash: Hash,
}

impl WorkloadAppend {
    /// The first events of a new workload: the append fails if the workload has any.
    pub fn new(workload: &str, events: Vec<Event>) -> Self {
        WorkloadAppend::at(workload, None, events)
    }

    /// Events that hold only if nothing was appended after `head` (a decision taken on
    /// what the writer saw).
    pub fn after(workload: &str, head: Head, events: Vec<Event>) -> Self {
        WorkloadAppend::at(workload, Some(head), events)
    }

    /// Events after `head`, or the first of the workload when there is none.
    pub fn at(workload: &str, head: Option<Head>, events: Vec<Event>) -> Self {
        WorkloadAppend {
            workload: workload.to_owned(),
            head,
            events,
            rechain_on_conflict: false,
            floor: 0,
        }
    }

    /// Facts that stay true whatever came before (a node's `started`): on a concurrent
    /// write they are chained after the new head instead of failing.
    pub fn rechaining(mut self) -> Self {
        self.rechain_on_conflict = true;
        self
    }

    /// Chains the events after `head` (setting each `prev`), names `key` as their writer,
    /// and serializes them: the bytes a signature then covers.
    pub fn seal(&mut self, key: &str) -> Vec<Sealed> {
        let mut prev = self.head.map(|h| h.hash);
        self.events
            .iter_mut()
            .map(|e| {
                e.prev = prev.map(hex::encode);
                e.actor.key = key.to_owned();
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

    /// A new workload whose subjects hold set-aside messages up to `seq`.
    pub fn after_set_aside(mut self, seq: u64) -> Self {
        self.floor = seq;
        self
    }

    /// The subject sequence the first event must find (0: no event yet). A head's sequence
    /// counts the messages readers set aside after its event (they keep their place in the
    /// stream); its hash is the last applied event's.
    pub fn expected_seq(&self) -> u64 {
        self.head.map(|h| h.seq).unwrap_or(0).max(self.floor)
    }
}

/// An event as stored: its stream sequence and hash.
#[derive(Clone, Debug)]
pub struct Stored {
    pub seq: u64,
    pub hash: Hash,
    pub event: Event,
}

/// What a reader of the log gets at a time, verified (`crate::verify`), each family in
/// stream order, and what was set aside on the way.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Workload events.
    pub events: Vec<Stored>,
    /// Node events (`joined`, `lost`, drains).
    pub nodes: Vec<Stored>,
    /// Scan verdicts, with when the server stored each (Unix ms).
    pub scans: Vec<(Stored, u64)>,
    /// Enrolments and revocations.
    pub identities: Vec<Stored>,
    pub set_aside: Vec<crate::aside::Aside>,
    /// The reader's own workload events, passed by unparsed: the service stored them and
    /// applied each as its append came back, so the log's copy would be a repeat.
    pub own: OwnPassed,
    /// The batch ends with a checkpoint of the log: a reader's state after it is what a
    /// snapshot anchored there holds.
    pub checkpoint: Option<Anchor>,
}

/// The reader's own events a batch passed by: how many, and the last one's sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnPassed {
    pub count: u64,
    pub last_seq: u64,
}

impl OwnPassed {
    /// Counts the own event stored at `seq`.
    pub fn pass(&mut self, seq: u64) {
        self.count += 1;
        self.last_seq = self.last_seq.max(seq);
    }
}

/// Where a snapshot can be anchored: the log through `seq`, where a checkpoint event is
/// stored, as the reader read it.
#[derive(Clone, Debug)]
pub struct Anchor {
    /// Where the checkpoint event is stored (the last message the batch holds).
    pub seq: u64,
    /// The sequence the checkpoint covers (its running hash is through there).
    pub covers: u64,
    /// The running hash through `seq`, as the reader computed it.
    pub running: crate::audit::RunningHash,
    /// The node, scan and identity messages through `seq`, as stored (the latest
    /// checkpoint only): a snapshot carries them to be verified again at load.
    pub raw: std::sync::Arc<Vec<crate::audit::RawMsg>>,
}

impl From<Vec<Stored>> for Batch {
    /// A batch of workload events only.
    fn from(events: Vec<Stored>) -> Self {
        Batch {
            events,
            ..Batch::default()
        }
    }
}

impl Batch {
    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.nodes.is_empty()
            && self.scans.is_empty()
            && self.identities.is_empty()
            && self.set_aside.is_empty()
            && self.own.count == 0
    }

    /// The highest sequence it holds (0 when empty).
    pub fn last_seq(&self) -> u64 {
        let seqs = self
            .events
            .iter()
            .chain(&self.nodes)
            .chain(&self.identities);
        seqs.map(|s| s.seq)
            .chain(self.scans.iter().map(|(s, _)| s.seq))
            .chain(self.set_aside.iter().map(|a| a.seq))
            .chain([self.own.last_seq])
            .max()
            .unwrap_or(0)
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.events.len()
            + self.nodes.len()
            + self.scans.len()
            + self.identities.len()
            + self.set_aside.len()
            + self.own.count as usize
    }
}

/// Why an append (or a node event) was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The workload's head moved: another writer appended first. The writer's decision
    /// was taken on an old view; it decides again once it has read what came in.
    #[error("the workload's head moved (another writer appended first)")]
    Conflict,
    /// The log could not be reached or did not answer in time: worth trying again.
    #[error("the log is unreachable: {0}")]
    Unavailable(#[source] Cause),
    /// The log refused the append (too large, no stream for the subject, a bad name):
    /// trying the same append again will not help.
    #[error("the log refused the append: {0}")]
    Refused(String),
}

/// What became of one append: its events as stored, or why not. Empty when an earlier
/// attempt of the same events had stored them (its outcome lost): stored, but where is not
/// known; readers of the log bring them.
pub type Outcome = Result<Vec<Stored>, LogError>;

/// Appends workload events durably, each append atomically and only after its head.
pub trait EventLog: Clone + Send + Sync + 'static {
    /// One outcome per append, in order. Appends are independent of each other.
    fn append(&self, appends: Vec<WorkloadAppend>) -> impl Future<Output = Vec<Outcome>> + Send;

    /// Publishes an event about a node (`bulkhead.evt.node.<node>.<type>`; the event's
    /// subject is the node). Node events are not chained.
    fn publish_node(&self, event: Event) -> impl Future<Output = Result<(), LogError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_schemas::event::{EventBody, StopRequested, hash_bytes};

    #[test]
    fn a_head_s_hash_is_64_hex_digits_both_ways_and_nothing_else_reads_as_one() {
        let head = Head {
            seq: 7,
            hash: hash_bytes(b"x"),
        };
        let json = serde_json::to_string(&head).unwrap();
        let hex = hex::encode(head.hash);
        assert_eq!(json, format!(r#"{{"seq":7,"hash":"{hex}"}}"#));
        assert_eq!(serde_json::from_str::<Head>(&json).unwrap(), head);
        // Read from an owned value too (not borrowed from the input).
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::from_value::<Head>(value).unwrap(), head);
        let upper = json.replace(&hex, &hex.to_uppercase());
        assert_eq!(serde_json::from_str::<Head>(&upper).unwrap(), head);
        for bad in [&hex[..62], "zz", "", "1"] {
            let text = format!(r#"{{"seq":7,"hash":"{bad}"}}"#);
            assert!(serde_json::from_str::<Head>(&text).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Head>(r#"{"seq":7,"hash":[1,2]}"#).is_err());
    }

    #[test]
    fn seal_chains_events_after_the_head() {
        let body = || {
            EventBody::StopRequested(StopRequested {
                cmd_seq: 1,
                grace_secs: None,
            })
        };
        let head = Head {
            seq: 4,
            hash: [7; 32],
        };
        let events = vec![
            Event::new("s", "w", None, body()),
            Event::new("s", "w", None, body()),
        ];
        let mut a = WorkloadAppend::after("t/w", head, events);
        let sealed = a.seal("UKEY");
        assert_eq!(a.expected_seq(), 4);
        assert_eq!(sealed[0].subject, "bulkhead.evt.t.wl.w.stop_requested");
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
