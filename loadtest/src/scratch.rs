//! Where a scenario measures nats-server alone: a server of its own at `sync_interval:
//! always`, no authentication (nothing but the benchmark connects), and scratch streams
//! stored as the event log is (on file, taking atomic batches).

use std::path::Path;

use async_nats::jetstream::stream;
use bulkhead::bus::Bus;
use bulkhead::natsd::{NatsServer, Security, Sync};

/// A nats-server in `dir`, on loopback, syncing every write, with no authentication.
pub fn server(dir: &Path) -> anyhow::Result<NatsServer> {
    server_syncing(dir, Sync::Always)
}

/// The same, syncing as `sync` says.
pub fn server_syncing(dir: &Path, sync: Sync) -> anyhow::Result<NatsServer> {
    Ok(NatsServer::start(
        dir,
        "127.0.0.1",
        0,
        sync,
        &Security::InsecureNoAuth,
    )?)
}

/// A stream `name` of the subjects under `prefix`, on file and taking atomic batches, as
/// the event log is.
pub async fn stream(bus: &Bus, name: &str, prefix: &str) -> anyhow::Result<()> {
    bus.js
        .create_or_update_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await?;
    Ok(())
}
