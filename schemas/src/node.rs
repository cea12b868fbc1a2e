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

/// A message on `bulkhead.node.<node>.ops`: operations for one node, in order.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct NodeOps {
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
}

/// The last event of a workload's chain as the sender knew it: the stream sequence to
/// expect and the hash the next event names as `prev`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}
