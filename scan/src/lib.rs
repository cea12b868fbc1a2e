//! bulkhead's scanning core, free of I/O: package version ordering (Debian, Alpine),
//! OSV advisories and their matching, severities. Layer inventories and the layer
//! cache's hash ring build on it.

pub mod inventory;
pub mod osv;
pub mod severity;
pub mod verdict;
pub mod version;
