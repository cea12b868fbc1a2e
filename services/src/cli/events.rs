//! `bulkhead events`: the log, one line per event (or as stored), filtered by workload
//! and type; followed, or (`--no-follow`, an admin's) printed from its start and done.

use async_nats::jetstream::consumer::DeliverPolicy;
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;
use futures::StreamExt;

use super::exit;
use crate::bus::Bus;

/// `bulkhead events`: follows the log, one line per event (or raw JSON).
pub async fn events(
    bus: &Bus,
    tenant: &str,
    workload: Option<&str>,
    types: &[String],
    from_start: bool,
    no_follow: bool,
    json: bool,
) -> anyhow::Result<i32> {
    for t in types {
        anyhow::ensure!(
            EventBody::KINDS.contains(&t.as_str()),
            "unknown event type {t}; known: {}",
            EventBody::KINDS.join(", ")
        );
    }
    // A tenant reads its own events; an admin the whole log.
    let admin = bus.identity()?.creds.role == Role::Admin;
    let filter = match workload {
        Some(id) => subjects::workload_events(&subjects::workload_key(tenant, id)),
        None if admin => subjects::EVT_ALL.to_owned(),
        None => subjects::tenant_events(tenant),
    };
    // An admin reads the stream (from its start, if asked); a tenant, which has no
    // JetStream of its own, the events as they are stored.
    let mut messages: futures::stream::BoxStream<'static, (String, bytes::Bytes, u64, u64)> =
        if admin {
            let deliver = if from_start || no_follow {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            };
            let pulled = super::log_consumer(bus, filter, deliver).await?;
            pulled
                .filter_map(|m| async move {
                    let m = m.ok()?;
                    let (seq, pending) = m
                        .info()
                        .map(|i| (i.stream_sequence, i.pending))
                        .unwrap_or_default();
                    Some((m.subject.to_string(), m.payload.clone(), seq, pending))
                })
                .boxed()
        } else {
            anyhow::ensure!(
                !from_start && !no_follow,
                "a tenant follows its events as they are stored (it has no history of its own); \
             `bulkhead get ID` and `bulkhead list` show where its workloads are"
            );
            let sub = bus.client.subscribe(filter).await?;
            sub.map(|m| (m.subject.to_string(), m.payload, 0, 1))
                .boxed()
        };
    loop {
        let next = if no_follow {
            // The history is done when nothing more comes: the last message said none is
            // pending, or none matched at all.
            match tokio::time::timeout(std::time::Duration::from_secs(2), messages.next()).await {
                Ok(m) => m,
                Err(_) => break,
            }
        } else {
            messages.next().await
        };
        let Some((subject, payload, seq, pending)) = next else {
            break;
        };
        let last = no_follow && pending == 0;
        print_event(&subject, &payload, seq, types, json);
        if last {
            break;
        }
    }
    Ok(exit::OK)
}

/// Prints one event (unless its type is filtered out): a line, or as stored.
fn print_event(subject: &str, payload: &[u8], seq: u64, types: &[String], json: bool) {
    let kind = subject.rsplit('.').next().unwrap_or_default();
    if !types.is_empty() && !types.iter().any(|t| t == kind) {
        return;
    }
    if json {
        println!("{}", String::from_utf8_lossy(payload));
        return;
    }
    match Event::parse(payload) {
        Ok(ev) => {
            let body = serde_json::to_value(&ev.body)
                .ok()
                .map(|v| v["body"].to_string())
                .unwrap_or_default();
            println!(
                "{seq:>8} {} {:<17} {:<38} {} {body}",
                ev.at,
                ev.kind(),
                ev.subject,
                ev.actor.service
            );
        }
        Err(e) => println!("{seq:>8} (malformed event on {subject}: {e})"),
    }
}
