//! The cluster's policy: who governs it (M of N admin keys), what each tenant may ask for
//! (trust level, runtime classes, registries, quotas), and the events that change it
//! (`bulkhead.evt.sys.policy.v<version>.policy_proposed|policy_approved`). A change takes
//! effect only when M of the admins of the policy in force have approved its hash; it names
//! the hash of the policy it replaces and the next version, so an old one cannot be replayed.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::hash_bytes;
use crate::spec::{RuntimeClass, TrustLevel};

/// The context an admin's approval is signed in: `"bulkhead/2 policy\n" ‖ hash`.
pub const APPROVAL_CONTEXT: &[u8] = b"bulkhead/2 policy\n";

/// The most admins a policy may name.
pub const MAX_ADMINS: usize = 64;

/// The policy document.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// 1 for the first; each change is the next number.
    pub version: u64,
    /// Hex SHA-256 of the policy this one replaces (absent on version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Who approves the next change, and how many of them must.
    pub admins: Admins,
    /// Per tenant: what it may ask for.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantPolicy>,
    /// For a tenant the policy does not name.
    #[serde(default = "TenantPolicy::untrusted")]
    pub default_tenant: TenantPolicy,
    /// Scan modes per trust level and the failing severity; what it leaves out, the
    /// scheduler's flags say.
    #[serde(default, skip_serializing_if = "ScanRules::is_empty")]
    pub scan: ScanRules,
}

/// How images are scanned per trust level (see the scheduler's `--scan-policy`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ScanMode {
    /// Placed only after a verdict within the threshold.
    Gate,
    /// Placed at once; a verdict over the threshold quarantines.
    Async,
    Off,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScanRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrusted: Option<ScanMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_tenant: Option<ScanMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<ScanMode>,
    /// A finding at or above this severity fails a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<crate::scan::Severity>,
}

impl ScanRules {
    pub fn is_empty(&self) -> bool {
        *self == ScanRules::default()
    }
}

/// M of N: `threshold` of `keys` must approve a change.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Admins {
    pub threshold: u32,
    /// Public nkeys (`U…`).
    pub keys: Vec<String>,
}

/// What one tenant's workloads may be.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// The tenant's trust level: a spec may ask only for this one or a stricter one (and
    /// gets this one when it names none).
    pub trust: TrustLevel,
    /// Runtime classes it may use (absent: any its trust level allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_classes: Option<Vec<RuntimeClass>>,
    /// Registries (`host[:port]`, or `host[:port]/path` prefixes) its images may come from
    /// (absent: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<Vec<String>>,
    /// Ceilings over its workloads that have not ended.
    #[serde(default, skip_serializing_if = "Quota::is_unlimited")]
    pub quota: Quota,
    /// What its workloads' confinement settings must or must not be.
    #[serde(default, skip_serializing_if = "SecurityRules::is_default")]
    pub security: SecurityRules,
}

/// A tenant's rules over its specs' `security` (absent: host networking forbidden, the
/// rest up to the spec).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecurityRules {
    /// Its workloads may use the host's network namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_host_network: bool,
    /// Its workloads must name a `run_as_user` other than 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_non_root: bool,
    /// Its workloads must ask for a read-only root filesystem.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_read_only_rootfs: bool,
    /// The capabilities its workloads may add (absent: any addable one; empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_capabilities: Option<Vec<String>>,
}

impl SecurityRules {
    pub fn is_default(&self) -> bool {
        *self == SecurityRules::default()
    }
}

/// Ceilings on a tenant's live workloads (absent: no ceiling).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// Memory over every replica, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// CPU over every replica, in millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u64>,
}

impl Quota {
    pub fn is_unlimited(&self) -> bool {
        *self == Quota::default()
    }
}

impl TenantPolicy {
    /// The strictest: untrusted, nothing else limited.
    pub fn untrusted() -> TenantPolicy {
        TenantPolicy::at(TrustLevel::Untrusted)
    }

    pub fn at(trust: TrustLevel) -> TenantPolicy {
        TenantPolicy {
            trust,
            runtime_classes: None,
            registries: None,
            quota: Quota::default(),
            security: SecurityRules::default(),
        }
    }
}

impl Policy {
    /// The first policy of a cluster: `admins` (one approval each change), tenant
    /// `default` internal, every other tenant untrusted.
    pub fn first(admins: Vec<String>) -> Policy {
        Policy {
            version: 1,
            replaces: None,
            admins: Admins {
                threshold: 1,
                keys: admins,
            },
            tenants: BTreeMap::from([(
                "default".to_owned(),
                TenantPolicy::at(TrustLevel::Internal),
            )]),
            default_tenant: TenantPolicy::untrusted(),
            scan: ScanRules::default(),
        }
    }

    /// What a log with no policy yet behaves as: what tenants ask for, the anchor admins.
    pub fn before_any(admins: Vec<String>) -> Policy {
        Policy {
            version: 0,
            replaces: None,
            admins: Admins {
                threshold: 1,
                keys: admins,
            },
            tenants: BTreeMap::new(),
            default_tenant: TenantPolicy::at(TrustLevel::Internal),
            scan: ScanRules::default(),
        }
    }

    /// Hex SHA-256 of its compact JSON (fields in declaration order, maps sorted).
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a policy serializes");
        hex::encode(hash_bytes(&bytes))
    }

    /// The rules for `tenant`, and where they come from (`tenants.<t>` or `default_tenant`).
    pub fn tenant(&self, tenant: &str) -> (&TenantPolicy, String) {
        match self.tenants.get(tenant) {
            Some(t) => (t, format!("tenants.{tenant}")),
            None => (&self.default_tenant, "default_tenant".to_owned()),
        }
    }

    /// Why the document cannot be a policy: a threshold of 0 or past its keys, too many
    /// keys, a key twice.
    pub fn problem(&self) -> Option<String> {
        let n = self.admins.keys.len();
        if self.admins.threshold == 0 || self.admins.threshold as usize > n {
            return Some(format!(
                "admins.threshold is {} with {n} keys: it must be 1 to {n}",
                self.admins.threshold
            ));
        }
        if n > MAX_ADMINS {
            return Some(format!("{n} admin keys, more than {MAX_ADMINS}"));
        }
        let mut keys = self.admins.keys.clone();
        keys.sort();
        keys.dedup();
        if keys.len() != n {
            return Some("an admin key is named twice".into());
        }
        None
    }
}

/// A proposed change: the whole new policy, and its hash.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct PolicyProposed {
    pub policy: Policy,
    pub hash: String,
}

/// One admin's approval of a proposed policy: ed25519 by the event's writer over
/// `"bulkhead/2 policy\n" ‖ hash`, so the approvals can be checked away from the log.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct PolicyApproved {
    pub version: u64,
    pub hash: String,
    /// Hex signature.
    pub sig: String,
}

/// A signed checkpoint of the whole log: through stream sequence `seq`, the running hash
/// over every stored message (see `bulkhead_actors::audit`), written by the query API (a
/// role that cannot purge) and exportable to files kept outside NATS.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    /// Hex running hash through `seq`.
    pub hash: String,
    /// Messages covered (`seq`, unless some were deleted).
    pub messages: u64,
}
