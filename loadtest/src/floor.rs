//! `server-floor`: what nats-server alone spends on a burst's placements. Each placement's
//! messages are stored and delivered as bulkhead stores and delivers them in a 100k burst
//! (bin-packed), with nothing decided, signed or checked on the client's side: commands
//! published in atomic batches and read by a lane (a durable pull consumer, each command
//! acknowledged); `accepted` and `scheduled` in atomic batches of 1,000, the first of each
//! workload carrying the expected last subject sequence; a round's start ops to its node
//! in messages of 256 (a stream of limits, the node's durable push consumer, each
//! acknowledged); the node's `started` in one atomic batch a message, each expecting the
//! `scheduled` before it; three readers of the whole log (ordered pull consumers: the
//! scheduler, the failover, the query API) and a subscriber to the tenants' feed (the
//! stream's republish). Every event carries a `Bulkhead-Sig` of a batch of 1,000's size, a
//! `traceparent` and a `Nats-Msg-Id`. Left out: heartbeats, the command stream's purge,
//! snapshots, the scheduler's passing by of its own events (the server delivers them all
//! the same).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull, push};
use async_nats::jetstream::stream;
use bulkhead::bus::{Bus, MAX_BATCH, OPS_PER_MESSAGE, expect_last_subject_seq};
use bulkhead::natsd::Sync;
use bulkhead_actors::signing::SIG_HEADER;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use crate::procfs;
use crate::scratch;

#[derive(clap::Args)]
pub struct Args {
    /// Placements replayed.
    #[arg(long, default_value_t = 100_000)]
    pub workloads: usize,
    /// Bytes of an event's body (a signed `accepted` with the load test's spec is about 600).
    #[arg(long, default_value_t = EVENT_BYTES)]
    pub event_bytes: usize,
    /// Bytes of a `Bulkhead-Sig` header's value (a batch of 1,000's: a signature and a
    /// Merkle path of ten levels).
    #[arg(long, default_value_t = SIG_BYTES)]
    pub sig_bytes: usize,
    /// Readers of the whole log (bulkhead: the scheduler, the failover, the query API).
    #[arg(long, default_value_t = READERS)]
    pub readers: usize,
    /// No subscriber to the tenants' feed (the stream still republishes).
    #[arg(long)]
    pub no_feed: bool,
    /// A design not built: `accepted` and `scheduled` as one event (two a placement).
    #[arg(long)]
    pub merged: bool,
}

/// bulkhead's shapes: an event's body, a batch of 1,000's proof, the log's readers.
const EVENT_BYTES: usize = 600;
const SIG_BYTES: usize = 522;
const READERS: usize = 3;
/// Bytes of one start op (a spec and a chain head).
const OP_BYTES: usize = 400;

impl Args {
    /// A burst of `workloads` as bulkhead sends its messages.
    pub fn bulkhead(workloads: usize) -> Args {
        Args {
            workloads,
            event_bytes: EVENT_BYTES,
            sig_bytes: SIG_BYTES,
            readers: READERS,
            no_feed: false,
            merged: false,
        }
    }
}

/// What the replay came to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Floor {
    pub placements_per_s: f64,
    /// CPU a placement, µs: nats-server, and this process (the replay's clients).
    pub server_us: f64,
    pub client_us: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "\n## server floor: {} placements' messages replayed, no bulkhead logic, sync_interval: always; {} readers, {}, {} events a placement",
        args.workloads,
        args.readers,
        if args.no_feed {
            "no feed subscriber"
        } else {
            "a feed subscriber"
        },
        events(&args),
    );
    let f = replay(&args, Sync::Always).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "server floor: {:.0} placements/s; CPU a placement {:.0} µs in nats-server, {:.0} µs in the replay's clients: nats-server alone allows at most {:.0} placements/s on {cores} cores",
        f.placements_per_s,
        f.server_us,
        f.client_us,
        cores as f64 * 1e6 / f.server_us.max(1e-3)
    );
    Ok(())
}

/// Events a placement stores: `accepted`, `scheduled`, `started` (or the first two as one).
fn events(args: &Args) -> u64 {
    if args.merged { 2 } else { 3 }
}

/// A placement's events and op as the replay sends them.
struct Shapes {
    event: Bytes,
    sig: String,
    op: Bytes,
}

/// Replays `args.workloads` placements' messages on a server of their own, syncing as `sync`
/// says (as the run it stands beside).
pub async fn replay(args: &Args, sync: Sync) -> anyhow::Result<Floor> {
    let n = args.workloads;
    anyhow::ensure!(n > 0, "nothing to replay");
    let dir = tempfile::tempdir()?;
    let server = scratch::server_syncing(dir.path(), sync)?;
    let bus = Bus::connect(&server.url, "floor").await?;
    streams(&bus).await?;
    let shapes = Arc::new(Shapes {
        event: Bytes::from(vec![b'e'; args.event_bytes]),
        sig: "s".repeat(args.sig_bytes),
        op: Bytes::from(vec![b'o'; OP_BYTES * OPS_PER_MESSAGE]),
    });

    // The readers and the feed's subscriber count what they are delivered.
    let read = Arc::new(AtomicU64::new(0));
    let evt = bus.js.get_stream("FLOOR_EVT").await?;
    let mut readers = Vec::new();
    for r in 0..args.readers {
        let consumer = evt
            .create_consumer(pull::OrderedConfig {
                name: Some(format!("reader-{r}")),
                filter_subject: "floor.evt.>".into(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut msgs = consumer.messages().await?;
        let read = read.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = msgs.next().await {
                read.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let fed = Arc::new(AtomicU64::new(0));
    if !args.no_feed {
        let mut feed = bus.client.subscribe("floor.out.*.wl.*.*").await?;
        let f = fed.clone();
        tokio::spawn(async move {
            while feed.next().await.is_some() {
                f.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let node = tokio::spawn(node(bus.clone(), shapes.clone()));

    let pid = server.pid().to_string();
    let cpu0 = (procfs::cpu_secs("self"), procfs::cpu_secs(&pid));
    let t0 = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(MAX_BATCH) {
        let msgs: Vec<_> = chunk
            .iter()
            .map(|i| {
                let id = format!("burst-{i}");
                let spec = crate::burst::spec(&id);
                (
                    "floor.cmd.t.submit".to_owned(),
                    HeaderMap::new(),
                    Bytes::from(spec),
                )
            })
            .collect();
        publish(&bus, &msgs).await?;
    }
    schedule(&bus, n, &shapes, args.merged).await?;
    let want = events(args) * n as u64;
    let fed_want = if args.no_feed { 0 } else { want };
    while read.load(Ordering::Relaxed) < args.readers as u64 * want
        || fed.load(Ordering::Relaxed) < fed_want
    {
        if node.is_finished() {
            return match node.await? {
                Err(e) => Err(e.context("the replay's node")),
                Ok(()) => Err(anyhow::anyhow!("the replay's node ended")),
            };
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "not all delivered in 10 minutes: {} read, {} fed",
            read.load(Ordering::Relaxed),
            fed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (
        procfs::cpu_secs("self") - cpu0.0,
        procfs::cpu_secs(&pid) - cpu0.1,
    );
    node.abort();
    for r in readers {
        r.abort();
    }
    Ok(Floor {
        placements_per_s: n as f64 / secs,
        server_us: cpu.1 * 1e6 / n as f64,
        client_us: cpu.0 * 1e6 / n as f64,
    })
}

/// The streams as bulkhead makes them: commands and ops of limits, the log taking atomic
/// batches and republishing its workload events to the tenants' feed.
async fn streams(bus: &Bus) -> anyhow::Result<()> {
    let file = |name: &str, subject: &str| stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(600),
        allow_atomic_publish: true,
        ..Default::default()
    };
    bus.js
        .create_stream(file("FLOOR_CMD", "floor.cmd.>"))
        .await?;
    bus.js
        .create_stream(file("FLOOR_OPS", "floor.node.*.ops"))
        .await?;
    bus.js
        .create_stream(stream::Config {
            allow_direct: true,
            deny_delete: true,
            deny_purge: true,
            republish: Some(stream::Republish {
                source: "floor.evt.*.wl.>".into(),
                destination: "floor.out.{{wildcard(1)}}.wl.>".into(),
                headers_only: false,
            }),
            ..file("FLOOR_EVT", "floor.evt.>")
        })
        .await?;
    Ok(())
}

/// The scheduler's side: rounds of up to 1,000 commands read from the lane and
/// acknowledged, their `accepted` and `scheduled` appended (two atomic batches at once),
/// then the round's start ops sent to its node.
async fn schedule(bus: &Bus, n: usize, shapes: &Shapes, merged: bool) -> anyhow::Result<()> {
    let lane = bus
        .js
        .get_stream("FLOOR_CMD")
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("lane".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(5),
            ..Default::default()
        })
        .await?;
    let mut commands = lane.stream().max_messages_per_batch(200).messages().await?;
    let mut placed = 0;
    let mut round = 0usize;
    while placed < n {
        let mut ids = Vec::with_capacity(MAX_BATCH);
        while ids.len() < MAX_BATCH.min(n - placed) {
            let m = commands
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("the lane ended"))?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            ids.push(format!("burst-{}", placed + ids.len()));
        }
        // `accepted` then `scheduled` of each workload, in batches of 1,000 at once.
        let mut msgs = Vec::with_capacity(2 * ids.len());
        for id in &ids {
            let mut h = event_headers(shapes, &format!("{id}-a"));
            expect_last_subject_seq(&mut h, 0, &events_of(id));
            if merged {
                let subject = format!("floor.evt.t.wl.{id}.scheduled");
                msgs.push((subject, h, shapes.event.clone()));
                continue;
            }
            msgs.push((
                format!("floor.evt.t.wl.{id}.accepted"),
                h,
                shapes.event.clone(),
            ));
            let h = event_headers(shapes, &format!("{id}-s"));
            msgs.push((
                format!("floor.evt.t.wl.{id}.scheduled"),
                h,
                shapes.event.clone(),
            ));
        }
        let per = if merged { 1 } else { 2 };
        let appends: FuturesOrdered<_> = msgs.chunks(MAX_BATCH).map(|b| publish(bus, b)).collect();
        let firsts: Vec<u64> = appends
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        // Where each workload's `scheduled` was stored (after its `accepted`): the op names it.
        let scheduled_at = |k: usize| {
            let last = per * k + per - 1;
            firsts[last / MAX_BATCH] + (last % MAX_BATCH) as u64
        };
        let ops: Vec<_> = ids
            .chunks(OPS_PER_MESSAGE)
            .enumerate()
            .map(|(c, part)| {
                let heads: Vec<String> = part
                    .iter()
                    .enumerate()
                    .map(|(i, id)| format!("{id}={}", scheduled_at(c * OPS_PER_MESSAGE + i)))
                    .collect();
                let mut h = HeaderMap::new();
                h.insert(SIG_HEADER, shapes.sig.as_str());
                h.insert("Floor-Heads", heads.join(",").as_str());
                (format!("floor.node.n{round}.ops"), h, shapes.op.clone())
            })
            .collect();
        publish(bus, &ops).await?;
        placed += ids.len();
        round += 1;
    }
    Ok(())
}

/// The nodes' side, one consumer for the replay's nodes (a round's ops go to one node when
/// bin-packed): each ops message acknowledged and its workloads' `started` appended as one
/// atomic batch, each expecting its `scheduled`.
async fn node(bus: Bus, shapes: Arc<Shapes>) -> anyhow::Result<()> {
    let consumer = bus
        .js
        .get_stream("FLOOR_OPS")
        .await?
        .create_consumer(push::Config {
            durable_name: Some("nodes".into()),
            deliver_subject: "floor.deliver".into(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await?;
    let mut ops = consumer.messages().await?;
    while let Some(Ok(m)) = ops.next().await {
        let heads = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Floor-Heads"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let msgs = heads
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(id, seq)| {
                let mut h = event_headers(&shapes, &format!("{id}-r"));
                expect_last_subject_seq(&mut h, seq.parse()?, &events_of(id));
                let subject = format!("floor.evt.t.wl.{id}.started");
                Ok((subject, h, shapes.event.clone()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        publish(&bus, &msgs).await?;
    }
    Ok(())
}

/// Every event of workload `id` (a filter).
fn events_of(id: &str) -> String {
    format!("floor.evt.t.wl.{id}.*")
}

/// An event's headers: its proof, its trace, its id.
fn event_headers(shapes: &Shapes, id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, shapes.sig.as_str());
    h.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    h.insert("Nats-Msg-Id", id);
    h
}

async fn publish(bus: &Bus, msgs: &[(String, HeaderMap, Bytes)]) -> anyhow::Result<u64> {
    bus.publish_atomic(msgs)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a real nats-server: a replay ends only once every reader and the feed were
    /// delivered each placement's events, and each node's `started` stored after the
    /// `scheduled` its op named (a wrong sequence fails the node's batch, and the replay).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_stores_and_delivers_every_placement_s_messages_in_either_shape() {
        // A round and a half: the second batch of a round's events, and a short round.
        for merged in [false, true] {
            let args = Args {
                merged,
                ..Args::bulkhead(1500)
            };
            let f = replay(&args, Sync::Always).await.unwrap();
            assert!(f.placements_per_s > 0.0 && f.server_us > 0.0, "{f:?}");
        }
    }
}
