//! The placement index: each runtime class's eligible nodes with a slot free, ordered by
//! the room they have left, so that a placement looks at the first few nodes that could
//! take it rather than at every node; and the overlay (what a round decided and has not
//! written yet), ordered the same way. When the first [`LOOK`] nodes cannot take the
//! replica (a selector few nodes match, nodes full on one resource) the index gives up and
//! the scan of every node decides: the index only ever answers what the scan would.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bulkhead_schemas::Resources;
use bulkhead_schemas::spec::{PlacementStrategy, RuntimeClass};

use super::{Fit, NodeSlot, Request};

/// The room a node has left: the share of its memory free plus the share of its CPU free
/// (0 to 2; a resource it reports none of counts 0), as the bits of that non-negative
/// `f64`, which order as the numbers do.
pub type Room = u64;

pub fn room(capacity: &Resources, free: &Resources) -> Room {
    let share = |f: u64, c: u64| if c == 0 { 0.0 } else { f as f64 / c as f64 };
    let r = share(free.memory_mb, capacity.memory_mb)
        + share(free.cpu_millicores, capacity.cpu_millicores);
    r.to_bits()
}

/// Nodes looked at that cannot take the replica before the index leaves the choice to the
/// scan (nodes the request avoids are not counted: they are as many as it lists).
const LOOK: usize = 64;

/// A candidate: preferred (not avoided), its room, its node index.
type Candidate = (bool, Room, usize);

/// Eligible nodes with a slot free, by runtime class offered and room left.
#[derive(Default, Debug)]
pub struct Index {
    by_class: BTreeMap<RuntimeClass, BTreeSet<(Room, usize)>>,
}

/// The room a node left with `free` is indexed under: none when placement may not use it
/// or no slot is free.
fn indexed_room(node: &NodeSlot, free: &Resources) -> Option<Room> {
    (node.eligible() && free.slots > 0).then(|| room(&node.capacity, free))
}

impl Index {
    /// Takes node `i` out (before its slot changes: its room is what it was put in under).
    pub fn remove(&mut self, i: usize, node: &NodeSlot) {
        let Some(r) = indexed_room(node, &node.free()) else {
            return;
        };
        for c in &node.classes {
            if let Some(set) = self.by_class.get_mut(c) {
                set.remove(&(r, i));
            }
        }
    }

    /// Puts node `i` in, if placement may use it and it has a slot free.
    pub fn insert(&mut self, i: usize, node: &NodeSlot) {
        let Some(r) = indexed_room(node, &node.free()) else {
            return;
        };
        for c in &node.classes {
            self.by_class.entry(*c).or_default().insert((r, i));
        }
    }

    /// The node the scan would choose for `req`, when a look at a few nodes settles it;
    /// None when it does not, or when no node fits (the scan then says why).
    pub fn choose(
        &self,
        nodes: &[NodeSlot],
        req: &Request<'_>,
        overlay: &Overlay,
    ) -> Option<usize> {
        if req.need.slots == 0 {
            return None; // a node with no slot free could take it: not in the index
        }
        let none = BTreeSet::new();
        let indexed = Walk {
            nodes,
            req,
            overlay,
            set: self.by_class.get(&req.class).unwrap_or(&none),
            overlaid: false,
        };
        let overlaid = Walk {
            set: &overlay.rooms,
            overlaid: true,
            ..indexed
        };
        let mut budget = LOOK;
        let (p1, a1) = indexed.best(&mut budget)?;
        let (p2, a2) = overlaid.best(&mut budget)?;
        [p1, p2, a1, a2]
            .into_iter()
            .flatten()
            .reduce(|x, y| if req.beats(y, x) { y } else { x })
            .map(|(_, _, i)| i)
    }
}

/// One ordered set of nodes walked for a request: the index (its nodes the overlay does
/// not touch) or the overlay's nodes.
#[derive(Clone, Copy)]
struct Walk<'a> {
    nodes: &'a [NodeSlot],
    req: &'a Request<'a>,
    overlay: &'a Overlay,
    set: &'a BTreeSet<(Room, usize)>,
    overlaid: bool,
}

impl Walk<'_> {
    /// What node `i` is to the request; None when the other walk speaks for it.
    fn fit(&self, i: usize) -> Option<Fit> {
        if self.overlay.extra.contains_key(&i) != self.overlaid {
            return None;
        }
        let n = self.nodes.get(i)?;
        if !n.eligible() || !n.classes.contains(&self.req.class) {
            return Some(Fit::No);
        }
        Some(self.req.judge(n, &self.overlay.free(i, n)))
    }

    /// The best preferred and the best avoided node of this walk; None when more than the
    /// budget's nodes were looked at.
    fn best(&self, budget: &mut usize) -> Option<(Option<Candidate>, Option<Candidate>)> {
        let order: Box<dyn Iterator<Item = &(Room, usize)>> = match self.req.strategy {
            PlacementStrategy::Binpack => Box::new(self.set.iter()),
            PlacementStrategy::Spread => Box::new(self.set.iter().rev()),
        };
        let mut avoided = None;
        for &(r, i) in order {
            match self.fit(i) {
                None => {}
                Some(Fit::Preferred) => {
                    let best = self.first_at(r, i, Fit::Preferred, budget)?;
                    return Some((Some(best), None));
                }
                Some(Fit::Avoided) if avoided.is_none() => avoided = Some((r, i)),
                // Avoided nodes are as many as the caller listed: not the budget's.
                Some(Fit::Avoided) => {}
                Some(Fit::No) => *budget = budget.checked_sub(1)?,
            }
        }
        let avoided = match avoided {
            Some((r, i)) => Some(self.first_at(r, i, Fit::Avoided, budget)?),
            None => None,
        };
        Some((None, avoided))
    }

    /// Among the nodes with room `r` that are `want` to the request, the one known first
    /// (node `i` is one): a spread walk meets equal rooms from the last node back.
    fn first_at(&self, r: Room, i: usize, want: Fit, budget: &mut usize) -> Option<Candidate> {
        let preferred = want == Fit::Preferred;
        if self.req.strategy == PlacementStrategy::Spread {
            for &(_, j) in self.set.range((r, 0)..(r, i)) {
                match self.fit(j) {
                    None => {}
                    Some(f) if f == want => return Some((preferred, r, j)),
                    Some(Fit::No) => *budget = budget.checked_sub(1)?,
                    Some(_) => {}
                }
            }
        }
        Some((preferred, r, i))
    }
}

/// Tentative allocations of a decision not yet written to the log, by node index, and the
/// nodes they touch (while a slot is left) ordered by the room left after them.
#[derive(Default, Debug, Clone)]
pub struct Overlay {
    extra: HashMap<usize, Resources>,
    rooms: BTreeSet<(Room, usize)>,
}

impl Overlay {
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// What node `i` has free once this overlay is counted.
    pub fn free(&self, i: usize, node: &NodeSlot) -> Resources {
        match self.extra.get(&i) {
            Some(extra) => node.free().saturating_sub(extra),
            None => node.free(),
        }
    }

    /// Counts `need` as allocated on node `i` of `cluster`.
    pub fn add(&mut self, cluster: &super::Cluster, i: usize, need: &Resources) {
        let Some(node) = cluster.nodes().get(i) else {
            return;
        };
        if let Some(r) = self.room_of(i, node) {
            self.rooms.remove(&(r, i));
        }
        let extra = self.extra.entry(i).or_default();
        *extra = extra.add(need);
        if let Some(r) = self.room_of(i, node) {
            self.rooms.insert((r, i));
        }
    }

    /// The room node `i` is ordered by here: none when the overlay does not touch it or
    /// leaves it no slot.
    fn room_of(&self, i: usize, node: &NodeSlot) -> Option<Room> {
        let extra = self.extra.get(&i)?;
        let free = node.free().saturating_sub(extra);
        (free.slots > 0).then(|| room(&node.capacity, &free))
    }
}

#[cfg(test)]
impl Index {
    /// Whether this index holds what one built afresh from `nodes` would.
    pub fn matches(&self, nodes: &[NodeSlot]) -> bool {
        let mut fresh = Index::default();
        for (i, n) in nodes.iter().enumerate() {
            fresh.insert(i, n);
        }
        let sets = |x: &Index| -> Vec<(RuntimeClass, BTreeSet<(Room, usize)>)> {
            x.by_class
                .iter()
                .filter(|(_, s)| !s.is_empty())
                .map(|(c, s)| (*c, s.clone()))
                .collect()
        };
        sets(self) == sets(&fresh)
    }
}
