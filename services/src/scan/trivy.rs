//! Trivy as an optional scan backend: when a worker is configured with a `trivy` binary
//! (and optionally a Trivy server), it runs `trivy image --format json` and turns the
//! report into the same verdict shape as bulkhead's own scanner.

use bulkhead_scan::trivy::{NotAReport, parse_report};
use bulkhead_schemas::scan::Verdict;

use super::registry::ImageRef;

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

/// Why Trivy gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum TrivyError {
    #[error("trivy did not finish within {} s", TRIVY_TIMEOUT.as_secs())]
    Timeout,
    #[error("running {binary}: {source}")]
    Run {
        binary: String,
        source: std::io::Error,
    },
    #[error("trivy failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error(transparent)]
    Report(#[from] NotAReport),
}

/// Runs Trivy on `image`.
pub async fn scan(
    cfg: &TrivyConfig,
    image: &ImageRef,
    digest: &str,
) -> Result<Verdict, TrivyError> {
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
        .map_err(|_| TrivyError::Timeout)?
        .map_err(|source| TrivyError::Run {
            binary: cfg.binary.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TrivyError::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(parse_report(&out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_binary_is_a_clear_error() {
        let cfg = TrivyConfig {
            binary: "/nonexistent/trivy".into(),
            server: None,
        };
        let image = ImageRef::parse("127.0.0.1:5000/x:1").unwrap();
        let e = scan(&cfg, &image, "sha256:00")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("running /nonexistent/trivy"), "{e}");
    }
}
