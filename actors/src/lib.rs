//! bulkhead's actors: the scheduler, the node and the failover, each a thin ractor shell
//! around a pure core (placement, projection, restart policy, decisions) with its side
//! effects behind traits.

pub mod failover;
pub mod failover_actor;
pub mod log;
pub mod lru;
pub mod node;
pub mod placement;
pub mod projection;
pub mod reconcile;
pub mod restart;
pub mod ring;
pub mod runtime;
pub mod scan_policy;
pub mod scheduler;
pub mod scheduler_actor;
pub mod trace;

pub use trace::set_parent;
