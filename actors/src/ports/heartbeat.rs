//! The heartbeat port of a node (the `bulkhead-nodes` KV bucket). [`RecordingBeats`] is
//! its twin: it keeps every beat.

use std::future::Future;

use bulkhead_schemas::NodeHeartbeat;

use super::SinkError;

/// Where a node's heartbeats go.
pub trait HeartbeatSink: Clone + Send + Sync + 'static {
    fn beat(&self, hb: NodeHeartbeat) -> impl Future<Output = Result<(), SinkError>> + Send;
}

#[cfg(any(test, feature = "testing"))]
pub use recording::RecordingBeats;

#[cfg(any(test, feature = "testing"))]
mod recording {
    use std::sync::{Arc, Mutex};

    use bulkhead_schemas::NodeHeartbeat;

    use super::{HeartbeatSink, SinkError};

    /// Keeps every heartbeat, in order.
    #[derive(Clone, Default)]
    pub struct RecordingBeats {
        beats: Arc<Mutex<Vec<NodeHeartbeat>>>,
    }

    impl RecordingBeats {
        pub fn beats(&self) -> Vec<NodeHeartbeat> {
            self.beats.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    impl HeartbeatSink for RecordingBeats {
        async fn beat(&self, hb: NodeHeartbeat) -> Result<(), SinkError> {
            self.beats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(hb);
            Ok(())
        }
    }
}
