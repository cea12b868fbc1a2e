//! The consistent-hash ring that gives each layer diffID one owner among the live scan
//! workers. Every worker builds the same ring from the same member list, so all agree on
//! owners without talking; a worker joining or leaving moves only its own share of keys.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Points per member: enough to spread keys within a few percent of even.
pub const DEFAULT_POINTS: u32 = 128;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ring {
    points: BTreeMap<u64, String>,
    per_member: u32,
}

fn point(s: &str) -> u64 {
    let d = Sha256::digest(s.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

impl Ring {
    pub fn new(members: impl IntoIterator<Item = impl Into<String>>, per_member: u32) -> Ring {
        let mut r = Ring {
            points: BTreeMap::new(),
            per_member,
        };
        for m in members {
            r.add(&m.into());
        }
        r
    }

    pub fn add(&mut self, member: &str) {
        for i in 0..self.per_member {
            self.points
                .insert(point(&format!("{member}#{i}")), member.to_owned());
        }
    }

    pub fn remove(&mut self, member: &str) {
        self.points.retain(|_, m| m != member);
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The member owning `key`: the first point at or after the key's hash, wrapping.
    pub fn owner(&self, key: &str) -> Option<&str> {
        let h = point(key);
        self.points
            .range(h..)
            .next()
            .or_else(|| self.points.iter().next())
            .map(|(_, m)| m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("sha256:{i:064x}")).collect()
    }

    #[test]
    fn keys_spread_over_members() {
        let r = Ring::new(["w1", "w2", "w3", "w4"], DEFAULT_POINTS);
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        let ks = keys(20_000);
        for k in &ks {
            *count.entry(r.owner(k).unwrap()).or_default() += 1;
        }
        assert_eq!(count.len(), 4);
        for (m, c) in count {
            assert!((3_500..6_500).contains(&c), "{m} owns {c} of 20000");
        }
        assert_eq!(Ring::default().owner("x"), None);
    }

    proptest! {
        #[test]
        fn joining_or_leaving_moves_only_that_members_keys(n in 1usize..8, extra in 0usize..8) {
            let members: Vec<String> = (0..n).map(|i| format!("worker-{i}")).collect();
            let before = Ring::new(members.clone(), 32);
            let newcomer = format!("worker-new-{extra}");
            let mut after = before.clone();
            after.add(&newcomer);
            for k in keys(500) {
                let (b, a) = (before.owner(&k).unwrap(), after.owner(&k).unwrap());
                // A key moves only to the newcomer.
                prop_assert!(a == b || a == newcomer);
            }
            let leaver = members[extra % n].clone();
            let mut without = before.clone();
            without.remove(&leaver);
            for k in keys(500) {
                let b = before.owner(&k).unwrap();
                match without.owner(&k) {
                    Some(w) => prop_assert!(w == b || b == leaver),
                    None => prop_assert!(n == 1),
                }
            }
        }
    }
}
