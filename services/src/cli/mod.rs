//! The `bulkhead` command: its arguments ([`args`]), and one file per group of commands —
//! [`up`], [`submit`], [`query`] (`get`, `list`, `nodes`), [`events`], [`control`]
//! (`stop`, `scale`, `node drain|undrain`), [`scan`] (`scan`, `vulndb`). The services
//! (`scheduler`, `failover`, `node`, `api`, `scanner`) start from their own modules.

pub mod admin;
pub mod args;
pub mod audit;
pub mod control;
pub mod events;
pub mod logs;
pub mod output;
pub mod policy;
pub mod query;
pub mod scan;
pub mod submit;
pub mod up;

use std::time::Duration;

use anyhow::Context;
use bulkhead_schemas::api::{ListRequest, WorkloadState};
use tracing::info;

use std::path::Path;

use bulkhead_schemas::identity::Role;

use crate::auth::{Credential, DataDir};
use crate::bus::Bus;
use crate::scan::trivy::TrivyConfig;
use crate::{api, failover, node, scheduler, telemetry};
use args::{AdminAction, Cli, Cmd, NodeAction, PolicyAction, ServiceAction, TenantAction};

/// Exit codes a script can rely on.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const REJECTED: i32 = 2;
    pub const FAILED: i32 = 3;
    pub const TIMEOUT: i32 = 4;
    /// What a command names does not exist (a workload, a node).
    pub const NOT_FOUND: i32 = 5;
    /// `bulkhead scan --fail-on S`: a finding at or above S.
    pub const VULNERABLE: i32 = 6;
}

/// Runs `show` once, or (`watch`) every 2 s until interrupted or the reader goes (a closed
/// pipe ends it quietly), clearing a terminal between views.
async fn watching<F, Fut>(watch: bool, mut show: F) -> anyhow::Result<i32>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i32>>,
{
    use std::io::{IsTerminal, Write};
    if !watch {
        return show().await;
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        if tty {
            print!("\x1b[2J\x1b[H");
        }
        show().await?;
        let mut out = std::io::stdout();
        if !tty {
            writeln!(out)?;
        }
        out.flush()?;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = shutdown_signal() => return Ok(exit::OK),
        }
    }
}

/// An error and its causes, each said once: a layer that already quotes its cause in its own
/// message does not get it repeated after it.
fn said_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Whether `e` is a write to a pipe whose reader has gone.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs the command line and says how the process should exit.
pub async fn main(cli: Cli) -> i32 {
    let result = run(cli).await;
    // A node's pod network guard goes with it, however the command ended (a drop may not
    // run as the process exits).
    crate::node::cri::guard::remove_installed();
    match result {
        Ok(code) => code,
        // A reader that closed its end of the pipe (`| head`) ends the command, quietly.
        Err(e) if closed_pipe(&e) => exit::OK,
        Err(e) => {
            eprintln!("error: {}", said_once(&e));
            exit::ERROR
        }
    }
}

/// The name a service logs and traces as; None for client commands.
fn service_name(cmd: &Cmd) -> Option<&'static str> {
    match cmd {
        Cmd::Up { .. } => Some("bulkhead"),
        Cmd::Scheduler { .. } => Some("bulkhead-scheduler"),
        Cmd::Failover { .. } => Some("bulkhead-failover"),
        Cmd::Scanner { .. } => Some("bulkhead-scanner"),
        Cmd::Node { action: None, .. } => Some("bulkhead-node"),
        Cmd::Api { .. } => Some("bulkhead-api"),
        _ => None,
    }
}

/// Whom a command acts as: a credential (`--creds`, else its role's file in the data
/// directory), connected to `--nats`.
struct Who<'a> {
    nats: &'a str,
    data: DataDir,
    creds: Option<&'a Path>,
}

impl Who<'_> {
    /// The credential of `role` `name`: the one given, which must be of that role, or the
    /// data directory's.
    fn credential(&self, role: Role, name: &str) -> anyhow::Result<Credential> {
        match self.creds {
            Some(path) => {
                let c = Credential::load(path)?;
                anyhow::ensure!(
                    c.role == role,
                    "{} is the credential of {} {}, and this command runs as a {role}",
                    path.display(),
                    c.role,
                    c.name
                );
                Ok(c)
            }
            None => self.data.creds(role, name).with_context(|| {
                format!(
                    "no credential for {role} {name}: pass --creds FILE (or set BULKHEAD_CREDS), \
                     or --data-dir of a cluster set up with `bulkhead init`"
                )
            }),
        }
    }

    /// A service's connection as `role` `name` (streams are an admin's business: they
    /// must exist).
    async fn service(&self, role: Role, name: &str) -> anyhow::Result<Bus> {
        Ok(Bus::connect_as(self.nats, &self.credential(role, name)?).await?)
    }

    /// A client command's connection and the tenant it acts for: a tenant's credential acts
    /// for that tenant; an admin's for `--tenant`.
    async fn client(&self, tenant: &str) -> anyhow::Result<(Bus, String)> {
        let creds = match self.creds {
            Some(path) => Credential::load(path)?,
            None => match self.data.creds(Role::Tenant, tenant) {
                Ok(c) => c,
                Err(_) => self.credential(Role::Admin, "admin").with_context(|| {
                    format!(
                        "no credential for tenant {tenant} in {}",
                        self.data.root().display()
                    )
                })?,
            },
        };
        let tenant = match creds.role {
            Role::Tenant => creds.name.clone(),
            Role::Admin => tenant.to_owned(),
            other => anyhow::bail!("a {other}'s credential cannot act for a tenant"),
        };
        Ok((Bus::connect_as(self.nats, &creds).await?, tenant))
    }

    /// An admin command's connection.
    async fn admin(&self) -> anyhow::Result<Bus> {
        self.service(Role::Admin, "admin").await
    }
}

/// Publishes a command signed by the connection's identity (`Bulkhead-Key`,
/// `Bulkhead-Sig`): the scheduler keeps the signature, so the log proves who asked.
pub(crate) async fn send_command(
    bus: &Bus,
    subject: String,
    mut headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> anyhow::Result<async_nats::jetstream::publish::PublishAck> {
    let signer = &bus.identity()?.signer;
    let sig = bulkhead_actors::signing::sign_command(signer, &subject, &payload);
    headers.insert(bulkhead_actors::signing::KEY_HEADER, signer.public_key());
    headers.insert(bulkhead_actors::signing::SIG_HEADER, sig.as_str());
    Ok(bus
        .js
        .publish_with_headers(subject, headers, payload.into())
        .await?
        .await?)
}

/// An ordered consumer of the log on `filter`: named, so that the server checks the filter
/// against the reader's permissions (a tenant reads its own events only).
pub(crate) async fn log_consumer(
    bus: &Bus,
    filter: String,
    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy,
) -> anyhow::Result<async_nats::jetstream::consumer::pull::Ordered> {
    let stream = bus
        .js
        .get_stream_no_info(bulkhead_schemas::subjects::EVT_STREAM)
        .await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            name: Some(crate::follow::consumer_name("cli")),
            filter_subject: filter,
            deliver_policy,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// Ctrl-C or SIGTERM: return, so that children (a started nats-server) are cleaned up.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    info!("shutting down");
}

/// Runs a service until it fails or the process is told to stop.
async fn serve(service: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<i32> {
    tokio::select! {
        _ = shutdown_signal() => Ok(exit::OK),
        r = service => r.map(|_| exit::OK),
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    // Services log at info; client commands only warn, but still carry trace context.
    let _telemetry = match service_name(&cli.cmd) {
        Some(s) => telemetry::init(s, "info,async_nats=warn")?,
        None => telemetry::init("bulkhead-cli", "warn")?,
    };
    let nats = cli.nats.as_str();
    let tenant = cli.tenant.as_str();
    anyhow::ensure!(
        bulkhead_schemas::subjects::is_valid_tenant(tenant),
        "tenant {tenant:?} must be 1-64 of [A-Za-z0-9_-] and none of {:?}",
        bulkhead_schemas::subjects::RESERVED_TENANTS
    );
    let data = DataDir::new(&cli.data_dir);
    let who = Who {
        nats,
        data: data.clone(),
        creds: cli.creds.as_deref(),
    };
    match cli.cmd {
        Cmd::Up {
            node,
            nodes,
            insecure_no_auth,
            scan,
            scan_db,
            scan_registries,
            failover,
        } => {
            up::up(up::Up {
                nats,
                node: &node,
                nodes,
                data: &data,
                insecure_no_auth,
                scan: &scan,
                scan_db: scan_db.as_deref(),
                scan_registries: &scan_registries,
                failover: &failover,
            })
            .await
        }
        Cmd::Init { tls_hosts } => admin::init(&data, &tls_hosts),
        Cmd::Setup => admin::setup(&data, nats).await,
        Cmd::Tenant {
            action: TenantAction::Add { name },
        } => admin::add(&data, nats, Role::Tenant, &name, Vec::new()).await,
        Cmd::Admin {
            action: AdminAction::Add { name },
        } => {
            let code = admin::add(&data, nats, Role::Admin, &name, Vec::new()).await?;
            let key = data
                .creds(Role::Admin, &name)?
                .signer()?
                .public_key()
                .to_owned();
            eprintln!(
                "admin {name} ({key}) may manage the cluster; to have it approve policy changes, \
                 propose a policy whose [admins] keys name it (and raise the threshold)"
            );
            Ok(code)
        }
        Cmd::Service {
            action: ServiceAction::Add { role, name },
        } => {
            let role = admin::parse_role(&role)?;
            anyhow::ensure!(
                matches!(
                    role,
                    Role::Scheduler | Role::Failover | Role::Api | Role::Scanner
                ),
                "a service is a scheduler, failover, api or scanner (nodes: `node add`, \
                 tenants: `tenant add`)"
            );
            admin::add(&data, nats, role, &name, Vec::new()).await
        }
        Cmd::Revoke { role, name } => {
            admin::revoke(&data, nats, admin::parse_role(&role)?, &name).await
        }
        Cmd::Perms { markdown } => Ok(admin::print_perms(markdown)),
        Cmd::Scheduler {
            scan,
            snapshots,
            heartbeats_per_sec,
        } => {
            let bus = who.service(Role::Scheduler, "scheduler").await?;
            let cfg = scheduler::SchedulerConfig {
                snapshots: snapshots.every(),
                heartbeats_per_sec,
                ..scan.config()?
            };
            serve(scheduler::run(bus, cfg)).await
        }
        Cmd::Failover { failover } => {
            let bus = who.service(Role::Failover, "failover").await?;
            serve(failover::run(bus, failover.config())).await
        }
        Cmd::Node {
            action: Some(NodeAction::Add { name, classes }),
            ..
        } => {
            let classes = classes
                .iter()
                .map(|c| {
                    bulkhead_schemas::RuntimeClass::parse(c)
                        .with_context(|| format!("unknown runtime class {c}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            admin::add(&data, nats, Role::Node, &name, classes).await
        }
        Cmd::Node {
            action: Some(NodeAction::Drain { node }),
            ..
        } => control::drain(&who.admin().await?, &node, true).await,
        Cmd::Node {
            action: Some(NodeAction::Undrain { node }),
            ..
        } => control::drain(&who.admin().await?, &node, false).await,
        Cmd::Node { action: None, node } => {
            let mut settings = node.resolve()?;
            if let Some(path) = who.creds {
                // The credential names the node.
                let c = Credential::load(path)?;
                if !node.names_itself() {
                    settings.name = c.name.clone();
                }
            }
            let bus = who.service(Role::Node, &settings.name).await?;
            let creds = &bus.identity()?.creds;
            anyhow::ensure!(
                creds.name == settings.name,
                "this credential is node {}'s, not {}'s",
                creds.name,
                settings.name
            );
            let _node =
                node::launch(&bus, &settings, settings.name.clone(), who.data.root()).await?;
            shutdown_signal().await;
            Ok(exit::OK)
        }
        Cmd::Api {
            checkpoint_secs,
            checkpoint_messages,
            snapshots,
        } => {
            let bus = who.service(Role::Api, "api").await?;
            let cfg = api::ApiConfig {
                checkpoints: crate::audit::CheckpointEvery {
                    interval: std::time::Duration::from_secs(checkpoint_secs.max(1)),
                    messages: checkpoint_messages.max(1),
                },
                snapshots: snapshots.every(),
            };
            let _api = api::start_with(&bus, cfg).await?;
            shutdown_signal().await;
            Ok(exit::OK)
        }
        Cmd::Scanner {
            db,
            id,
            lru_mib,
            trivy,
            trivy_server,
            registries,
        } => {
            let bus = who.service(Role::Scanner, "scanner").await?;
            let trivy = trivy.map(|binary| TrivyConfig {
                binary,
                server: trivy_server,
            });
            let egress = crate::scan::egress::Egress::new(&registries);
            let _worker =
                crate::scan::worker::launch(&bus, db.as_deref(), id, lru_mib, trivy, egress)
                    .await?;
            shutdown_signal().await;
            Ok(exit::OK)
        }
        Cmd::Submit {
            file,
            no_follow,
            timeout,
        } => {
            let (bus, tenant) = who.client(tenant).await?;
            let timeout = Duration::from_secs(timeout);
            submit::submit(&bus, &tenant, &file, !no_follow, timeout).await
        }
        Cmd::Get { id, format } => {
            let (bus, tenant) = who.client(tenant).await?;
            query::get(&bus, &tenant, &id, format.output()).await
        }
        Cmd::List {
            state,
            node,
            label,
            limit,
            after,
            format,
            watch,
        } => {
            let state = match state {
                Some(s) => {
                    Some(WorkloadState::parse(&s).with_context(|| format!("unknown state {s}"))?)
                }
                None => None,
            };
            let req = ListRequest {
                state,
                node,
                label,
                limit,
                after,
            };
            let (bus, tenant) = who.client(tenant).await?;
            let o = format.output();
            watching(watch, || query::list(&bus, &tenant, req.clone(), o)).await
        }
        Cmd::Nodes { format, watch } => {
            let bus = who.admin().await?;
            watching(watch, || query::nodes(&bus, format.output())).await
        }
        Cmd::Aside { json } => query::aside(&who.admin().await?, json).await,
        Cmd::Policy {
            action: PolicyAction::Test { file },
        } => policy::test(&file),
        Cmd::Policy { action } => policy::run(&who.admin().await?, action).await,
        Cmd::Audit { action } => audit::run(&who.admin().await?, action).await,
        Cmd::Seal => {
            let (bus, tenant) = who.client(tenant).await?;
            let tenant = tenant.as_str();
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let keys = crate::sealing::scheduler_keys(&bus, tenant).await?;
            println!("{}", bulkhead_actors::secrets::seal(value, &keys)?);
            Ok(exit::OK)
        }
        Cmd::Backup { file } => audit::backup(&who.admin().await?, &file).await,
        Cmd::Restore { file, checkpoints } => {
            audit::restore(&who.admin().await?, &file, &checkpoints).await
        }
        Cmd::Events {
            workload,
            types,
            from_start,
            no_follow,
            json,
        } => {
            let (bus, tenant) = who.client(tenant).await?;
            let w = workload.as_deref();
            events::events(&bus, &tenant, w, &types, from_start, no_follow, json).await
        }
        Cmd::Scan {
            image,
            db,
            timeout,
            fail_on,
            json,
        } => match db {
            Some(db) => scan::scan(&image, &db, fail_on, json).await,
            None => {
                let bus = who.admin().await?;
                let timeout = Duration::from_secs(timeout);
                scan::scan_remote(&bus, &image, timeout, fail_on, json).await
            }
        },
        Cmd::Vulndb { cmd } => scan::vulndb(&who.admin().await?, cmd).await,
        Cmd::Scale { id, replicas } => {
            let (bus, tenant) = who.client(tenant).await?;
            control::scale(&bus, &tenant, &id, replicas).await
        }
        Cmd::Logs {
            id,
            replica,
            follow,
            timestamps,
        } => {
            let (bus, tenant) = who.client(tenant).await?;
            logs::logs(&bus, &tenant, &id, replica, follow, timestamps).await
        }
        Cmd::Completions { shell } => {
            let mut cmd = <args::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "bulkhead", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(exit::OK)
        }
        Cmd::Stop { id, grace } => {
            let (bus, tenant) = who.client(tenant).await?;
            control::stop(&bus, &tenant, &id, grace).await
        }
    }
}
