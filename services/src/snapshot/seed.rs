//! A snapshot's body decoded with its workloads' count known ahead (the header's unsigned
//! `workloads` hint): the list is allocated once at its size instead of growing by
//! doubling, which touched about twice its memory fresh, and fresh memory (zeroed by the
//! kernel) is most of what a load costs. The hint only sizes the list, never past the
//! decompressed JSON's own length in bytes; what the body says is read as a derived
//! `Deserialize` would read it (unknown fields ignored, a missing or repeated one refused).

use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Snapshot;
use bulkhead_actors::projection::{Workload, Workloads};
use bulkhead_schemas::de::once;

/// The snapshot in `json`, its workloads' list sized for `hint` of them (at most as many
/// as fit in `json.len()` bytes).
pub(super) fn decode(json: &[u8], hint: Option<u64>) -> serde_json::Result<Snapshot> {
    let most = json.len() / std::mem::size_of::<(String, Arc<Workload>)>();
    let capacity = usize::try_from(hint.unwrap_or(0)).map_or(most, |h| h.min(most));
    let mut de = serde_json::Deserializer::from_slice(json);
    let snap = SnapshotSeed { capacity }.deserialize(&mut de)?;
    de.end()?;
    Ok(snap)
}

struct SnapshotSeed {
    capacity: usize,
}

impl<'de> DeserializeSeed<'de> for SnapshotSeed {
    type Value = Snapshot;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Snapshot, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SnapshotSeed {
    type Value = Snapshot;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a snapshot")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Snapshot, A::Error> {
        let (mut service, mut seq, mut covers) = (None, None, None);
        let (mut running, mut raw, mut workloads) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "service" => once(&mut service, "service", map.next_value()?)?,
                "seq" => once(&mut seq, "seq", map.next_value()?)?,
                "covers" => once(&mut covers, "covers", map.next_value()?)?,
                "running" => once(&mut running, "running", map.next_value()?)?,
                "raw" => once(&mut raw, "raw", map.next_value()?)?,
                "workloads" => {
                    let list = map.next_value_seed(ListSeed {
                        capacity: self.capacity,
                    })?;
                    once(&mut workloads, "workloads", list)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = A::Error::missing_field;
        Ok(Snapshot {
            service: service.ok_or_else(|| missing("service"))?,
            seq: seq.ok_or_else(|| missing("seq"))?,
            covers: covers.ok_or_else(|| missing("covers"))?,
            running: running.ok_or_else(|| missing("running"))?,
            raw: raw.ok_or_else(|| missing("raw"))?,
            workloads: workloads.ok_or_else(|| missing("workloads"))?,
        })
    }
}

/// The workloads' list, allocated for `capacity` of them up front (if the allocator
/// agrees; else it grows as it fills).
struct ListSeed {
    capacity: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Workloads;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Workloads;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of workloads")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        let _ = list.try_reserve_exact(self.capacity);
        while let Some((id, w)) = seq.next_element::<(String, Workload)>()? {
            list.push((id, Arc::new(w)));
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_actors::audit::RunningHash;

    fn sample(n: usize) -> Snapshot {
        let w: Workload = serde_json::from_value(serde_json::json!({
            "replicas": [], "desired": 1, "head": {"seq": 0, "hash": "00".repeat(32)}, "events": 1,
            "cmd_seq": 3
        }))
        .unwrap_or_else(|e| panic!("a workload: {e}"));
        Snapshot {
            service: "scheduler".into(),
            seq: 9,
            covers: 4,
            running: RunningHash::default(),
            raw: Default::default(),
            workloads: (0..n)
                .map(|i| (format!("t/w-{i:04}"), Arc::new(w.clone())))
                .collect(),
        }
    }

    fn same(a: &Snapshot, b: &Snapshot) -> bool {
        serde_json::to_vec(a).unwrap() == serde_json::to_vec(b).unwrap()
    }

    #[test]
    fn a_body_decodes_to_the_snapshot_sealed_whatever_the_hint() {
        let snap = sample(300);
        let json = serde_json::to_vec(&snap).unwrap();
        for hint in [None, Some(0), Some(1), Some(300), Some(301), Some(u64::MAX)] {
            let back = decode(&json, hint).unwrap();
            assert!(same(&back, &snap), "{hint:?}");
        }
        // The true count sizes the list exactly; a lie never past the JSON's own bytes.
        assert_eq!(decode(&json, Some(300)).unwrap().workloads.capacity(), 300);
        let huge = decode(&json, Some(u64::MAX)).unwrap().workloads;
        let bytes = huge.capacity() * std::mem::size_of::<(String, Arc<Workload>)>();
        assert!(
            bytes <= json.len(),
            "{bytes} bytes for {} of JSON",
            json.len()
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_missing_repeated_or_trailing_ones_refused() {
        let mut v = serde_json::to_value(sample(2)).unwrap();
        v["later"] = serde_json::json!({"a": [1, 2]});
        let back = decode(&serde_json::to_vec(&v).unwrap(), Some(2)).unwrap();
        assert!(same(&back, &sample(2)));

        let mut missing = serde_json::to_value(sample(2)).unwrap();
        missing.as_object_mut().unwrap().remove("running");
        let why = decode(&serde_json::to_vec(&missing).unwrap(), None)
            .err()
            .unwrap();
        assert!(why.to_string().contains("missing field `running`"), "{why}");

        let json = String::from_utf8(serde_json::to_vec(&sample(1)).unwrap()).unwrap();
        let twice = json.replacen(
            "{\"service\":\"scheduler\",",
            "{\"seq\":1,\"service\":\"scheduler\",",
            1,
        );
        let why = decode(twice.as_bytes(), None).err().unwrap();
        assert!(why.to_string().contains("duplicate field `seq`"), "{why}");

        let trailing = format!("{json} x");
        assert!(decode(trailing.as_bytes(), None).is_err());
        for junk in ["", "[]", "{\"workloads\": 3}", "null"] {
            assert!(decode(junk.as_bytes(), Some(5)).is_err(), "{junk:?}");
        }
    }
}
