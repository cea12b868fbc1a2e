//! Image scanning adapters: the OCI registry client, streaming layer inventories, the
//! offline OSV database, and a whole-image scan built from them (the pure core is the
//! `bulkhead-scan` crate).

pub mod layers;
pub mod registry;
pub mod vulndb;

use bulkhead_scan::inventory::{self, LayerInventory};
use bulkhead_scan::verdict::{self, AdvisoryDb, Verdict};
use serde::Serialize;

use registry::{ImageRef, Registry, ResolvedImage};

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
        uncompressed_bytes: u64,
    },
}

/// A finished scan.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub digest: String,
    pub layers: Vec<String>,
    pub verdict: Verdict,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Layer(#[from] layers::LayerError),
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

/// Inventories every layer of `image` (one at a time, streamed) and matches the result.
pub async fn scan_image(
    reg: &Registry,
    image: &ImageRef,
    db: &AdvisoryDb,
    mut progress: impl FnMut(Progress),
) -> Result<Report, ScanError> {
    let (os, arch) = platform();
    let resolved: ResolvedImage = reg.resolve(image, os, arch).await?;
    progress(Progress::Resolved {
        digest: resolved.digest.clone(),
        layers: resolved.layers.len(),
    });
    let mut inventories: Vec<LayerInventory> = Vec::new();
    for (index, l) in resolved.layers.iter().enumerate() {
        let blob = reg.layer(image, l).await?;
        let (inv, stats) = layers::inventory(&l.digest, &l.diff_id, &l.media_type, blob).await?;
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
            uncompressed_bytes: stats.uncompressed_bytes,
        });
        inventories.push(inv);
    }
    let merged = inventory::merge(&inventories);
    Ok(Report {
        image: image.to_string(),
        digest: resolved.digest,
        layers: resolved.layers.iter().map(|l| l.diff_id.clone()).collect(),
        verdict: verdict::assess(&merged, db),
    })
}
