//! Wire types of bulkhead: the workload spec, commands, events, node heartbeats and ops,
//! the query API, subject names, and the JSON Schemas generated from them. No I/O.

pub mod api;
pub mod command;
pub mod event;
pub mod ids;
pub mod node;
pub mod scan;
pub mod schema;
pub mod spec;
pub mod subjects;

pub use event::{Event, EventBody, Hash};
pub use node::{ChainHead, NodeHeartbeat, NodeOp, NodeOps, Resources};
pub use spec::{Rejection, RuntimeClass, WorkloadSpec};

/// Now as RFC 3339 (UTC, millisecond precision).
pub fn now_rfc3339() -> String {
    rfc3339_ms(time::OffsetDateTime::now_utc())
}

pub fn rfc3339_ms(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(f)
        .expect("formats")
}
