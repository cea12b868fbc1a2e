//! Exit watching: containerd's `/tasks/exit` events when it serves them, and a poll over
//! CRI's ListContainers (one call for all of the node's exited containers) as the fallback
//! and the safety net. Each exit is reported once, with the CRI status's code and reason.
//!
//! containerd 1.6 does not implement CRI's `GetContainerEvents`, hence its own events API.
//! While subscribed, the poll runs every [`SAFETY_POLL`] (at least the configured poll
//! interval) and once right after each (re)subscription to cover the gap; when the
//! subscription fails or the endpoint has none (CRI-O), it runs every `exit_poll_ms`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::node::cri::v1::{ContainerState, ContainerStatus};
use bulkhead_actors::ports::runtime::ExitNotice;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::events::{self, container_exit};
use super::{Cri, LABEL_NODE, LABEL_ROLE, exit_notice};
use crate::tasks::AbortOnDrop;

/// Poll interval while containerd's exit events flow.
pub const SAFETY_POLL: Duration = Duration::from_secs(5);
/// How long an exit event waits for CRI to show the container exited (CRI handles the
/// same event in containerd, a moment after or before us).
const SETTLE: Duration = Duration::from_secs(2);
const SETTLE_STEP: Duration = Duration::from_millis(5);
/// Wait before subscribing again after a failure.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// Where the exit events come from.
#[derive(Clone, Debug)]
pub(super) struct EventSource {
    pub socket: PathBuf,
    pub namespace: String,
}

/// What the event follower tells the watch loop.
enum Feed {
    /// Connected and subscribing: poll once to cover what ended meanwhile, then slow down.
    Up,
    /// The subscription failed or ended: poll at the configured pace.
    Down,
    /// A container of this node ended, as CRI now shows it.
    Exited(Box<ContainerStatus>),
}

/// Which of the node's exits have been reported, and the channel they go to.
struct Reporter {
    reported: HashSet<String>,
    tx: mpsc::UnboundedSender<ExitNotice>,
}

impl Reporter {
    /// Reports `s` unless it was already; false once the receiver is gone.
    fn report(&mut self, s: &ContainerStatus) -> bool {
        if self.reported.insert(s.id.clone()) {
            return self.tx.send(exit_notice(s)).is_ok();
        }
        true
    }

    /// One look at every exited container of the node.
    async fn poll(&mut self, cri: &Cri, node: &str, failing: &mut bool) -> bool {
        let sel = [(LABEL_NODE, node), (LABEL_ROLE, "workload")];
        let list = match cri
            .list_containers(&sel, Some(ContainerState::ContainerExited))
            .await
        {
            Ok(list) => list,
            Err(e) => {
                if !*failing {
                    warn!(error = %e, "listing exited containers failed; retrying");
                }
                *failing = true;
                return !self.tx.is_closed();
            }
        };
        *failing = false;
        let now: HashSet<&str> = list.iter().map(|c| c.id.as_str()).collect();
        self.reported.retain(|id| now.contains(id.as_str()));
        for c in &list {
            if self.reported.contains(&c.id) {
                continue;
            }
            match cri.container_status(&c.id).await {
                Ok(s) => {
                    if !self.report(&s) {
                        return false;
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!(container = %c.id, error = %e, "container status failed"),
            }
        }
        !self.tx.is_closed()
    }
}

pub(super) async fn exits(
    cri: Cri,
    node: String,
    every: Duration,
    source: Option<EventSource>,
    tx: mpsc::UnboundedSender<ExitNotice>,
) {
    let (feed_tx, mut feed) = mpsc::unbounded_channel();
    let _follower = source.map(|s| {
        AbortOnDrop(tokio::spawn(follow(
            cri.clone(),
            node.clone(),
            s,
            every,
            feed_tx,
        )))
    });
    let mut reporter = Reporter {
        reported: HashSet::new(),
        tx,
    };
    let mut failing = false;
    let mut subscribed = false;
    let mut next_poll = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {
                if !reporter.poll(&cri, &node, &mut failing).await {
                    return;
                }
                next_poll = Instant::now() + if subscribed { SAFETY_POLL.max(every) } else { every };
            }
            Some(f) = feed.recv() => match f {
                Feed::Up => {
                    subscribed = true;
                    next_poll = Instant::now();
                }
                Feed::Down => {
                    subscribed = false;
                    next_poll = next_poll.min(Instant::now() + every);
                }
                Feed::Exited(s) => {
                    if !reporter.report(&s) {
                        return;
                    }
                }
            },
        }
    }
}

/// Follows containerd's task exits, resubscribing after failures; gives up for good on an
/// endpoint without the events service.
async fn follow(
    cri: Cri,
    node: String,
    source: EventSource,
    every: Duration,
    feed: mpsc::UnboundedSender<Feed>,
) {
    let socket = source.socket.display().to_string();
    let mut failing = false;
    loop {
        let up = feed.clone();
        let result = events::subscribe(&source.socket, &source.namespace, || {
            info!(%socket, namespace = %source.namespace, "exit events: following containerd's /tasks/exit");
            let _ = up.send(Feed::Up);
        })
        .await;
        match result {
            Ok(mut stream) => {
                failing = false;
                loop {
                    match stream.message().await {
                        Ok(Some(e)) => {
                            if let Some(x) = container_exit(&e, &source.namespace) {
                                tokio::spawn(settle(
                                    cri.clone(),
                                    node.clone(),
                                    x.container_id,
                                    feed.clone(),
                                ));
                            }
                        }
                        Ok(None) => {
                            warn!(%socket, every_ms = every.as_millis() as u64, "containerd's event stream ended; polling for exits until it is back");
                            break;
                        }
                        Err(e) => {
                            warn!(%socket, error = %e, every_ms = every.as_millis() as u64, "containerd's event stream failed; polling for exits until it is back");
                            break;
                        }
                    }
                }
            }
            Err(e) if e.is_unimplemented() => {
                warn!(%socket, error = %e, every_ms = every.as_millis() as u64, "the runtime serves no containerd events; polling for exits");
                let _ = feed.send(Feed::Down);
                return;
            }
            Err(e) => {
                if !failing {
                    warn!(%socket, error = %e, every_ms = every.as_millis() as u64, "subscribing to containerd's exit events failed; polling for exits and retrying");
                }
                failing = true;
            }
        }
        if feed.send(Feed::Down).is_err() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// Waits until CRI shows `container` exited, then hands its status on if it is one of this
/// node's workload containers. Sandboxes and other nodes' containers end here.
async fn settle(cri: Cri, node: String, container: String, feed: mpsc::UnboundedSender<Feed>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = match cri.container_status(&container).await {
            Ok(s) => s,
            Err(_) => return, // a sandbox's pause container, or already removed
        };
        if !ours(&s, &node) {
            return;
        }
        if s.state == ContainerState::ContainerExited as i32 {
            let _ = feed.send(Feed::Exited(Box::new(s)));
            return;
        }
        if Instant::now() >= deadline {
            return; // the poll will find it
        }
        tokio::time::sleep(SETTLE_STEP).await;
    }
}

fn ours(s: &ContainerStatus, node: &str) -> bool {
    s.labels.get(LABEL_NODE).map(String::as_str) == Some(node)
        && s.labels.get(LABEL_ROLE).map(String::as_str) == Some("workload")
}
