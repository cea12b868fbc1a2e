//! bulkhead's actors: the scheduler, the node and the failover, each a thin ractor shell
//! around a pure core, with every side effect behind a port.
//!
//! The layout, concept by concept (`docs/ARCHITECTURE.md` has the whole map):
//!
//! | module | what it holds |
//! |---|---|
//! | [`projection`] | the log folded into workloads and replicas; one handler per event type |
//! | [`scheduler`] | admission, scan policy, placement, drains, commit, and the scheduler actor |
//! | [`node`] | a node's bookkeeping, reconciliation with its runtime, and the node actor |
//! | [`failover`] | restart decisions, lost nodes, and the failover actor |
//! | [`liveness`] | the one rule that says a node went silent |
//! | [`beat_budget`] | how many of a node's heartbeat entries its watchers hear, at most |
//! | [`fair_queue`] | lanes served in turn: one tenant's backlog does not hold up another's |
//! | [`aside`] | what readers refuse to apply: counted, logged, listed |
//! | [`clock`] | the time the actor shells read (the wall, or tokio's in tests) |
//! | [`directory`] | the identities the log enrolled, by key, and the policy in force |
//! | [`policy`] | what a tenant may submit; policy changes approved by M of N admins |
//! | [`audit`] | the running hash over the whole log, checkpoints, and what a replay finds |
//! | [`verify`] | what a reader checks before it applies an event |
//! | [`secrets`] | secrets sealed to curve keys, re-sealed for a node |
//! | [`signing`] | nkeys, batch signatures over Merkle roots, their proofs |
//! | [`ports`] | the event log, ops, heartbeats and container runtime: traits and their twins |
//! | [`trace`] | W3C trace context across NATS |
//!
//! The in-memory twins of the log, the ops and the heartbeats ship with feature `testing`.

pub mod aside;
pub mod audit;
pub mod beat_budget;
pub mod clock;
pub mod directory;
pub mod failover;
pub mod fair_queue;
pub mod liveness;
pub mod node;
pub mod policy;
pub mod ports;
pub mod projection;
pub mod scheduler;
pub mod secrets;
pub mod signing;
pub mod trace;
pub mod verify;

pub use trace::set_parent;
