//! The book written into the log: every identity's enrolment (or revocation) as an event an
//! admin signs (`bulkhead.evt.sys.<role>.<name>.enrolled|revoked`), so that every reader
//! learns who may write what from the log itself, in order. Idempotent: what the log says
//! already is not written again.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, push};
use bulkhead_actors::signing::{SIG_HEADER, Signer, seal_event};
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::identity::{Enrolled, Revoked, Role};
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
            xkey: e.xkey.clone(),
        })
    };
    Event::new("admin", &format!("{}/{}", e.role, e.name), None, body)
}

/// How long a node has to acknowledge an ops message before it is redelivered (a node
/// tells JetStream it is still at work every 10 s).
const NODE_ACK_WAIT: Duration = Duration::from_secs(30);
/// Ops a node may hold unacknowledged: those queued before its view of the log came wait
/// unacknowledged until then.
const NODE_MAX_ACK_PENDING: i64 = 100_000;

/// Makes (or updates) the durable ops consumer of each of `nodes`: a push consumer
/// delivering to `bulkhead.deliver.<node>`; a node may only receive from and ack on it,
/// never create one.
pub async fn node_consumers(bus: &Bus, nodes: &[&str]) -> Result<(), BusError> {
    let setup = |e: &dyn std::fmt::Display| BusError::Setup {
        what: "the nodes' ops consumers".into(),
        msg: e.to_string(),
    };
    let stream = bus
        .js
        .get_stream(subjects::OPS_STREAM)
        .await
        .map_err(|e| setup(&e))?;
    for node in nodes {
        let durable = subjects::node_consumer(node);
        let config = push::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!("ops of node {node}")),
            deliver_subject: subjects::node_deliver(node),
            filter_subject: subjects::node_ops(node),
            ack_policy: AckPolicy::Explicit,
            ack_wait: NODE_ACK_WAIT,
            max_deliver: crate::bus::redeliver::MAX_DELIVER,
            max_ack_pending: NODE_MAX_ACK_PENDING,
            ..Default::default()
        };
        if stream.create_consumer(config.clone()).await.is_ok() {
            continue;
        }
        let info = stream.consumer_info(&durable).await.ok();
        if let Some(info) = &info
            && same_but_start(&info.config, &config)
        {
            continue; // made again earlier, from where it stood: kept
        }
        // One made otherwise (by an earlier build): made again from where it stands, so
        // that its node neither misses an op it has not acknowledged nor takes again one
        // it has (an ack deletes nothing from the stream).
        let from = info.map_or(1, |i| i.ack_floor.stream_sequence + 1);
        let _ = stream.delete_consumer(&durable).await;
        let config = push::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..config
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| setup(&e))?;
    }
    Ok(())
}

/// Whether the consumer `have` is `want` but for where it began delivering (one made again
/// from its ack floor differs from the setup's only there).
fn same_but_start(have: &consumer::Config, want: &push::Config) -> bool {
    have.deliver_subject.as_deref() == Some(want.deliver_subject.as_str())
        && have.filter_subject == want.filter_subject
        && have.ack_policy == want.ack_policy
        && have.ack_wait == want.ack_wait
        && have.max_deliver == want.max_deliver
        && have.max_ack_pending == want.max_ack_pending
}

/// Writes what the log does not say yet of the book's identities (the latest entry of
/// each name, and the revocation of every key replaced since). Returns how many events.
pub async fn publish(bus: &Bus, admin: &Signer, book: &Book) -> Result<usize, BusError> {
    let mut written = 0;
    for e in &book.identities {
        if e.role == Role::Admin {
            continue; // admins are every reader's anchor, not an event
        }
        let ev = event_of(e);
        let kind = ev.kind();
        let subject = subjects::sys_event(e.role.as_str(), &e.name, kind);
        if said(bus, e).await? {
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
async fn said(bus: &Bus, e: &Entry) -> Result<bool, BusError> {
    let any = subjects::sys_event(e.role.as_str(), &e.name, "*");
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
