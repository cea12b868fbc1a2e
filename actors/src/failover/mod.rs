//! The failover: restarts ended replicas by their restart policy and declares silent nodes
//! lost.
//!
//! | file | concern |
//! |---|---|
//! | [`decide`] | what to append for a workload whose replica ended, or whose node was lost |
//! | [`restart`] | the pure restart policy: backoff, jitter, budget |
//! | [`actor`] | the ractor shell: follows the log, watches heartbeats (through [`crate::liveness`]) |

pub mod actor;
pub mod decide;
pub mod restart;

pub use decide::{lose_node, nodes_in_use, plan_workload};

/// The name the failover signs its events with.
pub const SERVICE: &str = "failover";

#[cfg(test)]
mod tests;
