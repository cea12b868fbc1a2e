//! What is set aside: an event or message that a reader will not apply (malformed, about
//! a workload the log never admitted, naming a replica it does not have, a command on an
//! unknown subject). Set aside is never fatal: it is counted by reason, logged once with
//! its sequence, and the latest few are kept for whoever asks (stats, the API).
//!
//! One counter for everything refused, whatever refused it; the security work extends it
//! (bad signatures, writers without authority) rather than adding another.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Display;

use tracing::warn;

/// How many of the latest set-aside items are kept for display.
pub const RECENT: usize = 100;

/// One item set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aside {
    /// Stream sequence (of the event log, or of the stream the message came from).
    pub seq: u64,
    /// The subject it was stored under (or, for an event, the subject it names).
    pub subject: String,
    /// A short stable code: `malformed`, `unknown_workload`, `bad_replica`, ….
    pub code: &'static str,
    /// What was wrong, in words.
    pub reason: String,
}

impl Aside {
    pub fn new(seq: u64, subject: &str, code: &'static str, reason: impl Display) -> Aside {
        Aside {
            seq,
            subject: subject.to_owned(),
            code,
            reason: reason.to_string(),
        }
    }
}

/// The count of what was set aside, by code, and the latest items.
#[derive(Clone, Debug, Default)]
pub struct SetAside {
    total: u64,
    by_code: BTreeMap<&'static str, u64>,
    recent: VecDeque<Aside>,
}

impl SetAside {
    /// Counts and logs one item.
    pub fn record(&mut self, a: Aside) {
        warn!(seq = a.seq, subject = %a.subject, code = a.code, reason = %a.reason, "set aside");
        self.total += 1;
        *self.by_code.entry(a.code).or_default() += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(a);
    }

    /// Counts and logs each item.
    pub fn record_all(&mut self, items: impl IntoIterator<Item = Aside>) {
        for a in items {
            self.record(a);
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many of each code.
    pub fn by_code(&self) -> &BTreeMap<&'static str, u64> {
        &self.by_code
    }

    /// The latest items, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &Aside> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_code_and_keeps_only_the_latest() {
        let mut s = SetAside::default();
        for i in 0..(RECENT as u64 + 5) {
            s.record(Aside::new(
                i,
                "bulkhead.evt.wl.x.started",
                "unknown_workload",
                "no x",
            ));
        }
        s.record(Aside::new(
            999,
            "bulkhead.evt.wl.y.junk",
            "malformed",
            "not JSON",
        ));
        assert_eq!(s.total(), RECENT as u64 + 6);
        assert_eq!(s.by_code()["unknown_workload"], RECENT as u64 + 5);
        assert_eq!(s.by_code()["malformed"], 1);
        assert_eq!(s.recent().count(), RECENT);
        assert_eq!(s.recent().last().map(|a| a.seq), Some(999));
        assert_eq!(
            s.recent().next().map(|a| a.seq),
            Some(6),
            "the oldest went first"
        );
    }
}
