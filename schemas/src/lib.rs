//! Wire types of bulkhead: the workload spec, commands, events, node heartbeats and ops,
//! the query API, subject names, and the JSON Schemas generated from them. No I/O.

pub mod api;
pub mod command;
pub mod de;
pub mod event;
pub mod identity;
pub mod ids;
pub mod node;
pub mod policy;
pub mod scan;
pub mod schema;
pub mod spec;
pub mod subjects;

pub use event::{Event, EventBody, Hash};
pub use node::{
    ChainHead, HeadsReply, HeadsRequest, NodeHeartbeat, NodeOp, NodeOps, NodeSync, Resources,
    SyncHandled, SyncHead, SyncReason, SyncReplica,
};
pub use spec::{Rejection, RuntimeClass, WorkloadSpec};

/// Now as RFC 3339 (UTC, millisecond precision).
pub fn now_rfc3339() -> String {
    rfc3339_ms(time::OffsetDateTime::now_utc())
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_from_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    rfc3339_ms(t)
}

/// Unix milliseconds of an RFC 3339 time; None when it does not parse.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Now as Unix milliseconds.
pub fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

pub fn rfc3339_ms(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(f)
        .expect("formats")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_round_trips_through_milliseconds() {
        let ms = 1_795_000_123_456;
        let s = super::rfc3339_from_ms(ms);
        assert!(s.ends_with(".456Z"), "{s}");
        assert_eq!(super::parse_rfc3339_ms(&s), Some(ms));
        assert_eq!(super::parse_rfc3339_ms("yesterday"), None);
    }
}
