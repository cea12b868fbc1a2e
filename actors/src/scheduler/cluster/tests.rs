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
        c.update(name, |s| {
            s.capacity = *cap;
            s.classes = classes.to_vec();
            s.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            s.ready = true;
        });
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
        avoid: no_nodes(),
        prefer_not: None,
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
    c.update("b", |n| n.ready = false);
    c.update("a", |n| n.ready = false);
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
    o.add(&c, 0, &res(0, 0, 1));
    assert_eq!(
        c.place(
            &req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack),
            &o
        ),
        Ok(1)
    );
    let avoid: Names = [Arc::from("a")].into_iter().collect();
    let r = Request {
        avoid: &avoid,
        ..req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack)
    };
    assert_eq!(c.place(&r, &Overlay::new()), Ok(1));
    let mut only_a = Overlay::new();
    only_a.add(&c, 1, &res(0, 0, 1));
    assert_eq!(
        c.place(&r, &only_a),
        Ok(0),
        "avoided node is still used when nothing else fits"
    );
    // The node a replica last failed on is avoided the same way.
    let a: Arc<str> = Arc::from("a");
    let r = Request {
        prefer_not: Some(&a),
        ..req(need, RuntimeClass::Runc, &none, PlacementStrategy::Binpack)
    };
    assert_eq!(c.place(&r, &Overlay::new()), Ok(1));
    assert_eq!(c.place(&r, &only_a), Ok(0));
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
    c.update("b", |n| n.cordoned = true);
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
            c.update(&format!("n{i}"), |slot| {
                slot.capacity = res(*m, *cpu, *s);
                slot.classes = RUNC.to_vec();
                slot.ready = true;
            });
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

/// One random node: capacities from a short list (so that rooms tie), classes, a zone
/// label, readiness.
fn any_node() -> impl Strategy<
    Value = (
        Resources,
        Vec<RuntimeClass>,
        Option<&'static str>,
        bool,
        bool,
    ),
> {
    (
        prop::sample::select(vec![0u64, 1000, 2000, 4000]),
        prop::sample::select(vec![0u64, 1000, 3000]),
        0u32..4,
        prop::sample::select(vec![
            vec![RuntimeClass::Runc],
            vec![RuntimeClass::Gvisor],
            vec![RuntimeClass::Runc, RuntimeClass::Gvisor],
        ]),
        prop::option::of(prop::sample::select(vec!["x", "y"])),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(m, c, s, classes, zone, ready, cordoned)| {
            (res(m, c, s), classes, zone, ready, cordoned)
        })
}

/// One random request's parts: need, class, zone wanted, spread, avoided and excluded
/// nodes (by index, modulo the node count).
type AnyRequest = (
    Resources,
    RuntimeClass,
    Option<&'static str>,
    bool,
    Vec<usize>,
    Vec<usize>,
);

fn any_request() -> impl Strategy<Value = AnyRequest> {
    (
        prop::sample::select(vec![0u64, 100, 500, 1500]),
        prop::sample::select(vec![0u64, 100, 700]),
        prop::sample::select(vec![0u32, 1, 1, 1]),
        prop::sample::select(vec![RuntimeClass::Runc, RuntimeClass::Gvisor]),
        prop::option::weighted(0.2, prop::sample::select(vec!["x", "y"])),
        any::<bool>(),
        prop::collection::vec(0usize..64, 0..4),
        prop::collection::vec(0usize..64, 0..2),
    )
        .prop_map(|(m, c, s, class, zone, spread, avoid, exclude)| {
            (res(m, c, s), class, zone, spread, avoid, exclude)
        })
}

proptest! {
    /// Whatever the nodes, their allocations, the round's overlay and the request, the
    /// index chooses the node the scan of every node chooses (or leaves it to the scan),
    /// and after every change it holds what one built afresh would.
    #[test]
    fn the_index_chooses_what_the_scan_chooses(
        nodes in prop::collection::vec(any_node(), 1..40),
        allocs in prop::collection::vec((0usize..64, 0u64..1500, 0u64..1500, 0u32..2, any::<bool>()), 0..60),
        overlaid in prop::collection::vec((0usize..64, 0u64..800, 0u64..800), 0..8),
        requests in prop::collection::vec(any_request(), 1..12),
    ) {
        let mut c = Cluster::default();
        for (i, (cap, classes, zone, ready, cordoned)) in nodes.iter().enumerate() {
            c.update(&format!("n{i}"), |s| {
                s.capacity = *cap;
                s.classes = classes.clone();
                s.labels = zone.iter().map(|z| ("zone".to_string(), z.to_string())).collect();
                s.ready = *ready;
                s.cordoned = *cordoned;
            });
        }
        let name = |i: usize| format!("n{}", i % nodes.len());
        for (i, m, cpu, s, give_back) in allocs {
            let r = res(m, cpu, s);
            if give_back { c.release(&name(i), &r) } else { c.allocate(&name(i), &r) }
            prop_assert!(c.index.matches(c.nodes()));
        }
        let mut o = Overlay::new();
        for (i, m, cpu) in overlaid {
            o.add(&c, i % nodes.len(), &res(m, cpu, 1));
        }
        for (need, class, zone, spread, avoid, exclude) in requests {
            let selector: BTreeMap<String, String> =
                zone.iter().map(|z| ("zone".to_string(), z.to_string())).collect();
            let strategy = if spread { PlacementStrategy::Spread } else { PlacementStrategy::Binpack };
            // Of two or more nodes avoided, the first is the one the replica last failed on;
            // one alone is where another replica runs.
            let failed_on = if avoid.len() >= 2 { avoid.first() } else { None };
            let prefer_not: Option<Arc<str>> = failed_on.map(|&i| Arc::from(name(i)));
            let avoid: Names = avoid
                .iter()
                .skip(usize::from(failed_on.is_some()))
                .map(|&i| Arc::from(name(i)))
                .collect();
            let exclude: Vec<Arc<str>> = exclude.iter().map(|&i| Arc::from(name(i))).collect();
            let r = Request {
                avoid: &avoid,
                prefer_not: prefer_not.as_ref(),
                exclude: &exclude,
                ..req(need, class, &selector, strategy)
            };
            let chosen = c.index.choose(c.nodes(), &r, &o);
            let scanned = c.scan(&r, &o);
            if let Some(i) = chosen {
                prop_assert_eq!(Ok(i), scanned.clone());
            }
            prop_assert_eq!(c.place(&r, &o), scanned);
        }
    }
}

/// A cluster of `n` equal nodes (64 GiB, 64 cores, 1,000 slots), each with some load.
fn big(n: usize) -> Cluster {
    let mut c = Cluster::default();
    for i in 0..n {
        let name = format!("n{i}");
        c.update(&name, |s| {
            s.capacity = res(65_536, 64_000, 1000);
            s.classes = BOTH.to_vec();
            s.labels = [("host".to_string(), name.clone())].into();
            s.ready = true;
        });
        let load = (i * 7919) % 900;
        c.allocate(&name, &res(load as u64 * 16, load as u64 * 10, load as u32));
    }
    c
}

#[test]
fn among_thousands_of_nodes_the_index_settles_a_placement_by_itself() {
    let c = big(5000);
    let none = BTreeMap::new();
    let mut o = Overlay::new();
    for strategy in [PlacementStrategy::Binpack, PlacementStrategy::Spread] {
        for _ in 0..300 {
            let r = req(res(64, 100, 1), RuntimeClass::Gvisor, &none, strategy);
            let i = c.index.choose(c.nodes(), &r, &o);
            assert!(i.is_some(), "{strategy:?}: the index left it to the scan");
            assert_eq!(i.ok_or(()), c.scan(&r, &o).map_err(|_| ()));
            o.add(&c, i.unwrap_or_default(), &r.need);
        }
    }
}

#[test]
fn a_selector_few_nodes_match_is_left_to_the_scan_which_still_finds_them() {
    let c = big(500);
    let host: BTreeMap<_, _> = [("host".to_string(), "n321".to_string())].into();
    let r = req(
        res(64, 100, 1),
        RuntimeClass::Runc,
        &host,
        PlacementStrategy::Binpack,
    );
    let o = Overlay::new();
    assert_eq!(c.index.choose(c.nodes(), &r, &o), None);
    assert_eq!(c.place(&r, &o), Ok(321));
}

#[test]
fn a_workload_with_hundreds_of_replicas_placed_is_still_settled_by_the_index() {
    let c = big(1000);
    let none = BTreeMap::new();
    // Bin-pack walks the fullest nodes first: those its other replicas already use.
    let mut by_room: Vec<usize> = (0..1000).collect();
    by_room.sort_by_key(|&i| (room(&c.nodes()[i].capacity, &c.nodes()[i].free()), i));
    let avoid: Names = by_room[..300]
        .iter()
        .map(|&i| c.nodes()[i].name.clone())
        .collect();
    let r = Request {
        avoid: &avoid,
        ..req(
            res(64, 100, 1),
            RuntimeClass::Runc,
            &none,
            PlacementStrategy::Binpack,
        )
    };
    let o = Overlay::new();
    let i = c.index.choose(c.nodes(), &r, &o);
    assert_eq!(i, Some(by_room[300]));
    assert_eq!(c.scan(&r, &o), Ok(by_room[300]));
}
