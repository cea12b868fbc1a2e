//! The NATS/JetStream adapter: the connection, the streams and buckets (created
//! idempotently), and reads of the log's heads.
//!
//! - [`publish`]: single and atomic-batch publishes, with typed failures;
//! - [`log`]: the event log port (`NatsLog`);
//! - [`ops`]: the ops and heartbeat ports (`NatsOps`, `KvHeartbeat`);
//! - [`node_watch`]: the watch of the nodes' heartbeats, each handed on once, and when the
//!   watcher is deaf to them;
//! - [`redeliver`]: every durable consumer's bound on redelivery.

pub mod log;
pub mod node_watch;
pub mod ops;
pub mod publish;
pub mod redeliver;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bulkhead_actors::signing::Signer;
use bytes::Bytes;
use futures::StreamExt;

use crate::auth::Credential;
use bulkhead_actors::projection::Head;
use bulkhead_schemas::event::hash_bytes;
use bulkhead_schemas::subjects;

use crate::follow::{FORMAT, FORMAT_KEY};

pub use log::NatsLog;
pub use ops::{KvHeartbeat, NatsOps, OPS_PER_MESSAGE};
pub use publish::{ATOMIC_FROM, MAX_BATCH, PublishFailure, expect_last_subject_seq};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The root cause only (the client's errors repeat it at every layer), and what to do.
    #[error(
        "cannot reach NATS at {url}: {cause} (is `bulkhead up` running, and --nats pointing at \
         its server?)"
    )]
    Connect { url: String, cause: String },
    #[error("setting up {what}: {msg}")]
    Setup { what: String, msg: String },
    #[error("{0}")]
    Nats(String),
    #[error("this connection has no identity to sign with (connect with a credential)")]
    NoIdentity,
}

/// Attempts after an authorization failure or a connection closed while it was made (both
/// happen during a server reload), 0.1 s, 0.2 s, …
const AUTH_RETRIES: usize = 6;

/// How long a stream or bucket setup made may be missing before a service gives up (a
/// server reloading its accounts answers "does not exist" for a moment).
const OPEN_PATIENCE: Duration = Duration::from_secs(15);

/// `open` tried again until it works or [`OPEN_PATIENCE`] has passed: streams, buckets and
/// consumers a server reloading its accounts answers "does not exist" for a moment.
pub(crate) async fn opening<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    name: &str,
    open: impl Fn() -> F,
) -> Result<T, BusError> {
    let deadline = tokio::time::Instant::now() + OPEN_PATIENCE;
    let mut pause = Duration::from_millis(50);
    loop {
        match open().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(name, error = %e, "opening {name}; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(BusError::Nats(format!("opening {name}: {e}"))),
        }
    }
}

/// Consumers a stream may have (nats-server's own default is 1,000 per stream).
pub const MAX_CONSUMERS: i32 = 1_000_000;

/// Connection plus JetStream context, and the identity it connected as.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    identity: Option<Arc<Identity>>,
}

/// Who a connection is: its credential, and the key it signs with.
pub struct Identity {
    pub creds: Credential,
    pub signer: Signer,
}

/// Stream and bucket settings that differ between production and tests.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Window within which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// Heartbeat entries older than this vanish from the nodes bucket: at least three of
    /// the longest interval a node may announce (`node::limits::HEARTBEAT_MS`), so a live
    /// node always has one.
    pub node_ttl: Duration,
    /// Lifetime of the scheduler lease unless renewed.
    pub lease_ttl: Duration,
    /// A scan worker silent this long leaves the hash ring.
    pub scanner_ttl: Duration,
    /// Commands waiting for the scheduler, at most: past this a publish is refused (the
    /// command stream is a work queue: handled commands leave it).
    pub cmd_backlog: i64,
    /// The same bound in bytes.
    pub cmd_backlog_bytes: i64,
    /// How long an ops message stays in its stream. An ack deletes nothing (a work queue's
    /// delete asks every node's consumer whether it still wants the message: O(nodes) per
    /// op); ops leave by age. Past 25 minutes a node's consumer gives an op up anyway (30 s
    /// ack wait × 50 deliveries).
    pub ops_ttl: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            duplicate_window: Duration::from_secs(600),
            node_ttl: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(3),
            scanner_ttl: Duration::from_secs(6),
            cmd_backlog: 1_000_000,
            cmd_backlog_bytes: 1 << 30,
            ops_ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// The CA certificate `pem` in a file the TLS client can read (named by its hash, in the
/// temp directory: it is public).
fn ca_file(pem: &str) -> std::io::Result<std::path::PathBuf> {
    let name = format!(
        "bulkhead-ca-{}.pem",
        &hex::encode(hash_bytes(pem.as_bytes()))[..16]
    );
    let path = std::env::temp_dir().join(name);
    if !path.exists() {
        std::fs::write(&path, pem)?;
    }
    Ok(path)
}

impl Bus {
    /// A connection with no identity: it can neither sign nor (where the server checks)
    /// authenticate. For tools and tests that only look.
    pub async fn connect(url: &str, name: &str) -> Result<Bus, BusError> {
        let options = async_nats::ConnectOptions::new().name(name);
        Bus::open(url, options, None).await
    }

    /// A connection as `creds`' identity: authenticated with its nkey, receiving replies on
    /// its own inbox prefix, signing with its key.
    pub async fn connect_as(url: &str, creds: &Credential) -> Result<Bus, BusError> {
        let signer = creds.signer().map_err(|e| BusError::Setup {
            what: format!("{} {}'s key", creds.role, creds.name),
            msg: e.to_string(),
        })?;
        let mut options = async_nats::ConnectOptions::with_nkey(creds.seed.clone())
            .name(format!("bulkhead-{}-{}", creds.role, creds.name))
            .custom_inbox_prefix(creds.inbox());
        if let Some(ca) = &creds.ca {
            let path = ca_file(ca).map_err(|e| BusError::Setup {
                what: "the CA certificate".into(),
                msg: e.to_string(),
            })?;
            options = options.add_root_certificates(path).require_tls(true);
        }
        let identity = Identity {
            creds: creds.clone(),
            signer,
        };
        Bus::open(url, options, Some(Arc::new(identity))).await
    }

    async fn open(
        url: &str,
        options: async_nats::ConnectOptions,
        identity: Option<Arc<Identity>>,
    ) -> Result<Bus, BusError> {
        let options = options.connection_timeout(Duration::from_secs(3));
        // nats-server refuses every login while it reloads its users (an identity added
        // or revoked): an authorization failure is tried again for a little while.
        let mut attempt = 0;
        let client = loop {
            match options.clone().connect(url).await {
                Ok(c) => break c,
                // A server reloading its users refuses logins, or closes a connection
                // half made ("Problem registering with account"), for a moment.
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::Io
                    ) && attempt < AUTH_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                }
                Err(e) => {
                    return Err(BusError::Connect {
                        url: url.to_owned(),
                        cause: root_cause(&e),
                    });
                }
            }
        };
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            identity,
        })
    }

    /// The identity this connection signs as.
    pub fn identity(&self) -> Result<&Identity, BusError> {
        self.identity.as_deref().ok_or(BusError::NoIdentity)
    }

    /// The stream `name`, which setup made. While the server reloads its accounts (an
    /// enrolment, a revocation) JetStream answers "does not exist" for a moment, so a
    /// service starting then retries for a while before it gives up.
    pub async fn stream(&self, name: &str) -> Result<stream::Stream, BusError> {
        opening(name, || self.js.get_stream(name)).await
    }

    /// The KV bucket `name`, which setup made; retried as [`Bus::stream`] is.
    pub async fn bucket(&self, name: &str) -> Result<kv::Store, BusError> {
        opening(name, || self.js.get_key_value(name)).await
    }

    /// Creates or updates every stream and bucket; safe to run at each start-up.
    pub async fn ensure(&self, topo: &Topology) -> Result<(), BusError> {
        let setup = |what: &str| {
            let what = what.to_owned();
            move |e: &dyn std::fmt::Display| BusError::Setup {
                what: what.clone(),
                msg: e.to_string(),
            }
        };
        let streams = [
            stream::Config {
                name: subjects::CMD_STREAM.into(),
                description: Some("bulkhead commands: submit, stop, scale, drain, undrain".into()),
                subjects: subjects::CMD_SUBJECTS.map(String::from).into(),
                storage: stream::StorageType::File,
                duplicate_window: topo.duplicate_window,
                // Limits, not a work queue: a work queue removes each command as it is
                // acknowledged, one fsync'd delete a command under `sync_interval: always`
                // (the placement rate's bound). The scheduler purges what it handled, up to
                // its lanes' ack floors, one operation a lane a second (`lanes::purge_handled`).
                retention: stream::RetentionPolicy::Limits,
                max_messages: topo.cmd_backlog,
                max_bytes: topo.cmd_backlog_bytes,
                discard: stream::DiscardPolicy::New,
                allow_atomic_publish: true,
                ..Default::default()
            },
            stream::Config {
                name: subjects::EVT_STREAM.into(),
                description: Some("bulkhead event log".into()),
                subjects: vec![subjects::EVT_ALL.into()],
                storage: stream::StorageType::File,
                duplicate_window: topo.duplicate_window,
                allow_atomic_publish: true,
                allow_direct: true,
                // The log is never rewritten: no message is deleted, no subject purged, and
                // no publish rolls a subject up.
                deny_delete: true,
                deny_purge: true,
                allow_rollup: false,
                metadata: [(FORMAT_KEY.to_owned(), FORMAT.to_owned())].into(),
                // Every workload event, once stored, to the tenants' feed.
                republish: Some(stream::Republish {
                    source: subjects::EVT_WORKLOADS.into(),
                    destination: subjects::TENANT_FEED_MAPPING.into(),
                    headers_only: false,
                }),
                ..Default::default()
            },
            stream::Config {
                name: subjects::SCAN_STREAM.into(),
                description: Some("bulkhead scan jobs".into()),
                subjects: vec![subjects::SCAN_JOBS.into()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            },
            stream::Config {
                name: subjects::OPS_STREAM.into(),
                description: Some("bulkhead node operations".into()),
                subjects: vec![subjects::OPS_ALL.into()],
                storage: stream::StorageType::File,
                // Limits, not a work queue: on a work queue each ack makes nats-server ask
                // every consumer of the stream (one per node) whether it still needs the
                // message; at 5,000 nodes that took 43 % of its CPU in a C1M run and starved
                // the heartbeats. Ops leave by age instead.
                retention: stream::RetentionPolicy::Limits,
                max_age: topo.ops_ttl,
                allow_atomic_publish: true,
                ..Default::default()
            },
        ];
        let mut ops_consumers = Vec::new();
        for mut cfg in streams {
            // nats-server 2.15 caps a stream at 1,000 consumers unless it sets its own
            // limit: a thousand nodes have a thousand ops consumers, and every node start
            // reads the log through an ephemeral one.
            cfg.max_consumers = MAX_CONSUMERS;
            let name = cfg.name.clone();
            if name == subjects::CMD_STREAM {
                self.replace_old_command_stream().await?;
            }
            if name == subjects::EVT_STREAM {
                self.refuse_old_log().await?;
            }
            if name == subjects::OPS_STREAM {
                ops_consumers = self.replace_old_ops_stream().await?;
            }
            self.js
                .create_or_update_stream(cfg)
                .await
                .map_err(|e| setup(&format!("stream {name}"))(&e))?;
        }
        self.retire_single_scheduler_consumer().await?;
        // The consumers of an older ops stream, made again on the new one.
        if !ops_consumers.is_empty() {
            let stream = self.stream(subjects::OPS_STREAM).await?;
            for c in ops_consumers {
                stream
                    .create_consumer(c)
                    .await
                    .map_err(|e| setup("the nodes' ops consumers")(&e))?;
            }
        }
        // Beats (the nodes' and the scan workers') are written without waiting on the disk:
        // under `sync_interval: always` each put was an fsync of its own (1,000 nodes beating
        // every second, a thousand a second, queued before every stored step of a
        // placement), and a beat lost to a crash of the server is only a beat, sent again
        // within its interval. Layers and leases are kept as everything else is.
        let (beats, kept) = (
            stream::PersistenceMode::Async,
            stream::PersistenceMode::Default,
        );
        let buckets = [
            (
                subjects::NODES_BUCKET,
                "node heartbeats",
                topo.node_ttl,
                beats,
            ),
            (
                subjects::SCANNERS_BUCKET,
                "live scan workers (the layer cache's hash ring)",
                topo.scanner_ttl,
                beats,
            ),
            (
                subjects::LAYERS_BUCKET,
                "layer inventories by diffID and format",
                Duration::ZERO,
                kept,
            ),
            (
                subjects::LEASES_BUCKET,
                "leases of active service instances",
                topo.lease_ttl,
                kept,
            ),
        ];
        for (bucket, description, ttl, persist) in buckets {
            let kept_beats = if persist == beats {
                self.replace_synced_beats(bucket).await?
            } else {
                Vec::new()
            };
            // The stream a KV bucket is, made by hand: as `create_key_value` makes it, but
            // with no rollups and no purges (a `Nats-Rollup: all` on one key a writer may
            // use would otherwise wipe the whole bucket).
            let cfg = stream::Config {
                name: format!("KV_{bucket}"),
                description: Some(description.into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: ttl,
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::New,
                allow_direct: true,
                allow_rollup: false,
                deny_delete: true,
                deny_purge: true,
                duplicate_window: ttl
                    .min(Duration::from_secs(120))
                    .max(Duration::from_secs(1)),
                persist_mode: Some(persist),
                ..Default::default()
            };
            self.js
                .create_or_update_stream(cfg)
                .await
                .map_err(|e| setup(&format!("bucket {bucket}"))(&e))?;
            self.put_back_beats(bucket, kept_beats).await?;
        }
        if self
            .js
            .get_object_store(subjects::SNAPSHOTS_BUCKET)
            .await
            .is_err()
        {
            self.js
                .create_object_store(async_nats::jetstream::object_store::Config {
                    bucket: subjects::SNAPSHOTS_BUCKET.into(),
                    description: Some(
                        "the services' snapshots: signed, anchored on a checkpoint".into(),
                    ),
                    ..Default::default()
                })
                .await
                .map_err(|e| setup(&format!("bucket {}", subjects::SNAPSHOTS_BUCKET))(&e))?;
        }
        Ok(())
    }

    /// A bucket of beats made by an older bulkhead (each put synced to disk) is deleted, to
    /// be made again unsynced: nats-server cannot change a stream's persist mode. The latest
    /// beat under each key is returned, to be put back in the new bucket
    /// ([`Bus::put_back_beats`]): a failover starting on an empty bucket would know no node's
    /// interval and hold each to the lost timeout. Another setup deleting it first is no error.
    async fn replace_synced_beats(&self, bucket: &str) -> Result<Vec<(String, Bytes)>, BusError> {
        let name = format!("KV_{bucket}");
        let Ok(mut stream) = self.js.get_stream(&name).await else {
            return Ok(Vec::new()); // none yet
        };
        let setup = |e: &dyn std::fmt::Display| BusError::Setup {
            what: format!("bucket {bucket}"),
            msg: e.to_string(),
        };
        let info = stream.info().await.map_err(|e| setup(&e))?;
        if info.config.persist_mode == Some(stream::PersistenceMode::Async) {
            return Ok(Vec::new());
        }
        tracing::info!(bucket, "making the bucket of beats again, unsynced");
        let kv = self.bucket(bucket).await?;
        let beats = latest_values(&kv).await.map_err(|e| setup(&e))?;
        if let Err(e) = self.js.delete_stream(&name).await
            && self.js.get_stream(&name).await.is_ok()
        {
            return Err(setup(&e));
        }
        Ok(beats)
    }

    /// The beats kept from a replaced bucket, each put back unless its key was written since.
    async fn put_back_beats(
        &self,
        bucket: &str,
        beats: Vec<(String, Bytes)>,
    ) -> Result<(), BusError> {
        if beats.is_empty() {
            return Ok(());
        }
        let kv = &self.bucket(bucket).await?;
        let put_back = futures::stream::iter(beats)
            // `create`: a beat written since (newer) is not overwritten.
            .map(|(key, value)| async move { kv.create(&key, value).await.is_ok() })
            .buffer_unordered(64)
            .filter(|created| std::future::ready(*created))
            .count()
            .await;
        tracing::info!(bucket, put_back, "beats of the replaced bucket put back");
        Ok(())
    }

    /// An event log written before events were signed is refused, not mixed with signed
    /// ones (an empty one is simply brought up to date).
    async fn refuse_old_log(&self) -> Result<(), BusError> {
        let Ok(mut stream) = self.js.get_stream(subjects::EVT_STREAM).await else {
            return Ok(()); // none yet
        };
        let info = stream.info().await.map_err(|e| BusError::Setup {
            what: format!("stream {}", subjects::EVT_STREAM),
            msg: e.to_string(),
        })?;
        if info.state.messages == 0 {
            return Ok(());
        }
        crate::follow::check_format(&info.config)
    }

    /// The one consumer through which an older scheduler read every command is deleted:
    /// the scheduler reads through a lane a tenant now (`scheduler/lanes.rs`). Nothing is
    /// lost: a new lane reads every command its tenant has in the stream, and the few the
    /// older scheduler handled in its last second (not yet purged) come again and are
    /// deduplicated, as any redelivery is.
    async fn retire_single_scheduler_consumer(&self) -> Result<(), BusError> {
        let stream = self.stream(subjects::CMD_STREAM).await?;
        if stream
            .consumer_info(subjects::SCHEDULER_CONSUMER)
            .await
            .is_err()
        {
            return Ok(()); // none: a new cluster, or retired already
        }
        tracing::info!("retiring the single command consumer of an older scheduler");
        stream
            .delete_consumer(subjects::SCHEDULER_CONSUMER)
            .await
            .map_err(|e| BusError::Setup {
                what: format!("consumer {}", subjects::SCHEDULER_CONSUMER),
                msg: e.to_string(),
            })?;
        Ok(())
    }

    /// A command stream from before commands were purged by the scheduler (a work queue;
    /// nats-server cannot change a stream's retention) is replaced, but only once the
    /// scheduler has handled every command in it: an unhandled command is never dropped.
    async fn replace_old_command_stream(&self) -> Result<(), BusError> {
        let setup = |msg: String| BusError::Setup {
            what: format!("stream {}", subjects::CMD_STREAM),
            msg,
        };
        let mut stream = match self.js.get_stream(subjects::CMD_STREAM).await {
            Ok(s) => s,
            Err(_) => return Ok(()), // none yet
        };
        let info = stream
            .info()
            .await
            .map_err(|e| setup(e.to_string()))?
            .clone();
        if info.config.retention == stream::RetentionPolicy::Limits {
            return Ok(());
        }
        let waiting = match stream.consumer_info(subjects::SCHEDULER_CONSUMER).await {
            Ok(c) => c.num_pending + c.num_ack_pending as u64,
            Err(_) => info.state.messages,
        };
        if waiting > 0 {
            return Err(setup(format!(
                "it was made by an older bulkhead (a work queue); {waiting} are \
                 still unhandled. Let the older scheduler handle them first (or delete the \
                 stream with `nats stream rm {}` to drop them)",
                subjects::CMD_STREAM
            )));
        }
        tracing::info!(
            "replacing the command stream of an older bulkhead: every command in it was handled"
        );
        self.js
            .delete_stream(subjects::CMD_STREAM)
            .await
            .map_err(|e| setup(e.to_string()))?;
        Ok(())
    }

    /// An ops stream made by an older bulkhead (a work queue) is deleted once no op in it
    /// waits for its node, and the consumers it had are returned, to be made again on the
    /// new one; while ops wait, setup stops with a clear message (nothing is dropped).
    async fn replace_old_ops_stream(&self) -> Result<Vec<consumer::Config>, BusError> {
        let setup = |msg: String| BusError::Setup {
            what: format!("stream {}", subjects::OPS_STREAM),
            msg,
        };
        let mut stream = match self.js.get_stream(subjects::OPS_STREAM).await {
            Ok(s) => s,
            Err(_) => return Ok(Vec::new()), // none yet
        };
        let info = stream
            .info()
            .await
            .map_err(|e| setup(e.to_string()))?
            .clone();
        if info.config.retention != stream::RetentionPolicy::WorkQueue {
            return Ok(Vec::new());
        }
        if info.state.messages > 0 {
            return Err(setup(format!(
                "it was made by an older bulkhead (a work queue); {} ops in it still wait \
                 for their nodes. Let the nodes take them first (or delete the stream with \
                 `nats stream rm {}` to drop them, then run setup again)",
                info.state.messages,
                subjects::OPS_STREAM
            )));
        }
        let mut consumers = Vec::new();
        let mut infos = stream.consumers();
        while let Some(c) = infos.next().await {
            consumers.push(c.map_err(|e| setup(e.to_string()))?.config);
        }
        tracing::info!(
            consumers = consumers.len(),
            "replacing the ops stream of an older bulkhead (a work queue, empty) with one \
             of limits; its consumers are made again"
        );
        self.js
            .delete_stream(subjects::OPS_STREAM)
            .await
            .map_err(|e| setup(e.to_string()))?;
        Ok(consumers)
    }

    /// Every heartbeat in the `bulkhead-nodes` bucket (and each deletion or expiry), as it
    /// is written, starting with each node's latest.
    pub async fn watch_nodes(&self) -> Result<kv::Watch, BusError> {
        let store = self.bucket(subjects::NODES_BUCKET).await?;
        store
            .watch_all()
            .await
            .map_err(|e| BusError::Nats(format!("watching the nodes bucket: {e}")))
    }

    /// The last event of a workload's chain, read from the stream.
    pub async fn head(&self, workload: &str) -> Result<Option<Head>, BusError> {
        self.last_event(&subjects::workload_events(workload)).await
    }

    /// The last event on `filter` (wildcards allowed): its sequence and hash.
    pub async fn last_event(&self, filter: &str) -> Result<Option<Head>, BusError> {
        Ok(self.last_message(filter).await?.map(|(payload, seq)| Head {
            seq,
            hash: hash_bytes(&payload),
        }))
    }

    /// The last message of the log on `filter` (wildcards allowed): its payload and sequence.
    pub async fn last_message(
        &self,
        filter: &str,
    ) -> Result<Option<(bytes::Bytes, u64)>, BusError> {
        Ok(self
            .last_message_signed(filter)
            .await?
            .map(|(payload, seq, _)| (payload, seq)))
    }

    /// The last message of the log on `filter`, with its `Bulkhead-Sig` header.
    pub async fn last_message_signed(
        &self,
        filter: &str,
    ) -> Result<Option<(bytes::Bytes, u64, Option<String>)>, BusError> {
        let req = serde_json::json!({ "last_by_subj": filter });
        let subject = format!("$JS.API.DIRECT.GET.{}", subjects::EVT_STREAM);
        let msg = self
            .client
            .request(subject, req.to_string().into())
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        let headers = msg.headers.as_ref();
        if let Some(status) = msg.status
            && status.as_u16() == 404
        {
            return Ok(None);
        }
        let seq = headers
            .and_then(|h| h.get("Nats-Sequence"))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .ok_or_else(|| {
                BusError::Nats(format!("direct get of {filter}: no sequence in reply"))
            })?;
        let sig = headers
            .and_then(|h| h.get(bulkhead_actors::signing::SIG_HEADER))
            .map(|v| v.as_str().to_owned());
        Ok(Some((msg.payload, seq, sig)))
    }
}

/// The innermost cause of `e`, said once.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Tells `tell` whenever the connection goes down (`false`) or comes back (`true`), with the
/// time (Unix ms): a failure detector is blind while its own connection is down. Ends when
/// `tell` returns false.
pub async fn watch_connection(client: async_nats::Client, mut tell: impl FnMut(bool, u64) -> bool) {
    let mut up = true;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = matches!(
            client.connection_state(),
            async_nats::connection::State::Connected
        );
        if now != up {
            up = now;
            if !tell(up, bulkhead_schemas::now_ms()) {
                return;
            }
        }
    }
}

/// The latest value under every key of `store`, read 64 at a time; a key that cannot be read
/// (deleted or expired meanwhile) is left out.
pub(crate) async fn latest_values(
    store: &kv::Store,
) -> Result<Vec<(String, Bytes)>, kv::HistoryError> {
    let keys: Vec<String> = store
        .keys()
        .await?
        .filter_map(|k| async move { k.ok() })
        .collect()
        .await;
    Ok(futures::stream::iter(keys)
        .map(|key| async move {
            let value = store.get(key.as_str()).await.ok()??;
            Some((key, value))
        })
        .buffer_unordered(64)
        .filter_map(|kv| async move { kv })
        .collect()
        .await)
}

#[cfg(test)]
mod tests {
    use super::Topology;

    #[test]
    fn a_live_node_always_has_a_heartbeat_entry() {
        let longest = *bulkhead_actors::node::limits::HEARTBEAT_MS.end();
        assert!(Topology::default().node_ttl.as_millis() >= u128::from(3 * longest));
    }
}
