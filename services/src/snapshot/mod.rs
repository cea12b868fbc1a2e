//! Snapshots of a service's projection, so that a restart replays only the log's tail.
//!
//! A snapshot is an entry of the object store `bulkhead-snapshots` named after the service
//! (`scheduler`, `failover`, `api`): a header line `{"service", "key", "sig", "encoding",
//! "size", "workloads"}` and a body, the JSON of a [`Snapshot`] compressed with zstd (`size`
//! is its length decompressed and `workloads` how many it holds: unsigned, they only size
//! a buffer and a list).
//! `sig` is the writer's signature of the body's SHA-256 (context `bulkhead/2 snapshot`);
//! a reader takes only a snapshot signed by its own key. The body records the log sequence
//! it covers, `seq`, where a checkpoint event is stored, and the running hash there; it
//! carries the node, scan and identity messages through `seq` as stored, and the workloads.
//!
//! At load ([`load`]), before anything in it is used: the signature; every message it
//! carries verifies again from the admins' keys (so identities and policy never rest on the
//! snapshot); the last is the checkpoint at `seq`, and the log holds that very message
//! there; the log's messages from the checkpoint's own sequence to `seq`, hashed on from
//! the checkpoint's running hash, give the snapshot's. Anything else and the snapshot is
//! ignored (with a warning saying why): the service replays the whole log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{ActorRef, RpcReplyPort};

use bulkhead_actors::audit::{RawMsg, RunningHash};
use bulkhead_actors::ports::log::{Anchor, Batch};
use bulkhead_actors::projection::Workloads;
use bulkhead_actors::signing::{Signer, verify};
use bulkhead_actors::verify::{Family, Verifier};
use bulkhead_schemas::event::{EventBody, hash_bytes};
use bulkhead_schemas::policy::Checkpoint;
use bulkhead_schemas::subjects;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::bus::Bus;
use crate::follow::{Follower, Resume, Tee, ordered_log, raw_of};
use crate::tasks::AbortOnDrop;
use bulkhead_actors::projection::Projection;

mod seed;

const CONTEXT: &[u8] = b"bulkhead/2 snapshot\n";

/// What a snapshot holds (read back by [`seed`]).
#[derive(Serialize)]
pub struct Snapshot {
    pub service: String,
    /// The log through this sequence, where the checkpoint it is anchored on is stored.
    pub seq: u64,
    /// The sequence that checkpoint covers.
    pub covers: u64,
    /// The running hash through `seq`.
    pub running: RunningHash,
    /// The node, scan and identity messages through `seq`, as stored.
    pub raw: Arc<Vec<RawMsg>>,
    pub workloads: Workloads,
}

impl Snapshot {
    /// A snapshot of `workloads` at `anchor`.
    pub fn at(service: &str, anchor: &Anchor, workloads: Workloads) -> Snapshot {
        Snapshot {
            service: service.to_owned(),
            seq: anchor.seq,
            covers: anchor.covers,
            running: anchor.running,
            raw: anchor.raw.clone(),
            workloads,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    service: String,
    key: String,
    sig: String,
    /// `zstd`: the body is the JSON compressed (absent in an older, plain JSON one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<String>,
    /// The body's length once decompressed: a hint that sizes the buffer it is
    /// decompressed into (at most [`MAX_HINT_RATIO`] times the stored body), nothing more.
    /// A buffer grown by doubling instead touches twice the memory, and fresh memory is
    /// most of what loading a snapshot costs (the kernel zeroes every page first touched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// How many workloads the body holds: a hint that sizes their list (never past the
    /// decompressed body's own length in bytes), nothing more ([`seed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workloads: Option<u64>,
}

const ZSTD: &str = "zstd";

/// The compression level: zstd's 1, its fastest but for the negative levels (a snapshot is
/// written beside the work it snapshots). Compressed with the reference library (the
/// `zstd` crate): ruzstd's pure-Rust compressor at its fastest took about 80 % of a
/// seal's CPU, a second of a core for 97,000 workloads.
const LEVEL: i32 = 1;

/// The most a body may grow to when it is decompressed (a bomb stops here).
const MAX_BODY: u64 = 8 << 30;

/// The header's size hint is believed up to this many times the stored body's length
/// (a snapshot's JSON compresses about tenfold); past it the buffer grows as it fills.
const MAX_HINT_RATIO: u64 = 64;

/// How much JSON the seal gathers before handing it to the compressor.
const SEAL_BUFFER: usize = 64 << 10;

/// The snapshot as stored: the signed header line, then the body (its JSON, compressed).
/// The JSON is compressed as it is written, never held whole: held (some 500 MB for a
/// million workloads), its buffer's fresh pages and its copies as it doubled cost about a
/// fifth of a seal's CPU (C1M runs, `loadtest/RESULTS.md`).
pub fn seal(signer: &Signer, snapshot: &Snapshot) -> Result<Vec<u8>, serde_json::Error> {
    let encoder =
        zstd::stream::write::Encoder::new(Vec::new(), LEVEL).map_err(serde_json::Error::io)?;
    let mut json = std::io::BufWriter::with_capacity(
        SEAL_BUFFER,
        Counted {
            inner: encoder,
            bytes: 0,
        },
    );
    serde_json::to_writer(&mut json, snapshot)?;
    let counted = json
        .into_inner()
        .map_err(|e| serde_json::Error::io(e.into_error()))?;
    let json_len = counted.bytes;
    let body = counted.inner.finish().map_err(serde_json::Error::io)?;
    let sig = signer.sign(CONTEXT, &hash_bytes(&body));
    let header = Header {
        service: snapshot.service.clone(),
        key: signer.public_key().to_owned(),
        sig: hex::encode(sig),
        encoding: Some(ZSTD.into()),
        size: Some(json_len),
        workloads: Some(snapshot.workloads.len() as u64),
    };
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// A writer that counts the bytes written through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The header and body of a stored snapshot.
fn split(bytes: &[u8]) -> Result<(Header, &[u8]), String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header: Header =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("its header: {e}"))?;
    Ok((header, &bytes[nl + 1..]))
}

/// The snapshot a body holds, decompressed as its header says (at most [`MAX_BODY`]).
fn decode(header: &Header, body: &[u8]) -> Result<Snapshot, String> {
    let snap = match header.encoding.as_deref() {
        None => seed::decode(body, header.workloads),
        Some(ZSTD) => {
            use std::io::Read;
            let mut json = Vec::new();
            let hint = header.size.unwrap_or(0).min(
                (body.len() as u64)
                    .saturating_mul(MAX_HINT_RATIO)
                    .min(MAX_BODY),
            );
            // A hint the allocator refuses sizes nothing: the buffer grows as it fills.
            let _ = json.try_reserve_exact(usize::try_from(hint).unwrap_or(0));
            zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    d.take(MAX_BODY + 1)
                        .read_to_end(&mut json)
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| format!("its body does not decompress: {e}"))?;
            if json.len() as u64 > MAX_BODY {
                return Err(format!("its body grows past {MAX_BODY} bytes"));
            }
            seed::decode(&json, header.workloads)
        }
        Some(other) => return Err(format!("its body is encoded as {other:?}")),
    };
    snap.map_err(|e| format!("its body: {e}"))
}

/// What a stored snapshot says, unchecked (for tests and inspection: [`open`] checks).
pub fn unchecked(bytes: &[u8]) -> Result<Snapshot, String> {
    let (header, body) = split(bytes)?;
    decode(&header, body)
}

/// The snapshot in `bytes`, if `key` signed it for `service`; or why not.
pub fn open(bytes: &[u8], service: &str, key: &str) -> Result<Snapshot, String> {
    let (header, body) = split(bytes)?;
    if header.service != service {
        return Err(format!("it is the {}'s", header.service));
    }
    if header.key != key {
        return Err(format!(
            "it is signed by {}, not by this service's key",
            header.key
        ));
    }
    let sig = hex::decode(&header.sig).map_err(|_| "its signature is not hex".to_owned())?;
    verify(key, CONTEXT, &hash_bytes(body), &sig).map_err(|e| format!("its signature: {e}"))?;
    let snap = decode(&header, body)?;
    if snap.service != service {
        return Err("its body names another service".into());
    }
    Ok(snap)
}

/// A snapshot that passed every check: what the service starts from.
pub struct Loaded {
    /// The log through this sequence; the tail starts after it.
    pub seq: u64,
    pub workloads: Workloads,
    /// The node, scan and identity events it carried, verified again.
    pub batch: Batch,
    /// Where the service's follower goes on from.
    pub resume: Resume,
}

/// Stores `bytes` as `service`'s snapshot.
pub async fn save(bus: &Bus, service: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    let store = bus.js.get_object_store(subjects::SNAPSHOTS_BUCKET).await?;
    store.put(service, &mut std::io::Cursor::new(bytes)).await?;
    Ok(())
}

/// `service`'s snapshot, once every check passed; None (with the reason logged) when there
/// is none or it is ignored.
pub async fn load(bus: &Bus, service: &str) -> Option<Loaded> {
    let started = Instant::now();
    let bytes = match read(bus, service).await {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            warn!(error = %e, "could not read the snapshot; replaying the whole log");
            return None;
        }
    };
    let size = bytes.len();
    let checked = match bus.identity() {
        Ok(id) => {
            check(
                bus,
                &bytes,
                service,
                id.signer.public_key(),
                &id.creds.admins,
            )
            .await
        }
        Err(e) => Err(e.to_string()),
    };
    match checked {
        Ok(loaded) => {
            info!(
                seq = loaded.seq,
                workloads = loaded.workloads.len(),
                bytes = size,
                ms = started.elapsed().as_millis() as u64,
                "snapshot loaded and checked"
            );
            Some(loaded)
        }
        Err(why) => {
            warn!(reason = %why, "snapshot ignored; replaying the whole log");
            None
        }
    }
}

/// How long reading a snapshot may take: a read that overlaps the next write loses the
/// chunks it reads (the write purges them) and would wait for ever.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn read(bus: &Bus, service: &str) -> anyhow::Result<Option<Vec<u8>>> {
    tokio::time::timeout(READ_TIMEOUT, read_now(bus, service))
        .await
        .map_err(|_| anyhow::anyhow!("it took over {} s", READ_TIMEOUT.as_secs()))?
}

async fn read_now(bus: &Bus, service: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let Ok(store) = bus.js.get_object_store(subjects::SNAPSHOTS_BUCKET).await else {
        return Ok(None);
    };
    let mut obj = match store.get(service).await {
        Ok(o) => o,
        Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    obj.read_to_end(&mut bytes).await?;
    Ok(Some(bytes))
}

/// Every check of a snapshot (see the module's head).
async fn check(
    bus: &Bus,
    bytes: &[u8],
    service: &str,
    key: &str,
    admins: &[String],
) -> Result<Loaded, String> {
    let snap = open(bytes, service, key)?;
    let (verifier, batch, checkpoint, cp) = replay(&snap, admins)?;
    // The log holds that very checkpoint at `seq`.
    let stream = bus
        .js
        .get_stream(subjects::EVT_STREAM)
        .await
        .map_err(|e| format!("the log: {e}"))?;
    let stored = stream
        .direct_get(snap.seq)
        .await
        .map_err(|e| format!("the log has no message at {}: {e}", snap.seq))?;
    let proof = stored
        .headers
        .get(bulkhead_actors::signing::SIG_HEADER)
        .map(|v| v.as_str());
    if stored.subject.as_str() != checkpoint.subject
        || stored.payload.as_ref() != checkpoint.payload.as_bytes()
        || proof != checkpoint.proof.as_deref()
    {
        return Err(format!(
            "the log's message at {} is not the checkpoint it carries",
            snap.seq
        ));
    }
    // The log from the checkpoint's cover to `seq`, hashed on, gives the snapshot's hash.
    let running = hash_on(bus, &cp, snap.seq).await?;
    if running != snap.running {
        return Err(format!(
            "the log's running hash through {} is not the snapshot's",
            snap.seq
        ));
    }
    Ok(Loaded {
        seq: snap.seq,
        workloads: snap.workloads,
        batch,
        resume: Resume {
            verifier,
            running: snap.running,
            raw: snap.raw,
            own: Default::default(),
        },
    })
}

/// The messages a snapshot carries, verified again in order from the admins' keys: the
/// verifier they leave, the batch of their events, and the checkpoint (the last one, at
/// the snapshot's `seq`) as stored and as it reads.
fn replay(
    snap: &Snapshot,
    admins: &[String],
) -> Result<(Verifier, Batch, RawMsg, Checkpoint), String> {
    let mut verifier = Verifier::new(admins);
    let mut batch = Batch::default();
    let mut last = 0;
    for m in snap.raw.iter() {
        if m.seq <= last || m.seq > snap.seq {
            return Err(format!("its messages are out of order at {}", m.seq));
        }
        last = m.seq;
        match verifier.check(m.raw()) {
            Ok((Family::Workload, _)) => {
                return Err(format!("it carries a workload event at {}", m.seq));
            }
            Ok((Family::Node, s)) => batch.nodes.push(s),
            Ok((Family::Scan, s)) => batch.scans.push((s, m.stored_ms)),
            Ok((Family::Sys, s)) => batch.identities.push(s),
            Err(a) => return Err(format!("a message it carries does not verify: {a:?}")),
        }
    }
    let checkpoint = snap.raw.last().cloned().ok_or("it carries no checkpoint")?;
    let cp = match batch.identities.last() {
        Some(s) if s.seq == snap.seq => match &s.event.body {
            EventBody::Checkpoint(cp) => cp.clone(),
            _ => return Err(format!("its message at {} is no checkpoint", snap.seq)),
        },
        _ => return Err(format!("it carries no checkpoint at {}", snap.seq)),
    };
    if cp.seq != snap.covers {
        return Err("its checkpoint covers another sequence".into());
    }
    if cp.seq >= snap.seq {
        return Err("its checkpoint covers its own place or later".into());
    }
    Ok((verifier, batch, checkpoint, cp))
}

/// The running hash through `to`, from the checkpoint's (through `cp.seq`, before `to`)
/// and the log's messages after it.
async fn hash_on(bus: &Bus, cp: &Checkpoint, to: u64) -> Result<RunningHash, String> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&cp.hash, &mut hash).map_err(|_| "its checkpoint's hash".to_owned())?;
    let mut running = RunningHash {
        seq: cp.seq,
        hash,
        messages: cp.messages,
    };
    let (consumer, _) = ordered_log(bus, "snapshot", cp.seq + 1)
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while running.seq < to {
        let m = match messages.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(format!("reading the log: {e}")),
            None => return Err("the log ended early".into()),
        };
        let raw = raw_of(&m).map_err(|a| a.reason)?;
        running.add(raw.seq, raw.subject, raw.payload, raw.proof);
    }
    Ok(running)
}

/// When a service writes its snapshot: at a checkpoint of the log, once `messages`
/// came since the last, or `interval` passed while the log grew; never sooner than
/// `min_interval` after the last (a burst would otherwise write one every few seconds), nor
/// sooner than `spacing` times the CPU time the last took to seal. The last rule keeps a
/// large projection from sealing snapshots back to back (at most a `spacing`th of a core
/// each service): in a C1M run three services each took 25–45 s to write one of
/// 200,000–480,000 workloads and began the next 35–45 s later, a third of the process's
/// CPU. It counts CPU time, not the time the write took: a seal runs at the lowest
/// priority, so on a busy machine it waits, and counting that wait as its cost held the
/// next snapshot back for minutes while a burst's tail grew past 190,000 messages.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotEvery {
    pub messages: u64,
    pub interval: Duration,
    pub min_interval: Duration,
    pub spacing: u32,
}

impl Default for SnapshotEvery {
    fn default() -> Self {
        SnapshotEvery {
            messages: 50_000,
            interval: Duration::from_secs(300),
            min_interval: Duration::from_secs(10),
            spacing: 10,
        }
    }
}

impl SnapshotEvery {
    /// Whether a snapshot at log sequence `seq` is due, `since` after the last one (at
    /// `last_seq`), which took `cost` of CPU time to seal.
    pub fn due(&self, seq: u64, last_seq: u64, since: Duration, cost: Duration) -> bool {
        let wait = self.min_interval.max(cost.saturating_mul(self.spacing));
        seq > last_seq
            && since >= wait
            && (seq >= last_seq.saturating_add(self.messages) || since >= self.interval)
    }
}

/// Hands every batch `follower` reads to `actor` (`logged`) and, at a checkpoint when one
/// is due, writes `service`'s snapshot of what the actor holds right after that batch
/// (asked with `snapshot`, sent behind the batch: the mailbox keeps the order).
pub fn forward<M: ractor::Message>(
    bus: &Bus,
    service: &'static str,
    every: SnapshotEvery,
    follower: Follower,
    actor: &ActorRef<M>,
    logged: fn(Batch) -> M,
    snapshot: fn(RpcReplyPort<Workloads>) -> M,
) -> AbortOnDrop {
    let (feed, ask) = (actor.clone(), actor.clone());
    forward_with(
        bus,
        service,
        every,
        follower,
        move |batch| feed.send_message(logged(batch)).is_ok(),
        move || {
            let (tx, rx) = ractor::concurrency::oneshot();
            ask.send_message(snapshot(tx.into())).ok().map(|_| rx)
        },
    )
}

/// Hands every batch `follower` reads to `apply` (false stops) and, at a checkpoint when a
/// snapshot is due, writes `service`'s snapshot of the workloads `ask` brings (asked right
/// after that batch was applied; `None` stops).
pub fn forward_with(
    bus: &Bus,
    service: &'static str,
    every: SnapshotEvery,
    follower: Follower,
    mut apply: impl FnMut(Batch) -> bool + Send + 'static,
    mut ask: impl FnMut() -> Option<ractor::concurrency::OneshotReceiver<Workloads>> + Send + 'static,
) -> AbortOnDrop {
    let mut snapshots = Snapshots {
        bus: bus.clone(),
        service,
        every,
        last_seq: follower.from_seq.saturating_sub(1),
        last_at: Instant::now(),
        writer: Arc::default(),
    };
    follower.forward(move |batch| {
        let anchor = batch.checkpoint.clone();
        if !apply(batch) {
            return false;
        }
        if let Some(anchor) = anchor
            && snapshots.due(&anchor)
        {
            let Some(rx) = ask() else {
                return false;
            };
            snapshots.write(anchor, rx);
        }
        true
    })
}

/// When a service last wrote its snapshot, and its writer.
struct Snapshots {
    bus: Bus,
    service: &'static str,
    every: SnapshotEvery,
    last_seq: u64,
    last_at: Instant,
    writer: Arc<Writer>,
}

/// The snapshot writer's state, shared with its task.
#[derive(Default)]
struct Writer {
    /// The CPU time the last one took to seal, in milliseconds.
    last_cpu_ms: AtomicU64,
    queue: std::sync::Mutex<Queue>,
}

/// Whether a snapshot is being written, and the one to write after it.
#[derive(Default)]
struct Queue {
    busy: bool,
    /// The latest snapshot that came due while another was written: it waits rather than
    /// being skipped, for a quiet log's last checkpoint may be the only one to come (only
    /// the latest waits; an older one is dropped).
    next: Option<(Anchor, ractor::concurrency::OneshotReceiver<Workloads>)>,
}

impl Writer {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Snapshots {
    /// Whether a snapshot at `anchor` is due: if so, it is counted as the last.
    fn due(&mut self, anchor: &Anchor) -> bool {
        let cost = Duration::from_millis(self.writer.last_cpu_ms.load(Ordering::SeqCst));
        let due = self
            .every
            .due(anchor.seq, self.last_seq, self.last_at.elapsed(), cost);
        if !due {
            return false;
        }
        self.last_seq = anchor.seq;
        self.last_at = Instant::now();
        true
    }

    /// Writes the snapshot of the workloads `rx` brings, in a task; after the one being
    /// written if there is one.
    fn write(&self, anchor: Anchor, rx: ractor::concurrency::OneshotReceiver<Workloads>) {
        {
            let mut queue = self.writer.queue();
            if queue.busy {
                queue.next = Some((anchor, rx));
                return;
            }
            queue.busy = true;
        }
        let (bus, service, writer) = (self.bus.clone(), self.service, self.writer.clone());
        tokio::spawn(async move {
            let mut job = Some((anchor, rx));
            while let Some((anchor, rx)) = job.take() {
                match write(&bus, service, &anchor, rx).await {
                    Ok(cpu) => {
                        let ms = cpu.as_millis().try_into().unwrap_or(u64::MAX);
                        writer.last_cpu_ms.store(ms, Ordering::SeqCst);
                    }
                    Err(e) => warn!(error = %e, "could not write a snapshot"),
                }
                let mut queue = writer.queue();
                job = queue.next.take();
                queue.busy = job.is_some();
            }
        });
    }
}

/// Writes the snapshot; returns the CPU time its sealing took.
async fn write(
    bus: &Bus,
    service: &'static str,
    anchor: &Anchor,
    workloads: ractor::concurrency::OneshotReceiver<Workloads>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let workloads = workloads
        .await
        .map_err(|_| anyhow::anyhow!("the {service} actor gave no workloads"))?;
    let count = workloads.len();
    let signer = bus.identity()?.signer.clone();
    let snap = Snapshot::at(service, anchor, workloads);
    let (bytes, cpu) = sealed_in_background(signer, snap).await?;
    let bytes = bytes?;
    let size = bytes.len();
    save(bus, service, bytes).await?;
    info!(
        service,
        seq = anchor.seq,
        workloads = count,
        bytes = size,
        ms = started.elapsed().as_millis() as u64,
        seal_cpu_ms = cpu.as_millis() as u64,
        "snapshot written"
    );
    Ok(cpu)
}

/// Seals `snap` in a thread of its own at the lowest CPU priority (nice 19), and drops it
/// there: on a busy machine placements go first and the snapshot waits. Three snapshots
/// of 100,000 workloads sealed at normal priority beside 1,000 submissions/s took the
/// submit→running p50 from about 70 ms to 904 ms (throughput load test). Also returns the
/// thread's CPU time: what the sealing cost, however long it waited.
async fn sealed_in_background(
    signer: Signer,
    snap: Snapshot,
) -> anyhow::Result<(Result<Vec<u8>, serde_json::Error>, Duration)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || {
            lowest_priority();
            let sealed = seal(&signer, &snap);
            drop(snap);
            let _ = tx.send((sealed, thread_cpu_time()));
        })?;
    Ok(rx.await?)
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::ThreadCPUTime);
    // The kernel's nanoseconds are under a second: `Duration::new` carries nothing.
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(t.tv_nsec).unwrap_or(0).min(999_999_999);
    Duration::new(secs, nanos)
}

/// Lowers the calling thread's CPU priority to the lowest (nice 19); on failure it stays.
fn lowest_priority() {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    if let Err(e) = set_current_thread_priority(ThreadPriority::Min) {
        warn!(error = ?e, "could not lower the snapshot thread's priority");
    }
}

/// A projection of the log (for a service that keeps a plain one): from `service`'s
/// snapshot and the tail when the snapshot passes its checks, else from the whole log;
/// and the follower to go on from there.
pub async fn projection(
    bus: &Bus,
    service: &str,
) -> Result<(Projection, Follower), crate::bus::BusError> {
    projection_teed(bus, service, None).await
}

/// [`projection`], its follower handing a copy of every message it reads to `tee`.
pub async fn projection_teed(
    bus: &Bus,
    service: &str,
    tee: Option<Tee>,
) -> Result<(Projection, Follower), crate::bus::BusError> {
    let started = Instant::now();
    let (projection, follower) = match load(bus, service).await {
        None => Follower::rebuild_teed(bus, tee).await?,
        Some(snap) => {
            let mut projection = Projection::default();
            projection.logged(snap.batch);
            projection.restore(snap.workloads, snap.seq);
            let mut follower = Follower::resume_teed(bus, snap.seq + 1, snap.resume, tee).await?;
            follower.catch_up(|batch| projection.logged(batch)).await;
            (projection, follower)
        }
    };
    info!(
        service,
        workloads = projection.len(),
        ms = started.elapsed().as_millis() as u64,
        "projection rebuilt"
    );
    Ok((projection, follower))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            service: "api".into(),
            seq: 7,
            covers: 5,
            running: RunningHash::default(),
            raw: Arc::default(),
            workloads: Vec::new(),
        }
    }

    /// The stored form of `body` under a header of `signer`'s, encoded as `encoding`.
    fn stored(signer: &Signer, body: &[u8], encoding: Option<&str>) -> Vec<u8> {
        let header = Header {
            service: "api".into(),
            key: signer.public_key().to_owned(),
            sig: hex::encode(signer.sign(CONTEXT, &hash_bytes(body))),
            encoding: encoding.map(str::to_owned),
            size: None,
            workloads: None,
        };
        let mut out = serde_json::to_vec(&header).unwrap();
        out.push(b'\n');
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_snapshot_waits_for_its_messages_or_interval_and_longer_after_a_costly_one() {
        let every = SnapshotEvery::default();
        let (s, quick) = (Duration::from_secs, Duration::from_millis(200));
        // 50,000 messages since the last, 10 s after it: due.
        assert!(every.due(150_000, 100_000, s(10), quick));
        // Fewer messages and before the interval: not yet; after it: due.
        assert!(!every.due(149_999, 100_000, s(299), quick));
        assert!(every.due(100_001, 100_000, s(300), quick));
        // Never sooner than the minimum, however many messages came.
        assert!(!every.due(900_000, 100_000, s(9), quick));
        // Nothing new in the log: never.
        assert!(!every.due(100_000, 100_000, s(3_000), quick));
        // The last took 40 s of CPU to seal: the next waits ten times as long.
        assert!(!every.due(900_000, 100_000, s(399), s(40)));
        assert!(every.due(900_000, 100_000, s(400), s(40)));
        // Spacing 0: the cost adds no wait.
        let eager = SnapshotEvery {
            spacing: 0,
            min_interval: s(0),
            ..every
        };
        assert!(eager.due(150_000, 100_000, s(0), s(40)));
        // No overflow at the edges.
        assert!(!every.due(u64::MAX, u64::MAX - 1, s(0), Duration::MAX));
    }

    #[test]
    fn a_sealed_snapshot_is_compressed_and_opens_for_its_signer_only() {
        let (signer, other) = (Signer::generate(), Signer::generate());
        let bytes = seal(&signer, &sample()).unwrap();
        let (header, body) = split(&bytes).unwrap();
        assert_eq!(header.encoding.as_deref(), Some(ZSTD));
        assert!(seed::decode(body, None).is_err(), "not plain");
        let snap = open(&bytes, "api", signer.public_key()).unwrap();
        assert_eq!((snap.seq, snap.covers), (7, 5));
        assert!(open(&bytes, "api", other.public_key()).is_err());
        assert!(open(&bytes, "scheduler", signer.public_key()).is_err());
    }

    #[test]
    fn a_snapshot_ruzstd_compressed_still_opens() {
        let signer = Signer::generate();
        let json = serde_json::to_vec(&sample()).unwrap();
        let body = ruzstd::encoding::compress_to_vec(
            &json[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let older = stored(&signer, &body, Some(ZSTD));
        let snap = open(&older, "api", signer.public_key()).unwrap();
        assert_eq!((snap.seq, snap.covers), (7, 5));
    }

    #[test]
    fn a_plain_json_snapshot_still_opens_and_an_unknown_encoding_does_not() {
        let signer = Signer::generate();
        let json = serde_json::to_vec(&sample()).unwrap();
        let plain = stored(&signer, &json, None);
        assert_eq!(open(&plain, "api", signer.public_key()).unwrap().seq, 7);
        let odd = stored(&signer, &json, Some("gzip"));
        let why = open(&odd, "api", signer.public_key()).err().unwrap();
        assert!(why.contains("encoded as \"gzip\""), "{why}");
    }

    #[test]
    fn the_size_hint_sizes_the_buffer_and_nothing_else() {
        let signer = Signer::generate();
        let bytes = seal(&signer, &sample()).unwrap();
        let (header, body) = split(&bytes).unwrap();
        let json = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(header.size, Some(json.len() as u64));
        // A hint that lies either way (it is not signed) still opens the same snapshot.
        for size in [None, Some(0), Some(1), Some(u64::MAX)] {
            let mut lying = serde_json::to_vec(&Header {
                size,
                ..split(&bytes).unwrap().0
            })
            .unwrap();
            lying.push(b'\n');
            lying.extend_from_slice(body);
            let snap = open(&lying, "api", signer.public_key()).unwrap();
            assert_eq!((snap.seq, snap.covers), (7, 5), "{size:?}");
        }
    }

    #[test]
    fn a_snapshot_larger_than_the_seal_s_buffer_opens_whole_and_in_order() {
        use bulkhead_actors::ports::log::Head;
        use bulkhead_actors::projection::Workload;
        let signer = Signer::generate();
        let mut snap = sample();
        snap.workloads = (0..3_000u64)
            .map(|i| {
                let head = Head {
                    seq: i,
                    hash: [i as u8; 32],
                };
                let w = Workload::rejected(i, head, &format!("reason number {i}"));
                (format!("t/w{i}"), Arc::new(w))
            })
            .collect();
        let json = serde_json::to_vec(&snap).unwrap();
        assert!(json.len() > 2 * SEAL_BUFFER, "{} bytes", json.len());
        let bytes = seal(&signer, &snap).unwrap();
        assert_eq!(split(&bytes).unwrap().0.size, Some(json.len() as u64));
        let opened = open(&bytes, "api", signer.public_key()).unwrap();
        assert_eq!(serde_json::to_vec(&opened).unwrap(), json);
    }

    #[test]
    fn a_body_that_does_not_decompress_is_refused_not_fatal() {
        let signer = Signer::generate();
        let junk = stored(&signer, b"not zstd at all", Some(ZSTD));
        let why = open(&junk, "api", signer.public_key()).err().unwrap();
        assert!(why.contains("does not decompress"), "{why}");
    }

    #[test]
    fn a_thread_s_cpu_time_counts_its_work_not_its_waiting() {
        let (slept, worked) = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            let slept = thread_cpu_time();
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(50) {
                std::hint::black_box(t.elapsed());
            }
            (slept, thread_cpu_time())
        })
        .join()
        .unwrap();
        assert!(slept < Duration::from_millis(100), "{slept:?} asleep");
        assert!(worked > slept, "{slept:?} then {worked:?}");
    }

    #[test]
    fn the_sealing_thread_runs_at_the_lowest_priority() {
        let nice = std::thread::spawn(|| {
            lowest_priority();
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            // After `pid (comm) `: state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split(' ').nth(16).unwrap().parse::<i32>().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(nice, 19);
    }
}
