//! The container-runtime port of a node: start and stop containers, report exits, list
//! what the runtime holds for reconciliation. Adapters: CRI (crate `bulkhead`) and its
//! twin [`super::sim::SimRuntime`].

use std::future::Future;
use std::time::Duration;

use bulkhead_schemas::WorkloadSpec;
use bulkhead_schemas::node::IsolationReport;
use bulkhead_schemas::spec::RuntimeClass;

/// What to start: one replica of a workload.
#[derive(Clone, Debug)]
pub struct StartSpec {
    pub workload: String,
    pub replica: u32,
    pub node: String,
    pub spec: WorkloadSpec,
}

/// A container ended by itself (not through `stop`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitNotice {
    pub container: String,
    pub code: i32,
    /// `completed`, `error`, `oom_killed`, …
    pub reason: String,
    pub finished_at: String,
}

/// A workload container the runtime holds for a node, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub container: String,
    pub workload: String,
    pub replica: u32,
    pub status: ObservedStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservedStatus {
    Running,
    /// Ended; the notice says how.
    Exited(ExitNotice),
    /// Created but never started, or in a state the runtime cannot tell.
    Stale,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime class {0} is not offered by this node")]
    UnsupportedClass(RuntimeClass),
    #[error("pulling image {image} failed: {reason}")]
    Pull { image: String, reason: String },
    #[error("start failed: {0}")]
    Start(String),
    #[error("stop failed: {0}")]
    Stop(String),
    #[error("listing containers failed: {0}")]
    List(String),
}

/// A local container runtime. Exits are reported on the channel the adapter was built with.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// `sim`, `cri`.
    fn kind(&self) -> &'static str;
    /// The classes this node offers now (for CRI: mapped to a handler and probed).
    fn runtime_classes(&self) -> Vec<RuntimeClass>;
    /// The latest isolation probe per class (empty where the runtime does not probe).
    fn isolation(&self) -> Vec<IsolationReport> {
        Vec::new()
    }
    /// How a container of `spec` is confined here, for its `started` event (None where
    /// nothing runs, as on the simulated runtime).
    fn confinement(
        &self,
        _spec: &bulkhead_schemas::WorkloadSpec,
    ) -> Option<bulkhead_schemas::event::Confinement> {
        None
    }
    /// Starts the replica and returns its container id.
    fn start(&self, spec: StartSpec) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Stops the container (SIGTERM, then SIGKILL after `grace`) and removes it with
    /// everything it ran in. Idempotent: a container already gone is not an error.
    fn stop(
        &self,
        container: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Every workload container the runtime holds for `node`.
    fn observe(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<Observed>, RuntimeError>> + Send;
}
