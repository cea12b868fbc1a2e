//! A lease in the `bulkhead-leases` KV bucket: one active holder, renewed well within the
//! bucket's TTL; when the holder stops renewing, the key expires and a standby takes it.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::bus::{Bus, BusError};

pub struct Lease {
    /// Turns false when the lease is lost.
    pub held: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
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
        let mut revision = loop {
            match store.create(key, value.clone()).await {
                Ok(rev) => break rev,
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
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.update(&key, value.clone(), revision).await {
                    Ok(r) => revision = r,
                    Err(e) => {
                        warn!(key, error = %e, "lease lost");
                        let _ = tx.send(false);
                        return;
                    }
                }
            }
        });
        Ok(Lease { held, task })
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
