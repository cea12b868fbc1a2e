//! Workload ids: UUID v7 for new ones, and a deterministic one for a submission
//! without an id, so that a redelivered submission always names the same workload.

use sha2::{Digest, Sha256};

/// A fresh UUID v7 (what `bulkhead submit` puts in a spec without an id).
pub fn new_workload_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The id of a submission that came without one: a UUID v7 whose time is the
/// submission's stream timestamp and whose random bits derive from its stream
/// sequence. The same stored message always gives the same id.
pub fn derived_workload_id(cmd_seq: u64, stored_unix_ms: u64) -> String {
    let digest = Sha256::digest(format!("bulkhead-cmd/{cmd_seq}").as_bytes());
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(stored_unix_ms, &rand)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_workload_id(7, 1_700_000_000_000);
        assert_eq!(a, derived_workload_id(7, 1_700_000_000_000));
        assert_ne!(a, derived_workload_id(8, 1_700_000_000_000));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
        assert!(crate::subjects::is_valid_token(&a));
    }
}
