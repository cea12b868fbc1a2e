//! The ops port of the scheduler: node operations (`bulkhead.node.<node>.ops`) and scan
//! jobs (`bulkhead.scan.jobs`). [`RecordingOps`] is its twin: it keeps what was sent.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bulkhead_schemas::NodeOp;
use bulkhead_schemas::scan::ScanJob;

use super::SinkError;

/// Where node operations and scan jobs go.
pub trait OpsSink: Clone + Send + Sync + 'static {
    /// Sends each node its operations; returns the nodes that could not be reached.
    fn send(
        &self,
        ops: BTreeMap<Arc<str>, Vec<NodeOp>>,
    ) -> impl Future<Output = Vec<(Arc<str>, SinkError)>> + Send;
    /// Queues scan jobs; returns the ones that could not be queued, by job id.
    fn queue_scans(
        &self,
        jobs: Vec<ScanJob>,
    ) -> impl Future<Output = Vec<(String, SinkError)>> + Send;
}

#[cfg(any(test, feature = "testing"))]
pub use recording::RecordingOps;

#[cfg(any(test, feature = "testing"))]
mod recording {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use bulkhead_schemas::NodeOp;
    use bulkhead_schemas::scan::ScanJob;

    use super::{OpsSink, SinkError};

    /// Keeps every op and scan job sent, in order; nodes can be made unreachable.
    #[derive(Clone, Default)]
    pub struct RecordingOps {
        inner: Arc<Mutex<Recorded>>,
    }

    #[derive(Default)]
    struct Recorded {
        ops: Vec<(Arc<str>, NodeOp)>,
        scans: Vec<ScanJob>,
        unreachable: BTreeSet<String>,
    }

    impl RecordingOps {
        /// Every op delivered so far, with its node, in the order sent.
        pub fn ops(&self) -> Vec<(Arc<str>, NodeOp)> {
            self.lock().ops.clone()
        }

        /// Scan jobs queued so far.
        pub fn scans(&self) -> Vec<ScanJob> {
            self.lock().scans.clone()
        }

        /// Ops for `node` fail (as if NATS were down) until [`RecordingOps::reach`].
        pub fn cut_off(&self, node: &str) {
            self.lock().unreachable.insert(node.to_owned());
        }

        pub fn reach(&self, node: &str) {
            self.lock().unreachable.remove(node);
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("node {0} is cut off")]
    struct CutOff(String);

    impl OpsSink for RecordingOps {
        async fn send(&self, ops: BTreeMap<Arc<str>, Vec<NodeOp>>) -> Vec<(Arc<str>, SinkError)> {
            let mut r = self.lock();
            let mut failed = Vec::new();
            for (node, ops) in ops {
                if r.unreachable.contains(&*node) {
                    let why = SinkError::Unavailable(crate::ports::cause(CutOff(node.to_string())));
                    failed.push((node, why));
                    continue;
                }
                r.ops.extend(ops.into_iter().map(|op| (node.clone(), op)));
            }
            failed
        }

        async fn queue_scans(&self, jobs: Vec<ScanJob>) -> Vec<(String, SinkError)> {
            self.lock().scans.extend(jobs);
            Vec::new()
        }
    }
}
