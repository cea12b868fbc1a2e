//! The scheduler's ops and scan jobs (`BULKHEAD_OPS`, `BULKHEAD_SCAN`) and the nodes'
//! heartbeats (KV `bulkhead-nodes`): the NATS adapters of the ops and heartbeat ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use bulkhead_actors::ports::heartbeat::HeartbeatSink;
use bulkhead_actors::ports::ops::OpsSink;
use bulkhead_actors::ports::{SinkError, cause};
use bulkhead_schemas::scan::ScanJob;
use bulkhead_schemas::{NodeHeartbeat, NodeOp, NodeOps, subjects};
use bytes::Bytes;

use super::publish::MAX_BATCH;
use super::{Bus, BusError};

/// Ops per message to one node.
const OPS_PER_MESSAGE: usize = 256;

/// Node ops on `BULKHEAD_OPS`: one message per node per round.
#[derive(Clone)]
pub struct NatsOps {
    bus: Bus,
}

impl NatsOps {
    pub fn new(bus: &Bus) -> Self {
        NatsOps { bus: bus.clone() }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Bytes, SinkError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| SinkError::Refused(format!("cannot encode: {e}")))
}

impl OpsSink for NatsOps {
    async fn queue_scans(&self, jobs: Vec<ScanJob>) -> Vec<(String, SinkError)> {
        let mut failed = Vec::new();
        for job in jobs {
            let mut headers = HeaderMap::new();
            // Queued again after a takeover: the job id makes it a duplicate, not a second job.
            headers.insert("Nats-Msg-Id", job.id.as_str());
            let sent = match encode(&job) {
                Ok(body) => self
                    .bus
                    .publish_stored(subjects::SCAN_JOBS.into(), headers, body)
                    .await
                    .map(drop)
                    .map_err(SinkError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                failed.push((job.id, e));
            }
        }
        failed
    }

    async fn send(&self, ops: BTreeMap<Arc<str>, Vec<NodeOp>>) -> Vec<(Arc<str>, SinkError)> {
        let mut msgs = Vec::new();
        let mut nodes = Vec::new();
        let mut failed = Vec::new();
        for (node, ops) in ops {
            for chunk in ops.chunks(OPS_PER_MESSAGE) {
                let payload = match encode(&NodeOps {
                    ops: chunk.to_vec(),
                }) {
                    Ok(p) => p,
                    Err(e) => {
                        failed.push((node.clone(), e));
                        continue;
                    }
                };
                msgs.push((subjects::node_ops(&node), HeaderMap::new(), payload));
                nodes.push(node.clone());
            }
        }
        for (chunk, nodes) in msgs.chunks(MAX_BATCH).zip(nodes.chunks(MAX_BATCH)) {
            if let Err(e) = self.bus.publish_atomic(chunk).await {
                let e = SinkError::from(e);
                failed.extend(nodes.iter().map(|n| (n.clone(), e.clone())));
            }
        }
        failed
    }
}

/// Heartbeats into the `bulkhead-nodes` bucket.
#[derive(Clone)]
pub struct KvHeartbeat {
    kv: kv::Store,
}

impl KvHeartbeat {
    pub async fn new(bus: &Bus) -> Result<Self, BusError> {
        let kv = bus
            .js
            .get_key_value(subjects::NODES_BUCKET)
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        Ok(KvHeartbeat { kv })
    }
}

impl HeartbeatSink for KvHeartbeat {
    async fn beat(&self, hb: NodeHeartbeat) -> Result<(), SinkError> {
        let payload = encode(&hb)?;
        self.kv
            .put(&hb.name, payload)
            .await
            .map(drop)
            .map_err(|e| SinkError::Unavailable(cause(e)))
    }
}
