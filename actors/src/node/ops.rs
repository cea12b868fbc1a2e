//! Carrying out ops: a start or stop op becomes a runtime call in a task (never in the
//! handler), and its result becomes `started`, `exited` or `stopped` in the log.

use std::time::Duration;

use bulkhead_schemas::event::{Event, EventBody, Stopped};
use bulkhead_schemas::{NodeOp, Resources};
use futures::FutureExt;
use futures::future::BoxFuture;
use tracing::{Instrument, info_span};

use super::actor::{NodeState, log_events, remove_later};
use super::{NodeError, StopFailure};
use crate::ports::log::EventLog;
use crate::ports::runtime::{ContainerRuntime, ExitNotice, RuntimeError, StartSpec};

/// The result of one runtime call made for an ops message.
pub enum OpResult {
    Start {
        workload: String,
        replica: u32,
        need: Resources,
        traceparent: Option<String>,
        confinement: Option<bulkhead_schemas::event::Confinement>,
        result: Result<String, RuntimeError>,
    },
    Stop {
        workload: String,
        replica: u32,
        container: String,
        need: Resources,
        traceparent: Option<String>,
        result: Result<(), RuntimeError>,
    },
}

/// Takes the ops that need doing and returns their runtime calls, not yet run.
pub(super) fn take_ops<R: ContainerRuntime, L, H>(
    st: &mut NodeState<R, L, H>,
    ops: Vec<NodeOp>,
) -> Vec<BoxFuture<'static, OpResult>> {
    let node = st.core.config.name.clone();
    let mut work = Vec::new();
    for op in ops {
        match op {
            NodeOp::Start {
                workload,
                replica,
                spec,
                head,
                traceparent,
            } => {
                st.core.learn(&workload, &head);
                if !st.core.take_start(&workload, replica, head.seq) {
                    continue; // running already, or a redelivered op
                }
                let span = info_span!("start", workload = %workload, replica, node = %node);
                crate::set_parent(&span, traceparent.as_deref());
                let need = Resources::of(&spec);
                let rt = st.runtime.clone();
                let confinement = st.runtime.confinement(&spec);
                let req = StartSpec {
                    workload: workload.clone(),
                    replica,
                    node: node.clone(),
                    spec,
                };
                work.push(
                    async move {
                        let result = rt.start(req).instrument(span).await;
                        OpResult::Start {
                            workload,
                            replica,
                            need,
                            traceparent,
                            confinement,
                            result,
                        }
                    }
                    .boxed(),
                );
            }
            NodeOp::Sync { .. } | NodeOp::Pace { .. } => {} // handled before, by the actor
            NodeOp::Stop {
                workload,
                replica,
                head,
                grace_secs,
                traceparent,
            } => {
                st.core.learn(&workload, &head);
                let Some(container) = st.core.container_of(&workload, replica).map(str::to_owned)
                else {
                    continue;
                };
                let Some(c) = st.core.forget(&container) else {
                    continue;
                };
                st.core.stopping.insert(container.clone());
                let grace = grace_secs
                    .map(|s| Duration::from_secs(s.into()))
                    .unwrap_or(st.core.config.stop_grace);
                let span = info_span!("stop", workload = %workload, replica, node = %node);
                crate::set_parent(&span, traceparent.as_deref());
                let rt = st.runtime.clone();
                work.push(
                    async move {
                        let result = rt.stop(&container, grace).instrument(span).await;
                        OpResult::Stop {
                            workload,
                            replica,
                            container,
                            need: c.need,
                            traceparent,
                            result,
                        }
                    }
                    .boxed(),
                );
            }
        }
    }
    work
}

/// Records what the runtime calls did and logs it.
pub(super) async fn ops_done<R: ContainerRuntime, L: EventLog, H>(
    st: &mut NodeState<R, L, H>,
    results: Vec<OpResult>,
) -> Result<(), NodeError> {
    let node = st.core.config.name.clone();
    let mut events: Vec<(String, Event)> = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            OpResult::Start {
                workload,
                replica,
                need,
                traceparent,
                confinement,
                result,
            } => {
                let early = st.core.start_done(result.as_deref().ok());
                let mut evs = match result {
                    Ok(container) => {
                        let mut evs =
                            vec![st.core.started(&workload, replica, &container, confinement)];
                        match early {
                            Some(exit) => {
                                remove_later(st, &container);
                                evs.push(st.core.exited(&workload, replica, exit));
                            }
                            None => st.core.record(container, &workload, replica, need),
                        }
                        evs
                    }
                    Err(e) => vec![st.core.exited(
                        &workload,
                        replica,
                        ExitNotice {
                            container: String::new(),
                            code: -1,
                            reason: e.to_string(),
                            finished_at: bulkhead_schemas::now_rfc3339(),
                        },
                    )],
                };
                for ev in &mut evs {
                    ev.traceparent = traceparent.clone();
                }
                events.extend(evs.into_iter().map(|e| (workload.clone(), e)));
            }
            OpResult::Stop {
                workload,
                replica,
                container,
                need,
                traceparent,
                result,
            } => {
                st.core.stopping.remove(&container);
                if let Err(e) = result {
                    // Still there: keep it, and let the redelivered op try again.
                    st.core.record(container, &workload, replica, need);
                    failures.push(StopFailure {
                        workload,
                        replica,
                        error: e,
                    });
                    continue;
                }
                let mut ev = st.core.event(
                    &workload,
                    EventBody::Stopped(Stopped {
                        replica,
                        node: node.clone(),
                    }),
                );
                ev.traceparent = traceparent;
                events.push((workload, ev));
            }
        }
    }
    log_events(st, events).await;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(NodeError::Stops(failures))
    }
}
