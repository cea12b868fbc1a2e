//! Secrets on the wire: the schedulers' curve keys as their admin-signed enrolments (the
//! query API serves them on `bulkhead.api.<tenant>.sealing`), checked by the submitter
//! against the admins its credential names, and a spec's plain secrets sealed to them.

use bulkhead_actors::signing::{Checked, Context, Proof};
use bulkhead_schemas::event::{Event, EventBody, hash_bytes};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;
use serde::{Deserialize, Serialize};

use crate::audit::read_filtered;
use crate::bus::Bus;

/// One scheduler's enrolment, as stored, with its proof.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealingKey {
    pub event: String,
    pub proof: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SealingReply {
    pub keys: Vec<SealingKey>,
}

/// The live schedulers' latest enrolments in the log (the query API's answer).
pub async fn scheduler_enrolments(bus: &Bus) -> anyhow::Result<SealingReply> {
    let mut latest: std::collections::BTreeMap<String, Option<SealingKey>> = Default::default();
    for raw in read_filtered(bus, "bulkhead.evt.sys.scheduler.>").await? {
        if let Ok(ev) = Event::parse(raw.payload.as_bytes()) {
            let entry = match ev.body {
                EventBody::Enrolled(_) => raw.proof.clone().map(|proof| SealingKey {
                    event: raw.payload.clone(),
                    proof,
                }),
                _ => None,
            };
            latest.insert(ev.subject.clone(), entry);
        }
    }
    Ok(SealingReply {
        keys: latest.into_values().flatten().collect(),
    })
}

/// The curve keys to seal to: each enrolment in `reply` that an admin of `admins` signed,
/// of a scheduler, with a curve key. Errs when none is.
pub fn verified_keys(reply: &SealingReply, admins: &[String]) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    for k in &reply.keys {
        let Ok(ev) = Event::parse(k.event.as_bytes()) else {
            continue;
        };
        let EventBody::Enrolled(e) = &ev.body else {
            continue;
        };
        let signed = Proof::decode(&k.proof).ok().is_some_and(|p| {
            Checked::new(Context::Log)
                .verify(&ev.actor.key, &hash_bytes(k.event.as_bytes()), &p)
                .is_ok()
        });
        if signed
            && admins.contains(&ev.actor.key)
            && e.role == Role::Scheduler
            && let Some(x) = &e.xkey
        {
            keys.push(x.clone());
        }
    }
    anyhow::ensure!(
        !keys.is_empty(),
        "no scheduler key an admin of this credential signed: cannot seal secrets"
    );
    Ok(keys)
}

/// The schedulers' curve keys, asked of the query API and checked.
pub async fn scheduler_keys(bus: &Bus, tenant: &str) -> anyhow::Result<Vec<String>> {
    let reply = bus
        .client
        .request(subjects::api_sealing(tenant), Vec::new().into())
        .await
        .map_err(|e| anyhow::anyhow!("asking the query API for the schedulers' keys: {e}"))?;
    let reply: SealingReply = serde_json::from_slice(&reply.payload)?;
    verified_keys(&reply, &bus.identity()?.creds.admins)
}

/// A submission (JSON bytes) with each plain value of its `secrets` sealed to the
/// schedulers' keys; anything else is left as it is (admission judges it).
pub async fn seal_submission(bus: &Bus, tenant: &str, raw: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return Ok(raw);
    };
    let Some(secrets) = doc.get_mut("secrets").and_then(|s| s.as_object_mut()) else {
        return Ok(raw);
    };
    let plain = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|s| !bulkhead_actors::secrets::is_sealed(s))
    };
    if !secrets.values().any(plain) {
        return Ok(raw);
    }
    let keys = scheduler_keys(bus, tenant).await?;
    for v in secrets.values_mut() {
        if plain(v) {
            let sealed = bulkhead_actors::secrets::seal(v.as_str().unwrap_or_default(), &keys)?;
            *v = sealed.into();
        }
    }
    Ok(serde_json::to_vec(&doc)?)
}
