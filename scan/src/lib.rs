//! bulkhead's scanning core, free of I/O: package version ordering (Debian, Alpine),
//! a bounded tar reader and layer inventories, manifests, OSV advisories and their matching, severities, image references,
//! Trivy reports, and the layer cache's hash ring and LRU. The scan workers (crate
//! `bulkhead`, `scan/`) do the I/O around it.

pub mod cache;
pub mod inventory;
pub mod manifest;
pub mod osv;
pub mod reference;
pub mod severity;
pub mod tarwalk;
pub mod trivy;
pub mod verdict;
pub mod version;
