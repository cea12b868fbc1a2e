//! What arrives on a node's ops subject: decoded, checked against the scheduler's signature
//! and certificate, and each op against admission's limits, never a panic.
#![no_main]

use bulkhead_actors::node::limits::refuses;
use bulkhead_actors::node::trust::OpsTrust;
use bulkhead_schemas::NodeOps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Headers first (signature, certificate), one a line; then the payload.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let sig = parts
        .next()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let cert = parts
        .next()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let payload = parts.next().unwrap_or(data);
    let mut trust = OpsTrust::new("n1", vec!["UADMIN".into()]);
    let _ = trust.check(payload, sig.as_deref(), cert.as_deref());
    if let Ok(ops) = serde_json::from_slice::<NodeOps>(payload) {
        for op in &ops.ops {
            let _ = refuses(op);
        }
    }
});
