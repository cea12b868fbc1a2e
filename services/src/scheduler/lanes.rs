//! The scheduler's lanes of `BULKHEAD_CMD`: a durable consumer a tenant and one for the
//! operators' commands ([`subjects::cmd_lane`]), each opened when the stream first holds a
//! command of its own ([`Lanes::discover`]), each read by a task of its own into one channel
//! with room for [`READ_AHEAD`] commands among them all, and each purged through its own ack
//! floor once a second ([`purge_handled`]). [`super::commands`] serves them in turn.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::pull::Stream as Messages;
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use bulkhead_actors::aside::Aside;
use bulkhead_schemas::subjects::{self, CmdLane};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{info, warn};

use super::commands::CHUNK;
use crate::aside::Ledger;
use crate::tasks::AbortOnDrop;

/// Commands the lanes together have read and not yet handed to the actor, at most: a lane
/// waits for room (given in the order asked: a lane with one command waiting is not starved by
/// one with thousands), and its consumer's pull holds the rest at the server. Every command
/// read is delivered and its ack wait (5 s) runs: what waits here is a round or two of work.
const READ_AHEAD: usize = 2 * CHUNK;
/// Commands a lane pulls at once.
const LANE_BATCH: usize = 200;

/// How often the stream is asked which lanes have commands waiting: a tenant's first command
/// since the scheduler started waits this long at most for its lane to open.
const DISCOVER_EVERY: Duration = Duration::from_millis(250);

/// How often the commands handled are purged from the stream.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// What a lane's reader hands on: a command of the lane (named by its consumer) and its
/// place among those read ahead; none when the lane's consumer ended.
pub(super) struct Read {
    pub lane: Arc<str>,
    pub command: Option<(Message, OwnedSemaphorePermit)>,
}

/// Reads one lane's consumer, each command once there is room among those read ahead;
/// `read` is the last command's sequence in the stream (the purge looks at lanes read past
/// their last purge).
async fn read_lane(
    lane: Arc<str>,
    mut messages: Messages,
    read: Arc<AtomicU64>,
    ahead: Arc<Semaphore>,
    out: mpsc::UnboundedSender<Read>,
) {
    while let Some(m) = messages.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                warn!(lane = &*lane, error = %e, "command consumer error");
                continue;
            }
        };
        let Ok(room) = ahead.clone().acquire_owned().await else {
            return;
        };
        if let Ok(info) = m.info() {
            read.fetch_max(info.stream_sequence, Ordering::Relaxed);
        }
        let command = Some((m, room));
        let lane = lane.clone();
        if out.send(Read { lane, command }).is_err() {
            return;
        }
    }
    let _ = out.send(Read {
        lane,
        command: None,
    });
}

/// An open lane: its reader, the last command it read, and the floor it was purged through.
struct Open {
    _reading: AbortOnDrop,
    read: Arc<AtomicU64>,
    purged: u64,
}

/// The lanes open, and what opens more.
pub(super) struct Lanes {
    stream: Stream,
    /// Every lane's consumer is this, its name and filter its own.
    config: pull::Config,
    out: mpsc::UnboundedSender<Read>,
    ledger: Ledger,
    /// Room among the commands read ahead, shared by every lane ([`READ_AHEAD`]).
    ahead: Arc<Semaphore>,
    open: HashMap<CmdLane, Open>,
}

impl Lanes {
    /// No lane open yet: each will be `config` (its name and filter its own) and hand its
    /// commands to `out`; what no lane reads goes in `ledger`.
    pub fn new(
        stream: Stream,
        config: pull::Config,
        out: mpsc::UnboundedSender<Read>,
        ledger: Ledger,
    ) -> Lanes {
        Lanes {
            stream,
            config,
            out,
            ledger,
            ahead: Arc::new(Semaphore::new(READ_AHEAD)),
            open: HashMap::new(),
        }
    }

    /// Opens a lane for each one that has commands waiting in the stream and none open; the
    /// commands of a subject no lane reads are purged unread, and set aside.
    pub async fn discover(&mut self) -> anyhow::Result<()> {
        let mut waiting = BTreeSet::new();
        let mut unread = Vec::new();
        let mut subjects = self.stream.info_with_subjects(">").await?;
        while let Some((subject, count)) = subjects.try_next().await? {
            match subjects::cmd_lane(&subject) {
                Some(lane) => {
                    waiting.insert(lane);
                }
                None => unread.push((subject, count)),
            }
        }
        for (subject, count) in unread {
            self.stream.purge().filter(subject.as_str()).await?;
            let why = format!("{count} stored on a subject no tenant's lane reads: purged unread");
            self.ledger
                .record(Aside::new(0, &subject, "unknown_command", why));
        }
        for lane in waiting {
            if !self.open.contains_key(&lane) {
                self.start(lane).await?;
            }
        }
        Ok(())
    }

    /// Creates (or finds) the lane's durable consumer and starts reading it.
    async fn start(&mut self, lane: CmdLane) -> anyhow::Result<()> {
        let config = pull::Config {
            durable_name: Some(lane.consumer.clone()),
            filter_subject: lane.filter.clone(),
            ..self.config.clone()
        };
        let consumer: PullConsumer = crate::bus::opening("a command lane", || {
            self.stream.create_consumer(config.clone())
        })
        .await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(LANE_BATCH)
            .messages()
            .await?;
        info!(lane = %lane.consumer, "command lane open");
        let read = Arc::new(AtomicU64::new(0));
        let reading = tokio::spawn(read_lane(
            lane.consumer.as_str().into(),
            messages,
            read.clone(),
            self.ahead.clone(),
            self.out.clone(),
        ));
        let open = Open {
            _reading: AbortOnDrop(reading),
            read,
            purged: 0,
        };
        self.open.insert(lane, open);
        Ok(())
    }

    /// Purges what each lane read past its last purge has handled.
    async fn purge(&mut self) {
        for (lane, open) in &mut self.open {
            if open.read.load(Ordering::Relaxed) <= open.purged {
                continue;
            }
            match purge_handled(&self.stream, lane, open.purged).await {
                Ok(floor) => open.purged = floor,
                Err(e) => {
                    warn!(lane = %lane.consumer, error = %e, "could not purge the commands handled; will try again");
                }
            }
        }
    }

    /// Opens lanes as their first commands come, and purges, until dropped.
    pub fn run(mut self) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(async move {
            let mut discover = tokio::time::interval(DISCOVER_EVERY);
            let mut purge = tokio::time::interval(PURGE_EVERY);
            for every in [&mut discover, &mut purge] {
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            loop {
                tokio::select! {
                    _ = discover.tick() => {
                        if let Err(e) = self.discover().await {
                            warn!(error = %e, "could not look for new command lanes; will try again");
                        }
                    }
                    _ = purge.tick() => self.purge().await,
                }
            }
        }))
    }
}

/// Purges the lane's commands through its consumer's ack floor (each command there was
/// acknowledged or terminated; one redelivered later holds the floor below it) when it
/// passed `done`, in one operation; returns the floor purged through. A command
/// acknowledged on a work queue was one fsync'd delete each.
pub async fn purge_handled(stream: &Stream, lane: &CmdLane, done: u64) -> anyhow::Result<u64> {
    let info = stream.consumer_info(&lane.consumer).await?;
    let floor = info.ack_floor.stream_sequence;
    if floor > done {
        stream
            .purge()
            .filter(lane.filter.as_str())
            .sequence(floor + 1)
            .await?;
    }
    Ok(floor.max(done))
}
