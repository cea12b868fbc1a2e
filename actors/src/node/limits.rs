//! What a node checks of each op before acting on it, signed or not: the same limits
//! admission uses (a workload key of a valid tenant and id, a replica in range, a spec that
//! validates, a grace within the ceiling), so no value in an op becomes a path outside the
//! log directory, a wrapped memory limit or a stop that waits for years. Pure.

use bulkhead_schemas::command::MAX_GRACE_SECS;
use bulkhead_schemas::spec::{MAX_REPLICAS, validate};
use bulkhead_schemas::{NodeOp, subjects};

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
    }
}
