//! The scheduler's ops and scan jobs (`BULKHEAD_OPS`, `BULKHEAD_SCAN`) and the nodes'
//! heartbeats (KV `bulkhead-nodes`): the NATS adapters of the ops and heartbeat ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use bulkhead_actors::aside::Aside;
use bulkhead_actors::ports::heartbeat::HeartbeatSink;
use bulkhead_actors::ports::ops::OpsSink;
use bulkhead_actors::ports::{SinkError, cause};
use bulkhead_actors::signing::{CERT_HEADER, Context, SIG_HEADER, Signer, sign_batch_in};
use bulkhead_schemas::event::hash_bytes;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::scan::ScanJob;
use bulkhead_schemas::{NodeHeartbeat, NodeOp, NodeOps, subjects};
use bytes::Bytes;

use super::publish::MAX_BATCH;
use super::{Bus, BusError};

/// Ops per message to one node.
const OPS_PER_MESSAGE: usize = 256;

/// Node ops on `BULKHEAD_OPS`: one message per node per round, signed as the scheduler
/// (one signature per round, each message carrying its Merkle path) with the scheduler's
/// enrolment as its certificate.
#[derive(Clone)]
pub struct NatsOps {
    bus: Bus,
    signer: Signer,
    cert: Arc<tokio::sync::OnceCell<String>>,
}

impl NatsOps {
    pub fn new(bus: &Bus) -> Result<Self, BusError> {
        Ok(NatsOps {
            bus: bus.clone(),
            signer: bus.identity()?.signer.clone(),
            cert: Arc::default(),
        })
    }

    /// The scheduler's enrolment as the log holds it, signed by an admin: what proves to a
    /// node that this key may send it ops.
    async fn cert(&self) -> Result<&str, SinkError> {
        self.cert
            .get_or_try_init(|| async {
                let id = self
                    .bus
                    .identity()
                    .map_err(|e| SinkError::Refused(e.to_string()))?;
                let subject =
                    subjects::sys_event(Role::Scheduler.as_str(), &id.creds.name, "enrolled");
                let found = self
                    .bus
                    .last_message_signed(&subject)
                    .await
                    .map_err(|e| SinkError::Unavailable(cause(e)))?;
                match found {
                    Some((payload, _, Some(sig))) => Ok(format!("{} {sig}", hex::encode(payload))),
                    _ => Err(SinkError::Refused(format!(
                        "the log holds no enrolment of scheduler {} (run `bulkhead init`)",
                        id.creds.name
                    ))),
                }
            })
            .await
            .map(String::as_str)
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
        let mut payloads = Vec::new();
        let mut nodes = Vec::new();
        let mut failed = Vec::new();
        let cert = match self.cert().await {
            Ok(c) => c,
            Err(e) => return ops.into_keys().map(|n| (n, e.clone())).collect(),
        };
        let by = self.signer.public_key();
        for (node, ops) in ops {
            for chunk in ops.chunks(OPS_PER_MESSAGE) {
                let payload = match encode(&NodeOps {
                    node: node.to_string(),
                    by: by.to_owned(),
                    ops: chunk.to_vec(),
                }) {
                    Ok(p) => p,
                    Err(e) => {
                        failed.push((node.clone(), e));
                        continue;
                    }
                };
                payloads.push(payload);
                nodes.push(node.clone());
            }
        }
        let hashes: Vec<_> = payloads.iter().map(|p| hash_bytes(p)).collect();
        let proofs = sign_batch_in(Context::Ops, &self.signer, &hashes);
        let msgs: Vec<_> = payloads
            .into_iter()
            .zip(proofs)
            .zip(&nodes)
            .map(|((payload, proof), node)| {
                let mut h = HeaderMap::new();
                h.insert(SIG_HEADER, proof.encode().as_str());
                h.insert(CERT_HEADER, cert);
                (subjects::node_ops(node), h, payload)
            })
            .collect();
        for (chunk, nodes) in msgs.chunks(MAX_BATCH).zip(nodes.chunks(MAX_BATCH)) {
            if let Err(e) = self.bus.publish_atomic(chunk).await {
                let e = SinkError::from(e);
                failed.extend(nodes.iter().map(|n| (n.clone(), e.clone())));
            }
        }
        failed
    }
}

/// The heartbeat stored under `key` of the nodes bucket. The key is what nats-server
/// checked (a node writes its own key only): a body naming another node is set aside.
pub fn heartbeat_of(key: &str, value: &[u8]) -> Result<NodeHeartbeat, Aside> {
    let subject = format!("$KV.{}.{key}", subjects::NODES_BUCKET);
    let hb: NodeHeartbeat = serde_json::from_slice(value)
        .map_err(|e| Aside::new(0, &subject, "malformed", format!("not a heartbeat: {e}")))?;
    if hb.name != key {
        let why = format!("the heartbeat under {key} names node {:?}", hb.name);
        return Err(Aside::new(0, &subject, "heartbeat_name", why));
    }
    Ok(hb)
}

/// Heartbeats into the `bulkhead-nodes` bucket: a plain publish to the node's own key
/// (`$KV.bulkhead-nodes.<node>`, the one subject of the bucket a node's account may reach).
#[derive(Clone)]
pub struct KvHeartbeat {
    bus: Bus,
}

impl KvHeartbeat {
    pub async fn new(bus: &Bus) -> Result<Self, BusError> {
        Ok(KvHeartbeat { bus: bus.clone() })
    }
}

impl HeartbeatSink for KvHeartbeat {
    async fn beat(&self, hb: NodeHeartbeat) -> Result<(), SinkError> {
        let payload = encode(&hb)?;
        let subject = format!("$KV.{}.{}", subjects::NODES_BUCKET, hb.name);
        self.bus
            .publish_stored(subject, HeaderMap::new(), payload)
            .await
            .map(drop)
            .map_err(SinkError::from)
    }
}
