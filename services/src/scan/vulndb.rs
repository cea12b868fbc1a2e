//! The offline OSV database: loaded from a directory of advisory JSON files (searched
//! recursively) or an OSV `all.zip` export, and shared with every scan worker through the
//! `bulkhead-vulndb` object store (`bulkhead vulndb import PATH`, `bulkhead vulndb sync
//! URL`). Files that are not advisories are counted and skipped, never fatal.

use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;

use async_nats::jetstream::object_store;

use crate::bus::Bus;

/// Object store bucket and object name of the shared database.
pub const BUCKET: &str = bulkhead_schemas::subjects::VULNDB_BUCKET;
pub const OBJECT: &str = "osv.zip";

use bulkhead_scan::osv::Advisory;
use bulkhead_scan::verdict::AdvisoryDb;

#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub db: AdvisoryDb,
    pub skipped: usize,
}

impl Loaded {
    /// Takes one file: an advisory, or something counted as skipped.
    fn add(&mut self, bytes: &[u8]) {
        match Advisory::parse(bytes) {
            Ok(a) => self.db.insert(a),
            Err(_) => self.skipped += 1,
        }
    }
}

fn read_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> VulnDbError + '_ {
    move |e| VulnDbError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The `.json` files under a directory, recursively.
fn json_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, VulnDbError> {
    let err = read_err(dir);
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| err(&e))? {
            let p = entry.map_err(|e| err(&e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                out.push(p);
            }
        }
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<Loaded, VulnDbError> {
    let err = read_err(path);
    let mut out = Loaded::default();
    if path.is_dir() {
        for p in json_files(path)? {
            out.add(&std::fs::read(&p).map_err(|e| err(&e))?);
        }
    } else {
        let file = std::fs::File::open(path).map_err(|e| err(&e))?;
        read_zip(file, &mut |b| out.add(b)).map_err(|e| err(&e))?;
    }
    Ok(out)
}

/// A zip archive that could not be read.
#[derive(Debug, thiserror::Error)]
enum ZipReadError {
    #[error(transparent)]
    Zip(#[from] zip::result::ZipError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The most a zip entry's stated size may reserve up front (it is read whole anyway).
const MAX_RESERVE: u64 = 1 << 20;

fn read_zip(r: impl Read + Seek, add: &mut impl FnMut(&[u8])) -> Result<(), ZipReadError> {
    let mut zip = zip::ZipArchive::new(r)?;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i)?;
        if !f.name()?.ends_with(".json") {
            continue;
        }
        let mut buf = Vec::with_capacity(f.size().min(MAX_RESERVE) as usize);
        f.read_to_end(&mut buf)?;
        add(&buf);
    }
    Ok(())
}

/// Loads a database from zip bytes (as stored in the object store).
pub fn load_zip_bytes(bytes: &[u8]) -> Result<Loaded, VulnDbError> {
    let mut out = Loaded::default();
    read_zip(Cursor::new(bytes), &mut |b| out.add(b)).map_err(|e| VulnDbError::Read {
        path: OBJECT.into(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// A directory packed as a zip of its advisory files, or a zip file as it is.
pub fn pack(path: &Path) -> Result<Vec<u8>, VulnDbError> {
    let err = read_err(path);
    if !path.is_dir() {
        return std::fs::read(path).map_err(|e| err(&e));
    }
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for p in json_files(path)? {
        let name = p.strip_prefix(path).unwrap_or(&p).display().to_string();
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .map_err(|e| err(&e))?;
        w.write_all(&std::fs::read(&p).map_err(|e| err(&e))?)
            .map_err(|e| err(&e))?;
    }
    Ok(w.finish().map_err(|e| err(&e))?.into_inner())
}

async fn bucket(bus: &Bus) -> anyhow::Result<object_store::ObjectStore> {
    if let Ok(b) = bus.js.get_object_store(BUCKET).await {
        return Ok(b);
    }
    Ok(bus
        .js
        .create_object_store(object_store::Config {
            bucket: BUCKET.into(),
            description: Some("the OSV advisory database scan workers use".into()),
            ..Default::default()
        })
        .await?)
}

/// Checks a zip of advisories and stores it for every worker; returns how many it holds.
pub async fn store(bus: &Bus, zip: Vec<u8>) -> anyhow::Result<Loaded> {
    let loaded = load_zip_bytes(&zip)?;
    anyhow::ensure!(
        !loaded.db.is_empty(),
        "no OSV advisories in it ({} files skipped)",
        loaded.skipped
    );
    bucket(bus)
        .await?
        .put(OBJECT, &mut Cursor::new(zip))
        .await?;
    Ok(loaded)
}

/// The stored database and its version (the object's nuid), if one was imported.
pub async fn fetch(bus: &Bus) -> anyhow::Result<Option<(Loaded, String)>> {
    // No bucket yet: nothing imported (a worker may not make it; an admin's import does).
    let Ok(b) = bus.js.get_object_store(BUCKET).await else {
        return Ok(None);
    };
    let Ok(info) = b.info(OBJECT).await else {
        return Ok(None);
    };
    let mut obj = b.get(OBJECT).await?;
    let mut bytes = Vec::with_capacity(info.size);
    tokio::io::AsyncReadExt::read_to_end(&mut obj, &mut bytes).await?;
    Ok(Some((load_zip_bytes(&bytes)?, info.nuid)))
}

/// The version of the stored database, without reading it.
pub async fn version(bus: &Bus) -> Option<String> {
    let b = bus.js.get_object_store(BUCKET).await.ok()?;
    b.info(OBJECT).await.ok().map(|i| i.nuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const ADV: &str = r#"{"id":"X-1","affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.2.5-r0"}]}]}]}"#;

    #[test]
    fn loads_directories_and_zips() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("alpine")).unwrap();
        std::fs::write(d.path().join("alpine/X-1.json"), ADV).unwrap();
        std::fs::write(d.path().join("broken.json"), "{").unwrap();
        std::fs::write(d.path().join("README.md"), "no").unwrap();
        let l = load(d.path()).unwrap();
        assert_eq!((l.db.len(), l.skipped), (1, 1));

        let z = d.path().join("all.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&z).unwrap());
        w.start_file("X-1.json", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(ADV.as_bytes()).unwrap();
        w.finish().unwrap();
        assert_eq!(load(&z).unwrap().db.len(), 1);
        assert!(load(&d.path().join("missing.zip")).is_err());
        // A directory packs into a zip holding the same advisories.
        let packed = pack(d.path()).unwrap();
        let l = load_zip_bytes(&packed).unwrap();
        assert_eq!((l.db.len(), l.skipped), (1, 1), "X-1 and the broken file");
    }
}
