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
use crate::follow::Follower;
use crate::tasks::AbortOnDrop;
use handlers::{aside_list, node_heads, nodes_list, workload_get, workload_list, write};

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
    let service = bus
        .client
        .service_builder()
        .description("bulkhead query API: workloads and nodes")
        .start("bulkhead", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the query service: {e}"))?;
    let mut get = endpoint(&service, "workloads-get", subjects::API_WORKLOADS_GET_ALL).await?;
    let mut list = endpoint(&service, "workloads-list", subjects::API_WORKLOADS_LIST_ALL).await?;
    let mut nodes = endpoint(&service, "nodes-list", subjects::API_NODES_LIST).await?;
    let mut heads = endpoint(&service, "node-heads", &subjects::api_node_heads("*")).await?;
    let mut aside = endpoint(&service, "aside-list", subjects::API_ASIDE_LIST).await?;
    let nodes_kv = bus.js.get_key_value(subjects::NODES_BUCKET).await?;

    let m = model.clone();
    let get_task = tokio::spawn(async move {
        while let Some(req) = get.next().await {
            let tenant = subjects::api_tenant(&req.message.subject).unwrap_or_default();
            let reply = workload_get(&m, tenant, &req.message.payload);
            let _ = req.respond(reply).await;
        }
    });
    let m = model.clone();
    let list_task = tokio::spawn(async move {
        while let Some(req) = list.next().await {
            let tenant = subjects::api_tenant(&req.message.subject).unwrap_or_default();
            let reply = workload_list(&m, tenant, &req.message.payload);
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
    let m = model.clone();
    let heads_task = tokio::spawn(async move {
        while let Some(req) = heads.next().await {
            let node = subjects::api_heads_node(&req.message.subject).unwrap_or_default();
            let reply = node_heads(&m, node, &req.message.payload);
            let _ = req.respond(reply).await;
        }
    });
    let m = model.clone();
    let aside_task = tokio::spawn(async move {
        while let Some(req) = aside.next().await {
            let _ = req.respond(aside_list(&m)).await;
        }
    });
    info!("query API serving on {}.<tenant>.>", subjects::API_PREFIX);
    Ok(ApiHandle {
        _tasks: vec![
            follow_task,
            AbortOnDrop(get_task),
            AbortOnDrop(list_task),
            AbortOnDrop(nodes_task),
            AbortOnDrop(heads_task),
            AbortOnDrop(aside_task),
        ],
    })
}

async fn endpoint(
    service: &async_nats::service::Service,
    name: &str,
    subject: &str,
) -> anyhow::Result<async_nats::service::endpoint::Endpoint> {
    service
        .endpoint_builder()
        .name(name)
        .add(subject)
        .await
        .map_err(|e| anyhow::anyhow!("endpoint {subject}: {e}"))
}
