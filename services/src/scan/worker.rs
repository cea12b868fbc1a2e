//! The scan worker: takes jobs from the `BULKHEAD_SCAN` work queue (reporting progress,
//! so a job whose worker dies is redelivered to another), and serves the layers it owns
//! on the consistent-hash ring of live workers. An owner keeps inventories in a
//! byte-bounded LRU over the `bulkhead-layers` KV bucket, and runs one inventory per
//! diffID however many scans ask for it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::kv;
use bulkhead_scan::cache::lru::Lru;
use bulkhead_scan::cache::ring::{DEFAULT_POINTS, Ring};
use bulkhead_scan::inventory::{self, LayerInventory};
use bulkhead_scan::verdict::AdvisoryDb;
use bulkhead_schemas::event::{Event, EventBody, ScanCompleted};
use bulkhead_schemas::scan::{LayerReport, LayerSource, ScanJob};
use bulkhead_schemas::subjects;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::registry::{Credentials, ImageRef, Layer, Registry};
use super::{Progress, ScanError, compute_layer, scan_with};
use crate::aside::Ledger;
use crate::bus::{Bus, redeliver};
use crate::tasks::{AbortOnDrop, with_progress};
use bulkhead_actors::aside::Aside;
use bulkhead_schemas::spec::check_image;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: String,
    /// Bytes of inventories kept in memory.
    pub lru_bytes: usize,
    /// JetStream redelivers a job this long after its worker went silent.
    pub ack_wait: Duration,
    /// Pause before each layer (a test hook that makes a scan last; 0 in production).
    pub layer_delay: Duration,
    pub credentials: Credentials,
    /// Which registries, at which addresses, the worker may fetch from.
    pub egress: super::egress::Egress,
    /// Scan with Trivy instead of bulkhead's own scanner (no layer cache then).
    pub trivy: Option<super::trivy::TrivyConfig>,
}

impl WorkerConfig {
    pub fn new(id: String) -> WorkerConfig {
        WorkerConfig {
            id,
            lru_bytes: 256 * 1024 * 1024,
            ack_wait: Duration::from_secs(5),
            layer_delay: Duration::ZERO,
            credentials: Credentials::default(),
            egress: super::egress::Egress::default(),
            trivy: None,
        }
    }
}

/// A request to a layer's owner.
#[derive(Serialize, Deserialize, Debug)]
struct LayerRequest {
    image: String,
    digest: String,
    diff_id: String,
    media_type: String,
    size: u64,
}

#[derive(Serialize, Deserialize, Debug)]
enum LayerReply {
    Ok {
        inventory: LayerInventory,
        source: LayerSource,
    },
    Err(String),
}

type Loaded = Result<(Arc<LayerInventory>, LayerSource), String>;
type Inflight = Shared<BoxFuture<'static, Loaded>>;

/// The owner's side of the layer cache.
struct LayerCache {
    registry: Arc<Registry>,
    kv: kv::Store,
    lru: Mutex<Lru<String, Arc<LayerInventory>>>,
    inflight: Mutex<HashMap<String, Inflight>>,
}

fn kv_key(diff_id: &str) -> String {
    let hex = diff_id.rsplit(':').next().unwrap_or(diff_id);
    format!("f{}-{hex}", inventory::FORMAT)
}

/// What an inventory costs in memory, roughly: its JSON size.
fn weight(inv: &LayerInventory) -> usize {
    serde_json::to_vec(inv).map(|v| v.len()).unwrap_or(0)
}

impl LayerCache {
    /// The inventory of a layer this worker owns: memory, then KV, else read the blob
    /// (once, however many ask at the same time).
    async fn get(
        self: &Arc<Self>,
        image: &ImageRef,
        layer: &Layer,
    ) -> Result<(Arc<LayerInventory>, LayerSource), String> {
        if let Some(inv) = self.lru.lock().expect("lock").get(&layer.diff_id) {
            return Ok((inv.clone(), LayerSource::Memory));
        }
        let (fut, mine) = {
            let mut inflight = self.inflight.lock().expect("lock");
            match inflight.get(&layer.diff_id) {
                Some(f) => (f.clone(), false),
                None => {
                    let me = self.clone();
                    let (image, l) = (image.clone(), layer.clone());
                    let f = async move { me.load(&image, &l).await }.boxed().shared();
                    inflight.insert(layer.diff_id.clone(), f.clone());
                    (f, true)
                }
            }
        };
        let r = fut.await;
        if mine {
            self.inflight.lock().expect("lock").remove(&layer.diff_id);
        }
        let (inv, source) = r?;
        Ok((inv, if mine { source } else { LayerSource::Joined }))
    }

    /// KV, else the blob; the result goes to memory (and to KV when read).
    async fn load(&self, image: &ImageRef, layer: &Layer) -> Loaded {
        let key = kv_key(&layer.diff_id);
        if let Ok(Some(bytes)) = self.kv.get(&key).await
            && let Ok(inv) = serde_json::from_slice::<LayerInventory>(&bytes)
        {
            let inv = Arc::new(inv);
            self.remember(&layer.diff_id, &inv);
            return Ok((inv, LayerSource::Kv));
        }
        let inv = compute_layer(&self.registry, image, layer)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = serde_json::to_vec(&inv).map_err(|e| e.to_string())?;
        if let Err(e) = self.kv.put(&key, bytes.into()).await {
            warn!(diff_id = %layer.diff_id, error = %e, "could not store a layer inventory");
        }
        let inv = Arc::new(inv);
        self.remember(&layer.diff_id, &inv);
        Ok((inv, LayerSource::Computed))
    }

    fn remember(&self, diff_id: &str, inv: &Arc<LayerInventory>) {
        self.lru
            .lock()
            .expect("lock")
            .insert(diff_id.to_owned(), inv.clone(), weight(inv));
    }
}

/// A running worker; dropping it stops it.
pub struct WorkerHandle {
    pub id: String,
    _tasks: Vec<AbortOnDrop>,
}

/// The advisories a worker matches with: a database it was given, or the one imported
/// into the `bulkhead-vulndb` object store (re-read when a new one is imported).
pub struct Advisories {
    shared: bool,
    current: RwLock<(Arc<AdvisoryDb>, String)>,
}

impl Advisories {
    pub fn fixed(db: AdvisoryDb) -> Advisories {
        Advisories {
            shared: false,
            current: RwLock::new((Arc::new(db), String::new())),
        }
    }

    /// The database imported with `bulkhead vulndb import` (waits until there is one).
    pub async fn shared(bus: &Bus) -> anyhow::Result<Advisories> {
        let mut said = false;
        let (loaded, version) = loop {
            if let Some(found) = super::vulndb::fetch(bus).await? {
                break found;
            }
            if !said {
                warn!(
                    "no advisory database yet: waiting for `bulkhead vulndb import PATH` (or give --db)"
                );
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        info!(advisories = loaded.db.len(), %version, "advisory database read from the object store");
        Ok(Advisories {
            shared: true,
            current: RwLock::new((Arc::new(loaded.db), version)),
        })
    }

    async fn now(&self, bus: &Bus) -> Arc<AdvisoryDb> {
        if self.shared {
            let known = self.current.read().expect("lock").1.clone();
            if let Some(v) = super::vulndb::version(bus).await
                && v != known
            {
                match super::vulndb::fetch(bus).await {
                    Ok(Some((loaded, v))) => {
                        info!(advisories = loaded.db.len(), version = %v, "advisory database updated");
                        *self.current.write().expect("lock") = (Arc::new(loaded.db), v);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "could not read the new advisory database"),
                }
            }
        }
        self.current.read().expect("lock").0.clone()
    }
}

/// Starts a worker as `bulkhead scanner` (or `up --scan-db`) asks: advisories from `db`
/// (a directory or an OSV all.zip), or from the database imported into the cluster, or
/// none when Trivy judges; registry credentials from `BULKHEAD_REGISTRY_AUTH`.
pub async fn launch(
    bus: &Bus,
    db: Option<&std::path::Path>,
    id: Option<String>,
    lru_mib: usize,
    trivy: Option<super::trivy::TrivyConfig>,
    egress: super::egress::Egress,
) -> anyhow::Result<WorkerHandle> {
    let advisories = match (db, &trivy) {
        (_, Some(_)) => Advisories::fixed(Default::default()),
        (Some(db), None) => {
            let loaded = super::vulndb::load(db)?;
            info!(advisories = loaded.db.len(), skipped = loaded.skipped, db = %db.display(), "advisory database loaded");
            Advisories::fixed(loaded.db)
        }
        (None, None) => Advisories::shared(bus).await?,
    };
    let mut cfg =
        WorkerConfig::new(id.unwrap_or_else(|| format!("scanner-{}", std::process::id())));
    cfg.lru_bytes = lru_mib * 1024 * 1024;
    cfg.credentials = super::registry::Credentials::from_env()?;
    cfg.egress = egress;
    cfg.trivy = trivy;
    // Test hook: a pause before each layer makes a scan last long enough to kill it.
    if let Some(ms) = std::env::var("BULKHEAD_SCAN_LAYER_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.layer_delay = Duration::from_millis(ms);
    }
    start(bus, cfg, Arc::new(advisories)).await
}

pub async fn start(
    bus: &Bus,
    cfg: WorkerConfig,
    db: Arc<Advisories>,
) -> anyhow::Result<WorkerHandle> {
    anyhow::ensure!(
        subjects::is_valid_token(&cfg.id),
        "worker id {:?} must be 1-64 characters of [A-Za-z0-9_-]",
        cfg.id
    );
    let registry = Arc::new(Registry::new(cfg.credentials.clone(), cfg.egress.clone())?);
    let cache = Arc::new(LayerCache {
        registry: registry.clone(),
        kv: bus.bucket(subjects::LAYERS_BUCKET).await?,
        lru: Mutex::new(Lru::new(cfg.lru_bytes)),
        inflight: Mutex::default(),
    });
    let ring = Arc::new(RwLock::new(Ring::new([cfg.id.clone()], DEFAULT_POINTS)));
    let mut tasks = Vec::new();

    // Membership: announce ourselves, rebuild the ring from whoever else is alive.
    let members = bus.bucket(subjects::SCANNERS_BUCKET).await?;
    members.put(&cfg.id, "alive".into()).await?;
    refresh_ring(&members, &ring, &cfg.id).await;
    {
        let (members, ring, id) = (members.clone(), ring.clone(), cfg.id.clone());
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = members.put(&id, "alive".into()).await {
                    warn!(error = %e, "scan worker heartbeat failed");
                }
                refresh_ring(&members, &ring, &id).await;
            }
        })));
    }

    // Layers we own, asked for by other workers.
    let mut requests = bus.client.subscribe(subjects::scan_layer(&cfg.id)).await?;
    {
        let (client, cache) = (bus.client.clone(), cache.clone());
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            while let Some(m) = requests.next().await {
                let (client, cache) = (client.clone(), cache.clone());
                tokio::spawn(async move {
                    let reply = match serde_json::from_slice::<LayerRequest>(&m.payload) {
                        Ok(r) => serve_layer(&cache, r).await,
                        Err(e) => LayerReply::Err(format!("bad layer request: {e}")),
                    };
                    if let Some(to) = m.reply {
                        let body = serde_json::to_vec(&reply).expect("json");
                        let _ = client.publish(to, body.into()).await;
                    }
                });
            }
        })));
    }

    // Jobs.
    let stream = bus.stream(subjects::SCAN_STREAM).await?;
    let config = pull::Config {
        durable_name: Some(subjects::SCAN_CONSUMER.into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        max_deliver: redeliver::MAX_DELIVER,
        max_ack_pending: 1024,
        ..Default::default()
    };
    // Created or updated (a consumer of an earlier build gains the redelivery bound).
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        crate::bus::opening("the scan consumer", || {
            stream.create_consumer(config.clone())
        })
        .await?;
    let ledger = Ledger::default();
    tasks.extend(crate::aside::reporting(bus, ledger.clone()));
    let mut jobs = consumer
        .stream()
        .max_messages_per_batch(1)
        .messages()
        .await?;
    {
        let bus = bus.clone();
        let cfg = cfg.clone();
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            while let Some(m) = jobs.next().await {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "scan job consumer error");
                        continue;
                    }
                };
                let (seq, delivered) = m
                    .info()
                    .map(|i| (i.stream_sequence, i.delivered))
                    .unwrap_or((0, 1));
                let job = match job_of(&m.payload) {
                    Ok(j) => j,
                    Err(why) => {
                        ledger.record(Aside::new(seq, m.subject.as_str(), "bad_scan_job", why));
                        let _ = m.ack_with(AckKind::Term).await;
                        continue;
                    }
                };
                // Tell JetStream we are alive while the job runs.
                let every = (cfg.ack_wait / 3).max(Duration::from_millis(100));
                let advisories = db.now(&bus).await;
                let work = run_job(&bus, &cfg, &registry, &cache, &ring, &advisories, &job);
                let done = with_progress(&m, every, work).await;
                match done {
                    Ok(()) => {
                        let _ = m.double_ack().await;
                    }
                    Err(e) if redeliver::is_last(delivered) => {
                        let why = format!("not recorded after {delivered} deliveries: {e}");
                        ledger.record(Aside::new(seq, m.subject.as_str(), "max_deliveries", why));
                        let _ = m.ack_with(AckKind::Term).await;
                    }
                    Err(e) => {
                        warn!(job = %job.id, error = %e, "could not record a scan; will retry");
                        let delay = redeliver::nak_delay(delivered);
                        let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
                    }
                }
            }
        })));
    }
    info!(worker = %cfg.id, "scan worker up");
    Ok(WorkerHandle {
        id: cfg.id,
        _tasks: tasks,
    })
}

/// The scan job a message carries, within the limits admission uses (an id that is a
/// subject token, an image reference as a spec's must be), or why it carries none.
fn job_of(payload: &[u8]) -> Result<ScanJob, String> {
    let job: ScanJob =
        serde_json::from_slice(payload).map_err(|e| format!("not a scan job: {e}"))?;
    if !subjects::is_valid_token(&job.id) {
        return Err(format!("job id {:?} is not 1-64 of [A-Za-z0-9_-]", job.id));
    }
    check_image(&job.image).map_err(|r| r.reason)?;
    Ok(job)
}

/// Scan workers alive now: their keys in the scanners bucket, which expire unrenewed.
/// None when the bucket cannot be listed (an outage is not the absence of workers).
pub async fn live_workers(scanners: &kv::Store) -> Option<usize> {
    let keys = scanners.keys().await.ok()?;
    Some(keys.filter_map(|k| async move { k.ok() }).count().await)
}

async fn refresh_ring(members: &kv::Store, ring: &RwLock<Ring>, me: &str) {
    let Ok(keys) = members.keys().await else {
        return;
    };
    let mut ids: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
    if !ids.iter().any(|i| i == me) {
        ids.push(me.to_owned());
    }
    let fresh = Ring::new(ids, DEFAULT_POINTS);
    let mut r = ring.write().expect("lock");
    if *r != fresh {
        *r = fresh;
    }
}

async fn serve_layer(cache: &Arc<LayerCache>, r: LayerRequest) -> LayerReply {
    let image = match ImageRef::parse(&r.image) {
        Ok(i) => i,
        Err(e) => return LayerReply::Err(e.to_string()),
    };
    let layer = Layer {
        digest: r.digest,
        diff_id: r.diff_id,
        media_type: r.media_type,
        size: r.size,
    };
    match cache.get(&image, &layer).await {
        Ok((inv, source)) => LayerReply::Ok {
            inventory: (*inv).clone(),
            source,
        },
        Err(e) => LayerReply::Err(e),
    }
}

/// Asks the layer's owner (itself, if so); falls back to reading the layer here when
/// the owner does not answer.
async fn layer_via_ring(
    bus: &Bus,
    me: &str,
    cache: &Arc<LayerCache>,
    ring: &RwLock<Ring>,
    image: &ImageRef,
    layer: Layer,
) -> Result<(Arc<LayerInventory>, LayerReport), ScanError> {
    let owner = ring
        .read()
        .expect("lock")
        .owner(&layer.diff_id)
        .unwrap_or(me)
        .to_owned();
    let report = |source, owner: &str| LayerReport {
        diff_id: layer.diff_id.clone(),
        source,
        owner: owner.to_owned(),
    };
    if owner != me {
        let req = LayerRequest {
            image: image.to_string(),
            digest: layer.digest.clone(),
            diff_id: layer.diff_id.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
        };
        let body = serde_json::to_vec(&req).expect("json");
        // The owner may read a large layer for a while: wait for it rather than read the
        // layer a second time (the client's default request timeout is 10 s).
        let asked = bus
            .client
            .send_request(
                subjects::scan_layer(&owner),
                async_nats::Request::new()
                    .payload(body.into())
                    .timeout(Some(OWNER_WAIT)),
            )
            .await;
        match asked {
            Ok(m) => match serde_json::from_slice::<LayerReply>(&m.payload) {
                Ok(LayerReply::Ok { inventory, source }) => {
                    return Ok((Arc::new(inventory), report(source, &owner)));
                }
                Ok(LayerReply::Err(e)) => return Err(ScanError::Other(e)),
                Err(e) => warn!(%owner, error = %e, "bad reply from a layer owner"),
            },
            Err(e) => {
                warn!(%owner, error = %e, "layer owner did not answer; reading the layer here")
            }
        }
    }
    let (inv, source) = cache.get(image, &layer).await.map_err(ScanError::Other)?;
    Ok((inv, report(source, me)))
}

/// How long a worker waits for a layer's owner to inventory it before reading it itself.
const OWNER_WAIT: Duration = Duration::from_secs(120);

#[allow(clippy::too_many_arguments)]
async fn run_job(
    bus: &Bus,
    cfg: &WorkerConfig,
    registry: &Registry,
    cache: &Arc<LayerCache>,
    ring: &RwLock<Ring>,
    db: &AdvisoryDb,
    job: &ScanJob,
) -> anyhow::Result<()> {
    info!(job = %job.id, image = %job.image, worker = %cfg.id, "scanning");
    let progress_subject = subjects::scan_progress(&job.id);
    let client = bus.client.clone();
    let worker = cfg.id.clone();
    // Progress goes out in order, and all of it before the verdict.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let publisher = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            let _ = client.publish(progress_subject.clone(), b.into()).await;
        }
    });
    let say = move |p: Progress| {
        let mut v = serde_json::to_value(&p).expect("json");
        v["worker"] = worker.clone().into();
        let _ = tx.send(serde_json::to_vec(&v).expect("json"));
    };
    say_started(&bus.client, job, &cfg.id).await;
    let result = match (ImageRef::parse(&job.image), &cfg.trivy) {
        (Ok(image), Some(trivy)) => {
            let (os, arch) = super::platform();
            match registry.resolve(&image, os, arch).await {
                // The manifest just resolved, by digest: what Trivy reads is what the verdict names.
                Ok(resolved) => super::trivy::scan(trivy, &image, &resolved.digest)
                    .await
                    .map(|verdict| super::Report {
                        image: image.to_string(),
                        digest: resolved.digest,
                        layers: Vec::new(),
                        verdict,
                    })
                    .map_err(ScanError::from),
                Err(e) => Err(e.into()),
            }
        }
        (Ok(image), None) => {
            scan_with(
                registry,
                &image,
                db,
                |layer| {
                    let image = image.clone();
                    async move {
                        if !cfg.layer_delay.is_zero() {
                            tokio::time::sleep(cfg.layer_delay).await;
                        }
                        layer_via_ring(bus, &cfg.id, cache, ring, &image, layer).await
                    }
                },
                &say,
            )
            .await
        }
        (Err(e), _) => Err(e.into()),
    };
    drop(say);
    let _ = publisher.await;
    let body = match result {
        Ok(r) => ScanCompleted {
            image: job.image.clone(),
            digest: r.digest,
            job: job.id.clone(),
            worker: cfg.id.clone(),
            verdict: Some(r.verdict),
            error: None,
            layers: r.layers,
        },
        Err(e) => ScanCompleted {
            image: job.image.clone(),
            digest: String::new(),
            job: job.id.clone(),
            worker: cfg.id.clone(),
            verdict: None,
            error: Some(e.to_string()),
            layers: Vec::new(),
        },
    };
    let subject_digest = if body.digest.is_empty() {
        format!("job-{}", job.id)
    } else {
        body.digest.clone()
    };
    let ev = Event::new(
        &format!("scanner/{}", cfg.id),
        &subject_digest,
        None,
        EventBody::ScanCompleted(body),
    );
    bus.log()?.publish_scan(ev).await?;
    Ok(())
}

async fn say_started(client: &async_nats::Client, job: &ScanJob, worker: &str) {
    let v = serde_json::json!({"step": "started", "worker": worker, "image": job.image});
    let _ = client
        .publish(subjects::scan_progress(&job.id), v.to_string().into())
        .await;
}
