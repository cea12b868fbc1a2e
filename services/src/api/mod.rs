//! The query API as a NATS service (`bulkhead.api.*`, discoverable with `nats micro`):
//! a read model of the log, rebuilt at start and kept current by following it. The
//! answers are in [`handlers`].

mod handlers;

use std::sync::{Arc, RwLock};

use async_nats::service::ServiceExt;
use bulkhead_schemas::subjects;
use futures::StreamExt;
use tracing::info;

use crate::bus::Bus;
use crate::follow::{Follower, read_events};
use crate::tasks::AbortOnDrop;
use handlers::{nodes_list, workload_get, workload_list, write};

pub struct ApiHandle {
    _tasks: Vec<AbortOnDrop>,
}

pub async fn start(bus: &Bus) -> anyhow::Result<ApiHandle> {
    let (rebuilt, follower) = Follower::rebuild(bus).await?;
    let model = Arc::new(RwLock::new(rebuilt));
    let m = model.clone();
    let follow_task = follower.forward(move |batch| {
        write(&m).logged(batch);
        true
    });
    // Drains and losses, for the nodes listing.
    let m = model.clone();
    let bus_for_nodes = bus.clone();
    let node_events_task = tokio::spawn(async move {
        read_events(&bus_for_nodes, subjects::EVT_NODES, "node events", |read| {
            let mut p = write(&m);
            match read {
                Ok(ev) => p.node_event(&ev),
                Err(aside) => p.set_aside.record(aside),
            }
            true
        })
        .await
    });
    let service = bus
        .client
        .service_builder()
        .description("bulkhead query API: workloads and nodes")
        .start("bulkhead", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the query service: {e}"))?;
    let group = service.group(subjects::API_PREFIX);
    let mut get = endpoint(&group, "workloads.get").await?;
    let mut list = endpoint(&group, "workloads.list").await?;
    let mut nodes = endpoint(&group, "nodes.list").await?;
    let nodes_kv = bus.js.get_key_value(subjects::NODES_BUCKET).await?;

    let m = model.clone();
    let get_task = tokio::spawn(async move {
        while let Some(req) = get.next().await {
            let reply = workload_get(&m, &req.message.payload);
            let _ = req.respond(reply).await;
        }
    });
    let m = model.clone();
    let list_task = tokio::spawn(async move {
        while let Some(req) = list.next().await {
            let reply = workload_list(&m, &req.message.payload);
            let _ = req.respond(reply).await;
        }
    });
    let m = model.clone();
    let nodes_task = tokio::spawn(async move {
        let _service = service;
        while let Some(req) = nodes.next().await {
            let reply = nodes_list(&m, &nodes_kv).await;
            let _ = req.respond(reply).await;
        }
    });
    info!("query API serving on {}.>", subjects::API_PREFIX);
    Ok(ApiHandle {
        _tasks: vec![
            follow_task,
            AbortOnDrop(node_events_task),
            AbortOnDrop(get_task),
            AbortOnDrop(list_task),
            AbortOnDrop(nodes_task),
        ],
    })
}

async fn endpoint(
    group: &async_nats::service::Group,
    name: &str,
) -> anyhow::Result<async_nats::service::endpoint::Endpoint> {
    group
        .endpoint(name)
        .await
        .map_err(|e| anyhow::anyhow!("endpoint {name}: {e}"))
}
