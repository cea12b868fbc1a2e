//! Every NATS subject, stream, consumer and bucket name of the public contract, in one place.

/// Commands from users: submissions, stops, scales, drains (stream [`CMD_STREAM`]).
pub const CMD_SUBMIT: &str = "bulkhead.cmd.submit";
pub const CMD_STOP: &str = "bulkhead.cmd.stop";
pub const CMD_SCALE: &str = "bulkhead.cmd.scale";
pub const CMD_DRAIN: &str = "bulkhead.cmd.drain";
pub const CMD_UNDRAIN: &str = "bulkhead.cmd.undrain";
/// Every command subject: the command stream stores these and no other (a publish to
/// `bulkhead.cmd.<anything else>` finds no stream and is refused).
pub const CMD_SUBJECTS: [&str; 5] = [CMD_SUBMIT, CMD_STOP, CMD_SCALE, CMD_DRAIN, CMD_UNDRAIN];

/// The event log (stream [`EVT_STREAM`]).
pub const EVT_ALL: &str = "bulkhead.evt.>";
pub const EVT_WORKLOADS: &str = "bulkhead.evt.wl.>";
pub const EVT_NODES: &str = "bulkhead.evt.node.>";

/// Node operations, one work-queue subject per node (stream [`OPS_STREAM`]).
pub const OPS_ALL: &str = "bulkhead.node.*.ops";

/// The query API (NATS service API, request/reply).
pub const API_PREFIX: &str = "bulkhead.api";
pub const API_WORKLOADS_GET: &str = "bulkhead.api.workloads.get";
pub const API_WORKLOADS_LIST: &str = "bulkhead.api.workloads.list";
pub const API_NODES_LIST: &str = "bulkhead.api.nodes.list";

/// Scan jobs (work queue [`SCAN_STREAM`]), per-job progress, per-worker layer requests.
pub const SCAN_JOBS: &str = "bulkhead.scan.jobs";
pub const EVT_SCANS: &str = "bulkhead.evt.scan.>";
pub const SCAN_STREAM: &str = "BULKHEAD_SCAN";
/// Durable consumer shared by every scan worker.
pub const SCAN_CONSUMER: &str = "bulkhead-scanners";
/// KV bucket of layer inventories (key `f<format>-<diffID hex>`).
pub const LAYERS_BUCKET: &str = "bulkhead-layers";
/// Object store holding the cluster's advisory database (`bulkhead vulndb import`).
pub const VULNDB_BUCKET: &str = "bulkhead-vulndb";
/// KV bucket of live scan workers (key: worker id; entries expire): the hash ring's members.
pub const SCANNERS_BUCKET: &str = "bulkhead-scanners";

pub const CMD_STREAM: &str = "BULKHEAD_CMD";
pub const EVT_STREAM: &str = "BULKHEAD_EVT";
pub const OPS_STREAM: &str = "BULKHEAD_OPS";

/// KV bucket of node heartbeats (key: node name).
pub const NODES_BUCKET: &str = "bulkhead-nodes";
/// KV bucket of leases (key `scheduler`: the active scheduler instance).
pub const LEASES_BUCKET: &str = "bulkhead-leases";
pub const SCHEDULER_LEASE_KEY: &str = "scheduler";
/// Key of the active failover instance in [`LEASES_BUCKET`].
pub const FAILOVER_LEASE_KEY: &str = "failover";

/// Durable consumer through which the active scheduler reads commands.
pub const SCHEDULER_CONSUMER: &str = "bulkhead-scheduler";

/// `bulkhead.scan.progress.<job>`: what a worker is doing on a job (core NATS).
pub fn scan_progress(job: &str) -> String {
    format!("bulkhead.scan.progress.{job}")
}

/// `bulkhead.scan.layer.<worker>`: requests to the worker owning a layer.
pub fn scan_layer(worker: &str) -> String {
    format!("bulkhead.scan.layer.{worker}")
}

/// `bulkhead.evt.scan.<digest hex>.<type>` (the `sha256:` prefix dropped).
pub fn scan_event(digest: &str, kind: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    format!("bulkhead.evt.scan.{hex}.{kind}")
}

/// `bulkhead.evt.wl.<workload>.<type>`
pub fn workload_event(workload: &str, kind: &str) -> String {
    format!("bulkhead.evt.wl.{workload}.{kind}")
}

/// `bulkhead.evt.wl.<workload>.*`: every event of one workload; the filter that
/// per-workload optimistic concurrency checks against.
pub fn workload_events(workload: &str) -> String {
    format!("bulkhead.evt.wl.{workload}.*")
}

/// `bulkhead.evt.node.<node>.<type>`
pub fn node_event(node: &str, kind: &str) -> String {
    format!("bulkhead.evt.node.{node}.{kind}")
}

/// `bulkhead.node.<node>.ops`
pub fn node_ops(node: &str) -> String {
    format!("bulkhead.node.{node}.ops")
}

/// Name of the durable ops consumer of one node.
pub fn node_consumer(node: &str) -> String {
    format!("bulkhead-node-{node}")
}

/// Workload id from an event subject `bulkhead.evt.wl.<id>.<type>`.
pub fn workload_of(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("bulkhead.evt.wl.")?;
    let (id, _kind) = rest.rsplit_once('.')?;
    Some(id)
}

/// Whether `s` can be one token of a subject, a workload id or a node name:
/// 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_of_parses_event_subjects() {
        assert_eq!(
            workload_of(&workload_event("abc-1", "started")),
            Some("abc-1")
        );
        assert_eq!(workload_of("bulkhead.evt.node.n1.joined"), None);
        assert_eq!(workload_of("bulkhead.evt.wl.x"), None);
    }

    #[test]
    fn tokens_exclude_subject_metacharacters() {
        assert!(is_valid_token("node-1_a"));
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(!is_valid_token(bad), "{bad:?} accepted");
        }
    }
}
