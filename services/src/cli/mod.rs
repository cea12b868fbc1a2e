//! The `bulkhead` command: its arguments ([`args`]), and one file per group of commands —
//! [`up`], [`submit`], [`query`] (`get`, `list`, `nodes`), [`events`], [`control`]
//! (`stop`, `scale`, `node drain|undrain`), [`scan`] (`scan`, `vulndb`). The services
//! (`scheduler`, `failover`, `node`, `api`, `scanner`) start from their own modules.

pub mod args;
pub mod control;
pub mod events;
pub mod query;
pub mod scan;
pub mod submit;
pub mod up;

use std::time::Duration;

use anyhow::Context;
use bulkhead_schemas::api::{ListRequest, WorkloadState};
use tracing::info;

use crate::bus::{Bus, Topology};
use crate::scan::trivy::TrivyConfig;
use crate::{api, failover, node, scheduler, telemetry};
use args::{Cli, Cmd, NodeAction};

/// Exit codes a script can rely on.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const REJECTED: i32 = 2;
    pub const FAILED: i32 = 3;
    pub const TIMEOUT: i32 = 4;
    /// `bulkhead scan --fail-on S`: a finding at or above S.
    pub const VULNERABLE: i32 = 6;
}

/// Runs the command line and says how the process should exit.
pub async fn main(cli: Cli) -> i32 {
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
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
        Cmd::Api => Some("bulkhead-api"),
        _ => None,
    }
}

/// A service's connection, with the streams and buckets it needs set up.
async fn connect_service(url: &str, name: &str) -> anyhow::Result<Bus> {
    let bus = Bus::connect(url, name).await?;
    bus.ensure(&Topology::default()).await?;
    Ok(bus)
}

/// A client command's connection.
async fn connect_client(url: &str) -> anyhow::Result<Bus> {
    Ok(Bus::connect(url, "bulkhead-cli").await?)
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
    match cli.cmd {
        Cmd::Up {
            node,
            nodes,
            data_dir,
            scan,
            scan_db,
            failover,
        } => {
            up::up(up::Up {
                nats,
                node: &node,
                nodes,
                data_dir: &data_dir,
                scan: &scan,
                scan_db: scan_db.as_deref(),
                failover: &failover,
            })
            .await
        }
        Cmd::Scheduler { scan } => {
            let bus = connect_service(nats, "bulkhead-scheduler").await?;
            serve(scheduler::run(bus, scan.config()?)).await
        }
        Cmd::Failover { failover } => {
            let bus = connect_service(nats, "bulkhead-failover").await?;
            serve(failover::run(bus, failover.config())).await
        }
        Cmd::Node {
            action: Some(NodeAction::Drain { node }),
            ..
        } => control::drain(&connect_client(nats).await?, &node, true).await,
        Cmd::Node {
            action: Some(NodeAction::Undrain { node }),
            ..
        } => control::drain(&connect_client(nats).await?, &node, false).await,
        Cmd::Node { action: None, node } => {
            let bus = connect_service(nats, "bulkhead-node").await?;
            let settings = node.resolve()?;
            let _node = node::launch(&bus, &settings, settings.name.clone()).await?;
            shutdown_signal().await;
            Ok(exit::OK)
        }
        Cmd::Api => {
            let bus = connect_service(nats, "bulkhead-api").await?;
            let _api = api::start(&bus).await?;
            shutdown_signal().await;
            Ok(exit::OK)
        }
        Cmd::Scanner {
            db,
            id,
            lru_mib,
            trivy,
            trivy_server,
        } => {
            let bus = connect_service(nats, "bulkhead-scanner").await?;
            let trivy = trivy.map(|binary| TrivyConfig {
                binary,
                server: trivy_server,
            });
            let _worker =
                crate::scan::worker::launch(&bus, db.as_deref(), id, lru_mib, trivy).await?;
            shutdown_signal().await;
            Ok(exit::OK)
        }
        Cmd::Submit {
            file,
            no_follow,
            timeout,
        } => {
            let bus = connect_client(nats).await?;
            let timeout = Duration::from_secs(timeout);
            submit::submit(&bus, tenant, &file, !no_follow, timeout).await
        }
        Cmd::Get { id } => query::get(&connect_client(nats).await?, tenant, &id).await,
        Cmd::List {
            state,
            node,
            label,
            limit,
            after,
            json,
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
            query::list(&connect_client(nats).await?, tenant, req, json).await
        }
        Cmd::Nodes { json } => query::nodes(&connect_client(nats).await?, json).await,
        Cmd::Events {
            workload,
            types,
            from_start,
            json,
        } => {
            let bus = connect_client(nats).await?;
            events::events(&bus, tenant, workload.as_deref(), &types, from_start, json).await
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
                let bus = connect_service(nats, "bulkhead-cli").await?;
                let timeout = Duration::from_secs(timeout);
                scan::scan_remote(&bus, &image, timeout, fail_on, json).await
            }
        },
        Cmd::Vulndb { cmd } => {
            scan::vulndb(&connect_service(nats, "bulkhead-cli").await?, cmd).await
        }
        Cmd::Scale { id, replicas } => {
            control::scale(&connect_client(nats).await?, tenant, &id, replicas).await
        }
        Cmd::Stop { id, grace } => {
            control::stop(&connect_client(nats).await?, tenant, &id, grace).await
        }
    }
}
