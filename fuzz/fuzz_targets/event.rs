//! A message of the log: its payload and `Bulkhead-Sig` header through the readers' own
//! verifier and the projection, never a panic (whatever is wrong is set aside).
#![no_main]

use bulkhead_actors::ports::log::Batch;
use bulkhead_actors::projection::Projection;
use bulkhead_actors::verify::{Raw, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the subject, the second the proof, the rest the payload.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let subject = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let proof = parts
        .next()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let payload = parts.next().unwrap_or(data);
    let _ = bulkhead_schemas::Event::parse(payload);
    let mut verifier = Verifier::new(&[]);
    let mut batch = Batch::default();
    verifier.read(
        Raw {
            seq: 1,
            subject: &subject,
            payload,
            proof: proof.as_deref(),
            stored_ms: 1_800_000_000_000,
        },
        &mut batch,
    );
    let mut p = Projection::default();
    if let Ok(ev) = bulkhead_schemas::Event::parse(payload) {
        let hash = bulkhead_schemas::event::hash_bytes(payload);
        let _ = p.apply(1, hash, &ev);
    }
    p.logged(batch);
});
