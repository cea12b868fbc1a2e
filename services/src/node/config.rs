//! A node's configuration file (TOML): identity, capacity, labels, and for the CRI
//! runtime the endpoint and the runtime class → CRI handler map. Flags override it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_actors::node::NodeConfig;
use bulkhead_schemas::{Resources, RuntimeClass};
use serde::Deserialize;

/// The whole file. Every field has a default, so an empty file is a valid sim node.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeFile {
    pub name: String,
    /// `sim` or `cri`.
    pub runtime: String,
    pub memory_mb: u64,
    pub cpu_millicores: u64,
    pub slots: u32,
    pub heartbeat_ms: u64,
    pub stop_grace_secs: u64,
    pub labels: BTreeMap<String, String>,
    /// Classes a `sim` node offers.
    pub classes: Vec<RuntimeClass>,
    pub sim_start_delay_ms: u64,
    pub cri: CriSettings,
}

impl Default for NodeFile {
    fn default() -> Self {
        NodeFile {
            name: "node".into(),
            runtime: "sim".into(),
            memory_mb: 16_384,
            cpu_millicores: 8_000,
            slots: 110,
            heartbeat_ms: 1_000,
            stop_grace_secs: 10,
            labels: BTreeMap::new(),
            classes: vec![RuntimeClass::Runc],
            sim_start_delay_ms: 0,
            cri: CriSettings::default(),
        }
    }
}

/// How the node reaches its CRI runtime and what it asks of it.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CriSettings {
    /// The CRI endpoint: containerd `/run/containerd/containerd.sock`, CRI-O
    /// `/var/run/crio/crio.sock`, or an Edera / Kata / confidential runtime's socket.
    pub socket: PathBuf,
    /// Runtime class → CRI runtime handler (as named in the runtime's own config, e.g.
    /// containerd's `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>]`).
    /// The node offers exactly these classes, each once its isolation probe passes.
    pub handlers: BTreeMap<RuntimeClass, String>,
    /// Workload logs go to `<log_dir>/<workload>/<replica>.log` (CRI log format).
    pub log_dir: PathBuf,
    /// Image of the isolation probe; it needs `sh`, `uname` and `cat`.
    pub probe_image: String,
    /// Seconds between isolation probes (after the one at start).
    pub probe_interval_secs: u64,
    /// `pod` (default: a network namespace per sandbox, set up by the runtime's CNI
    /// configuration, the host's own addresses closed to it by the node's nftables guard)
    /// or `host` (the node's network namespace: every workload reaches the host's
    /// services; no CNI needed).
    pub network: Network,
    /// The pod network's addresses, as the CNI configuration hands them out: what the
    /// guard keeps off the host.
    pub pod_cidr: String,
    /// Milliseconds between looks for exited containers when no exit events flow (while
    /// they do, the look is a safety net every 5 s).
    pub exit_poll_ms: u64,
    /// Follow containerd's `/tasks/exit` events for prompt exits. An endpoint without
    /// containerd's events service (CRI-O…) is detected and polled instead.
    pub exit_events: bool,
    /// containerd's own API socket, when it is not the CRI socket (containerd serves both
    /// on one socket by default).
    pub events_socket: Option<PathBuf>,
    /// The containerd namespace CRI keeps its containers in.
    pub events_namespace: String,
}

impl Default for CriSettings {
    fn default() -> Self {
        CriSettings {
            socket: "/run/containerd/containerd.sock".into(),
            handlers: BTreeMap::new(),
            log_dir: "/var/log/bulkhead".into(),
            probe_image: "docker.io/library/busybox:1.36".into(),
            probe_interval_secs: 300,
            network: Network::Pod,
            pod_cidr: "10.88.0.0/16".into(),
            exit_poll_ms: 200,
            exit_events: true,
            events_socket: None,
            events_namespace: "k8s.io".into(),
        }
    }
}

impl CriSettings {
    /// The class map, `runc → runc` when none is configured.
    pub fn handlers_or_default(&self) -> BTreeMap<RuntimeClass, String> {
        if self.handlers.is_empty() {
            BTreeMap::from([(RuntimeClass::Runc, "runc".to_owned())])
        } else {
            self.handlers.clone()
        }
    }
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    Host,
    Pod,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl NodeFile {
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        NodeFile::parse(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn parse(text: &str) -> Result<NodeFile, toml::de::Error> {
        toml::from_str(text)
    }

    /// `class=handler`, as given to `--handler`.
    pub fn add_handler(&mut self, s: &str) -> Result<(), ConfigError> {
        let (c, h) = s.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!("--handler {s}: expected CLASS=HANDLER"))
        })?;
        let class = RuntimeClass::parse(c).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--handler {s}: unknown runtime class {c} (runc, gvisor, kata, edera-zone, confidential)"
            ))
        })?;
        self.cri.handlers.insert(class, h.to_owned());
        Ok(())
    }

    /// The node actor's part of the configuration, for a node named `name`.
    pub fn node_config(&self, name: String) -> NodeConfig {
        NodeConfig {
            name,
            capacity: Resources {
                memory_mb: self.memory_mb,
                cpu_millicores: self.cpu_millicores,
                slots: self.slots,
            },
            labels: self.labels.clone(),
            heartbeat_ms: self.heartbeat_ms,
            stop_grace: Duration::from_secs(self.stop_grace_secs),
            instance: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_sim_node() {
        assert_eq!(NodeFile::parse("").unwrap(), NodeFile::default());
    }

    #[test]
    fn cri_node_maps_classes_to_handlers() {
        let f = NodeFile::parse(
            r#"
            name = "n1"
            runtime = "cri"
            [labels]
            zone = "a"
            [cri]
            socket = "/run/crio/crio.sock"
            network = "pod"
            [cri.handlers]
            runc = "runc"
            gvisor = "runsc"
            edera-zone = "edera"
            "#,
        )
        .unwrap();
        assert_eq!(f.cri.network, Network::Pod);
        assert_eq!(f.cri.handlers[&RuntimeClass::Gvisor], "runsc");
        assert_eq!(f.cri.handlers[&RuntimeClass::EderaZone], "edera");
        assert_eq!(f.labels["zone"], "a");
    }

    #[test]
    fn unknown_keys_and_classes_are_errors() {
        assert!(NodeFile::parse("nmae = \"x\"").is_err());
        let e = NodeFile::parse("[cri.handlers]\nfirecracker = \"fc\"").unwrap_err();
        assert!(e.to_string().contains("firecracker"), "{e}");
        let mut f = NodeFile::default();
        assert!(f.add_handler("gvisor").is_err());
        assert!(f.add_handler("vm=kata").is_err());
        f.add_handler("kata=kata-qemu").unwrap();
        assert_eq!(f.cri.handlers_or_default().len(), 1);
    }

    #[test]
    fn the_shipped_example_parses() {
        let f = NodeFile::parse(include_str!("../../../deploy/node.example.toml")).unwrap();
        assert_eq!(f.runtime, "cri");
        assert_eq!(f.cri.handlers[&RuntimeClass::Gvisor], "runsc");
    }

    #[test]
    fn no_handlers_means_runc() {
        let f = NodeFile::default();
        assert_eq!(
            f.cri.handlers_or_default(),
            BTreeMap::from([(RuntimeClass::Runc, "runc".to_owned())])
        );
    }
}
