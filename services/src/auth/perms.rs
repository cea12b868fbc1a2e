//! The permission table: which NATS account each role lives in, and what nats-server lets
//! it publish and subscribe to — core subjects, the JetStream API (`$JS.API.…`: which
//! streams it may look at, which consumers it may create, on which filters), KV keys and
//! lease keys. Everything not listed is refused by the server.
//!
//! Nodes and tenants live in accounts of their own (`NODES`, `TENANTS`) with no JetStream:
//! they reach the `BULKHEAD` account (the streams, the services, the admins) only through
//! what it exports to them. JetStream delivers a pulled message, and answers an ack, to
//! whatever reply subject the asker names; in their own account those subjects lead
//! nowhere, so a node or a tenant cannot turn a delivery into a write of the log, a lease
//! or a stream deletion. The server's accounts and the table in `docs/ARCHITECTURE.md` are
//! both generated from here (`bulkhead perms`).

use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects::{self as s};
use serde::Serialize;

/// What one identity may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Perms {
    /// Subjects it may publish to (and request on).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The account that holds the streams, the services and the admins.
pub const BULKHEAD_ACCOUNT: &str = "BULKHEAD";
/// The nodes' account.
pub const NODES_ACCOUNT: &str = "NODES";
/// The tenants' account.
pub const TENANTS_ACCOUNT: &str = "TENANTS";

/// The account a role's users live in.
pub fn account(role: Role) -> &'static str {
    match role {
        Role::Node => NODES_ACCOUNT,
        Role::Tenant => TENANTS_ACCOUNT,
        Role::Admin | Role::Scheduler | Role::Failover | Role::Api | Role::Scanner => {
            BULKHEAD_ACCOUNT
        }
    }
}

/// Something the bulkhead account exports to the nodes' or the tenants' account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub subject: String,
    /// A stream of messages flowing to the importer (else a service it sends to).
    pub stream: bool,
    /// The exporting account.
    pub from: &'static str,
    /// The importing account.
    pub to: &'static str,
    /// The subject the importer sees it under, when not its own (wildcards kept in order).
    pub local: Option<&'static str>,
}

/// What the nodes' and the tenants' accounts import: exactly what their rows use, with
/// the node or tenant a wildcard (each user's own permissions narrow it to its name).
pub fn exports() -> Vec<Export> {
    let service = |subject: String, to| Export {
        subject,
        stream: false,
        from: BULKHEAD_ACCOUNT,
        to,
        local: None,
    };
    let mut e: Vec<Export> = ["started", "exited", "stopped"]
        .iter()
        .map(|k| service(format!("bulkhead.evt.*.wl.*.{k}"), NODES_ACCOUNT))
        .collect();
    e.push(service(s::node_event("*", "joined"), NODES_ACCOUNT));
    e.push(service(format!("$KV.{}.*", s::NODES_BUCKET), NODES_ACCOUNT));
    e.push(Export {
        subject: s::node_deliver("*"),
        stream: true,
        from: BULKHEAD_ACCOUNT,
        to: NODES_ACCOUNT,
        local: None,
    });
    e.push(service(
        format!("$JS.ACK.{}.>", s::OPS_STREAM),
        NODES_ACCOUNT,
    ));
    e.push(service(s::api_node_heads("*"), NODES_ACCOUNT));
    e.push(service(s::api_node_beat("*"), NODES_ACCOUNT));
    e.push(service(s::aside_report("node", "*"), NODES_ACCOUNT));
    for k in ["submit", "stop", "scale"] {
        e.push(service(s::cmd("*", k), TENANTS_ACCOUNT));
    }
    e.push(service(
        s::API_WORKLOADS_GET_ALL.to_owned(),
        TENANTS_ACCOUNT,
    ));
    e.push(service(
        s::API_WORKLOADS_LIST_ALL.to_owned(),
        TENANTS_ACCOUNT,
    ));
    e.push(service(s::API_SEALING_ALL.to_owned(), TENANTS_ACCOUNT));
    // The tenants' feed (the log republishes each stored workload event there), seen
    // by tenants under the events' own subjects.
    e.push(Export {
        subject: s::TENANT_FEED_ALL.to_owned(),
        stream: true,
        from: BULKHEAD_ACCOUNT,
        to: TENANTS_ACCOUNT,
        local: Some(s::EVT_WORKLOADS),
    });
    // A workload's output, from the node that ran it (the nodes' account serves it).
    e.push(Export {
        subject: s::LOGS_ALL.to_owned(),
        stream: false,
        from: NODES_ACCOUNT,
        to: TENANTS_ACCOUNT,
        local: None,
    });
    e
}

/// The JetStream API subject `$JS.API.<rest>`.
fn api(rest: &str) -> String {
    format!("$JS.API.{rest}")
}

/// Reading the whole event log: its info, ordered consumers (named, on any log filter),
/// pulls from them, and direct gets of heads.
fn read_log(p: &mut Perms) {
    let evt = s::EVT_STREAM;
    p.publish.extend([
        api(&format!("STREAM.INFO.{evt}")),
        api(&format!("CONSUMER.CREATE.{evt}.*.bulkhead.evt.>")),
        api(&format!("CONSUMER.MSG.NEXT.{evt}.*")),
        api(&format!("CONSUMER.DELETE.{evt}.*")),
        api(&format!("DIRECT.GET.{evt}")),
    ]);
}

/// Writing events of these types on workloads of any tenant.
fn write_workload_events(p: &mut Perms, kinds: &[&str]) {
    p.publish
        .extend(kinds.iter().map(|k| format!("bulkhead.evt.*.wl.*.{k}")));
}

/// Writing node events of these types about any node.
fn write_node_events(p: &mut Perms, kinds: &[&str]) {
    p.publish
        .extend(kinds.iter().map(|k| s::node_event("*", k)));
}

/// Looking at a KV bucket: its info, reads of `keys` (a subject token or `>`).
fn kv_read(p: &mut Perms, bucket: &str, keys: &str) {
    p.publish.extend([
        api(&format!("STREAM.INFO.KV_{bucket}")),
        api(&format!("DIRECT.GET.KV_{bucket}.$KV.{bucket}.{keys}")),
    ]);
}

/// Watching (or listing) a whole KV bucket: an ordered push consumer, its flow control.
fn kv_watch(p: &mut Perms, bucket: &str) {
    p.publish.extend([
        api(&format!("CONSUMER.CREATE.KV_{bucket}")),
        api(&format!("CONSUMER.CREATE.KV_{bucket}.>")),
        format!("$JS.FC.KV_{bucket}.>"),
    ]);
}

/// Writing `keys` of a KV bucket.
fn kv_write(p: &mut Perms, bucket: &str, keys: &str) {
    kv_read(p, bucket, keys);
    p.publish.push(format!("$KV.{bucket}.{keys}"));
}

/// Pulling from (and acknowledging on) a durable consumer, created on `filter` (or on
/// several filters, which the server then names in the request body only).
fn durable(p: &mut Perms, stream: &str, consumer: &str, filter: Option<&str>) {
    p.publish.extend([
        api(&format!("STREAM.INFO.{stream}")),
        api(&format!("CONSUMER.INFO.{stream}.{consumer}")),
        api(&format!("CONSUMER.MSG.NEXT.{stream}.{consumer}")),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ]);
    p.publish.push(match filter {
        Some(f) => api(&format!("CONSUMER.CREATE.{stream}.{consumer}.{f}")),
        None => api(&format!("CONSUMER.CREATE.{stream}.{consumer}")),
    });
}

/// Writing and reading the service's own snapshot, object `name` of the snapshots' store
/// (the chunks' subjects are random: a writer can reach others' chunks, never their
/// entries, and a snapshot not signed by its reader's key is ignored).
fn snapshots(p: &mut Perms, name: &str) {
    use base64::Engine;
    let bucket = s::SNAPSHOTS_BUCKET;
    let meta = format!(
        "$O.{bucket}.M.{}",
        base64::engine::general_purpose::URL_SAFE.encode(name)
    );
    object_read(p, bucket, &meta);
    p.publish.extend([
        api(&format!("STREAM.PURGE.OBJ_{bucket}")),
        format!("$O.{bucket}.C.>"),
        meta,
    ]);
}

/// Reading an object store: its info, direct gets of `subjects` (an entry's, or `>`), and
/// its chunks (an ordered push consumer, its flow control).
fn object_read(p: &mut Perms, bucket: &str, subjects: &str) {
    let obj = format!("OBJ_{bucket}");
    p.publish.extend([
        api(&format!("STREAM.INFO.{obj}")),
        api(&format!("DIRECT.GET.{obj}.{subjects}")),
        api(&format!("CONSUMER.CREATE.{obj}")),
        api(&format!("CONSUMER.CREATE.{obj}.>")),
        format!("$JS.FC.{obj}.>"),
    ]);
}

/// Holding a lease key.
fn lease(p: &mut Perms, key: &str) {
    kv_write(p, s::LEASES_BUCKET, key);
}

/// The permissions of `role` `name`.
pub fn of(role: Role, name: &str) -> Perms {
    let mut p = Perms::default();
    if role == Role::Admin {
        p.publish.push(">".into());
        p.subscribe.push(">".into());
        return p;
    }
    p.subscribe
        .push(format!("{}.>", super::creds::inbox(role, name)));
    // What it set aside, reported as itself (tenants refuse nothing of the cluster's).
    if role != Role::Tenant {
        p.publish.push(s::aside_report(role.as_str(), name));
    }
    match role {
        Role::Admin => unreachable!("handled above"),
        Role::Tenant => {
            let t = name;
            p.publish
                .extend(["submit", "stop", "scale"].iter().map(|k| s::cmd(t, k)));
            p.publish.extend([
                s::api_workloads_get(t),
                s::api_workloads_list(t),
                s::api_sealing(t),
                s::logs(t, "*"),
            ]);
            // Its own events, as they are stored (`nats sub`); no JetStream of its own.
            p.subscribe.push(s::tenant_events(t));
        }
        Role::Node => {
            let n = name;
            write_workload_events(&mut p, &["started", "exited", "stopped"]);
            p.publish.push(s::node_event(n, "joined"));
            // Its heartbeat: a plain publish to its own key.
            p.publish.push(format!("$KV.{}.{n}", s::NODES_BUCKET));
            // Its ops: what the consumer the admin made for it delivers, and acks on it.
            p.subscribe.push(s::node_deliver(n));
            p.publish.push(format!(
                "$JS.ACK.{}.{}.>",
                s::OPS_STREAM,
                s::node_consumer(n)
            ));
            p.publish.push(s::api_node_heads(n));
            p.publish.push(s::api_node_beat(n));
            // Its workloads' output, asked by their tenants; answered on the reply the
            // import maps (`_R_.…`, routed back to the asker's account).
            p.subscribe.push(s::logs("*", n));
            p.publish.push("_R_.>".to_owned());
        }
        Role::Scheduler => {
            read_log(&mut p);
            write_workload_events(
                &mut p,
                &[
                    "accepted",
                    "rejected",
                    "scheduled",
                    "scan_requested",
                    "scan_completed",
                    "scaled",
                    "quarantined",
                    "scan_waiting",
                    "stop_requested",
                ],
            );
            write_node_events(&mut p, &["draining", "drained", "undrained"]);
            p.publish
                .extend([s::OPS_ALL.to_owned(), s::SCAN_JOBS.to_owned()]);
            // Its lanes, a consumer a tenant (`subjects::cmd_lane`): any consumer of the
            // command stream, a power no greater than reading and acknowledging every command.
            durable(&mut p, s::CMD_STREAM, "*", Some(">"));
            // The commands it handled leave the stream by its purge (its power over the
            // commands is no greater: it can already acknowledge any command unhandled).
            p.publish
                .push(api(&format!("STREAM.PURGE.{}", s::CMD_STREAM)));
            p.publish
                .push(api(&format!("STREAM.INFO.{}", s::SCAN_STREAM)));
            lease(&mut p, s::SCHEDULER_LEASE_KEY);
            snapshots(&mut p, bulkhead_actors::scheduler::SERVICE);
            kv_read(&mut p, s::NODES_BUCKET, ">");
            kv_watch(&mut p, s::NODES_BUCKET);
            // Counting the live scan workers (their keys only).
            kv_read(&mut p, s::SCANNERS_BUCKET, ">");
            kv_watch(&mut p, s::SCANNERS_BUCKET);
        }
        Role::Failover => {
            read_log(&mut p);
            write_workload_events(&mut p, &["lost", "replica_requested", "gave_up"]);
            write_node_events(&mut p, &["lost"]);
            lease(&mut p, s::FAILOVER_LEASE_KEY);
            snapshots(&mut p, crate::failover::SERVICE);
            kv_read(&mut p, s::NODES_BUCKET, ">");
            kv_watch(&mut p, s::NODES_BUCKET);
        }
        Role::Api => {
            read_log(&mut p);
            snapshots(&mut p, crate::api::SERVICE);
            p.subscribe.extend([
                s::API_WORKLOADS_GET_ALL.to_owned(),
                s::API_WORKLOADS_LIST_ALL.to_owned(),
                s::API_SEALING_ALL.to_owned(),
                s::API_NODES_LIST.to_owned(),
                s::API_ASIDE_LIST.to_owned(),
                s::api_node_heads("*"),
                s::api_node_beat("*"),
                "$SRV.>".to_owned(),
            ]);
            // Answers go to the nodes' and tenants' imports (`_R_.…`, mapped back to the
            // asker's account) or to an admin's inbox, nowhere else.
            p.publish
                .extend(["_R_.>".to_owned(), "_INBOX.admin.>".to_owned()]);
            // Its checkpoints of the log, as itself.
            p.publish.push(s::sys_event("audit", name, "checkpoint"));
            p.subscribe.push(s::API_AUDIT_STATUS.to_owned());
            // Every service's report of what it set aside, and JetStream's word on
            // messages a consumer gave up on.
            p.subscribe.extend([
                s::ASIDE_REPORTS.to_owned(),
                s::MAX_DELIVERIES_ADVISORIES.to_owned(),
            ]);
            kv_read(&mut p, s::NODES_BUCKET, ">");
            kv_watch(&mut p, s::NODES_BUCKET);
        }
        Role::Scanner => {
            p.publish.push(s::scan_event("*", "scan_completed"));
            p.publish.push(s::scan_progress("*"));
            p.publish.push(s::scan_layer("*"));
            p.subscribe.push(s::scan_layer("*"));
            // Layer answers go to another worker's inbox only.
            p.publish.push("_INBOX.scanner.>".to_owned());
            // The scan stream holds jobs only: its consumer needs no filter.
            durable(&mut p, s::SCAN_STREAM, s::SCAN_CONSUMER, None);
            kv_write(&mut p, s::LAYERS_BUCKET, ">");
            kv_write(&mut p, s::SCANNERS_BUCKET, ">");
            kv_watch(&mut p, s::SCANNERS_BUCKET);
            // The advisory database an admin imported: an object store, read only.
            object_read(&mut p, s::VULNDB_BUCKET, ">");
            p.publish
                .push(api(&format!("STREAM.MSG.GET.OBJ_{}", s::VULNDB_BUCKET)));
        }
    }
    p
}

/// Whether NATS subject pattern `pattern` (with `*` and `>`) matches `subject`, token by
/// token as nats-server matches a permission.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = subject.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Perms {
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| matches(p, subject))
    }
    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe.iter().any(|p| matches(p, subject))
    }
}

/// The table as Markdown, one row per role (names in angle brackets), for
/// `docs/ARCHITECTURE.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "| role | account | may publish (and request) | may subscribe to |\n|---|---|---|---|\n",
    );
    for role in Role::ALL {
        let placeholder = match role {
            Role::Tenant => "<tenant>",
            Role::Node => "<node>",
            _ => "<name>",
        };
        let p = of(role, placeholder);
        let cell = |v: &[String]| {
            v.iter()
                .map(|x| format!("`{x}`"))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        out.push_str(&format!(
            "| {role} | {} | {} | {} |\n",
            account(role),
            cell(&p.publish),
            cell(&p.subscribe),
        ));
    }
    out.push_str(
        "\nWhat each account exports, and only to whom:\n\n| subject | kind | from | to |\n|---|---|---|---|\n",
    );
    for e in exports() {
        let kind = if e.stream { "stream" } else { "service" };
        let to = match e.local {
            Some(l) => format!("{} (as `{l}`)", e.to),
            None => e.to.to_owned(),
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {} | {to} |\n",
            e.subject, e.from
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_patterns_match_as_the_server_does() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.c.d"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn a_tenant_reaches_its_own_subjects_only() {
        let t = of(Role::Tenant, "acme");
        assert!(t.may_publish("bulkhead.cmd.acme.submit"));
        assert!(!t.may_publish("bulkhead.cmd.other.submit"));
        assert!(!t.may_publish("bulkhead.ctl.drain"));
        assert!(t.may_subscribe("bulkhead.evt.acme.wl.web.started"));
        assert!(!t.may_subscribe("bulkhead.evt.other.wl.web.started"));
        assert!(!t.may_subscribe("bulkhead.evt.>"));
        assert!(!t.may_publish("$JS.API.CONSUMER.CREATE.BULKHEAD_EVT.f1.bulkhead.evt.acme.>"));
        assert!(!t.may_publish("$JS.API.CONSUMER.MSG.NEXT.BULKHEAD_EVT.f1"));
        assert!(!t.may_publish("$JS.API.CONSUMER.CREATE.BULKHEAD_EVT"));
        assert!(!t.may_publish("$JS.API.STREAM.PURGE.BULKHEAD_EVT"));
        assert!(!t.may_subscribe("_INBOX.tenant.other.x"));
    }

    #[test]
    fn a_node_writes_its_own_heartbeat_and_reads_its_own_ops_only() {
        let n = of(Role::Node, "n1");
        assert!(n.may_publish("$KV.bulkhead-nodes.n1"));
        assert!(!n.may_publish("$KV.bulkhead-nodes.n2"));
        assert!(n.may_subscribe("bulkhead.deliver.n1"));
        assert!(!n.may_subscribe("bulkhead.deliver.n2"));
        assert!(!n.may_publish("$JS.API.CONSUMER.MSG.NEXT.BULKHEAD_OPS.bulkhead-node-n1"));
        assert!(!n.may_publish("bulkhead.node.n1.ops"));
        assert!(!n.may_subscribe("bulkhead.node.n1.ops"));
        assert!(!n.may_publish("$JS.API.DIRECT.GET.BULKHEAD_EVT"));
        assert!(n.may_publish("bulkhead.evt.acme.wl.web.started"));
        assert!(!n.may_publish("bulkhead.evt.acme.wl.web.accepted"));
        assert!(!n.may_publish("bulkhead.evt.node.n2.joined"));
        assert!(!n.may_publish("$KV.bulkhead-leases.scheduler"));
    }

    /// docs/ARCHITECTURE.md shows the table this code generates (`BULKHEAD_BLESS=1`
    /// rewrites it).
    #[test]
    fn the_documented_table_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- perms:begin -->\n", "<!-- perms:end -->");
        let start = doc.find(begin).expect("the table's begin marker") + begin.len();
        let stop = doc.find(end).expect("the table's end marker");
        let table = markdown();
        if std::env::var_os("BULKHEAD_BLESS").is_some() {
            let fresh = format!("{}{table}{}", &doc[..start], &doc[stop..]);
            std::fs::write(&path, fresh).unwrap();
            return;
        }
        assert_eq!(
            &doc[start..stop],
            table,
            "docs/ARCHITECTURE.md's permission table is stale: BULKHEAD_BLESS=1 cargo test -p bulkhead --lib perms"
        );
    }

    #[test]
    fn only_admins_manage_streams() {
        for role in Role::ALL {
            let p = of(role, "x");
            for verb in ["CREATE", "UPDATE", "DELETE", "PURGE"] {
                let subject = format!("$JS.API.STREAM.{verb}.{}", s::EVT_STREAM);
                assert_eq!(
                    p.may_publish(&subject),
                    role == Role::Admin,
                    "{role} {verb}"
                );
            }
        }
    }
}
