//! Loads an offline OSV database: a directory of advisory JSON files (searched
//! recursively) or an OSV `all.zip` export. Files that are not advisories are counted and
//! skipped, never fatal.

use std::io::Read;
use std::path::Path;

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

pub fn load(path: &Path) -> Result<Loaded, VulnDbError> {
    let err = |e: &dyn std::fmt::Display| VulnDbError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut out = Loaded::default();
    let mut add = |bytes: &[u8]| match Advisory::parse(bytes) {
        Ok(a) => out.db.insert(a),
        Err(_) => out.skipped += 1,
    };
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| err(&e))? {
                let p = entry.map_err(|e| err(&e))?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    add(&std::fs::read(&p).map_err(|e| err(&e))?);
                }
            }
        }
    } else {
        let file = std::fs::File::open(path).map_err(|e| err(&e))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| err(&e))?;
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).map_err(|e| err(&e))?;
            if !f.name().map_err(|e| err(&e))?.ends_with(".json") {
                continue;
            }
            let mut buf = Vec::with_capacity(f.size() as usize);
            f.read_to_end(&mut buf).map_err(|e| err(&e))?;
            add(&buf);
        }
    }
    Ok(out)
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
    }
}
