//! The sim fleet every sim scenario stands up: sim nodes, each its own identity and
//! connection, a failover as the cluster runs one, and a node's restart over its runtime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_actors::node::NodeConfig;
use bulkhead_actors::ports::sim::SimRuntime;
use bulkhead_schemas::Resources;
use bulkhead_schemas::spec::RuntimeClass;

use crate::bench::Bench;

/// A sim node and the runtime its containers live in (they outlive a restart of the node).
pub struct SimNode {
    pub handle: bulkhead::node::NodeHandle,
    pub runtime: Arc<SimRuntime>,
}

/// How often a sim node beats unless told otherwise, ms.
pub const SIM_HEARTBEAT_MS: u64 = 5000;

/// A sim node's settings: 64 GiB, 64 cores, 1,000 slots, a heartbeat every `heartbeat_ms`.
fn sim_config(name: String, heartbeat_ms: u64) -> NodeConfig {
    NodeConfig {
        name,
        capacity: Resources {
            memory_mb: 64 * 1024,
            cpu_millicores: 64_000,
            slots: 1000,
        },
        labels: BTreeMap::new(),
        heartbeat_ms,
        stop_grace: Duration::from_secs(10),
        instance: String::new(),
    }
}

/// Restarts the first sim node over the same runtime (its containers keep running);
/// returns seconds from the start until it is ready (the scheduler's view reconciled), and
/// how many replicas ran on it.
pub async fn node_restart(
    bench: &Bench,
    nodes: &mut [SimNode],
    heartbeat_ms: u64,
) -> anyhow::Result<(f64, usize)> {
    let Some(node) = nodes.first_mut() else {
        return Ok((0.0, 0));
    };
    let name = node.handle.name.clone();
    let running = node.runtime.running();
    node.handle.actor.stop(None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The sim's exits went to the stopped node; none come during the measure.
    let (_exits_tx, exits) = tokio::sync::mpsc::unbounded_channel();
    let t = Instant::now();
    node.handle = bench
        .node(
            sim_config(name.clone(), heartbeat_ms),
            node.runtime.clone(),
            exits,
        )
        .await?;
    anyhow::ensure!(
        tokio::time::timeout(Duration::from_secs(30), node.handle.synced())
            .await
            .unwrap_or(false),
        "node {name} was not ready 30 s after its restart"
    );
    let s = t.elapsed().as_secs_f64();
    println!("node restart-to-ready with {running} replicas running on it: {s:.2} s");
    Ok((s, running))
}

/// Starts a sim node (64 GiB, 64 cores, 1,000 slots, a heartbeat every `heartbeat_ms`) per
/// name, each as its own identity.
pub async fn sim_nodes(
    bench: &Bench,
    names: Vec<String>,
    heartbeat_ms: u64,
) -> anyhow::Result<Vec<SimNode>> {
    let t = Instant::now();
    let nodes = names.len();
    let mut handles = Vec::with_capacity(nodes);
    for name in names {
        let (rt, exits) = SimRuntime::new(&name, vec![RuntimeClass::Runc], Duration::ZERO);
        let runtime = Arc::new(rt);
        let handle = bench
            .node(sim_config(name, heartbeat_ms), runtime.clone(), exits)
            .await?;
        handles.push(SimNode { handle, runtime });
    }
    println!(
        "{nodes} sim nodes up in {:.1} s (one credential and connection each)",
        t.elapsed().as_secs_f64()
    );
    Ok(handles)
}

/// A failover, active at once, as the cluster runs it (to write its snapshots).
pub async fn failover(bench: &Bench) -> anyhow::Result<bulkhead::failover::FailoverHandle> {
    bulkhead::failover::start(
        &bench.failover().await?,
        bulkhead::failover::FailoverConfig::default(),
    )
    .await
}
