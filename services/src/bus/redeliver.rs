//! Every durable consumer's bound on redelivery: a message is delivered at most
//! [`MAX_DELIVER`] times, waiting longer after each failure ([`nak_delay`]); at its last
//! delivery a handler that still cannot handle it terminates it and sets it aside with its
//! reason (a message that never got an answer, because its handler crashed every time,
//! is reported by JetStream's max-deliveries advisory, which the query API records).
//! Spread over about ten minutes of failures, so an outage of the log does not drop a
//! command that is only waiting for it.

use std::time::Duration;

/// Deliveries of one message, at most, on every durable consumer.
pub const MAX_DELIVER: i64 = 50;

/// How long to wait before delivery `delivered + 1` after delivery `delivered` failed:
/// half a second more each time, at most 30 s (the 50 deliveries span about ten minutes).
pub fn nak_delay(delivered: i64) -> Duration {
    let n = u64::try_from(delivered.max(1)).unwrap_or(1);
    Duration::from_millis(500u64.saturating_mul(n)).min(Duration::from_secs(30))
}

/// Whether delivery `delivered` is the last one (its failure is final).
pub fn is_last(delivered: i64) -> bool {
    delivered >= MAX_DELIVER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_a_cap_and_span_minutes() {
        assert_eq!(nak_delay(1), Duration::from_millis(500));
        assert_eq!(nak_delay(0), Duration::from_millis(500));
        assert_eq!(nak_delay(i64::MAX), Duration::from_secs(30));
        let span: Duration = (1..MAX_DELIVER).map(nak_delay).sum();
        assert!(
            span >= Duration::from_secs(300) && span <= Duration::from_secs(900),
            "{span:?}"
        );
        assert!(!is_last(MAX_DELIVER - 1) && is_last(MAX_DELIVER));
    }
}
