//! Trivy's JSON report (`trivy image --format json --list-all-pkgs`, schema version 2)
//! turned into bulkhead's verdict, so a worker running Trivy judges like one running the
//! built-in scanner. Parsing only; running Trivy is the worker's business.

use std::collections::BTreeMap;

use bulkhead_schemas::scan::{Finding, Severity, Verdict};
use serde::Deserialize;

use crate::inventory::OsRelease;

/// Output that is not a Trivy report.
#[derive(Debug, thiserror::Error)]
#[error("not a Trivy report: {0}")]
pub struct NotAReport(#[source] serde_json::Error);

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Report {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    results: Vec<TrivyResult>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    #[serde(default, rename = "OS")]
    os: Option<Os>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Os {
    family: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrivyResult {
    #[serde(default)]
    vulnerabilities: Vec<Vuln>,
    #[serde(default)]
    packages: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Vuln {
    #[serde(rename = "VulnerabilityID")]
    id: String,
    #[serde(rename = "PkgName")]
    package: String,
    #[serde(rename = "InstalledVersion", default)]
    installed: String,
    #[serde(rename = "FixedVersion", default)]
    fixed: String,
    #[serde(rename = "Severity", default)]
    severity: String,
    #[serde(rename = "Title", default)]
    title: String,
}

/// A Trivy JSON report as a verdict.
pub fn parse_report(json: &[u8]) -> Result<Verdict, NotAReport> {
    let r: Report = serde_json::from_slice(json).map_err(NotAReport)?;
    let mut v = Verdict::default();
    if let Some(os) = &r.metadata.os {
        let release = OsRelease {
            id: os.family.clone(),
            version_id: os.name.clone(),
            pretty_name: format!("{} {}", os.family, os.name),
        };
        v.ecosystem = release.ecosystem();
        v.os = release.pretty_name;
    }
    let mut seen: BTreeMap<(String, String), Finding> = BTreeMap::new();
    for res in &r.results {
        v.packages += res.packages.len();
        for x in &res.vulnerabilities {
            seen.entry((x.id.clone(), x.package.clone()))
                .or_insert_with(|| Finding {
                    severity: Severity::from_label(&x.severity).unwrap_or_default(),
                    advisory: x.id.clone(),
                    aliases: Vec::new(),
                    package: x.package.clone(),
                    installed: x.installed.clone(),
                    fixed: (!x.fixed.is_empty()).then(|| x.fixed.clone()),
                    summary: x.title.clone(),
                });
        }
    }
    let mut findings: Vec<Finding> = seen.into_values().collect();
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.cmp(b)));
    for f in &findings {
        *v.counts.entry(f.severity).or_default() += 1;
    }
    v.findings = findings;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `trivy image --format json --list-all-pkgs` prints (schema version 2).
    const REPORT: &str = r#"{
      "SchemaVersion": 2,
      "ArtifactName": "registry.example/app:1",
      "ArtifactType": "container_image",
      "Metadata": {"OS": {"Family": "debian", "Name": "12.5"}, "ImageID": "sha256:1"},
      "Results": [{
        "Target": "registry.example/app:1 (debian 12.5)",
        "Class": "os-pkgs",
        "Type": "debian",
        "Packages": [{"Name": "libssl3"}, {"Name": "openssl"}, {"Name": "zlib1g"}],
        "Vulnerabilities": [
          {"VulnerabilityID": "CVE-2023-5678", "PkgName": "libssl3", "InstalledVersion": "3.0.11-1~deb12u2",
           "FixedVersion": "3.0.13-1~deb12u1", "Severity": "MEDIUM", "Title": "openssl: DH check"},
          {"VulnerabilityID": "CVE-2023-45853", "PkgName": "zlib1g", "InstalledVersion": "1:1.2.13.dfsg-1",
           "FixedVersion": "", "Severity": "CRITICAL", "Title": "zlib: MiniZip overflow"},
          {"VulnerabilityID": "CVE-2023-5678", "PkgName": "libssl3", "InstalledVersion": "3.0.11-1~deb12u2",
           "FixedVersion": "3.0.13-1~deb12u1", "Severity": "MEDIUM", "Title": "repeated"}
        ]
      }]
    }"#;

    #[test]
    fn a_trivy_report_becomes_a_verdict() {
        let v = parse_report(REPORT.as_bytes()).unwrap();
        assert_eq!(v.ecosystem.as_deref(), Some("Debian:12"));
        assert_eq!(v.packages, 3);
        assert_eq!(v.findings.len(), 2, "duplicates merged");
        assert_eq!(v.findings[0].advisory, "CVE-2023-45853");
        assert_eq!(v.findings[0].severity, Severity::Critical);
        assert_eq!(v.findings[0].fixed, None);
        assert_eq!(v.findings[1].fixed.as_deref(), Some("3.0.13-1~deb12u1"));
        assert_eq!(v.counts[&Severity::Medium], 1);
        assert!(parse_report(b"not json").is_err());
        assert!(parse_report(br#"{"Results": 5}"#).is_err());
    }
}
