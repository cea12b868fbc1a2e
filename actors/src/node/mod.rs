//! The node: turns operations from its ops subject into runtime calls and runtime facts
//! into events (`started`, `exited`, `stopped`); reconciles with its runtime after a
//! restart; reports its capacity and isolation by heartbeat.
//!
//! | file | concern |
//! |---|---|
//! | [`core`] | the bookkeeping: containers, heads, start ops taken, early exits |
//! | [`limits`] | what an op may hold, checked before it is acted on |
//! | [`ops`] | carrying out start and stop ops, and logging what they did |
//! | [`reconcile`] | the pure comparison of what the log wants with what the runtime holds |
//! | [`recover`] | acting on that comparison |
//! | [`actor`] | the ractor shell over the core and the ports |
//!
//! Runtime calls (pulls, starts, stops with a grace period) run in tasks, never in the
//! handler: their results come back as a message, so heartbeats and exits keep flowing.

pub mod actor;
pub mod core;
pub mod limits;
pub mod ops;
pub mod reconcile;
mod recover;
pub mod trust;

use std::collections::BTreeMap;
use std::time::Duration;

use bulkhead_schemas::Resources;

pub use actor::{NodeActor, NodeArgs, NodeMsg};
pub use core::NodeCore;

use crate::ports::runtime::RuntimeError;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub capacity: Resources,
    pub labels: BTreeMap<String, String>,
    pub heartbeat_ms: u64,
    /// Grace period of a stop that names none.
    pub stop_grace: Duration,
    /// This process's instance id (in its heartbeats; empty: none kept).
    pub instance: String,
}

#[cfg(test)]
impl NodeConfig {
    /// A node of 1 GiB, one core and ten slots, beating every second (tests).
    pub(crate) fn example(name: &str) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            capacity: Resources {
                memory_mb: 1024,
                cpu_millicores: 1000,
                slots: 10,
            },
            labels: BTreeMap::new(),
            heartbeat_ms: 1000,
            stop_grace: Duration::from_secs(10),
            instance: String::new(),
        }
    }
}

/// What reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: usize,
    pub exited: usize,
    pub vanished: usize,
    pub removed: usize,
}

/// A stop the runtime could not carry out: the container is kept, the op redelivered.
#[derive(Debug, thiserror::Error)]
#[error("{workload}/{replica}: {error}")]
pub struct StopFailure {
    pub workload: String,
    pub replica: u32,
    #[source]
    pub error: RuntimeError,
}

/// What the node could not do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Some stops of an ops message failed (their ops are worth redelivering).
    #[error("{} stop(s) failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Stops(Vec<StopFailure>),
    /// The runtime could not be asked (listing its containers failed).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

#[cfg(test)]
mod tests;
