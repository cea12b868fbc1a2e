//! `bulkhead submit FILE|-`: the spec sent as `nats pub` would, its id printed, then the
//! workload followed to `running` (or its end) with a progress line. Its `Nats-Msg-Id` is the
//! id and a digest of the spec: the same spec sent again is dropped by the stream, a changed
//! one reaches admission (which rejects a taken id, under an id of its own, naming this
//! command: the CLI follows the tenant's rejections too, so it reports that).

use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;
use bulkhead_actors::aside::Aside;
use bulkhead_actors::ports::log::Stored;
use bulkhead_actors::projection::Projection;
use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::event::{Event, EventBody, hash_bytes};
use bulkhead_schemas::{ids, spec, subjects};
use futures::StreamExt;

use super::exit;
use crate::bus::Bus;

/// `bulkhead submit FILE|-`: sends the spec, prints the id, follows it to running or its end.
pub async fn submit(
    bus: &Bus,
    tenant: &str,
    file: &str,
    follow: bool,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let raw = if file == "-" {
        let mut s = Vec::new();
        std::io::stdin()
            .read_to_end(&mut s)
            .context("reading the spec from stdin")?;
        s
    } else {
        std::fs::read(file).with_context(|| format!("reading {file}"))?
    };
    // Plain secrets are sealed here, to the schedulers' keys: only sealed values leave.
    let raw = crate::sealing::seal_submission(bus, tenant, raw).await?;
    let mut spec = match spec::parse_submission(&raw) {
        Ok(s) => s,
        Err(r) => {
            let why = r.to_string();
            let why = why.strip_prefix("invalid workload spec: ").unwrap_or(&why);
            eprintln!("invalid workload spec: {why}");
            return Ok(exit::REJECTED);
        }
    };
    let id = spec.id.get_or_insert_with(ids::new_workload_id).clone();
    let key = subjects::workload_key(tenant, &id);
    // Following starts before the submission, so no event is missed (a tenant reads its
    // events as they are stored; it has no JetStream of its own).
    let events = if follow {
        let own = bus
            .client
            .subscribe(subjects::workload_events(&key))
            .await?;
        let rejections = bus
            .client
            .subscribe(format!("bulkhead.evt.{tenant}.wl.*.rejected"))
            .await?;
        Some(futures::stream::select(own, rejections))
    } else {
        None
    };
    let payload = serde_json::to_vec(&spec)?;
    let mut headers = HeaderMap::new();
    // The id and the spec's digest: resubmitting the same spec is idempotent, and a changed
    // one is not swallowed by the stream's duplicate window (admission decides it).
    let msg_id = format!("{id}.{}", &hex::encode(hash_bytes(&payload))[..16]);
    headers.insert("Nats-Msg-Id", msg_id.as_str());
    let span = tracing::info_span!("submit", workload = %id);
    if let Some(tp) = bulkhead_actors::trace::traceparent(&span) {
        headers.insert("traceparent", tp.as_str());
    }
    let ack = super::send_command(bus, subjects::cmd(tenant, "submit"), headers, payload)
        .await
        .context("the command stream did not acknowledge the submission (is the system set up? run `bulkhead up`)")?;
    println!("{id}");
    if ack.duplicate {
        eprintln!(
            "(already submitted: same id within the deduplication window; `bulkhead get {id}` shows it)"
        );
        return Ok(exit::OK);
    }
    match events {
        Some(events) => follow_workload(events, &key, ack.sequence, timeout).await,
        None => Ok(exit::OK),
    }
}

/// Follows one workload's events (from `messages`, a subscription made before it was
/// submitted) until it runs or ends; prints a progress line. `key` is the workload's key
/// (`tenant/id`).
async fn follow_workload(
    mut messages: impl futures::Stream<Item = async_nats::Message> + Unpin,
    key: &str,
    cmd_seq: u64,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let id = subjects::split_key(key).map_or(key, |(_, id)| id);
    let mut seq = 0;
    let mut p = Projection::default();
    // The progress line is redrawn in place on a terminal (ANSI), else one line each.
    let tty = crate::telemetry::colour();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let m = match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => anyhow::bail!("event stream ended"),
            Err(_) => {
                let state = p
                    .get(key)
                    .map(|w| w.state().to_string())
                    .unwrap_or_else(|| "not yet admitted".into());
                eprintln!("\ntimed out after {timeout:?}; {id} is {state}");
                return Ok(exit::TIMEOUT);
            }
        };
        // The order they were stored in; the log's own sequence is the server's business.
        seq += 1;
        let ev = match Event::parse(&m.payload) {
            Ok(ev) => ev,
            Err(e) => {
                p.set_aside
                    .record(Aside::new(seq, &m.subject, "malformed", e));
                continue;
            }
        };
        let kind = ev.kind();
        if subjects::workload_of(&m.subject).as_deref() != Some(key) {
            // Another workload's rejection: this command's, under an id of its own, when
            // the id it names was taken.
            if let EventBody::Rejected(r) = &ev.body
                && r.cmd_seq == cmd_seq
            {
                eprintln!("{id}: rejected: {}", r.rejection.reason);
                return Ok(exit::REJECTED);
            }
            continue;
        }
        p.ingest(&Stored {
            seq,
            hash: hash_bytes(&m.payload),
            event: ev,
        });
        let Some(w) = p.get(key) else { continue };
        let state = w.state();
        let running = w
            .replicas
            .iter()
            .filter(|r| r.state == WorkloadState::Running)
            .count();
        let line = format!(
            "{id}: {state} ({running}/{} running) after {kind}",
            w.replicas.len(),
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
        let done = match state {
            WorkloadState::Running | WorkloadState::Succeeded => Some(exit::OK),
            WorkloadState::Rejected => Some(exit::REJECTED),
            WorkloadState::Failed | WorkloadState::Lost | WorkloadState::Stopped => {
                Some(exit::FAILED)
            }
            _ => None,
        };
        if let Some(code) = done {
            if tty {
                eprintln!();
            }
            if let Some(reason) = w
                .reason
                .as_deref()
                .or_else(|| w.replicas.iter().find_map(|r| r.reason.as_deref()))
            {
                eprintln!("reason: {reason}");
            }
            return Ok(code);
        }
        if let (WorkloadState::Pending, Some(reason)) = (state, w.reason.as_deref()) {
            eprintln!("\npending: {reason}");
        }
    }
}
