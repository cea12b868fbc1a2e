//! The one rule that decides a node went silent: no heartbeat for [`MISSED_BEATS`] of its
//! own intervals, or for a caller's timeout when that is longer. The scheduler stops
//! placing on a silent node; the failover declares it lost, unless most of the cluster fell
//! silent at once ([`Silence`]): then the watcher, or the server between it and the nodes,
//! is the likelier fault. Pure: time is an argument. Work on failure detection changes this
//! file only.

use std::collections::{HashMap, HashSet};

/// Which nodes heartbeat, and which fell silent. Times are Unix ms of arrival, so node
/// clocks do not matter.
#[derive(Debug, Default)]
pub struct NodeWatch {
    last: HashMap<String, u64>,
    /// Each node's heartbeat interval, as it last said.
    interval: HashMap<String, u64>,
    /// Declared lost, and when (a mass silence counts those it declared).
    lost: HashMap<String, u64>,
    /// Given a fresh interval by a mass silence that eased, and silent since: the next one
    /// gives them none (recurring stalls must not keep a dead node alive).
    refreshed: HashSet<String>,
    /// The same for the watcher hearing again (a watch that comes and goes). Apart from the
    /// above: after a server restart, hearing again and then the silence easing as beats come
    /// back are both needed (at most two fresh intervals until a node beats).
    heard_again: HashSet<String>,
    /// The watcher's ears that hear nothing now (its connection, its watch): while any is
    /// deaf, no one is silent.
    deaf: Vec<Ear>,
    /// Since when the first of them has been deaf.
    deaf_since: u64,
    /// When the watcher's clock last ticked ([`NodeWatch::tick`]).
    ticked: Option<u64>,
    /// The mass silence under way, if any.
    episode: Option<Episode>,
    /// How much of the cluster was quiet at the last [`NodeWatch::declare`].
    silence: Silence,
}

/// A mass silence: since when, and when a node was last declared lost during it (the first
/// waits [`TRICKLE_MS`] from its start).
#[derive(Clone, Copy, Debug)]
struct Episode {
    since: u64,
    trickled: u64,
}

/// What a watcher hears heartbeats through: its connection to NATS, and its watch of the
/// heartbeat bucket (which can fail or end on its own while the connection stays up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ear {
    Connection,
    Watch,
    /// The watcher itself: its process not run for a while (starved of CPU, stopped, its
    /// machine paused), seen as a tick far later than its period ([`NodeWatch::tick`]).
    Itself,
}

/// How much of the cluster is quiet (silent for more than half of its limit) at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Silence {
    /// Fewer than [`MASS_MIN`] nodes, or less than [`MASS_SHARE_PCT`] % of them: each silent
    /// node is its own fault, and is declared lost.
    #[default]
    Normal,
    /// Most of the cluster, not all: one silent node is declared lost every [`TRICKLE_MS`]
    /// (the first one [`TRICKLE_MS`] after it began), the longest silent first.
    Mass { quiet: usize, watched: usize },
    /// Every node at once (and at least [`MASS_MIN`]): none is declared lost.
    Total { quiet: usize },
}

impl Silence {
    /// How grave: a silence that eases steps down.
    fn rank(self) -> u8 {
        match self {
            Silence::Normal => 0,
            Silence::Mass { .. } => 1,
            Silence::Total { .. } => 2,
        }
    }
}

/// What [`NodeWatch::declare`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// Declared lost now, each with its silence (ms).
    pub lost: Vec<(String, u64)>,
    /// Silent past their limit, but held back by a mass silence.
    pub held: usize,
    pub silence: Silence,
    /// The silence at the ask before (a change is worth saying).
    pub was: Silence,
}

/// The longest heartbeat interval the silence rule believes: the longest a node may
/// announce (10 s; a heartbeat stating more is set aside before it gets here).
pub const MAX_INTERVAL_MS: u64 = *crate::node::limits::HEARTBEAT_MS.end();

/// A node is silent only after missing this many heartbeats in a row, whatever the timeout.
pub const MISSED_BEATS: u64 = 3;

/// A node's interval counts as at least this (a heartbeat saying 0 or 1 ms is not trusted
/// to mean the node is gone after 3 ms).
pub const MIN_INTERVAL_MS: u64 = 100;

/// A mass silence needs at least this many quiet nodes (Kubernetes' partial disruption
/// needs more than two: a cluster of one or two nodes fails over as it always did).
pub const MASS_MIN: usize = 3;

/// ... and at least this share (percent) of the nodes watched (not lost before the mass
/// silence began; Kubernetes' `--unhealthy-zone-threshold`, 0.55).
pub const MASS_SHARE_PCT: usize = 55;

/// During a mass silence that is not total, one node is declared lost at most this often.
pub const TRICKLE_MS: u64 = 10_000;

/// A watcher's tick later than its period by more than this: the watcher itself was not run
/// in between, and heard nothing ([`NodeWatch::tick`]).
pub const PAUSED_MS: u64 = 500;

impl NodeWatch {
    /// A heartbeat arrived from a node beating every `interval_ms` (0: unknown). Returns
    /// true when the node had been declared lost (it is back).
    pub fn beat(&mut self, node: &str, now_ms: u64, interval_ms: u64) -> bool {
        // Never earlier than a fresh interval it was given (a beat stamped before it).
        let last = self.last.entry(node.to_owned()).or_insert(now_ms);
        *last = (*last).max(now_ms);
        self.refreshed.remove(node);
        self.heard_again.remove(node);
        // A heartbeat that claims an endless interval must not make its node never silent.
        self.interval
            .insert(node.to_owned(), interval_ms.min(MAX_INTERVAL_MS));
        self.lost.remove(node).is_some()
    }

    /// Watch a node that has not beaten yet (known from the log), as if it beat now, at the
    /// interval its last heartbeat stated when that is known (else the caller's timeout is
    /// its limit until it beats).
    pub fn expect(&mut self, node: &str, now_ms: u64, interval_ms: Option<u64>) {
        self.last.entry(node.to_owned()).or_insert(now_ms);
        if let Some(every) = interval_ms {
            self.interval
                .entry(node.to_owned())
                .or_insert(every.min(MAX_INTERVAL_MS));
        }
    }

    /// Nodes silent for longer than `timeout_ms` (or than [`MISSED_BEATS`] of their own
    /// intervals, when that is longer), each reported once, with its silence. The
    /// scheduler asks this with no timeout (three missed beats take a node out of
    /// placement); the failover asks [`NodeWatch::declare`].
    pub fn silent(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<(String, u64)> {
        if !self.deaf.is_empty() {
            return Vec::new();
        }
        let gone = self.past_limit(now_ms, timeout_ms);
        self.mark_lost(&gone, now_ms);
        gone
    }

    /// The nodes to declare lost now: those [`NodeWatch::silent`] would report, unless most
    /// of the cluster is quiet at once ([`Silence`]). A node held back stays silent and is
    /// reported when its turn comes, or a limit after the mass silence ends if it has not
    /// beaten by then.
    pub fn declare(&mut self, now_ms: u64, timeout_ms: u64) -> Declared {
        if !self.deaf.is_empty() {
            let silence = self.silence;
            return Declared {
                silence,
                was: silence,
                ..Declared::default()
            };
        }
        let silence = self.silence(now_ms, timeout_ms);
        let before = std::mem::replace(&mut self.silence, silence);
        if silence.rank() < before.rank() {
            // The silence eases: beats are coming back, spread over an interval. As when
            // the watcher hears again, every node gets a fresh interval, so one whose beat
            // is still on its way is not taken for lost; none is declared this time. A node
            // that has not beaten since the last such refresh gets none.
            fresh_intervals(&mut self.last, &mut self.refreshed, now_ms, None);
            if silence == Silence::Normal {
                self.episode = None;
            }
            return Declared {
                silence,
                was: before,
                ..Declared::default()
            };
        }
        let mut over = self.past_limit(now_ms, timeout_ms);
        let past = over.len();
        let lost = match silence {
            Silence::Normal => over,
            Silence::Total { .. } => {
                self.episode.get_or_insert(Episode {
                    since: now_ms,
                    trickled: now_ms,
                });
                Vec::new()
            }
            Silence::Mass { .. } => {
                let ep = self.episode.get_or_insert(Episode {
                    since: now_ms,
                    trickled: now_ms,
                });
                if over.is_empty() || now_ms.saturating_sub(ep.trickled) < TRICKLE_MS {
                    Vec::new()
                } else {
                    ep.trickled = now_ms;
                    // The longest silent first; equal silences by name, so the turn is stable.
                    over.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    over.truncate(1);
                    over
                }
            }
        };
        let held = past - lost.len();
        self.mark_lost(&lost, now_ms);
        Declared {
            lost,
            held,
            silence,
            was: before,
        }
    }

    /// How much of the cluster is quiet at once: the nodes watched and not lost, and, while
    /// any of those is quiet, the nodes declared lost during the mass silence under way (so it
    /// does not end by its own declarations, nor outlast the silence of the nodes left).
    fn silence(&self, now_ms: u64, timeout_ms: u64) -> Silence {
        let quiet_left = self
            .last
            .iter()
            .filter(|(n, at)| {
                !self.lost.contains_key(*n)
                    && now_ms.saturating_sub(**at).saturating_mul(2) > self.limit(n, timeout_ms)
            })
            .count();
        let lost_in_it = match self.episode {
            Some(e) if quiet_left > 0 => self.lost.values().filter(|at| **at >= e.since).count(),
            _ => 0,
        };
        let watched = self.last.len() - self.lost.len() + lost_in_it;
        let quiet = quiet_left + lost_in_it;
        if quiet < MASS_MIN {
            Silence::Normal
        } else if quiet == watched {
            Silence::Total { quiet }
        } else if quiet * 100 >= watched * MASS_SHARE_PCT {
            Silence::Mass { quiet, watched }
        } else {
            Silence::Normal
        }
    }

    /// How long a node may be silent before it is: `timeout_ms`, or [`MISSED_BEATS`] of its
    /// own interval when that is longer.
    fn limit(&self, node: &str, timeout_ms: u64) -> u64 {
        let every = self.interval.get(node).copied().unwrap_or(0);
        let every = every.max(MIN_INTERVAL_MS);
        timeout_ms.max(every.saturating_mul(MISSED_BEATS))
    }

    /// Nodes past their limit and not yet lost, with their silence.
    fn past_limit(&self, now_ms: u64, timeout_ms: u64) -> Vec<(String, u64)> {
        self.last
            .iter()
            .filter(|(n, at)| {
                now_ms.saturating_sub(**at) > self.limit(n, timeout_ms)
                    && !self.lost.contains_key(*n)
            })
            .map(|(n, at)| (n.clone(), now_ms.saturating_sub(*at)))
            .collect()
    }

    fn mark_lost(&mut self, nodes: &[(String, u64)], now_ms: u64) {
        for (n, _) in nodes {
            self.lost.insert(n.clone(), now_ms);
        }
    }

    /// One of the watcher's ears is cut off at `now_ms`: until it hears again, a node's
    /// silence is not the node's.
    pub fn blind(&mut self, ear: Ear, now_ms: u64) {
        if self.deaf.is_empty() {
            self.deaf_since = now_ms;
        }
        if !self.deaf.contains(&ear) {
            self.deaf.push(ear);
        }
    }

    /// The ear hears again at `now_ms`. Once no ear is deaf, every node gets a fresh
    /// interval from then (a silence that began while the watcher was deaf is not the
    /// node's), except a node that has not beaten since the last one hearing again gave it:
    /// the time the watcher was deaf is taken off its silence, and the rest counts. A watch
    /// that ends and starts again, however often, keeps no dead node alive.
    pub fn hears_again(&mut self, ear: Ear, now_ms: u64) {
        let was_deaf = !self.deaf.is_empty();
        self.deaf.retain(|e| *e != ear);
        if !was_deaf || !self.deaf.is_empty() {
            return;
        }
        let since = self.deaf_since.min(now_ms);
        fresh_intervals(&mut self.last, &mut self.heard_again, now_ms, Some(since));
    }

    /// The watcher's clock ticked at `now_ms`, every `period_ms`. A tick more than
    /// [`PAUSED_MS`] late means the watcher was not run since the tick was due: heartbeats
    /// that reached it meanwhile are still unread behind this tick, so that time is its own
    /// deafness, not the nodes' silence (HashiCorp's Lifeguard: a member slow to process
    /// messages is no judge of the others). Every node gets a fresh interval from now, once
    /// until it beats, as when an ear hears again. Returns how late the tick was, if it was.
    pub fn tick(&mut self, now_ms: u64, period_ms: u64) -> Option<u64> {
        let before = self.ticked;
        self.ticked = Some(before.map_or(now_ms, |b| b.max(now_ms)));
        let due = before?.saturating_add(period_ms);
        let late = now_ms.saturating_sub(due);
        if late <= PAUSED_MS {
            return None;
        }
        self.blind(Ear::Itself, due);
        self.hears_again(Ear::Itself, now_ms);
        Some(late)
    }

    pub fn is_lost(&self, node: &str) -> bool {
        self.lost.contains_key(node)
    }

    /// The nodes declared lost and silent since.
    pub fn lost(&self) -> Vec<String> {
        self.lost.keys().cloned().collect()
    }
}

/// Every node's silence starts again at `now_ms` at the latest, once until it beats (`given`
/// holds those that had it so). A node that had it already keeps its silence, less the time
/// from `deaf_since` (if the watcher was deaf) to `now_ms` not already behind its last beat.
fn fresh_intervals(
    last: &mut HashMap<String, u64>,
    given: &mut HashSet<String>,
    now_ms: u64,
    deaf_since: Option<u64>,
) {
    for (n, at) in last {
        if given.insert(n.clone()) {
            *at = (*at).max(now_ms);
        } else if let Some(since) = deaf_since {
            *at = at.saturating_add(now_ms.saturating_sub((*at).max(since)));
        }
    }
}

#[cfg(test)]
mod tests;
