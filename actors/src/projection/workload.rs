//! A workload as the log tells it: its spec, its replicas and where each runs, its
//! chain head, its scan verdict; and the views the query API serves of it.

use std::sync::Arc;

use bulkhead_schemas::api::{ReplicaView, ScanSummary, WorkloadState, WorkloadView};
use bulkhead_schemas::{Resources, WorkloadSpec};

use crate::ports::log::Head;

/// Serde's skip for counters at zero (snapshots leave defaults out).
fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    pub state: WorkloadState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<str>>,
    /// How its current copy is confined (from its `started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<Box<bulkhead_schemas::event::Confinement>>,
    /// The last exit's code and reason (kept across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Box<str>>,
    /// Restarts requested by the failover, in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Times (Unix ms) of the latest restarts, newest last, at most `max_restarts + 1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_restarts: Vec<u64>,
    /// A requested restart waits until then (backoff), Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// The node of the copy that ended: placement prefers another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_node: Option<Arc<str>>,
    /// The copy ended because its node was lost: never place the replica there again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_on: Option<Arc<str>>,
    /// The failover gave up on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gave_up: bool,
    /// A drain moves it: the copy on this node runs until the new one has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<Arc<str>>,
    /// A quarantine moves it to a stronger class: once its copy has stopped, it is placed
    /// again (pending) instead of ending.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requeue: bool,
}

impl Replica {
    /// Whether `node` holds, or held just before, a copy of this replica: the nodes whose
    /// facts about it count.
    pub fn knows(&self, node: &str) -> bool {
        [&self.node, &self.replacing, &self.last_node, &self.lost_on]
            .iter()
            .any(|n| n.as_deref() == Some(node))
    }
}

impl Replica {
    /// A replica waiting for a node.
    pub fn pending() -> Self {
        Replica {
            state: WorkloadState::Pending,
            node: None,
            container: None,
            confinement: None,
            exit_code: None,
            reason: None,
            restarts: 0,
            recent_restarts: Vec::new(),
            not_before_ms: None,
            last_node: None,
            lost_on: None,
            gave_up: false,
            replacing: None,
            requeue: false,
        }
    }

    /// Whether a runtime fact from `node` is about this replica's current copy.
    pub fn is_on(&self, node: &str) -> bool {
        self.node.as_deref() == Some(node)
    }
    /// Holds resources on its node.
    pub fn holds(&self) -> bool {
        matches!(
            self.state,
            WorkloadState::Scheduled | WorkloadState::Starting | WorkloadState::Running
        )
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Arc<WorkloadSpec>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejected: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_requested: bool,
    pub replicas: Vec<Replica>,
    /// How many replicas it should run (the spec's count until a scale changes it);
    /// replicas at or past this index are retired.
    pub desired: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Box<str>>,
    pub head: Head,
    pub events: u32,
    /// Stream sequence of the submission that created it.
    pub cmd_seq: u64,
    /// Trace context of its admission: later events of the workload join that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Box<str>>,
    /// A scan of its image was requested; `Some(true)`: placement waits for the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_gate: Option<bool>,
    /// When the scan was requested (Unix ms; 0 if never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scan_requested_ms: u64,
    /// Its image's verdict, once recorded on the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<Box<ScanSummary>>,
    /// What a failed `async` verdict did to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Box<str>>,
    /// A `scan_waiting` was written: its verdict cannot come as things stand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scan_waiting: bool,
}

/// `image` pinned to `digest`: `registry/repo:tag` → `registry/repo@digest`. A reference
/// that names a digest already is left as it is.
pub fn pin_image(image: &str, digest: &str) -> String {
    if image.contains('@') || !digest.starts_with("sha256:") {
        return image.to_owned();
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let name = match image[slash..].find(':') {
        Some(colon) => &image[..slash + colon],
        None => image,
    };
    format!("{name}@{digest}")
}

impl Workload {
    /// A workload just admitted: every replica pending.
    pub fn accepted(
        spec: &WorkloadSpec,
        cmd_seq: u64,
        head: Head,
        pending: Option<&str>,
        traceparent: Option<&str>,
    ) -> Self {
        Workload {
            spec: Some(Arc::new(spec.clone())),
            rejected: false,
            replicas: vec![Replica::pending(); spec.replicas as usize],
            desired: spec.replicas,
            reason: pending.map(Into::into),
            traceparent: traceparent.map(Into::into),
            ..Workload::rejected(cmd_seq, head, "")
        }
    }

    /// A submission refused at admission: no spec, no replicas, only the reason.
    pub fn rejected(cmd_seq: u64, head: Head, reason: &str) -> Self {
        Workload {
            spec: None,
            rejected: true,
            stop_requested: false,
            replicas: Vec::new(),
            desired: 0,
            reason: Some(reason.into()),
            head,
            events: 1,
            cmd_seq,
            traceparent: None,
            scan_gate: None,
            scan_requested_ms: 0,
            scan: None,
            quarantine: None,
            scan_waiting: false,
        }
    }

    /// The spec a node runs: once the image was scanned, pinned to the digest the verdict
    /// is about, so a tag pushed again (or an older copy cached on a node) cannot run in
    /// place of what was judged.
    pub fn run_spec(&self) -> Option<WorkloadSpec> {
        let mut spec = self.spec.as_deref()?.clone();
        if let Some(scan) = &self.scan
            && scan.error.is_none()
        {
            spec.image = pin_image(&spec.image, &scan.digest);
        }
        Some(spec)
    }

    /// Replicas that count: the desired ones, and retired ones still holding a node.
    pub fn counted(&self) -> impl Iterator<Item = &Replica> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(i, r)| (*i as u32) < self.desired || r.holds())
            .map(|(_, r)| r)
    }

    pub fn state(&self) -> WorkloadState {
        if self.rejected {
            return WorkloadState::Rejected;
        }
        let live = self
            .counted()
            .filter(|r| !r.state.is_terminal())
            .map(|r| r.state)
            .min();
        if let Some(s) = live {
            return s;
        }
        let any = |s| self.counted().any(|r| r.state == s);
        if self.stop_requested || any(WorkloadState::Stopped) {
            WorkloadState::Stopped
        } else if any(WorkloadState::Failed) {
            WorkloadState::Failed
        } else if any(WorkloadState::Lost) {
            WorkloadState::Lost
        } else {
            WorkloadState::Succeeded
        }
    }

    pub fn need(&self) -> Resources {
        self.spec.as_deref().map(Resources::of).unwrap_or_default()
    }

    /// Replicas waiting for a node (none once a stop was requested or the workload was
    /// rejected, or while a scan verdict is awaited).
    pub fn pending_replicas(&self) -> impl Iterator<Item = u32> + '_ {
        let held = self.stop_requested || self.rejected || self.awaits_verdict();
        let desired = self.desired;
        self.replicas
            .iter()
            .enumerate()
            .filter(move |(i, r)| {
                r.state == WorkloadState::Pending && !held && (*i as u32) < desired
            })
            .map(|(i, _)| i as u32)
    }

    /// Placement waits for the image's scan verdict (scan policy `gate`).
    pub fn awaits_verdict(&self) -> bool {
        self.scan_gate == Some(true) && self.scan.is_none() && !self.rejected
    }

    /// A scan was requested and its verdict is not recorded yet.
    pub fn wants_verdict(&self) -> bool {
        self.scan_gate.is_some() && self.scan.is_none() && !self.rejected
    }

    /// The view of the workload with key `key` (`tenant/id`).
    pub fn view(&self, key: &str) -> WorkloadView {
        let (tenant, id) = bulkhead_schemas::subjects::split_key(key).unwrap_or(("", key));
        WorkloadView {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
            state: self.state(),
            spec: self.spec.as_deref().cloned(),
            replicas: self
                .replicas
                .iter()
                .enumerate()
                .map(|(i, r)| ReplicaView {
                    replica: i as u32,
                    state: r.state,
                    node: r.node.as_deref().map(str::to_owned),
                    container: r.container.as_deref().map(str::to_owned),
                    confinement: r.confinement.as_deref().cloned(),
                    exit_code: r.exit_code,
                    reason: r.reason.as_deref().map(str::to_owned),
                    restarts: r.restarts,
                    backoff_until: r
                        .not_before_ms
                        .filter(|_| r.state == WorkloadState::Pending)
                        .map(bulkhead_schemas::rfc3339_from_ms),
                    gave_up: r.gave_up,
                    replacing: r.replacing.as_deref().map(str::to_owned),
                })
                .collect(),
            desired: self.desired,
            reason: self.reason.as_deref().map(str::to_owned),
            last_seq: self.head.seq,
            events: self.events,
            scan: self.scan.as_deref().cloned(),
            quarantine: self.quarantine.as_deref().map(str::to_owned),
        }
    }
}
