//! The scheduler service: campaigns for the scheduler lease, rebuilds its projection from
//! the log, then feeds commands, log events and heartbeats to the scheduler actor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use bulkhead_actors::failover::MISSED_BEATS;
use bulkhead_actors::scan_policy::ScanPolicy;
use bulkhead_actors::scheduler::{Command, CommandKind, Disposition, SchedulerCore};
use bulkhead_actors::scheduler_actor::{OpsSink, SchedulerActor, SchedulerArgs, SchedulerMsg};
use bulkhead_actors::trace;
use bulkhead_schemas::event::EventBody;
use bulkhead_schemas::{NodeHeartbeat, subjects};
use futures::StreamExt;
use ractor::{Actor, ActorRef};
use tracing::{Instrument, error, info, info_span, warn};

use crate::bus::{Bus, NatsOps, Topology};
use crate::follow::{Follower, read_events};
use crate::lease::{Lease, StopOnDrop};

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Name of this instance in the lease.
    pub instance: String,
    pub topology: Topology,
    /// How long a delivered command may stay unacknowledged before redelivery.
    pub ack_wait: Duration,
    pub tick: Duration,
    pub scan_policy: ScanPolicy,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            instance: format!("scheduler-{}", std::process::id()),
            topology: Topology::default(),
            ack_wait: Duration::from_secs(5),
            tick: Duration::from_millis(200),
            scan_policy: ScanPolicy::default(),
        }
    }
}

/// Runs forever: standby until the lease is won, active until it is lost, and again.
pub async fn run(bus: Bus, cfg: SchedulerConfig) -> anyhow::Result<()> {
    crate::lease::serve(
        &bus,
        subjects::SCHEDULER_LEASE_KEY,
        &cfg.instance,
        cfg.topology.lease_ttl,
        |lease| {
            let (bus, cfg) = (bus.clone(), cfg.clone());
            async move { run_active(&bus, &cfg, lease).await }
        },
    )
    .await
}

/// Rebuilds the scheduler's state from the log.
pub async fn rebuild(bus: &Bus) -> anyhow::Result<(SchedulerCore, Follower)> {
    let started = Instant::now();
    let mut follower = Follower::start(bus, 1).await?;
    let mut core = SchedulerCore::default();
    let n = follower.catch_up(|s| core.apply(s)).await;
    info!(
        events = n,
        workloads = core.projection.len(),
        pending = core.pending_count(),
        ms = started.elapsed().as_millis() as u64,
        "projection rebuilt from the log"
    );
    Ok((core, follower))
}

async fn run_active(bus: &Bus, cfg: &SchedulerConfig, mut lease: Lease) -> anyhow::Result<()> {
    let (mut core, mut follower) = rebuild(bus).await?;
    core.policy = cfg.scan_policy.clone();
    let ops = NatsOps::new(bus);
    let requeue = core.unqueued_scans();
    if !requeue.is_empty() {
        info!(
            jobs = requeue.len(),
            "queueing scans of workloads still waiting for a verdict"
        );
        for (job, err) in ops.queue_scans(requeue).await {
            warn!(%job, error = %err, "could not queue a scan");
        }
    }
    let resend = core.unstarted_ops();
    if !resend.is_empty() {
        info!(
            nodes = resend.len(),
            "resending start ops of replicas not yet started"
        );
        for (node, err) in ops.send(resend).await {
            warn!(%node, error = %err, "could not resend ops");
        }
    }
    let (actor, handle) = Actor::spawn(
        None,
        SchedulerActor::<crate::bus::NatsLog, NatsOps>::default(),
        SchedulerArgs {
            core,
            log: bus.log(),
            ops,
            tick: cfg.tick,
        },
    )
    .await?;
    let _guard = StopOnDrop(actor.clone());

    let a = actor.clone();
    let log_task = tokio::spawn(async move {
        while let Some(batch) = follower.rx.recv().await {
            if a.send_message(SchedulerMsg::Logged(batch)).is_err() {
                return;
            }
        }
    });
    let _log_guard = AbortOnDrop(log_task);
    let _hb_guard = AbortOnDrop(tokio::spawn(watch_nodes(bus.clone(), actor.clone())));
    let _scan_guard = AbortOnDrop(tokio::spawn(watch_scans(bus.clone(), actor.clone())));
    let _node_guard = AbortOnDrop(tokio::spawn(watch_node_events(bus.clone(), actor.clone())));

    let stream = bus.js.get_stream(subjects::CMD_STREAM).await?;
    // Created or updated: a consumer from an older release gains the newer subjects.
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(subjects::SCHEDULER_CONSUMER.into()),
            description: Some("the active bulkhead scheduler".into()),
            filter_subjects: vec![
                subjects::CMD_SUBMIT.into(),
                subjects::CMD_STOP.into(),
                subjects::CMD_SCALE.into(),
                subjects::CMD_DRAIN.into(),
                subjects::CMD_UNDRAIN.into(),
            ],
            ack_policy: AckPolicy::Explicit,
            ack_wait: cfg.ack_wait,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?
        .ready_chunks(1000);
    info!(instance = %cfg.instance, "scheduler active");
    loop {
        tokio::select! {
            changed = lease.held.changed() => {
                if changed.is_err() || !*lease.held.borrow() {
                    return Ok(());
                }
            }
            chunk = messages.next() => {
                let Some(chunk) = chunk else { anyhow::bail!("command consumer ended") };
                handle_chunk(&actor, chunk).await?;
            }
            _ = handle_closed(&handle) => anyhow::bail!("scheduler actor stopped"),
        }
    }
}

async fn handle_closed(handle: &tokio::task::JoinHandle<()>) {
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

type PullMessage =
    Result<async_nats::jetstream::Message, async_nats::jetstream::consumer::pull::MessagesError>;

async fn handle_chunk(
    actor: &ActorRef<SchedulerMsg>,
    chunk: Vec<PullMessage>,
) -> anyhow::Result<()> {
    let mut msgs = Vec::with_capacity(chunk.len());
    let mut cmds = Vec::with_capacity(chunk.len());
    let mut spans = Vec::with_capacity(chunk.len());
    for m in chunk {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "command consumer error");
                continue;
            }
        };
        let info = m
            .info()
            .map_err(|e| anyhow::anyhow!("command without metadata: {e}"))?;
        let cmd_seq = info.stream_sequence;
        let stored_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
        let kind = CommandKind::of_subject(m.subject.as_str()).unwrap_or(CommandKind::Submit);
        let span = info_span!("admit", cmd_seq, subject = %m.subject);
        let parent = m
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.as_str().to_owned());
        trace::set_parent(&span, parent.as_deref());
        let traceparent = trace::traceparent(&span);
        cmds.push(Command {
            cmd_seq,
            stored_ms,
            kind,
            payload: m.payload.to_vec(),
            traceparent,
        });
        spans.push(span);
        msgs.push(m);
    }
    if cmds.is_empty() {
        return Ok(());
    }
    let n = cmds.len();
    let round = info_span!("schedule_round", commands = n);
    let dispositions = ractor::call!(actor, SchedulerMsg::Commands, cmds)
        .map_err(|e| anyhow::anyhow!("scheduler actor: {e}"))?;
    drop(spans);
    let by_seq: HashMap<u64, Disposition> = dispositions.into_iter().collect();
    let acks = msgs.into_iter().map(|m| {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
        let kind = match by_seq.get(&seq) {
            Some(Disposition::Ack) => AckKind::Ack,
            _ => AckKind::Nak(Some(Duration::from_millis(500))),
        };
        async move {
            if let Err(e) = m.ack_with(kind).await {
                warn!(seq, error = %e, "ack failed; the command will be redelivered and deduplicated");
            }
        }
    });
    futures::future::join_all(acks).instrument(round).await;
    Ok(())
}

/// Every scan outcome in the log, from the first: past verdicts settle workloads that
/// waited while no scheduler ran; new ones arrive as they are stored.
async fn watch_scans(bus: Bus, actor: ActorRef<SchedulerMsg>) {
    read_events(&bus, subjects::EVT_SCANS, "scan events", |ev| {
        let done_ms = bulkhead_schemas::parse_rfc3339_ms(&ev.at).unwrap_or(0);
        match ev.body {
            EventBody::ScanCompleted(c) => actor
                .send_message(SchedulerMsg::ScanCompleted(Box::new(c), done_ms))
                .is_ok(),
            _ => true,
        }
    })
    .await;
}

/// Every node event in the log, from the first: drains in force survive a restart, a lost
/// node takes no work until it heartbeats again.
async fn watch_node_events(bus: Bus, actor: ActorRef<SchedulerMsg>) {
    read_events(&bus, subjects::EVT_NODES, "node events", |ev| {
        actor
            .send_message(SchedulerMsg::NodeEvent(Box::new(ev)))
            .is_ok()
    })
    .await;
}

/// Watches the nodes bucket: heartbeats go to the actor; a node silent for [`MISSED_BEATS`]
/// intervals is reported gone.
async fn watch_nodes(bus: Bus, actor: ActorRef<SchedulerMsg>) {
    let mut watch = match bus.watch_nodes().await {
        Ok(w) => w,
        Err(e) => return error!(error = %e, "no node heartbeats"),
    };
    let mut seen: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            entry = watch.next() => {
                let Some(Ok(entry)) = entry else { return warn!("node watch ended") };
                if entry.operation != async_nats::jetstream::kv::Operation::Put {
                    seen.remove(&entry.key);
                    let _ = actor.send_message(SchedulerMsg::NodeGone(entry.key));
                    continue;
                }
                match serde_json::from_slice::<NodeHeartbeat>(&entry.value) {
                    Ok(hb) => {
                        let interval = Duration::from_millis(hb.interval_ms.max(100));
                        let new = seen.insert(hb.name.clone(), (Instant::now(), interval)).is_none();
                        let name = new.then(|| hb.name.clone());
                        let _ = actor.send_message(SchedulerMsg::Heartbeat(hb));
                        if let Some(name) = name {
                            info!("node {name} heartbeats: it takes placements");
                        }
                    }
                    Err(e) => warn!(key = %entry.key, error = %e, "ignoring malformed heartbeat"),
                }
            }
            _ = check.tick() => {
                let now = Instant::now();
                let gone: Vec<String> = seen
                    .iter()
                    .filter(|(_, (at, every))| now.duration_since(*at) > *every * MISSED_BEATS as u32)
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in gone {
                    seen.remove(&name);
                    warn!(node = %name, "node stopped heartbeating; no more placements there");
                    let _ = actor.send_message(SchedulerMsg::NodeGone(name));
                }
            }
        }
    }
}

pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
