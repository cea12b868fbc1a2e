//! The command line: every subcommand and flag of `bulkhead`, and how node and scan
//! settings are resolved from them. Parsing only; [`super::run`] carries them out.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bulkhead_actors::scheduler::scan_policy::ScanPolicy;
use bulkhead_scan::severity::Severity;
use bulkhead_schemas::spec::RuntimeClass;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::failover::FailoverConfig;
use crate::node::config::NodeFile;
use crate::scheduler::SchedulerConfig;

#[derive(Parser)]
#[command(
    name = "bulkhead",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BULKHEAD_COMMIT"), ")"),
    about = "A secure container orchestrator on NATS"
)]
pub struct Cli {
    /// NATS server URL.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_NATS",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// The tenant whose workloads the client commands (submit, get, list, stop, scale,
    /// events) act on.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_TENANT",
        default_value = bulkhead_schemas::subjects::DEFAULT_TENANT
    )]
    pub tenant: String,
    /// The credential to connect and sign with (default: the one for this command's role
    /// in --data-dir: `keys/<role>-<name>.creds`).
    #[arg(long, global = true, env = "BULKHEAD_CREDS")]
    pub creds: Option<PathBuf>,
    /// The admin's data directory: identities, credentials, and the local nats-server.
    #[arg(
        long,
        global = true,
        env = "BULKHEAD_DATA_DIR",
        default_value = ".bulkhead"
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run everything in one process: scheduler, query API and nodes (starts a local
    /// nats-server with JetStream when none answers at --nats).
    Up {
        #[command(flatten)]
        node: NodeArgs,
        /// How many nodes to run in this process (named <name>-1 … when more than one).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Start nats-server without authentication: anyone who reaches it owns the
        /// cluster. Loopback only; logs a warning at every start.
        #[arg(long)]
        insecure_no_auth: bool,
        #[command(flatten)]
        scan: ScanArgs,
        /// Also run a scan worker with this OSV database (directory or all.zip).
        #[arg(long, env = "BULKHEAD_VULNDB")]
        scan_db: Option<PathBuf>,
        /// The only registries its scan worker fetches from (`host[:port]`, commas; their
        /// loopback or private addresses allowed too). Empty: any registry at a public
        /// address.
        #[arg(long, env = "BULKHEAD_SCAN_REGISTRIES", value_delimiter = ',')]
        scan_registries: Vec<String>,
        #[command(flatten)]
        failover: FailoverArgs,
    },
    /// Set up the data directory once: an admin key, one key per service, the default
    /// tenant, and the nats-server `authorization` block to include (`up` runs it too).
    Init {
        /// Also make a CA and a server certificate for these host names (a nats-server
        /// that listens beyond loopback must speak TLS); credentials then carry the CA.
        #[arg(long = "tls-host")]
        tls_hosts: Vec<String>,
    },
    /// As the admin, against a running nats-server that includes the `authorization`
    /// block `init` wrote: create the streams and buckets, and write the enrolments to the
    /// log (`up` does this itself).
    Setup,
    /// Give another admin a credential (printed: hand it over). It approves policy changes
    /// once a policy names its key (`bulkhead policy propose`).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Give a tenant its credential (printed: hand it over).
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Add a service instance's identity (scheduler, failover, api or scanner).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Revoke an identity: its connections are cut at once and its key writes no more.
    Revoke {
        /// admin, scheduler, failover, api, scanner, node or tenant.
        role: String,
        /// The identity's name.
        name: String,
    },
    /// Print the permission table each role gets from nats-server.
    Perms {
        /// As the Markdown table of docs/ARCHITECTURE.md.
        #[arg(long)]
        markdown: bool,
    },
    /// Run the failover (one is active; others stand by): restarts ended replicas by
    /// their restart policy and declares silent nodes lost.
    Failover {
        #[command(flatten)]
        failover: FailoverArgs,
    },
    /// Run a scheduler (one is active; others stand by and take over).
    Scheduler {
        #[command(flatten)]
        scan: ScanArgs,
        #[command(flatten)]
        snapshots: SnapshotArgs,
        /// At most this many heartbeats a second from the whole cluster: past it, nodes
        /// beating faster are told to beat less often, in steps of powers of two seconds
        /// up to 10 s (a node is declared lost after three of its intervals). 0: no pacing.
        #[arg(long, default_value_t = bulkhead_actors::scheduler::pace::BEATS_PER_SEC)]
        heartbeats_per_sec: u64,
    },
    /// Run a node (or, with `drain`, move every replica off one).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        action: Option<NodeAction>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run the query API service (it also checkpoints the log).
    Api {
        /// Checkpoint the log this often when it has grown.
        #[arg(long, default_value_t = 60)]
        checkpoint_secs: u64,
        /// … or after this many new messages.
        #[arg(long, default_value_t = 10_000)]
        checkpoint_messages: u64,
        #[command(flatten)]
        snapshots: SnapshotArgs,
    },
    /// Submit a workload spec (JSON file, or - for stdin) and follow it.
    Submit {
        /// The spec: a JSON file, or - to read it from standard input.
        file: String,
        /// Print the id and return without following.
        #[arg(long)]
        no_follow: bool,
        /// Give up following after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show one workload: what it runs, where, and why (or -o json|yaml).
    Get {
        /// The workload's id (in --tenant).
        id: String,
        #[command(flatten)]
        format: super::output::Format,
    },
    /// List workloads.
    List {
        /// Only workloads in this state: pending, scheduled, running, succeeded, failed,
        /// stopped, rejected, lost, quarantined.
        #[arg(long)]
        state: Option<String>,
        /// Only workloads with a replica on this node.
        #[arg(long)]
        node: Option<String>,
        /// Only workloads with this label, key=value.
        #[arg(long)]
        label: Option<String>,
        /// At most this many (default 1000, at most 10000).
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this id (ids are listed in order): the next page.
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        format: super::output::Format,
        /// Show it again every 2 s until interrupted.
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// List nodes with capacity, allocations and heartbeat age.
    Nodes {
        #[command(flatten)]
        format: super::output::Format,
        /// Show it again every 2 s until interrupted.
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// What the query API set aside while reading the log (forged, malformed or
    /// unauthorised events), by reason, the latest listed (admin).
    Aside {
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cluster's policy: show it, propose a change, approve one (M of N admins), or
    /// test a policy file against example submissions.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Prove the log: verify it from its start, or export its latest checkpoint.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Seal a secret's value (read from standard input) to the schedulers' keys, for a
    /// spec's `secrets` sent with `nats pub` (`bulkhead submit` seals by itself).
    Seal,
    /// Copy the whole log (every message as stored, with its proof) to FILE (admin).
    Backup {
        /// Where to write it (JSON lines).
        file: PathBuf,
    },
    /// Verify a backup and write it into an empty log (admin).
    Restore {
        /// A file `bulkhead backup` wrote.
        file: PathBuf,
        /// Also match these checkpoint files.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
    },
    /// Follow the event log.
    Events {
        /// Only this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Only these event types (comma-separated).
        #[arg(long = "type", value_delimiter = ',')]
        types: Vec<String>,
        /// Start from the beginning of the log instead of new events.
        #[arg(long)]
        from_start: bool,
        /// Print the log from its start up to now and exit (an admin's; a tenant has no
        /// history of its own).
        #[arg(long)]
        no_follow: bool,
        /// Print events as stored (JSON lines).
        #[arg(long)]
        json: bool,
    },
    /// Scan an image from its registry against an offline OSV database (a directory of
    /// advisory JSON files or an OSV all.zip). Exit 6 with --fail-on when a finding is at or
    /// above that severity. Registry credentials: BULKHEAD_REGISTRY_AUTH=HOST=user:password[,…].
    Scan {
        /// The image reference, e.g. registry.example:5000/team/app:1.2.
        image: String,
        /// Scan here against this database; without it, the scan workers do the job.
        #[arg(long, env = "BULKHEAD_VULNDB")]
        db: Option<PathBuf>,
        /// Give up waiting for the workers after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// low, medium, high or critical.
        #[arg(long, value_parser = parse_severity)]
        fail_on: Option<Severity>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a scan worker: takes jobs from the scan queue, owns its share of the layer cache.
    Scanner {
        /// Offline OSV database: a directory of advisory JSON files or an OSV all.zip.
        /// Without it, the database imported with `bulkhead vulndb import` is used.
        #[arg(long, env = "BULKHEAD_VULNDB")]
        db: Option<PathBuf>,
        /// Worker id (default: scanner-<pid>).
        #[arg(long)]
        id: Option<String>,
        /// Memory for cached layer inventories.
        #[arg(long, default_value_t = 256)]
        lru_mib: usize,
        /// Scan with this Trivy binary instead (optional backend; same verdicts).
        #[arg(long)]
        trivy: Option<String>,
        /// A Trivy server for --trivy (`trivy image --server URL`).
        #[arg(long, requires = "trivy")]
        trivy_server: Option<String>,
        /// The only registries to fetch from (`host[:port]`, commas); their private or
        /// loopback addresses are allowed too. Empty: any registry at a public address
        /// (private, loopback and link-local addresses refused, after DNS and on redirects).
        #[arg(long, env = "BULKHEAD_SCAN_REGISTRIES", value_delimiter = ',')]
        registries: Vec<String>,
    },
    /// The advisory database the scan workers share.
    Vulndb {
        #[command(subcommand)]
        cmd: VulndbCmd,
    },
    /// Change how many replicas a workload runs (0 … 1000).
    Scale {
        /// The workload's id (in --tenant).
        id: String,
        /// How many replicas it should run.
        replicas: u32,
    },
    /// A replica's output, from the node that runs (or ran) it.
    Logs {
        /// The workload's id (in --tenant).
        id: String,
        /// Which replica.
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// Keep printing what it writes, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Keep the runtime's timestamp on each line.
        #[arg(long)]
        timestamps: bool,
    },
    /// Print a completion script for SHELL (e.g. `bulkhead completions bash >
    /// /etc/bash_completion.d/bulkhead`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Stop every replica of a workload.
    Stop {
        /// The workload's id (in --tenant).
        id: String,
        /// Seconds each container gets between SIGTERM and SIGKILL (node default: 10).
        #[arg(long)]
        grace: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum AdminAction {
    /// Enrol admin NAME and print its credential.
    Add {
        /// 1-64 of [A-Za-z0-9_-].
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TenantAction {
    /// Enrol tenant NAME (or give it a new key) and print its credential.
    Add {
        /// 1-64 of [A-Za-z0-9_-] (not a reserved name: node, sys, scan, admin).
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ServiceAction {
    /// Enrol service instance NAME of ROLE and print its credential.
    Add {
        /// scheduler, failover, api or scanner.
        role: String,
        /// 1-64 of [A-Za-z0-9_-].
        name: String,
    },
}

#[derive(Subcommand)]
pub enum PolicyAction {
    /// The policy in force (version, hash, admins, tenants) and the changes pending.
    Show {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Propose FILE (JSON, or TOML if it ends in .toml) as the next policy and approve it;
    /// it takes effect once the policy's threshold of admins approved it. `version` and
    /// `replaces` are filled in when the file leaves them out.
    Propose {
        /// The policy document (JSON, or TOML ending in .toml).
        file: PathBuf,
    },
    /// Approve the pending proposal whose hash starts with HASH.
    Sign {
        /// The proposal's hash, or a unique prefix of it (`policy show` lists them).
        hash: String,
    },
    /// Run example submissions (FILE: TOML or JSON) through admission under a policy and
    /// check each outcome; exit 1 naming the examples whose outcome differs.
    Test {
        /// The examples (and, optionally, the policy to test them under).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Replay the log from its start through every reader's checks and the checkpoints;
    /// exit 1 naming the first bad sequence.
    Verify {
        /// A checkpoint file (from `audit checkpoint`) the log must still match.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the log's latest checkpoint (signed by the query API) to FILE, to keep
    /// outside NATS.
    Checkpoint {
        /// Where to write it.
        file: PathBuf,
    },
    /// The query API's latest verification of the log.
    Status {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum NodeAction {
    /// Enrol node NAME with the runtime classes it may offer (fixed: a heartbeat that
    /// advertises more is ignored) and print its credential.
    Add {
        /// 1-64 of [A-Za-z0-9_-] (no dots: it becomes a subject token).
        name: String,
        /// Runtime classes it may offer, comma-separated: runc, gvisor, kata, edera-zone,
        /// confidential.
        #[arg(long, value_delimiter = ',', required = true)]
        classes: Vec<String>,
    },
    /// Move every replica off NODE, one at a time (each new copy runs before the old one
    /// stops), and place nothing new there until `undrain` (a restart of the node keeps it).
    Drain {
        /// The node's name.
        node: String,
    },
    /// Let a drained (or draining) NODE take new placements again.
    Undrain {
        /// The node's name.
        node: String,
    },
}

#[derive(Args, Clone)]
pub struct FailoverArgs {
    /// A node whose heartbeats stop for this long is lost and its replicas replaced.
    #[arg(long, default_value_t = 3000)]
    lost_timeout_ms: u64,
    #[command(flatten)]
    snapshots: SnapshotArgs,
}

impl FailoverArgs {
    pub fn config(&self) -> FailoverConfig {
        FailoverConfig {
            lost_timeout: Duration::from_millis(self.lost_timeout_ms.max(100)),
            snapshots: self.snapshots.every(),
            ..Default::default()
        }
    }
}

/// When a service writes its snapshot (at a checkpoint of the log).
#[derive(Args, Clone)]
pub struct SnapshotArgs {
    /// Write a snapshot once this many messages came since the last …
    #[arg(long, default_value_t = 50_000)]
    snapshot_messages: u64,
    /// … or this many seconds passed while the log grew …
    #[arg(long, default_value_t = 300)]
    snapshot_secs: u64,
    /// … but never sooner than this many seconds after the last …
    #[arg(long, default_value_t = 10)]
    snapshot_min_secs: u64,
    /// … nor sooner than this many times the CPU time the last took to seal (0: no such
    /// wait).
    #[arg(long, default_value_t = 10)]
    snapshot_spacing: u32,
}

impl SnapshotArgs {
    pub fn every(&self) -> crate::snapshot::SnapshotEvery {
        crate::snapshot::SnapshotEvery {
            messages: self.snapshot_messages,
            interval: Duration::from_secs(self.snapshot_secs),
            min_interval: Duration::from_secs(self.snapshot_min_secs),
            spacing: self.snapshot_spacing,
        }
    }
}

#[derive(Subcommand)]
pub enum VulndbCmd {
    /// Import an OSV database (a directory of advisory JSON files, or an OSV all.zip).
    Import {
        /// A directory of OSV advisory JSON files, or an OSV all.zip.
        path: PathBuf,
    },
    /// Download an OSV all.zip (e.g. https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip) and import it.
    Sync {
        /// Where to download the all.zip from.
        url: String,
    },
}

/// The scheduler's scan policy.
#[derive(Args, Clone)]
pub struct ScanArgs {
    /// Scan mode per trust level: gate (place after a clean verdict), async (place at
    /// once, quarantine on a bad verdict) or off, e.g. `untrusted=gate,multi_tenant=async`.
    /// Default: untrusted=gate, multi_tenant=async, internal=off.
    #[arg(long, default_value = "")]
    scan_policy: String,
    /// A finding at or above this severity fails a verdict.
    #[arg(long, default_value = "high", value_parser = parse_severity)]
    scan_threshold: Severity,
    /// What quarantine does to a running workload whose verdict fails (`async`): `stop`
    /// it, or move it to a runtime class (e.g. `gvisor`, `kata`) when it runs in a weaker
    /// one (one already that strong is left running, marked quarantined).
    #[arg(long, default_value = "stop")]
    scan_quarantine: String,
    /// Seconds an image's verdict answers for later submissions of the same reference;
    /// after that a submission scans it again (a re-pushed tag, a newer advisory database).
    #[arg(long, default_value_t = 600)]
    scan_verdict_ttl_secs: u64,
    /// Whether `gate` lets through an image whose packages could not be judged (no OS
    /// package database, an unsupported OS): `reject` (no findings is not clean) or `allow`.
    #[arg(long, default_value = "reject", value_parser = ["reject", "allow"])]
    scan_gate_unjudged: String,
}

impl ScanArgs {
    pub fn config(&self) -> anyhow::Result<SchedulerConfig> {
        let mut policy = ScanPolicy::default()
            .with_modes(&self.scan_policy)
            .map_err(|e| anyhow::anyhow!("--scan-policy {e}"))?;
        policy.threshold = self.scan_threshold;
        policy.verdict_ttl_ms = self.scan_verdict_ttl_secs.saturating_mul(1000);
        policy.gate_allows_unjudged = self.scan_gate_unjudged == "allow";
        policy.quarantine_class = match self.scan_quarantine.as_str() {
            "stop" => None,
            c => Some(RuntimeClass::parse(c).with_context(|| {
                format!("--scan-quarantine {c}: stop, or a runtime class (runc, gvisor, kata, edera-zone, confidential)")
            })?),
        };
        Ok(SchedulerConfig {
            scan_policy: policy,
            ..SchedulerConfig::default()
        })
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RuntimeKind {
    /// In-memory containers for load tests: runs nothing.
    Sim,
    /// A CRI v1 runtime (containerd, CRI-O, Edera, Kata …) over its unix socket.
    Cri,
}

/// Node settings: a TOML file (`--config`), overridden by flags.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// Node configuration file (TOML); see deploy/node.example.toml.
    #[arg(long = "config")]
    config: Option<PathBuf>,
    /// The node's name (default: node; with `up --nodes N`, node-1 … node-N).
    #[arg(long)]
    name: Option<String>,
    /// The container runtime (default: sim).
    #[arg(long, value_enum)]
    runtime: Option<RuntimeKind>,
    /// Runtime classes a sim node offers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// CRI endpoint (unix socket path).
    #[arg(long)]
    cri_socket: Option<PathBuf>,
    /// Runtime class → CRI handler, CLASS=HANDLER (repeatable), e.g. gvisor=runsc.
    #[arg(long = "handler")]
    handlers: Vec<String>,
    /// Directory of workload logs (CRI runtime).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Image of the isolation probe (needs sh, uname, cat).
    #[arg(long)]
    probe_image: Option<String>,
    /// Workloads' network (CRI runtime): `pod`, a namespace of its own per sandbox on the
    /// runtime's CNI network with the host's own addresses closed to it (default), or
    /// `host`, the node's own namespace, where every workload reaches the host's services.
    #[arg(long, value_parser = ["pod", "host"])]
    network: Option<String>,
    /// The pod network's addresses, as its CNI configuration hands them out (default
    /// 10.88.0.0/16): what the node's nftables guard keeps off the host.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Milliseconds between looks for exited containers without exit events.
    #[arg(long)]
    exit_poll_ms: Option<u64>,
    /// containerd's API socket for `/tasks/exit` events (default: the CRI socket).
    #[arg(long)]
    events_socket: Option<PathBuf>,
    /// Do not follow containerd's exit events; poll only.
    #[arg(long)]
    no_exit_events: bool,
    /// Memory the node offers, MiB (default: 16384).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// CPU the node offers, millicores (default: 8000).
    #[arg(long)]
    cpu_millicores: Option<u64>,
    /// Replicas the node runs at most (default: 110).
    #[arg(long)]
    slots: Option<u32>,
    /// Node labels, key=value (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Milliseconds between heartbeats (default: 1000; 10 … 10000).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Start delay of sim containers, milliseconds.
    #[arg(long)]
    sim_start_delay_ms: Option<u64>,
}

impl NodeArgs {
    /// Whether the flags or the file name the node (else its credential does).
    pub fn names_itself(&self) -> bool {
        self.name.is_some()
            || self
                .config
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .is_some_and(|t| t.lines().any(|l| l.trim_start().starts_with("name")))
    }

    /// The configuration file (or the defaults) with the flags applied.
    pub fn resolve(&self) -> anyhow::Result<NodeFile> {
        let mut f = match &self.config {
            Some(p) => NodeFile::load(p)?,
            None => NodeFile::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {
                $(if let Some(v) = &self.$field { $target = v.clone(); })*
            };
        }
        set!(name => f.name, memory_mb => f.memory_mb, cpu_millicores => f.cpu_millicores,
            slots => f.slots, heartbeat_ms => f.heartbeat_ms,
            sim_start_delay_ms => f.sim_start_delay_ms, cri_socket => f.cri.socket,
            log_dir => f.cri.log_dir, probe_image => f.cri.probe_image,
            exit_poll_ms => f.cri.exit_poll_ms);
        if let Some(p) = &self.events_socket {
            f.cri.events_socket = Some(p.clone());
        }
        match self.network.as_deref() {
            Some("host") => f.cri.network = crate::node::config::Network::Host,
            Some(_) => f.cri.network = crate::node::config::Network::Pod,
            None => {}
        }
        if let Some(c) = &self.pod_cidr {
            f.cri.pod_cidr = c.clone();
        }
        if self.no_exit_events {
            f.cri.exit_events = false;
        }
        if let Some(r) = self.runtime {
            f.runtime = match r {
                RuntimeKind::Sim => "sim",
                RuntimeKind::Cri => "cri",
            }
            .into();
        }
        if !self.classes.is_empty() {
            f.classes = self
                .classes
                .iter()
                .map(|c| {
                    RuntimeClass::parse(c).with_context(|| format!("unknown runtime class {c}"))
                })
                .collect::<anyhow::Result<_>>()?;
        }
        for h in &self.handlers {
            f.add_handler(h)?;
        }
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("label {l} is not key=value"))?;
            f.labels.insert(k.to_owned(), v.to_owned());
        }
        let beats = bulkhead_actors::node::limits::HEARTBEAT_MS;
        if !beats.contains(&f.heartbeat_ms) {
            anyhow::bail!(
                "a heartbeat every {} ms is outside {}…{} ms: every reader would set its \
                 heartbeats aside (at most a third of the heartbeat bucket's 30 s TTL)",
                f.heartbeat_ms,
                beats.start(),
                beats.end()
            );
        }
        Ok(f)
    }
}

pub fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::from_label(s).ok_or_else(|| format!("{s}: expected low, medium, high or critical"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag and positional argument of every subcommand, without help text.
    fn unexplained(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version") || a.is_hide_set() {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                out.push(format!("{path} {} (the subcommand)", sub.get_name()));
            }
            unexplained(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_argument_and_subcommand_says_what_it_is() {
        let mut missing = Vec::new();
        unexplained(&Cli::command(), "bulkhead", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    /// The node's settings from `bulkhead node <args>`.
    fn node(args: &[&str]) -> anyhow::Result<crate::node::config::NodeFile> {
        use clap::Parser;
        let cli = Cli::try_parse_from([&["bulkhead", "node"][..], args].concat()).unwrap();
        let Cmd::Node { node, .. } = cli.cmd else {
            panic!("not the node command")
        };
        node.resolve()
    }

    #[test]
    fn a_node_refuses_a_heartbeat_interval_its_readers_would_set_aside() {
        assert_eq!(
            node(&["--heartbeat-ms", "10000"]).unwrap().heartbeat_ms,
            10_000
        );
        let e = node(&["--heartbeat-ms", "10001"]).unwrap_err().to_string();
        assert!(e.contains("outside 10…10000 ms"), "{e}");
        assert!(node(&["--heartbeat-ms", "9"]).is_err());
    }
}
