//! What a node checks of each op before acting on it, signed or not: the same limits
//! admission uses (a workload key of a valid tenant and id, a replica in range, a spec that
//! validates, a grace within the ceiling), so no value in an op becomes a path outside the
//! log directory, a wrapped memory limit or a stop that waits for years. The same for what
//! the scheduler, the failover and the API read of a heartbeat. Pure.

use bulkhead_schemas::command::MAX_GRACE_SECS;
use bulkhead_schemas::spec::{MAX_CPU_MILLICORES, MAX_MEMORY_MB, MAX_REPLICAS, validate};
use bulkhead_schemas::{NodeHeartbeat, NodeOp, Resources, subjects};

/// Heartbeat intervals a node may announce: the silence rule waits a few of them. At most a
/// third of the heartbeat bucket's 30 s TTL (`Topology::node_ttl`), so a live node always has
/// an entry there: the API lists it, and a failover taking over reads its interval from it.
pub const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 10..=10_000;
/// Labels, runtime classes and isolation reports a heartbeat may carry, at most.
pub const MAX_LABELS: usize = 64;
pub const MAX_CLASSES: usize = 16;
/// A label's key and value, at most (Kubernetes' limits).
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 253;
/// What one node may offer, at most: a thousand of the largest workloads.
pub const MAX_NODE_MEMORY_MB: u64 = MAX_MEMORY_MB * 1000;
pub const MAX_NODE_CPU_MILLICORES: u64 = MAX_CPU_MILLICORES * 1000;
pub const MAX_NODE_SLOTS: u32 = 100_000;

fn resources(what: &str, r: &Resources) -> Result<(), String> {
    if r.memory_mb > MAX_NODE_MEMORY_MB
        || r.cpu_millicores > MAX_NODE_CPU_MILLICORES
        || r.slots > MAX_NODE_SLOTS
    {
        return Err(format!(
            "{what} {}MB/{}m/{} slots is past a node's ceiling \
             ({MAX_NODE_MEMORY_MB}MB/{MAX_NODE_CPU_MILLICORES}m/{MAX_NODE_SLOTS})",
            r.memory_mb, r.cpu_millicores, r.slots
        ));
    }
    Ok(())
}

/// Why heartbeat `hb` must not be believed (None: it may): a name that is no subject
/// token, an interval outside [`HEARTBEAT_MS`], resources, labels or lists past their
/// ceilings, free resources above capacity.
pub fn refuses_heartbeat(hb: &NodeHeartbeat) -> Option<String> {
    let checked = if !subjects::is_valid_token(&hb.name) {
        Err(format!(
            "node name {:?} is not 1-64 of [A-Za-z0-9_-]",
            hb.name
        ))
    } else if !HEARTBEAT_MS.contains(&hb.interval_ms) {
        Err(format!(
            "an interval of {} ms, outside {HEARTBEAT_MS:?}",
            hb.interval_ms
        ))
    } else if hb.labels.len() > MAX_LABELS
        || hb
            .labels
            .iter()
            .any(|(k, v)| k.len() > MAX_LABEL_KEY || v.len() > MAX_LABEL_VALUE)
    {
        Err(format!(
            "labels past {MAX_LABELS}, or a key past {MAX_LABEL_KEY} or a value past \
             {MAX_LABEL_VALUE} bytes"
        ))
    } else if hb.runtime_classes.len() > MAX_CLASSES || hb.isolation.len() > MAX_CLASSES {
        Err(format!(
            "more than {MAX_CLASSES} runtime classes or reports"
        ))
    } else if !hb.free.fits_in(&hb.capacity) {
        Err("more free than its capacity".into())
    } else {
        resources("a capacity of", &hb.capacity)
    };
    checked.err()
}

/// The most replicas a view may list (every replica of every workload a node could hold).
pub const MAX_VIEW: usize = 1_000_000;

fn workload_key(key: &str) -> Result<(), String> {
    match subjects::split_key(key) {
        Some((tenant, id)) if subjects::is_valid_tenant(tenant) && subjects::is_valid_token(id) => {
            Ok(())
        }
        _ => Err(format!("workload {key:?} is not a tenant/id key")),
    }
}

fn replica(r: u32) -> Result<(), String> {
    if r < MAX_REPLICAS {
        Ok(())
    } else {
        Err(format!("replica {r} is past {MAX_REPLICAS}"))
    }
}

/// Why `op` must not be acted on (None: it may).
pub fn refuses(op: &NodeOp) -> Option<String> {
    let checked = match op {
        NodeOp::Start {
            workload,
            replica: r,
            spec,
            ..
        } => workload_key(workload)
            .and_then(|()| replica(*r))
            .and_then(|()| validate(spec).map_err(|e| format!("its spec: {e}"))),
        NodeOp::Stop {
            workload,
            replica: r,
            grace_secs,
            ..
        } => workload_key(workload)
            .and_then(|()| replica(*r))
            .and_then(|()| match grace_secs {
                Some(g) if *g > MAX_GRACE_SECS => {
                    Err(format!("a grace of {g} s, past {MAX_GRACE_SECS}"))
                }
                _ => Ok(()),
            }),
        NodeOp::Pace { every_ms } if *every_ms > *HEARTBEAT_MS.end() => Err(format!(
            "a pace of {every_ms} ms, past the longest interval ({} ms)",
            HEARTBEAT_MS.end()
        )),
        NodeOp::Pace { .. } => Ok(()),
        NodeOp::Sync { view } => {
            if view.replicas.len() > MAX_VIEW || view.heads.len() > MAX_VIEW {
                Err("a view past its ceiling".into())
            } else {
                view.replicas
                    .iter()
                    .try_for_each(|r| workload_key(&r.workload).and_then(|()| replica(r.replica)))
                    .and_then(|()| {
                        view.heads
                            .iter()
                            .try_for_each(|h| workload_key(&h.workload))
                    })
            }
        }
    };
    checked.err()
}

#[cfg(test)]
mod tests {
    use bulkhead_schemas::{ChainHead, WorkloadSpec};

    use super::*;

    fn spec() -> WorkloadSpec {
        serde_json::from_value(
            serde_json::json!({"image": "i", "memory_mb": 1, "cpu_millicores": 1}),
        )
        .unwrap()
    }

    fn start(workload: &str, spec: WorkloadSpec) -> NodeOp {
        NodeOp::Start {
            workload: workload.into(),
            replica: 0,
            spec,
            head: ChainHead {
                seq: 1,
                hash: String::new(),
            },
            traceparent: None,
        }
    }

    fn beat() -> NodeHeartbeat {
        serde_json::from_value(serde_json::json!({
            "name": "n1",
            "capacity": {"memory_mb": 4096, "cpu_millicores": 4000, "slots": 10},
            "free": {"memory_mb": 4096, "cpu_millicores": 4000, "slots": 10},
            "runtime_classes": ["runc"],
            "runtime": "sim", "running": 0, "interval_ms": 1000, "at": "now"
        }))
        .unwrap()
    }

    #[test]
    fn heartbeats_out_of_limits_are_refused_with_their_reason() {
        assert_eq!(refuses_heartbeat(&beat()), None);
        type Edit = fn(&mut NodeHeartbeat);
        let cases: [(&str, Edit); 7] = [
            ("node name", |h| h.name = "a.b".into()),
            ("interval", |h| h.interval_ms = 0),
            ("interval", |h| h.interval_ms = u64::MAX),
            ("interval", |h| h.interval_ms = 10_001),
            ("labels", |h| {
                h.labels.insert("k".into(), "v".repeat(MAX_LABEL_VALUE + 1));
            }),
            ("more free", |h| h.free.slots = 11),
            ("ceiling", |h| {
                h.capacity.memory_mb = u64::MAX;
                h.free.memory_mb = u64::MAX;
            }),
        ];
        for (want, edit) in cases {
            let mut hb = beat();
            edit(&mut hb);
            let why = refuses_heartbeat(&hb).expect(want);
            assert!(why.contains(want), "{want}: {why}");
        }
    }

    #[test]
    fn forged_values_are_refused_with_their_reason() {
        assert_eq!(refuses(&start("default/w", spec())), None);
        for bad in [
            "../../etc",
            "/abs/path",
            "default/..",
            "default/a/b",
            "default",
        ] {
            let why = refuses(&start(bad, spec())).expect(bad);
            assert!(why.contains("not a tenant/id key"), "{bad}: {why}");
        }
        let mut huge = spec();
        huge.memory_mb = 1 << 44;
        assert!(
            refuses(&start("default/w", huge))
                .unwrap()
                .contains("memory_mb")
        );
        let stop = NodeOp::Stop {
            workload: "default/w".into(),
            replica: 0,
            head: ChainHead {
                seq: 1,
                hash: String::new(),
            },
            grace_secs: Some(u32::MAX),
            traceparent: None,
        };
        assert!(refuses(&stop).unwrap().contains("grace"));
        for ok in [0, 2000, 10_000] {
            assert_eq!(refuses(&NodeOp::Pace { every_ms: ok }), None, "{ok}");
        }
        for bad in [10_001, u64::MAX] {
            let why = refuses(&NodeOp::Pace { every_ms: bad }).expect("refused");
            assert!(why.contains("pace"), "{bad}: {why}");
        }
    }
}
