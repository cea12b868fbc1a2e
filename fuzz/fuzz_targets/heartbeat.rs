//! A heartbeat from the nodes bucket: decoded, checked against the limits every reader
//! applies, and through the one silence rule, never a panic (intervals and capacities are a
//! node's to claim, not to overflow with; the rule is also fed what the limits refuse).
#![no_main]

use bulkhead_actors::liveness::NodeWatch;
use bulkhead_schemas::NodeHeartbeat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hb) = serde_json::from_slice::<NodeHeartbeat>(data) {
        let _ = bulkhead_actors::node::limits::refuses_heartbeat(&hb);
        let mut w = NodeWatch::default();
        w.beat(&hb.name, u64::MAX - 1, hb.interval_ms);
        w.beat(&hb.name, 0, hb.interval_ms);
        let _ = w.silent(u64::MAX, hb.interval_ms);
        let _ = w.silent(0, u64::MAX);
        let _ = hb.capacity.fits_in(&hb.capacity);
        // The scheduler's side: an enrolled node's heartbeat into the cluster it places on.
        let mut core = bulkhead_actors::scheduler::SchedulerCore::default();
        core.directory.enroll(bulkhead_actors::directory::Identity {
            role: bulkhead_schemas::identity::Role::Node,
            name: hb.name.clone(),
            key: "UNODE".into(),
            classes: hb.runtime_classes.clone(),
            revoked_at: None,
            xkey: None,
        });
        let _ = core.heartbeat(&hb, 1);
        let _ = core.heartbeat(&hb, u64::MAX);
    }
});
