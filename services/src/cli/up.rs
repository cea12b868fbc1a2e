//! `bulkhead up`: everything in one process — a nats-server when none answers, the query
//! API, a scheduler, a failover, nodes, and a scan worker (with the database given, or
//! waiting for one to be imported).

use std::path::Path;

use anyhow::Context;
use tracing::info;

use super::args::{FailoverArgs, NodeArgs, ScanArgs};
use super::{exit, shutdown_signal};
use bulkhead_schemas::identity::Role;
use tracing::warn;

use crate::auth::DataDir;
use crate::auth::setup::{self, Auth, Listen, NO_AUTH_WARNING};
use crate::bus::{Bus, Topology};
use crate::natsd::Sync;
use crate::scan::egress::Egress;
use crate::{api, failover, node, scan, scheduler};

/// What `up` runs, from its flags.
pub struct Up<'a> {
    pub nats: &'a str,
    pub node: &'a NodeArgs,
    pub nodes: usize,
    pub data: &'a DataDir,
    pub insecure_no_auth: bool,
    pub scan: &'a ScanArgs,
    pub scan_db: Option<&'a Path>,
    pub scan_registries: &'a [String],
    pub failover: &'a FailoverArgs,
}

pub async fn up(u: Up<'_>) -> anyhow::Result<i32> {
    let topo = Topology::default();
    let auth = if u.insecure_no_auth {
        Auth::InsecureNoAuth
    } else {
        Auth::Required
    };
    let _lock = u.data.lock_up()?;
    u.data.init()?;
    // Every node this process runs is enrolled with the classes its settings name.
    let settings = u.node.resolve()?;
    let names: Vec<String> = (0..u.nodes)
        .map(|i| match u.nodes {
            1 => settings.name.clone(),
            _ => format!("{}-{}", settings.name, i + 1),
        })
        .collect();
    for name in &names {
        let book = u.data.book()?;
        if book
            .get(Role::Node, name)
            .is_none_or(|e| !settings.classes.iter().all(|c| e.classes.contains(c)))
        {
            u.data.enroll(Role::Node, name, settings.classes.clone())?;
        }
    }
    let mut _server = None;
    let admin_creds = u.data.creds(Role::Admin, "admin")?;
    let url = match Bus::connect_as(u.nats, &admin_creds).await {
        Ok(_) => {
            u.data.reload_server()?;
            setup::prepare(u.data, u.nats, &topo).await?;
            u.nats.to_owned()
        }
        Err(_) => {
            let (host, port) = host_port(u.nats)?;
            info!(url = %u.nats, "no NATS server answers; starting nats-server with JetStream in {}", u.data.nats_dir().display());
            let listen = Listen {
                host,
                port,
                sync: Sync::Always,
            };
            let cluster = setup::start(u.data, &listen, &topo, auth).await?;
            let url = cluster.server.url.clone();
            _server = Some(cluster.server);
            url
        }
    };
    let connect = async |role: Role, name: &str| -> anyhow::Result<Bus> {
        Ok(Bus::connect_as(&url, &u.data.creds(role, name)?).await?)
    };
    let api_bus = connect(Role::Api, "api").await?;
    let _api = api::start(&api_bus).await?;
    let sched = tokio::spawn(scheduler::run(
        connect(Role::Scheduler, "scheduler").await?,
        u.scan.config()?,
    ));
    let fail = tokio::spawn(failover::run(
        connect(Role::Failover, "failover").await?,
        u.failover.config(),
    ));
    // A scan worker: with the database given, or (waiting in the background, and saying
    // how to import one) with the one `bulkhead vulndb import` puts in the object store.
    let scan_bus = connect(Role::Scanner, "scanner").await?;
    let _scanner = match u.scan_db {
        Some(db) => Some(
            scan::worker::launch(
                &scan_bus,
                Some(db),
                None,
                256,
                None,
                Egress::new(u.scan_registries),
            )
            .await?,
        ),
        None => None,
    };
    let egress = Egress::new(u.scan_registries);
    let _waiting_scanner = u.scan_db.is_none().then(|| {
        crate::tasks::AbortOnDrop(tokio::spawn(async move {
            match scan::worker::launch(&scan_bus, None, None, 256, None, egress).await {
                // Kept for as long as `up` runs (the task is aborted with it).
                Ok(worker) => {
                    let _worker = worker;
                    std::future::pending::<()>().await;
                }
                Err(e) => warn!(error = %e, "the scan worker did not start"),
            }
        }))
    });
    let mut handles = Vec::new();
    for name in names {
        let bus = connect(Role::Node, &name).await?;
        handles.push(node::launch(&bus, &settings, name, u.data.root()).await?);
    }
    info!(
        nodes = u.nodes,
        data_dir = %u.data.root().display(),
        "bulkhead is up; submit with `bulkhead submit spec.json`, or `nats pub --nkey … \
         bulkhead.cmd.default.submit` with the tenant's credential"
    );
    if u.insecure_no_auth {
        warn!("{NO_AUTH_WARNING}");
    }
    tokio::select! {
        _ = shutdown_signal() => {}
        r = sched => { r??; }
        r = fail => { r??; }
    }
    Ok(exit::OK)
}

/// Host and port of a NATS URL (`nats://host:port`, credentials and scheme optional).
fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.split("://").last().unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "4222"));
    Ok((
        host.to_owned(),
        port.trim_end_matches('/')
            .parse()
            .with_context(|| format!("bad port in {url}"))?,
    ))
}
