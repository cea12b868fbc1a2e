//! One live process per node name: each node process keeps an instance id in its data
//! directory (`instances/node-<name>`), puts it in its heartbeats, and before it starts asks
//! the query API for the latest heartbeat under its name. A heartbeat from another instance
//! younger than three of its intervals means the name is live elsewhere: this process
//! refuses to start (a second node under a live name would mark the first's replicas
//! vanished and restart them). A restart of the same node keeps its id and goes on.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bulkhead_schemas::node::BeatReply;
use bulkhead_schemas::subjects;
use tracing::warn;

use crate::bus::Bus;

/// Missed intervals after which a heartbeat no longer holds its name (as the silence rule).
const LIVE_BEATS: u64 = 3;

/// The instance id of node `name` kept under `dir`, made on first use.
pub fn instance_id(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join("instances").join(format!("node-{name}"));
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!("{name}/{nanos}/{}", std::process::id());
    let id = hex::encode(&bulkhead_schemas::event::hash_bytes(seed.as_bytes())[..8]);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Why `reply` means another live instance holds `name` (None: this one may start).
pub fn held_elsewhere(reply: &BeatReply, name: &str, mine: &str) -> Option<String> {
    let hb = reply.heartbeat.as_ref()?;
    let live_for = hb.interval_ms.max(1000).saturating_mul(LIVE_BEATS);
    (hb.instance != mine && reply.age_ms < live_for).then(|| {
        format!(
            "node {name} is live elsewhere (instance {:?}, its last heartbeat {} ms ago): \
             stop that process first, or give this one another --name",
            hb.instance, reply.age_ms
        )
    })
}

/// Refuses when another live instance holds `name`; when the query API cannot be asked,
/// says so and lets the node start.
pub async fn check(bus: &Bus, name: &str, mine: &str) -> anyhow::Result<()> {
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        bus.client
            .request(subjects::api_node_beat(name), Vec::new().into()),
    )
    .await;
    let reply = match asked {
        Ok(Ok(m)) => serde_json::from_slice::<BeatReply>(&m.payload).unwrap_or_default(),
        Ok(Err(e)) => {
            warn!(node = %name, error = %e, "cannot ask the query API whether this name is live elsewhere; starting");
            return Ok(());
        }
        Err(_) => {
            warn!(node = %name, "the query API did not say in 5 s whether this name is live elsewhere; starting");
            return Ok(());
        }
    };
    match held_elsewhere(&reply, name, mine) {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(instance: &str, age_ms: u64) -> BeatReply {
        let hb = serde_json::from_value(serde_json::json!({
            "name": "n1",
            "capacity": {"memory_mb": 1, "cpu_millicores": 1, "slots": 1},
            "free": {"memory_mb": 1, "cpu_millicores": 1, "slots": 1},
            "runtime_classes": [], "runtime": "sim", "running": 0,
            "interval_ms": 200, "at": "now", "instance": instance
        }))
        .unwrap();
        BeatReply {
            heartbeat: Some(hb),
            age_ms,
        }
    }

    #[test]
    fn only_another_live_instance_holds_the_name() {
        assert!(held_elsewhere(&reply("other", 500), "n1", "me").is_some());
        assert!(
            held_elsewhere(&reply("me", 500), "n1", "me").is_none(),
            "a restart"
        );
        assert!(
            held_elsewhere(&reply("other", 3_500), "n1", "me").is_none(),
            "silent past three (at least 1 s) intervals"
        );
        assert!(held_elsewhere(&BeatReply::default(), "n1", "me").is_none());
    }

    #[test]
    fn the_id_is_kept_across_restarts() {
        let d = tempfile::tempdir().unwrap();
        let a = instance_id(d.path(), "n1").unwrap();
        assert_eq!(instance_id(d.path(), "n1").unwrap(), a);
        assert_ne!(instance_id(d.path(), "n2").unwrap(), a);
    }
}
