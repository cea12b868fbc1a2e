//! The query API as a NATS service (`bulkhead.api.*`, discoverable with `nats micro`):
//! a read model of the log, rebuilt at start and kept current by following it. The
//! answers are in [`handlers`]. It also audits the log as stored, writing signed
//! checkpoints and answering `bulkhead.api.admin.audit.status` (see [`crate::audit`]).

mod handlers;

use std::sync::{Arc, Mutex, RwLock};

use async_nats::service::ServiceExt;
use bulkhead_actors::audit::Report;
use bulkhead_schemas::subjects;
use futures::StreamExt;
use tracing::{error, info};

use crate::audit::{CheckpointEvery, TEE_CHUNKS, checkpointer};
use crate::bus::Bus;
use crate::follow::Tee;
use crate::snapshot::SnapshotEvery;
use crate::tasks::AbortOnDrop;
use handlers::{aside_list, node_heads, nodes_list, workload_get, workload_list, write};

/// The name the query API's snapshot is stored under.
pub const SERVICE: &str = "api";

pub struct ApiHandle {
    _tasks: Vec<AbortOnDrop>,
}

/// How often the query API checkpoints the log and snapshots its read model.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiConfig {
    pub checkpoints: CheckpointEvery,
    pub snapshots: SnapshotEvery,
}

/// The query API, checkpointing and snapshotting at the default pace.
pub async fn start(bus: &Bus) -> anyhow::Result<ApiHandle> {
    start_with(bus, ApiConfig::default()).await
}

/// The query API, checkpointing and snapshotting as `cfg` says; it starts from its
/// snapshot and the log's tail when the snapshot passes its checks.
pub async fn start_with(bus: &Bus, cfg: ApiConfig) -> anyhow::Result<ApiHandle> {
    let (tee, teed) = Tee::new(TEE_CHUNKS);
    let (rebuilt, follower) = crate::snapshot::projection_teed(bus, SERVICE, Some(tee)).await?;
    let followed_from = follower.from_seq;
    let model = Arc::new(RwLock::new(rebuilt));
    let (m, s) = (model.clone(), model.clone());
    let follow_task = crate::snapshot::forward_with(
        bus,
        SERVICE,
        cfg.snapshots,
        follower,
        move |batch| {
            write(&m).logged(batch);
            true
        },
        move || {
            let (tx, rx) = ractor::concurrency::oneshot();
            let _ = tx.send(handlers::read(&s).shared());
            Some(rx)
        },
    );
    let service = bus
        .client
        .service_builder()
        .description("bulkhead query API: workloads and nodes")
        .start("bulkhead", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the query service: {e}"))?;
    let get = endpoint(&service, "workloads-get", subjects::API_WORKLOADS_GET_ALL).await?;
    let list = endpoint(&service, "workloads-list", subjects::API_WORKLOADS_LIST_ALL).await?;
    let mut nodes = endpoint(&service, "nodes-list", subjects::API_NODES_LIST).await?;
    let heads = endpoint(&service, "node-heads", &subjects::api_node_heads("*")).await?;
    let mut beats = endpoint(&service, "node-beat", &subjects::api_node_beat("*")).await?;
    let aside = endpoint(&service, "aside-list", subjects::API_ASIDE_LIST).await?;
    let mut audit = endpoint(&service, "audit-status", subjects::API_AUDIT_STATUS).await?;
    let mut sealing = endpoint(&service, "sealing", subjects::API_SEALING_ALL).await?;
    let nodes_kv = bus.bucket(subjects::NODES_BUCKET).await?;
    let beat_kv = nodes_kv.clone();

    let get_task = answer(get, &model, |m, req| {
        let tenant = subjects::api_tenant(&req.subject).unwrap_or_default();
        workload_get(m, tenant, &req.payload)
    });
    let list_task = answer(list, &model, |m, req| {
        let tenant = subjects::api_tenant(&req.subject).unwrap_or_default();
        workload_list(m, tenant, &req.payload)
    });
    let heads_task = answer(heads, &model, |m, req| {
        let node = subjects::api_heads_node(&req.subject).unwrap_or_default();
        node_heads(m, node, &req.payload)
    });
    let reports = Arc::new(Mutex::new(crate::aside::Reports::default()));
    let own = crate::aside::Ledger::default();
    let collecting = crate::aside::collecting(bus, reports.clone(), own.clone()).await?;
    let reporting = crate::aside::reporting(bus, own);
    let aside_task = answer(aside, &model, move |m, _| aside_list(m, &reports));
    let m = model.clone();
    let nodes_task = tokio::spawn(async move {
        let _service = service;
        while let Some(req) = nodes.next().await {
            let reply = nodes_list(&m, &nodes_kv).await;
            let _ = req.respond(reply).await;
        }
    });
    let beat_task = {
        let kv = beat_kv;
        tokio::spawn(async move {
            while let Some(req) = beats.next().await {
                let node = subjects::api_beat_node(&req.message.subject).unwrap_or_default();
                let reply = handlers::node_beat(&kv, node).await;
                let _ = req.respond(reply).await;
            }
        })
    };
    let status = Arc::new(Mutex::new(Report::default()));
    let checkpoints = {
        let (bus, status) = (bus.clone(), status.clone());
        tokio::spawn(async move {
            if let Err(e) = checkpointer(bus, cfg.checkpoints, status, teed, followed_from).await {
                error!(error = %e, "the log's checkpointer stopped");
            }
        })
    };
    let audit_task = tokio::spawn(async move {
        while let Some(req) = audit.next().await {
            let report = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let reply = serde_json::to_vec(&report).unwrap_or_default();
            let _ = req.respond(Ok(reply.into())).await;
        }
    });
    let sealing_task = {
        let bus = bus.clone();
        tokio::spawn(async move {
            while let Some(req) = sealing.next().await {
                let reply = match crate::sealing::scheduler_enrolments(&bus).await {
                    Ok(r) => Ok(serde_json::to_vec(&r).unwrap_or_default().into()),
                    Err(e) => Err(async_nats::service::error::Error {
                        status: e.to_string(),
                        code: 503,
                    }),
                };
                let _ = req.respond(reply).await;
            }
        })
    };
    info!("query API serving on {}.<tenant>.>", subjects::API_PREFIX);
    Ok(ApiHandle {
        // Dropped in order: the checkpointer before the follower, whose end it would
        // otherwise report as an error while the API stops.
        _tasks: vec![
            AbortOnDrop(checkpoints),
            follow_task,
            get_task,
            list_task,
            AbortOnDrop(nodes_task),
            AbortOnDrop(beat_task),
            heads_task,
            aside_task,
            AbortOnDrop(audit_task),
            AbortOnDrop(sealing_task),
            collecting,
        ]
        .into_iter()
        .chain(reporting)
        .collect(),
    })
}

/// Answers each request of `endpoint` from the read model with `handle`, in a task.
fn answer(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    model: &Arc<handlers::Model>,
    handle: impl Fn(&handlers::Model, &async_nats::Message) -> handlers::Reply + Send + 'static,
) -> AbortOnDrop {
    let model = model.clone();
    AbortOnDrop(tokio::spawn(async move {
        while let Some(req) = endpoint.next().await {
            let reply = handle(&model, &req.message);
            let _ = req.respond(reply).await;
        }
    }))
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
