//! The CRI v1 gRPC client over a unix socket, with a span and a timing per call.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::node::cri::v1::image_service_client::ImageServiceClient;
use crate::node::cri::v1::runtime_service_client::RuntimeServiceClient;
use crate::node::cri::v1::*;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{Instrument, info_span};

/// Timings kept per call kind (the newest ones beyond this are dropped).
const MAX_TIMINGS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot reach the CRI runtime at {path}: {reason}")]
    Connect { path: String, reason: String },
    #[error("{call}: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    /// The pod network's guard could not be set up (the node does not start without it).
    #[error(transparent)]
    Guard(#[from] super::guard::GuardError),
}

impl CriError {
    /// The runtime says the object does not exist (already removed).
    pub fn is_not_found(&self) -> bool {
        match self {
            CriError::Call { status, .. } => {
                status.code() == tonic::Code::NotFound
                    || status.message().contains("not found")
                    || status.message().contains("does not exist")
            }
            CriError::Connect { .. } | CriError::Guard(_) => false,
        }
    }

    /// The endpoint does not serve the called method at all.
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, CriError::Call { status, .. } if status.code() == tonic::Code::Unimplemented)
    }

    /// The runtime's own message, without the call name.
    pub fn message(&self) -> String {
        match self {
            CriError::Call { status, .. } => status.message().to_owned(),
            CriError::Connect { reason, .. } => reason.clone(),
            CriError::Guard(e) => e.to_string(),
        }
    }
}

/// A connection to one CRI endpoint (containerd, CRI-O, an Edera or Kata endpoint…).
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    times: Arc<Mutex<BTreeMap<&'static str, Vec<Duration>>>>,
}

impl std::fmt::Debug for Cri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cri").finish_non_exhaustive()
    }
}

/// A gRPC channel over the unix socket at `socket`.
pub async fn unix_channel(socket: &Path) -> Result<Channel, CriError> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .map_err(|e| CriError::Connect {
            path: socket.display().to_string(),
            reason: e.to_string(),
        })?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| CriError::Connect {
            path: socket.display().to_string(),
            reason: format!("{e} ({e:?})"),
        })
}

impl Cri {
    /// Connects and asks the runtime its name and version.
    pub async fn connect(socket: &Path) -> Result<(Cri, String), CriError> {
        let err = |e: &dyn std::fmt::Display| CriError::Connect {
            path: socket.display().to_string(),
            reason: e.to_string(),
        };
        let channel = unix_channel(socket).await?;
        let cri = Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            times: Arc::default(),
        };
        let v = cri
            .call(
                "Version",
                cri.runtime.clone().version(VersionRequest::default()),
            )
            .await
            .map_err(|e| err(&e))?;
        Ok((
            cri,
            format!(
                "{} {} (CRI {})",
                v.runtime_name, v.runtime_version, v.runtime_api_version
            ),
        ))
    }

    /// Every call's durations so far, by call name.
    pub fn call_times(&self) -> BTreeMap<&'static str, Vec<Duration>> {
        self.times.lock().expect("lock").clone()
    }

    async fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        let t = Instant::now();
        let r = fut.instrument(info_span!("cri", call)).await;
        let took = t.elapsed();
        let mut times = self.times.lock().expect("lock");
        let v = times.entry(call).or_default();
        if v.len() < MAX_TIMINGS {
            v.push(took);
        }
        r.map(tonic::Response::into_inner)
            .map_err(|status| CriError::Call {
                call,
                status: Box::new(status),
            })
    }

    pub async fn image_present(&self, image: &str) -> Result<bool, CriError> {
        let r = self
            .call(
                "ImageStatus",
                self.images.clone().image_status(ImageStatusRequest {
                    image: Some(image_spec(image)),
                    verbose: false,
                }),
            )
            .await?;
        Ok(r.image.is_some())
    }

    pub async fn pull_image(
        &self,
        image: &str,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, CriError> {
        let r = self
            .call(
                "PullImage",
                self.images.clone().pull_image(PullImageRequest {
                    image: Some(image_spec(image)),
                    auth: None,
                    sandbox_config: Some(sandbox.clone()),
                }),
            )
            .await?;
        Ok(r.image_ref)
    }

    pub async fn run_sandbox(
        &self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, CriError> {
        let r = self
            .call(
                "RunPodSandbox",
                self.runtime.clone().run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: handler.to_owned(),
                }),
            )
            .await?;
        Ok(r.pod_sandbox_id)
    }

    pub async fn create_container(
        &self,
        sandbox: &str,
        config: ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String, CriError> {
        let r = self
            .call(
                "CreateContainer",
                self.runtime
                    .clone()
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: sandbox.to_owned(),
                        config: Some(config),
                        sandbox_config: Some(sandbox_config.clone()),
                    }),
            )
            .await?;
        Ok(r.container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        self.call(
            "StartContainer",
            self.runtime.clone().start_container(StartContainerRequest {
                container_id: id.to_owned(),
            }),
        )
        .await
        .map(drop)
    }

    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus, CriError> {
        let r = self
            .call(
                "ContainerStatus",
                self.runtime
                    .clone()
                    .container_status(ContainerStatusRequest {
                        container_id: id.to_owned(),
                        verbose: false,
                    }),
            )
            .await?;
        r.status.ok_or_else(|| CriError::Call {
            call: "ContainerStatus",
            status: Box::new(tonic::Status::not_found("no status in the reply")),
        })
    }

    /// The host PID of a running container's process (from the runtime's verbose status,
    /// containerd's `info.pid`); None when the runtime does not say.
    pub async fn container_pid(&self, id: &str) -> Result<Option<u32>, CriError> {
        let r = self
            .call(
                "ContainerStatus",
                self.runtime
                    .clone()
                    .container_status(ContainerStatusRequest {
                        container_id: id.to_owned(),
                        verbose: true,
                    }),
            )
            .await?;
        Ok(r.info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v["pid"].as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0))
    }

    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), CriError> {
        self.call(
            "StopContainer",
            self.runtime.clone().stop_container(StopContainerRequest {
                container_id: id.to_owned(),
                timeout: grace.as_secs() as i64,
            }),
        )
        .await
        .map(drop)
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.call(
            "RemoveContainer",
            self.runtime
                .clone()
                .remove_container(RemoveContainerRequest {
                    container_id: id.to_owned(),
                }),
        )
        .await
        .map(drop)
    }

    pub async fn stop_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.call(
            "StopPodSandbox",
            self.runtime
                .clone()
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                }),
        )
        .await
        .map(drop)
    }

    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.call(
            "RemovePodSandbox",
            self.runtime
                .clone()
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                }),
        )
        .await
        .map(drop)
    }

    /// Containers carrying all of `labels`, optionally only those in `state`.
    pub async fn list_containers(
        &self,
        labels: &[(&str, &str)],
        state: Option<ContainerState>,
    ) -> Result<Vec<Container>, CriError> {
        let r = self
            .call(
                "ListContainers",
                self.runtime.clone().list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        label_selector: selector(labels),
                        state: state.map(|s| ContainerStateValue { state: s as i32 }),
                        ..Default::default()
                    }),
                }),
            )
            .await?;
        Ok(r.containers)
    }

    /// Sandboxes carrying all of `labels`.
    pub async fn list_sandboxes(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<PodSandbox>, CriError> {
        let r = self
            .call(
                "ListPodSandbox",
                self.runtime
                    .clone()
                    .list_pod_sandbox(ListPodSandboxRequest {
                        filter: Some(PodSandboxFilter {
                            label_selector: selector(labels),
                            ..Default::default()
                        }),
                    }),
            )
            .await?;
        Ok(r.items)
    }
}

pub(super) fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

fn selector(labels: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
