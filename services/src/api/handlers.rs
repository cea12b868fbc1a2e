//! The query API's answers, from the read model: one workload, a filtered page of them,
//! the nodes with what the log places on each. Errors carry `Nats-Service-Error` (400 a bad
//! request, 404 an unknown workload, 500 a bucket that cannot be read).

use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bulkhead_actors::projection::Projection;
use bulkhead_schemas::api::{
    ApiError, GetRequest, ListReply, ListRequest, NodeView, NodesReply, parse_label,
};
use bulkhead_schemas::{ChainHead, HeadsReply, HeadsRequest, Resources, SyncHead, subjects};

use bytes::Bytes;
use futures::StreamExt;
use tracing::warn;

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

/// The read model, shared by the follower and the handlers.
pub(super) type Model = RwLock<Projection>;

/// Reads the model; a panic elsewhere while it was held does not stop the API.
pub(super) fn read(model: &Model) -> std::sync::RwLockReadGuard<'_, Projection> {
    model.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes the model (the follower only).
pub(super) fn write(model: &Model) -> std::sync::RwLockWriteGuard<'_, Projection> {
    model.write().unwrap_or_else(|e| e.into_inner())
}

pub(super) type Reply = Result<Bytes, async_nats::service::error::Error>;

fn bad(code: usize, msg: String) -> Reply {
    let status = serde_json::to_string(&ApiError { error: msg.clone() }).unwrap_or(msg);
    Err(async_nats::service::error::Error { status, code })
}

fn json<T: serde::Serialize>(v: &T) -> Reply {
    match serde_json::to_vec(v) {
        Ok(b) => Ok(b.into()),
        Err(e) => bad(500, format!("cannot encode the reply: {e}")),
    }
}

/// One of `tenant`'s workloads.
pub(super) fn workload_get(model: &Model, tenant: &str, payload: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(payload);
    let id = match serde_json::from_slice::<GetRequest>(payload) {
        Ok(r) => r.id,
        Err(_) => text.trim().trim_matches('"').to_owned(),
    };
    if id.is_empty() {
        return bad(400, "send a workload id, as text or {\"id\": …}".into());
    }
    let key = subjects::workload_key(tenant, &id);
    let p = read(model);
    match p.get(&key) {
        Some(w) => json(&w.view(&key)),
        None => bad(404, format!("no workload {id}")),
    }
}

/// A page of `tenant`'s workloads.
pub(super) fn workload_list(model: &Model, tenant: &str, payload: &[u8]) -> Reply {
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
    let p = read(model);
    let mut workloads = Vec::new();
    let mut total = 0;
    let mut next = None;
    for (key, w) in p.tenant_range(tenant, req.after.as_deref()) {
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
            workloads.push(w.view(key));
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

/// The latest heartbeat stored under `node`'s name and its age (by the server's clock).
pub(super) async fn node_beat(kv: &async_nats::jetstream::kv::Store, node: &str) -> Reply {
    let reply = match kv.entry(node).await {
        Ok(Some(e)) if e.operation == async_nats::jetstream::kv::Operation::Put => {
            let stored: SystemTime = e.created.into();
            let age_ms = SystemTime::now()
                .duration_since(stored)
                .unwrap_or(Duration::ZERO)
                .as_millis();
            bulkhead_schemas::node::BeatReply {
                heartbeat: crate::bus::ops::heartbeat_of(node, &e.value).ok(),
                age_ms: u64::try_from(age_ms).unwrap_or(u64::MAX),
            }
        }
        Ok(_) => Default::default(),
        Err(e) => return bad(500, format!("reading the nodes bucket: {e}")),
    };
    json(&reply)
}

pub(super) async fn nodes_list(model: &Model, kv: &async_nats::jetstream::kv::Store) -> Reply {
    let mut keys = match kv.keys().await {
        Ok(k) => k,
        Err(e) => return bad(500, format!("reading the nodes bucket: {e}")),
    };
    let mut beats = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        match kv.get(&key).await {
            Ok(Some(v)) => match crate::bus::ops::heartbeat_of(&key, &v) {
                Ok(hb) => beats.push(hb),
                Err(a) => warn!(%key, code = a.code, reason = %a.reason, "heartbeat left out"),
            },
            _ => continue,
        }
    }
    let p = read(model);
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

/// At most this many heads per question.
const MAX_HEADS: usize = 1000;

/// The chain heads a node asks for (`bulkhead.api.node.<node>.heads`): only of workloads
/// with a replica that node holds or held (the subject's node is the server-checked asker),
/// as the read model has them: the sequence of the last message under the workload's
/// subjects (applied or set aside) and the hash of its last applied event. A node reads
/// nothing else of the log.
pub(super) fn node_heads(model: &Model, node: &str, payload: &[u8]) -> Reply {
    let req: HeadsRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return bad(
                400,
                format!("send {{\"workloads\": [\"tenant/id\", …]}}: {e}"),
            );
        }
    };
    if req.workloads.len() > MAX_HEADS {
        return bad(400, format!("at most {MAX_HEADS} workloads at a time"));
    }
    let p = read(model);
    let heads = req
        .workloads
        .into_iter()
        .filter_map(|k| {
            let w = p.get(&k)?;
            w.replicas.iter().any(|r| r.knows(node)).then(|| SyncHead {
                head: ChainHead {
                    seq: w.head.seq,
                    hash: hex::encode(w.head.hash),
                },
                workload: k,
            })
        })
        .collect();
    json(&HeadsReply { heads })
}

/// Everything set aside, for an operator: what the read model would not apply beside
/// what every service reported.
pub(super) fn aside_list(model: &Model, reports: &Mutex<crate::aside::Reports>) -> Reply {
    let p = read(model);
    let reports = reports.lock().unwrap_or_else(|e| e.into_inner());
    json(&reports.answer(&p.set_aside))
}
