//! Commands users send besides submissions: stop, scale and drain.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `bulkhead.cmd.stop`: stop every replica of a workload.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopCommand {
    pub id: String,
    /// Seconds each container gets between SIGTERM and SIGKILL (at most 3600); the
    /// node's default (10 s) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u32>,
}

/// Longest stop grace period a command may ask for.
pub const MAX_GRACE_SECS: u32 = 3600;

/// `bulkhead.cmd.scale`: change a workload's replica count.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScaleCommand {
    pub id: String,
    pub replicas: u32,
}

/// `bulkhead.cmd.drain`: move every replica off a node and place nothing new there.
/// `bulkhead.cmd.undrain` takes the same body and lets the node take work again.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DrainCommand {
    pub node: String,
}
