//! The NATS/JetStream adapter: streams and buckets (created idempotently), event appends
//! as atomic batches with per-workload optimistic concurrency, node ops, heartbeats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bulkhead_actors::log::{EventLog, Outcome, Sealed, Stored, WorkloadAppend};
use bulkhead_actors::node::HeartbeatSink;
use bulkhead_actors::projection::Head;
use bulkhead_actors::scheduler_actor::OpsSink;
use bulkhead_schemas::event::{Event, hash_bytes};
use bulkhead_schemas::scan::ScanJob;
use bulkhead_schemas::{NodeHeartbeat, NodeOp, NodeOps, subjects};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use serde::Deserialize;

/// The server's limit of messages in one atomic batch.
pub const MAX_BATCH: usize = 1000;
const WRONG_LAST_SEQUENCE: u64 = 10071;
const CONCURRENT_BATCHES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("setting up {what}: {msg}")]
    Setup { what: String, msg: String },
    #[error("{0}")]
    Nats(String),
}

/// Consumers a stream may have (nats-server's own default is 1,000 per stream).
pub const MAX_CONSUMERS: i32 = 1_000_000;

/// Connection plus JetStream context.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// Stream and bucket settings that differ between production and tests.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Window within which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// Heartbeat entries older than this vanish from the nodes bucket.
    pub node_ttl: Duration,
    /// Lifetime of the scheduler lease unless renewed.
    pub lease_ttl: Duration,
    /// A scan worker silent this long leaves the hash ring.
    pub scanner_ttl: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            duplicate_window: Duration::from_secs(600),
            node_ttl: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(3),
            scanner_ttl: Duration::from_secs(6),
        }
    }
}

impl Bus {
    pub async fn connect(url: &str, name: &str) -> Result<Bus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let js = jetstream::new(client.clone());
        Ok(Bus { client, js })
    }

    /// Creates or updates every stream and bucket; safe to run at each start-up.
    pub async fn ensure(&self, topo: &Topology) -> Result<(), BusError> {
        let setup = |what: &str| {
            let what = what.to_owned();
            move |e: &dyn std::fmt::Display| BusError::Setup {
                what: what.clone(),
                msg: e.to_string(),
            }
        };
        let streams = [
            stream::Config {
                name: subjects::CMD_STREAM.into(),
                description: Some("bulkhead commands: submit, stop, scale".into()),
                subjects: vec![subjects::CMD_ALL.into()],
                storage: stream::StorageType::File,
                duplicate_window: topo.duplicate_window,
                allow_atomic_publish: true,
                ..Default::default()
            },
            stream::Config {
                name: subjects::EVT_STREAM.into(),
                description: Some("bulkhead event log".into()),
                subjects: vec![subjects::EVT_ALL.into()],
                storage: stream::StorageType::File,
                duplicate_window: topo.duplicate_window,
                allow_atomic_publish: true,
                allow_direct: true,
                ..Default::default()
            },
            stream::Config {
                name: subjects::SCAN_STREAM.into(),
                description: Some("bulkhead scan jobs".into()),
                subjects: vec![subjects::SCAN_JOBS.into()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            },
            stream::Config {
                name: subjects::OPS_STREAM.into(),
                description: Some("bulkhead node operations".into()),
                subjects: vec![subjects::OPS_ALL.into()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::WorkQueue,
                allow_atomic_publish: true,
                ..Default::default()
            },
        ];
        for mut cfg in streams {
            // nats-server 2.15 caps a stream at 1,000 consumers unless it sets its own
            // limit: a thousand nodes have a thousand ops consumers, and every node start
            // reads the log through an ephemeral one.
            cfg.max_consumers = MAX_CONSUMERS;
            let name = cfg.name.clone();
            self.js
                .create_or_update_stream(cfg)
                .await
                .map_err(|e| setup(&format!("stream {name}"))(&e))?;
        }
        let buckets = [
            (subjects::NODES_BUCKET, "node heartbeats", topo.node_ttl),
            (
                subjects::SCANNERS_BUCKET,
                "live scan workers (the layer cache's hash ring)",
                topo.scanner_ttl,
            ),
            (
                subjects::LAYERS_BUCKET,
                "layer inventories by diffID and format",
                Duration::ZERO,
            ),
            (
                subjects::LEASES_BUCKET,
                "leases of active service instances",
                topo.lease_ttl,
            ),
        ];
        for (bucket, description, ttl) in buckets {
            let cfg = kv::Config {
                bucket: bucket.into(),
                description: description.into(),
                history: 1,
                max_age: ttl,
                storage: stream::StorageType::File,
                ..Default::default()
            };
            self.js
                .create_or_update_key_value(cfg)
                .await
                .map_err(|e| setup(&format!("bucket {bucket}"))(&e))?;
        }
        Ok(())
    }

    pub fn log(&self) -> NatsLog {
        NatsLog { bus: self.clone() }
    }

    /// The last event of a workload's chain, read from the stream.
    /// Every heartbeat in the `bulkhead-nodes` bucket (and each deletion or expiry), as it
    /// is written, starting with each node's latest.
    pub async fn watch_nodes(&self) -> Result<kv::Watch, BusError> {
        let store = self
            .js
            .get_key_value(subjects::NODES_BUCKET)
            .await
            .map_err(|e| BusError::Nats(format!("opening the nodes bucket: {e}")))?;
        store
            .watch_all()
            .await
            .map_err(|e| BusError::Nats(format!("watching the nodes bucket: {e}")))
    }

    pub async fn head(&self, workload: &str) -> Result<Option<Head>, BusError> {
        self.last_event(&subjects::workload_events(workload)).await
    }

    /// The last event on `filter` (wildcards allowed): its sequence and hash.
    pub async fn last_event(&self, filter: &str) -> Result<Option<Head>, BusError> {
        let req = serde_json::json!({ "last_by_subj": filter });
        let subject = format!("$JS.API.DIRECT.GET.{}", subjects::EVT_STREAM);
        let msg = self
            .client
            .request(subject, serde_json::to_vec(&req).expect("json").into())
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        let headers = msg.headers.as_ref();
        if let Some(status) = msg.status
            && status.as_u16() == 404
        {
            return Ok(None);
        }
        let seq = headers
            .and_then(|h| h.get("Nats-Sequence"))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .ok_or_else(|| {
                BusError::Nats(format!("direct get of {filter}: no sequence in reply"))
            })?;
        Ok(Some(Head {
            seq,
            hash: hash_bytes(&msg.payload),
        }))
    }

    /// Publishes messages as one atomic batch; returns the sequence of the first.
    pub async fn publish_atomic(
        &self,
        msgs: &[(String, HeaderMap, Bytes)],
    ) -> Result<u64, PublishFailure> {
        let n = msgs.len();
        assert!((1..=MAX_BATCH).contains(&n), "batch of {n} messages");
        if n == 1 {
            let (subject, headers, payload) = &msgs[0];
            let reply = self
                .client
                .request_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|e| PublishFailure::Other(e.to_string()))?;
            return parse_ack(&reply.payload).map(|(seq, _)| seq);
        }
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        for (i, (subject, headers, payload)) in msgs.iter().enumerate() {
            let mut h = headers.clone();
            h.insert("Nats-Batch-Id", batch_id.as_str());
            h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            if i + 1 < n {
                self.client
                    .publish_with_headers(subject.clone(), h, payload.clone())
                    .await
                    .map_err(|e| PublishFailure::Other(e.to_string()))?;
            } else {
                h.insert("Nats-Batch-Commit", "1");
                let reply = self
                    .client
                    .request_with_headers(subject.clone(), h, payload.clone())
                    .await
                    .map_err(|e| PublishFailure::Other(e.to_string()))?;
                let (last, count) = parse_ack(&reply.payload)?;
                if count != n as u64 {
                    return Err(PublishFailure::Other(format!(
                        "batch stored {count} of {n} messages"
                    )));
                }
                return Ok(last + 1 - n as u64);
            }
        }
        unreachable!("loop returns on the last message")
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishFailure {
    #[error("wrong last sequence: {0}")]
    WrongLastSequence(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Deserialize)]
struct PubAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<ApiErr>,
}

#[derive(Deserialize)]
struct ApiErr {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

fn parse_ack(payload: &[u8]) -> Result<(u64, u64), PublishFailure> {
    let ack: PubAck = serde_json::from_slice(payload).map_err(|e| {
        PublishFailure::Other(format!(
            "bad publish ack {:?}: {e}",
            String::from_utf8_lossy(payload)
        ))
    })?;
    match ack.error {
        Some(e) if e.err_code == WRONG_LAST_SEQUENCE => {
            Err(PublishFailure::WrongLastSequence(e.description))
        }
        Some(e) => Err(PublishFailure::Other(e.description)),
        None => Ok((ack.seq, ack.count.unwrap_or(1))),
    }
}

/// The event log on `BULKHEAD_EVT`.
#[derive(Clone)]
pub struct NatsLog {
    bus: Bus,
}

/// Messages of one sealed append: the first carries the expected subject sequence.
fn messages(append: &WorkloadAppend, sealed: &[Sealed]) -> Vec<(String, HeaderMap, Bytes)> {
    sealed
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut h = HeaderMap::new();
            if i == 0 {
                h.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    append.expected_seq().to_string().as_str(),
                );
                h.insert(
                    "Nats-Expected-Last-Subject-Sequence-Subject",
                    subjects::workload_events(&append.workload).as_str(),
                );
            }
            if let Some(tp) = &append.events[i].traceparent {
                h.insert("traceparent", tp.as_str());
            }
            h.insert("Nats-Msg-Id", append.events[i].id.as_str());
            (s.subject.clone(), h, Bytes::from(s.bytes.clone()))
        })
        .collect()
}

fn stored(append: &WorkloadAppend, sealed: &[Sealed], first: u64) -> Outcome {
    Outcome::Stored(
        sealed
            .iter()
            .zip(&append.events)
            .enumerate()
            .map(|(i, (s, e))| Stored {
                seq: first + i as u64,
                hash: s.hash,
                event: e.clone(),
            })
            .collect(),
    )
}

impl NatsLog {
    /// Appends one workload's events on their own, re-chaining after a moved head when allowed.
    async fn append_one(&self, mut append: WorkloadAppend) -> Outcome {
        for _attempt in 0..8 {
            let sealed = append.seal();
            match self.bus.publish_atomic(&messages(&append, &sealed)).await {
                Ok(first) => return stored(&append, &sealed, first),
                Err(PublishFailure::WrongLastSequence(_)) if append.rechain_on_conflict => {
                    match self.bus.head(&append.workload).await {
                        Ok(head) => append.head = head,
                        Err(e) => return Outcome::Failed(e.to_string()),
                    }
                }
                Err(PublishFailure::WrongLastSequence(_)) => return Outcome::Conflict,
                Err(PublishFailure::Other(e)) => return Outcome::Failed(e),
            }
        }
        Outcome::Failed("head kept moving; gave up after 8 attempts".into())
    }

    /// A group of whole appends as one atomic batch; on failure each goes alone.
    async fn append_group(&self, mut group: Vec<WorkloadAppend>) -> Vec<Outcome> {
        let sealed: Vec<Vec<Sealed>> = group.iter_mut().map(WorkloadAppend::seal).collect();
        let msgs: Vec<_> = group
            .iter()
            .zip(&sealed)
            .flat_map(|(a, s)| messages(a, s))
            .collect();
        if group.len() > 1
            && let Ok(mut first) = self.bus.publish_atomic(&msgs).await
        {
            return group
                .iter()
                .zip(&sealed)
                .map(|(a, s)| {
                    let o = stored(a, s, first);
                    first += s.len() as u64;
                    o
                })
                .collect();
        }
        let singles: FuturesOrdered<_> = group.into_iter().map(|a| self.append_one(a)).collect();
        singles.collect().await
    }
}

impl EventLog for NatsLog {
    async fn append(&self, appends: Vec<WorkloadAppend>) -> Vec<Outcome> {
        let mut groups: Vec<Vec<WorkloadAppend>> = Vec::new();
        let mut size = 0;
        for a in appends {
            if groups.is_empty() || size + a.events.len() > MAX_BATCH {
                groups.push(Vec::new());
                size = 0;
            }
            size += a.events.len();
            groups.last_mut().expect("pushed").push(a);
        }
        let outcomes: Vec<Vec<Outcome>> =
            futures::stream::iter(groups.into_iter().map(|g| self.append_group(g)))
                .buffered(CONCURRENT_BATCHES)
                .collect()
                .await;
        outcomes.into_iter().flatten().collect()
    }

    async fn publish_node(&self, event: Event) -> Result<(), String> {
        let subject = subjects::node_event(&event.subject, event.kind());
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", event.id.as_str());
        if let Some(tp) = &event.traceparent {
            h.insert("traceparent", tp.as_str());
        }
        let (bytes, _) = event.seal();
        self.bus
            .js
            .publish_with_headers(subject, h, bytes.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

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

impl OpsSink for NatsOps {
    async fn queue_scans(&self, jobs: Vec<ScanJob>) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for job in jobs {
            let mut headers = HeaderMap::new();
            // Queued again after a takeover: the job id makes it a duplicate, not a second job.
            headers.insert("Nats-Msg-Id", job.id.as_str());
            let body = serde_json::to_vec(&job).expect("job serializes");
            let r = match self
                .bus
                .js
                .publish_with_headers(subjects::SCAN_JOBS, headers, body.into())
                .await
            {
                Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = r {
                failed.push((job.id, e));
            }
        }
        failed
    }

    async fn send(&self, ops: BTreeMap<Arc<str>, Vec<NodeOp>>) -> Vec<(Arc<str>, String)> {
        let mut msgs = Vec::new();
        let mut nodes = Vec::new();
        for (node, ops) in ops {
            for chunk in ops.chunks(256) {
                let payload = serde_json::to_vec(&NodeOps {
                    ops: chunk.to_vec(),
                })
                .expect("ops serialize");
                msgs.push((
                    subjects::node_ops(&node),
                    HeaderMap::new(),
                    Bytes::from(payload),
                ));
                nodes.push(node.clone());
            }
        }
        let mut failed = Vec::new();
        let mut offset = 0;
        for chunk in msgs.chunks(MAX_BATCH) {
            if let Err(e) = self.bus.publish_atomic(chunk).await {
                for n in &nodes[offset..offset + chunk.len()] {
                    failed.push((n.clone(), e.to_string()));
                }
            }
            offset += chunk.len();
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
    async fn beat(&self, hb: NodeHeartbeat) -> Result<(), String> {
        let payload = serde_json::to_vec(&hb).expect("heartbeat serializes");
        self.kv
            .put(&hb.name, payload.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
