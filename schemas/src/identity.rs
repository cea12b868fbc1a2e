//! Who writes: the roles of bulkhead's identities, and the events that enroll and revoke
//! them (`bulkhead.evt.sys.<role>.<name>.enrolled|revoked`, written by an admin).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::RuntimeClass;

/// What an identity is, and so what it may do.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages streams, identities and (later) policy; writes nothing about workloads.
    Admin,
    Scheduler,
    Failover,
    /// The query API.
    Api,
    Scanner,
    Node,
    Tenant,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Scheduler,
        Role::Failover,
        Role::Api,
        Role::Scanner,
        Role::Node,
        Role::Tenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Scheduler => "scheduler",
            Role::Failover => "failover",
            Role::Api => "api",
            Role::Scanner => "scanner",
            Role::Node => "node",
            Role::Tenant => "tenant",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// An identity joined: from now on its key writes as `role`/`name`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub role: Role,
    pub name: String,
    /// Its public nkey (`U…`).
    pub key: String,
    /// A node's runtime classes, fixed at enrolment: it may offer no other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<RuntimeClass>,
    /// Its curve public key (`X…`), to which secrets are sealed for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xkey: Option<String>,
}

/// An identity's key may write no more (what it wrote before stays).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub role: Role,
    pub name: String,
    pub key: String,
}

/// Who asked for a workload, as the scheduler saw it: the tenant the server authenticated
/// (from the command's subject) and, when the submitter signed it, its key, signature and
/// the exact bytes it signed, so the log proves who asked.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct Submitter {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Hex ed25519 signature of `"bulkhead/2 command\n" ‖ subject ‖ "\n" ‖ payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// The payload as signed (a spec that did not parse is not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<String>,
}
