//! Commands users send besides submissions: stop and scale.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `bulkhead.cmd.stop`: stop every replica of a workload.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopCommand {
    pub id: String,
}

/// `bulkhead.cmd.scale`: change a workload's replica count.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScaleCommand {
    pub id: String,
    pub replicas: u32,
}
