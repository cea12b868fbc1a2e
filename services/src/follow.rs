//! Reads the whole event log in stream order, verifying every message as it goes
//! (`bulkhead_actors::verify`): first up to its current end (rebuilding a projection), then
//! live, in batches of whatever has arrived. What does not verify is set aside in the
//! batch it delivers, never applied and never dropped in silence.
//!
//! On the way it keeps the log's running hash and its node, scan and identity messages,
//! and ends a batch at each checkpoint event: a reader's state after such a batch is what
//! a snapshot anchored there holds ([`crate::snapshot`]). A follower can start after a
//! snapshot ([`Resume`]): the verifier, running hash and messages it held.
//!
//! A service's own workload events ([`OwnWrites`], noted by its log as it stores them) are
//! passed by unparsed and unverified once their stored bytes hash to what it wrote: the
//! running hash takes them, the service does not (it applied each as its append came back).

use async_nats::jetstream::consumer::{Consumer, DeliverPolicy, pull};
use async_nats::jetstream::stream::{Config, Info};
use std::sync::Arc;

use bulkhead_actors::aside::Aside;
use bulkhead_actors::audit::{RawMsg, RunningHash};
use bulkhead_actors::ports::log::{Anchor, Batch, Stored};
use bulkhead_actors::projection::Projection;
use bulkhead_actors::signing::SIG_HEADER;
use bulkhead_actors::verify::Family;
use bulkhead_actors::verify::{Raw, Verifier};
use bulkhead_schemas::event::{EventBody, hash_bytes};
use bulkhead_schemas::subjects;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::bus::{Bus, BusError, opening};
use crate::own::OwnWrites;
use crate::tasks::AbortOnDrop;

/// The stream metadata key that records the log's format.
pub const FORMAT_KEY: &str = "bulkhead.log.format";
/// The format this bulkhead writes and reads: signed events (`v: 2`).
pub const FORMAT: &str = "2";

/// A running reader of `bulkhead.evt.>` from some sequence on.
pub struct Follower {
    pub rx: mpsc::Receiver<Batch>,
    /// Sequence of the last event when the follower started: the end of the rebuild.
    pub end_at_start: u64,
    /// The first sequence it reads (after a snapshot, the one after the snapshot's).
    pub from_seq: u64,
    /// How far behind the log's end it reads: the messages stored after the last it read,
    /// as the server counted them when it delivered that one (updated each chunk read).
    pub behind: watch::Receiver<u64>,
    /// The service's own appends, passed by unparsed: its log notes them here
    /// ([`crate::bus::NatsLog::noting`]).
    pub own: OwnWrites,
    task: tokio::task::JoinHandle<()>,
}

/// The messages from `from_seq` through `end`.
fn tail(end: u64, from_seq: u64) -> u64 {
    end.saturating_sub(from_seq.saturating_sub(1))
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Refuses a log written in another format: an old, unsigned log is never mixed with a
/// signed one.
pub fn check_format(config: &Config) -> Result<(), BusError> {
    match config.metadata.get(FORMAT_KEY).map(String::as_str) {
        Some(FORMAT) => Ok(()),
        found => Err(BusError::Setup {
            what: format!("the event log {}", config.name),
            msg: format!(
                "it is in format {} and this bulkhead reads format {FORMAT} (signed events); \
                 an older, unsigned log cannot be verified: start with a new data directory \
                 (move the old one away)",
                found.unwrap_or("1")
            ),
        }),
    }
}

/// A fresh, unguessable consumer name: `<what>-<uuid>`.
pub fn consumer_name(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// A message of the log as the verifier reads it (borrowed), or why it is none.
pub fn raw_of(m: &async_nats::jetstream::Message) -> Result<Raw<'_>, Aside> {
    let info = m
        .info()
        .map_err(|_| Aside::new(0, &m.subject, "no_metadata", "no stream sequence"))?;
    let stored_ms = (info.published.unix_timestamp_nanos() / 1_000_000)
        .try_into()
        .unwrap_or(0);
    let proof = m
        .headers
        .as_ref()
        .and_then(|h| h.get(SIG_HEADER))
        .map(|v| v.as_str());
    Ok(Raw {
        seq: info.stream_sequence,
        subject: &m.subject,
        payload: &m.payload,
        proof,
        stored_ms,
    })
}

/// An ordered consumer of the whole log from `from_seq` (named `<what>-<random>`, so that the
/// server checks its filter against the reader's permissions and no one else pulls from it),
/// and the stream's state when it began; a log of another format is refused.
pub async fn ordered_log(
    bus: &Bus,
    what: &str,
    from_seq: u64,
) -> Result<(Consumer<pull::OrderedConfig>, Info), BusError> {
    let stream = bus.stream(subjects::EVT_STREAM).await?;
    let info = opening(subjects::EVT_STREAM, || stream.get_info()).await?;
    check_format(&info.config)?;
    let config = pull::OrderedConfig {
        name: Some(consumer_name(what)),
        filter_subject: subjects::EVT_ALL.into(),
        deliver_policy: if from_seq <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: from_seq,
            }
        },
        ..Default::default()
    };
    let consumer = opening("the log's consumer", || {
        stream.create_consumer(config.clone())
    })
    .await?;
    Ok((consumer, info))
}

/// A copy of every message a follower reads, in chunks, for a second reader in the same
/// process. Bounded: when that reader falls behind, chunks are dropped rather than holding
/// the follower up, and the reader, seeing the sequences jump, reads the missing ones from
/// the log itself ([`crate::audit::checkpointer`]).
pub struct Tee(mpsc::Sender<Vec<RawMsg>>);

impl Tee {
    /// A tee holding at most `chunks` chunks not yet taken, and its receiving end.
    pub fn new(chunks: usize) -> (Tee, mpsc::Receiver<Vec<RawMsg>>) {
        let (tx, rx) = mpsc::channel(chunks.max(1));
        (Tee(tx), rx)
    }

    /// Whether a chunk would be taken now (else it is not worth copying).
    fn open(&self) -> bool {
        self.0.capacity() > 0
    }

    /// Hands `chunk` on, or drops it when the reader is behind or gone.
    fn give(&self, chunk: Vec<RawMsg>) {
        if !chunk.is_empty() {
            let _ = self.0.try_send(chunk);
        }
    }
}

/// Where a follower starts: after a snapshot, the verifier, running hash and messages it
/// held; from the log's first message, fresh ones.
pub struct Resume {
    pub verifier: Verifier,
    /// The running hash through the message before the first to read.
    pub running: RunningHash,
    /// The node, scan and identity messages read so far (the latest checkpoint only).
    pub raw: Arc<Vec<RawMsg>>,
    /// The service's own appends to pass by (none yet: its log notes them as it stores).
    pub own: OwnWrites,
}

impl Resume {
    /// From the log's first message, trusting `admins`.
    pub fn fresh(admins: &[String]) -> Resume {
        Resume {
            verifier: Verifier::new(admins),
            running: RunningHash::default(),
            raw: Arc::default(),
            own: OwnWrites::default(),
        }
    }
}

/// What a follower keeps besides verifying: the running hash, and the messages a snapshot
/// carries.
struct Keep {
    running: RunningHash,
    raw: Arc<Vec<RawMsg>>,
}

impl Keep {
    /// Takes one verified (or set-aside) message; returns the anchor when it is a checkpoint.
    fn take(&mut self, raw: &Raw<'_>, verified: Option<(Family, &Stored)>) -> Option<Anchor> {
        let Some((family, stored)) = verified else {
            self.running
                .add(raw.seq, raw.subject, raw.payload, raw.proof);
            return None;
        };
        self.running
            .add_hashed(raw.seq, raw.subject, &stored.hash, raw.proof);
        if family == Family::Workload {
            return None;
        }
        let covers = match &stored.event.body {
            EventBody::Checkpoint(cp) => Some(cp.seq),
            _ => None,
        };
        let kept = Arc::make_mut(&mut self.raw);
        if covers.is_some() {
            // Older checkpoints change no reader's state: the latest one is kept.
            kept.retain(|m| !m.subject.ends_with(".checkpoint"));
        }
        kept.push(RawMsg::of(raw));
        covers.map(|covers| Anchor {
            seq: raw.seq,
            covers,
            running: self.running,
            raw: self.raw.clone(),
        })
    }
}

impl Follower {
    /// Follows the log from `from_seq` as the connection's identity, trusting the admins its
    /// credential names.
    pub async fn start(bus: &Bus, from_seq: u64) -> Result<Follower, BusError> {
        let admins = bus.identity()?.creds.admins.clone();
        Follower::resume(bus, from_seq, Resume::fresh(&admins)).await
    }

    /// Follows the log from `from_seq` on, going on from `resume`.
    pub async fn resume(bus: &Bus, from_seq: u64, resume: Resume) -> Result<Follower, BusError> {
        Follower::resume_teed(bus, from_seq, resume, None).await
    }

    /// [`Follower::resume`], handing a copy of every message to `tee` if there is one.
    pub async fn resume_teed(
        bus: &Bus,
        from_seq: u64,
        resume: Resume,
        tee: Option<Tee>,
    ) -> Result<Follower, BusError> {
        let err = |e: &dyn std::fmt::Display| BusError::Nats(format!("reading the event log: {e}"));
        let (consumer, info) = ordered_log(bus, "follow", from_seq).await?;
        let end_at_start = info.state.last_sequence;
        let messages = consumer.messages().await.map_err(|e| err(&e))?;
        let (tx, rx) = mpsc::channel(64);
        let (lag, behind) = watch::channel(tail(end_at_start, from_seq));
        let own = resume.own.clone();
        let task = tokio::spawn(async move {
            let Resume {
                mut verifier,
                running,
                raw,
                own: own_writes,
            } = resume;
            let mut keep = Keep { running, raw };
            let mut chunks = messages.ready_chunks(2048);
            while let Some(chunk) = chunks.next().await {
                if let Some(Ok(Ok(last))) = chunk.last().map(|m| m.as_ref().map(|m| m.info())) {
                    lag.send_replace(last.pending);
                }
                let mut batch = Batch::default();
                let teeing = tee.as_ref().filter(|t| t.open());
                let mut copies = Vec::with_capacity(if teeing.is_some() { chunk.len() } else { 0 });
                for m in chunk {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(error = %e, "event log read error");
                            continue;
                        }
                    };
                    let raw = match raw_of(&m) {
                        Ok(raw) => raw,
                        Err(a) => {
                            batch.set_aside.push(a);
                            continue;
                        }
                    };
                    if teeing.is_some() {
                        copies.push(RawMsg::of(&raw));
                    }
                    if let Some(hash) = own_writes.take(raw.seq) {
                        if hash_bytes(raw.payload) == hash {
                            keep.running
                                .add_hashed(raw.seq, raw.subject, &hash, raw.proof);
                            batch.own.pass(raw.seq);
                            continue;
                        }
                        warn!(
                            seq = raw.seq,
                            "the log holds other bytes than this service stored there: read as any writer's"
                        );
                    }
                    let anchor = match verifier.check(raw) {
                        Ok((family, stored)) => {
                            let anchor = keep.take(&raw, Some((family, &stored)));
                            match family {
                                Family::Workload => batch.events.push(stored),
                                Family::Node => batch.nodes.push(stored),
                                Family::Scan => batch.scans.push((stored, raw.stored_ms)),
                                Family::Sys => batch.identities.push(stored),
                            }
                            anchor
                        }
                        Err(a) => {
                            keep.take(&raw, None);
                            batch.set_aside.push(a);
                            None
                        }
                    };
                    if let Some(anchor) = anchor {
                        // The batch ends here: a snapshot may be taken of what it leaves.
                        batch.checkpoint = Some(anchor);
                        if tx.send(std::mem::take(&mut batch)).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(tee) = teeing {
                    tee.give(copies);
                }
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    return;
                }
            }
        });
        Ok(Follower {
            rx,
            end_at_start,
            from_seq,
            behind,
            own,
            task,
        })
    }

    /// A projection of the whole log as it is now, and the follower to go on from there.
    pub async fn rebuild(bus: &Bus) -> Result<(Projection, Follower), BusError> {
        Follower::rebuild_teed(bus, None).await
    }

    /// [`Follower::rebuild`], handing a copy of every message to `tee` if there is one.
    pub async fn rebuild_teed(
        bus: &Bus,
        tee: Option<Tee>,
    ) -> Result<(Projection, Follower), BusError> {
        let admins = bus.identity()?.creds.admins.clone();
        let mut follower = Follower::resume_teed(bus, 1, Resume::fresh(&admins), tee).await?;
        let mut projection = Projection::default();
        follower.catch_up(|batch| projection.logged(batch)).await;
        Ok((projection, follower))
    }

    /// Hands every batch from here on to `deliver`, in a task, until it returns false;
    /// the task ends when the guard is dropped.
    pub fn forward(
        mut self,
        mut deliver: impl FnMut(Batch) -> bool + Send + 'static,
    ) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(async move {
            while let Some(batch) = self.rx.recv().await {
                if !deliver(batch) {
                    return;
                }
            }
        }))
    }

    /// The messages it had to read when it started: from `from_seq` through `end_at_start`
    /// (after a snapshot, the tail a restart replays).
    pub fn tail_at_start(&self) -> u64 {
        tail(self.end_at_start, self.from_seq)
    }

    /// Feeds `apply` every batch up to the stream's end at start; returns how many
    /// messages they held.
    pub async fn catch_up(&mut self, mut apply: impl FnMut(Batch)) -> usize {
        let mut n = 0;
        let mut last = self.from_seq.saturating_sub(1);
        while last < self.end_at_start {
            let Some(batch) = self.rx.recv().await else {
                break;
            };
            last = last.max(batch.last_seq());
            n += batch.len();
            apply(batch);
        }
        n
    }
}
