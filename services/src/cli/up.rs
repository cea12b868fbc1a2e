//! `bulkhead up`: everything in one process — a nats-server when none answers, the query
//! API, a scheduler, a failover, nodes, and a scan worker when given a database.

use std::path::Path;

use anyhow::Context;
use tracing::info;

use super::args::{FailoverArgs, NodeArgs, ScanArgs};
use super::{exit, shutdown_signal};
use crate::bus::{Bus, Topology};
use crate::natsd::{NatsServer, Sync};
use crate::{api, failover, node, scan, scheduler};

/// What `up` runs, from its flags.
pub struct Up<'a> {
    pub nats: &'a str,
    pub node: &'a NodeArgs,
    pub nodes: usize,
    pub data_dir: &'a Path,
    pub scan: &'a ScanArgs,
    pub scan_db: Option<&'a Path>,
    pub failover: &'a FailoverArgs,
}

pub async fn up(u: Up<'_>) -> anyhow::Result<i32> {
    let mut _server = None;
    let bus = match Bus::connect(u.nats, "bulkhead-up").await {
        Ok(b) => b,
        Err(_) => {
            let (host, port) = host_port(u.nats)?;
            info!(url = %u.nats, "no NATS server answers; starting nats-server with JetStream in {}", u.data_dir.display());
            let server = NatsServer::start(&u.data_dir.join("nats"), &host, port, Sync::Always)?;
            let bus = Bus::connect(&server.url, "bulkhead-up").await?;
            _server = Some(server);
            bus
        }
    };
    bus.ensure(&Topology::default()).await?;
    let _api = api::start(&bus).await?;
    let sched = tokio::spawn(scheduler::run(bus.clone(), u.scan.config()?));
    let fail = tokio::spawn(failover::run(bus.clone(), u.failover.config()));
    let _scanner = match u.scan_db {
        Some(db) => Some(scan::worker::launch(&bus, Some(db), None, 256, None).await?),
        None => None,
    };
    let settings = u.node.resolve()?;
    let mut handles = Vec::new();
    for i in 0..u.nodes {
        let name = if u.nodes == 1 {
            settings.name.clone()
        } else {
            format!("{}-{}", settings.name, i + 1)
        };
        handles.push(node::launch(&bus, &settings, name).await?);
    }
    info!(
        nodes = u.nodes,
        "bulkhead is up; submit with `bulkhead submit spec.json` or `nats pub bulkhead.cmd.submit`"
    );
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
