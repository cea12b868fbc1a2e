//! Trivy as an optional scan backend: when a worker is configured with a `trivy` binary
//! (and optionally a Trivy server), it runs `trivy image --format json` and turns the
//! report into the same verdict shape as bulkhead's own scanner.

use std::collections::BTreeMap;

use bulkhead_scan::inventory::OsRelease;

use super::registry::ImageRef;
use bulkhead_schemas::scan::{Finding, Severity, Verdict};
use serde::Deserialize;

/// A Trivy run that takes longer is killed and the scan fails.
const TRIVY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How to run Trivy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrivyConfig {
    /// The `trivy` binary (a path, or a name on PATH).
    pub binary: String,
    /// A Trivy server (`trivy image --server URL`): the database lives there.
    pub server: Option<String>,
}

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
pub fn parse_report(json: &[u8]) -> Result<Verdict, String> {
    let r: Report = serde_json::from_slice(json).map_err(|e| format!("not a Trivy report: {e}"))?;
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

/// Runs Trivy on `image`.
pub async fn scan(cfg: &TrivyConfig, image: &ImageRef, digest: &str) -> Result<Verdict, String> {
    let mut cmd = tokio::process::Command::new(&cfg.binary);
    cmd.args(["image", "--format", "json", "--quiet", "--list-all-pkgs"]);
    if let Some(server) = &cfg.server {
        cmd.args(["--server", server]);
    }
    if image.loopback() {
        cmd.arg("--insecure"); // plain HTTP, as bulkhead's own client uses there
    }
    let pinned = format!("{}/{}@{digest}", image.registry, image.repository);
    let run = cmd.arg(&pinned).kill_on_drop(true).output();
    let out = tokio::time::timeout(TRIVY_TIMEOUT, run)
        .await
        .map_err(|_| format!("trivy did not finish within {} s", TRIVY_TIMEOUT.as_secs()))?
        .map_err(|e| format!("running {}: {e}", cfg.binary))?;
    if !out.status.success() {
        return Err(format!(
            "trivy failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_report(&out.stdout)
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

    #[tokio::test]
    async fn a_missing_binary_is_a_clear_error() {
        let cfg = TrivyConfig {
            binary: "/nonexistent/trivy".into(),
            server: None,
        };
        let image = ImageRef::parse("127.0.0.1:5000/x:1").unwrap();
        let e = scan(&cfg, &image, "sha256:00").await.unwrap_err();
        assert!(e.contains("running /nonexistent/trivy"), "{e}");
    }
}
