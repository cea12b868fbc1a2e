//! The event log on `BULKHEAD_EVT`: appends as atomic batches (a few go one by one, at
//! once), each workload's first event carrying the expected last sequence of that
//! workload's subjects, so two writers never fork a chain; appends that do not fit one
//! batch go alone. Every batch is signed once
//! (`bulkhead_actors::signing`): each message carries its proof in `Bulkhead-Sig`.

use async_nats::HeaderMap;
use bulkhead_actors::ports::log::Head;
use bulkhead_actors::ports::log::{EventLog, LogError, Outcome, Sealed, Stored, WorkloadAppend};
use bulkhead_actors::ports::{cause, cause_msg};
use bulkhead_schemas::event::Event;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;
use bulkhead_schemas::{HeadsReply, HeadsRequest};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use bulkhead_actors::signing::{Proof, SIG_HEADER, Signer, seal_event, sign_batch};

use super::publish::{ATOMIC_FROM, MAX_BATCH, PublishFailure, expect_last_subject_seq};
use super::{Bus, BusError};
use crate::lease::Fence;
use crate::own::OwnWrites;

/// Batches in flight at once.
const CONCURRENT_BATCHES: usize = 16;
/// A re-chaining append gives up after the head moved this many times in a row.
const RECHAIN_ATTEMPTS: usize = 8;

#[derive(Clone)]
pub struct NatsLog {
    bus: Bus,
    signer: Signer,
    /// The node this log writes for, if it is a node's (which asks heads of the API).
    node: Option<String>,
    /// Where the workload events it stores are noted for the service's own reader.
    own: Option<OwnWrites>,
    /// The lease of the active instance it writes for: nothing is written once it may be
    /// another's.
    fence: Option<Fence>,
}

impl Bus {
    /// The log, written as this connection's identity.
    pub fn log(&self) -> Result<NatsLog, BusError> {
        let id = self.identity()?;
        Ok(NatsLog {
            bus: self.clone(),
            signer: id.signer.clone(),
            node: (id.creds.role == Role::Node).then(|| id.creds.name.clone()),
            own: None,
            fence: None,
        })
    }
}

impl NatsLog {
    /// This log, noting every workload event it stores in `own`, for the service's reader
    /// of the log to pass by ([`crate::follow::Follower::own`]). Only for a service that
    /// applies its appends' outcomes itself.
    pub fn noting(mut self, own: OwnWrites) -> NatsLog {
        self.own = Some(own);
        self
    }

    /// This log, writing nothing (each append and node event fails as the log unavailable)
    /// once `fence` no longer holds: an active instance that was not run for a while must
    /// not write, on waking, what it decided before another took over.
    pub fn fenced(mut self, fence: Fence) -> NatsLog {
        self.fence = Some(fence);
        self
    }

    /// Why it may not write now, if it may not.
    fn fenced_out(&self) -> Option<LogError> {
        self.fence.as_ref()?.refusal().map(LogError::Unavailable)
    }
}

/// Messages of one sealed append: the first carries the expected subject sequence; each
/// its proof.
fn messages(
    append: &WorkloadAppend,
    sealed: &[Sealed],
    proofs: &[Proof],
) -> Vec<(String, HeaderMap, Bytes)> {
    sealed
        .iter()
        .zip(&append.events)
        .zip(proofs)
        .enumerate()
        .map(|(i, ((s, event), proof))| {
            let mut h = HeaderMap::new();
            h.insert(SIG_HEADER, proof.encode().as_str());
            if i == 0 {
                let events = subjects::workload_events(&append.workload);
                expect_last_subject_seq(&mut h, append.expected_seq(), &events);
            }
            if let Some(tp) = &event.traceparent {
                h.insert("traceparent", tp.as_str());
            }
            h.insert("Nats-Msg-Id", event.id.as_str());
            (s.subject.clone(), h, Bytes::from(s.bytes.clone()))
        })
        .collect()
}

/// An append's events as stored at `seqs`, in order.
fn stored(
    append: &WorkloadAppend,
    sealed: &[Sealed],
    seqs: impl IntoIterator<Item = u64>,
) -> Outcome {
    Ok(sealed
        .iter()
        .zip(&append.events)
        .zip(seqs)
        .map(|((s, e), seq)| Stored {
            seq,
            hash: s.hash,
            event: e.clone(),
        })
        .collect())
}

/// Signs the sealed appends of one batch together: one proof per message, in order.
fn sign(signer: &Signer, sealed: &[&[Sealed]]) -> Vec<Vec<Proof>> {
    let hashes: Vec<_> = sealed
        .iter()
        .flat_map(|s| s.iter().map(|m| m.hash))
        .collect();
    let mut proofs = sign_batch(signer, &hashes).into_iter();
    sealed
        .iter()
        .map(|s| proofs.by_ref().take(s.len()).collect())
        .collect()
}

impl NatsLog {
    /// The current head of `workload`: read from the log, or, for a node (which reads no
    /// log), asked of the query API, which answers for the node's own workloads (and may lag
    /// a little: each further attempt waits a little longer).
    async fn head_of(&self, workload: &str, attempt: usize) -> Result<Option<Head>, LogError> {
        let Some(node) = &self.node else {
            return self
                .bus
                .head(workload)
                .await
                .map_err(|e| LogError::Unavailable(cause(e)));
        };
        tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
        let req = HeadsRequest {
            workloads: vec![workload.to_owned()],
        };
        let body = serde_json::to_vec(&req).map_err(|e| LogError::Refused(e.to_string()))?;
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.bus
                .client
                .request(subjects::api_node_heads(node), body.into()),
        )
        .await
        .map_err(|_| LogError::Unavailable(cause_msg("the query API did not answer")))?
        .map_err(|e| LogError::Unavailable(cause(e)))?;
        let heads: HeadsReply = serde_json::from_slice(&reply.payload)
            .map_err(|e| LogError::Unavailable(cause_msg(format!("the query API's heads: {e}"))))?;
        let Some(h) = heads.heads.into_iter().find(|h| h.workload == workload) else {
            return Err(LogError::Unavailable(cause_msg(format!(
                "the query API gives node {node} no head of {workload} (yet)"
            ))));
        };
        let hash = hex::decode(&h.head.hash)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| LogError::Refused("a malformed head".into()))?;
        Ok(Some(Head {
            seq: h.head.seq,
            hash,
        }))
    }

    /// Appends one workload's events on their own, re-chaining after a moved head when allowed.
    async fn append_one(&self, mut append: WorkloadAppend) -> Outcome {
        let key = self.signer.public_key().to_owned();
        for _attempt in 0..RECHAIN_ATTEMPTS {
            let sealed = append.seal(&key);
            let proofs = sign(&self.signer, &[&sealed]).pop().unwrap_or_default();
            let msgs = messages(&append, &sealed, &proofs);
            match self.publish_in_parts(&append.workload, msgs).await {
                Ok(seqs) => {
                    return Ok(sealed
                        .iter()
                        .zip(&append.events)
                        .zip(seqs)
                        .map(|((s, e), seq)| Stored {
                            seq,
                            hash: s.hash,
                            event: e.clone(),
                        })
                        .collect());
                }
                Err(PublishFailure::WrongLastSequence(_)) if append.rechain_on_conflict => {
                    append.head = self.head_of(&append.workload, _attempt).await?;
                }
                // An earlier attempt stored these events (its acknowledgement was lost; the
                // re-chained copy found their ids in the stream): stored, where and with what
                // hash not known here. The writer keeps its older head, and its next append
                // re-chains onto the log's. Taking the copy's hash for the stored one's made
                // the next event's `prev` name a hash the log never held: a broken chain that
                // every reader set aside. One part only: past it, a later part may be missing.
                Err(PublishFailure::AlreadyStored) if append.events.len() <= MAX_BATCH => {
                    return Ok(Vec::new());
                }
                Err(f) => return Err(f.into()),
            }
        }
        Err(LogError::Conflict)
    }

    /// One workload's messages, stored in order: one atomic batch, or, past [`MAX_BATCH`]
    /// (a workload of 1,000 replicas placed at once), consecutive batches each expecting
    /// the last sequence the one before stored for the workload, so the chain stays
    /// head-checked. Returns each message's sequence.
    async fn publish_in_parts(
        &self,
        workload: &str,
        mut msgs: Vec<(String, HeaderMap, Bytes)>,
    ) -> Result<Vec<u64>, PublishFailure> {
        let mut seqs = Vec::with_capacity(msgs.len());
        let mut last = None;
        for part in msgs.chunks_mut(MAX_BATCH) {
            if let (Some(last), Some((_, h, _))) = (last, part.first_mut()) {
                expect_last_subject_seq(h, last, &subjects::workload_events(workload));
            }
            let first = self.bus.publish_atomic(part).await?;
            seqs.extend(first..first + part.len() as u64);
            last = seqs.last().copied();
        }
        Ok(seqs)
    }

    /// A group of whole appends, signed together: one atomic batch, or, when each append is
    /// one event and they are fewer than [`ATOMIC_FROM`] (a node's facts), each stored on
    /// its own, all at once (a small atomic batch costs the server more than its messages;
    /// an append of several events stays one batch: its chain cannot be cut). An append
    /// that fails goes again alone.
    async fn append_group(&self, mut group: Vec<WorkloadAppend>) -> Vec<Outcome> {
        let key = self.signer.public_key().to_owned();
        let sealed: Vec<Vec<Sealed>> = group.iter_mut().map(|a| a.seal(&key)).collect();
        let all: Vec<&[Sealed]> = sealed.iter().map(Vec::as_slice).collect();
        let proofs = sign(&self.signer, &all);
        let msgs: Vec<Vec<_>> = group
            .iter()
            .zip(&sealed)
            .zip(&proofs)
            .map(|((a, s), p)| messages(a, s, p))
            .collect();
        let singly = msgs.len() < ATOMIC_FROM && msgs.iter().all(|m| m.len() == 1);
        if group.len() > 1
            && !singly
            && let Ok(mut first) = self.bus.publish_atomic(&msgs.concat()).await
        {
            return group
                .iter()
                .zip(&sealed)
                .map(|(a, s)| {
                    let o = stored(a, s, first..);
                    first += s.len() as u64;
                    o
                })
                .collect();
        }
        if group.len() > 1 && singly {
            let each: FuturesOrdered<_> = group
                .iter()
                .zip(msgs)
                .map(|(a, m)| self.publish_in_parts(&a.workload, m))
                .collect();
            let results: Vec<_> = each.collect().await;
            let mut out = Vec::with_capacity(group.len());
            for ((a, s), r) in group.into_iter().zip(&sealed).zip(results) {
                out.push(match r {
                    Ok(seqs) => stored(&a, s, seqs),
                    Err(_) => self.append_one(a).await,
                });
            }
            return out;
        }
        let singles: FuturesOrdered<_> = group.into_iter().map(|a| self.append_one(a)).collect();
        singles.collect().await
    }
}

/// Appends grouped in order into batches of at most [`MAX_BATCH`] events (an append
/// larger than that is a group of its own).
fn groups(appends: Vec<WorkloadAppend>) -> Vec<Vec<WorkloadAppend>> {
    let mut groups: Vec<Vec<WorkloadAppend>> = Vec::new();
    let mut size = 0;
    for a in appends {
        let n = a.events.len();
        match groups.last_mut() {
            Some(g) if size + n <= MAX_BATCH => g.push(a),
            _ => {
                groups.push(vec![a]);
                size = 0;
            }
        }
        size += n;
    }
    groups
}

impl NatsLog {
    /// Appends a scan verdict (`bulkhead.evt.scan.<digest>.scan_completed`), signed.
    pub async fn publish_scan(&self, mut event: Event) -> Result<(), LogError> {
        let subject = subjects::scan_event(&event.subject, event.kind());
        self.publish_signed(subject, &mut event).await
    }

    /// Publishes one event alone, signed (its proof a batch of one).
    async fn publish_signed(&self, subject: String, event: &mut Event) -> Result<(), LogError> {
        let (bytes, proof) = seal_event(&self.signer, event);
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", event.id.as_str());
        h.insert(SIG_HEADER, proof.encode().as_str());
        if let Some(tp) = &event.traceparent {
            h.insert("traceparent", tp.as_str());
        }
        self.bus.publish_stored(subject, h, bytes.into()).await?;
        Ok(())
    }
}

impl EventLog for NatsLog {
    async fn append(&self, appends: Vec<WorkloadAppend>) -> Vec<Outcome> {
        if let Some(e) = self.fenced_out() {
            return appends.iter().map(|_| Err(e.clone())).collect();
        }
        let outcomes: Vec<Vec<Outcome>> =
            futures::stream::iter(groups(appends).into_iter().map(|g| self.append_group(g)))
                .buffered(CONCURRENT_BATCHES)
                .collect()
                .await;
        let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
        if let Some(own) = &self.own {
            let stored = outcomes.iter().flatten().flatten();
            own.note(stored.map(|s| (s.seq, s.hash)));
        }
        outcomes
    }

    async fn publish_node(&self, mut event: Event) -> Result<(), LogError> {
        if let Some(e) = self.fenced_out() {
            return Err(e);
        }
        let subject = subjects::node_event(&event.subject, event.kind());
        self.publish_signed(subject, &mut event).await
    }
}
