//! The log, proved: reading every stored message raw (for `bulkhead audit verify`, backups
//! and the query API's checkpoints), replaying it through the [`Auditor`], checkpoint files
//! kept outside NATS, and the query API's checkpointer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use bulkhead_actors::audit::{Auditor, Report};
use bulkhead_actors::signing::{Checked, Context, Proof, SIG_HEADER, seal_event};
use bulkhead_schemas::event::{Event, EventBody, hash_bytes};
use bulkhead_schemas::policy::Checkpoint;
use bulkhead_schemas::subjects;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use bulkhead_actors::audit::RawMsg;

use crate::bus::{Bus, BusError};
use crate::follow::{ordered_log, raw_of};

/// A message of the log as stored (None: it carries no stream metadata).
pub fn raw_msg(m: &async_nats::jetstream::Message) -> Option<RawMsg> {
    raw_of(m).ok().map(|raw| RawMsg::of(&raw))
}

/// The log's messages from `from` on, as stored, with the stream's last sequence and
/// message count when the read began.
pub async fn read_log(
    bus: &Bus,
    from: u64,
) -> Result<(futures::stream::BoxStream<'static, RawMsg>, u64, u64), BusError> {
    let err = |e: &dyn std::fmt::Display| BusError::Nats(format!("reading the event log: {e}"));
    let (consumer, info) = ordered_log(bus, "audit", from).await?;
    let (last, count) = (info.state.last_sequence, info.state.messages);
    let messages = consumer.messages().await.map_err(|e| err(&e))?;
    let raw = messages
        .filter_map(|m| async move {
            match m {
                Ok(m) => raw_msg(&m),
                Err(e) => {
                    warn!(error = %e, "event log read error");
                    None
                }
            }
        })
        .boxed();
    Ok((raw, last, count))
}

/// Every message stored now, in order (a backup, a verification).
pub async fn read_all(bus: &Bus) -> Result<(Vec<RawMsg>, u64), BusError> {
    let (mut raw, last, count) = read_log(bus, 1).await?;
    let mut out = Vec::new();
    if count == 0 {
        return Ok((out, last));
    }
    while let Some(m) = raw.next().await {
        let seq = m.seq;
        out.push(m);
        if seq >= last || out.len() as u64 >= count {
            break;
        }
    }
    Ok((out, last))
}

/// Every message stored now on `filter` (a few: the identities, the policy), in order.
pub async fn read_filtered(bus: &Bus, filter: &str) -> anyhow::Result<Vec<RawMsg>> {
    let Some(last) = bus.last_event(filter).await? else {
        return Ok(Vec::new());
    };
    let mut messages = crate::cli::log_consumer(bus, filter.to_owned(), DeliverPolicy::All).await?;
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let Some(raw) = raw_msg(&m?) else { continue };
        let seq = raw.seq;
        out.push(raw);
        if seq >= last.seq {
            break;
        }
    }
    Ok(out)
}

/// Replays `msgs` (and the stream's last sequence `last`) through an auditor trusting
/// `admins`, against `expected` checkpoints.
pub fn replay(admins: &[String], msgs: &[RawMsg], last: u64, expected: &[Checkpoint]) -> Report {
    let mut a = Auditor::new(admins);
    for cp in expected {
        a.expect(cp.clone());
    }
    for m in msgs {
        a.read(m.raw());
    }
    a.finish(last)
}

/// A checkpoint exported to a file: the checkpoint event as stored, with its proof, so it
/// can be checked with nothing but the writer's public key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// Where the checkpoint event itself is stored.
    pub seq: u64,
    pub event: String,
    pub proof: String,
}

impl CheckpointFile {
    /// The checkpoint it holds, once its signature verifies with the key its event names;
    /// with that key.
    pub fn open(&self) -> anyhow::Result<(Checkpoint, String)> {
        let ev = Event::parse(self.event.as_bytes())?;
        let EventBody::Checkpoint(cp) = ev.body else {
            anyhow::bail!("not a checkpoint event");
        };
        let proof = Proof::decode(&self.proof)?;
        Checked::new(Context::Log)
            .verify(&ev.actor.key, &hash_bytes(self.event.as_bytes()), &proof)
            .map_err(|e| anyhow::anyhow!("the checkpoint's signature: {e}"))?;
        Ok((cp, ev.actor.key))
    }
}

/// The latest checkpoint in the log, as a file.
pub async fn latest_checkpoint(bus: &Bus) -> anyhow::Result<Option<CheckpointFile>> {
    let Some((payload, seq, proof)) = bus.last_message_signed(subjects::EVT_CHECKPOINTS).await?
    else {
        return Ok(None);
    };
    Ok(Some(CheckpointFile {
        seq,
        event: String::from_utf8(payload.to_vec())?,
        proof: proof.unwrap_or_default(),
    }))
}

/// How often the query API checkpoints the log.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointEvery {
    pub interval: Duration,
    /// Or after this many new messages, whichever comes first.
    pub messages: u64,
}

impl Default for CheckpointEvery {
    fn default() -> Self {
        CheckpointEvery {
            interval: Duration::from_secs(60),
            messages: 10_000,
        }
    }
}

/// How many chunks of the follower's messages the auditor may be behind before the
/// follower drops some (it then reads them from the log itself).
pub const TEE_CHUNKS: usize = 16;

/// The query API's auditor: reads the log as stored, keeps its latest report for
/// `bulkhead.api.admin.audit.status`, and writes a signed checkpoint when the log has
/// grown (every `every.interval`, or every `every.messages`). Its own checkpoints alone do
/// not make it write another.
///
/// It reads what the API's follower reads, handed on through `tee` (one delivery of the log
/// to the API, not two); what came before the follower's first message, and what the tee
/// dropped while it was behind, it reads from the log itself, from where it is to where the
/// tee goes on. Every message is checked here again, by an auditor of its own, from the
/// log's first message. `followed_from` is the follower's first sequence: what comes
/// before it is read at once, whether or not the log grows.
pub async fn checkpointer(
    bus: Bus,
    every: CheckpointEvery,
    status: Arc<Mutex<Report>>,
    mut tee: mpsc::Receiver<Vec<RawMsg>>,
    followed_from: u64,
) -> anyhow::Result<()> {
    let identity = bus.identity()?;
    let auditor = Auditor::new(&identity.creds.admins);
    let name = identity.creds.name.clone();
    let mut cp = Checkpointer {
        bus,
        name,
        every,
        status,
        auditor,
        new_since: 0,
    };
    cp.fill(followed_from).await;
    let mut tick = tokio::time::interval(every.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            chunk = tee.recv() => {
                let Some(chunk) = chunk else { anyhow::bail!("the log's follower ended") };
                let Some(first) = chunk.first().map(|m| m.seq) else { continue };
                cp.fill(first).await;
                cp.take(&chunk);
                if cp.new_since < every.messages {
                    continue;
                }
            }
            _ = tick.tick() => {
                if cp.new_since == 0 {
                    continue;
                }
            }
        }
        cp.write().await;
    }
}

/// The query API's auditor and what it has read since its last checkpoint.
struct Checkpointer {
    bus: Bus,
    name: String,
    every: CheckpointEvery,
    status: Arc<Mutex<Report>>,
    auditor: Auditor,
    /// Messages read since the last checkpoint written (its own checkpoints not counted).
    new_since: u64,
}

impl Checkpointer {
    /// The sequence it reads next.
    fn next_seq(&self) -> u64 {
        self.auditor.running().seq + 1
    }

    /// Reads `msgs`, skipping those it has read already (the tee and its own reads of the
    /// log overlap), and updates the report.
    fn take(&mut self, msgs: &[RawMsg]) {
        for m in msgs {
            if m.seq < self.next_seq() {
                continue;
            }
            self.auditor.read(m.raw());
            if !m.subject.ends_with(".checkpoint") {
                self.new_since += 1;
            }
        }
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = self.auditor.report();
    }

    /// Reads the log itself from where it is up to `before` (the tee's next message), if
    /// it is not there yet, checkpointing on the way as it would from the tee; a read that
    /// fails is tried again from where it stopped (going on past the hole would report a
    /// gap the log does not have).
    async fn fill(&mut self, before: u64) {
        while self.next_seq() < before {
            let from = self.next_seq();
            info!(from, before, "the auditor reads these from the log itself");
            if let Err(e) = self.fill_once(before).await {
                warn!(error = %e, from = self.next_seq(), "reading the log for the auditor; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn fill_once(&mut self, before: u64) -> anyhow::Result<()> {
        let (raw, _, _) = read_log(&self.bus, self.next_seq()).await?;
        let mut chunks = raw.ready_chunks(1024);
        while self.next_seq() < before {
            let Some(chunk) = chunks.next().await else {
                anyhow::bail!("the log's consumer ended")
            };
            self.take(&chunk);
            if self.new_since >= self.every.messages {
                self.write().await;
            }
        }
        Ok(())
    }

    /// Writes a checkpoint of the log as read so far.
    async fn write(&mut self) {
        let cp = self.auditor.running().checkpoint();
        match write_checkpoint(&self.bus, &self.name, &cp).await {
            Ok(()) => {
                info!(seq = cp.seq, messages = cp.messages, "checkpoint written");
                self.new_since = 0;
            }
            Err(e) => warn!(error = %e, "could not write a checkpoint; will retry"),
        }
    }
}

async fn write_checkpoint(bus: &Bus, name: &str, cp: &Checkpoint) -> anyhow::Result<()> {
    let signer = &bus.identity()?.signer;
    let mut ev = Event::new(
        &format!("api/{name}"),
        &format!("audit/{name}"),
        None,
        EventBody::Checkpoint(cp.clone()),
    );
    let (payload, proof) = seal_event(signer, &mut ev);
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, proof.encode().as_str());
    h.insert(
        "Nats-Msg-Id",
        format!("checkpoint-{name}-{}", cp.seq).as_str(),
    );
    bus.publish_stored(
        subjects::sys_event("audit", name, "checkpoint"),
        h,
        Bytes::from(payload),
    )
    .await
    .map_err(|f| anyhow::anyhow!("{f}"))?;
    Ok(())
}
