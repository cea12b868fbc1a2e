//! Node reconciliation after a restart: what the log says the node should run (desired)
//! against what its runtime holds (observed), decided as a list of actions. Pure.

use std::collections::{BTreeMap, HashMap};

use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::{
    ChainHead, NodeSync, Resources, SyncHandled, SyncHead, SyncReason, SyncReplica,
};

use crate::ports::runtime::{ExitNotice, Observed, ObservedStatus};
use crate::projection::{Head, Projection};

/// What the log says about a node when it starts: the replicas it should run, the heads
/// of the workloads it touches, and the replicas it started before (by head sequence, so
/// a redelivered start op is not run twice).
#[derive(Clone, Debug, Default)]
pub struct LogView {
    pub desired: Vec<Desired>,
    pub heads: Vec<(String, Head)>,
    pub handled: Vec<((String, u32), u64)>,
    /// The last stream sequence the view includes.
    pub as_of: u64,
}

impl From<NodeSync> for LogView {
    /// The view a scheduler sent (heads that do not parse are left out).
    fn from(s: NodeSync) -> LogView {
        LogView {
            desired: s
                .replicas
                .into_iter()
                .map(|r| Desired {
                    workload: r.workload,
                    replica: r.replica,
                    container: r.container,
                    need: r.need,
                })
                .collect(),
            heads: s
                .heads
                .into_iter()
                .filter_map(|h| {
                    let hash = hex::decode(&h.head.hash).ok()?.try_into().ok()?;
                    Some((
                        h.workload,
                        Head {
                            seq: h.head.seq,
                            hash,
                        },
                    ))
                })
                .collect(),
            handled: s
                .handled
                .into_iter()
                .map(|h| ((h.workload, h.replica), h.head_seq))
                .collect(),
            as_of: s.as_of,
        }
    }
}

/// The view of node `node` in `projection`, as the scheduler sends it.
pub fn sync_of(projection: &Projection, node: &str, reason: SyncReason) -> NodeSync {
    let v = LogView::of(projection, node);
    NodeSync {
        reason,
        as_of: v.as_of,
        replicas: v
            .desired
            .into_iter()
            .map(|d| SyncReplica {
                workload: d.workload,
                replica: d.replica,
                container: d.container,
                need: d.need,
            })
            .collect(),
        heads: v
            .heads
            .into_iter()
            .map(|(workload, h)| SyncHead {
                workload,
                head: ChainHead {
                    seq: h.seq,
                    hash: hex::encode(h.hash),
                },
            })
            .collect(),
        handled: v
            .handled
            .into_iter()
            .map(|((workload, replica), head_seq)| SyncHandled {
                workload,
                replica,
                head_seq,
            })
            .collect(),
    }
}

impl LogView {
    /// Leaves out the workloads this node logged about after the view was taken
    /// (`newer`): on those, the node knows better than the view.
    pub fn without(mut self, newer: &std::collections::HashSet<String>) -> LogView {
        self.desired.retain(|d| !newer.contains(&d.workload));
        self.heads.retain(|(w, _)| !newer.contains(w));
        self.handled.retain(|((w, _), _)| !newer.contains(w));
        self
    }

    /// The view of node `node` in a projection of the whole log.
    pub fn of(projection: &Projection, node: &str) -> LogView {
        let mut view = LogView {
            as_of: projection.last_seq,
            ..LogView::default()
        };
        for (id, w) in projection.iter() {
            let mut touched = false;
            for (i, r) in w.replicas.iter().enumerate() {
                if r.node.as_deref() != Some(node) {
                    continue;
                }
                touched = true;
                let replica = i as u32;
                if r.state != WorkloadState::Scheduled {
                    view.handled.push(((id.clone(), replica), w.head.seq));
                }
                if r.holds() {
                    view.desired.push(Desired {
                        workload: id.clone(),
                        replica,
                        container: r.container.as_deref().map(str::to_owned),
                        need: w.need(),
                    });
                }
            }
            if touched {
                view.heads.push((id.clone(), w.head));
            }
        }
        view
    }
}

/// A replica the log places on this node and has not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub workload: String,
    pub replica: u32,
    /// The container the log names (`started`), if any.
    pub container: Option<String>,
    pub need: Resources,
}

/// What reconciliation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep the running container; log `started` when the log does not name it yet.
    Adopt {
        workload: String,
        replica: u32,
        container: String,
        need: Resources,
        log_started: bool,
    },
    /// The container ended while nobody watched: log it (after `started` if the log never
    /// named it), then remove it.
    LogExit {
        workload: String,
        replica: u32,
        exit: ExitNotice,
        log_started: bool,
    },
    /// The log says running, the runtime has nothing: log an exit saying so.
    Vanished {
        workload: String,
        replica: u32,
        container: String,
    },
    /// Not wanted (ended, stopped, placed elsewhere, a duplicate, never started): remove.
    Remove {
        container: String,
        why: &'static str,
    },
}

/// Decides, per replica, what to do. A desired replica the log shows as only scheduled
/// and the runtime does not hold needs nothing here: its start op is still queued.
pub fn reconcile(desired: &[Desired], observed: &[Observed]) -> Vec<Action> {
    let wanted: HashMap<(&str, u32), &Desired> = desired
        .iter()
        .map(|d| ((d.workload.as_str(), d.replica), d))
        .collect();
    let mut by_replica: BTreeMap<(&str, u32), Vec<&Observed>> = BTreeMap::new();
    let mut actions = Vec::new();
    for o in observed {
        if wanted.contains_key(&(o.workload.as_str(), o.replica)) {
            by_replica
                .entry((o.workload.as_str(), o.replica))
                .or_default()
                .push(o);
        } else {
            actions.push(Action::Remove {
                container: o.container.clone(),
                why: "the log does not place it here",
            });
        }
    }
    for d in desired {
        let key = (d.workload.as_str(), d.replica);
        let held = by_replica.remove(&key).unwrap_or_default();
        // Prefer the container the log names, then any running one.
        let keep = held
            .iter()
            .find(|o| Some(&o.container) == d.container.as_ref())
            .or_else(|| {
                held.iter()
                    .find(|o| matches!(o.status, ObservedStatus::Running))
            })
            .copied();
        for o in &held {
            if Some(*o) != keep {
                actions.push(Action::Remove {
                    container: o.container.clone(),
                    why: "a second container for one replica",
                });
            }
        }
        let named = |c: &str| d.container.as_deref() == Some(c);
        match keep {
            Some(o) => match &o.status {
                ObservedStatus::Running => actions.push(Action::Adopt {
                    workload: d.workload.clone(),
                    replica: d.replica,
                    container: o.container.clone(),
                    need: d.need,
                    log_started: !named(&o.container),
                }),
                ObservedStatus::Exited(exit) => actions.push(Action::LogExit {
                    workload: d.workload.clone(),
                    replica: d.replica,
                    exit: exit.clone(),
                    log_started: !named(&o.container),
                }),
                ObservedStatus::Stale => {
                    actions.push(Action::Remove {
                        container: o.container.clone(),
                        why: "created but never started",
                    });
                    if let Some(c) = &d.container {
                        actions.push(Action::Vanished {
                            workload: d.workload.clone(),
                            replica: d.replica,
                            container: c.clone(),
                        });
                    }
                }
            },
            None => {
                if let Some(c) = &d.container {
                    actions.push(Action::Vanished {
                        workload: d.workload.clone(),
                        replica: d.replica,
                        container: c.clone(),
                    });
                }
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(w: &str, r: u32, c: Option<&str>) -> Desired {
        Desired {
            workload: w.into(),
            replica: r,
            container: c.map(Into::into),
            need: Resources {
                memory_mb: 64,
                cpu_millicores: 100,
                slots: 1,
            },
        }
    }

    fn seen(c: &str, w: &str, r: u32, status: ObservedStatus) -> Observed {
        Observed {
            container: c.into(),
            workload: w.into(),
            replica: r,
            status,
        }
    }

    fn exited(c: &str, code: i32) -> ObservedStatus {
        ObservedStatus::Exited(ExitNotice {
            container: c.into(),
            code,
            reason: "error".into(),
            finished_at: "2026-11-23T00:00:00Z".into(),
        })
    }

    #[test]
    fn running_container_the_log_names_is_adopted_silently() {
        let a = reconcile(
            &[want("w", 0, Some("c1"))],
            &[seen("c1", "w", 0, ObservedStatus::Running)],
        );
        assert_eq!(
            a,
            vec![Action::Adopt {
                workload: "w".into(),
                replica: 0,
                container: "c1".into(),
                need: want("w", 0, None).need,
                log_started: false,
            }]
        );
    }

    #[test]
    fn container_started_but_not_logged_is_adopted_and_logged() {
        let a = reconcile(
            &[want("w", 0, None)],
            &[seen("c1", "w", 0, ObservedStatus::Running)],
        );
        assert!(matches!(
            &a[..],
            [Action::Adopt {
                log_started: true,
                ..
            }]
        ));
    }

    #[test]
    fn exit_while_down_is_logged() {
        let a = reconcile(
            &[want("w", 0, Some("c1"))],
            &[seen("c1", "w", 0, exited("c1", 3))],
        );
        assert!(matches!(
            &a[..],
            [Action::LogExit { exit, log_started: false, .. }] if exit.code == 3
        ));
    }

    #[test]
    fn unwanted_containers_are_removed() {
        let a = reconcile(
            &[],
            &[
                seen("c1", "gone", 0, ObservedStatus::Running),
                seen("c2", "done", 1, exited("c2", 0)),
            ],
        );
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|x| matches!(x, Action::Remove { .. })));
    }

    #[test]
    fn running_per_log_but_missing_is_vanished() {
        let a = reconcile(&[want("w", 0, Some("c1"))], &[]);
        assert_eq!(
            a,
            vec![Action::Vanished {
                workload: "w".into(),
                replica: 0,
                container: "c1".into()
            }]
        );
    }

    #[test]
    fn scheduled_only_and_missing_waits_for_its_op() {
        assert!(reconcile(&[want("w", 0, None)], &[]).is_empty());
    }

    #[test]
    fn duplicates_keep_the_named_container() {
        let a = reconcile(
            &[want("w", 0, Some("c2"))],
            &[
                seen("c1", "w", 0, ObservedStatus::Running),
                seen("c2", "w", 0, ObservedStatus::Running),
            ],
        );
        assert!(a.contains(&Action::Remove {
            container: "c1".into(),
            why: "a second container for one replica"
        }));
        assert!(a.iter().any(
            |x| matches!(x, Action::Adopt { container, log_started: false, .. } if container == "c2")
        ));
    }

    #[test]
    fn stale_container_is_removed_and_a_logged_one_vanished() {
        let a = reconcile(
            &[want("w", 0, Some("c1"))],
            &[seen("c1", "w", 0, ObservedStatus::Stale)],
        );
        assert_eq!(a.len(), 2);
        assert!(matches!(a[0], Action::Remove { .. }));
        assert!(matches!(a[1], Action::Vanished { .. }));
    }

    #[test]
    fn log_view_keeps_what_runs_here_and_remembers_what_ran() {
        use bulkhead_schemas::event::*;
        let spec: bulkhead_schemas::WorkloadSpec = serde_json::from_value(serde_json::json!(
            {"id": "w", "image": "i", "memory_mb": 64, "cpu_millicores": 100, "replicas": 3}
        ))
        .unwrap();
        let mut p = Projection::default();
        let mut seq = 0;
        let mut apply = |body: EventBody| {
            seq += 1;
            p.apply(seq, [seq as u8; 32], &Event::new("t", "w", None, body))
                .unwrap();
        };
        apply(EventBody::Accepted(Accepted {
            spec,
            cmd_seq: 1,
            by: Default::default(),
            pending: None,
        }));
        for (replica, node) in [(0, "me"), (1, "me"), (2, "other")] {
            apply(EventBody::Scheduled(Scheduled {
                replica,
                node: node.into(),
                runtime_class: bulkhead_schemas::RuntimeClass::Runc,
                replaces: None,
            }));
        }
        apply(EventBody::Started(Started {
            replica: 0,
            node: "me".into(),
            container: "c0".into(),
            confinement: None,
        }));
        let v = LogView::of(&p, "me");
        assert_eq!(
            v.desired,
            vec![want("w", 0, Some("c0")), want("w", 1, None)]
        );
        // replica 0 started once; replica 1's start op is still due
        assert_eq!(v.handled, vec![(("w".to_owned(), 0), 5)]);
        assert_eq!(v.heads.len(), 1);
        assert!(LogView::of(&p, "nobody").desired.is_empty());
    }

    #[test]
    fn other_replicas_of_a_wanted_workload_are_not_adopted() {
        let a = reconcile(
            &[want("w", 0, Some("c1"))],
            &[
                seen("c1", "w", 0, ObservedStatus::Running),
                seen("c9", "w", 1, ObservedStatus::Running),
            ],
        );
        assert!(a.contains(&Action::Remove {
            container: "c9".into(),
            why: "the log does not place it here"
        }));
    }
}
