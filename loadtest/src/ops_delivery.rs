//! `ops-delivery`: what it costs nats-server to deliver each node its own ops, for each way
//! considered (issue 18): a durable push consumer per node on a work queue (what bulkhead
//! did until every ack on it proved O(nodes)) or on a stream of limits (what it does), a
//! durable pull consumer per node, a stream that republishes each stored op to its
//! node's core subject (no consumer at all), and core NATS alone (no log: the floor). For
//! each: setup time, the server's memory and idle CPU with every node connected, and the
//! server's and the clients' CPU per thousand messages delivered, at `sync_interval:
//! always`. One account and no authorization for all: what differs is the server's work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bulkhead::bus::{Bus, MAX_BATCH};
use bulkhead::natsd;
use bytes::Bytes;

use crate::procfs;
use clap::ValueEnum;
use futures::StreamExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Way {
    /// A work queue, one durable push consumer per node delivering to its own subject.
    Push,
    /// As `push`, the consumers' state kept in memory (`mem_storage`).
    PushMem,
    /// As `push`, on a stream of limits: an ack deletes nothing.
    PushLimits,
    /// As `push-limits`, acknowledging nothing.
    PushNoAck,
    /// A work queue, one durable pull consumer per node.
    Pull,
    /// A stream (limits) that republishes each stored message to its node's core subject.
    Republish,
    /// Core NATS, nothing stored.
    Core,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Push => "push consumer per node, work queue",
            Way::PushMem => "push consumer per node, state in memory",
            Way::PushLimits => "push consumer per node, limits stream (bulkhead)",
            Way::PushNoAck => "push consumer per node, limits, no acks",
            Way::Pull => "pull consumer per node",
            Way::Republish => "stream republish, no consumer",
            Way::Core => "core NATS, not stored",
        }
    }
}

/// What delivering each node its own ops costs nats-server, for each way considered:
/// a push or a pull consumer per node, a republishing stream, core NATS.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Bytes per message (a start op with its spec and signature is about 1 KiB).
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "push,pull,republish,core"
    )]
    pub ways: Vec<Way>,
}

/// What one way cost.
struct Figures {
    way: Way,
    setup: Duration,
    server_rss_kib: u64,
    idle_cpu_pct: f64,
    delivered_per_s: f64,
    server_ms_per_k: f64,
    client_ms_per_k: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "\n## ops delivery: {} nodes, {} rounds of one {} B message per node, sync_interval: always",
        args.nodes, args.rounds, args.payload
    );
    let mut rows = Vec::new();
    for way in &args.ways {
        let dir = tempfile::tempdir()?;
        let server = crate::scratch::server(dir.path())?;
        let pid: u32 = std::fs::read_to_string(natsd::pid_file(dir.path()))?
            .trim()
            .parse()?;
        let f = measure(*way, &server.url, pid, &args).await?;
        println!(
            "{}: setup {:.1} s, {:.0}/s delivered, server {:.0} ms CPU per 1,000",
            way.label(),
            f.setup.as_secs_f64(),
            f.delivered_per_s,
            f.server_ms_per_k
        );
        rows.push(f);
    }
    println!(
        "\n| way | setup s | server RSS MiB | server idle CPU % | delivered/s | server CPU ms per 1,000 | clients' CPU ms per 1,000 |\n|---|---|---|---|---|---|---|"
    );
    for f in rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |",
            f.way.label(),
            f.setup.as_secs_f64(),
            f.server_rss_kib as f64 / 1024.0,
            f.idle_cpu_pct,
            f.delivered_per_s,
            f.server_ms_per_k,
            f.client_ms_per_k
        );
    }
    Ok(())
}

const STREAM: &str = "OPSBENCH";

fn subject(way: Way, node: usize) -> String {
    match way {
        Way::Core => format!("core.{node}.ops"),
        _ => format!("node.{node}.ops"),
    }
}

fn deliver(node: usize) -> String {
    format!("deliver.{node}")
}

async fn measure(way: Way, url: &str, pid: u32, args: &Args) -> anyhow::Result<Figures> {
    let server = pid.to_string();
    let admin = Bus::connect(url, "ops-bench").await?;
    let t = Instant::now();
    if way != Way::Core {
        let republish = (way == Way::Republish).then(|| stream::Republish {
            source: "node.*.ops".into(),
            destination: "deliver.{{wildcard(1)}}".into(),
            headers_only: false,
        });
        let retention = if matches!(way, Way::Republish | Way::PushLimits | Way::PushNoAck) {
            stream::RetentionPolicy::Limits
        } else {
            stream::RetentionPolicy::WorkQueue
        };
        admin
            .js
            .create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["node.*.ops".into()],
                retention,
                max_age: Duration::from_secs(3600),
                allow_atomic_publish: true,
                max_consumers: 100_000,
                republish,
                ..Default::default()
            })
            .await?;
    }
    let s = if way == Way::Core {
        None
    } else {
        Some(admin.js.get_stream(STREAM).await?)
    };
    for node in 0..args.nodes {
        let Some(s) = &s else { break };
        let durable = format!("n{node}");
        match way {
            Way::Push | Way::PushMem | Way::PushLimits | Way::PushNoAck => {
                s.create_consumer(consumer::push::Config {
                    durable_name: Some(durable),
                    deliver_subject: deliver(node),
                    filter_subject: subject(way, node),
                    ack_policy: if way == Way::PushNoAck {
                        consumer::AckPolicy::None
                    } else {
                        consumer::AckPolicy::Explicit
                    },
                    ack_wait: Duration::from_secs(30),
                    max_deliver: if way == Way::PushNoAck { -1 } else { 50 },
                    max_ack_pending: if way == Way::PushNoAck { -1 } else { 100_000 },
                    memory_storage: way == Way::PushMem,
                    ..Default::default()
                })
                .await?;
            }
            Way::Pull => {
                s.create_consumer(consumer::pull::Config {
                    durable_name: Some(durable),
                    filter_subject: subject(way, node),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_deliver: 50,
                    max_ack_pending: 100_000,
                    ..Default::default()
                })
                .await?;
            }
            Way::Republish | Way::Core => break,
        }
    }
    let got = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(args.nodes);
    for node in 0..args.nodes {
        let client = async_nats::connect(url).await?;
        let got = got.clone();
        let task = match way {
            Way::Push
            | Way::PushMem
            | Way::PushLimits
            | Way::PushNoAck
            | Way::Republish
            | Way::Core => {
                let on = if way == Way::Core {
                    subject(way, node)
                } else {
                    deliver(node)
                };
                let mut sub = client.subscribe(on).await?;
                tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        if m.payload.is_empty() {
                            continue;
                        }
                        if let Some(reply) = m.reply {
                            let _ = client.publish(reply, "+ACK".into()).await;
                        }
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                })
            }
            Way::Pull => {
                let js = jetstream::new(client);
                let c: consumer::PullConsumer = js
                    .get_stream(STREAM)
                    .await?
                    .get_consumer(&format!("n{node}"))
                    .await
                    .map_err(|e| anyhow::anyhow!("consumer n{node}: {e}"))?;
                let mut msgs = c.messages().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                tokio::spawn(async move {
                    while let Some(Ok(m)) = msgs.next().await {
                        let _ = m.ack().await;
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                })
            }
        };
        tasks.push(bulkhead::tasks::AbortOnDrop(task));
    }
    admin.client.flush().await?;
    let setup = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_rss_kib = procfs::rss_kib(&server);

    let (s0, i0) = (procfs::cpu_secs(&server), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu_pct = (procfs::cpu_secs(&server) - s0) / i0.elapsed().as_secs_f64() * 100.0;

    let payload = Bytes::from(vec![b'x'; args.payload]);
    let total = (args.nodes * args.rounds) as u64;
    let (s0, c0, t0) = (
        procfs::cpu_secs(&server),
        procfs::cpu_secs("self"),
        Instant::now(),
    );
    for _ in 0..args.rounds {
        let msgs: Vec<(String, HeaderMap, Bytes)> = (0..args.nodes)
            .map(|n| (subject(way, n), HeaderMap::new(), payload.clone()))
            .collect();
        if way == Way::Core {
            for (subject, _, p) in msgs {
                admin.client.publish(subject, p).await?;
            }
            admin.client.flush().await?;
        } else {
            for chunk in msgs.chunks(MAX_BATCH) {
                admin
                    .publish_atomic(chunk)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while got.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed().as_secs_f64();
    let delivered = got.load(Ordering::Relaxed);
    // Let the last acks land before the CPU is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_ms = (procfs::cpu_secs(&server) - s0) * 1e3;
    let client_ms = (procfs::cpu_secs("self") - c0) * 1e3;
    if delivered < total {
        println!("{}: only {delivered} of {total} delivered", way.label());
    }
    let k = delivered.max(1) as f64 / 1000.0;
    Ok(Figures {
        way,
        setup,
        server_rss_kib,
        idle_cpu_pct,
        delivered_per_s: delivered as f64 / took,
        server_ms_per_k: server_ms / k,
        client_ms_per_k: client_ms / k,
    })
}
