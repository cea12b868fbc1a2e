//! The clock the actor shells read: the wall clock in production; in tests, one that starts
//! at the wall time and advances with tokio's clock, so a paused test clock moves backoffs,
//! silences and wake-ups in milliseconds of real time. The pure cores take time as an
//! argument and never read a clock.

use tokio::time::Instant;

/// Where the current time comes from.
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    Wall,
    /// The wall time when it was made, advanced by tokio's clock since.
    Tokio { base_ms: u64, base: Instant },
}

impl Clock {
    /// A clock following tokio's (which a test can pause and advance).
    pub fn tokio() -> Clock {
        Clock::Tokio {
            base_ms: bulkhead_schemas::now_ms(),
            base: Instant::now(),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::Wall => bulkhead_schemas::now_ms(),
            Clock::Tokio { base_ms, base } => {
                let since = u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX);
                base_ms.saturating_add(since)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time() {
        let c = Clock::tokio();
        let t0 = c.now_ms();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(c.now_ms() - t0, 3_600_000);
        assert!(
            Clock::Wall.now_ms() < t0 + 60_000,
            "the wall clock did not move an hour"
        );
    }
}
