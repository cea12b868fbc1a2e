//! The workload events a service stored itself, by log sequence: its reader of the log
//! passes them by unparsed and unverified (the service applied each as its append came
//! back, so the log's copy would be a repeat), once the stored bytes hash to what it wrote.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bulkhead_schemas::event::Hash;

/// Own events remembered at most; past it the oldest are forgotten (their copies in the
/// log are then read as any other writer's: slower, not wrong).
const MAX_HELD: usize = 200_000;

/// Shared by a service's log (which notes what it stored) and its follower (which takes
/// each as it passes it).
#[derive(Clone, Default)]
pub struct OwnWrites(Arc<Mutex<BTreeMap<u64, Hash>>>);

impl OwnWrites {
    /// Notes events this service stored: each one's sequence and hash.
    pub fn note(&self, stored: impl IntoIterator<Item = (u64, Hash)>) {
        let mut held = self.lock();
        held.extend(stored);
        while held.len() > MAX_HELD {
            held.pop_first();
        }
    }

    /// The hash this service stored at `seq`, if it did; what it stored before `seq` is
    /// forgotten too (a reader goes through the log in order: it has passed those).
    pub fn take(&self, seq: u64) -> Option<Hash> {
        let mut held = self.lock();
        while let Some(entry) = held.first_entry()
            && *entry.key() < seq
        {
            entry.remove();
        }
        held.remove(&seq)
    }

    /// Own events noted and not yet passed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Hash>> {
        // A panic while the lock was held leaves a map that is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_event_is_taken_once_and_what_came_before_is_forgotten() {
        let own = OwnWrites::default();
        own.note([(5, [5; 32]), (7, [7; 32]), (9, [9; 32])]);
        assert_eq!(own.take(4), None);
        assert_eq!(own.take(7), Some([7; 32]));
        assert_eq!(own.take(7), None, "taken once");
        // 5 was passed on the way to 7.
        assert_eq!(own.take(5), None);
        assert_eq!(own.len(), 1);
        assert_eq!(own.take(10), None);
        assert!(own.is_empty(), "9 passed");
    }

    #[test]
    fn past_its_bound_the_oldest_are_forgotten() {
        let own = OwnWrites::default();
        own.note((1..=MAX_HELD as u64 + 10).map(|s| (s, [0; 32])));
        assert_eq!(own.len(), MAX_HELD);
        let mut held = own.0.lock().unwrap();
        assert_eq!(held.first_entry().map(|e| *e.key()), Some(11));
    }
}
