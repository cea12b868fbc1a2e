//! Requests and replies of the query API (`bulkhead.api.*`) and the read model it serves.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::node::{NodeHeartbeat, Resources};
use crate::spec::WorkloadSpec;

/// Lifecycle state of a workload or of one of its replicas.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadState {
    Pending,
    Scheduled,
    Starting,
    Running,
    Succeeded,
    Failed,
    Lost,
    Stopped,
    Rejected,
}

impl WorkloadState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadState::Pending => "pending",
            WorkloadState::Scheduled => "scheduled",
            WorkloadState::Starting => "starting",
            WorkloadState::Running => "running",
            WorkloadState::Succeeded => "succeeded",
            WorkloadState::Failed => "failed",
            WorkloadState::Lost => "lost",
            WorkloadState::Stopped => "stopped",
            WorkloadState::Rejected => "rejected",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        use WorkloadState::*;
        [
            Pending, Scheduled, Starting, Running, Succeeded, Failed, Lost, Stopped, Rejected,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
    /// No further transition happens by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkloadState::Succeeded
                | WorkloadState::Failed
                | WorkloadState::Lost
                | WorkloadState::Stopped
                | WorkloadState::Rejected
        )
    }
}

impl std::fmt::Display for WorkloadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A workload as the query API returns it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct WorkloadView {
    /// The workload's id, unique within its tenant.
    pub id: String,
    /// The tenant that submitted it.
    pub tenant: String,
    pub state: WorkloadState,
    /// Absent for a submission rejected before it parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<WorkloadSpec>,
    pub replicas: Vec<ReplicaView>,
    /// Replicas it should run now (`replicas` of the spec until a scale changes it).
    #[serde(default)]
    pub desired: u32,
    /// Rejection reason, or why it is still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Stream sequence of the workload's last event.
    pub last_seq: u64,
    pub events: u32,
    /// The scan verdict of its image, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanSummary>,
    /// What a failed `async` verdict did: `moved from runc to gvisor: …`, `stopped: …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

/// A workload's view of its image's scan.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ScanSummary {
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst: Option<crate::scan::Severity>,
    pub findings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ReplicaView {
    pub replica: u32,
    pub state: WorkloadState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// How its container is confined (from its `started` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<crate::event::Confinement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Times the failover restarted the replica.
    #[serde(default)]
    pub restarts: u32,
    /// RFC 3339 time before which a restart waits (backoff), while it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_until: Option<String>,
    /// The failover gave up on it (restart budget exhausted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gave_up: bool,
    /// A drain is moving it: the node whose copy still runs until this one has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<String>,
}

/// `bulkhead.api.workloads.get`: the payload is this object or just the id as text.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct GetRequest {
    pub id: String,
}

/// `bulkhead.api.workloads.list`: every filter is optional; an empty payload lists all.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<WorkloadState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `key=value` a workload label must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// At most this many workloads (default 1000, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Skip workloads with an id up to and including this one (ids are listed in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ListReply {
    pub workloads: Vec<WorkloadView>,
    /// How many matched in all.
    pub total: usize,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One node in `bulkhead.api.nodes.list`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct NodeView {
    #[serde(flatten)]
    pub heartbeat: NodeHeartbeat,
    /// What the log says is placed there.
    pub allocated: Resources,
    pub workloads: u32,
    /// Milliseconds since the last heartbeat.
    pub age_ms: u64,
    /// What the log says of the node: drained or draining, and lost (since its last `joined`).
    #[serde(default)]
    pub marks: NodeMarks,
}

/// A node's standing in the log, beyond its heartbeats.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMarks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainMark>,
    /// Declared lost and not joined since.
    #[serde(default)]
    pub lost: bool,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DrainMark {
    /// Cordoned; its replicas are moving off.
    Draining,
    /// Cordoned and empty.
    Drained,
}

impl NodeMarks {
    /// One word for listings: `lost`, `draining`, `drained` (joined by `+`), else `ready`.
    pub fn status(&self) -> String {
        let mut words = Vec::new();
        if self.lost {
            words.push("lost");
        }
        match self.drain {
            Some(DrainMark::Draining) => words.push("draining"),
            Some(DrainMark::Drained) => words.push("drained"),
            None => {}
        }
        if words.is_empty() {
            "ready".into()
        } else {
            words.join("+")
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct NodesReply {
    pub nodes: Vec<NodeView>,
}

/// Everything the cluster set aside (`bulkhead.api.admin.aside.list`): the events the query
/// API's reader of the log would not apply, and what every service reported refusing
/// (commands, ops, heartbeats, scan jobs, messages given up after their last delivery),
/// counted by reason, the latest listed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct AsideReply {
    /// The sum over `by_who`.
    pub total: u64,
    /// The sum over `by_who`, by code.
    pub by_code: BTreeMap<String, u64>,
    /// The latest, oldest first (each reporter's latest, merged by `by`).
    pub recent: Vec<AsideView>,
    /// Each reporter's own count: `api` (the log as read) and `<role>/<name>` for every
    /// service that reported (`scheduler/main`, `node/n1`, …).
    #[serde(default)]
    pub by_who: BTreeMap<String, AsideReport>,
}

/// One service's count of what it set aside, as it reports it on
/// `bulkhead.aside.<role>.<name>` (whenever it grows, and every 30 s while not zero).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct AsideReport {
    pub total: u64,
    pub by_code: BTreeMap<String, u64>,
    /// Its latest, oldest first.
    pub recent: Vec<AsideView>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct AsideView {
    /// The stream sequence of what was set aside (0 for a message of no stream).
    pub seq: u64,
    pub subject: String,
    /// A short stable code (`bad_signature`, `no_authority`, `not_its_node`,
    /// `out_of_limits`, `max_deliveries`, …).
    pub code: String,
    pub reason: String,
    /// Who set it aside (`api`, `scheduler/main`, `node/n1`, …); empty in a report.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}

/// Error body of the API (also signalled in the `Nats-Service-Error` headers).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub error: String,
}

/// Label filter `key=value` parsed.
pub fn parse_label(s: &str) -> Option<(&str, &str)> {
    s.split_once('=')
}

pub type Labels = BTreeMap<String, String>;
