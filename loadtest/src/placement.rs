//! The `placement` scenario: what choosing a node costs on one core, through the index
//! (`Cluster::place`) beside the scan of every node it falls back to (`Cluster::scan`), for
//! clusters of sim-sized nodes (64 GiB, 64 cores, 1,000 slots) under bin-pack and spread.

use std::collections::BTreeMap;
use std::time::Instant;

use bulkhead_actors::scheduler::cluster::{Cluster, Names, Overlay, Request, no_nodes};
use bulkhead_schemas::Resources;
use bulkhead_schemas::spec::{MAX_REPLICAS, PlacementStrategy, RuntimeClass};

/// A round of this many placements shares one overlay, as a scheduler's round does.
const ROUND: usize = 500;

/// What each replica needs: 64 MiB, 50 millicores.
const NEED: Resources = Resources {
    memory_mb: 64,
    cpu_millicores: 50,
    slots: 1,
};

/// Microseconds a placement takes on one core, through the placement index and by a
/// scan of every node, for clusters of these sizes.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 5000])]
    pub nodes: Vec<usize>,
    #[arg(long, default_value_t = 20_000)]
    pub replicas: usize,
}

pub fn run(Args { nodes, replicas }: Args) -> anyhow::Result<()> {
    println!("\n## placement, one core ({replicas} replicas of 64 MiB, 50m each)");
    for n in nodes {
        for strategy in [PlacementStrategy::Binpack, PlacementStrategy::Spread] {
            let (indexed, chosen) = fill(n, replicas, strategy, |c, r, o| c.place(r, o).ok())?;
            let (scanned, same) = fill(n, replicas, strategy, |c, r, o| c.scan(r, o).ok())?;
            anyhow::ensure!(chosen == same, "the index and the scan chose differently");
            println!(
                "{n:>5} nodes, {strategy:?}: {:.2} µs a placement through the index, {:.2} µs scanning every node ({:.0}×)",
                indexed * 1e6,
                scanned * 1e6,
                scanned / indexed
            );
        }
        let r = n.min(MAX_REPLICAS as usize);
        let (t, spread) = one_workload(n, r)?;
        println!(
            "{n:>5} nodes, one workload of {r} replicas (bin-pack, each avoiding its others' nodes): {:.2} µs a replica, on {spread} nodes",
            t * 1e6
        );
    }
    Ok(())
}

/// One workload's `replicas` placed in one round, as the scheduler places them: each
/// replica avoids the nodes its workload's other replicas were given. Returns the seconds
/// a replica took and how many nodes it was spread over.
fn one_workload(n: usize, replicas: usize) -> anyhow::Result<(f64, usize)> {
    let c = cluster(n);
    let none = BTreeMap::new();
    let mut overlay = Overlay::new();
    let mut avoid = Names::new();
    let t = Instant::now();
    for _ in 0..replicas {
        let req = Request {
            need: NEED,
            class: RuntimeClass::Runc,
            selector: &none,
            strategy: PlacementStrategy::Binpack,
            avoid: &avoid,
            prefer_not: None,
            exclude: &[],
        };
        let i = c
            .place(&req, &overlay)
            .map_err(|u| anyhow::anyhow!("{}", u.reason))?;
        overlay.add(&c, i, &NEED);
        avoid.insert(c.nodes()[i].name.clone());
    }
    let spent = t.elapsed().as_secs_f64();
    Ok((spent / replicas as f64, avoid.len()))
}

/// `n` ready sim-sized nodes.
fn cluster(n: usize) -> Cluster {
    let mut c = Cluster::default();
    for i in 0..n {
        c.update(&format!("sim-{i}"), |s| {
            s.capacity = Resources {
                memory_mb: 65_536,
                cpu_millicores: 64_000,
                slots: 1000,
            };
            s.classes = vec![RuntimeClass::Runc, RuntimeClass::Gvisor];
            s.ready = true;
        });
    }
    c
}

/// Places `replicas` one by one in rounds of [`ROUND`] with `choose`, each placement then
/// allocated; returns the seconds a placement took and the nodes chosen.
fn fill(
    n: usize,
    replicas: usize,
    strategy: PlacementStrategy,
    choose: impl Fn(&Cluster, &Request<'_>, &Overlay) -> Option<usize>,
) -> anyhow::Result<(f64, Vec<usize>)> {
    let mut c = cluster(n);
    let none = BTreeMap::new();
    let req = Request {
        need: NEED,
        class: RuntimeClass::Runc,
        selector: &none,
        strategy,
        avoid: no_nodes(),
        prefer_not: None,
        exclude: &[],
    };
    let mut chosen = Vec::with_capacity(replicas);
    let mut spent = 0.0;
    for round in (0..replicas).step_by(ROUND) {
        let mut overlay = Overlay::new();
        let t = Instant::now();
        for _ in round..(round + ROUND).min(replicas) {
            let i = choose(&c, &req, &overlay).ok_or_else(|| anyhow::anyhow!("cluster full"))?;
            overlay.add(&c, i, &NEED);
            chosen.push(i);
        }
        spent += t.elapsed().as_secs_f64();
        // The round written: its allocations are the cluster's now.
        for &i in &chosen[round..] {
            let name = c.nodes()[i].name.clone();
            c.allocate(&name, &NEED);
        }
    }
    Ok((spent / replicas as f64, chosen))
}
