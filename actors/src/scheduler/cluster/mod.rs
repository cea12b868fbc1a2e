//! The cluster as placement sees it, and the pure choice of a node: filter by readiness,
//! runtime class, labels and free capacity, then score (bin-pack or spread). The choice
//! goes through [`index`] (a few nodes of an ordered index), and through a scan of every
//! node only when the index cannot settle it; both choose the same node. No I/O, no clock.

mod index;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use bulkhead_schemas::Resources;
use bulkhead_schemas::spec::{PlacementStrategy, RuntimeClass};

pub use index::Overlay;
use index::{Index, Room, room};

/// One node as placement sees it.
#[derive(Clone, Debug)]
pub struct NodeSlot {
    pub name: Arc<str>,
    pub capacity: Resources,
    /// What the log says is placed there (scheduled or running replicas).
    pub allocated: Resources,
    pub classes: Vec<RuntimeClass>,
    pub labels: BTreeMap<String, String>,
    /// Heartbeating and accepting work.
    pub ready: bool,
    /// Being drained: nothing new goes there.
    pub cordoned: bool,
}

impl NodeSlot {
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.allocated)
    }

    /// Whether placement may use the node at all.
    fn eligible(&self) -> bool {
        self.ready && !self.cordoned
    }
}

/// What one replica needs.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub need: Resources,
    pub class: RuntimeClass,
    pub selector: &'a BTreeMap<String, String>,
    pub strategy: PlacementStrategy,
    /// Nodes to use only when no other fits: where the workload's other replicas run (a
    /// set: a workload may have a thousand, and a placement looks at each node it walks) …
    pub avoid: &'a Names,
    /// … and the node this replica last failed on.
    pub prefer_not: Option<&'a Arc<str>>,
    /// Nodes never to use (where the replica's node was lost).
    pub exclude: &'a [Arc<str>],
}

/// A set of node names.
pub type Names = HashSet<Arc<str>>;

/// No node: what a request that avoids none names.
pub fn no_nodes() -> &'static Names {
    static NONE: LazyLock<Names> = LazyLock::new(Names::new);
    &NONE
}

impl Request<'_> {
    /// What the node is to this request once it has `free` left: unusable, usable but
    /// avoided, or preferred. Readiness and class are the caller's to check.
    fn judge(&self, node: &NodeSlot, free: &Resources) -> Fit {
        if self.exclude.contains(&node.name) || !self.labels_match(node) {
            Fit::No
        } else {
            self.room_for(node, free)
        }
    }

    /// Whether the node carries every label the request's selector names.
    fn labels_match(&self, node: &NodeSlot) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
    }

    /// [`Request::judge`] of a node already known to be neither excluded nor of other
    /// labels: whether `free` takes the replica, and whether the node is avoided.
    fn room_for(&self, node: &NodeSlot, free: &Resources) -> Fit {
        if !self.need.fits_in(free) {
            Fit::No
        } else if self.prefer_not == Some(&node.name) || self.avoid.contains(&node.name) {
            Fit::Avoided
        } else {
            Fit::Preferred
        }
    }

    /// Whether candidate `a` (preferred, room, node index) beats `b`: a preferred node
    /// first, then the least room left (bin-pack) or the most (spread), then the node
    /// known first.
    fn beats(&self, a: (bool, Room, usize), b: (bool, Room, usize)) -> bool {
        if a.0 != b.0 {
            return a.0;
        }
        if a.1 != b.1 {
            return match self.strategy {
                PlacementStrategy::Binpack => a.1 < b.1,
                PlacementStrategy::Spread => a.1 > b.1,
            };
        }
        a.2 < b.2
    }
}

/// A node as a request sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fit {
    No,
    Avoided,
    Preferred,
}

/// The nodes known to the scheduler, in a stable order (first seen first).
#[derive(Default, Debug)]
pub struct Cluster {
    nodes: Vec<NodeSlot>,
    by_name: HashMap<Arc<str>, usize>,
    /// The eligible nodes with a slot free, by class and room left.
    index: Index,
}

impl Cluster {
    pub fn nodes(&self) -> &[NodeSlot] {
        &self.nodes
    }

    pub fn get(&self, name: &str) -> Option<&NodeSlot> {
        self.by_name.get(name).and_then(|&i| self.nodes.get(i))
    }

    /// The node's index, its slot created (not ready, no capacity) when first named.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let name: Arc<str> = Arc::from(name);
        self.nodes.push(NodeSlot {
            name: name.clone(),
            capacity: Resources::default(),
            allocated: Resources::default(),
            classes: Vec::new(),
            labels: BTreeMap::new(),
            ready: false,
            cordoned: false,
        });
        self.by_name.insert(name, self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    /// Changes the node's slot with `f` (creating it when first named), keeping the index
    /// true; returns what `f` returns.
    pub fn update<R>(&mut self, name: &str, f: impl FnOnce(&mut NodeSlot) -> R) -> R {
        let i = self.slot(name);
        self.index.remove(i, &self.nodes[i]);
        let r = f(&mut self.nodes[i]);
        self.index.insert(i, &self.nodes[i]);
        r
    }

    /// The shared name of a node (so projections keep one copy per node).
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        let i = self.slot(name);
        self.nodes[i].name.clone()
    }

    pub fn allocate(&mut self, node: &str, need: &Resources) {
        self.update(node, |slot| slot.allocated = slot.allocated.add(need));
    }

    pub fn release(&mut self, node: &str, need: &Resources) {
        self.update(node, |slot| {
            slot.allocated = slot.allocated.saturating_sub(need)
        });
    }

    /// Chooses a node for `req`, counting `overlay` as already allocated: the preferred
    /// node with the least room left (bin-pack) or the most (spread), room being the
    /// shares of its memory and CPU free before this replica.
    pub fn place(&self, req: &Request<'_>, overlay: &Overlay) -> Result<usize, Unschedulable> {
        match self.index.choose(&self.nodes, req, overlay) {
            Some(i) => Ok(i),
            None => self.scan(req, overlay),
        }
    }

    /// [`Cluster::place`] by looking at every node; and, when none fits, why. What `place`
    /// falls back to, and a benchmark's baseline.
    pub fn scan(&self, req: &Request<'_>, overlay: &Overlay) -> Result<usize, Unschedulable> {
        let mut tally = Tally::default();
        let mut best: Option<(bool, Room, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.eligible() || req.exclude.contains(&n.name) {
                continue;
            }
            tally.ready += 1;
            if !n.classes.contains(&req.class) {
                continue;
            }
            tally.with_class += 1;
            if !req.labels_match(n) {
                continue;
            }
            tally.matching += 1;
            let free = overlay.free(i, n);
            if tally.largest_free.memory_mb < free.memory_mb {
                tally.largest_free = free;
            }
            let preferred = match req.room_for(n, &free) {
                Fit::No => continue,
                Fit::Avoided => false,
                Fit::Preferred => true,
            };
            let candidate = (preferred, room(&n.capacity, &free), i);
            if best.is_none_or(|b| req.beats(candidate, b)) {
                best = Some(candidate);
            }
        }
        best.map(|(_, _, i)| i)
            .ok_or_else(|| tally.explain(req, self.nodes.len()))
    }
}

#[derive(Default)]
struct Tally {
    ready: usize,
    with_class: usize,
    matching: usize,
    largest_free: Resources,
}

impl Tally {
    fn explain(&self, req: &Request<'_>, known: usize) -> Unschedulable {
        let reason = if self.ready == 0 {
            format!("no ready node ({known} known)")
        } else if self.with_class == 0 {
            format!(
                "no ready node offers runtime class {} ({} ready nodes)",
                req.class, self.ready
            )
        } else if self.matching == 0 {
            let sel: Vec<_> = req
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(
                "no node offering {} matches node_selector {{{}}} ({} offer the class)",
                req.class,
                sel.join(","),
                self.with_class
            )
        } else {
            format!(
                "insufficient capacity: {} node(s) offer {} and match, none has {} MiB, {}m CPU and a slot free (most free: {} MiB, {}m, {} slots)",
                self.matching,
                req.class,
                req.need.memory_mb,
                req.need.cpu_millicores,
                self.largest_free.memory_mb,
                self.largest_free.cpu_millicores,
                self.largest_free.slots
            )
        };
        Unschedulable { reason }
    }
}

/// No node can take the replica now; `reason` says which filter emptied the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unschedulable {
    pub reason: String,
}

#[cfg(test)]
mod tests;
