//! OCI and Docker image manifests, indexes and configs as a registry serves them: parsed,
//! the platform picked from an index, and a manifest's layers paired with the config's
//! diffIDs. Pure and bounded by its caller (the registry client caps every document's size);
//! fuzzed.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest: {0}")]
    Parse(String),
    #[error("not an image config: {0}")]
    Config(String),
    #[error("no manifest for {os}/{arch} in the index")]
    NoPlatform { os: String, arch: String },
    #[error("a manifest without a config ({0})")]
    NoConfig(String),
    #[error("{diff_ids} diff_ids for {layers} layers")]
    Mismatch { diff_ids: usize, layers: usize },
    #[error("{0} layers, more than {MAX_LAYERS}")]
    TooManyLayers(usize),
}

/// Layers an image may have (Docker's limit is 127; OCI sets none).
pub const MAX_LAYERS: usize = 1000;

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// A manifest or an index (an index has `manifests`, an image manifest `config` and
/// `layers`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize, Debug)]
struct ConfigDoc {
    rootfs: RootFs,
}

#[derive(Deserialize, Debug)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// One layer: its blob and the digest of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar: the cache key.
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

impl Manifest {
    pub fn parse(body: &[u8]) -> Result<Manifest, ManifestError> {
        serde_json::from_slice(body).map_err(|e| ManifestError::Parse(e.to_string()))
    }

    /// Whether it is an index (a list of per-platform manifests).
    pub fn is_index(&self) -> bool {
        !self.manifests.is_empty()
    }

    /// The index's manifest for `os`/`arch`.
    pub fn platform(&self, os: &str, arch: &str) -> Result<&Descriptor, ManifestError> {
        self.manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == os && p.architecture == arch)
            })
            .ok_or_else(|| ManifestError::NoPlatform {
                os: os.to_owned(),
                arch: arch.to_owned(),
            })
    }

    /// The config's descriptor.
    pub fn config(&self) -> Result<&Descriptor, ManifestError> {
        self.config
            .as_ref()
            .ok_or_else(|| ManifestError::NoConfig(self.media_type.clone()))
    }

    /// Its layers, each with the diffID the image config `config` gives it, in order.
    pub fn layers(&self, config: &[u8]) -> Result<Vec<Layer>, ManifestError> {
        if self.layers.len() > MAX_LAYERS {
            return Err(ManifestError::TooManyLayers(self.layers.len()));
        }
        let cfg: ConfigDoc =
            serde_json::from_slice(config).map_err(|e| ManifestError::Config(e.to_string()))?;
        if cfg.rootfs.diff_ids.len() != self.layers.len() {
            return Err(ManifestError::Mismatch {
                diff_ids: cfg.rootfs.diff_ids.len(),
                layers: self.layers.len(),
            });
        }
        Ok(self
            .layers
            .iter()
            .zip(cfg.rootfs.diff_ids)
            .map(|(l, diff_id)| Layer {
                digest: l.digest.clone(),
                diff_id,
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_picks_the_platform_and_a_manifest_pairs_layers_with_diff_ids() {
        let index = Manifest::parse(
            br#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
              {"digest":"sha256:a","platform":{"os":"linux","architecture":"s390x"}},
              {"digest":"sha256:b","platform":{"os":"linux","architecture":"amd64"}}]}"#,
        )
        .unwrap();
        assert!(index.is_index());
        assert_eq!(index.platform("linux", "amd64").unwrap().digest, "sha256:b");
        assert!(matches!(
            index.platform("linux", "arm64"),
            Err(ManifestError::NoPlatform { .. })
        ));
        let m = Manifest::parse(
            br#"{"config":{"digest":"sha256:c"},"layers":[
              {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l1","size":10}]}"#,
        )
        .unwrap();
        assert_eq!(m.config().unwrap().digest, "sha256:c");
        let layers = m
            .layers(br#"{"rootfs":{"diff_ids":["sha256:d1"]}}"#)
            .unwrap();
        assert_eq!(layers[0].diff_id, "sha256:d1");
        assert_eq!(layers[0].size, 10);
        assert!(matches!(
            m.layers(br#"{"rootfs":{"diff_ids":[]}}"#),
            Err(ManifestError::Mismatch { .. })
        ));
        assert!(matches!(m.layers(b"[]"), Err(ManifestError::Config(_))));
        assert!(matches!(
            Manifest::parse(b"{"),
            Err(ManifestError::Parse(_))
        ));
        assert!(matches!(
            Manifest::parse(b"{}").unwrap().config(),
            Err(ManifestError::NoConfig(_))
        ));
    }
}
