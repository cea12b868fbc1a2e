//! Each node's budget of entries in the heartbeat bucket, as its watchers hear them: a node
//! may write its own key as often as it likes (pacing is cooperative, and nats-server has no
//! publish rate limit), so a watcher hands on at most [`RATE_PER_SEC`] of a node's entries a
//! second, with a burst of [`BURST`], and drops the rest unread. A node beating as its
//! interval allows never reaches the budget (twice the fastest interval a heartbeat may
//! state); a flood costs the watcher a count, not a decoding, a message to its actor and,
//! for junk, a line in the log each. Dropped entries are reported at once, then at most
//! every [`REPORT_EVERY_MS`] while the flood goes on. Pure: time is an argument.

use std::collections::HashMap;

use crate::node::limits::HEARTBEAT_MS;

/// Entries of one node handed on a second at most: twice the fastest interval allowed.
pub const RATE_PER_SEC: u64 = 2 * 1000 / *HEARTBEAT_MS.start();
/// Entries of one node handed on at once at most (a second's worth: beats the server held
/// and delivers together).
pub const BURST: u64 = RATE_PER_SEC;
/// How often a flood that goes on is reported again.
pub const REPORT_EVERY_MS: u64 = 10_000;

/// A budget's unit: one entry is this many parts (the refill is whole parts a millisecond).
const PART: u64 = 1000;

/// What the budget says of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Within the budget: hand it on.
    Pass,
    /// Past it: drop it unread.
    Drop,
    /// Past it, and a report is due: drop it, and tell of this flood.
    Report(Flood),
}

/// A node that wrote past its budget: how many entries were dropped since the last report
/// (this one included), over how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flood {
    pub node: String,
    pub dropped: u64,
    pub over_ms: u64,
}

impl std::fmt::Display for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} wrote {} heartbeat entries past its budget of {RATE_PER_SEC} a second \
             in {} ms: dropped unread (pacing is cooperative; revoke a node that floods)",
            self.node, self.dropped, self.over_ms
        )
    }
}

/// One node's bucket.
#[derive(Debug)]
struct Bucket {
    /// What is left, in parts.
    parts: u64,
    /// When it was last refilled (Unix ms).
    at_ms: u64,
    /// Dropped since the last report.
    dropped: u64,
    /// When the first of those was dropped (Unix ms).
    since_ms: u64,
    /// When the flood was last reported (None: never, and the next drop is told at once).
    reported_ms: Option<u64>,
}

/// Every node's budget. Keys are the bucket's keys: each node can write only its own, so
/// there are as many as nodes enrolled; one is kept after its key is deleted (a node that
/// deletes its key and writes it again must not start a fresh budget).
#[derive(Debug, Default)]
pub struct BeatBudget {
    nodes: HashMap<String, Bucket>,
}

impl BeatBudget {
    /// Whether the entry `node` wrote, heard at `now_ms`, is handed on.
    pub fn admit(&mut self, node: &str, now_ms: u64) -> Admit {
        let b = match self.nodes.get_mut(node) {
            Some(b) => b,
            None => self.nodes.entry(node.to_owned()).or_insert(Bucket {
                parts: BURST * PART,
                at_ms: now_ms,
                dropped: 0,
                since_ms: now_ms,
                reported_ms: None,
            }),
        };
        let elapsed = now_ms.saturating_sub(b.at_ms);
        b.parts = b
            .parts
            .saturating_add(elapsed.saturating_mul(RATE_PER_SEC))
            .min(BURST * PART);
        b.at_ms = b.at_ms.max(now_ms);
        if b.parts >= PART {
            b.parts -= PART;
            return Admit::Pass;
        }
        if b.dropped == 0 {
            b.since_ms = now_ms;
        }
        b.dropped += 1;
        let due = b
            .reported_ms
            .is_none_or(|r| now_ms.saturating_sub(r) >= REPORT_EVERY_MS);
        if !due {
            return Admit::Drop;
        }
        b.reported_ms = Some(now_ms);
        Admit::Report(Flood {
            node: node.to_owned(),
            dropped: std::mem::take(&mut b.dropped),
            over_ms: now_ms.saturating_sub(b.since_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of `node` every `every_ms` from `from` for `n` entries: how many passed, and
    /// the reports.
    fn write(
        b: &mut BeatBudget,
        node: &str,
        from: u64,
        every_ms: u64,
        n: u64,
    ) -> (u64, Vec<Flood>) {
        let mut passed = 0;
        let mut reports = Vec::new();
        for i in 0..n {
            match b.admit(node, from + i * every_ms) {
                Admit::Pass => passed += 1,
                Admit::Drop => {}
                Admit::Report(f) => reports.push(f),
            }
        }
        (passed, reports)
    }

    #[test]
    fn a_node_at_the_fastest_interval_allowed_is_never_dropped() {
        let mut b = BeatBudget::default();
        let fastest = *HEARTBEAT_MS.start();
        let (passed, reports) = write(&mut b, "n1", 1_000, fastest, 100_000);
        assert_eq!((passed, reports), (100_000, vec![]));
        // Nor a second of beats held by the server and delivered at once, after a pause.
        let (passed, _) = write(&mut b, "n1", 3_000_000, 0, BURST);
        assert_eq!(passed, BURST);
    }

    #[test]
    fn a_flood_passes_the_budget_and_is_reported_at_once_then_every_ten_seconds() {
        let mut b = BeatBudget::default();
        // 100,000 entries a second for 25 s: 2.5 million.
        let (passed, reports) = write(&mut b, "n2", 0, 0, 1);
        assert_eq!((passed, reports.len()), (1, 0));
        let mut passed = 0;
        let mut reports = Vec::new();
        for ms in 0..25_000u64 {
            let (p, r) = write(&mut b, "n2", ms, 0, 100);
            passed += p;
            reports.extend(r);
        }
        // The burst, then the rate: about 200 a second.
        assert!(
            passed <= BURST + RATE_PER_SEC * 25 + 1,
            "{passed} handed on in 25 s"
        );
        assert!(passed >= RATE_PER_SEC * 25, "{passed} handed on in 25 s");
        let at: Vec<u64> = reports.iter().map(|f| f.over_ms).collect();
        assert_eq!(reports.len(), 3, "at once, after 10 s and 20 s: {at:?}");
        assert_eq!(reports[0].dropped, 1, "the first drop is told at once");
        let over = reports[1].over_ms;
        assert!(
            (REPORT_EVERY_MS - 10..=REPORT_EVERY_MS).contains(&over),
            "{over} ms"
        );
        let dropped: u64 = reports.iter().map(|f| f.dropped).sum();
        assert!(
            dropped > 1_900_000,
            "every drop counted in a report: {dropped}"
        );
        assert!(reports[1].to_string().contains("node n2 wrote"));
    }

    #[test]
    fn each_node_has_a_budget_of_its_own() {
        let mut b = BeatBudget::default();
        let (_, flood) = write(&mut b, "n2", 0, 0, 10_000);
        assert_eq!(flood.len(), 1);
        let (passed, reports) = write(&mut b, "n1", 0, 100, 100);
        assert_eq!((passed, reports), (100, vec![]), "n1 pays nothing for n2");
    }

    #[test]
    fn a_flood_after_a_quiet_spell_is_reported_at_once() {
        let mut b = BeatBudget::default();
        let (_, first) = write(&mut b, "n2", 0, 0, 1_000);
        assert_eq!(first.len(), 1);
        // Quiet for a minute (beats at its interval), then a flood again.
        let (passed, quiet) = write(&mut b, "n2", 1_000, 100, 600);
        assert_eq!((passed, quiet.len()), (600, 0));
        let (_, again) = write(&mut b, "n2", 70_000, 0, 1_000);
        assert_eq!(again.len(), 1, "told at once, not ten seconds later");
        assert_eq!(
            (again[0].dropped, again[0].over_ms),
            (800, 70_000),
            "the last flood's 799 untold drops counted with it, from when they began"
        );
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let mut b = BeatBudget::default();
        let _ = write(&mut b, "n2", 50_000, 0, BURST);
        assert_eq!(
            b.admit("n2", 10_000),
            Admit::Report(Flood {
                node: "n2".into(),
                dropped: 1,
                over_ms: 0,
            })
        );
        assert_ne!(b.admit("n2", 50_000), Admit::Pass, "nothing refilled");
    }
}
