//! What one image layer holds that a vulnerability scan needs: the OS release, the
//! Debian and Alpine package databases, and the whiteouts by which it removes what
//! earlier layers added. Layers are merged in order into the image's package set.
//! Everything here reads a tar stream or text; nothing touches the network or the disk.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::tarwalk::{Kind, Limits, TarError, Walker};

/// Bump when the inventory's shape or parsing changes: cached inventories of another
/// format are not reused.
pub const FORMAT: u32 = 1;

/// Largest package database file read (a Debian status file is a few MiB at most).
pub const MAX_DB_FILE: u64 = 16 * 1024 * 1024;
/// Package database bytes read from one layer, all files together.
pub const MAX_DB_BYTES: u64 = 64 * 1024 * 1024;
/// Whiteout paths kept from one layer (bytes, with each entry's overhead).
pub const MAX_WHITEOUT_BYTES: u64 = 16 * 1024 * 1024;

const OS_RELEASE: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];
const DPKG_STATUS: &str = "var/lib/dpkg/status";
const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d/";
const APK_INSTALLED: &str = "lib/apk/db/installed";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OsRelease {
    /// `debian`, `alpine`, …
    pub id: String,
    pub version_id: String,
    #[serde(default)]
    pub pretty_name: String,
}

impl OsRelease {
    pub fn parse(text: &str) -> OsRelease {
        let mut f: BTreeMap<&str, String> = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.trim().split_once('=') {
                f.insert(k, v.trim().trim_matches(['"', '\'']).to_owned());
            }
        }
        let mut take = |k| f.remove(k).unwrap_or_default();
        OsRelease {
            id: take("ID"),
            version_id: take("VERSION_ID"),
            pretty_name: take("PRETTY_NAME"),
        }
    }

    /// The OSV ecosystem of this release: `Debian:12`, `Alpine:v3.19`.
    pub fn ecosystem(&self) -> Option<String> {
        match self.id.as_str() {
            "debian" => {
                let major = self.version_id.split('.').next()?;
                (!major.is_empty()).then(|| format!("Debian:{major}"))
            }
            "alpine" => {
                let mut p = self.version_id.split('.');
                let (major, minor) = (p.next()?, p.next()?);
                Some(format!("Alpine:v{major}.{minor}"))
            }
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PackageKind {
    Deb,
    Apk,
}

/// An installed package. Advisories name the source package (Debian) or the origin
/// (Alpine), so both are kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledPackage {
    pub kind: PackageKind,
    pub name: String,
    pub version: String,
    pub source: String,
    pub source_version: String,
}

/// A package database file as found in a layer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum DbFile {
    OsRelease(OsRelease),
    Packages(Vec<InstalledPackage>),
}

/// The inventory of one layer, keyed (in the cache) by its diffID and [`FORMAT`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerInventory {
    /// Path (relative, no leading `/`) → what it holds.
    pub files: BTreeMap<String, DbFile>,
    /// Paths this layer deletes (`.wh.<name>`).
    pub whiteouts: Vec<String>,
    /// Directories whose earlier contents this layer hides (`.wh..wh..opq`).
    pub opaque: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("{path} is larger than {MAX_DB_FILE} bytes")]
    TooLarge { path: String },
    #[error("more than {MAX_DB_BYTES} bytes of package databases in one layer")]
    TooMuchDb,
    #[error("more than {MAX_WHITEOUT_BYTES} bytes of whiteouts in one layer")]
    TooManyWhiteouts,
}

impl LayerInventory {
    /// Reads an uncompressed layer tar, keeping only what a scan needs, within the
    /// default [`Limits`](crate::tarwalk::Limits) of the tar reader and this module's caps.
    pub fn from_tar(layer: impl Read) -> Result<LayerInventory, InventoryError> {
        let mut inv = LayerInventory::default();
        let mut walker = Walker::new(layer, Limits::default());
        let (mut db_bytes, mut whiteout_bytes) = (0u64, 0u64);
        while let Some(entry) = walker.next_entry()? {
            let path = normalize(&entry.path);
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n.to_owned()),
                None => (String::new(), path.clone()),
            };
            let whiteout = if name == ".wh..wh..opq" {
                Some((&mut inv.opaque, dir))
            } else {
                name.strip_prefix(".wh.")
                    .map(|hidden| (&mut inv.whiteouts, format!("{dir}{hidden}")))
            };
            if let Some((list, p)) = whiteout {
                whiteout_bytes += p.len() as u64 + 24;
                if whiteout_bytes > MAX_WHITEOUT_BYTES {
                    return Err(InventoryError::TooManyWhiteouts);
                }
                list.push(p);
                continue;
            }
            if entry.kind != Kind::File || !wanted(&path) {
                continue;
            }
            if entry.size > MAX_DB_FILE {
                return Err(InventoryError::TooLarge { path });
            }
            db_bytes += entry.size;
            if db_bytes > MAX_DB_BYTES {
                return Err(InventoryError::TooMuchDb);
            }
            let data = walker.read_current("package database", MAX_DB_FILE)?;
            inv.add_file(path, &String::from_utf8_lossy(&data));
        }
        Ok(inv)
    }

    /// Records a file of interest by its path and text.
    pub fn add_file(&mut self, path: String, text: &str) {
        let parsed = if OS_RELEASE.contains(&path.as_str()) {
            DbFile::OsRelease(OsRelease::parse(text))
        } else if path == APK_INSTALLED {
            DbFile::Packages(parse_apk(text))
        } else {
            DbFile::Packages(parse_dpkg(text))
        };
        self.files.insert(path, parsed);
    }
}

fn normalize(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

fn wanted(path: &str) -> bool {
    OS_RELEASE.contains(&path)
        || path == DPKG_STATUS
        || path == APK_INSTALLED
        || path
            .strip_prefix(DPKG_STATUS_D)
            .is_some_and(|f| !f.is_empty() && !f.contains('/') && !f.ends_with(".md5sums"))
}

/// Debian's `status` file (or one `status.d/` file): stanzas of `Field: value`; only
/// packages whose status ends in `installed` count (a `status.d` stanza has no status).
pub fn parse_dpkg(text: &str) -> Vec<InstalledPackage> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut f: BTreeMap<&str, &str> = BTreeMap::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // continuation of a multi-line field
            }
            if let Some((k, v)) = line.split_once(':') {
                f.insert(k.trim(), v.trim());
            }
        }
        let (Some(name), Some(version)) = (f.get("Package"), f.get("Version")) else {
            continue;
        };
        if f.get("Status").is_some_and(|s| !s.ends_with(" installed")) {
            continue;
        }
        // `Source: name` or `Source: name (version)`
        let (source, source_version) = match f.get("Source") {
            Some(s) => match s.split_once(" (") {
                Some((n, v)) => (n.trim(), v.trim_end_matches(')').trim()),
                None => (s.trim(), *version),
            },
            None => (*name, *version),
        };
        out.push(InstalledPackage {
            kind: PackageKind::Deb,
            name: (*name).to_owned(),
            version: (*version).to_owned(),
            source: source.to_owned(),
            source_version: source_version.to_owned(),
        });
    }
    out
}

/// Alpine's `installed` database: records of `X:value` lines; `P` name, `V` version,
/// `o` origin (the source package advisories name).
pub fn parse_apk(text: &str) -> Vec<InstalledPackage> {
    let mut out = Vec::new();
    for record in text.split("\n\n") {
        let (mut name, mut version, mut origin) = (None, None, None);
        for line in record.lines() {
            match line.split_once(':') {
                Some(("P", v)) => name = Some(v),
                Some(("V", v)) => version = Some(v),
                Some(("o", v)) => origin = Some(v),
                _ => {}
            }
        }
        if let (Some(n), Some(v)) = (name, version) {
            out.push(InstalledPackage {
                kind: PackageKind::Apk,
                name: n.to_owned(),
                version: v.to_owned(),
                source: origin.unwrap_or(n).to_owned(),
                source_version: v.to_owned(),
            });
        }
    }
    out
}

/// The image as its layers leave it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInventory {
    pub os: Option<OsRelease>,
    pub packages: Vec<InstalledPackage>,
}

/// Applies layers in order: each one's opaque directories and whiteouts remove what came
/// before, then its files replace earlier ones at the same path.
pub fn merge<'a>(layers: impl IntoIterator<Item = &'a LayerInventory>) -> ImageInventory {
    let mut files: BTreeMap<&str, &DbFile> = BTreeMap::new();
    for layer in layers {
        for dir in &layer.opaque {
            files.retain(|p, _| !p.starts_with(dir.as_str()));
        }
        for gone in &layer.whiteouts {
            let as_dir = format!("{gone}/");
            files.retain(|p, _| *p != gone.as_str() && !p.starts_with(&as_dir));
        }
        for (p, f) in &layer.files {
            files.insert(p, f);
        }
    }
    let os = OS_RELEASE.iter().find_map(|p| match files.get(p) {
        Some(DbFile::OsRelease(o)) => Some(o.clone()),
        _ => None,
    });
    let mut packages: Vec<InstalledPackage> = files
        .values()
        .filter_map(|f| match f {
            DbFile::Packages(p) => Some(p.iter().cloned()),
            DbFile::OsRelease(_) => None,
        })
        .flatten()
        .collect();
    packages.sort();
    packages.dedup();
    ImageInventory { os, packages }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libssl3\n\
Status: install ok installed\n\
Version: 3.0.11-1~deb12u2\n\
Source: openssl\n\
Description: TLS\n continued line\n\
\n\
Package: removed-pkg\n\
Status: deinstall ok config-files\n\
Version: 1.0\n\
\n\
Package: zlib1g\n\
Status: install ok installed\n\
Source: zlib (1:1.2.13.dfsg-1)\n\
Version: 1:1.2.13.dfsg-1+b1\n";

    #[test]
    fn dpkg_status_keeps_installed_packages_with_their_sources() {
        let p = parse_dpkg(STATUS);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (
                p[0].name.as_str(),
                p[0].source.as_str(),
                p[0].source_version.as_str()
            ),
            ("libssl3", "openssl", "3.0.11-1~deb12u2")
        );
        assert_eq!(
            (p[1].source.as_str(), p[1].source_version.as_str()),
            ("zlib", "1:1.2.13.dfsg-1")
        );
    }

    #[test]
    fn apk_installed_uses_the_origin() {
        let p = parse_apk("C:Q1abc=\nP:libcrypto3\nV:3.1.4-r1\no:openssl\n\nP:musl\nV:1.2.4-r2\n");
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].source.as_str(), p[0].version.as_str()),
            ("openssl", "3.1.4-r1")
        );
        assert_eq!(p[1].source, "musl");
    }

    #[test]
    fn os_release_names_the_osv_ecosystem() {
        let d = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(d.ecosystem().as_deref(), Some("Debian:12"));
        let a = OsRelease::parse("ID=alpine\nVERSION_ID=3.19.1\n");
        assert_eq!(a.ecosystem().as_deref(), Some("Alpine:v3.19"));
        assert_eq!(
            OsRelease::parse("ID=ubuntu\nVERSION_ID=22.04").ecosystem(),
            None
        );
    }

    fn tar(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_merge_in_order_with_whiteouts() {
        let base = LayerInventory::from_tar(
            &tar(&[
                ("./usr/lib/os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
                ("./var/lib/dpkg/status", STATUS),
                ("./usr/bin/ls", "binary, ignored"),
            ])[..],
        )
        .unwrap();
        assert_eq!(base.files.len(), 2);
        // A later layer removed zlib: it rewrote the status file.
        let only_ssl = STATUS.split("\n\n").next().unwrap();
        let upgrade =
            LayerInventory::from_tar(&tar(&[("var/lib/dpkg/status", only_ssl)])[..]).unwrap();
        let img = merge([&base, &upgrade]);
        assert_eq!(img.os.unwrap().version_id, "12");
        let names: Vec<_> = img.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libssl3"]);

        // distroless style: one file per package; a whiteout deletes one.
        let d1 = LayerInventory::from_tar(
            &tar(&[
                (
                    "var/lib/dpkg/status.d/zlib1g",
                    "Package: zlib1g\nVersion: 1.2\n",
                ),
                (
                    "var/lib/dpkg/status.d/libc6",
                    "Package: libc6\nVersion: 2.36\n",
                ),
                ("var/lib/dpkg/status.d/libc6.md5sums", "ignored"),
            ])[..],
        )
        .unwrap();
        let d2 = LayerInventory::from_tar(&tar(&[("var/lib/dpkg/status.d/.wh.zlib1g", "")])[..])
            .unwrap();
        assert_eq!(d2.whiteouts, ["var/lib/dpkg/status.d/zlib1g"]);
        let names: Vec<_> = merge([&d1, &d2])
            .packages
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["libc6"]);

        // An opaque directory hides everything below it from earlier layers.
        let d3 = LayerInventory::from_tar(&tar(&[("var/lib/dpkg/status.d/.wh..wh..opq", "")])[..])
            .unwrap();
        assert!(merge([&d1, &d3]).packages.is_empty());
    }

    #[test]
    fn inventory_round_trips_as_json() {
        let mut inv = LayerInventory::default();
        inv.add_file(APK_INSTALLED.into(), "P:musl\nV:1.2.4-r2\n");
        inv.whiteouts.push("etc/x".into());
        let json = serde_json::to_string(&inv).unwrap();
        assert_eq!(serde_json::from_str::<LayerInventory>(&json).unwrap(), inv);
    }
}
