//! The steady phase hop by hop: when the log stored each workload's events (the server's
//! `Nats-Time-Stamp`, which the tenants' feed carries), against when the workload was
//! submitted and when its `started` was heard, all on this machine's wall clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bulkhead::bus::Bus;
use bulkhead_schemas::{NodeOp, NodeOps, subjects};
use futures::StreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::burst::{id_of, stored_events};
use crate::results::pct_ms;
use bulkhead::tasks::AbortOnDrop;

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Per workload and event kind: when it was stored and when it was heard, ns.
type Stored = HashMap<(String, String), (i128, i128)>;

/// Watches the feed for the events of workloads whose id starts with `prefix`.
pub struct Hops {
    stored: Arc<Mutex<Stored>>,
    _watch: AbortOnDrop,
}

impl Hops {
    pub async fn watch(bus: &Bus, prefix: &'static str) -> anyhow::Result<Hops> {
        let mut sub = bus.client.subscribe(stored_events("*")).await?;
        let stored: Arc<Mutex<Stored>> = Arc::default();
        let s = stored.clone();
        let watch = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let heard = now_ns();
                let Some(id) = id_of(&m.subject).filter(|id| id.starts_with(prefix)) else {
                    continue;
                };
                let kind = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
                let at = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Time-Stamp"))
                    .and_then(|v| OffsetDateTime::parse(v.as_str(), &Rfc3339).ok());
                if let Some(at) = at {
                    let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
                    g.insert((id, kind), (at.unix_timestamp_nanos(), heard));
                }
            }
        });
        Ok(Hops {
            stored,
            _watch: AbortOnDrop(watch),
        })
    }

    /// Each hop's p50 / p99 over the workloads submitted at `submitted` (ns) whose three
    /// events were all heard and whose start op was stored (`ops`, by workload id).
    pub fn report(&self, submitted: &[(String, i128)], ops: &HashMap<String, i128>) -> String {
        let g = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let at = |id: &str, kind: &str| g.get(&(id.to_owned(), kind.to_owned())).copied();
        let mut hops: [Vec<Duration>; 5] = Default::default();
        for (id, t) in submitted {
            let (Some(a), Some(s), Some(o), Some(r)) = (
                at(id, "accepted"),
                at(id, "scheduled"),
                ops.get(id).copied(),
                at(id, "started"),
            ) else {
                continue;
            };
            let spans = [(*t, a.0), (a.0, s.0), (s.0, o), (o, r.0), (r.0, r.1)];
            for (hop, (from, to)) in hops.iter_mut().zip(spans) {
                hop.push(Duration::from_nanos((to - from).max(0) as u64));
            }
        }
        let cells: Vec<String> = hops
            .iter_mut()
            .zip([
                "submit → accepted stored",
                "→ scheduled stored",
                "→ its start op stored",
                "→ started stored",
                "→ started heard",
            ])
            .map(|(v, name)| {
                v.sort();
                format!("{name} {:.1} / {:.1}", pct_ms(v, 0.5), pct_ms(v, 0.99))
            })
            .collect();
        format!(
            "  by hop, stored times from the log (p50 / p99 ms, {} workloads): {}",
            hops[0].len(),
            cells.join(", ")
        )
    }
}

/// When each start op of a workload whose id starts with `prefix` was stored, by workload
/// id: the ops stream read from `from_seq` to its end.
pub async fn ops_stored(
    bus: &Bus,
    from_seq: u64,
    prefix: &str,
) -> anyhow::Result<HashMap<String, i128>> {
    let stream = bus.js.get_stream(subjects::OPS_STREAM).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from_seq.max(1),
            },
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer.messages().await?;
    let mut at = HashMap::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), msgs.next()).await;
        let Ok(Some(Ok(m))) = next else { break };
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (stored, pending) = (info.published.unix_timestamp_nanos(), info.pending);
        if let Ok(ops) = serde_json::from_slice::<NodeOps>(&m.payload) {
            for op in ops.ops {
                if let NodeOp::Start { workload, .. } = op {
                    let id = subjects::split_key(&workload)
                        .map_or(workload.clone(), |(_, id)| id.to_owned());
                    if id.starts_with(prefix) {
                        at.insert(id, stored);
                    }
                }
            }
        }
        if pending == 0 {
            break;
        }
    }
    Ok(at)
}
