//! The event log on `BULKHEAD_EVT`: appends as atomic batches, each workload's first event
//! carrying the expected last sequence of that workload's subjects, so two writers never
//! fork a chain; appends that do not fit one batch go alone.

use async_nats::HeaderMap;
use bulkhead_actors::ports::cause;
use bulkhead_actors::ports::log::{EventLog, LogError, Outcome, Sealed, Stored, WorkloadAppend};
use bulkhead_schemas::event::Event;
use bulkhead_schemas::subjects;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use super::Bus;
use super::publish::{MAX_BATCH, PublishFailure};

/// Batches in flight at once.
const CONCURRENT_BATCHES: usize = 16;
/// A re-chaining append gives up after the head moved this many times in a row.
const RECHAIN_ATTEMPTS: usize = 8;

#[derive(Clone)]
pub struct NatsLog {
    bus: Bus,
}

impl Bus {
    pub fn log(&self) -> NatsLog {
        NatsLog { bus: self.clone() }
    }
}

/// Messages of one sealed append: the first carries the expected subject sequence.
fn messages(append: &WorkloadAppend, sealed: &[Sealed]) -> Vec<(String, HeaderMap, Bytes)> {
    sealed
        .iter()
        .zip(&append.events)
        .enumerate()
        .map(|(i, (s, event))| {
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
            if let Some(tp) = &event.traceparent {
                h.insert("traceparent", tp.as_str());
            }
            h.insert("Nats-Msg-Id", event.id.as_str());
            (s.subject.clone(), h, Bytes::from(s.bytes.clone()))
        })
        .collect()
}

fn stored(append: &WorkloadAppend, sealed: &[Sealed], first: u64) -> Outcome {
    Ok(sealed
        .iter()
        .zip(&append.events)
        .zip(first..)
        .map(|((s, e), seq)| Stored {
            seq,
            hash: s.hash,
            event: e.clone(),
        })
        .collect())
}

impl NatsLog {
    /// Appends one workload's events on their own, re-chaining after a moved head when allowed.
    async fn append_one(&self, mut append: WorkloadAppend) -> Outcome {
        for _attempt in 0..RECHAIN_ATTEMPTS {
            let sealed = append.seal();
            match self.bus.publish_atomic(&messages(&append, &sealed)).await {
                Ok(first) => return stored(&append, &sealed, first),
                Err(PublishFailure::WrongLastSequence(_)) if append.rechain_on_conflict => {
                    append.head = self
                        .bus
                        .head(&append.workload)
                        .await
                        .map_err(|e| LogError::Unavailable(cause(e)))?;
                }
                Err(f) => return Err(f.into()),
            }
        }
        Err(LogError::Conflict)
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

impl EventLog for NatsLog {
    async fn append(&self, appends: Vec<WorkloadAppend>) -> Vec<Outcome> {
        let outcomes: Vec<Vec<Outcome>> =
            futures::stream::iter(groups(appends).into_iter().map(|g| self.append_group(g)))
                .buffered(CONCURRENT_BATCHES)
                .collect()
                .await;
        outcomes.into_iter().flatten().collect()
    }

    async fn publish_node(&self, event: Event) -> Result<(), LogError> {
        let subject = subjects::node_event(&event.subject, event.kind());
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", event.id.as_str());
        if let Some(tp) = &event.traceparent {
            h.insert("traceparent", tp.as_str());
        }
        let (bytes, _) = event.seal();
        self.bus.publish_stored(subject, h, bytes.into()).await?;
        Ok(())
    }
}
