//! A lease in the `bulkhead-leases` KV bucket: one active holder, renewed well within the
//! bucket's TTL; when the holder stops renewing, the key expires and a standby takes it.
//! Its [`Fence`] says whether the lease is surely still this instance's: the log of an
//! active instance writes nothing once it is not, nor do its ops go out
//! ([`crate::bus::NatsLog::fenced`], [`crate::bus::NatsOps::fenced`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use bulkhead_actors::ports::{Cause, cause_msg};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::bus::{Bus, BusError};

pub struct Lease {
    /// Turns false when the lease is lost.
    pub held: watch::Receiver<bool>,
    /// Until when no other instance can hold it.
    pub fence: Fence,
    task: tokio::task::JoinHandle<()>,
}

/// Until when a lease is surely its holder's, on this machine's monotonic clock: the TTL
/// from when the last create or renewal that succeeded was *sent* (the server stored it
/// later, and its key expires a TTL after that, not before), less a tenth for clocks that
/// run at different rates. An instance whose process was not run for a while (stopped, its
/// machine paused) wakes past it at once, before its renewal task has learnt that the key
/// expired meanwhile and another instance took it.
#[derive(Clone, Debug)]
pub struct Fence(Arc<Mutex<Instant>>);

impl Fence {
    fn new(sent: Instant, ttl: Duration) -> Fence {
        Fence(Arc::new(Mutex::new(safe_until(sent, ttl))))
    }

    fn renewed(&self, sent: Instant, ttl: Duration) {
        let mut until = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *until = (*until).max(safe_until(sent, ttl));
    }

    /// Whether the lease is surely still this instance's.
    pub fn holds(&self) -> bool {
        Instant::now() < *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why this instance may not write or send now, if it may not.
    pub fn refusal(&self) -> Option<Cause> {
        (!self.holds()).then(|| cause_msg("this instance's lease ran out: another may be active"))
    }
}

fn safe_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - ttl / 10
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    /// Waits until `holder` holds `key` (through outages of the server too), then keeps
    /// renewing it every `ttl / 3`.
    pub async fn acquire(
        bus: &Bus,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, BusError> {
        let store = bus
            .bucket(bulkhead_schemas::subjects::LEASES_BUCKET)
            .await?;
        let value = Bytes::from(holder.to_owned());
        let every = ttl / 3;
        let mut waiting_logged = false;
        let mut pause = Duration::from_millis(100);
        let (mut revision, fence) = loop {
            let sent = Instant::now();
            match store.create(key, value.clone()).await {
                Ok(rev) => break (rev, Fence::new(sent, ttl)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if !waiting_logged {
                        let current = store.get(key).await.ok().flatten();
                        let who = current
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                            .unwrap_or_default();
                        info!(key, holder = %who, "standby: lease held by another instance");
                        waiting_logged = true;
                    }
                    tokio::time::sleep(every.min(Duration::from_millis(250))).await;
                }
                // The server is away (an outage, a restart): a standby waits it out and
                // tries again, with backoff, rather than exiting.
                Err(e) => {
                    warn!(key, error = %e, "cannot reach the lease; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        info!(key, holder, "lease acquired: active");
        let (tx, held) = watch::channel(true);
        let key = key.to_owned();
        let renewed = fence.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let sent = Instant::now();
                match store.update(&key, value.clone(), revision).await {
                    Ok(r) => {
                        revision = r;
                        renewed.renewed(sent, ttl);
                    }
                    Err(e) => {
                        warn!(key, error = %e, "lease lost");
                        let _ = tx.send(false);
                        return;
                    }
                }
            }
        });
        Ok(Lease { held, fence, task })
    }
}

/// Runs forever: standby until `holder` wins `key`, then `active` with the lease until it
/// returns (the lease was lost) or fails, and again. The scheduler and the failover serve so.
pub async fn serve<Fut>(
    bus: &Bus,
    key: &str,
    holder: &str,
    ttl: Duration,
    mut active: impl FnMut(Lease) -> Fut,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    loop {
        let lease = Lease::acquire(bus, key, holder, ttl).await?;
        match active(lease).await {
            Ok(()) => warn!(key, "lease lost; back to standby"),
            Err(e) => {
                error!(key, error = %e, "active instance failed; back to standby");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
