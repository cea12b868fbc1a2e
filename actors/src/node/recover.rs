//! Recovery: acting on what [`super::reconcile`] decided when the node starts (or learns
//! it was declared lost): adopt running containers, log exits it missed, report vanished
//! ones, remove what the log does not want.

use std::time::Duration;

use futures::future::join_all;
use tracing::{info, warn};

use super::NodeError;
use super::ReconcileReport;
use super::actor::{NodeState, log_events, remove_later};
use super::reconcile::{Action, LogView, reconcile};
use crate::ports::log::EventLog;
use crate::ports::runtime::{ContainerRuntime, ExitNotice};

pub(super) async fn with_runtime<R: ContainerRuntime, L: EventLog, H>(
    st: &mut NodeState<R, L, H>,
    view: LogView,
) -> Result<ReconcileReport, NodeError> {
    // What this node logged after the view was taken, the view does not know: on those
    // workloads the node keeps what it has.
    let newer = st.core.logged_after(view.as_of);
    let view = view.without(&newer);
    for (w, h) in view.heads {
        st.core.learn_head(&w, h);
    }
    st.core.learn_handled(view.handled);
    let node = st.core.config.name.clone();
    let mut observed = st.runtime.observe(&node).await?;
    observed.retain(|o| !newer.contains(&o.workload));
    let mut report = ReconcileReport::default();
    let mut events = Vec::new();
    let mut removals = Vec::new();
    for action in reconcile(&view.desired, &observed) {
        match action {
            Action::Adopt {
                workload,
                replica,
                container,
                need,
                log_started,
            } => {
                info!(%workload, replica, %container, "adopting a running container");
                if log_started {
                    events.push((
                        workload.clone(),
                        st.core.started(&workload, replica, &container, None),
                    ));
                }
                st.core.record(container, &workload, replica, need);
                report.adopted += 1;
            }
            Action::LogExit {
                workload,
                replica,
                exit,
                log_started,
            } => {
                info!(%workload, replica, code = exit.code, "container exited while the node was down");
                let container = exit.container.clone();
                st.core.forget(&container);
                if log_started {
                    events.push((
                        workload.clone(),
                        st.core.started(&workload, replica, &container, None),
                    ));
                }
                events.push((workload.clone(), st.core.exited(&workload, replica, exit)));
                remove_later(st, &container);
                report.exited += 1;
            }
            Action::Vanished {
                workload,
                replica,
                container,
            } => {
                warn!(%workload, replica, %container, "container vanished while the node was down");
                st.core.forget(&container);
                let exit = ExitNotice {
                    container,
                    code: -1,
                    reason: "vanished: the runtime no longer has the container".into(),
                    finished_at: bulkhead_schemas::now_rfc3339(),
                };
                events.push((workload.clone(), st.core.exited(&workload, replica, exit)));
                report.vanished += 1;
            }
            Action::Remove { container, why } => {
                info!(%container, why, "removing a container");
                // Its end is not news: the log has moved on from it.
                st.core.forget(&container);
                st.core.stopping.insert(container.clone());
                removals.push(container);
            }
        }
    }
    // Removals are independent (and slow under a sandboxed runtime): all at once.
    let rt = &st.runtime;
    let removed = join_all(removals.iter().map(|c| rt.stop(c, Duration::ZERO))).await;
    for (c, r) in removals.iter().zip(removed) {
        st.core.stopping.remove(c);
        match r {
            Ok(()) => report.removed += 1,
            Err(e) => warn!(container = %c, error = %e, "could not remove"),
        }
    }
    log_events(st, events).await;
    Ok(report)
}
