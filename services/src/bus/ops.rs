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
use bulkhead_schemas::{NodeHeartbeat, NodeOp, subjects};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use super::publish::{ATOMIC_FROM, MAX_BATCH};
use super::{Bus, BusError};
use crate::lease::Fence;

/// Ops per message to one node.
pub const OPS_PER_MESSAGE: usize = 256;

/// Node ops on `BULKHEAD_OPS`: one message per node per round, signed as the scheduler
/// (one signature per round, each message carrying its Merkle path) with the scheduler's
/// enrolment as its certificate.
#[derive(Clone)]
pub struct NatsOps {
    bus: Bus,
    signer: Signer,
    cert: Arc<tokio::sync::OnceCell<String>>,
    /// The lease of the active scheduler it sends for: nothing is sent once it may be
    /// another's.
    fence: Option<Fence>,
}

impl NatsOps {
    pub fn new(bus: &Bus) -> Result<Self, BusError> {
        Ok(NatsOps {
            bus: bus.clone(),
            signer: bus.identity()?.signer.clone(),
            cert: Arc::default(),
            fence: None,
        })
    }

    /// These ops, sending nothing (each node and job fails as not delivered) once `fence`
    /// no longer holds: what a scheduler that was not run for a while decided before
    /// another took over (a node's view, a pace, a resent start, a scan job) stays unsent,
    /// as its appends do ([`super::NatsLog::fenced`]).
    pub fn fenced(mut self, fence: Fence) -> NatsOps {
        self.fence = Some(fence);
        self
    }

    /// Why it may not send now, if it may not.
    fn fenced_out(&self) -> Option<SinkError> {
        self.fence.as_ref()?.refusal().map(SinkError::Unavailable)
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

/// The bytes of ops one message carries at most: a quarter of what the server takes (the
/// headers, the proof and the certificate ride along), and no more than 1 MiB.
fn message_limit(max_payload: usize) -> usize {
    (max_payload / 4).clamp(16 * 1024, 1 << 20)
}

/// `node`'s `ops` as `NodeOps` messages of at most [`OPS_PER_MESSAGE`] ops and about
/// `limit` bytes (an op larger than `limit` goes alone), each op serialized once.
fn node_messages(
    node: &str,
    by: &str,
    ops: &[NodeOp],
    limit: usize,
) -> Result<Vec<Vec<u8>>, SinkError> {
    let encode_err = |e: serde_json::Error| SinkError::Refused(format!("cannot encode: {e}"));
    let head = format!(
        r#"{{"node":{},"by":{},"ops":["#,
        serde_json::to_string(node).map_err(encode_err)?,
        serde_json::to_string(by).map_err(encode_err)?
    );
    let mut out = Vec::new();
    let mut msg = head.clone().into_bytes();
    let mut count = 0;
    for op in ops {
        let op = serde_json::to_vec(op).map_err(encode_err)?;
        if count > 0 && (count == OPS_PER_MESSAGE || msg.len() + op.len() > limit) {
            msg.extend_from_slice(b"]}");
            out.push(std::mem::replace(&mut msg, head.clone().into_bytes()));
            count = 0;
        }
        if count > 0 {
            msg.push(b',');
        }
        msg.extend_from_slice(&op);
        count += 1;
    }
    if count > 0 {
        msg.extend_from_slice(b"]}");
        out.push(msg);
    }
    Ok(out)
}

/// Cuts `nodes` (each message's node, a node's messages side by side) into spans for
/// atomic batches: runs of one node's messages (at most [`MAX_BATCH`] each), joined while a
/// span holds at most `max` messages (`max` = 1: one run per span).
fn spans(nodes: &[Arc<str>], max: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < nodes.len() {
        let end = (i..nodes.len())
            .find(|&j| nodes[j] != nodes[i] || j - i == MAX_BATCH)
            .unwrap_or(nodes.len());
        match out.last_mut() {
            Some((start, last)) if end - *start <= max => *last = end,
            _ => out.push((i, end)),
        }
        i = end;
    }
    out
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Bytes, SinkError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| SinkError::Refused(format!("cannot encode: {e}")))
}

impl OpsSink for NatsOps {
    async fn queue_scans(&self, jobs: Vec<ScanJob>) -> Vec<(String, SinkError)> {
        if let Some(e) = self.fenced_out() {
            return jobs.into_iter().map(|j| (j.id, e.clone())).collect();
        }
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
        if let Some(e) = self.fenced_out() {
            return ops.into_keys().map(|n| (n, e.clone())).collect();
        }
        let mut payloads = Vec::new();
        let mut nodes = Vec::new();
        let mut failed = Vec::new();
        let cert = match self.cert().await {
            Ok(c) => c,
            Err(e) => return ops.into_keys().map(|n| (n, e.clone())).collect(),
        };
        let by = self.signer.public_key();
        let max_payload = self.bus.client.server_info().max_payload;
        let limit = message_limit(max_payload);
        for (node, ops) in ops {
            let msgs = match node_messages(&node, by, &ops, limit) {
                Ok(m) => m,
                Err(e) => {
                    failed.push((node, e));
                    continue;
                }
            };
            for payload in msgs {
                // Room for the headers: the proof and the scheduler's certificate.
                if payload.len() + 16 * 1024 > max_payload {
                    // One op alone past the server's limit (a spec near its ceiling).
                    let why = format!(
                        "an op of {} bytes is over what the server takes",
                        payload.len()
                    );
                    failed.push((node.clone(), SinkError::Refused(why)));
                    continue;
                }
                payloads.push(Bytes::from(payload));
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
        // A few messages go node by node, all at once (a small atomic batch costs the
        // server more than its messages: [`ATOMIC_FROM`]).
        if msgs.len() < ATOMIC_FROM {
            let msgs = &msgs;
            let each: FuturesOrdered<_> = spans(&nodes, 1)
                .into_iter()
                .map(|(i, j)| async move { (i, self.bus.publish_atomic(&msgs[i..j]).await) })
                .collect();
            for (i, r) in each.collect::<Vec<_>>().await {
                if let Err(e) = r {
                    failed.push((nodes[i].clone(), SinkError::from(e)));
                }
            }
            return failed;
        }
        // Else as few atomic batches as fit (one store and one sync for a round's ops to a
        // thousand nodes, not one per node); a batch that fails is sent again node by node,
        // so that a message that fails fails its own node only.
        for (start, end) in spans(&nodes, MAX_BATCH) {
            if self.bus.publish_atomic(&msgs[start..end]).await.is_ok() {
                continue;
            }
            for (i, j) in spans(&nodes[start..end], 1) {
                let (i, j) = (start + i, start + j);
                if let Err(e) = self.bus.publish_atomic(&msgs[i..j]).await {
                    failed.push((nodes[i].clone(), SinkError::from(e)));
                }
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
    if let Some(why) = bulkhead_actors::node::limits::refuses_heartbeat(&hb) {
        return Err(Aside::new(0, &subject, "out_of_limits", why));
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

#[cfg(test)]
mod tests {
    use bulkhead_schemas::{ChainHead, NodeOps, WorkloadSpec};

    use super::*;

    fn start(i: u32, pad: usize) -> NodeOp {
        let mut spec: WorkloadSpec = serde_json::from_value(serde_json::json!({
            "id": "w", "image": "i", "memory_mb": 1, "cpu_millicores": 1
        }))
        .unwrap();
        spec.env.insert("PAD".into(), "x".repeat(pad));
        NodeOp::Start {
            workload: "default/w".into(),
            replica: i,
            spec,
            head: ChainHead {
                seq: 1,
                hash: "00".into(),
            },
            traceparent: None,
        }
    }

    /// The messages decode as the `NodeOps` they stand for, in order, cut by count and bytes.
    #[test]
    fn messages_hold_every_op_in_order_within_their_bounds() {
        let ops: Vec<NodeOp> = (0..600).map(|i| start(i, 100)).collect();
        let msgs = node_messages("n\"1", "UKEY", &ops, 1 << 20).unwrap();
        assert_eq!(msgs.len(), 3, "256 ops a message at most");
        let back: Vec<NodeOp> = msgs
            .iter()
            .flat_map(|m| {
                let n: NodeOps = serde_json::from_slice(m).unwrap();
                assert_eq!((n.node.as_str(), n.by.as_str()), ("n\"1", "UKEY"));
                n.ops
            })
            .collect();
        assert_eq!(back, ops);
        let big: Vec<NodeOp> = (0..20).map(|i| start(i, 60 * 1024)).collect();
        let msgs = node_messages("n1", "UKEY", &big, 256 * 1024).unwrap();
        assert!(msgs.iter().all(|m| m.len() <= 256 * 1024), "cut by bytes");
        assert_eq!(
            msgs.len(),
            5,
            "four ops of 61 KB fit under 256 KiB, five do not"
        );
        let alone = node_messages("n1", "UKEY", &big[..2], 1024).unwrap();
        assert_eq!(alone.len(), 2, "an op over the limit goes alone");
    }

    #[test]
    fn spans_join_whole_nodes_up_to_the_limit() {
        let n = |names: &[&str]| -> Vec<Arc<str>> { names.iter().map(|s| Arc::from(*s)).collect() };
        let nodes = n(&["a", "a", "b", "c", "c", "c", "d"]);
        assert_eq!(spans(&nodes, 1000), vec![(0, 7)]);
        assert_eq!(spans(&nodes, 4), vec![(0, 3), (3, 7)]);
        assert_eq!(spans(&nodes, 1), vec![(0, 2), (2, 3), (3, 6), (6, 7)]);
        let many = n(&vec!["a"; MAX_BATCH + 5]);
        assert_eq!(
            spans(&many, MAX_BATCH),
            vec![(0, MAX_BATCH), (MAX_BATCH, MAX_BATCH + 5)],
            "one node's run is cut at the batch limit"
        );
        assert!(spans(&[], MAX_BATCH).is_empty());
    }
}
