//! bulkhead's scanning core, free of I/O: package version ordering (Debian, Alpine).
//! Layer inventories, advisory matching and the layer cache's hash ring build on it.

pub mod version;
