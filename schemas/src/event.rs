//! The event envelope of the log, the typed bodies of each event type, and the hash chain.
//!
//! Format 2: the envelope names its writer's key (`actor.key`); the writer's signature is
//! in the message's `Bulkhead-Sig` header (see `bulkhead_actors::signing`), over the hash
//! of the payload exactly as stored, which is also what the next event's `prev` names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::node::Resources;
use crate::spec::{Rejection, RuntimeClass, WorkloadSpec};

mod read;

/// Envelope version: 2 is signed (format 1, unsigned, is not read).
pub const EVENT_VERSION: u32 = 2;

/// One event of the log, as stored on `bulkhead.evt.…`. `type` and `body` come from
/// [`EventBody`] (serialized adjacently: `"type": "scheduled", "body": {…}`, in that order).
// Read in one pass by `read.rs` (serde's derived reading of `flatten` buffers the body first).
#[derive(Serialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Event {
    pub v: u32,
    /// UUID v7.
    pub id: String,
    /// Workload id, node name or image digest the event is about.
    pub subject: String,
    /// RFC 3339 time the event was emitted.
    pub at: String,
    pub actor: Actor,
    /// Hex SHA-256 of the previous event of the same workload, exactly as stored; absent on the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(flatten)]
    pub body: EventBody,
    /// W3C trace context of the span that emitted the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Which service emitted an event, and with which key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `scheduler`, `node/<name>`, `failover`, `scan/<worker>`, `admin`.
    pub service: String,
    /// The writer's public nkey (`U…`): the key its `Bulkhead-Sig` verifies with.
    #[serde(default)]
    pub key: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum EventBody {
    Accepted(Accepted),
    Rejected(Rejected),
    Scheduled(Scheduled),
    Started(Started),
    Exited(Exited),
    Lost(Lost),
    ReplicaRequested(ReplicaRequested),
    StopRequested(StopRequested),
    Stopped(Stopped),
    ScanRequested(ScanRequested),
    ScanCompleted(ScanCompleted),
    GaveUp(GaveUp),
    Scaled(Scaled),
    Quarantined(Quarantined),
    ScanWaiting(ScanWaiting),
    Joined(NodeJoined),
    Draining(NodeDraining),
    Drained(NodeDrained),
    Undrained(NodeUndrained),
    Enrolled(crate::identity::Enrolled),
    Revoked(crate::identity::Revoked),
    PolicyProposed(crate::policy::PolicyProposed),
    PolicyApproved(crate::policy::PolicyApproved),
    Checkpoint(crate::policy::Checkpoint),
}

impl EventBody {
    /// The `type` of the event: the last token of its subject.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Accepted(_) => "accepted",
            EventBody::Rejected(_) => "rejected",
            EventBody::Scheduled(_) => "scheduled",
            EventBody::Started(_) => "started",
            EventBody::Exited(_) => "exited",
            EventBody::Lost(_) => "lost",
            EventBody::ReplicaRequested(_) => "replica_requested",
            EventBody::StopRequested(_) => "stop_requested",
            EventBody::Stopped(_) => "stopped",
            EventBody::ScanRequested(_) => "scan_requested",
            EventBody::ScanCompleted(_) => "scan_completed",
            EventBody::GaveUp(_) => "gave_up",
            EventBody::Scaled(_) => "scaled",
            EventBody::Quarantined(_) => "quarantined",
            EventBody::ScanWaiting(_) => "scan_waiting",
            EventBody::Joined(_) => "joined",
            EventBody::Draining(_) => "draining",
            EventBody::Drained(_) => "drained",
            EventBody::Undrained(_) => "undrained",
            EventBody::Enrolled(_) => "enrolled",
            EventBody::Revoked(_) => "revoked",
            EventBody::PolicyProposed(_) => "policy_proposed",
            EventBody::PolicyApproved(_) => "policy_approved",
            EventBody::Checkpoint(_) => "checkpoint",
        }
    }

    pub const KINDS: [&'static str; 24] = [
        "accepted",
        "rejected",
        "scheduled",
        "started",
        "exited",
        "lost",
        "replica_requested",
        "stop_requested",
        "stopped",
        "scan_requested",
        "scan_completed",
        "gave_up",
        "scaled",
        "quarantined",
        "scan_waiting",
        "joined",
        "draining",
        "drained",
        "undrained",
        "enrolled",
        "revoked",
        "policy_proposed",
        "policy_approved",
        "checkpoint",
    ];

    /// The event as a node event (`bulkhead.evt.node.<node>.<type>`), or None for an event
    /// about a workload. Readers of node events match on this, every type named.
    pub fn node_event(&self) -> Option<NodeEvent<'_>> {
        match self {
            EventBody::Joined(j) => Some(NodeEvent::Joined(j)),
            EventBody::Lost(l) if l.replica.is_none() => Some(NodeEvent::Lost(l)),
            EventBody::Draining(d) => Some(NodeEvent::Draining(d)),
            EventBody::Drained(d) => Some(NodeEvent::Drained(d)),
            EventBody::Undrained(u) => Some(NodeEvent::Undrained(u)),
            EventBody::Lost(_)
            | EventBody::Accepted(_)
            | EventBody::Rejected(_)
            | EventBody::Scheduled(_)
            | EventBody::Started(_)
            | EventBody::Exited(_)
            | EventBody::ReplicaRequested(_)
            | EventBody::StopRequested(_)
            | EventBody::Stopped(_)
            | EventBody::ScanRequested(_)
            | EventBody::ScanCompleted(_)
            | EventBody::GaveUp(_)
            | EventBody::Scaled(_)
            | EventBody::Quarantined(_)
            | EventBody::ScanWaiting(_)
            | EventBody::Enrolled(_)
            | EventBody::Revoked(_)
            | EventBody::PolicyProposed(_)
            | EventBody::PolicyApproved(_)
            | EventBody::Checkpoint(_) => None,
        }
    }

    /// Whether the event is about a node (`bulkhead.evt.node.<node>.<type>`).
    pub fn is_node_event(&self) -> bool {
        self.node_event().is_some()
    }
}

/// The body of an event about a node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NodeEvent<'a> {
    Joined(&'a NodeJoined),
    /// The node's own `lost` (no replica named).
    Lost(&'a Lost),
    Draining(&'a NodeDraining),
    Drained(&'a NodeDrained),
    Undrained(&'a NodeUndrained),
}

/// The workload was admitted. Carries the full spec (with its id filled in), so the
/// log alone rebuilds every projection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Accepted {
    pub spec: WorkloadSpec,
    /// Stream sequence of the submission in `BULKHEAD_CMD`.
    pub cmd_seq: u64,
    /// Who asked (and, for a signed submission, the proof).
    #[serde(default)]
    pub by: crate::identity::Submitter,
    /// Why no node could take (some of) its replicas at admission; absent when all were placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Rejected {
    #[serde(flatten)]
    pub rejection: Rejection,
    pub cmd_seq: u64,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub replica: u32,
    pub node: String,
    pub runtime_class: RuntimeClass,
    /// A drain moves the replica: the copy on this node keeps running until the new one
    /// has started, then it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub replica: u32,
    pub node: String,
    pub container: String,
    /// What the container was given (CRI nodes; a sim node runs nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<Confinement>,
}

/// How a replica's container is confined, as its node asked the runtime for it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Confinement {
    /// `pod` (a namespace of its own, the host closed to it) or `host`.
    pub network: String,
    /// The seccomp profile: `runtime/default`.
    pub seccomp: String,
    pub no_new_privs: bool,
    /// Every capability it holds (all others dropped).
    pub capabilities: Vec<String>,
    /// The user id it runs as, when the spec names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    pub read_only_rootfs: bool,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Exited {
    pub replica: u32,
    pub node: String,
    pub code: i32,
    /// `completed`, `error`, `oom_killed`, `stopped`, or the runtime's own words.
    pub reason: String,
    /// RFC 3339 time the process ended.
    pub finished_at: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// Replica lost; absent on a node's `lost` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    pub node: String,
    pub reason: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRequested {
    pub replica: u32,
    /// Why: `exited: code 3 (error)`, `lost: …`.
    pub cause: String,
    /// Restart number within the policy's window (1 for the first restart).
    pub attempt: u32,
    /// RFC 3339 time before which the replica must not start (backoff).
    pub not_before: String,
}

/// The failover gave up on a replica: its restart budget is spent. The replica stays
/// ended (`failed` or `lost`) and nothing respawns it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct GaveUp {
    pub replica: u32,
    /// `restart budget exhausted: …`
    pub reason: String,
    /// Restarts of the replica so far.
    pub restarts: u32,
}

/// Scan policy `async`: the image's verdict failed the policy while the workload ran.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub action: QuarantineAction,
    /// The class the workload ran in.
    pub from: crate::RuntimeClass,
    /// The class it runs in from now on (`move` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<crate::RuntimeClass>,
    /// The findings over the policy's threshold.
    pub reason: String,
}

/// Scan policy `gate`: the workload waits for a verdict that cannot come as things stand
/// (no scan worker is alive: none runs, or none has an advisory database). Written once;
/// the job stays queued, and the verdict settles the workload when a worker takes it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ScanWaiting {
    pub image: String,
    /// Why no verdict comes, and what to do about it.
    pub reason: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineAction {
    /// Every copy is stopped; a `stop_requested` follows.
    Stop,
    /// Every copy is stopped and placed again in the stronger class `to`.
    Move,
    /// It already runs in the policy's quarantine class or a stronger one: left running.
    Contained,
}

impl QuarantineAction {
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineAction::Stop => "stop",
            QuarantineAction::Move => "move",
            QuarantineAction::Contained => "contained",
        }
    }
}

/// `bulkhead.cmd.scale` took effect: the workload now wants this many replicas.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Scaled {
    pub replicas: u32,
    pub cmd_seq: u64,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct StopRequested {
    pub cmd_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub replica: u32,
    pub node: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ScanRequested {
    pub image: String,
    pub job: String,
    /// Scan policy `gate`: the workload waits for the verdict before it is placed.
    pub gate: bool,
}

/// On `bulkhead.evt.scan.<digest hex>.scan_completed`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ScanCompleted {
    /// The reference scanned.
    pub image: String,
    /// Digest of the platform manifest scanned.
    pub digest: String,
    pub job: String,
    /// The worker that ran the job.
    pub worker: String,
    /// Present when the scan succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::scan::Verdict>,
    /// Why the scan failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<crate::scan::LayerReport>,
}

/// A node came up (or back) with this capacity.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct NodeJoined {
    pub capacity: Resources,
    pub runtime_classes: Vec<RuntimeClass>,
    pub runtime: String,
}

/// `bulkhead.cmd.drain` took effect: nothing new is placed on the node and its replicas
/// move off it one by one. It outlives a restart of the node; only `undrained` lifts it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct NodeDraining {
    pub cmd_seq: u64,
}

/// The node runs no replica any more after a drain.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct NodeDrained {
    pub reason: String,
}

/// `bulkhead.cmd.undrain` took effect: the node takes new placements again (replicas moved
/// off it stay where they went).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct NodeUndrained {
    pub cmd_seq: u64,
}

/// SHA-256 of an event's stored bytes: what the next event's `prev` names.
pub type Hash = [u8; 32];

pub fn hash_bytes(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// A hash as 64 lowercase hex digits, held on the stack: what `prev` and a snapshot's heads
/// spell, written without building a `String` per event or per workload (`hex::encode`
/// collects characters one by one: a snapshot of a million workloads took 1.09–1.10 µs of
/// CPU a workload to seal with it, 0.96 µs without, `bulkhead-loadtest seal`).
#[derive(Clone, Copy)]
pub struct HashHex([u8; 64]);

impl HashHex {
    pub fn of(h: &Hash) -> HashHex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(h) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        HashHex(out)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Event {
    /// A new event emitted now by `service`, chained after `prev`.
    pub fn new(service: &str, subject: &str, prev: Option<&Hash>, body: EventBody) -> Event {
        Event {
            v: EVENT_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            subject: subject.to_owned(),
            at: crate::now_rfc3339(),
            actor: Actor {
                service: service.to_owned(),
                key: String::new(),
            },
            prev: prev.map(hex::encode),
            body,
            traceparent: None,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// The bytes to store, and their hash for the next event's `prev`.
    pub fn seal(&self) -> (Vec<u8>, Hash) {
        let bytes = serde_json::to_vec(self).expect("events always serialize");
        let hash = hash_bytes(&bytes);
        (bytes, hash)
    }

    /// The event `bytes` hold: UTF-8 JSON as a whole (the values of fields it does not
    /// know are skipped, not decoded, so the whole is checked first), `type` before `body`.
    pub fn parse(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!("not UTF-8: {e}"))
        })?;
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The stack's hex is `hex::encode`'s, digit for digit.
        #[test]
        fn a_hash_s_hex_is_the_hex_crate_s(h in proptest::array::uniform32(proptest::num::u8::ANY)) {
            let hex = HashHex::of(&h);
            proptest::prop_assert_eq!(hex.as_str(), hex::encode(h));
        }
    }

    #[test]
    fn adjacent_type_and_body_round_trip() {
        let e = Event::new(
            "scheduler",
            "w1",
            None,
            EventBody::Scheduled(Scheduled {
                replica: 0,
                node: "n1".into(),
                runtime_class: RuntimeClass::Gvisor,
                replaces: None,
            }),
        );
        let (bytes, hash) = e.seal();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "scheduled");
        assert_eq!(v["body"]["node"], "n1");
        assert_eq!(v["body"]["runtime_class"], "gvisor");
        assert!(v.get("prev").is_none());
        assert_eq!(Event::parse(&bytes).unwrap(), e);
        let next = Event::new(
            "node/n1",
            "w1",
            Some(&hash),
            EventBody::Stopped(Stopped {
                replica: 0,
                node: "n1".into(),
            }),
        );
        assert_eq!(
            next.prev.as_deref(),
            Some(hex::encode(hash_bytes(&bytes)).as_str())
        );
    }

    #[test]
    fn kinds_table_matches_bodies() {
        let e = EventBody::ReplicaRequested(ReplicaRequested {
            replica: 1,
            cause: "exited".into(),
            attempt: 2,
            not_before: "x".into(),
        });
        assert!(EventBody::KINDS.contains(&e.kind()));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], e.kind());
    }
}
