//! The query API as a NATS service (`bulkhead.api.*`, discoverable with `nats micro`):
//! a read model of the log, rebuilt at start and kept current by following it.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_nats::service::ServiceExt;
use bulkhead_actors::projection::Projection;
use bulkhead_schemas::api::{
    ApiError, GetRequest, ListReply, ListRequest, NodeView, NodesReply, parse_label,
};
use bulkhead_schemas::{NodeHeartbeat, Resources, subjects};
use bytes::Bytes;
use futures::StreamExt;
use tracing::{info, warn};

use crate::bus::Bus;
use crate::follow::Follower;
use crate::scheduler_svc::AbortOnDrop;

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

pub struct ApiHandle {
    _tasks: Vec<AbortOnDrop>,
}

pub async fn start(bus: &Bus) -> anyhow::Result<ApiHandle> {
    let (rebuilt, mut follower) = Follower::rebuild(bus).await?;
    let model = Arc::new(RwLock::new(rebuilt));
    let bus_for_nodes = bus.clone();
    let m = model.clone();
    let follow_task = tokio::spawn(async move {
        while let Some(batch) = follower.rx.recv().await {
            let mut p = m.write().expect("lock");
            for s in &batch {
                let _ = p.apply(s.seq, s.hash, &s.event);
            }
        }
    });
    // Drains and losses, for the nodes listing.
    let m = model.clone();
    let node_events_task = tokio::spawn(async move {
        crate::follow::read_events(&bus_for_nodes, subjects::EVT_NODES, "node events", |ev| {
            m.write().expect("lock").node_event(&ev);
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
    let mut get = group
        .endpoint("workloads.get")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut list = group
        .endpoint("workloads.list")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut nodes = group
        .endpoint("nodes.list")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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
            AbortOnDrop(follow_task),
            AbortOnDrop(node_events_task),
            AbortOnDrop(get_task),
            AbortOnDrop(list_task),
            AbortOnDrop(nodes_task),
        ],
    })
}

type Reply = Result<Bytes, async_nats::service::error::Error>;

fn bad(code: usize, msg: String) -> Reply {
    Err(async_nats::service::error::Error {
        status: serde_json::to_string(&ApiError { error: msg }).expect("json"),
        code,
    })
}

fn json<T: serde::Serialize>(v: &T) -> Reply {
    Ok(serde_json::to_vec(v).expect("replies serialize").into())
}

fn workload_get(model: &RwLock<Projection>, payload: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(payload);
    let id = match serde_json::from_slice::<GetRequest>(payload) {
        Ok(r) => r.id,
        Err(_) => text.trim().trim_matches('"').to_owned(),
    };
    if id.is_empty() {
        return bad(400, "send a workload id, as text or {\"id\": …}".into());
    }
    let p = model.read().expect("lock");
    match p.get(&id) {
        Some(w) => json(&w.view(&id)),
        None => bad(404, format!("no workload {id}")),
    }
}

fn workload_list(model: &RwLock<Projection>, payload: &[u8]) -> Reply {
    let req: ListRequest = if payload.iter().all(u8::is_ascii_whitespace) {
        ListRequest::default()
    } else {
        match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => return bad(400, format!("invalid list request: {e}")),
        }
    };
    let label = match req.label.as_deref().map(parse_label) {
        Some(None) => return bad(400, "label filter must be key=value".into()),
        Some(Some((k, v))) => Some((k.to_owned(), v.to_owned())),
        None => None,
    };
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let p = model.read().expect("lock");
    let mut workloads = Vec::new();
    let mut total = 0;
    let mut next = None;
    for (id, w) in p.range_after(req.after.as_deref()) {
        if req.state.is_some_and(|s| s != w.state()) {
            continue;
        }
        if let Some(node) = &req.node
            && !w
                .replicas
                .iter()
                .any(|r| r.node.as_deref() == Some(node.as_str()))
        {
            continue;
        }
        if let Some((k, v)) = &label
            && w.spec.as_ref().and_then(|s| s.labels.get(k)) != Some(v)
        {
            continue;
        }
        total += 1;
        if workloads.len() < limit {
            workloads.push(w.view(id));
        } else if next.is_none() {
            next = workloads
                .last()
                .map(|v: &bulkhead_schemas::api::WorkloadView| v.id.clone());
        }
    }
    json(&ListReply {
        workloads,
        total,
        next,
    })
}

async fn nodes_list(model: &RwLock<Projection>, kv: &async_nats::jetstream::kv::Store) -> Reply {
    let mut keys = match kv.keys().await {
        Ok(k) => k,
        Err(e) => return bad(500, format!("reading the nodes bucket: {e}")),
    };
    let mut beats = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        match kv.get(&key).await {
            Ok(Some(v)) => match serde_json::from_slice::<NodeHeartbeat>(&v) {
                Ok(hb) => beats.push(hb),
                Err(e) => warn!(%key, error = %e, "malformed heartbeat"),
            },
            _ => continue,
        }
    }
    let p = model.read().expect("lock");
    let mut alloc: std::collections::HashMap<&str, (Resources, u32)> = Default::default();
    for (_, w) in p.iter() {
        let need = w.need();
        for r in w.replicas.iter().filter(|r| r.holds()) {
            if let Some(n) = r.node.as_deref() {
                let e = alloc.entry(n).or_default();
                e.0 = e.0.add(&need);
                e.1 += 1;
            }
        }
    }
    let now = SystemTime::now();
    let mut nodes: Vec<NodeView> = beats
        .into_iter()
        .map(|hb| {
            let (allocated, workloads) = alloc.get(hb.name.as_str()).copied().unwrap_or_default();
            let age_ms =
                time::OffsetDateTime::parse(&hb.at, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(|t| {
                        let at: SystemTime = t.into();
                        now.duration_since(at).unwrap_or(Duration::ZERO).as_millis() as u64
                    })
                    .unwrap_or(u64::MAX);
            NodeView {
                marks: p.node_marks(&hb.name),
                heartbeat: hb,
                allocated,
                workloads,
                age_ms,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.heartbeat.name.cmp(&b.heartbeat.name));
    json(&NodesReply { nodes })
}
