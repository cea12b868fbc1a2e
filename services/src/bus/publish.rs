//! Publishing into streams, with what went wrong told apart (a conflict, a refusal, no
//! answer): one message, or an atomic batch (nats-server 2.12+) stored all together or
//! not at all.

use async_nats::HeaderMap;
use async_nats::client::RequestErrorKind;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use bulkhead_actors::ports::log::LogError;
use bulkhead_actors::ports::{Cause, SinkError, cause};
use bytes::Bytes;
use serde::Deserialize;

use super::Bus;

/// Makes `h`'s message stored only if the last message on `subjects` (a filter) is at
/// stream sequence `seq` (0: none is): how a writer keeps a chain from forking.
pub fn expect_last_subject_seq(h: &mut HeaderMap, seq: u64, subjects: &str) {
    h.insert(
        "Nats-Expected-Last-Subject-Sequence",
        seq.to_string().as_str(),
    );
    h.insert("Nats-Expected-Last-Subject-Sequence-Subject", subjects);
}

/// The server's limit of messages in one atomic batch.
pub const MAX_BATCH: usize = 1000;
/// Messages that need not be stored together go as one atomic batch only from this many
/// on; fewer go one by one, all at once. nats-server 2.15 stages each atomic batch in a
/// file store of its own: at `sync_interval: always`, batches of 2 cost it 1,010 µs of
/// CPU per message against 192 µs for the same messages sent singly; the two break even
/// near 16 (115 vs 98 µs) and batches win beyond (32: 71 vs 94 µs; 128: 30 vs 87 µs).
pub const ATOMIC_FROM: usize = 16;
/// JetStream's error code for a failed `Nats-Expected-Last-Subject-Sequence`.
const WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream's error code for an atomic batch holding a `Nats-Msg-Id` the stream has seen
/// (within its duplicate window): the batch is refused as a whole.
const BATCH_DUPLICATE: u64 = 10201;

/// Why a publish was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishFailure {
    /// The expected last sequence did not hold: another writer came first.
    #[error("wrong last sequence: {0}")]
    WrongLastSequence(String),
    /// The server refused it (an API error, no stream for the subject, a bad batch).
    #[error("refused: {0}")]
    Refused(String),
    /// A message with its `Nats-Msg-Id` is in the stream already (an earlier attempt whose
    /// acknowledgement was lost), so this one was not stored: what is stored may differ
    /// from what was sent (another `prev` after a re-chain). Said only of an atomic publish
    /// (`Bus::publish_atomic`); `Bus::publish_stored` takes a duplicate for stored.
    #[error("stored already (a message with its id is in the stream)")]
    AlreadyStored,
    /// No answer: not connected, or timed out.
    #[error("no answer: {0}")]
    Unreachable(#[source] Cause),
}

impl From<PublishFailure> for LogError {
    fn from(f: PublishFailure) -> Self {
        match f {
            PublishFailure::WrongLastSequence(_) => LogError::Conflict,
            // Not as it was sent: the head it would make is not known here.
            PublishFailure::AlreadyStored => LogError::Conflict,
            PublishFailure::Refused(why) => LogError::Refused(why),
            PublishFailure::Unreachable(c) => LogError::Unavailable(c),
        }
    }
}

impl From<PublishFailure> for SinkError {
    fn from(f: PublishFailure) -> Self {
        match f {
            PublishFailure::WrongLastSequence(why) | PublishFailure::Refused(why) => {
                SinkError::Refused(why)
            }
            PublishFailure::AlreadyStored => SinkError::Refused(f.to_string()),
            PublishFailure::Unreachable(c) => SinkError::Unavailable(c),
        }
    }
}

/// A request that got no stored answer. A subject that cannot be sent (bad name, too
/// large) is refused; everything else may pass: no answer, or no responder, which is what
/// a stream also looks like while JetStream restarts or elects a leader.
pub fn request_failure(subject: &str, e: async_nats::RequestError) -> PublishFailure {
    match e.kind() {
        RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
            PublishFailure::Refused(format!("{subject}: {e}"))
        }
        RequestErrorKind::NoResponders | RequestErrorKind::TimedOut | RequestErrorKind::Other => {
            PublishFailure::Unreachable(cause(e))
        }
    }
}

/// A JetStream publish that was not acknowledged: refused when the server said why
/// (no stream, too large, a stale expectation), unreachable when it said nothing or the
/// client lost its connection.
pub fn publish_failure(subject: &str, e: PublishError) -> PublishFailure {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => PublishFailure::WrongLastSequence(e.to_string()),
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::Other => PublishFailure::Unreachable(cause(e)),
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::MaxPayloadExceeded => {
            PublishFailure::Refused(format!("{subject}: {e}"))
        }
    }
}

/// JetStream's codes for "not now": the system temporarily unavailable (10008), a cluster
/// that cannot handle the request at this moment (10009).
const TRANSIENT_CODES: [u64; 2] = [10008, 10009];

/// The server could not take it now, and said so.
#[derive(Debug, thiserror::Error)]
#[error("JetStream unavailable ({code}): {description}")]
struct Unavailable {
    code: u64,
    description: String,
}

#[derive(Deserialize)]
struct PubAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
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

/// The stored sequence and message count of a publish ack.
fn parse_ack(payload: &[u8]) -> Result<(u64, u64), PublishFailure> {
    let ack: PubAck = serde_json::from_slice(payload).map_err(|e| {
        PublishFailure::Refused(format!(
            "bad publish ack {:?}: {e}",
            String::from_utf8_lossy(payload)
        ))
    })?;
    match ack.error {
        Some(e) if e.err_code == WRONG_LAST_SEQUENCE => {
            Err(PublishFailure::WrongLastSequence(e.description))
        }
        Some(e) if e.err_code == BATCH_DUPLICATE => Err(PublishFailure::AlreadyStored),
        Some(e) if TRANSIENT_CODES.contains(&e.err_code) => {
            Err(PublishFailure::Unreachable(cause(Unavailable {
                code: e.err_code,
                description: e.description,
            })))
        }
        Some(e) => Err(PublishFailure::Refused(e.description)),
        None if ack.duplicate => Err(PublishFailure::AlreadyStored),
        None => Ok((ack.seq, ack.count.unwrap_or(1))),
    }
}

impl Bus {
    /// Publishes one message into a stream and waits for it to be stored; returns its
    /// sequence.
    pub async fn publish_stored(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, PublishFailure> {
        let fail = |e| publish_failure(&subject, e);
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(fail)?
            .await
            .map_err(fail)?;
        Ok(ack.sequence)
    }

    /// Publishes messages as one atomic batch; returns the sequence of the first.
    pub async fn publish_atomic(
        &self,
        msgs: &[(String, HeaderMap, Bytes)],
    ) -> Result<u64, PublishFailure> {
        let n = msgs.len();
        if !(1..=MAX_BATCH).contains(&n) {
            return Err(PublishFailure::Refused(format!(
                "a batch holds 1 to {MAX_BATCH} messages, not {n}"
            )));
        }
        let request = |subject: &String, h: HeaderMap, payload: &Bytes| {
            let subject = subject.clone();
            let payload = payload.clone();
            async move {
                self.client
                    .request_with_headers(subject.clone(), h, payload)
                    .await
                    .map_err(|e| request_failure(&subject, e))
            }
        };
        if let [(subject, headers, payload)] = msgs {
            let reply = request(subject, headers.clone(), payload).await?;
            return parse_ack(&reply.payload).map(|(seq, _)| seq);
        }
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let Some(((last_subject, last_headers, last_payload), rest)) = msgs.split_last() else {
            return Err(PublishFailure::Refused("an empty batch".into()));
        };
        for (i, (subject, headers, payload)) in rest.iter().enumerate() {
            let mut h = headers.clone();
            h.insert("Nats-Batch-Id", batch_id.as_str());
            h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            self.client
                .publish_with_headers(subject.clone(), h, payload.clone())
                .await
                .map_err(|e| PublishFailure::Unreachable(cause(e)))?;
        }
        let mut h = last_headers.clone();
        h.insert("Nats-Batch-Id", batch_id.as_str());
        h.insert("Nats-Batch-Sequence", n.to_string().as_str());
        h.insert("Nats-Batch-Commit", "1");
        let reply = request(last_subject, h, last_payload).await?;
        let (last, count) = parse_ack(&reply.payload)?;
        if count != n as u64 {
            return Err(PublishFailure::Refused(format!(
                "batch stored {count} of {n} messages"
            )));
        }
        Ok((last + 1).saturating_sub(n as u64))
    }
}
