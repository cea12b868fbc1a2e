//! The `throughput` scenario: N sim nodes and M workloads submitted through NATS. A burst
//! (placements/s, the CPU each cost), a steady rate (submit→running latency), a node's and
//! the services' restarts (time to ready, the scheduler's memory), each beside the raw
//! JetStream append rate measured in the same run; a row of history with `--record`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bulkhead::bus::Bus;
use bulkhead::natsd::Sync;
use bulkhead_schemas::subjects;
use bytes::Bytes;
use futures::StreamExt;

use crate::bench::{Bench, SyncMode};
use crate::burst::{burst, observe, spec, spread_spec};
use crate::fleet::{SIM_HEARTBEAT_MS, failover, node_restart, sim_nodes};
use crate::hops;
use crate::procfs;
use crate::restart::restart;
use crate::results::{self, pct_ms};

/// N sim nodes and M workloads submitted through NATS: placements per second, submit→running
/// latency at a steady rate, restart-to-ready and memory per workload, beside the raw
/// JetStream append rate measured in the same run.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 100_000)]
    pub workloads: usize,
    /// Submissions per second in the latency phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 5)]
    pub latency_secs: u64,
    /// Place the latency phase's workloads `spread` (each on the emptiest node: an ops
    /// message, a delivery and an ack of a node's consumer each) instead of bin-packed.
    #[arg(long)]
    pub steady_spread: bool,
    #[arg(long, value_enum, default_value = "both")]
    pub sync: SyncMode,
    /// The sim nodes' heartbeat interval, ms (a real node's default is 1,000; the
    /// recorded history is at 5,000).
    #[arg(long, default_value_t = SIM_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Append a row of figures (date, commit, machine) to this file, e.g.
    /// loadtest/RESULTS.md.
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
}

pub async fn run(
    Args {
        nodes,
        workloads,
        rate,
        latency_secs,
        steady_spread,
        sync,
        heartbeat_ms,
        record,
    }: Args,
) -> anyhow::Result<()> {
    let modes: Vec<(Sync, &str, &'static str)> = match sync {
        SyncMode::Default => vec![(Sync::Default, "default fsync interval", "default")],
        SyncMode::Always => vec![(Sync::Always, "sync_interval: always", "always")],
        SyncMode::Both => vec![
            (Sync::Default, "default fsync interval", "default"),
            (Sync::Always, "sync_interval: always", "always"),
        ],
    };
    let date = chrono_date();
    for (mode, label, short) in modes {
        println!(
            "\n## throughput: {nodes} sim nodes (a heartbeat every {heartbeat_ms} ms), {workloads} workloads, {label}"
        );
        let steady = Steady {
            rate,
            secs: latency_secs,
            spread: steady_spread,
        };
        let mut f = throughput(mode, nodes, workloads, steady, heartbeat_ms).await?;
        f.sync = short;
        println!("\n{}", f.table());
        if let Some(path) = &record {
            let row = f.history_row(&date, &results::commit(path), &results::machine());
            results::record(path, &row)?;
            println!("recorded in {}", path.display());
        }
    }
    Ok(())
}

/// The log's limits, measured on a scratch stream before anything runs: rates (single
/// async publishes, atomic batches of 500) and round trips one at a time (a durable
/// append, an atomic batch of two: what a workload's path to running waits for).
struct Limits {
    single: f64,
    batched: f64,
    one_ms: f64,
    batch_of_two_ms: f64,
}

async fn limits(bus: &Bus) -> anyhow::Result<Limits> {
    crate::scratch::stream(bus, "RAW", "raw").await?;
    let payload = Bytes::from(vec![b'x'; 300]);
    let n = 20_000;
    let t = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        acks.push(
            bus.js
                .publish(format!("raw.s.{i}"), payload.clone())
                .await?
                .into_future(),
        );
        if acks.len() >= 256 {
            acks.next().await.transpose()?;
        }
    }
    while acks.next().await.transpose()?.is_some() {}
    let single = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for b in 0..(n / 500) {
        let msgs: Vec<_> = (0..500)
            .map(|i| (format!("raw.b.{b}.{i}"), HeaderMap::new(), payload.clone()))
            .collect();
        bus.publish_atomic(&msgs)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let batched = n as f64 / t.elapsed().as_secs_f64();
    let (one_ms, batch_of_two_ms) = round_trips(bus, &payload).await?;
    Ok(Limits {
        single,
        batched,
        one_ms,
        batch_of_two_ms,
    })
}

/// The median round trips, ms, one at a time: a durable append, an atomic batch of two.
async fn round_trips(bus: &Bus, payload: &Bytes) -> anyhow::Result<(f64, f64)> {
    let mut one = Vec::with_capacity(200);
    for i in 0..200 {
        let t = Instant::now();
        bus.js
            .publish(format!("raw.o.{i}"), payload.clone())
            .await?
            .await?;
        one.push(t.elapsed());
    }
    let mut two = Vec::with_capacity(100);
    for b in 0..100 {
        let msgs: Vec<_> = (0..2)
            .map(|i| (format!("raw.t.{b}.{i}"), HeaderMap::new(), payload.clone()))
            .collect();
        let t = Instant::now();
        bus.publish_atomic(&msgs)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        two.push(t.elapsed());
    }
    let median_ms = |mut v: Vec<Duration>| {
        v.sort();
        pct_ms(&v, 0.5)
    };
    Ok((median_ms(one), median_ms(two)))
}

/// The steady phase second by second: the p50 and max from submission until `what` (seen
/// at the times in `seen`) of the workloads submitted in each second. A latency that grows
/// from second to second is a rate the machine cannot keep up with; a flat one a fixed delay.
fn by_second(times: &[(String, Instant)], seen: &HashMap<String, Instant>, what: &str) -> String {
    let Some(first) = times.first().map(|(_, t)| *t) else {
        return String::new();
    };
    let mut seconds: Vec<Vec<Duration>> = Vec::new();
    for (id, t) in times {
        let s = t.duration_since(first).as_secs() as usize;
        if seconds.len() <= s {
            seconds.resize_with(s + 1, Vec::new);
        }
        if let Some(r) = seen.get(id) {
            seconds[s].push(r.duration_since(*t));
        }
    }
    let mut out = format!("  submit→{what} by second submitted (p50 / max ms):");
    for (s, lat) in seconds.iter_mut().enumerate() {
        if lat.is_empty() {
            out.push_str(&format!(" [{s}] none seen"));
            continue;
        }
        lat.sort();
        out.push_str(&format!(
            " [{s}] {:.0} / {:.0}",
            pct_ms(lat, 0.5),
            pct_ms(lat, 1.0)
        ));
    }
    out
}

/// The steady phase's two halves over every workload seen running: submission until its
/// `scheduled` was stored (the command, the scheduler's round and its append), and from
/// there until `started` was (the ops, the node, its fact), each as p50 / p99 ms. Where the
/// tail of submit→running lies.
fn halves(
    times: &[(String, Instant)],
    scheduled: &HashMap<String, Instant>,
    running: &HashMap<String, Instant>,
) -> String {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for (id, t) in times {
        if let (Some(s), Some(r)) = (scheduled.get(id), running.get(id)) {
            first.push(s.saturating_duration_since(*t));
            second.push(r.saturating_duration_since(*s));
        }
    }
    if first.is_empty() {
        return String::new();
    }
    first.sort();
    second.sort();
    format!(
        "  halves (p50 / p99 ms): submit→scheduled {:.1} / {:.1}, scheduled→running {:.1} / {:.1}",
        pct_ms(&first, 0.5),
        pct_ms(&first, 0.99),
        pct_ms(&second, 0.5),
        pct_ms(&second, 0.99)
    )
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn chrono_date() -> String {
    bulkhead_schemas::now_rfc3339()
        .split('T')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Placements the burst's messages alone are replayed for (`server-floor`).
const FLOOR_WORKLOADS: usize = 50_000;

/// The steady phase: submissions a second, for how long, placed how.
struct Steady {
    rate: u64,
    secs: u64,
    spread: bool,
}

async fn throughput(
    mode: Sync,
    nodes: usize,
    workloads: usize,
    Steady {
        rate,
        secs: latency_secs,
        spread,
    }: Steady,
    heartbeat_ms: u64,
) -> anyhow::Result<results::Figures> {
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), mode).await?;
    let bus = bench.admin().clone();
    let raw = limits(&bus).await?;
    // The burst's messages alone, on a server of their own syncing as this one (which idles
    // meanwhile).
    let floor = crate::floor::replay(&crate::floor::Args::bulkhead(FLOOR_WORKLOADS), mode).await?;
    println!(
        "the burst's messages alone ({FLOOR_WORKLOADS} placements, no bulkhead logic): {:.0} placements/s, {:.0} + {:.0} µs a placement (nats-server + the replay's clients)",
        floor.placements_per_s, floor.server_us, floor.client_us
    );
    println!(
        "raw JetStream appends (300 B): {:.0}/s one by one (256 in flight), {:.0}/s in atomic batches of 500; one at a time: a durable append {:.2} ms, an atomic batch of two {:.2} ms (medians)",
        raw.single, raw.batched, raw.one_ms, raw.batch_of_two_ms
    );
    let names: Vec<String> = (0..nodes).map(|i| format!("sim-{i}")).collect();
    bench.enroll_nodes(&names).await?;
    let tenant = bench.tenant().await?;

    let seen = observe(&bus).await?;

    let mut handles = sim_nodes(&bench, names, heartbeat_ms).await?;
    let control = bench.control().await?;
    let failover = failover(&bench).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Phase 1: a burst of `workloads` submissions, published in atomic batches.
    let server = bench.cluster.server.pid();
    let b = burst(server, &tenant, &seen, workloads, Duration::from_secs(600)).await?;
    let place_rate = b.placements_per_s;

    // What the system spends idle (heartbeats, the burst's snapshots), for the steady
    // phase's CPU to be read beside.
    let idle_secs = 3.0;
    let server = server.to_string();
    let idle0 = (procfs::cpu_secs("self"), procfs::cpu_secs(&server));
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let idle = (
        (procfs::cpu_secs("self") - idle0.0) / idle_secs,
        (procfs::cpu_secs(&server) - idle0.1) / idle_secs,
    );

    // Phase 2: a steady rate, one submission at a time, latency submit → running.
    let by_hop = hops::Hops::watch(&bus, "steady-").await?;
    let ops_from = bus
        .js
        .get_stream(subjects::OPS_STREAM)
        .await?
        .info()
        .await?
        .state
        .last_sequence
        + 1;
    let cpu0 = (procfs::cpu_secs("self"), procfs::cpu_secs(&server));
    let disk0 = procfs::Disk::holding(dir.path());
    let t0 = Instant::now();
    let n = (rate * latency_secs) as usize;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut times = Vec::with_capacity(n);
    let mut submitted = Vec::with_capacity(n);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + every * i as u32).await;
        let id = format!("steady-{i}");
        submitted.push((id.clone(), hops::now_ns()));
        times.push((id.clone(), Instant::now()));
        tenant
            .client
            .publish(
                subjects::cmd(subjects::DEFAULT_TENANT, "submit"),
                if spread { spread_spec(&id) } else { spec(&id) }.into(),
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let span = t0.elapsed().as_secs_f64();
    let cpu = (
        procfs::cpu_secs("self") - cpu0.0,
        procfs::cpu_secs(&server) - cpu0.1,
    );
    // The disk's flushes (each fsync'd store ends in one) and busy time over the same span:
    // flushes a workload, busy %.
    let steady_disk = procfs::Disk::holding(dir.path())
        .zip(disk0)
        .map(|(now, before)| now.since(before))
        .map(|d| {
            (
                d.flushes as f64 / n.max(1) as f64,
                d.busy_ms as f64 / 10.0 / span,
            )
        });
    if let Some((flushes, busy)) = steady_disk {
        println!(
            "disk in the steady phase: {flushes:.2} flushes a workload, busy {busy:.0} % of the time"
        );
    }
    println!(
        "CPU in the steady phase ({span:.1} s): {:.2} + {:.2} cores (bulkhead + nats-server; idle before it: {:.2} + {:.2}), {:.0} + {:.0} µs a workload above idle",
        cpu.0 / span,
        cpu.1 / span,
        idle.0,
        idle.1,
        (cpu.0 - idle.0 * span) * 1e6 / n.max(1) as f64,
        (cpu.1 - idle.1 * span) * 1e6 / n.max(1) as f64,
    );
    let ops_at = hops::ops_stored(&bus, ops_from, "steady-").await?;
    let mut lat: Vec<Duration> = {
        let g = seen.lock().expect("lock");
        println!("{}", by_second(&times, &g.0, "scheduled"));
        println!("{}", by_second(&times, &g.1, "running"));
        println!("{}", halves(&times, &g.0, &g.1));
        println!("{}", by_hop.report(&submitted, &ops_at));
        times
            .iter()
            .filter_map(|(id, t)| g.1.get(id).map(|s| s.duration_since(*t)))
            .collect()
    };
    lat.sort();
    let (p50_ms, p99_ms) = (pct_ms(&lat, 0.5), pct_ms(&lat, 0.99));
    println!(
        "steady {rate}/s{} for {latency_secs} s: {} of {n} running; submit→running p50 {p50_ms:.1} ms, p99 {p99_ms:.1} ms, max {:.1} ms",
        if spread { " spread" } else { "" },
        lat.len(),
        pct_ms(&lat, 1.0)
    );
    let (node_restart_s, node_replicas) = node_restart(&bench, &mut handles, heartbeat_ms).await?;
    drop((control, failover, handles));

    let r = restart(&bench).await?;
    drop(bench);
    Ok(results::Figures {
        nodes,
        workloads,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sync: "",
        heartbeat_ms,
        raw_single: raw.single,
        raw_batched: raw.batched,
        append_ms: (raw.one_ms, raw.batch_of_two_ms),
        steady_disk,
        placements_per_s: place_rate,
        burst_running_s: b.running_s,
        cpu_us: b.cpu_us,
        steady_rate: rate,
        steady_spread: spread,
        p50_ms,
        p99_ms,
        restart_s: r.ready_s,
        failover_restart_s: r.failover_s,
        api_restart_s: r.api_s,
        node_restart_s,
        node_replicas,
        kib_per_workload: r.kib_per_workload,
        floor: Some(floor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_phase_is_shown_by_the_second_each_was_submitted_in() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let times: Vec<(String, Instant)> = [("a", 0), ("b", 200), ("c", 1_500), ("d", 2_100)]
            .into_iter()
            .map(|(id, at)| (id.to_owned(), t0 + ms(at)))
            .collect();
        // a took 100 ms, b 300 ms, c 40 ms; d was never seen.
        let seen: HashMap<String, Instant> = [("a", 100), ("b", 500), ("c", 1_540)]
            .into_iter()
            .map(|(id, at)| (id.to_owned(), t0 + ms(at)))
            .collect();
        let line = by_second(&times, &seen, "running");
        assert_eq!(
            line,
            "  submit→running by second submitted (p50 / max ms): [0] 300 / 300 [1] 40 / 40 [2] none seen"
        );
        assert_eq!(by_second(&[], &seen, "running"), "");
    }

    #[test]
    fn the_halves_split_each_workload_at_its_scheduled_event() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let at = |pairs: &[(&str, u64)]| -> HashMap<String, Instant> {
            pairs
                .iter()
                .map(|(id, at)| (id.to_string(), t0 + ms(*at)))
                .collect()
        };
        let times: Vec<(String, Instant)> = [("a", 0), ("b", 10), ("c", 20)]
            .into_iter()
            .map(|(id, at)| (id.to_owned(), t0 + ms(at)))
            .collect();
        // a: 5 then 20 ms; b: 30 then 10 ms; c was scheduled but never ran (left out).
        let scheduled = at(&[("a", 5), ("b", 40), ("c", 25)]);
        let running = at(&[("a", 25), ("b", 50)]);
        assert_eq!(
            halves(&times, &scheduled, &running),
            "  halves (p50 / p99 ms): submit→scheduled 30.0 / 30.0, scheduled→running 20.0 / 20.0"
        );
        assert_eq!(halves(&times, &scheduled, &HashMap::new()), "");
    }
}
