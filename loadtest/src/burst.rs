//! A burst: workloads submitted in atomic batches through NATS and watched until all run,
//! from the `scheduled` and `started` events as they are stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bulkhead::bus::{Bus, MAX_BATCH};
use bulkhead_schemas::subjects;
use bytes::Bytes;
use futures::StreamExt;

use crate::procfs;

/// When each workload was seen `scheduled` and `started`.
pub type Observed = (HashMap<String, Instant>, HashMap<String, Instant>);

/// A load test's workload (64 MB, 50 millicores), bin-packed.
pub fn spec(id: &str) -> Vec<u8> {
    serde_json::to_vec(&spec_json(id)).expect("json")
}

/// The same, placed `spread`: each on the emptiest node that fits.
pub fn spread_spec(id: &str) -> Vec<u8> {
    let mut s = spec_json(id);
    s["placement"] = "spread".into();
    serde_json::to_vec(&s).expect("json")
}

fn spec_json(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "image": "localhost/app:1", "memory_mb": 64, "cpu_millicores": 50})
}

/// Workload events of `kind` (`*`: every kind) as the log stores them: the tenants' feed,
/// which the log's stream republishes once a message is stored. A subscriber to the
/// events' own subjects hears each message as it is published, before it is stored (an
/// atomic batch's before its commit; an abandoned batch's too).
pub fn stored_events(kind: &str) -> String {
    // `bulkhead.out.*.wl.>` → `bulkhead.out.*.wl.*.<kind>`
    let feed = subjects::TENANT_FEED_ALL.trim_end_matches('>');
    format!("{feed}*.{kind}")
}

/// What the feed's and the events' workload subjects share after their first tokens.
const WORKLOADS: &str = "*.wl.>";

/// The workload id of a stored event's subject (`bulkhead.out.<tenant>.wl.<id>.<kind>`),
/// read as the event's own subject is (`subjects::workload_of`).
pub fn id_of(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(subjects::TENANT_FEED_ALL.trim_end_matches(WORKLOADS))?;
    let events = subjects::EVT_WORKLOADS.trim_end_matches(WORKLOADS);
    let key = subjects::workload_of(&format!("{events}{rest}"))?;
    subjects::split_key(&key).map(|(_, id)| id.to_owned())
}

/// Records when each workload is seen `scheduled` and `started`, as they are stored.
pub async fn observe(bus: &Bus) -> anyhow::Result<Arc<std::sync::Mutex<Observed>>> {
    let seen: Arc<std::sync::Mutex<Observed>> = Default::default();
    let mut sub = bus.client.subscribe(stored_events("*")).await?;
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let now = Instant::now();
            let Some(id) = id_of(&m.subject) else {
                continue;
            };
            let mut g = s.lock().expect("lock");
            if m.subject.ends_with(".scheduled") {
                g.0.insert(id, now);
            } else if m.subject.ends_with(".started") {
                g.1.insert(id, now);
            }
        }
    });
    Ok(seen)
}

/// What a burst of submissions came to.
pub struct Burst {
    pub placements_per_s: f64,
    /// Seconds from the first submission to the last `started`.
    pub running_s: f64,
    /// CPU per workload from the first submission until all run, in µs: this process
    /// (every service and sim node) and the nats-server.
    pub cpu_us: (f64, f64),
}

/// Submits `workloads` specs in atomic batches and waits (up to `timeout`) until all run.
pub async fn burst(
    server: u32,
    tenant: &Bus,
    seen: &std::sync::Mutex<Observed>,
    workloads: usize,
    timeout: Duration,
) -> anyhow::Result<Burst> {
    let server = server.to_string();
    let cpu0 = (procfs::cpu_secs("self"), procfs::cpu_secs(&server));
    let t0 = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(30);
    for chunk in (0..workloads).collect::<Vec<_>>().chunks(MAX_BATCH) {
        let msgs: Vec<_> = chunk
            .iter()
            .map(|i| {
                let id = format!("burst-{i}");
                (
                    subjects::cmd(subjects::DEFAULT_TENANT, "submit"),
                    HeaderMap::new(),
                    Bytes::from(spec(&id)),
                )
            })
            .collect();
        tenant
            .publish_atomic(&msgs)
            .await
            .map_err(|e| anyhow::anyhow!("submit: {e}"))?;
    }
    let ingest = t0.elapsed();
    let deadline = Instant::now() + timeout;
    loop {
        let started = seen.lock().expect("lock").1.len();
        if started >= workloads || Instant::now() > deadline {
            break;
        }
        if Instant::now() > next_report {
            // From now: a submission that took longer than the period prints one line.
            next_report = Instant::now() + Duration::from_secs(30);
            println!(
                "  … {started} running after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_us = (
        (procfs::cpu_secs("self") - cpu0.0) * 1e6 / workloads.max(1) as f64,
        (procfs::cpu_secs(&server) - cpu0.1) * 1e6 / workloads.max(1) as f64,
    );
    let g = seen.lock().expect("lock");
    let first_sched = g.0.values().min().copied().unwrap_or(t0);
    let last_sched = g.0.values().max().copied().unwrap_or(t0);
    let last_started = g.1.values().max().copied().unwrap_or(t0);
    let (n_sched, n_started) = (g.0.len(), g.1.len());
    let placements_per_s = n_sched as f64
        / last_sched
            .duration_since(first_sched)
            .as_secs_f64()
            .max(1e-3);
    let running_s = last_started.duration_since(t0).as_secs_f64();
    println!(
        "burst: {workloads} submitted in {:.2} s ({:.0}/s ingest); {n_sched} placed at {placements_per_s:.0} placements/s; {n_started} running after {running_s:.2} s",
        ingest.as_secs_f64(),
        workloads as f64 / ingest.as_secs_f64(),
    );
    println!(
        "CPU per workload in the burst: {:.0} µs in bulkhead (every service and sim node), {:.0} µs in nats-server",
        cpu_us.0, cpu_us.1
    );
    Ok(Burst {
        placements_per_s,
        running_s,
        cpu_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_events_are_heard_on_the_tenants_feed() {
        assert_eq!(stored_events("started"), "bulkhead.out.*.wl.*.started");
        assert_eq!(
            id_of("bulkhead.out.default.wl.burst-7.started").as_deref(),
            Some("burst-7")
        );
        assert_eq!(id_of("bulkhead.out.default.node.n1.joined"), None);
        assert_eq!(id_of("bulkhead.evt.default.wl.burst-7.started"), None);
        assert_eq!(id_of("started"), None);
    }

    #[test]
    fn a_spread_workload_differs_from_the_usual_by_its_placement_only() {
        use bulkhead_schemas::WorkloadSpec;
        use bulkhead_schemas::spec::PlacementStrategy;
        let read = |b: Vec<u8>| serde_json::from_slice::<WorkloadSpec>(&b).expect("a spec");
        let (usual, spread) = (read(spec("w-1")), read(spread_spec("w-1")));
        assert_eq!(usual.placement, PlacementStrategy::Binpack);
        assert_eq!(spread.placement, PlacementStrategy::Spread);
        let back = WorkloadSpec {
            placement: PlacementStrategy::Binpack,
            ..spread
        };
        assert_eq!(back, usual);
    }
}
