//! `seal`: what a service's snapshot costs to seal and to open, with no cluster: a
//! projection of N workloads as a C1M run holds them (accepted, scheduled and started, one
//! replica each, from signed events applied in order), sealed and opened again in this
//! thread, each timed by the process's CPU. It isolates the seal from the run around it:
//! a C1M run's seal CPU a workload moves by about a tenth from hour to hour.

use std::sync::Arc;

use bulkhead::snapshot::{Snapshot, open, seal};
use bulkhead_actors::audit::RunningHash;
use bulkhead_actors::projection::Projection;
use bulkhead_actors::signing::Signer;
use bulkhead_schemas::event::Event;

use crate::procfs;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    pub workloads: usize,
    /// Seals (and opens) timed; each figure is their median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

pub fn run(Args { workloads, rounds }: Args) -> anyhow::Result<()> {
    println!("\n## seal: a snapshot of {workloads} running workloads, {rounds} rounds");
    let (scheduler, node) = (Signer::generate(), Signer::generate());
    let mut projection = Projection::default();
    let mut seq = 0;
    for i in 0..workloads {
        for (_, bytes, hash, _) in crate::audit::workload(i, &scheduler, &node) {
            seq += 1;
            let event = Event::parse(&bytes)?;
            projection
                .apply(seq, hash, &event)
                .map_err(|skip| anyhow::anyhow!("event {seq} not applied: {skip}"))?;
        }
    }
    let snap = Snapshot {
        service: "scheduler".into(),
        seq,
        covers: seq,
        running: RunningHash::default(),
        raw: Arc::default(),
        workloads: projection.shared(),
    };
    let (mut sealing, mut opening, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        let cpu = procfs::cpu_secs("self");
        let sealed = seal(&scheduler, &snap)?;
        sealing.push(procfs::cpu_secs("self") - cpu);
        bytes = sealed.len();
        let cpu = procfs::cpu_secs("self");
        let opened = open(&sealed, "scheduler", scheduler.public_key())
            .map_err(|e| anyhow::anyhow!("the sealed snapshot does not open: {e}"))?;
        opening.push(procfs::cpu_secs("self") - cpu);
        anyhow::ensure!(opened.workloads.len() == workloads, "a workload was lost");
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per = |secs: f64| secs * 1e6 / workloads.max(1) as f64;
    let (s, o) = (median(sealing), median(opening));
    println!(
        "sealed: {bytes} bytes ({:.1} a workload); seal {:.3} s of CPU ({:.2} µs a workload), open {:.3} s ({:.2} µs a workload), medians",
        bytes as f64 / workloads.max(1) as f64,
        s,
        per(s),
        o,
        per(o)
    );
    Ok(())
}
