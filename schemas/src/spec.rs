//! The workload spec users submit, its defaults, and validation with a precise reason per failure.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::subjects::is_valid_token;

/// Largest accepted submission payload.
pub const MAX_SUBMISSION_BYTES: usize = 64 * 1024;
/// Resource ceilings: anything above is certainly a mistake (1 TiB, 512 cores).
pub const MAX_MEMORY_MB: u64 = 1024 * 1024;
pub const MAX_CPU_MILLICORES: u64 = 512_000;
pub const MAX_REPLICAS: u32 = 1000;
const MAX_LABELS: usize = 64;
pub const MAX_IMAGE_LEN: usize = 512;

/// A workload as submitted on `bulkhead.cmd.submit`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Workload id, 1–64 characters of `[A-Za-z0-9_-]`. Generated (UUID v7) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// OCI image reference.
    pub image: String,
    /// Isolation the workload needs; a node must offer it.
    #[serde(default)]
    pub runtime_class: RuntimeClass,
    /// How far the workload is trusted; decides which runtime classes it may use. Absent:
    /// the tenant's level (the policy's); a spec may ask only for that or a stricter one.
    /// Always present in an `accepted` spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustLevel>,
    /// Memory limit in MiB (1 … 1048576).
    pub memory_mb: u64,
    /// CPU limit in millicores (1 … 512000).
    pub cpu_millicores: u64,
    /// Number of copies to run (1 … 1000).
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secrets: name → value sealed to the schedulers' curve keys (`bhs1:…`; `bulkhead
    /// submit` seals plain values, `bulkhead seal` prints one for `nats pub`). Opened only on
    /// the node, into the container's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Labels of the workload itself (queryable with `workloads.list`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Node labels a node must carry to run this workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Placement strategy among the nodes that fit.
    #[serde(default)]
    pub placement: PlacementStrategy,
    /// How its containers are confined beyond the restricted default every container gets
    /// (CRI nodes); the tenant's policy may require or forbid each setting.
    #[serde(default, skip_serializing_if = "Security::is_default")]
    pub security: Security,
}

/// A spec's confinement settings. Every container already gets the runtime's default
/// seccomp profile, `no_new_privs` and no capability but `NET_BIND_SERVICE`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// The node's network namespace instead of one of its own: every service on the host
    /// is reachable from it. Only where the tenant's policy allows it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// The user id its processes run as (absent: the image's; 0 is root), at most 2^31-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    /// Its root filesystem read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_rootfs: bool,
    /// Capabilities on top of `NET_BIND_SERVICE`, from [`ADDABLE_CAPABILITIES`] (names
    /// without `CAP_`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_capabilities: Vec<String>,
}

impl Security {
    pub fn is_default(&self) -> bool {
        *self == Security::default()
    }
}

/// Capabilities every container keeps.
pub const BASE_CAPABILITIES: [&str; 1] = ["NET_BIND_SERVICE"];

/// Capabilities a spec may add: the rest of Docker's default set, never more (no
/// `SYS_ADMIN`, `NET_ADMIN`, `SYS_PTRACE`, …: those are a way out of a shared kernel).
pub const ADDABLE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The highest user id a spec may name.
pub const MAX_UID: u32 = i32::MAX as u32;

fn check_security(s: &Security) -> Result<(), Rejection> {
    if let Some(uid) = s.run_as_user
        && uid > MAX_UID
    {
        return Err(Rejection::value(
            "security.run_as_user",
            format!("run_as_user {uid} is over {MAX_UID}"),
        ));
    }
    for (i, cap) in s.add_capabilities.iter().enumerate() {
        if !ADDABLE_CAPABILITIES.contains(&cap.as_str()) {
            let shown: String = cap.chars().take(32).collect();
            return Err(Rejection::value(
                "security.add_capabilities",
                format!(
                    "{shown:?} cannot be added: only {} (without CAP_)",
                    ADDABLE_CAPABILITIES.join(", ")
                ),
            ));
        }
        if s.add_capabilities[..i].contains(cap) {
            return Err(Rejection::value(
                "security.add_capabilities",
                format!("{cap} is named twice"),
            ));
        }
    }
    Ok(())
}

fn one() -> u32 {
    1
}

impl WorkloadSpec {
    /// Its trust level: an admitted spec always names one; a spec that does not yet is
    /// taken as the strictest.
    pub fn trust_level(&self) -> TrustLevel {
        self.trust.unwrap_or(TrustLevel::Untrusted)
    }
}

#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeClass {
    /// Shared host kernel (runc).
    #[default]
    Runc,
    /// User-space kernel (gVisor, runsc).
    Gvisor,
    /// Lightweight VM (Kata Containers).
    Kata,
    /// Xen-based zone (Edera).
    EderaZone,
    /// Confidential VM (SEV-SNP / TDX).
    Confidential,
}

impl RuntimeClass {
    pub const ALL: [RuntimeClass; 5] = [
        RuntimeClass::Runc,
        RuntimeClass::Gvisor,
        RuntimeClass::Kata,
        RuntimeClass::EderaZone,
        RuntimeClass::Confidential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeClass::Runc => "runc",
            RuntimeClass::Gvisor => "gvisor",
            RuntimeClass::Kata => "kata",
            RuntimeClass::EderaZone => "edera-zone",
            RuntimeClass::Confidential => "confidential",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// How strongly the class isolates a workload from the host and its neighbours:
    /// shared kernel 0, user-space kernel 1, a VM or Xen zone 2, a confidential VM 3.
    pub fn isolation_rank(self) -> u8 {
        match self {
            RuntimeClass::Runc => 0,
            RuntimeClass::Gvisor => 1,
            RuntimeClass::Kata | RuntimeClass::EderaZone => 2,
            RuntimeClass::Confidential => 3,
        }
    }

    /// Whether a workload of trust level `trust` may run in this class. The default
    /// policy: `internal` may use any class; `multi_tenant` and `untrusted` never share
    /// the host kernel.
    pub fn allowed_for(self, trust: TrustLevel) -> bool {
        match trust {
            TrustLevel::Internal => true,
            TrustLevel::MultiTenant | TrustLevel::Untrusted => self != RuntimeClass::Runc,
        }
    }
}

impl std::fmt::Display for RuntimeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    Untrusted,
    MultiTenant,
    #[default]
    Internal,
}

impl TrustLevel {
    /// Untrusted 0, multi-tenant 1, internal 2: a lower one is stricter.
    pub fn rank(self) -> u8 {
        match self {
            TrustLevel::Untrusted => 0,
            TrustLevel::MultiTenant => 1,
            TrustLevel::Internal => 2,
        }
    }

    pub fn parse(s: &str) -> Option<TrustLevel> {
        [
            TrustLevel::Untrusted,
            TrustLevel::MultiTenant,
            TrustLevel::Internal,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Untrusted => "untrusted",
            TrustLevel::MultiTenant => "multi_tenant",
            TrustLevel::Internal => "internal",
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementStrategy {
    /// Fill the fullest node that fits (fewer nodes busy).
    #[default]
    Binpack,
    /// Use the emptiest node that fits (failures hit fewer replicas).
    Spread,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub policy: RestartMode,
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Window in seconds over which `max_restarts` is counted.
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

fn default_max_restarts() -> u32 {
    5
}
fn default_window_s() -> u64 {
    600
}
fn default_backoff_initial_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    30_000
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            policy: RestartMode::default(),
            max_restarts: default_max_restarts(),
            window_s: default_window_s(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    Always,
    #[default]
    OnFailure,
    Never,
}

/// Why a submission was rejected: a machine-readable class plus a sentence for people.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    /// The offending field (`memory_mb`, `restart.policy`, …), when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    TooLarge,
    NotJson,
    InvalidField,
    InvalidValue,
    Policy,
    Duplicate,
    /// The image's scan verdict is over the trust level's threshold (scan policy `gate`).
    Vulnerable,
    /// The submission carries a signature that is not its tenant's.
    Signature,
}

/// Whether a workload of `trust` may run in `class` (see [`RuntimeClass::allowed_for`]).
pub fn class_for_trust(class: RuntimeClass, trust: TrustLevel) -> Result<(), Rejection> {
    if class.allowed_for(trust) {
        return Ok(());
    }
    Err(Rejection::new(
        RejectCode::Policy,
        Some("runtime_class"),
        format!(
            "runtime class {class} is not allowed for trust level {}: it shares the host kernel",
            trust.as_str()
        ),
    ))
}

impl Rejection {
    pub fn new(code: RejectCode, field: Option<&str>, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }
    fn value(field: &str, reason: impl Into<String>) -> Self {
        Self::new(RejectCode::InvalidValue, Some(field), reason)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Parses and validates a raw submission. The error says exactly what is wrong.
pub fn parse_submission(raw: &[u8]) -> Result<WorkloadSpec, Rejection> {
    if raw.len() > MAX_SUBMISSION_BYTES {
        return Err(Rejection::new(
            RejectCode::TooLarge,
            None,
            format!(
                "payload too large: {} bytes, the limit is {MAX_SUBMISSION_BYTES}",
                raw.len()
            ),
        ));
    }
    let first = raw.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first.is_some() && first != Some(b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(raw) {
            Err(e) => Rejection::new(RejectCode::NotJson, None, format!("not JSON: {e}")),
            Ok(v) => Rejection::new(
                RejectCode::InvalidField,
                None,
                format!(
                    "invalid workload spec: expected a JSON object, got {}",
                    json_kind(&v)
                ),
            ),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(raw);
    let spec: WorkloadSpec = match serde_path_to_error::deserialize(&mut de) {
        Ok(s) => s,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(if inner.is_syntax() || inner.is_eof() {
                Rejection::new(RejectCode::NotJson, None, format!("not JSON: {inner}"))
            } else if path == "." {
                Rejection::new(
                    RejectCode::InvalidField,
                    None,
                    format!("invalid workload spec: {inner}"),
                )
            } else {
                Rejection::new(
                    RejectCode::InvalidField,
                    Some(&path),
                    format!("{path}: {inner}"),
                )
            });
        }
    };
    if let Err(e) = de.end() {
        return Err(Rejection::new(
            RejectCode::NotJson,
            None,
            format!("not JSON: {e}"),
        ));
    }
    validate(&spec)?;
    Ok(spec)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Why an image reference is refused, wherever one arrives (a spec, a scan job): empty,
/// longer than [`MAX_IMAGE_LEN`], or with spaces or control characters.
pub fn check_image(image: &str) -> Result<(), Rejection> {
    if image.trim().is_empty() {
        return Err(Rejection::value("image", "image is empty"));
    }
    if image.len() > MAX_IMAGE_LEN || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Rejection::value(
            "image",
            format!(
                "image must be an OCI reference without spaces, at most {MAX_IMAGE_LEN} characters"
            ),
        ));
    }
    Ok(())
}

/// Semantic checks on a well-typed spec.
pub fn validate(spec: &WorkloadSpec) -> Result<(), Rejection> {
    if let Some(id) = &spec.id
        && !is_valid_token(id)
    {
        return Err(Rejection::value(
            "id",
            format!("id {id:?} must be 1-64 characters of [A-Za-z0-9_-]"),
        ));
    }
    check_image(&spec.image)?;
    if spec.memory_mb == 0 {
        return Err(Rejection::value(
            "memory_mb",
            "memory_mb must be at least 1 (MiB)",
        ));
    }
    if spec.memory_mb > MAX_MEMORY_MB {
        return Err(Rejection::value(
            "memory_mb",
            format!(
                "memory_mb {} exceeds the ceiling of {MAX_MEMORY_MB} MiB (1 TiB)",
                spec.memory_mb
            ),
        ));
    }
    if spec.cpu_millicores == 0 {
        return Err(Rejection::value(
            "cpu_millicores",
            "cpu_millicores must be at least 1",
        ));
    }
    if spec.cpu_millicores > MAX_CPU_MILLICORES {
        return Err(Rejection::value(
            "cpu_millicores",
            format!(
                "cpu_millicores {} exceeds the ceiling of {MAX_CPU_MILLICORES} (512 cores)",
                spec.cpu_millicores
            ),
        ));
    }
    if spec.replicas == 0 || spec.replicas > MAX_REPLICAS {
        return Err(Rejection::value(
            "replicas",
            format!(
                "replicas must be between 1 and {MAX_REPLICAS}, got {}",
                spec.replicas
            ),
        ));
    }
    if let Some(trust) = spec.trust {
        class_for_trust(spec.runtime_class, trust)?;
    }
    let r = &spec.restart;
    if r.backoff_initial_ms == 0 || r.backoff_initial_ms > r.backoff_max_ms {
        return Err(Rejection::value(
            "restart.backoff_initial_ms",
            "restart.backoff_initial_ms must be at least 1 and at most restart.backoff_max_ms",
        ));
    }
    check_security(&spec.security)?;
    check_map("labels", &spec.labels)?;
    check_map("node_selector", &spec.node_selector)?;
    for key in spec.env.keys() {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(Rejection::value(
                "env",
                format!("env name {key:?} is empty or contains '=' or NUL"),
            ));
        }
    }
    check_secrets(spec)
}

/// Secrets a spec may carry, at most.
pub const MAX_SECRETS: usize = 64;
/// The longest sealed value.
pub const MAX_SEALED: usize = 16 * 1024;

/// Each secret named like an environment variable, not also in `env`, and sealed (a
/// plain value is refused without being repeated).
fn check_secrets(spec: &WorkloadSpec) -> Result<(), Rejection> {
    if spec.secrets.len() > MAX_SECRETS {
        return Err(Rejection::value(
            "secrets",
            format!("at most {MAX_SECRETS} secrets"),
        ));
    }
    for (name, value) in &spec.secrets {
        let field = format!("secrets.{name}");
        let ok_name = !name.is_empty()
            && name.len() <= 256
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !ok_name {
            return Err(Rejection::value(
                "secrets",
                format!(
                    "secret name {name:?} must be 1-256 of [A-Za-z0-9_], not starting with a digit"
                ),
            ));
        }
        if spec.env.contains_key(name) {
            return Err(Rejection::value(
                &field,
                format!("{name} is both in env and in secrets"),
            ));
        }
        if !value.starts_with("bhs1:") || value.len() > MAX_SEALED {
            return Err(Rejection::value(
                &field,
                format!(
                    "secret {name} is not a sealed value (its value is not repeated here): seal \
                     it with `bulkhead seal`, or submit with `bulkhead submit`, which seals"
                ),
            ));
        }
    }
    Ok(())
}

fn check_map(field: &str, map: &BTreeMap<String, String>) -> Result<(), Rejection> {
    if map.len() > MAX_LABELS {
        return Err(Rejection::value(
            field,
            format!("{field}: at most {MAX_LABELS} entries"),
        ));
    }
    for (k, v) in map {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
        if !key_ok {
            return Err(Rejection::value(
                field,
                format!("{field}: key {k:?} must be 1-63 characters of [A-Za-z0-9._/-]"),
            ));
        }
        if v.len() > 255 {
            return Err(Rejection::value(
                field,
                format!("{field}: value of {k:?} is longer than 255 characters"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> serde_json::Value {
        serde_json::json!({"image": "localhost/busybox:1", "memory_mb": 64, "cpu_millicores": 100})
    }

    fn reject(v: serde_json::Value) -> Rejection {
        parse_submission(v.to_string().as_bytes()).expect_err("should be rejected")
    }

    #[test]
    fn security_settings_are_checked() {
        let mut v = ok();
        v["security"] = serde_json::json!({"run_as_user": 1000, "read_only_rootfs": true,
                                           "add_capabilities": ["CHOWN", "NET_RAW"]});
        let s = parse_submission(v.to_string().as_bytes()).unwrap();
        assert_eq!(s.security.run_as_user, Some(1000));
        for (security, says) in [
            (
                serde_json::json!({"add_capabilities": ["SYS_ADMIN"]}),
                "cannot be added",
            ),
            (
                serde_json::json!({"add_capabilities": ["CAP_CHOWN"]}),
                "without CAP_",
            ),
            (
                serde_json::json!({"add_capabilities": ["KILL", "KILL"]}),
                "named twice",
            ),
            (
                serde_json::json!({"run_as_user": 4_294_967_295u64}),
                "is over",
            ),
        ] {
            v["security"] = security.clone();
            let r = reject(v.clone());
            assert_eq!(r.code, RejectCode::InvalidValue, "{security}: {r:?}");
            assert!(r.reason.contains(says), "{security}: {}", r.reason);
        }
        v["security"] = serde_json::json!({"privileged": true});
        assert_eq!(
            reject(v).code,
            RejectCode::InvalidField,
            "no privileged, ever"
        );
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let s = parse_submission(ok().to_string().as_bytes()).unwrap();
        assert_eq!(s.replicas, 1);
        assert_eq!(s.runtime_class, RuntimeClass::Runc);
        assert_eq!(s.trust, None);
        assert_eq!(s.restart.policy, RestartMode::OnFailure);
        assert_eq!(s.id, None);
    }

    #[test]
    fn each_malformed_class_has_its_reason() {
        let r = parse_submission(b"{not json").unwrap_err();
        assert_eq!(r.code, RejectCode::NotJson, "{r:?}");
        let r = parse_submission(b"").unwrap_err();
        assert_eq!(r.code, RejectCode::NotJson);

        let mut v = ok();
        v["memory_mb"] = "lots".into();
        let r = reject(v);
        assert_eq!(
            (r.code, r.field.as_deref()),
            (RejectCode::InvalidField, Some("memory_mb"))
        );
        assert!(r.reason.contains("invalid type"), "{}", r.reason);

        let mut v = ok();
        v.as_object_mut().unwrap().remove("image");
        let r = reject(v);
        assert!(r.reason.contains("missing field `image`"), "{}", r.reason);

        let mut v = ok();
        v["runtime_class"] = "firecracker".into();
        let r = reject(v);
        assert_eq!(r.field.as_deref(), Some("runtime_class"));
        assert!(
            r.reason.contains("unknown variant `firecracker`"),
            "{}",
            r.reason
        );

        let mut v = ok();
        v["memory_mb"] = 0.into();
        assert!(reject(v).reason.contains("at least 1"));
        let mut v = ok();
        v["cpu_millicores"] = 10_000_000.into();
        assert!(reject(v).reason.contains("exceeds the ceiling"));
        let mut v = ok();
        v["replicas"] = 0.into();
        assert_eq!(reject(v).field.as_deref(), Some("replicas"));
        let mut v = ok();
        v["replicas"] = 5000.into();
        assert_eq!(reject(v).field.as_deref(), Some("replicas"));

        let big = vec![b' '; MAX_SUBMISSION_BYTES + 1];
        assert_eq!(
            parse_submission(&big).unwrap_err().code,
            RejectCode::TooLarge
        );

        let mut v = ok();
        v["image"] = "".into();
        assert_eq!(reject(v).field.as_deref(), Some("image"));
        let mut v = ok();
        v["id"] = "a.b".into();
        assert_eq!(reject(v).field.as_deref(), Some("id"));
        let mut v = ok();
        v["memroy_mb"] = 1.into();
        assert!(reject(v).reason.contains("unknown field `memroy_mb`"));
        assert!(
            parse_submission(b"[1,2]")
                .unwrap_err()
                .reason
                .contains("invalid workload spec")
        );
        assert!(parse_submission(b"{} trailing").is_err());
    }

    #[test]
    fn trust_level_limits_runtime_class() {
        let mut v = ok();
        v["trust"] = "untrusted".into();
        let r = reject(v.clone());
        assert_eq!(r.code, RejectCode::Policy);
        v["runtime_class"] = "gvisor".into();
        assert!(parse_submission(v.to_string().as_bytes()).is_ok());
    }
}
