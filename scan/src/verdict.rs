//! Matching an image's packages against an advisory database: the findings and the
//! verdict (counts by severity), and the database index that makes matching cheap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::inventory::{ImageInventory, PackageKind};
use crate::osv::{self, Advisory};
use crate::version::Ecosystem;

/// Advisories indexed by (ecosystem without release, package name).
#[derive(Default, Debug)]
pub struct AdvisoryDb {
    by_package: HashMap<(String, String), Vec<Arc<Advisory>>>,
    count: usize,
}

impl AdvisoryDb {
    pub fn new(advisories: impl IntoIterator<Item = Advisory>) -> AdvisoryDb {
        let mut db = AdvisoryDb::default();
        for a in advisories {
            db.insert(a);
        }
        db
    }

    /// Adds one advisory (withdrawn ones are not kept).
    pub fn insert(&mut self, a: Advisory) {
        if a.withdrawn.is_some() {
            return;
        }
        let a = Arc::new(a);
        let mut keys: Vec<(String, String)> = a
            .affected
            .iter()
            .map(|x| {
                (
                    bare(&x.package.ecosystem).to_owned(),
                    x.package.name.clone(),
                )
            })
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            self.by_package.entry(k).or_default().push(a.clone());
        }
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn candidates(&self, eco: &str, name: &str) -> &[Arc<Advisory>] {
        self.by_package
            .get(&(bare(eco).to_owned(), name.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

fn bare(eco: &str) -> &str {
    eco.split(':').next().unwrap_or(eco)
}

pub use bulkhead_schemas::scan::{Finding, Verdict};

/// Matches every installed package against the database.
pub fn assess(image: &ImageInventory, db: &AdvisoryDb) -> Verdict {
    let mut v = Verdict {
        packages: image.packages.len(),
        ..Verdict::default()
    };
    let Some(os) = &image.os else {
        v.note = Some("no os-release in the image: packages not matched".into());
        return v;
    };
    v.os = if os.pretty_name.is_empty() {
        format!("{} {}", os.id, os.version_id)
    } else {
        os.pretty_name.clone()
    };
    let Some(eco_name) = os.ecosystem() else {
        v.note = Some(format!(
            "OS {} is not supported (Debian and Alpine are)",
            os.id
        ));
        return v;
    };
    let mut seen: BTreeMap<(String, String), Finding> = BTreeMap::new();
    for p in &image.packages {
        let eco = match p.kind {
            PackageKind::Deb => Ecosystem::Debian,
            PackageKind::Apk => Ecosystem::Alpine,
        };
        for a in db.candidates(&eco_name, &p.source) {
            for entry in a.entries_for(&eco_name, &p.source) {
                if let Some(fixed) = osv::affects(eco, entry, &p.source_version) {
                    seen.entry((a.id.clone(), p.source.clone()))
                        .or_insert_with(|| Finding {
                            severity: a.severity(entry),
                            advisory: a.id.clone(),
                            aliases: a.aliases.clone(),
                            package: p.source.clone(),
                            installed: p.source_version.clone(),
                            fixed,
                            summary: a.summary.clone(),
                        });
                }
            }
        }
    }
    let mut findings: Vec<Finding> = seen.into_values().collect();
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.cmp(b)));
    for f in &findings {
        *v.counts.entry(f.severity).or_default() += 1;
    }
    v.ecosystem = Some(eco_name);
    v.findings = findings;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{InstalledPackage, OsRelease};
    use crate::severity::Severity;

    fn adv(id: &str, eco: &str, pkg: &str, fixed: &str, sev: &str) -> Advisory {
        Advisory::parse(
            serde_json::json!({
                "id": id,
                "affected": [{"package": {"ecosystem": eco, "name": pkg},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}],
                "database_specific": {"severity": sev}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn deb(name: &str, source: &str, version: &str) -> InstalledPackage {
        InstalledPackage {
            kind: PackageKind::Deb,
            name: name.into(),
            version: version.into(),
            source: source.into(),
            source_version: version.into(),
        }
    }

    fn image(packages: Vec<InstalledPackage>) -> ImageInventory {
        ImageInventory {
            os: Some(OsRelease {
                id: "debian".into(),
                version_id: "12".into(),
                pretty_name: String::new(),
            }),
            packages,
        }
    }

    #[test]
    fn findings_name_the_source_package_once_and_count_by_severity() {
        let db = AdvisoryDb::new([
            adv("CVE-A", "Debian:12", "openssl", "3.0.13-1", "HIGH"),
            adv("CVE-B", "Debian:12", "zlib", "1.3-1", "LOW"),
            adv("CVE-C", "Debian:11", "zlib", "9.9-1", "CRITICAL"),
            adv("CVE-D", "Debian:12", "openssl", "3.0.1-1", "CRITICAL"),
        ]);
        let img = image(vec![
            deb("libssl3", "openssl", "3.0.11-1"),
            deb("openssl", "openssl", "3.0.11-1"),
            deb("zlib1g", "zlib", "1.2.13-1"),
        ]);
        let v = assess(&img, &db);
        let ids: Vec<_> = v.findings.iter().map(|f| f.advisory.as_str()).collect();
        assert_eq!(
            ids,
            ["CVE-A", "CVE-B"],
            "CVE-C is Debian 11, CVE-D fixed already"
        );
        assert_eq!(v.findings[0].fixed.as_deref(), Some("3.0.13-1"));
        assert_eq!(v.counts[&Severity::High], 1);
        assert_eq!(v.counts[&Severity::Low], 1);
        assert_eq!(v.worst(), Some(Severity::High));
        assert_eq!(v.ecosystem.as_deref(), Some("Debian:12"));
    }

    #[test]
    fn unknown_os_is_said_not_guessed() {
        let mut img = image(vec![deb("x", "x", "1")]);
        img.os = None;
        let v = assess(&img, &AdvisoryDb::default());
        assert!(v.note.unwrap().contains("os-release"));
        assert!(v.findings.is_empty());
    }
}
