//! Every NATS subject, stream, consumer and bucket name of the public contract, in one
//! place. Subjects carry what nats-server must check: the tenant of a command, an event or
//! a query; the node of an ops subject.

/// Commands of tenants: `bulkhead.cmd.<tenant>.submit|stop|scale` (stream [`CMD_STREAM`]).
pub const CMD_SUBMIT_ALL: &str = "bulkhead.cmd.*.submit";
pub const CMD_STOP_ALL: &str = "bulkhead.cmd.*.stop";
pub const CMD_SCALE_ALL: &str = "bulkhead.cmd.*.scale";
/// Commands of operators, on nodes: drains.
pub const CTL_DRAIN: &str = "bulkhead.ctl.drain";
pub const CTL_UNDRAIN: &str = "bulkhead.ctl.undrain";
/// Every command subject: the command stream stores these and no other (a publish to
/// `bulkhead.cmd.<tenant>.<anything else>` finds no stream and is refused).
pub const CMD_SUBJECTS: [&str; 5] = [
    CMD_SUBMIT_ALL,
    CMD_STOP_ALL,
    CMD_SCALE_ALL,
    CTL_DRAIN,
    CTL_UNDRAIN,
];

/// `bulkhead.cmd.<tenant>.<kind>`: a tenant's command.
pub fn cmd(tenant: &str, kind: &str) -> String {
    format!("bulkhead.cmd.{tenant}.{kind}")
}

/// The tenant and kind of a tenant command subject `bulkhead.cmd.<tenant>.<kind>`.
pub fn parse_cmd(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("bulkhead.cmd.")?;
    let (tenant, kind) = rest.split_once('.')?;
    (is_valid_tenant(tenant) && !kind.contains('.')).then_some((tenant, kind))
}

/// The event log (stream [`EVT_STREAM`]).
pub const EVT_ALL: &str = "bulkhead.evt.>";
/// Every workload event of every tenant.
pub const EVT_WORKLOADS: &str = "bulkhead.evt.*.wl.>";
pub const EVT_NODES: &str = "bulkhead.evt.node.>";

/// The tenants' feed: every workload event the log stores, republished by the log's stream
/// as `bulkhead.out.<tenant>.wl.…` after it is stored, in storage order. The tenants'
/// account imports it back under [`EVT_WORKLOADS`] (a tenant subscribes to
/// `bulkhead.evt.<tenant>.>`). A node's fact enters the bulkhead account through a service
/// import, and nats-server does not pass such a message on through a stream export: without
/// the republish, tenants saw the scheduler's events and none of their nodes'.
pub const TENANT_FEED_ALL: &str = "bulkhead.out.*.wl.>";
/// The republish destination that makes [`TENANT_FEED_ALL`] from [`EVT_WORKLOADS`].
pub const TENANT_FEED_MAPPING: &str = "bulkhead.out.{{wildcard(1)}}.wl.>";

/// Node operations, one work-queue subject per node (stream [`OPS_STREAM`]).
pub const OPS_ALL: &str = "bulkhead.node.*.ops";

/// The query API (NATS service API, request/reply).
pub const API_PREFIX: &str = "bulkhead.api";
/// What a tenant may ask, on `bulkhead.api.<tenant>.…`: these endpoints, any tenant.
pub const API_WORKLOADS_GET_ALL: &str = "bulkhead.api.*.workloads.get";
pub const API_WORKLOADS_LIST_ALL: &str = "bulkhead.api.*.workloads.list";
/// The schedulers' curve keys, as their admin-signed enrolments: what secrets are sealed to.
pub const API_SEALING_ALL: &str = "bulkhead.api.*.sealing";
/// What operators ask.
pub const API_NODES_LIST: &str = "bulkhead.api.admin.nodes.list";
/// What the query API set aside while reading the log.
pub const API_ASIDE_LIST: &str = "bulkhead.api.admin.aside.list";
/// The query API's latest verification of the whole log (admins; the dashboard).
pub const API_AUDIT_STATUS: &str = "bulkhead.api.admin.audit.status";
/// What each service set aside, reported to the query API: `bulkhead.aside.<role>.<name>`.
pub const ASIDE_REPORTS: &str = "bulkhead.aside.>";

/// The subject on which `role` `name` reports what it set aside.
pub fn aside_report(role: &str, name: &str) -> String {
    format!("bulkhead.aside.{role}.{name}")
}

/// The reporter (`<role>/<name>`) of an aside report subject, when it is one.
pub fn parse_aside_report(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix("bulkhead.aside.")?;
    let (role, name) = rest.split_once('.')?;
    (is_valid_token(role) && is_valid_token(name)).then(|| format!("{role}/{name}"))
}

/// JetStream's advisory when a consumer gave up on a message after its last delivery.
pub const MAX_DELIVERIES_ADVISORIES: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>";

/// Every event about identities and the policy, and the checkpoints.
pub const EVT_SYS_ALL: &str = "bulkhead.evt.sys.>";
/// The checkpoints the query API writes.
pub const EVT_CHECKPOINTS: &str = "bulkhead.evt.sys.audit.*.checkpoint";

/// `bulkhead.api.<tenant>.workloads.get`
pub fn api_workloads_get(tenant: &str) -> String {
    format!("bulkhead.api.{tenant}.workloads.get")
}

/// `bulkhead.api.<tenant>.sealing`
pub fn api_sealing(tenant: &str) -> String {
    format!("bulkhead.api.{tenant}.sealing")
}

/// `bulkhead.api.<tenant>.workloads.list`
pub fn api_workloads_list(tenant: &str) -> String {
    format!("bulkhead.api.{tenant}.workloads.list")
}

/// A workload's output, asked of the node that ran it: `bulkhead.logs.<tenant>.<node>`
/// (a service of the nodes' account; a tenant may ask under its own name only).
pub const LOGS_ALL: &str = "bulkhead.logs.*.*";

/// `bulkhead.logs.<tenant>.<node>`.
pub fn logs(tenant: &str, node: &str) -> String {
    format!("bulkhead.logs.{tenant}.{node}")
}

/// The tenant a `bulkhead.logs.<tenant>.<node>` subject asks for.
pub fn logs_tenant(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("bulkhead.logs.")?;
    let (tenant, node) = rest.split_once('.')?;
    (is_valid_tenant(tenant) && is_valid_token(node)).then_some(tenant)
}

/// `bulkhead.api.node.<node>.beat`: the latest heartbeat under a node's name and its age,
/// asked by a node process before it starts (another live instance holds the name?).
pub fn api_node_beat(node: &str) -> String {
    format!("bulkhead.api.node.{node}.beat")
}

/// The node a `bulkhead.api.node.<node>.beat` subject asks about.
pub fn api_beat_node(subject: &str) -> Option<&str> {
    api_node_endpoint(subject, ".beat")
}

/// The node of `bulkhead.api.node.<node><endpoint>`, when it is a token.
fn api_node_endpoint<'a>(subject: &'a str, endpoint: &str) -> Option<&'a str> {
    let node = subject
        .strip_prefix("bulkhead.api.node.")?
        .strip_suffix(endpoint)?;
    is_valid_token(node).then_some(node)
}

/// `bulkhead.api.node.<node>.heads`: a node asks the chain heads of the workloads it runs
/// (it reads no log; the API answers for workloads placed on that node only).
pub fn api_node_heads(node: &str) -> String {
    format!("bulkhead.api.node.{node}.heads")
}

/// The node a `bulkhead.api.node.<node>.heads` subject asks for.
pub fn api_heads_node(subject: &str) -> Option<&str> {
    api_node_endpoint(subject, ".heads")
}

/// The tenant a query API subject `bulkhead.api.<tenant>.…` asks for.
pub fn api_tenant(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("bulkhead.api.")?;
    let (tenant, _) = rest.split_once('.')?;
    is_valid_tenant(tenant).then_some(tenant)
}

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
/// Object store of the services' snapshots (object name: the service, e.g. `scheduler`).
pub const SNAPSHOTS_BUCKET: &str = "bulkhead-snapshots";

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

/// The durable consumer through which an older scheduler read every command, and the
/// prefix of the lanes that replace it ([`cmd_lane`]).
pub const SCHEDULER_CONSUMER: &str = "bulkhead-scheduler";

/// One of the scheduler's durable consumers of [`CMD_STREAM`]: a lane a tenant, one for the
/// operators' commands, served in turn so that no tenant's backlog holds up another's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CmdLane {
    /// The durable consumer's name: `bulkhead-scheduler-t-<tenant>`, or
    /// `bulkhead-scheduler-ctl` (no tenant name makes it: a tenant's has `-t-`).
    pub consumer: String,
    /// What it reads: `bulkhead.cmd.<tenant>.*`, or `bulkhead.ctl.*`.
    pub filter: String,
}

/// The lane of a command stored on `subject`; None for a subject that no lane reads (no
/// tenant's: only an admin could store one, and the scheduler purges it as it finds it).
/// A reserved name is a token still, and has a lane: its commands are read and set aside.
pub fn cmd_lane(subject: &str) -> Option<CmdLane> {
    let tenant = subject
        .strip_prefix("bulkhead.cmd.")
        .and_then(|rest| rest.split_once('.'))
        .filter(|(tenant, kind)| is_valid_token(tenant) && !kind.contains('.'))
        .map(|(tenant, _)| tenant);
    if let Some(tenant) = tenant {
        return Some(CmdLane {
            consumer: format!("{SCHEDULER_CONSUMER}-t-{tenant}"),
            filter: format!("bulkhead.cmd.{tenant}.*"),
        });
    }
    (subject == CTL_DRAIN || subject == CTL_UNDRAIN).then(|| CmdLane {
        consumer: format!("{SCHEDULER_CONSUMER}-ctl"),
        filter: "bulkhead.ctl.*".to_owned(),
    })
}

/// The tenant of submissions that name none (`bulkhead up` creates it).
pub const DEFAULT_TENANT: &str = "default";

/// Words that cannot name a tenant: they are the second token of other subjects
/// (`bulkhead.evt.node.…`, `bulkhead.evt.scan.…`, `bulkhead.evt.sys.…`,
/// `bulkhead.api.admin.…`).
pub const RESERVED_TENANTS: [&str; 4] = ["node", "scan", "sys", "admin"];

/// Whether `s` can name a tenant: a subject token that no other subject family uses.
pub fn is_valid_tenant(s: &str) -> bool {
    is_valid_token(s) && !RESERVED_TENANTS.contains(&s)
}

/// A workload's key: its tenant and its id (`tenant/id`). Ids are per tenant.
pub fn workload_key(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
}

/// The tenant and id of a workload key.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
}

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

/// `bulkhead.evt.<tenant>.wl.<id>.<type>` of the workload with key `tenant/id`.
pub fn workload_event(key: &str, kind: &str) -> String {
    let (tenant, id) = split_key(key).unwrap_or(("", key));
    format!("bulkhead.evt.{tenant}.wl.{id}.{kind}")
}

/// `bulkhead.evt.<tenant>.wl.<id>.*`: every event of one workload; the filter that
/// per-workload optimistic concurrency checks against.
pub fn workload_events(key: &str) -> String {
    workload_event(key, "*")
}

/// `bulkhead.evt.<tenant>.>`: every event a tenant may read.
pub fn tenant_events(tenant: &str) -> String {
    format!("bulkhead.evt.{tenant}.>")
}

/// `bulkhead.evt.node.<node>.<type>`
pub fn node_event(node: &str, kind: &str) -> String {
    format!("bulkhead.evt.node.{node}.{kind}")
}

/// Enrolments and revocations of identities, written by admins.
pub const EVT_SYS: &str = "bulkhead.evt.sys.>";

/// `bulkhead.evt.sys.<role>.<name>.<type>`
pub fn sys_event(role: &str, name: &str, kind: &str) -> String {
    format!("bulkhead.evt.sys.{role}.{name}.{kind}")
}

/// `bulkhead.node.<node>.ops`
pub fn node_ops(node: &str) -> String {
    format!("bulkhead.node.{node}.ops")
}

/// `bulkhead.deliver.<node>`: where a node's ops consumer delivers (no stream holds it).
pub fn node_deliver(node: &str) -> String {
    format!("bulkhead.deliver.{node}")
}

/// Name of the durable ops consumer of one node.
pub fn node_consumer(node: &str) -> String {
    format!("bulkhead-node-{node}")
}

/// Workload key (`tenant/id`) of an event subject `bulkhead.evt.<tenant>.wl.<id>.<type>`.
pub fn workload_of(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix("bulkhead.evt.")?;
    let mut tokens = rest.split('.');
    let (tenant, wl, id, _kind) = (
        tokens.next()?,
        tokens.next()?,
        tokens.next()?,
        tokens.next()?,
    );
    (tokens.next().is_none() && wl == "wl" && is_valid_tenant(tenant))
        .then(|| workload_key(tenant, id))
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
    fn every_command_subject_has_one_lane_and_no_tenant_can_take_the_operators() {
        let a = cmd_lane(&cmd("acme", "submit")).unwrap();
        assert_eq!(a, cmd_lane(&cmd("acme", "stop")).unwrap());
        assert_eq!(a.consumer, "bulkhead-scheduler-t-acme");
        assert_eq!(a.filter, "bulkhead.cmd.acme.*");
        let ctl = cmd_lane(CTL_DRAIN).unwrap();
        assert_eq!(ctl, cmd_lane(CTL_UNDRAIN).unwrap());
        assert_eq!(ctl.consumer, "bulkhead-scheduler-ctl");
        // A tenant named like the operators' lane gets a lane of its own.
        assert_ne!(
            cmd_lane(&cmd("ctl", "submit")).unwrap().consumer,
            ctl.consumer
        );
        assert!(cmd_lane("bulkhead.cmd.node.submit").is_some());
        for other in [
            "bulkhead.cmd.a.b.submit",
            "bulkhead.ctl.other",
            "bulkhead.cmd.*.submit",
            "bulkhead.cmd.a*b.submit",
        ] {
            assert_eq!(cmd_lane(other), None, "{other}");
        }
    }

    #[test]
    fn workload_keys_name_their_tenant_in_every_subject() {
        let key = workload_key("acme", "abc-1");
        assert_eq!(
            workload_event(&key, "started"),
            "bulkhead.evt.acme.wl.abc-1.started"
        );
        assert_eq!(workload_events(&key), "bulkhead.evt.acme.wl.abc-1.*");
        assert_eq!(workload_of(&workload_event(&key, "started")), Some(key));
        assert_eq!(workload_of("bulkhead.evt.node.n1.joined"), None);
        assert_eq!(workload_of("bulkhead.evt.acme.wl.x"), None);
        assert_eq!(
            workload_of("bulkhead.evt.node.wl.x.started"),
            None,
            "reserved"
        );
    }

    #[test]
    fn command_and_api_subjects_carry_the_tenant() {
        assert_eq!(parse_cmd(&cmd("acme", "submit")), Some(("acme", "submit")));
        assert_eq!(parse_cmd("bulkhead.cmd.sys.submit"), None);
        assert_eq!(parse_cmd("bulkhead.cmd.a.b.submit"), None);
        assert_eq!(api_tenant(&api_workloads_get("acme")), Some("acme"));
        assert_eq!(api_tenant(API_NODES_LIST), None);
    }

    #[test]
    fn aside_reports_name_their_reporter() {
        assert_eq!(
            parse_aside_report(&aside_report("node", "n1")),
            Some("node/n1".into())
        );
        for bad in [
            "bulkhead.aside.node",
            "bulkhead.aside.node.a.b",
            "bulkhead.aside.*.x",
        ] {
            assert_eq!(parse_aside_report(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_exclude_subject_metacharacters() {
        assert!(is_valid_token("node-1_a"));
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(!is_valid_token(bad), "{bad:?} accepted");
        }
        for reserved in RESERVED_TENANTS {
            assert!(!is_valid_tenant(reserved));
        }
    }
}
