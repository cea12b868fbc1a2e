//! The policy in the log: reading the one in force (the sys events, verified as every
//! reader does), proposing a change and approving one (`bulkhead policy`), and the first
//! policy `up` writes (one admin, M = 1 of N = 1).

use async_nats::HeaderMap;
use bulkhead_actors::directory::Directory;
use bulkhead_actors::signing::{SIG_HEADER, Signer, seal_event, sign_policy};
use bulkhead_actors::verify::Verifier;
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::policy::{Policy, PolicyApproved, PolicyProposed};
use bulkhead_schemas::subjects;

use crate::audit::read_filtered;
use crate::bus::Bus;

/// The identities and the policy the log holds now, read as every reader reads them.
pub async fn directory(bus: &Bus) -> anyhow::Result<Directory> {
    let admins = bus.identity()?.creds.admins.clone();
    let mut verifier = Verifier::new(&admins);
    for raw in read_filtered(bus, subjects::EVT_SYS_ALL).await? {
        let _ = verifier.check(raw.raw());
    }
    Ok(verifier.directory)
}

async fn write(bus: &Bus, signer: &Signer, version: u64, body: EventBody) -> anyhow::Result<u64> {
    let name = format!("v{version}");
    let mut ev = Event::new("admin", &format!("policy/{name}"), None, body);
    let kind = ev.kind();
    let (payload, proof) = seal_event(signer, &mut ev);
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, proof.encode().as_str());
    h.insert(
        "Nats-Msg-Id",
        format!(
            "{kind}-{}",
            hex::encode(bulkhead_schemas::event::hash_bytes(&payload))
        )
        .as_str(),
    );
    let seq = bus
        .publish_stored(
            subjects::sys_event("policy", &name, kind),
            h,
            payload.into(),
        )
        .await
        .map_err(|f| anyhow::anyhow!("writing the policy's {kind}: {f}"))?;
    Ok(seq)
}

/// Proposes `policy` (which must be the next version, replacing the one in force) and
/// approves it as `signer`. Returns its hash.
pub async fn propose(bus: &Bus, signer: &Signer, policy: Policy) -> anyhow::Result<String> {
    let hash = policy.hash();
    let version = policy.version;
    let proposed = EventBody::PolicyProposed(PolicyProposed {
        policy,
        hash: hash.clone(),
    });
    write(bus, signer, version, proposed).await?;
    approve(bus, signer, version, &hash).await?;
    Ok(hash)
}

/// Approves the pending proposal `hash` of `version` as `signer`.
pub async fn approve(bus: &Bus, signer: &Signer, version: u64, hash: &str) -> anyhow::Result<()> {
    let approved = EventBody::PolicyApproved(PolicyApproved {
        version,
        hash: hash.to_owned(),
        sig: sign_policy(signer, hash),
    });
    write(bus, signer, version, approved).await?;
    Ok(())
}

/// Writes the first policy when the log has none: the anchor admins (1 of N), tenant
/// `default` internal, every other tenant untrusted. Returns whether it wrote it.
pub async fn ensure_first(bus: &Bus, signer: &Signer) -> anyhow::Result<bool> {
    let d = directory(bus).await?;
    if d.policy.current().version > 0 || d.policy.pending().next().is_some() {
        return Ok(false);
    }
    let admins = bus.identity()?.creds.admins.clone();
    propose(bus, signer, Policy::first(admins)).await?;
    Ok(true)
}
