//! The scheduler's outbox: node ops sent by a task of their own, in the order they were
//! handed over, so that a round does not wait for its ops to be stored before the next
//! round starts; what could not be sent goes back to the actor.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_schemas::NodeOp;
use tokio::sync::mpsc;
use tracing::warn;

use crate::ports::ops::OpsSink;

/// Ops by node, in the order each node is to get them.
pub type NodeOps = BTreeMap<Arc<str>, Vec<NodeOp>>;

/// Hands ops to the sending task. Dropping it ends the task once what was queued is sent.
pub struct Outbox {
    queue: mpsc::UnboundedSender<NodeOps>,
}

impl Outbox {
    /// Starts the sending task over `sink`; each node's ops that could not be sent are
    /// handed to `unsent`.
    pub fn start<O: OpsSink>(sink: O, unsent: impl Fn(NodeOps) + Send + 'static) -> Outbox {
        let (queue, mut rx) = mpsc::unbounded_channel::<NodeOps>();
        tokio::spawn(async move {
            let mut next = None;
            loop {
                let mut ops = match next.take() {
                    Some(ops) => ops,
                    None => match rx.recv().await {
                        Some(ops) => ops,
                        None => break,
                    },
                };
                // What queued up while the last send was on its way goes as one send, each
                // node's ops in the order handed over; a view goes alone (a node reconciles
                // with a view before the other ops of its message).
                if !has_view(&ops) {
                    while let Ok(more) = rx.try_recv() {
                        if has_view(&more) {
                            next = Some(more);
                            break;
                        }
                        merge(&mut ops, more);
                    }
                }
                let copy = ops.clone();
                let mut failed = NodeOps::new();
                for (node, err) in sink.send(ops).await {
                    warn!(%node, error = %err, "could not send a node its ops");
                    if let Some((node, ops)) = copy.get_key_value(&node) {
                        failed.insert(node.clone(), ops.clone());
                    }
                }
                if !failed.is_empty() {
                    unsent(failed);
                }
            }
        });
        Outbox { queue }
    }

    /// Queues `ops` behind those handed over before.
    pub fn send(&self, ops: NodeOps) {
        if !ops.is_empty() && self.queue.send(ops).is_err() {
            warn!("the scheduler's outbox is closed: ops not sent");
        }
    }
}

/// Whether any node's ops hold a view of the log (a `sync` op).
fn has_view(ops: &NodeOps) -> bool {
    ops.values()
        .flatten()
        .any(|op| matches!(op, NodeOp::Sync { .. }))
}

/// `more` appended to `ops`, node by node.
fn merge(ops: &mut NodeOps, more: NodeOps) {
    for (node, later) in more {
        ops.entry(node).or_default().extend(later);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ops::RecordingOps;

    /// Ops told apart by their number.
    fn ops(node: &str, numbers: &[u64]) -> NodeOps {
        let paces = numbers.iter().map(|&every_ms| NodeOp::Pace { every_ms });
        NodeOps::from([(Arc::from(node), paces.collect())])
    }

    fn numbers(sent: &[(Arc<str>, NodeOp)], node: &str) -> Vec<u64> {
        sent.iter()
            .filter(|(n, _)| &**n == node)
            .map(|(_, op)| match op {
                NodeOp::Pace { every_ms } => *every_ms,
                other => panic!("not sent here: {other:?}"),
            })
            .collect()
    }

    /// Keeps each send as it was handed over.
    #[derive(Clone, Default)]
    struct Sends(Arc<std::sync::Mutex<Vec<NodeOps>>>);

    impl OpsSink for Sends {
        async fn send(&self, ops: NodeOps) -> Vec<(Arc<str>, crate::ports::SinkError)> {
            self.0.lock().unwrap().push(ops);
            Vec::new()
        }

        async fn queue_scans(
            &self,
            _: Vec<bulkhead_schemas::scan::ScanJob>,
        ) -> Vec<(String, crate::ports::SinkError)> {
            Vec::new()
        }
    }

    fn view(node: &str) -> NodeOps {
        let view = NodeOp::Sync {
            view: Default::default(),
        };
        NodeOps::from([(Arc::from(node), vec![view])])
    }

    #[tokio::test]
    async fn what_queued_up_goes_as_one_send_but_a_view_goes_alone() {
        let sends = Sends::default();
        let outbox = Outbox::start(sends.clone(), |_| {});
        // Queued before the task runs (one thread): all waiting at its first look.
        outbox.send(ops("a", &[1]));
        outbox.send(ops("b", &[2]));
        outbox.send(view("a"));
        outbox.send(ops("a", &[3]));
        outbox.send(ops("a", &[4]));
        drop(outbox);
        while Arc::strong_count(&sends.0) > 1 {
            tokio::task::yield_now().await;
        }
        let mut merged = ops("a", &[1]);
        merged.extend(ops("b", &[2]));
        let sent = sends.0.lock().unwrap().clone();
        assert_eq!(sent, [merged, view("a"), ops("a", &[3, 4])]);
    }

    #[tokio::test]
    async fn each_node_gets_its_ops_in_the_order_handed_over_and_what_failed_comes_back() {
        let sink = RecordingOps::default();
        sink.cut_off("b");
        let (back, mut unsent) = mpsc::unbounded_channel();
        let outbox = Outbox::start(sink.clone(), move |ops| {
            let _ = back.send(ops);
        });
        outbox.send(ops("a", &[1, 2]));
        outbox.send(ops("b", &[3]));
        outbox.send(ops("a", &[4]));
        outbox.send(NodeOps::new());
        drop(outbox);
        let failed = unsent.recv().await.expect("b's ops come back");
        assert_eq!(failed, ops("b", &[3]));
        assert!(unsent.recv().await.is_none(), "nothing else failed");
        let sent = sink.ops();
        assert_eq!(numbers(&sent, "a"), [1, 2, 4]);
        assert!(numbers(&sent, "b").is_empty());
    }
}
