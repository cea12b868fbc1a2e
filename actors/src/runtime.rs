//! The container-runtime port of a node: start and stop containers, report exits.
//! Adapters: the `sim` runtime (load tests) and, later, CRI.

use std::future::Future;

use bulkhead_schemas::WorkloadSpec;
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

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime class {0} is not offered by this node")]
    UnsupportedClass(RuntimeClass),
    #[error("start failed: {0}")]
    Start(String),
    #[error("stop failed: {0}")]
    Stop(String),
}

/// A local container runtime. Exits are reported on the channel the adapter was built with.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// `sim`, `cri`.
    fn kind(&self) -> &'static str;
    fn runtime_classes(&self) -> Vec<RuntimeClass>;
    /// Starts the replica and returns its container id.
    fn start(&self, spec: StartSpec) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Stops and removes the container.
    fn stop(&self, container: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
