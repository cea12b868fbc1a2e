//! `append-latency`: how long nats-server (`sync_interval: always`, otherwise idle) takes to
//! acknowledge an append, by the way it is sent: one message, two sent at once each on its
//! own, an atomic batch of two and of eight. A placement's append (`accepted` and
//! `scheduled` of one workload: a chain, so an atomic batch whatever its size) waits for
//! this on the way to running; nats-server stages each atomic batch in a file store of its
//! own.

use std::time::Instant;

use async_nats::HeaderMap;
use bulkhead::bus::Bus;
use bytes::Bytes;

use crate::results::pct_ms;
use crate::scratch;

/// Acknowledgement latency of an append by the way it is sent, at `sync_interval: always`.
#[derive(clap::Args)]
pub struct Args {
    /// Appends timed per way and round, one after another.
    #[arg(long, default_value_t = 300)]
    pub appends: usize,
    /// Rounds, each timing every way in turn (the machine's drift shows between them).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Bytes per message (a signed `accepted` with a small spec is about 1 KiB).
    #[arg(long, default_value_t = 900)]
    pub payload: usize,
}

/// The ways an append is sent.
#[derive(Clone, Copy)]
enum Way {
    /// One message, its acknowledgement awaited.
    One,
    /// This many messages sent at once, each acknowledged on its own.
    Singly(usize),
    /// This many messages as one atomic batch.
    Atomic(usize),
}

impl Way {
    fn label(self) -> String {
        match self {
            Way::One => "one message".into(),
            Way::Singly(n) => format!("{n} at once, each on its own"),
            Way::Atomic(n) => format!("an atomic batch of {n}"),
        }
    }
}

const WAYS: [Way; 4] = [Way::One, Way::Singly(2), Way::Atomic(2), Way::Atomic(8)];

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.appends > 0 && args.rounds > 0, "nothing to time");
    println!(
        "\n## append latency: {} appends a way, {} rounds, {} B messages, sync_interval: always",
        args.appends, args.rounds, args.payload
    );
    let dir = tempfile::tempdir()?;
    let server = scratch::server(dir.path())?;
    let bus = Bus::connect(&server.url, "append-latency").await?;
    scratch::stream(&bus, "APPENDS", "appends").await?;
    let payload = Bytes::from(vec![b'x'; args.payload]);
    let mut table: Vec<Vec<(f64, f64)>> = vec![Vec::new(); WAYS.len()];
    for round in 0..args.rounds {
        for (w, way) in WAYS.iter().enumerate() {
            let mut times = Vec::with_capacity(args.appends);
            for i in 0..args.appends {
                let t = Instant::now();
                append(&bus, *way, &format!("appends.{round}.{w}.{i}"), &payload).await?;
                times.push(t.elapsed());
            }
            times.sort();
            table[w].push((pct_ms(&times, 0.5), pct_ms(&times, 0.99)));
        }
    }
    println!("\n| way | p50 / p99 ms, each round |\n|---|---|");
    for (way, rounds) in WAYS.iter().zip(table) {
        let cells: Vec<String> = rounds
            .iter()
            .map(|(p50, p99)| format!("{p50:.2} / {p99:.2}"))
            .collect();
        println!("| {} | {} |", way.label(), cells.join(" · "));
    }
    Ok(())
}

/// Sends one append the given way under `prefix` and waits until all of it is stored.
async fn append(bus: &Bus, way: Way, prefix: &str, payload: &Bytes) -> anyhow::Result<()> {
    let msgs = |n: usize| -> Vec<(String, HeaderMap, Bytes)> {
        (0..n)
            .map(|k| (format!("{prefix}.{k}"), HeaderMap::new(), payload.clone()))
            .collect()
    };
    match way {
        Way::One => {
            bus.publish_stored(format!("{prefix}.0"), HeaderMap::new(), payload.clone())
                .await?;
        }
        Way::Singly(n) => {
            let acks = msgs(n)
                .into_iter()
                .map(|(subject, h, p)| bus.publish_stored(subject, h, p));
            for r in futures::future::join_all(acks).await {
                r?;
            }
        }
        Way::Atomic(n) => {
            bus.publish_atomic(&msgs(n)).await?;
        }
    }
    Ok(())
}
