//! The ports: every way an actor reaches the world, each a trait with its in-memory twin
//! beside it (youki's `Syscall` with its test implementation is the model).
//!
//! | port | trait | production adapter (crate `bulkhead`) | twin here |
//! |---|---|---|---|
//! | the event log | [`log::EventLog`] | `bus::NatsLog` (JetStream) | [`mem_log::MemLog`] |
//! | node operations, scan jobs | [`ops::OpsSink`] | `bus::NatsOps` | [`ops::RecordingOps`] |
//! | heartbeats | [`heartbeat::HeartbeatSink`] | `bus::KvHeartbeat` | [`heartbeat::RecordingBeats`] |
//! | a node's containers | [`runtime::ContainerRuntime`] | `node::cri::CriRuntime` | [`sim::SimRuntime`] |
//!
//! The twins of the log, the ops and the heartbeats are for tests (feature `testing`); the
//! sim runtime is also a product feature (`--runtime sim`, for thousand-node load tests).

pub mod heartbeat;
pub mod log;
#[cfg(any(test, feature = "testing"))]
pub mod mem_log;
pub mod ops;
pub mod runtime;
pub mod sim;

use std::sync::Arc;

/// The cause of a failure, kept as its own error (`source()`), shareable between copies.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Wraps any error as a [`Cause`].
pub fn cause(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
    Arc::new(e)
}

/// A [`Cause`] that is only a message.
pub fn cause_msg(msg: impl Into<String>) -> Cause {
    Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(msg.into()))
}

/// Why a message (node ops, a scan job, a heartbeat) did not reach its destination.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// NATS could not be reached or did not answer in time: worth trying again.
    #[error("not delivered: {0}")]
    Unavailable(#[source] Cause),
    /// The server refused the message (no stream for the subject, over a limit, a bad
    /// name): trying the same message again will not help.
    #[error("refused: {0}")]
    Refused(String),
}
