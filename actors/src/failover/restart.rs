//! Restart policy: whether an ended replica comes back, after how long (exponential
//! backoff with jitter), and when the restart budget is spent. Pure: time and jitter are
//! arguments.

use bulkhead_schemas::spec::{RestartMode, RestartPolicy};

/// How a replica's copy ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited {
        code: i32,
    },
    /// Its node stopped heartbeating.
    Lost,
}

/// What the policy says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start it again, not before `not_before_ms`; `attempt` counts restarts in the window.
    Restart { attempt: u32, not_before_ms: u64 },
    /// The budget is spent: the replica stays ended.
    GiveUp { reason: String },
    /// The policy does not restart this ending (`never`, or `on-failure` after exit 0).
    Leave,
}

/// Whether the policy restarts this ending at all (budget aside).
pub fn wants_restart(mode: RestartMode, ending: Ending) -> bool {
    match (mode, ending) {
        (RestartMode::Never, _) => false,
        (RestartMode::Always, _) => true,
        (RestartMode::OnFailure, Ending::Exited { code }) => code != 0,
        (RestartMode::OnFailure, Ending::Lost) => true,
    }
}

/// The delay before restart number `attempt` (1-based): `initial · 2^(attempt-1)`, capped
/// at `max`, then spread by `jitter` ∈ [0, 1) over its upper quarter, so replicas that
/// failed together do not all come back in the same instant.
pub fn backoff_ms(policy: &RestartPolicy, attempt: u32, jitter: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(62);
    let full = policy
        .backoff_initial_ms
        .saturating_mul(1u64 << exp)
        .min(policy.backoff_max_ms);
    let jitter = jitter.clamp(0.0, 1.0);
    full - (full as f64 * 0.25 * jitter) as u64
}

/// Decides for a replica whose copy ended at `now_ms`, given the times of its earlier
/// restarts (`recent`, any order).
pub fn decide(
    policy: &RestartPolicy,
    ending: Ending,
    recent: &[u64],
    now_ms: u64,
    jitter: f64,
) -> Decision {
    if !wants_restart(policy.policy, ending) {
        return Decision::Leave;
    }
    let window_start = now_ms.saturating_sub(policy.window_s.saturating_mul(1000));
    let in_window = recent.iter().filter(|&&t| t > window_start).count() as u32;
    if in_window >= policy.max_restarts {
        return Decision::GiveUp {
            reason: format!(
                "restart budget exhausted: {in_window} restarts within {} s (max_restarts {})",
                policy.window_s, policy.max_restarts
            ),
        };
    }
    let attempt = in_window + 1;
    Decision::Restart {
        attempt,
        not_before_ms: now_ms + backoff_ms(policy, attempt, jitter),
    }
}

/// A jitter in [0, 1) derived from a string (an event id): the same event always gets
/// the same delay, so a failover that decides twice decides alike.
pub fn jitter_of(seed: &str) -> f64 {
    // FNV-1a: tiny, stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: RestartMode) -> RestartPolicy {
        RestartPolicy {
            policy: mode,
            max_restarts: 3,
            window_s: 60,
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
        }
    }

    #[test]
    fn modes_decide_which_endings_restart() {
        use RestartMode::*;
        let exit = |code| Ending::Exited { code };
        assert!(wants_restart(Always, exit(0)));
        assert!(wants_restart(Always, Ending::Lost));
        assert!(!wants_restart(OnFailure, exit(0)));
        assert!(wants_restart(OnFailure, exit(3)));
        assert!(wants_restart(OnFailure, exit(-1)));
        assert!(wants_restart(OnFailure, Ending::Lost));
        assert!(!wants_restart(Never, exit(3)));
        assert!(!wants_restart(Never, Ending::Lost));
        assert_eq!(
            decide(&policy(Never), exit(1), &[], 0, 0.0),
            Decision::Leave
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens_it() {
        let p = policy(RestartMode::Always);
        let d: Vec<u64> = (1..=6).map(|a| backoff_ms(&p, a, 0.0)).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        for a in 1..=6 {
            let full = backoff_ms(&p, a, 0.0);
            let j = backoff_ms(&p, a, 0.999);
            assert!(j <= full && j >= full * 3 / 4, "attempt {a}: {j} vs {full}");
        }
        assert_eq!(backoff_ms(&p, 1000, 0.0), 1000, "no overflow");
    }

    #[test]
    fn attempts_count_restarts_in_the_window_until_the_budget_is_spent() {
        let p = policy(RestartMode::OnFailure);
        let now = 1_000_000;
        let fail = Ending::Exited { code: 3 };
        assert_eq!(
            decide(&p, fail, &[], now, 0.0),
            Decision::Restart {
                attempt: 1,
                not_before_ms: now + 100
            }
        );
        assert_eq!(
            decide(&p, fail, &[now - 500, now - 200], now, 0.0),
            Decision::Restart {
                attempt: 3,
                not_before_ms: now + 400
            }
        );
        let spent = decide(&p, fail, &[now - 900, now - 500, now - 200], now, 0.0);
        assert!(
            matches!(&spent, Decision::GiveUp { reason } if reason.contains("restart budget exhausted")),
            "{spent:?}"
        );
        // Restarts older than the window no longer count.
        let old = now - 61_000;
        assert_eq!(
            decide(&p, fail, &[old, old, now - 10], now, 0.0),
            Decision::Restart {
                attempt: 2,
                not_before_ms: now + 200
            }
        );
        let mut none = p.clone();
        none.max_restarts = 0;
        assert!(matches!(
            decide(&none, fail, &[], now, 0.0),
            Decision::GiveUp { .. }
        ));
    }

    #[test]
    fn jitter_is_stable_and_in_range() {
        let a = jitter_of("0190-abc");
        assert_eq!(a, jitter_of("0190-abc"));
        assert_ne!(a, jitter_of("0190-abd"));
        for s in ["", "x", "some event id", "another"] {
            let j = jitter_of(s);
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
