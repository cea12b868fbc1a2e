//! Image scanning adapters: the OCI registry client, streaming layer inventories, the
//! offline OSV database, and a whole-image scan built from them (the pure core is the
//! `bulkhead-scan` crate).

pub mod egress;
pub mod layers;
pub mod registry;
pub mod trivy;
pub mod vulndb;
pub mod worker;

use std::future::Future;
use std::sync::Arc;

use bulkhead_scan::inventory::{self, LayerInventory};
use bulkhead_scan::verdict::{self, AdvisoryDb, Verdict};
use bulkhead_schemas::scan::{LayerReport, LayerSource};
use serde::Serialize;

use registry::{ImageRef, Layer, Registry, ResolvedImage};

/// Progress of one scan, as it goes.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Progress {
    Resolved {
        digest: String,
        layers: usize,
    },
    Layer {
        index: usize,
        diff_id: String,
        packages: usize,
        source: LayerSource,
    },
}

/// A finished scan.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub digest: String,
    pub layers: Vec<LayerReport>,
    pub verdict: Verdict,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Layer(#[from] layers::LayerError),
    #[error(transparent)]
    Reference(#[from] registry::BadReference),
    #[error(transparent)]
    Trivy(#[from] trivy::TrivyError),
    /// What another worker (the owner of a layer) answered.
    #[error("{0}")]
    Other(String),
}

/// The platform scanned: this machine's.
pub fn platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

/// Reads one layer's inventory from its blob.
pub async fn compute_layer(
    reg: &Registry,
    image: &ImageRef,
    l: &Layer,
) -> Result<LayerInventory, ScanError> {
    let blob = reg.layer(image, l).await?;
    let caps = layers::LayerCaps::declared(l.size);
    let (inv, _) = layers::inventory(&l.digest, &l.diff_id, &l.media_type, caps, blob).await?;
    Ok(inv)
}

/// Scans `image`: resolves it, gets each layer's inventory from `inventory_of` (which
/// may compute it or find it cached), merges them in order and matches the result.
pub async fn scan_with<F, Fut>(
    reg: &Registry,
    image: &ImageRef,
    db: &AdvisoryDb,
    mut inventory_of: F,
    mut progress: impl FnMut(Progress),
) -> Result<Report, ScanError>
where
    F: FnMut(Layer) -> Fut,
    Fut: Future<Output = Result<(Arc<LayerInventory>, LayerReport), ScanError>>,
{
    let (os, arch) = platform();
    let resolved: ResolvedImage = reg.resolve(image, os, arch).await?;
    progress(Progress::Resolved {
        digest: resolved.digest.clone(),
        layers: resolved.layers.len(),
    });
    let mut inventories = Vec::new();
    let mut reports = Vec::new();
    for (index, l) in resolved.layers.iter().enumerate() {
        let (inv, report) = inventory_of(l.clone()).await?;
        progress(Progress::Layer {
            index,
            diff_id: l.diff_id.clone(),
            packages: inv
                .files
                .values()
                .map(|f| match f {
                    inventory::DbFile::Packages(p) => p.len(),
                    inventory::DbFile::OsRelease(_) => 0,
                })
                .sum(),
            source: report.source,
        });
        inventories.push(inv);
        reports.push(report);
    }
    let merged = inventory::merge(inventories.iter().map(Arc::as_ref));
    Ok(Report {
        image: image.to_string(),
        digest: resolved.digest,
        layers: reports,
        verdict: verdict::assess(&merged, db),
    })
}

/// Scans `image` in this process, reading every layer.
pub async fn scan_image(
    reg: &Registry,
    image: &ImageRef,
    db: &AdvisoryDb,
    progress: impl FnMut(Progress),
) -> Result<Report, ScanError> {
    scan_with(
        reg,
        image,
        db,
        |l| async move {
            let inv = compute_layer(reg, image, &l).await?;
            let report = LayerReport {
                diff_id: l.diff_id,
                source: LayerSource::Computed,
                owner: "local".into(),
            };
            Ok((Arc::new(inv), report))
        },
        progress,
    )
    .await
}
