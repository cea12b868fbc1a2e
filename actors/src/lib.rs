//! bulkhead's actors: the scheduler and the node, each a thin ractor shell around a
//! pure core (placement, projection, decisions) with its side effects behind traits.

pub mod placement;
pub mod projection;
pub mod log;
pub mod scheduler;
