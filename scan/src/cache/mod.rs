//! The pure parts of the scan workers' layer cache: the hash ring that names each layer's
//! owner among the live workers, and the byte-bounded LRU each worker keeps.

pub mod lru;
pub mod ring;
