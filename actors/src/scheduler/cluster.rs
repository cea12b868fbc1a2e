//! The cluster as placement sees it, and the pure choice of a node: filter by readiness,
//! runtime class, labels and free capacity, then score (bin-pack or spread). No I/O, no
//! clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bulkhead_schemas::Resources;
use bulkhead_schemas::spec::{PlacementStrategy, RuntimeClass};

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
}

/// What one replica needs.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub need: Resources,
    pub class: RuntimeClass,
    pub selector: &'a BTreeMap<String, String>,
    pub strategy: PlacementStrategy,
    /// Nodes to use only when no other fits (e.g. where other replicas already run).
    pub avoid: &'a [Arc<str>],
    /// Nodes never to use (where the replica's node was lost).
    pub exclude: &'a [Arc<str>],
}

/// Tentative allocations of a decision not yet written to the log, by node index.
pub type Overlay = HashMap<usize, Resources>;

/// The nodes known to the scheduler, in a stable order (first seen first).
#[derive(Default, Debug)]
pub struct Cluster {
    nodes: Vec<NodeSlot>,
    index: HashMap<Arc<str>, usize>,
}

impl Cluster {
    pub fn nodes(&self) -> &[NodeSlot] {
        &self.nodes
    }

    pub fn get(&self, name: &str) -> Option<&NodeSlot> {
        self.index.get(name).and_then(|&i| self.nodes.get(i))
    }

    /// The node's slot, created (not ready, no capacity) when first named.
    pub fn slot_mut(&mut self, name: &str) -> (usize, &mut NodeSlot) {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
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
                self.index.insert(name, self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        (i, &mut self.nodes[i])
    }

    /// The shared name of a node (so projections keep one copy per node).
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        self.slot_mut(name).1.name.clone()
    }

    pub fn allocate(&mut self, node: &str, need: &Resources) {
        let slot = self.slot_mut(node).1;
        slot.allocated = slot.allocated.add(need);
    }

    pub fn release(&mut self, node: &str, need: &Resources) {
        let slot = self.slot_mut(node).1;
        slot.allocated = slot.allocated.saturating_sub(need);
    }

    /// Chooses a node for `req`, counting `overlay` as already allocated.
    pub fn place(&self, req: &Request<'_>, overlay: &Overlay) -> Result<usize, Unschedulable> {
        let mut tally = Tally::default();
        let mut best: Option<(bool, f64, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.ready || n.cordoned || req.exclude.contains(&n.name) {
                continue;
            }
            tally.ready += 1;
            if !n.classes.contains(&req.class) {
                continue;
            }
            tally.with_class += 1;
            if !req.selector.iter().all(|(k, v)| n.labels.get(k) == Some(v)) {
                continue;
            }
            tally.matching += 1;
            let extra = overlay.get(&i).copied().unwrap_or_default();
            let free = n.free().saturating_sub(&extra);
            if tally.largest_free.memory_mb < free.memory_mb {
                tally.largest_free = free;
            }
            if !req.need.fits_in(&free) {
                continue;
            }
            let after = free.saturating_sub(&req.need);
            let ratio = |f: u64, c: u64| if c == 0 { 0.0 } else { f as f64 / c as f64 };
            let left = ratio(after.memory_mb, n.capacity.memory_mb)
                + ratio(after.cpu_millicores, n.capacity.cpu_millicores);
            let score = match req.strategy {
                PlacementStrategy::Binpack => -left,
                PlacementStrategy::Spread => left,
            };
            let preferred = !req.avoid.contains(&n.name);
            let better = match best {
                None => true,
                Some((bp, bs, _)) => (preferred, score) > (bp, bs),
            };
            if better {
                best = Some((preferred, score, i));
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn res(m: u64, c: u64, s: u32) -> Resources {
        Resources {
            memory_mb: m,
            cpu_millicores: c,
            slots: s,
        }
    }

    type NodeDef<'a> = (
        &'a str,
        Resources,
        &'a [RuntimeClass],
        &'a [(&'a str, &'a str)],
    );

    fn cluster(nodes: &[NodeDef<'_>]) -> Cluster {
        let mut c = Cluster::default();
        for (name, cap, classes, labels) in nodes {
            let (_, s) = c.slot_mut(name);
            s.capacity = *cap;
            s.classes = classes.to_vec();
            s.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            s.ready = true;
        }
        c
    }

    fn req<'a>(
        need: Resources,
        class: RuntimeClass,
        sel: &'a BTreeMap<String, String>,
        strategy: PlacementStrategy,
    ) -> Request<'a> {
        Request {
            need,
            class,
            selector: sel,
            strategy,
            avoid: &[],
            exclude: &[],
        }
    }

    const RUNC: &[RuntimeClass] = &[RuntimeClass::Runc];
    const BOTH: &[RuntimeClass] = &[RuntimeClass::Runc, RuntimeClass::Gvisor];

    #[test]
    fn filters_by_class_then_labels_then_capacity_with_reasons() {
        let mut c = cluster(&[
            ("a", res(1000, 1000, 10), RUNC, &[("zone", "x")]),
            ("b", res(4000, 4000, 10), BOTH, &[]),
        ]);
        let none = BTreeMap::new();
        let need = res(500, 100, 1);
        let o = Overlay::new();
        assert_eq!(
            c.place(
                &req(
                    need,
                    RuntimeClass::Gvisor,
                    &none,
                    PlacementStrategy::Binpack
                ),
                &o
            ),
            Ok(1)
        );
        let err = c
            .place(
                &req(need, RuntimeClass::Kata, &none, PlacementStrategy::Binpack),
                &o,
            )
            .unwrap_err();
        assert!(
            err.reason
                .contains("no ready node offers runtime class kata"),
            "{err}"
        );
        let zone_y: BTreeMap<_, _> = [("zone".to_string(), "y".to_string())].into();
        let err = c
            .place(
                &req(
                    need,
                    RuntimeClass::Runc,
                    &zone_y,
                    PlacementStrategy::Binpack,
                ),
                &o,
            )
            .unwrap_err();
        assert!(
            err.reason.contains("matches node_selector {zone=y}"),
            "{err}"
        );
        let err = c
            .place(
                &req(
                    res(5000, 1, 1),
                    RuntimeClass::Runc,
                    &none,
                    PlacementStrategy::Binpack,
                ),
                &o,
            )
            .unwrap_err();
        assert!(err.reason.starts_with("insufficient capacity"), "{err}");
        c.slot_mut("b").1.ready = false;
        c.slot_mut("a").1.ready = false;
        assert!(
            c.place(
                &req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack),
                &o
            )
            .unwrap_err()
            .reason
            .starts_with("no ready node")
        );
    }

    #[test]
    fn binpack_fills_the_fullest_and_spread_the_emptiest() {
        let mut c = cluster(&[
            ("a", res(1000, 1000, 10), RUNC, &[]),
            ("b", res(1000, 1000, 10), RUNC, &[]),
        ]);
        c.allocate("a", &res(600, 600, 1));
        let none = BTreeMap::new();
        let need = res(100, 100, 1);
        let o = Overlay::new();
        assert_eq!(
            c.place(
                &req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack),
                &o
            ),
            Ok(0)
        );
        assert_eq!(
            c.place(
                &req(need, RuntimeClass::Runc, &none, PlacementStrategy::Spread),
                &o
            ),
            Ok(1)
        );
    }

    #[test]
    fn overlay_counts_undecided_allocations_and_avoid_is_soft() {
        let c = cluster(&[
            ("a", res(1000, 1000, 1), RUNC, &[]),
            ("b", res(1000, 1000, 1), RUNC, &[]),
        ]);
        let none = BTreeMap::new();
        let need = res(100, 100, 1);
        let mut o = Overlay::new();
        o.insert(0, res(0, 0, 1));
        assert_eq!(
            c.place(
                &req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack),
                &o
            ),
            Ok(1)
        );
        let avoid = [Arc::from("a")];
        let r = Request {
            avoid: &avoid,
            ..req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack)
        };
        assert_eq!(c.place(&r, &Overlay::new()), Ok(1));
        o.insert(1, res(0, 0, 1));
        let b_full = o.clone();
        let mut only_a = b_full.clone();
        only_a.remove(&0);
        assert_eq!(
            c.place(&r, &only_a),
            Ok(0),
            "avoided node is still used when nothing else fits"
        );
    }

    #[test]
    fn excluded_and_cordoned_nodes_are_never_used() {
        let mut c = cluster(&[
            ("a", res(1000, 1000, 4), RUNC, &[]),
            ("b", res(1000, 1000, 4), RUNC, &[]),
        ]);
        let none = BTreeMap::new();
        let need = res(100, 100, 1);
        let a = [Arc::from("a")];
        let r = Request {
            exclude: &a,
            ..req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack)
        };
        assert_eq!(c.place(&r, &Overlay::new()), Ok(1));
        c.slot_mut("b").1.cordoned = true;
        assert!(
            c.place(&r, &Overlay::new()).is_err(),
            "a excluded, b cordoned"
        );
        let plain = req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack);
        assert_eq!(c.place(&plain, &Overlay::new()), Ok(0));
    }

    proptest! {
        /// Whatever the nodes and requests, a placement never exceeds a node's capacity,
        /// and a refusal happens only when no ready node of the class has room.
        #[test]
        fn never_overcommits(caps in prop::collection::vec((1u64..4000, 1u64..4000, 1u32..8), 1..8),
                             needs in prop::collection::vec((1u64..1500, 1u64..1500), 1..60),
                             spread in any::<bool>()) {
            let mut c = Cluster::default();
            for (i, (m, cpu, s)) in caps.iter().enumerate() {
                let (_, slot) = c.slot_mut(&format!("n{i}"));
                slot.capacity = res(*m, *cpu, *s);
                slot.classes = RUNC.to_vec();
                slot.ready = true;
            }
            let none = BTreeMap::new();
            let strategy = if spread { PlacementStrategy::Spread } else { PlacementStrategy::Binpack };
            for (m, cpu) in needs {
                let need = res(m, cpu, 1);
                match c.place(&req(need, RuntimeClass::Runc, &none, strategy), &Overlay::new()) {
                    Ok(i) => {
                        let name = c.nodes()[i].name.clone();
                        c.allocate(&name, &need);
                        let n = &c.nodes()[i];
                        prop_assert!(n.allocated.memory_mb <= n.capacity.memory_mb);
                        prop_assert!(n.allocated.cpu_millicores <= n.capacity.cpu_millicores);
                        prop_assert!(n.allocated.slots <= n.capacity.slots);
                    }
                    Err(_) => prop_assert!(c.nodes().iter().all(|n| !need.fits_in(&n.free()))),
                }
            }
        }
    }
}
