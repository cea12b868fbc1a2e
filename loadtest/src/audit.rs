//! The `audit` scenario: how fast `bulkhead audit verify` replays a log of N workloads
//! (accepted, scheduled, started each: signed, chained, enrolled writers) — read from a real
//! nats-server and checked, and the check alone — beside the running hash alone (what the
//! query API's checkpoints cost per message); and the size of a sealed secret.

use std::time::Instant;

use async_nats::HeaderMap;
use bulkhead::audit::{RawMsg, read_all, replay};
use bulkhead::natsd::Sync;
use bulkhead_actors::audit::RunningHash;
use bulkhead_actors::signing::{SIG_HEADER, Signer, sign_batch};
use bulkhead_schemas::event::{Accepted, Event, EventBody, Scheduled, Started};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::{RuntimeClass, subjects};

use crate::bench::Bench;

/// One workload's three events, sealed as `by` writes them: (subject, payload, hash).
pub(crate) fn workload(
    i: usize,
    scheduler: &Signer,
    node: &Signer,
) -> Vec<(String, Vec<u8>, [u8; 32], bool)> {
    let key = format!("default/w-{i}");
    let spec = serde_json::from_value(serde_json::json!({
        "id": format!("w-{i}"), "image": "localhost/app:1", "memory_mb": 64,
        "cpu_millicores": 50, "trust": "internal"
    }))
    .expect("spec");
    let mut out = Vec::new();
    let mut prev = None;
    let bodies = [
        EventBody::Accepted(Accepted {
            spec,
            cmd_seq: i as u64 + 1,
            by: Default::default(),
            pending: None,
        }),
        EventBody::Scheduled(Scheduled {
            replica: 0,
            node: "n1".into(),
            runtime_class: RuntimeClass::Runc,
            replaces: None,
        }),
        EventBody::Started(Started {
            replica: 0,
            node: "n1".into(),
            container: format!("c-{i}"),
            confinement: None,
        }),
    ];
    for body in bodies {
        let by_node = matches!(body, EventBody::Started(_));
        let signer = if by_node { node } else { scheduler };
        let mut ev = Event::new(
            if by_node { "node/n1" } else { "scheduler" },
            &key,
            prev.as_ref(),
            body,
        );
        ev.actor.key = signer.public_key().to_owned();
        let kind = ev.kind();
        let (bytes, hash) = ev.seal();
        prev = Some(hash);
        out.push((subjects::workload_event(&key, kind), bytes, hash, by_node));
    }
    out
}

/// `audit verify` on a log of N workloads; the running hash; a sealed secret's size.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100_000)]
    pub workloads: usize,
}

pub async fn run(Args { workloads }: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Default).await?;
    bench.enroll_nodes(&["n1".to_owned()]).await?;
    let data = &bench.cluster.data;
    let scheduler = data.creds(Role::Scheduler, "scheduler")?.signer()?;
    let node = data.creds(Role::Node, "n1")?.signer()?;
    let admin = bench.admin();
    println!("\n## audit: {workloads} workloads (3 events each) on a real nats-server");

    // Build and store the log: each writer signs its events of 500 workloads at once.
    let t = Instant::now();
    let mut stored = 0usize;
    for chunk in (0..workloads).collect::<Vec<_>>().chunks(500) {
        let events: Vec<_> = chunk
            .iter()
            .flat_map(|&i| workload(i, &scheduler, &node))
            .collect();
        let mut proofs = vec![String::new(); events.len()];
        for by_node in [false, true] {
            let idx: Vec<usize> = (0..events.len())
                .filter(|&k| events[k].3 == by_node)
                .collect();
            let hashes: Vec<_> = idx.iter().map(|&k| events[k].2).collect();
            let signer = if by_node { &node } else { &scheduler };
            for (k, p) in idx.iter().zip(sign_batch(signer, &hashes)) {
                proofs[*k] = p.encode();
            }
        }
        let mut acks = Vec::with_capacity(events.len());
        for ((subject, bytes, _, _), proof) in events.into_iter().zip(proofs) {
            let mut h = HeaderMap::new();
            h.insert(SIG_HEADER, proof.as_str());
            acks.push(
                admin
                    .js
                    .publish_with_headers(subject, h, bytes.into())
                    .await?,
            );
        }
        for a in acks {
            a.await?;
            stored += 1;
        }
    }
    println!(
        "stored {stored} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let admins = admin.identity()?.creds.admins.clone();
    let t = Instant::now();
    let (msgs, last) = read_all(admin).await?;
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = replay(&admins, &msgs, last, &[]);
    let check = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.first.is_none(),
        "the log should verify: {:?}",
        report.first
    );
    let n = msgs.len() as f64;
    println!(
        "audit verify: {} messages; read {:.0}/s ({read:.1} s), checked {:.0}/s ({check:.1} s), together {:.0} events/s",
        msgs.len(),
        n / read,
        n / check,
        n / (read + check)
    );
    let t = Instant::now();
    let mut running = RunningHash::default();
    for m in &msgs {
        running.add(m.seq, &m.subject, m.payload.as_bytes(), m.proof.as_deref());
    }
    let hash_rate = n / t.elapsed().as_secs_f64();
    println!(
        "running hash alone: {hash_rate:.0} messages/s; the API audits every message ({:.0}/s with the checks), \
         and writes one signed checkpoint per 60 s or 10,000 messages",
        n / check
    );
    let bytes: usize = msgs.iter().map(|m: &RawMsg| m.payload.len()).sum();
    println!("average event {} B", bytes / msgs.len().max(1));

    println!("\n## a sealed secret");
    let keys: Vec<String> = (0..3)
        .map(|_| bulkhead_actors::secrets::xkey_of(&Signer::generate()).public_key())
        .collect();
    for value in [32usize, 1024] {
        let v = "x".repeat(value);
        let sizes: Vec<String> = (1..=3)
            .map(|r| {
                let s = bulkhead_actors::secrets::seal(&v, &keys[..r]).expect("seals");
                format!("{r} recipient(s) {} B", s.len())
            })
            .collect();
        println!("a {value}-byte value sealed: {}", sizes.join(", "));
    }
    Ok(())
}
