//! Exit watching over CRI: lists the node's exited workload containers every few hundred
//! milliseconds (one call for all of them) and reports each exit once.
//!
//! containerd 1.6 does not implement CRI's `GetContainerEvents`; subscribing to its own
//! `/tasks/exit` events is the prompt path the failover work adds.

use std::collections::HashSet;
use std::time::Duration;

use bulkhead_actors::runtime::ExitNotice;
use k8s_cri::v1::ContainerState;
use tokio::sync::mpsc;
use tracing::warn;

use super::{Cri, LABEL_NODE, LABEL_ROLE, exit_notice};

pub(super) async fn exits(
    cri: Cri,
    node: String,
    every: Duration,
    tx: mpsc::UnboundedSender<ExitNotice>,
) {
    let mut reported: HashSet<String> = HashSet::new();
    let sel = [(LABEL_NODE, node.as_str()), (LABEL_ROLE, "workload")];
    let mut failing = false;
    loop {
        match cri
            .list_containers(&sel, Some(ContainerState::ContainerExited))
            .await
        {
            Ok(list) => {
                failing = false;
                let now: HashSet<String> = list.iter().map(|c| c.id.clone()).collect();
                reported.retain(|id| now.contains(id));
                for c in list {
                    if reported.contains(&c.id) {
                        continue;
                    }
                    match cri.container_status(&c.id).await {
                        Ok(s) => {
                            reported.insert(c.id);
                            if tx.send(exit_notice(&s)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => warn!(container = %c.id, error = %e, "container status failed"),
                    }
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "listing exited containers failed; retrying");
                }
                failing = true;
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}
