//! [`MemLog`]: the event log in memory, with the one rule of the real one that matters to
//! writers: an append lands only after the head it names (JetStream's expected last subject
//! sequence over the workload's events). Events are sealed, chained and signed exactly as the
//! NATS adapter does (each append a batch), so what it holds can be verified as the log's
//! readers do. Tests can put another writer's events in the way and make appends fail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bulkhead_schemas::event::Event;
use tokio::sync::mpsc;

use bulkhead_schemas::subjects;

use super::log::{EventLog, Head, LogError, Outcome, Stored, WorkloadAppend};
use crate::signing::{Signer, seal_event, sign_batch};

#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Inner>>,
}

/// A message as the log stores it: what a reader verifies.
#[derive(Clone, Debug)]
pub struct Message {
    pub seq: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    /// The `Bulkhead-Sig` header.
    pub proof: String,
}

struct Inner {
    /// Who writes the appends (the writer the log was built for).
    signer: Signer,
    /// Every message, workload and node events alike, as stored.
    messages: Vec<Message>,
    /// Every stored workload event; its sequence is its place in the stream.
    stored: Vec<Stored>,
    /// Node events, with their stream sequences (they share the sequence with the rest).
    nodes: Vec<(u64, Event)>,
    seq: u64,
    /// Another writer's events, stored just before the next append to their workload.
    interpose: VecDeque<Event>,
    /// Appends that fail as if the log were unreachable.
    fail: usize,
    /// Appends stored whose outcome is lost (reported as the log unreachable).
    lose: usize,
    watchers: Vec<mpsc::UnboundedSender<Stored>>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            signer: Signer::generate(),
            messages: Vec::new(),
            stored: Vec::new(),
            nodes: Vec::new(),
            seq: 0,
            interpose: VecDeque::new(),
            fail: 0,
            lose: 0,
            watchers: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the in-memory log was told to fail")]
struct Injected;

impl Inner {
    fn head(&self, workload: &str) -> Option<Head> {
        self.stored
            .iter()
            .rev()
            .find(|s| s.event.subject == workload)
            .map(|s| Head {
                seq: s.seq,
                hash: s.hash,
            })
    }

    fn store(&mut self, append: WorkloadAppend) -> Outcome {
        let signer = self.signer.clone();
        self.store_by(&signer, append)
    }

    fn store_by(&mut self, signer: &Signer, mut append: WorkloadAppend) -> Outcome {
        let last = self.head(&append.workload).map_or(0, |h| h.seq);
        if append.expected_seq() != last {
            if !append.rechain_on_conflict {
                return Err(LogError::Conflict);
            }
            append.head = self.head(&append.workload);
        }
        // As the server's duplicate window: events whose ids are stored are not stored
        // again, and the writer learns only that (`Outcome`).
        if append
            .events
            .iter()
            .any(|e| self.stored.iter().any(|s| s.event.id == e.id))
        {
            return Ok(Vec::new());
        }
        let sealed = append.seal(signer.public_key());
        let hashes: Vec<_> = sealed.iter().map(|s| s.hash).collect();
        let proofs = sign_batch(signer, &hashes);
        let mut out = Vec::with_capacity(sealed.len());
        for ((s, e), proof) in sealed.into_iter().zip(append.events).zip(proofs) {
            self.seq += 1;
            self.messages.push(Message {
                seq: self.seq,
                subject: s.subject,
                payload: s.bytes,
                proof: proof.encode(),
            });
            let stored = Stored {
                seq: self.seq,
                hash: s.hash,
                event: e,
            };
            self.watchers.retain(|w| w.send(stored.clone()).is_ok());
            self.stored.push(stored.clone());
            out.push(stored);
        }
        Ok(out)
    }

    fn interposed(&mut self, workload: &str) {
        let (mine, rest): (VecDeque<Event>, VecDeque<Event>) = std::mem::take(&mut self.interpose)
            .into_iter()
            .partition(|e| e.subject == workload);
        self.interpose = rest;
        for e in mine {
            let head = self.head(workload);
            let append = WorkloadAppend::at(workload, head, vec![e]);
            let _ = self.store(append);
        }
    }
}

impl MemLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A log written by `signer`.
    pub fn signed_by(signer: Signer) -> MemLog {
        let log = MemLog::default();
        log.lock().signer = signer;
        log
    }

    /// Every message as stored, with its proof: what the log's readers verify.
    pub fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    /// Every workload event stored so far, in stream order.
    pub fn stored(&self) -> Vec<Stored> {
        self.lock().stored.clone()
    }

    /// One workload's events, in order.
    pub fn workload(&self, id: &str) -> Vec<Event> {
        self.lock()
            .stored
            .iter()
            .filter(|s| s.event.subject == id)
            .map(|s| s.event.clone())
            .collect()
    }

    /// The types of one workload's events, in order.
    pub fn kinds(&self, id: &str) -> Vec<&'static str> {
        self.workload(id).iter().map(Event::kind).collect()
    }

    /// Node events published so far, in order.
    pub fn node_events(&self) -> Vec<Event> {
        self.lock().nodes.iter().map(|(_, e)| e.clone()).collect()
    }

    /// The head of a workload's chain.
    pub fn head(&self, workload: &str) -> Option<Head> {
        self.lock().head(workload)
    }

    /// Every workload event stored from now on, as it is stored (as a log follower reads).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Stored> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().watchers.push(tx);
        rx
    }

    /// Another writer's event: stored after the workload's head, at once.
    pub fn write(&self, event: Event) -> Stored {
        let signer = self.lock().signer.clone();
        self.write_as(&signer, event)
    }

    /// An event `signer` writes: stored after the workload's head, at once.
    pub fn write_as(&self, signer: &Signer, event: Event) -> Stored {
        let mut inner = self.lock();
        let workload = event.subject.clone();
        let head = inner.head(&workload);
        let append = WorkloadAppend::at(&workload, head, vec![event]);
        let mut stored = inner.store_by(signer, append).unwrap_or_default();
        stored.pop().expect("one event stored")
    }

    /// A message put in the log as it is (another writer's, or a forgery): for tests of
    /// what readers refuse.
    pub fn put_raw(&self, subject: &str, payload: Vec<u8>, proof: &str) -> u64 {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        inner.messages.push(Message {
            seq,
            subject: subject.to_owned(),
            payload,
            proof: proof.to_owned(),
        });
        seq
    }

    /// Another writer's event, stored just before the next append to its workload: that
    /// append then finds the head moved.
    pub fn interpose(&self, event: Event) {
        self.lock().interpose.push_back(event);
    }

    /// The next `n` appends fail as if the log were unreachable.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail = n;
    }

    /// The next `n` appends are stored, and their writer is told the log was unreachable
    /// (an acknowledgement lost on the way back).
    pub fn lose_outcome_of_next(&self, n: usize) {
        self.lock().lose = n;
    }
}

impl EventLog for MemLog {
    async fn append(&self, appends: Vec<WorkloadAppend>) -> Vec<Outcome> {
        let mut inner = self.lock();
        appends
            .into_iter()
            .map(|a| {
                if inner.fail > 0 {
                    inner.fail -= 1;
                    return Err(LogError::Unavailable(super::cause(Injected)));
                }
                inner.interposed(&a.workload);
                let stored = inner.store(a);
                if inner.lose > 0 && stored.is_ok() {
                    inner.lose -= 1;
                    return Err(LogError::Unavailable(super::cause(Injected)));
                }
                stored
            })
            .collect()
    }

    async fn publish_node(&self, mut event: Event) -> Result<(), LogError> {
        let mut inner = self.lock();
        if inner.fail > 0 {
            inner.fail -= 1;
            return Err(LogError::Unavailable(super::cause(Injected)));
        }
        let (payload, proof) = seal_event(&inner.signer, &mut event);
        inner.seq += 1;
        let seq = inner.seq;
        inner.messages.push(Message {
            seq,
            subject: subjects::node_event(&event.subject, event.kind()),
            payload,
            proof: proof.encode(),
        });
        inner.nodes.push((seq, event));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_schemas::event::{EventBody, StopRequested, hash_bytes};

    fn stop(w: &str) -> Event {
        let body = EventBody::StopRequested(StopRequested {
            cmd_seq: 1,
            grace_secs: None,
        });
        Event::new("t", w, None, body)
    }

    #[tokio::test]
    async fn appends_land_only_after_their_head_and_chain_like_the_real_log() {
        let log = MemLog::default();
        let first = log
            .append(vec![WorkloadAppend::new("w", vec![stop("w")])])
            .await;
        let s = first[0].as_ref().unwrap()[0].clone();
        assert_eq!(s.seq, 1);
        let (bytes, _) = s.event.seal();
        assert_eq!(s.hash, hash_bytes(&bytes), "the hash of the stored bytes");
        let again = log
            .append(vec![WorkloadAppend::new("w", vec![stop("w")])])
            .await;
        assert!(matches!(again[0], Err(LogError::Conflict)), "w exists");
        let head = log.head("w").unwrap();
        log.interpose(stop("w"));
        let raced = log
            .append(vec![WorkloadAppend::after("w", head, vec![stop("w")])])
            .await;
        assert!(
            matches!(raced[0], Err(LogError::Conflict)),
            "another writer came first"
        );
        let fact = WorkloadAppend::after("w", head, vec![stop("w")]).rechaining();
        let ok = log.append(vec![fact]).await;
        let ev = &ok[0].as_ref().unwrap()[0].event;
        assert_eq!(ev.prev, Some(hex::encode(log.stored()[1].hash)));
        log.fail_next(1);
        let failed = log
            .append(vec![WorkloadAppend::new("x", vec![stop("x")])])
            .await;
        assert!(matches!(failed[0], Err(LogError::Unavailable(_))));
        assert_eq!(log.kinds("w").len(), 3);
    }
}
