//! The `signing` scenario: what signing and verifying the log costs on one core — signed
//! batches per second (one signature over a Merkle root), verifications per second, the
//! Merkle paths, and the bytes a signature adds to an event — beside the event's own size.

use std::time::Instant;

use bulkhead_actors::directory::Identity;
use bulkhead_actors::ports::log::Batch;
use bulkhead_actors::ports::log::WorkloadAppend;
use bulkhead_actors::signing::{Checked, Proof, Signer, root_of, sign_batch};
use bulkhead_actors::verify::{Raw, Verifier};
use bulkhead_schemas::event::{Accepted, Event, EventBody};
use bulkhead_schemas::identity::Role;

/// A typical `accepted` (the largest event a submission makes), of workload `default/w`
/// (the events of one append are one workload's).
fn accepted(i: usize) -> Event {
    let spec = serde_json::from_value(serde_json::json!({
        "id": "w", "image": "localhost/app:1", "memory_mb": 64, "cpu_millicores": 50
    }))
    .expect("spec");
    Event::new(
        "scheduler",
        "default/w",
        None,
        EventBody::Accepted(Accepted {
            spec,
            cmd_seq: i as u64,
            by: Default::default(),
            pending: None,
        }),
    )
}

/// A reader that knows `signer` as the scheduler.
fn reader(signer: &Signer) -> Verifier {
    let mut verifier = Verifier::new(&[]);
    verifier.directory.enroll(Identity {
        role: Role::Scheduler,
        name: "scheduler".into(),
        key: signer.public_key().into(),
        classes: Vec::new(),
        revoked_at: None,
        xkey: None,
    });
    verifier
}

pub fn run() -> anyhow::Result<()> {
    let signer = Signer::generate();
    println!("\n## signing and verifying, one core");
    // Single signatures and verifications: the floor of everything else.
    let n = 20_000;
    let msg = [7u8; 32];
    let t = Instant::now();
    let mut sigs = Vec::with_capacity(n);
    for _ in 0..n {
        sigs.push(sign_batch(&signer, &[msg]).remove(0));
    }
    let sign_rate = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for p in &sigs {
        let mut c = Checked::default(); // a fresh reader: no batch seen before
        c.verify(signer.public_key(), &msg, p)?;
    }
    let verify_rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "ed25519 over a batch root: {sign_rate:.0} signatures/s, {verify_rate:.0} verifications/s"
    );
    for size in [1usize, 16, 256, 1000] {
        let events: Vec<Event> = (0..size).map(accepted).collect();
        let mut append = WorkloadAppend::new("default/w", events);
        let sealed = append.seal(signer.public_key());
        let hashes: Vec<_> = sealed.iter().map(|s| s.hash).collect();
        let rounds = (20_000 / size).max(20);
        let t = Instant::now();
        let mut proofs = Vec::new();
        for _ in 0..rounds {
            proofs = sign_batch(&signer, &hashes);
        }
        let per_event_sign = t.elapsed().as_secs_f64() / (rounds * size) as f64;
        let header: usize = proofs.iter().map(|p| p.encode().len()).sum::<usize>() / size;
        let payload: usize = sealed.iter().map(|s| s.bytes.len()).sum::<usize>() / size;
        // A reader: every event verified against its path, the batch's signature once,
        // each path hashed up to a node of the batch's tree it knows already.
        let encoded: Vec<String> = proofs.iter().map(Proof::encode).collect();
        let decoded: Vec<Proof> = encoded
            .iter()
            .map(|e| Proof::decode(e))
            .collect::<Result<_, _>>()?;
        let t = Instant::now();
        for _ in 0..rounds {
            // A fresh reader each round: each batch's signature checked once per round.
            let mut checked = Checked::default();
            for (s, p) in sealed.iter().zip(&decoded) {
                checked.verify(signer.public_key(), &s.hash, p)?;
            }
        }
        let per_event_verify = t.elapsed().as_secs_f64() / (rounds * size) as f64;
        // Beside it, each path hashed all the way to the root (what a reader that
        // remembers only the roots it verified does).
        let t = Instant::now();
        for _ in 0..rounds {
            for (s, p) in sealed.iter().zip(&decoded) {
                std::hint::black_box(root_of(&s.hash, p)?);
            }
        }
        let per_event_root = t.elapsed().as_secs_f64() / (rounds * size) as f64;
        // The whole check a reader makes (parse, directory, proof, subject, authority,
        // limits), by a fresh reader each round (each batch's signature checked once); the
        // signer enrolled as the scheduler (a key the reader does not know is set aside
        // before any signature check).
        let readers: Vec<Verifier> = (0..rounds).map(|_| reader(&signer)).collect();
        let t = Instant::now();
        for mut verifier in readers {
            let mut batch = Batch::default();
            for (i, (s, e)) in sealed.iter().zip(&encoded).enumerate() {
                verifier.read(
                    Raw {
                        seq: i as u64 + 1,
                        subject: &s.subject,
                        payload: &s.bytes,
                        proof: Some(e),
                        stored_ms: bulkhead_schemas::now_ms(),
                    },
                    &mut batch,
                );
            }
            if let Some(a) = batch.set_aside.first() {
                anyhow::bail!("the reader refused the benchmark's own events: {a:?}");
            }
            std::hint::black_box(batch);
        }
        let per_event_read = t.elapsed().as_secs_f64() / (rounds * size) as f64;
        // Of it, the parse of the event's JSON alone.
        let t = Instant::now();
        for _ in 0..rounds {
            for s in &sealed {
                std::hint::black_box(Event::parse(&s.bytes)?);
            }
        }
        let per_event_parse = t.elapsed().as_secs_f64() / (rounds * size) as f64;
        println!(
            "batch of {size:>4}: sign {:.0} events/s, verify {:.0} events/s (each path to the root alone: {:.0}/s; \
             full reader check {:.0} events/s, of it the parse alone {:.0}/s); \
             event {payload} B + Bulkhead-Sig {header} B ({:.0}%)",
            1.0 / per_event_sign,
            1.0 / per_event_verify,
            1.0 / per_event_root,
            1.0 / per_event_read,
            1.0 / per_event_parse,
            100.0 * header as f64 / payload as f64
        );
    }
    Ok(())
}
