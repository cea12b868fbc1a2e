//! What nodes publish about themselves (heartbeats) and what they are told to do (ops).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{RuntimeClass, WorkloadSpec};

/// Schedulable resources of a node, or what a workload needs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_mb: u64,
    pub cpu_millicores: u64,
    /// Workload slots (one replica takes one).
    pub slots: u32,
}

impl Resources {
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.memory_mb <= free.memory_mb
            && self.cpu_millicores <= free.cpu_millicores
            && self.slots <= free.slots
    }
    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            cpu_millicores: self.cpu_millicores.saturating_sub(o.cpu_millicores),
            slots: self.slots.saturating_sub(o.slots),
        }
    }
    pub fn add(&self, o: &Resources) -> Resources {
        Resources {
            memory_mb: self.memory_mb + o.memory_mb,
            cpu_millicores: self.cpu_millicores + o.cpu_millicores,
            slots: self.slots + o.slots,
        }
    }
    /// What one replica of `spec` takes.
    pub fn of(spec: &WorkloadSpec) -> Resources {
        Resources {
            memory_mb: spec.memory_mb,
            cpu_millicores: spec.cpu_millicores,
            slots: 1,
        }
    }
}

/// A node's heartbeat, stored in the `bulkhead-nodes` KV bucket under the node's name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct NodeHeartbeat {
    pub name: String,
    pub capacity: Resources,
    /// Free resources as the node itself counts them.
    pub free: Resources,
    pub runtime_classes: Vec<RuntimeClass>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `sim` or `cri`.
    pub runtime: String,
    pub running: u32,
    /// Milliseconds between heartbeats.
    pub interval_ms: u64,
    pub at: String,
    /// What the node's isolation probes observed, one report per runtime class it maps.
    /// A class whose probe failed is not in `runtime_classes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolation: Vec<IsolationReport>,
    /// The node process's instance id, kept in its data directory: a restart of the same
    /// node keeps it, a second process under the same name has another (and is refused).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

/// The result of running a tiny probe workload in one runtime class.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct IsolationReport {
    pub class: RuntimeClass,
    /// The CRI runtime handler the class maps to.
    pub handler: String,
    /// The probe ran and the class isolates as it promises; only then is it advertised.
    pub ok: bool,
    /// Whether the sandbox saw the host's kernel (`/proc/version` identical to the host's).
    /// Expected for `runc`; a failure for every other class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_kernel_visible: Option<bool>,
    /// Kernel release seen inside the sandbox (`uname -r`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel: String,
    /// What went wrong, or what was seen.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Milliseconds the probe took, sandbox to exit.
    pub took_ms: u64,
    pub at: String,
}

/// A message on `bulkhead.node.<node>.ops`: operations for one node, in order. Signed by
/// the scheduler (headers `Bulkhead-Sig` and `Bulkhead-Cert`); a node runs nothing else.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct NodeOps {
    /// The node they are for: a message for another node is refused.
    pub node: String,
    /// The scheduler's public key, which signed them.
    pub by: String,
    pub ops: Vec<NodeOp>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // ops are built once and serialized; boxing buys nothing
pub enum NodeOp {
    Start {
        workload: String,
        replica: u32,
        spec: WorkloadSpec,
        head: ChainHead,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// What the log says this node should hold (sent alone in its message).
    Sync { view: NodeSync },
    Stop {
        workload: String,
        replica: u32,
        head: ChainHead,
        /// Seconds the container gets between SIGTERM and SIGKILL; the node's default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_secs: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// The cluster's heartbeat pace: beat no more often than every `every_ms` (0: as the
    /// node's own interval says), so that all nodes together stay within the scheduler's
    /// budget of heartbeats a second. A node never beats less often than its own interval
    /// says, nor less often than the longest interval a heartbeat may state.
    Pace { every_ms: u64 },
}

/// What the log says one node should hold, as the scheduler's projection had it after
/// stream sequence `as_of`: the node reads no log, so this is how it learns what to adopt,
/// report or remove (after a restart, or after being declared lost).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
pub struct NodeSync {
    pub reason: SyncReason,
    /// The last stream sequence the view includes: what the node logged after it, the
    /// view does not know, and the node keeps.
    pub as_of: u64,
    /// Replicas placed on this node that have not ended.
    pub replicas: Vec<SyncReplica>,
    /// The chain heads of the workloads the node touches.
    pub heads: Vec<SyncHead>,
    /// Replicas the node started before, by the head sequence of their start op: a
    /// redelivered op is not started twice.
    pub handled: Vec<SyncHandled>,
}

/// Why a node is sent its view.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncReason {
    /// It joined (started, or came back after a loss).
    #[default]
    Joined,
    /// Replicas on it were declared lost (it may still run: a pause, a partition); it
    /// removes what was replaced and says it is back.
    Lost,
    /// A scheduler took over; a node that has its view already keeps it.
    Takeover,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SyncReplica {
    pub workload: String,
    pub replica: u32,
    /// The container the log names (`started`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub need: Resources,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SyncHead {
    pub workload: String,
    pub head: ChainHead,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SyncHandled {
    pub workload: String,
    pub replica: u32,
    pub head_seq: u64,
}

/// A node's question on `bulkhead.api.node.<node>.heads`: the heads of these workloads.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct HeadsRequest {
    pub workloads: Vec<String>,
}

/// The answer: heads of the asked workloads that have (or had) a replica on the node;
/// the others are left out.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct HeadsReply {
    pub heads: Vec<SyncHead>,
}

/// The last event of a workload's chain as the sender knew it: the stream sequence to
/// expect and the hash the next event names as `prev`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

/// The answer on `bulkhead.api.node.<node>.beat`: the latest heartbeat stored under the
/// node's name, and how long ago it was stored (none: the name is free).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct BeatReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<NodeHeartbeat>,
    #[serde(default)]
    pub age_ms: u64,
}

/// A request for a replica's output on `bulkhead.logs.<tenant>.<node>`: from byte `from` of
/// its log, at most `max` bytes (whole lines; the node caps it at 1 MiB).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct LogsRequest {
    /// The workload's id (its tenant is the subject's).
    pub id: String,
    #[serde(default)]
    pub replica: u32,
    #[serde(default)]
    pub from: u64,
    #[serde(default = "default_logs_max")]
    pub max: u32,
}

fn default_logs_max() -> u32 {
    64 * 1024
}

/// The answer: the lines read (as the runtime wrote them), where to go on from, and the
/// log's size now; or an error.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct LogsReply {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub next: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
