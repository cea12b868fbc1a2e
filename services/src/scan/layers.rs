//! Inventories a layer as it streams from the registry: decompress (gzip, zstd or none)
//! on a blocking thread fed through a channel, read the tar, and check the uncompressed
//! bytes against the layer's diffID. Nothing is written to disk. Bounded: the blob's
//! compressed bytes by what its descriptor declares ([`LayerCaps`]), the decompressed
//! bytes by a cap, the tar's headers by the reader's limits (`bulkhead_scan::tarwalk`).

use std::io::{self, Read};

use bulkhead_scan::inventory::LayerInventory;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {digest}: unsupported media type {media_type}")]
    MediaType { digest: String, media_type: String },
    #[error("layer {digest}: {reason}")]
    Read { digest: String, reason: String },
    #[error("layer {digest}: content is {got}, the image config says {want}")]
    DiffId {
        digest: String,
        want: String,
        got: String,
    },
}

/// Largest layer blob fetched (compressed).
pub const MAX_COMPRESSED: u64 = 4 * 1024 * 1024 * 1024;
/// Largest layer read (decompressed): a bomb of zeros stops here.
pub const MAX_UNCOMPRESSED: u64 = 16 * 1024 * 1024 * 1024;

/// How many bytes one layer may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerCaps {
    pub compressed: u64,
    pub uncompressed: u64,
}

impl LayerCaps {
    /// For a layer whose descriptor declares `size` bytes (0: not declared): no more than
    /// that, and never more than the caps.
    pub fn declared(size: u64) -> LayerCaps {
        LayerCaps {
            compressed: if size == 0 {
                MAX_COMPRESSED
            } else {
                size.min(MAX_COMPRESSED)
            },
            uncompressed: MAX_UNCOMPRESSED,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of(media_type: &str) -> Option<Compression> {
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// Reads what an async task sends, from a blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// Hashes what passes through, and counts it; past `cap` bytes it fails.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
    cap: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hash.update(&out[..n]);
        self.bytes += n as u64;
        if self.bytes > self.cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decompressed, it is larger than {} bytes", self.cap),
            ));
        }
        Ok(n)
    }
}

/// What reading a layer took.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerStats {
    pub uncompressed_bytes: u64,
}

/// Inventories one layer from its blob stream.
pub async fn inventory(
    digest: &str,
    diff_id: &str,
    media_type: &str,
    caps: LayerCaps,
    blob: impl Stream<Item = reqwest::Result<Bytes>>,
) -> Result<(LayerInventory, LayerStats), LayerError> {
    let compression = Compression::of(media_type).ok_or_else(|| LayerError::MediaType {
        digest: digest.to_owned(),
        media_type: media_type.to_owned(),
    })?;
    let (tx, rx) = mpsc::channel(16);
    let want = diff_id.to_owned();
    let d = digest.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        let source = ChannelReader {
            rx,
            buf: Bytes::new(),
        };
        let plain: Box<dyn Read> = match compression {
            Compression::None => Box::new(source),
            // Every member: eStargz and other seekable layers are many gzip members in a row.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
            Compression::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(source)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            ),
        };
        let mut h = Hashing {
            inner: plain,
            hash: Sha256::new(),
            bytes: 0,
            cap: caps.uncompressed,
        };
        let inv = LayerInventory::from_tar(&mut h)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        io::copy(&mut h, &mut io::sink())?; // the tar's padding: part of the diffID
        let got = format!("sha256:{}", hex::encode(h.hash.finalize()));
        Ok::<_, io::Error>((inv, got, h.bytes))
    });
    let mut blob = std::pin::pin!(blob);
    let mut fetched: u64 = 0;
    while let Some(chunk) = blob.next().await {
        let chunk = chunk.map_err(io::Error::other).and_then(|c| {
            fetched += c.len() as u64;
            if fetched > caps.compressed {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the blob is larger than {} bytes", caps.compressed),
                ));
            }
            Ok(c)
        });
        let over = chunk.is_err();
        if tx.send(chunk).await.is_err() || over {
            break; // the reader stopped (an error it will report), or was told why
        }
    }
    drop(tx);
    let (inv, got, bytes) = reader
        .await
        .map_err(|e| LayerError::Read {
            digest: d.clone(),
            reason: e.to_string(),
        })?
        .map_err(|e| LayerError::Read {
            digest: d.clone(),
            reason: e.to_string(),
        })?;
    if got != want {
        return Err(LayerError::DiffId {
            digest: d,
            want,
            got,
        });
    }
    Ok((
        inv,
        LayerStats {
            uncompressed_bytes: bytes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: LayerCaps = LayerCaps {
        compressed: MAX_COMPRESSED,
        uncompressed: MAX_UNCOMPRESSED,
    };

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let text = "P:musl\nV:1.2.4-r2\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "lib/apk/db/installed", text.as_bytes())
            .unwrap();
        b.into_inner().unwrap()
    }

    fn diff_id(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    fn chunks(b: Vec<u8>) -> impl Stream<Item = reqwest::Result<Bytes>> {
        let parts: Vec<reqwest::Result<Bytes>> = b
            .chunks(100)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(parts)
    }

    #[tokio::test]
    async fn gzip_layer_streams_into_an_inventory_and_its_diff_id_is_checked() {
        let tar = layer_tar();
        let id = diff_id(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let mt = "application/vnd.oci.image.layer.v1.tar+gzip";
        let (inv, stats) = inventory("sha256:x", &id, mt, CAPS, chunks(gz.clone()))
            .await
            .unwrap();
        assert_eq!(inv.files.len(), 1);
        assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
        let e = inventory("sha256:x", "sha256:00", mt, CAPS, chunks(gz))
            .await
            .unwrap_err();
        assert!(matches!(e, LayerError::DiffId { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_gzip_layer_of_many_members_is_read_whole() {
        // As eStargz writes them: the tar cut in two, each part its own gzip member.
        let tar = layer_tar();
        let mut gz = Vec::new();
        for part in [&tar[..700], &tar[700..]] {
            let mut m = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut m, part).unwrap();
            gz.extend(m.finish().unwrap());
        }
        let mt = "application/vnd.oci.image.layer.v1.tar+gzip";
        let (inv, stats) = inventory("sha256:x", &diff_id(&tar), mt, CAPS, chunks(gz))
            .await
            .unwrap();
        assert_eq!(inv.files.len(), 1);
        assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
    }

    #[tokio::test]
    async fn plain_tar_and_unknown_media_types() {
        let tar = layer_tar();
        let id = diff_id(&tar);
        let mt = "application/vnd.oci.image.layer.v1.tar";
        assert!(
            inventory("d", &id, mt, CAPS, chunks(tar.clone()))
                .await
                .is_ok()
        );
        let e = inventory("d", &id, "text/plain", CAPS, chunks(tar))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unsupported media type"), "{e}");
    }

    /// Megabytes of zeros in a few kilobytes of gzip: stopped at the decompressed cap; a
    /// blob longer than its descriptor says: stopped at the declared size.
    #[tokio::test]
    async fn a_layer_past_its_caps_is_refused() {
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
        let gz = gz.finish().unwrap();
        let mt = "application/vnd.oci.image.layer.v1.tar+gzip";
        let small = LayerCaps {
            compressed: MAX_COMPRESSED,
            uncompressed: 1024 * 1024,
        };
        let e = inventory("d", &diff_id(&zeros), mt, small, chunks(gz.clone()))
            .await
            .unwrap_err()
            .to_string();
        // The zeros read as an empty tar: the cap is hit while reading past its end.
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
        let declared = LayerCaps::declared(gz.len() as u64 - 1);
        let e = inventory("d", &diff_id(&zeros), mt, declared, chunks(gz))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("blob is larger than"), "{e}");
        assert_eq!(LayerCaps::declared(0).compressed, MAX_COMPRESSED);
        assert_eq!(LayerCaps::declared(u64::MAX).compressed, MAX_COMPRESSED);
    }
}
