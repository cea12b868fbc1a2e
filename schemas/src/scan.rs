//! Image scanning on the wire: scan jobs, verdicts and their findings, and where each
//! layer's inventory came from (the layer cache at work).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A message on `bulkhead.scan.jobs` (work queue `BULKHEAD_SCAN`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScanJob {
    /// Job id; progress goes to `bulkhead.scan.progress.<id>`.
    pub id: String,
    /// Image reference to scan.
    pub image: String,
}

#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Most severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// `LOW`, `MODERATE`/`MEDIUM`, `HIGH`/`IMPORTANT`, `CRITICAL` (any case).
    pub fn from_label(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "low" | "negligible" => Some(Severity::Low),
            "medium" | "moderate" => Some(Severity::Medium),
            "high" | "important" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub severity: Severity,
    pub advisory: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The source (Debian) or origin (Alpine) package the advisory names.
    pub package: String,
    pub installed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// What a scan concludes about an image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `Debian:12`, `Alpine:v3.19`; absent when the OS is unknown or unsupported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    pub packages: usize,
    /// Findings per severity.
    pub counts: BTreeMap<Severity, u32>,
    /// Most severe first.
    pub findings: Vec<Finding>,
    /// Why the scan could not judge the packages, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Verdict {
    /// The worst severity found (None: no findings).
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// Where a layer's inventory came from in one scan.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum LayerSource {
    /// Read from the blob, now (the only case that costs a download and parse).
    Computed,
    /// The owner worker's in-memory LRU.
    Memory,
    /// The `bulkhead-layers` KV bucket.
    Kv,
    /// Another scan's inventory of the same layer, in flight on the owner: waited for,
    /// not repeated.
    Joined,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct LayerReport {
    pub diff_id: String,
    pub source: LayerSource,
    /// The worker that owns the layer on the hash ring (and answered for it).
    pub owner: String,
}
