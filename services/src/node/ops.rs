//! The node's ops: its durable consumer of `bulkhead.node.<name>.ops` (made by the admin at
//! enrolment, delivered over core NATS: [`super::delivery`]). Each message is run
//! only if the scheduler signed it for this node ([`OpsTrust`]); anything else is set
//! aside (counted, logged with its sequence, terminated: never redelivered, never run).
//! Until the first view of the log (`sync`) has come, other messages are held in stream
//! order (the view says what already ran); then each is handed to the actor and
//! acknowledged once its ops are done and logged (redelivered when a stop failed, at most
//! [`redeliver::MAX_DELIVER`] times: then set aside with the failure).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_actors::aside::Aside;

use bulkhead_actors::node::NodeMsg;
use bulkhead_actors::node::trust::OpsTrust;
use bulkhead_actors::signing::{CERT_HEADER, SIG_HEADER};
use bulkhead_schemas::{NodeOp, SyncReason};
use ractor::ActorRef;
use tokio::sync::watch;
use tracing::{info, warn};

use super::delivery::{Delivered, Deliveries, Reply};
use crate::aside::Ledger;
use crate::bus::{Bus, redeliver};
use crate::tasks::{AbortOnDrop, while_working};

/// How often a node tells JetStream it still works on an ops message (pulls and slow
/// starts can outlast the ack wait).
const OPS_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What the consumer does besides running ops: say the node is back after a loss.
pub(super) type OnLost = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Whom to tell that the node is ready, and since when it started.
pub(super) struct Ready {
    pub tell: watch::Sender<bool>,
    pub since: std::time::Instant,
}

/// Consumes the node's ops and hands them to its actor, in a task. `refused` records what
/// is set aside; `ready` is told (and `node ready` logged) once the first view of the log
/// is reconciled and the ops held until then have run.
pub(super) async fn consume(
    bus: &Bus,
    name: &str,
    actor: ActorRef<NodeMsg>,
    refused: Ledger,
    on_lost: OnLost,
    ready: Ready,
) -> anyhow::Result<AbortOnDrop> {
    let mut deliveries = Deliveries::new(&bus.client, name).await?;
    let admins = bus.identity()?.creds.admins.clone();
    let mut run = Runner {
        node: name.to_owned(),
        client: bus.client.clone(),
        trust: OpsTrust::new(name, admins),
        actor,
        refused,
        on_lost,
        synced: false,
        ready,
        held: BTreeMap::new(),
        xkey: Arc::new(bulkhead_actors::secrets::xkey_of(&bus.identity()?.signer)),
    };
    Ok(AbortOnDrop(tokio::spawn(async move {
        while let Some(m) = deliveries.next().await {
            if !run.take(m).await {
                return;
            }
        }
        warn!(node = %run.node, "the ops deliveries ended");
    })))
}

struct Runner {
    node: String,
    client: async_nats::Client,
    trust: OpsTrust,
    actor: ActorRef<NodeMsg>,
    refused: Ledger,
    on_lost: OnLost,
    /// Whether a view of the log has come.
    synced: bool,
    /// Told once that view is reconciled and the held ops have run.
    ready: Ready,
    /// Messages held until then, by stream sequence (a redelivery replaces its first copy).
    held: BTreeMap<u64, (Delivered, Vec<NodeOp>)>,
    /// This node's curve key: it opens the secrets the scheduler sealed to it.
    xkey: Arc<bulkhead_actors::secrets::XKey>,
}

impl Runner {
    fn set_aside(&self, seq: u64, code: &'static str, why: String) {
        let subject = bulkhead_schemas::subjects::node_ops(&self.node);
        self.refused.record(Aside::new(seq, &subject, code, why));
    }

    /// The ops of message `seq` whose values are within the limits admission uses; each
    /// other one is set aside (counted and logged with its reason), never run.
    fn within_limits(&self, ops: Vec<NodeOp>, seq: u64) -> Vec<NodeOp> {
        ops.into_iter()
            .filter(|op| match bulkhead_actors::node::limits::refuses(op) {
                None => true,
                Some(why) => {
                    let why = format!("an op out of limits (not run): {why}");
                    self.set_aside(seq, "out_of_limits", why);
                    false
                }
            })
            .collect()
    }

    /// Start ops with their secrets opened (a secret this node cannot open stays sealed:
    /// the runtime refuses to start with it, naming it; its value is never logged).
    fn open_secrets(&self, mut ops: Vec<NodeOp>) -> Vec<NodeOp> {
        for op in &mut ops {
            let NodeOp::Start { workload, spec, .. } = op else {
                continue;
            };
            for (name, value) in spec.secrets.iter_mut() {
                match bulkhead_actors::secrets::open(value, &self.xkey) {
                    Ok(plain) => *value = plain,
                    Err(e) => {
                        warn!(node = %self.node, %workload, secret = %name, error = %e,
                            "a secret of this start op does not open here");
                    }
                }
            }
        }
        ops
    }

    /// Takes one message; false when the actor is gone.
    async fn take(&mut self, m: Delivered) -> bool {
        let seq = m.seq;
        let header = |name: &str| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let (sig, cert) = (header(SIG_HEADER), header(CERT_HEADER));
        let ops = match self
            .trust
            .check(&m.payload, sig.as_deref(), cert.as_deref())
        {
            Ok(o) => o.ops,
            Err(why) => {
                let why =
                    format!("not run (only ops the scheduler signed for this node run): {why}");
                self.set_aside(seq, "untrusted_ops", why);
                m.ack(&self.client, Reply::Term).await;
                return true;
            }
        };
        let ops = self.within_limits(ops, seq);
        let ops = self.open_secrets(ops);
        let lost = ops
            .iter()
            .any(|o| matches!(o, NodeOp::Sync { view } if view.reason == SyncReason::Lost));
        let is_sync = ops.iter().any(|o| matches!(o, NodeOp::Sync { .. }));
        if !self.synced && !is_sync {
            self.held.insert(seq, (m, ops));
            return true;
        }
        if !self.run(&m, ops).await {
            return false;
        }
        if is_sync && !self.synced {
            self.synced = true;
            info!(node = %self.node, held = self.held.len(), "the scheduler's view came; running the ops held until then");
            for (_, (m, ops)) in std::mem::take(&mut self.held) {
                if !self.run(&m, ops).await {
                    return false;
                }
            }
            self.ready.tell.send_replace(true);
            let ms = self.ready.since.elapsed().as_millis() as u64;
            info!(node = %self.node, ms, "node ready: the scheduler's view is reconciled");
        }
        if lost {
            warn!(node = %self.node, "this node was declared lost; it reconciled and says it is back");
            (self.on_lost)().await;
        }
        true
    }

    /// Runs one message's ops through the actor and acknowledges it (telling JetStream it
    /// is still at work meanwhile: pulls and slow starts can outlast the ack wait); false
    /// when the actor is gone.
    async fn run(&self, m: &Delivered, ops: Vec<NodeOp>) -> bool {
        let call = async { ractor::call!(self.actor, NodeMsg::Ops, ops) };
        let progress = || m.ack(&self.client, Reply::Progress);
        let result = while_working(OPS_PROGRESS_EVERY, call, progress).await;
        let kind = match result {
            Ok(Ok(())) => Reply::Done,
            Ok(Err(e)) if redeliver::is_last(m.delivered) => {
                let why = format!("ops failed after {} deliveries: {e}", m.delivered);
                self.set_aside(m.seq, "max_deliveries", why);
                Reply::Term
            }
            Ok(Err(e)) => {
                warn!(node = %self.node, error = %e, "ops partly failed; will retry");
                Reply::Nak(redeliver::nak_delay(m.delivered))
            }
            Err(_) => return false,
        };
        m.ack(&self.client, kind).await;
        true
    }
}
