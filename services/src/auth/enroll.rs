//! The book written into the log: every identity's enrolment (or revocation) as an event an
//! admin signs (`bulkhead.evt.sys.<role>.<name>.enrolled|revoked`), so that every reader
//! learns who may write what from the log itself, in order. Idempotent: what the log says
//! already is not written again.

use async_nats::HeaderMap;
use bulkhead_actors::signing::{SIG_HEADER, Signer, seal_event};
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::identity::{Enrolled, Revoked};
use bulkhead_schemas::subjects;

use super::book::{Book, Entry};
use crate::bus::{Bus, BusError};

/// The event that says what `e` is now.
fn event_of(e: &Entry) -> Event {
    let body = if e.revoked {
        EventBody::Revoked(Revoked {
            role: e.role,
            name: e.name.clone(),
            key: e.key.clone(),
        })
    } else {
        EventBody::Enrolled(Enrolled {
            role: e.role,
            name: e.name.clone(),
            key: e.key.clone(),
            classes: e.classes.clone(),
        })
    };
    Event::new("admin", &format!("{}/{}", e.role, e.name), None, body)
}

/// Writes what the log does not say yet of the book's identities (the latest entry of
/// each name, and the revocation of every key replaced since). Returns how many events.
pub async fn publish(bus: &Bus, admin: &Signer, book: &Book) -> Result<usize, BusError> {
    let mut written = 0;
    for e in &book.identities {
        if e.role == bulkhead_schemas::identity::Role::Admin {
            continue; // admins are every reader's anchor, not an event
        }
        let ev = event_of(e);
        let kind = ev.kind();
        let subject = subjects::sys_event(e.role.as_str(), &e.name, kind);
        if said(bus, &e.name, e, &subject).await? {
            continue;
        }
        let mut ev = ev;
        let (payload, proof) = seal_event(admin, &mut ev);
        let mut h = HeaderMap::new();
        h.insert(SIG_HEADER, proof.encode().as_str());
        h.insert("Nats-Msg-Id", format!("{kind}-{}", e.key).as_str());
        bus.publish_stored(subject, h, payload.into())
            .await
            .map_err(|f| BusError::Nats(format!("writing {}'s {kind}: {f}", e.name)))?;
        written += 1;
    }
    Ok(written)
}

/// Whether the log's last event about `e`'s name already says what `e` says.
async fn said(bus: &Bus, name: &str, e: &Entry, _subject: &str) -> Result<bool, BusError> {
    let any = subjects::sys_event(e.role.as_str(), name, "*");
    let Some((payload, _)) = bus.last_message(&any).await? else {
        // Nothing yet: a revoked key the log never heard of needs no revocation.
        return Ok(e.revoked);
    };
    let Ok(last) = Event::parse(&payload) else {
        return Ok(false);
    };
    Ok(match (&last.body, e.revoked) {
        (EventBody::Enrolled(en), false) => en.key == e.key,
        (EventBody::Revoked(r), true) => r.key == e.key,
        // A revoked key that was replaced: its name's last event is the new enrolment.
        (EventBody::Enrolled(en), true) => en.key != e.key,
        _ => false,
    })
}
