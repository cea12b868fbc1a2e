//! Reads the event log in stream order: first up to its current end (rebuilding a
//! projection), then live, in batches of whatever has arrived; or one subject filter of it,
//! event by event.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bulkhead_actors::aside::Aside;
use bulkhead_actors::ports::log::{Batch, Stored};
use bulkhead_actors::projection::Projection;
use bulkhead_schemas::event::{Event, hash_bytes};
use bulkhead_schemas::subjects;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::warn;

use crate::bus::{Bus, BusError};
use crate::tasks::AbortOnDrop;

/// A running reader of `bulkhead.evt.wl.>` from some sequence on. What it cannot read as
/// an event is set aside in the batch it delivers, never dropped in silence.
pub struct Follower {
    pub rx: mpsc::Receiver<Batch>,
    /// Sequence of the last workload event when the follower started: the end of the rebuild.
    pub end_at_start: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    pub async fn start(bus: &Bus, from_seq: u64) -> Result<Follower, BusError> {
        let err = |e: &dyn std::fmt::Display| BusError::Nats(format!("reading the event log: {e}"));
        let stream = bus
            .js
            .get_stream(subjects::EVT_STREAM)
            .await
            .map_err(|e| err(&e))?;
        let end_at_start = bus
            .last_event(subjects::EVT_WORKLOADS)
            .await?
            .map(|h| h.seq)
            .unwrap_or(0);
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subjects::EVT_WORKLOADS.into(),
                deliver_policy: if from_seq <= 1 {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: from_seq,
                    }
                },
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let messages = consumer.messages().await.map_err(|e| err(&e))?;
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let mut chunks = messages.ready_chunks(2048);
            while let Some(chunk) = chunks.next().await {
                let mut batch = Batch::default();
                for m in chunk {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(error = %e, "event log read error");
                            continue;
                        }
                    };
                    let subject = m.subject.as_str();
                    let Ok(info) = m.info() else {
                        let a = Aside::new(0, subject, "no_metadata", "no stream sequence");
                        batch.set_aside.push(a);
                        continue;
                    };
                    let seq = info.stream_sequence;
                    match Event::parse(&m.payload) {
                        Ok(event) => batch.events.push(Stored {
                            seq,
                            hash: hash_bytes(&m.payload),
                            event,
                        }),
                        Err(e) => batch
                            .set_aside
                            .push(Aside::new(seq, subject, "malformed", e)),
                    }
                }
                let empty = batch.events.is_empty() && batch.set_aside.is_empty();
                if !empty && tx.send(batch).await.is_err() {
                    return;
                }
            }
        });
        Ok(Follower {
            rx,
            end_at_start,
            task,
        })
    }

    /// A projection of the whole log as it is now, and the follower to go on from there.
    pub async fn rebuild(bus: &Bus) -> Result<(Projection, Follower), BusError> {
        let mut follower = Follower::start(bus, 1).await?;
        let mut projection = Projection::default();
        follower.catch_up(|batch| projection.logged(batch)).await;
        Ok((projection, follower))
    }

    /// Hands every batch from here on to `deliver`, in a task, until it returns false;
    /// the task ends when the guard is dropped.
    pub fn forward(
        mut self,
        mut deliver: impl FnMut(Batch) -> bool + Send + 'static,
    ) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(async move {
            while let Some(batch) = self.rx.recv().await {
                if !deliver(batch) {
                    return;
                }
            }
        }))
    }

    /// Feeds `apply` every batch up to the stream's end at start; returns how many
    /// events (and set-aside items) they held.
    pub async fn catch_up(&mut self, mut apply: impl FnMut(Batch)) -> usize {
        let mut n = 0;
        let mut last = 0;
        while last < self.end_at_start {
            let Some(batch) = self.rx.recv().await else {
                break;
            };
            let seqs = batch.events.iter().map(|s| s.seq);
            last = seqs
                .chain(batch.set_aside.iter().map(|a| a.seq))
                .fold(last, u64::max);
            n += batch.events.len() + batch.set_aside.len();
            apply(batch);
        }
        n
    }
}

/// Feeds `each` every event on `filter` (or, for what does not parse as one, why it is set
/// aside), from the start of the log, then live, until it returns false (the receiver is
/// gone).
pub async fn read_events(
    bus: &Bus,
    filter: &str,
    what: &str,
    mut each: impl FnMut(Result<Event, Aside>) -> bool,
) {
    let consumer = async {
        bus.js
            .get_stream(subjects::EVT_STREAM)
            .await?
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.into(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(anyhow::Error::from)
    };
    let mut messages = match consumer.await {
        Ok(c) => match c.messages().await {
            Ok(m) => m,
            Err(e) => return warn!(error = %e, "cannot read {what}"),
        },
        Err(e) => return warn!(error = %e, "cannot read {what}"),
    };
    while let Some(m) = messages.next().await {
        let Ok(m) = m else { continue };
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        let read =
            Event::parse(&m.payload).map_err(|e| Aside::new(seq, &m.subject, "malformed", e));
        if !each(read) {
            return;
        }
    }
}
