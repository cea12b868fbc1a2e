//! The CRI runtime: the node's `ContainerRuntime` over any CRI v1 endpoint (containerd,
//! CRI-O, Edera, Kata…). One pod sandbox per replica, labelled with node, workload and
//! replica; runtime classes map to CRI handlers and are advertised once probed.

pub mod client;
pub mod events;
pub mod guard;
pub mod probe;
pub mod v1;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::node::cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, Int64Value,
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, SecurityProfile, security_profile,
};
use bulkhead_actors::ports::runtime::{
    ContainerRuntime, ExitNotice, Observed, ObservedStatus, RuntimeError, StartSpec,
};
use bulkhead_schemas::event::Confinement;
use bulkhead_schemas::node::IsolationReport;
use bulkhead_schemas::spec::{BASE_CAPABILITIES, Security};
use bulkhead_schemas::{RuntimeClass, WorkloadSpec};
use futures::future::join_all;
use tokio::sync::mpsc;
use tracing::{info, warn};

use client::image_spec;
pub use client::{Cri, CriError};
use probe::ProbeError;

/// Why a runtime class is not offered (yet).
#[derive(Debug, thiserror::Error)]
enum NotOffered {
    /// Its isolation probe failed, for this reason.
    #[error("{0}")]
    ProbeFailed(String),
    #[error("not probed yet")]
    NotProbed,
}

use crate::node::config::{CriSettings, Network};
use crate::tasks::AbortOnDrop;

/// Labels every sandbox and container of bulkhead carries.
pub const LABEL_NODE: &str = "bulkhead.node";
pub const LABEL_WORKLOAD: &str = "bulkhead.workload";
pub const LABEL_REPLICA: &str = "bulkhead.replica";
/// `workload` or `probe`.
pub const LABEL_ROLE: &str = "bulkhead.role";
pub const LABEL_CLASS: &str = "bulkhead.class";
/// CRI namespace of bulkhead's sandboxes.
pub const NAMESPACE: &str = "bulkhead";

const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct CriRuntime {
    cri: Cri,
    node: String,
    settings: CriSettings,
    handlers: BTreeMap<RuntimeClass, String>,
    host_version: String,
    probes: Mutex<BTreeMap<RuntimeClass, IsolationReport>>,
    /// Container → its sandbox.
    sandboxes: Mutex<HashMap<String, String>>,
    tasks: Mutex<Vec<AbortOnDrop>>,
    /// `containerd v1.6.20 (CRI v1)` and the like.
    pub version: String,
    /// The pod network's guard (pod network only), removed with the runtime.
    _guard: Option<guard::HostGuard>,
}

impl CriRuntime {
    /// Connects, clears probe leftovers, probes every mapped class, and starts watching
    /// for exits (reported on the returned channel) and re-probing periodically.
    pub async fn connect(
        node: &str,
        settings: CriSettings,
    ) -> Result<(Arc<CriRuntime>, mpsc::UnboundedReceiver<ExitNotice>), CriError> {
        let (cri, version) = Cri::connect(&settings.socket).await?;
        info!(node, socket = %settings.socket.display(), %version, "connected to the CRI runtime");
        let guard = match settings.network {
            Network::Pod => Some(guard::HostGuard::install(node, &settings.pod_cidr)?),
            Network::Host => {
                warn!(
                    node,
                    "host network: every workload shares the node's network namespace and reaches the host's services"
                );
                None
            }
        };
        let rt = Arc::new(CriRuntime {
            cri,
            node: node.to_owned(),
            handlers: settings.handlers_or_default(),
            host_version: probe::host_kernel().1,
            settings,
            probes: Mutex::default(),
            sandboxes: Mutex::default(),
            tasks: Mutex::default(),
            version,
            _guard: guard,
        });
        rt.remove_sandboxes(&[(LABEL_ROLE, "probe")]).await;
        rt.probe_all().await;
        let (tx, rx) = mpsc::unbounded_channel();
        let watch = tokio::spawn(watch::exits(
            rt.cri.clone(),
            node.to_owned(),
            Duration::from_millis(rt.settings.exit_poll_ms.max(10)),
            rt.settings.exit_events.then(|| watch::EventSource {
                socket: rt
                    .settings
                    .events_socket
                    .clone()
                    .unwrap_or_else(|| rt.settings.socket.clone()),
                namespace: rt.settings.events_namespace.clone(),
            }),
            tx,
        ));
        let every = Duration::from_secs(rt.settings.probe_interval_secs.max(1));
        let reprobe = tokio::spawn(reprobe(Arc::downgrade(&rt), every));
        rt.tasks
            .lock()
            .expect("lock")
            .extend([AbortOnDrop(watch), AbortOnDrop(reprobe)]);
        Ok((rt, rx))
    }

    /// The CRI client (its per-call timings serve the load tests).
    pub fn client(&self) -> &Cri {
        &self.cri
    }

    /// Runs the isolation probe of every mapped class, concurrently, and keeps the results.
    pub async fn probe_all(&self) {
        let reports = join_all(
            self.handlers
                .iter()
                .map(|(class, handler)| self.probe(*class, handler)),
        )
        .await;
        let mut probes = self.probes.lock().expect("lock");
        for r in reports {
            if r.ok {
                info!(class = %r.class, handler = %r.handler, kernel = %r.kernel, took_ms = r.took_ms, detail = %r.detail, "isolation probe passed");
            } else {
                warn!(class = %r.class, handler = %r.handler, detail = %r.detail, "isolation probe failed: class not offered");
            }
            probes.insert(r.class, r);
        }
    }

    async fn probe(&self, class: RuntimeClass, handler: &str) -> IsolationReport {
        let t = Instant::now();
        let output = self.run_probe(class, handler).await;
        probe::judge(
            class,
            handler,
            &self.host_version,
            output,
            t.elapsed().as_millis() as u64,
            bulkhead_schemas::now_rfc3339(),
        )
    }

    /// Runs the probe container to its end and returns what it printed.
    async fn run_probe(
        &self,
        class: RuntimeClass,
        handler: &str,
    ) -> Result<Vec<String>, ProbeError> {
        let name = format!("probe-{}-{}", self.node, class);
        let mut labels = self.labels("probe");
        labels.insert(LABEL_CLASS.into(), class.as_str().into());
        let log_dir = self.settings.log_dir.join("_probe");
        let log_name = format!("{class}.log");
        std::fs::create_dir_all(&log_dir).map_err(|source| ProbeError::Io {
            what: log_dir.display().to_string(),
            source,
        })?;
        let _ = std::fs::remove_file(log_dir.join(&log_name));
        let sandbox = self.sandbox_config(&name, labels.clone(), &log_dir, self.settings.network);
        let image = &self.settings.probe_image;
        self.ensure_image(image, &sandbox).await?;
        let sb = self.cri.run_sandbox(&sandbox, handler).await?;
        let r = async {
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "probe".into(),
                    attempt: 0,
                }),
                image: Some(image_spec(image)),
                command: vec!["sh".into(), "-c".into(), probe::PROBE_SCRIPT.into()],
                labels: labels.into_iter().collect(),
                log_path: log_name.clone(),
                linux: Some(LinuxContainerConfig {
                    resources: Some(resources(64, 100)),
                    // The probe runs as workloads do: what it proves is what they get.
                    security_context: Some(security_context(&confinement_of(
                        &Security::default(),
                        self.settings.network,
                    ))),
                }),
                ..Default::default()
            };
            let id = self.cri.create_container(&sb, config, &sandbox).await?;
            self.cri.start_container(&id).await?;
            let deadline = Instant::now() + PROBE_TIMEOUT;
            loop {
                let s = self.cri.container_status(&id).await?;
                if s.state == ContainerState::ContainerExited as i32 {
                    return Ok(s);
                }
                if Instant::now() > deadline {
                    return Err(CriError::Call {
                        call: "ContainerStatus",
                        status: Box::new(tonic::Status::deadline_exceeded(
                            "probe did not exit within 60 s",
                        )),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        .await;
        let _ = self.remove_sandbox(&sb).await;
        let status = r?;
        let log =
            std::fs::read_to_string(log_dir.join(&log_name)).map_err(|source| ProbeError::Io {
                what: "reading the probe's log".into(),
                source,
            })?;
        if status.exit_code != 0 {
            return Err(ProbeError::Exited {
                code: status.exit_code,
                reason: status.reason,
                output: probe::cri_log_text(&log).join(" / "),
            });
        }
        Ok(probe::cri_log_text(&log))
    }

    /// How a container of `spec` is confined on this node.
    fn confinement_for(&self, spec: &WorkloadSpec) -> Confinement {
        confinement_of(&spec.security, self.settings.network)
    }

    fn advertised(&self, class: RuntimeClass) -> Result<(), NotOffered> {
        match self.probes.lock().expect("lock").get(&class) {
            Some(r) if r.ok => Ok(()),
            Some(r) => Err(NotOffered::ProbeFailed(r.detail.clone())),
            None => Err(NotOffered::NotProbed),
        }
    }

    fn labels(&self, role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NODE.to_owned(), self.node.clone()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ])
    }

    fn sandbox_config(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        log_dir: &Path,
        network: Network,
    ) -> PodSandboxConfig {
        let network = match network {
            Network::Host => NamespaceMode::Node,
            Network::Pod => NamespaceMode::Pod,
        };
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uuid::Uuid::now_v7().to_string(),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            labels: labels.into_iter().collect(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn ensure_image(
        &self,
        image: &str,
        sandbox: &PodSandboxConfig,
    ) -> Result<(), RuntimeError> {
        let pull_err = |e: CriError| RuntimeError::Pull {
            image: image.to_owned(),
            reason: e.message(),
        };
        if self.cri.image_present(image).await.map_err(pull_err)? {
            return Ok(());
        }
        info!(image, "pulling");
        self.cri
            .pull_image(image, sandbox)
            .await
            .map_err(pull_err)?;
        Ok(())
    }

    /// Stops and removes a sandbox with whatever it holds; gone already is fine. Returns
    /// the first failure (each is logged).
    async fn remove_sandbox(&self, sandbox: &str) -> Result<(), CriError> {
        let mut failed = None;
        for r in [
            self.cri.stop_sandbox(sandbox).await,
            self.cri.remove_sandbox(sandbox).await,
        ] {
            if let Err(e) = r
                && !e.is_not_found()
            {
                warn!(sandbox, error = %e, "could not remove a sandbox");
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn remove_sandboxes(&self, extra: &[(&str, &str)]) {
        let mut sel = vec![(LABEL_NODE, self.node.as_str())];
        sel.extend_from_slice(extra);
        match self.cri.list_sandboxes(&sel).await {
            Ok(list) => {
                for sb in list {
                    let _ = self.remove_sandbox(&sb.id).await;
                }
            }
            Err(e) => warn!(error = %e, "could not list sandboxes"),
        }
    }

    async fn sandbox_of(&self, container: &str) -> Option<String> {
        if let Some(sb) = self.sandboxes.lock().expect("lock").remove(container) {
            return Some(sb);
        }
        let list = self
            .cri
            .list_containers(&[(LABEL_NODE, &self.node)], None)
            .await
            .ok()?;
        list.into_iter()
            .find(|c| c.id == container)
            .map(|c| c.pod_sandbox_id)
    }
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("node", &self.node)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Re-runs the probes every `every` while the runtime lives.
async fn reprobe(rt: Weak<CriRuntime>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(rt) = rt.upgrade() else { return };
        rt.probe_all().await;
    }
}

impl ContainerRuntime for CriRuntime {
    fn kind(&self) -> &'static str {
        "cri"
    }

    fn runtime_classes(&self) -> Vec<RuntimeClass> {
        let probes = self.probes.lock().expect("lock");
        self.handlers
            .keys()
            .copied()
            .filter(|c| probes.get(c).is_some_and(|r| r.ok))
            .collect()
    }

    fn confinement(&self, spec: &WorkloadSpec) -> Option<Confinement> {
        Some(self.confinement_for(spec))
    }

    fn isolation(&self) -> Vec<IsolationReport> {
        self.probes
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect()
    }

    async fn start(&self, req: StartSpec) -> Result<String, RuntimeError> {
        if let Some(name) = req
            .spec
            .secrets
            .iter()
            .find_map(|(n, v)| bulkhead_actors::secrets::is_sealed(v).then_some(n))
        {
            return Err(RuntimeError::Start(format!(
                "secret {name} could not be opened on this node (not sealed to its key)"
            )));
        }
        let class = req.spec.runtime_class;
        let handler = self
            .handlers
            .get(&class)
            .ok_or(RuntimeError::UnsupportedClass(class))?;
        self.advertised(class).map_err(|why| {
            RuntimeError::Start(format!("runtime class {class} is not offered: {why}"))
        })?;
        let mut labels = self.labels("workload");
        labels.insert(LABEL_WORKLOAD.into(), req.workload.clone());
        labels.insert(LABEL_REPLICA.into(), req.replica.to_string());
        labels.insert(LABEL_CLASS.into(), class.as_str().into());
        let log_dir = workload_log_dir(&self.settings.log_dir, &req.workload);
        std::fs::create_dir_all(&log_dir).map_err(|e| {
            RuntimeError::Start(format!("log directory {}: {e}", log_dir.display()))
        })?;
        let confinement = self.confinement_for(&req.spec);
        let host = confinement.network == "host";
        let sandbox = self.sandbox_config(
            &format!("{}-{}", req.workload, req.replica),
            labels.clone(),
            &log_dir,
            if host { Network::Host } else { Network::Pod },
        );
        self.ensure_image(&req.spec.image, &sandbox).await?;
        let start_err = |e: CriError| RuntimeError::Start(e.to_string());
        let sb = self
            .cri
            .run_sandbox(&sandbox, handler)
            .await
            .map_err(start_err)?;
        let config = container_config(&req.spec, &confinement, labels, log_name(req.replica));
        let id = match self.cri.create_container(&sb, config, &sandbox).await {
            Ok(id) => id,
            Err(e) => {
                let _ = self.remove_sandbox(&sb).await;
                return Err(start_err(e));
            }
        };
        if let Err(e) = self.cri.start_container(&id).await {
            let _ = self.remove_sandbox(&sb).await;
            return Err(start_err(e));
        }
        self.sandboxes.lock().expect("lock").insert(id.clone(), sb);
        Ok(id)
    }

    async fn stop(&self, container: &str, grace: Duration) -> Result<(), RuntimeError> {
        let sandbox = self.sandbox_of(container).await;
        let stop_err = |e: CriError| RuntimeError::Stop(e.to_string());
        for r in [
            self.cri.stop_container(container, grace).await,
            self.cri.remove_container(container).await,
        ] {
            match r {
                Err(e) if !e.is_not_found() => return Err(stop_err(e)),
                _ => {}
            }
        }
        if let Some(sb) = sandbox
            && let Err(e) = self.remove_sandbox(&sb).await
        {
            // Kept for the next try of this stop (containerd can fail to unlink a network
            // namespace still busy, "device or resource busy"): the sandbox is not left.
            self.sandboxes
                .lock()
                .expect("lock")
                .insert(container.to_owned(), sb);
            return Err(stop_err(e));
        }
        Ok(())
    }

    /// Lists the node's workload containers; empty sandboxes (a start cut short by a
    /// crash) are removed on the way, as nothing else would ever find them.
    async fn observe(&self, node: &str) -> Result<Vec<Observed>, RuntimeError> {
        let list_err = |e: CriError| RuntimeError::List(e.to_string());
        let sel = [(LABEL_NODE, node), (LABEL_ROLE, "workload")];
        let containers = self
            .cri
            .list_containers(&sel, None)
            .await
            .map_err(list_err)?;
        let mut out = Vec::new();
        let mut held = HashSet::new();
        for c in containers {
            held.insert(c.pod_sandbox_id.clone());
            let (Some(workload), Some(replica)) = (
                c.labels.get(LABEL_WORKLOAD),
                c.labels.get(LABEL_REPLICA).and_then(|r| r.parse().ok()),
            ) else {
                continue;
            };
            let status = if c.state == ContainerState::ContainerRunning as i32 {
                ObservedStatus::Running
            } else if c.state == ContainerState::ContainerExited as i32 {
                match self.cri.container_status(&c.id).await {
                    Ok(s) => ObservedStatus::Exited(exit_notice(&s)),
                    Err(e) if e.is_not_found() => continue, // removed meanwhile
                    Err(e) => return Err(list_err(e)),
                }
            } else {
                ObservedStatus::Stale
            };
            self.sandboxes
                .lock()
                .expect("lock")
                .insert(c.id.clone(), c.pod_sandbox_id.clone());
            out.push(Observed {
                container: c.id,
                workload: workload.clone(),
                replica,
                status,
            });
        }
        for sb in self.cri.list_sandboxes(&sel).await.map_err(list_err)? {
            if !held.contains(&sb.id) {
                info!(sandbox = %sb.id, "removing an empty sandbox");
                let _ = self.remove_sandbox(&sb.id).await;
            }
        }
        Ok(out)
    }
}

/// Memory limit and CFS quota (millicores over a 100 ms period) of a container.
fn resources(memory_mb: u64, cpu_millicores: u64) -> LinuxContainerResources {
    const PERIOD_US: i64 = 100_000;
    LinuxContainerResources {
        cpu_period: PERIOD_US,
        cpu_quota: (cpu_millicores as i64 * PERIOD_US / 1000).max(1000),
        cpu_shares: (cpu_millicores as i64 * 1024 / 1000).max(2),
        memory_limit_in_bytes: (memory_mb as i64) * 1024 * 1024,
        ..Default::default()
    }
}

/// Where the runtime writes the logs of workload `key` (`tenant/id`) under `log_dir`: one
/// directory a workload, one file a replica ([`log_name`]). The node's logs service reads
/// them from the same place.
pub fn workload_log_dir(log_dir: &Path, key: &str) -> PathBuf {
    log_dir.join(key)
}

/// A replica's log file in its workload's log directory.
pub fn log_name(replica: u32) -> String {
    format!("{replica}.log")
}

fn container_config(
    spec: &WorkloadSpec,
    confinement: &Confinement,
    labels: BTreeMap<String, String>,
    log_path: String,
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(image_spec(&spec.image)),
        command: spec.command.clone(),
        args: spec.args.clone(),
        // Secrets, opened by the node from what the scheduler sealed to it.
        envs: spec
            .env
            .iter()
            .chain(&spec.secrets)
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        labels: labels.into_iter().collect(),
        log_path,
        linux: Some(LinuxContainerConfig {
            resources: Some(resources(spec.memory_mb, spec.cpu_millicores)),
            security_context: Some(security_context(confinement)),
        }),
        ..Default::default()
    }
}

/// How a container of a spec with `security` is confined on a node whose network is
/// `network`: every capability dropped but `NET_BIND_SERVICE` (Kubernetes' `restricted`
/// set) and what the spec adds from Docker's default set (admission checked it against the
/// tenant's policy); the runtime's default seccomp profile; `no_new_privs`; never
/// privileged. Dropped by default: `NET_RAW` (raw sockets spoof and sniff), `CHOWN`,
/// `DAC_OVERRIDE`, `FOWNER`, `FSETID` (root in the container overriding file permissions),
/// `SETUID`, `SETGID`, `SETPCAP`, `SETFCAP` (changing identity, granting capabilities),
/// `MKNOD`, `KILL`, `SYS_CHROOT`, `AUDIT_WRITE`.
pub fn confinement_of(security: &Security, network: Network) -> Confinement {
    let host = security.host_network || network == Network::Host;
    let mut capabilities: Vec<String> = BASE_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .chain(security.add_capabilities.iter().cloned())
        .collect();
    capabilities.sort();
    capabilities.dedup();
    Confinement {
        network: if host { "host" } else { "pod" }.into(),
        seccomp: "runtime/default".into(),
        no_new_privs: true,
        capabilities,
        run_as_user: security.run_as_user,
        read_only_rootfs: security.read_only_rootfs,
    }
}

/// The CRI security context that gives a container `c`.
pub fn security_context(c: &Confinement) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: c.capabilities.clone(),
            ..Default::default()
        }),
        privileged: false,
        no_new_privs: c.no_new_privs,
        seccomp: Some(SecurityProfile {
            profile_type: security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        run_as_user: c.run_as_user.map(|uid| Int64Value {
            value: i64::from(uid),
        }),
        readonly_rootfs: c.read_only_rootfs,
        ..Default::default()
    }
}

/// How a container ended, in the words of the `exited` event.
pub fn exit_notice(s: &ContainerStatus) -> ExitNotice {
    let reason = match s.reason.as_str() {
        "OOMKilled" => "oom_killed".to_owned(),
        "Completed" => "completed".to_owned(),
        "Error" => "error".to_owned(),
        "" if s.exit_code == 0 => "completed".to_owned(),
        "" => "error".to_owned(),
        other => other.to_lowercase(),
    };
    let finished_at = time::OffsetDateTime::from_unix_timestamp_nanos(s.finished_at.into())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(bulkhead_schemas::now_rfc3339);
    ExitNotice {
        container: s.id.clone(),
        code: s.exit_code,
        reason,
        finished_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_spec() {
        let r = resources(256, 500);
        assert_eq!(r.memory_limit_in_bytes, 256 * 1024 * 1024);
        assert_eq!((r.cpu_quota, r.cpu_period), (50_000, 100_000));
        assert_eq!(r.cpu_shares, 512);
        // tiny CPU asks stay above the kernel's 1 ms quota minimum
        assert_eq!(resources(1, 1).cpu_quota, 1000);
    }

    #[test]
    fn exit_reasons_are_named() {
        let st = |code, reason: &str| ContainerStatus {
            id: "c".into(),
            exit_code: code,
            reason: reason.into(),
            finished_at: 1_795_000_000_000_000_000,
            ..Default::default()
        };
        assert_eq!(exit_notice(&st(137, "OOMKilled")).reason, "oom_killed");
        assert_eq!(exit_notice(&st(0, "Completed")).reason, "completed");
        assert_eq!(exit_notice(&st(7, "Error")).reason, "error");
        assert_eq!(exit_notice(&st(7, "")).reason, "error");
        let n = exit_notice(&st(7, "Error"));
        assert_eq!(n.code, 7);
        assert!(n.finished_at.starts_with("2026-"), "{}", n.finished_at);
    }
}
