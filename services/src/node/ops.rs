//! The node's ops: its durable consumer of `bulkhead.node.<name>.ops` (made by the admin at
//! enrolment, delivered over core NATS: [`super::delivery`]). Each message is run
//! only if the scheduler signed it for this node ([`OpsTrust`]); anything else is set
//! aside (counted, logged with its sequence, terminated: never redelivered, never run).
//! Until the first view of the log (`sync`) has come, other messages are held in stream
//! order (the view says what already ran); then they are handed to the actor, those
//! already delivered together (a view alone), and each is acknowledged once its ops are
//! done and logged (redelivered when a stop failed, at most [`redeliver::MAX_DELIVER`]
//! times: then set aside with the failure).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_actors::aside::Aside;

use bulkhead_actors::node::NodeMsg;
use bulkhead_actors::node::trust::OpsTrust;
use bulkhead_actors::signing::{CERT_HEADER, SIG_HEADER};
use bulkhead_schemas::{NodeOp, SyncReason};
use futures::FutureExt;
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
/// Ops messages already delivered that are taken together, at most: a node that bin-packing
/// fills gets a round's message every few ms, and each one alone waited for the facts of
/// the one before to be stored.
const TOGETHER: usize = 16;
/// Ops run as one call, at most, unless one message alone has more (a call starts its
/// replicas all at once).
const OPS_TOGETHER: usize = 1000;

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
        while let Some(delivered) = deliveries.next_together(TOGETHER).await {
            if !run.take(delivered).await {
                return;
            }
        }
        warn!(node = %run.node, "the ops deliveries ended");
    })))
}

/// What is done with messages taken together.
#[derive(Debug, PartialEq, Eq)]
enum Step<T> {
    /// Ops before the node's first view of the log: kept until it comes.
    Hold(T),
    /// Consecutive ops messages: run together (their replicas started together, their
    /// facts in one append).
    Run(Vec<T>),
    /// A view of the log (a `sync` op): run alone, after what came before it.
    View(T),
}

/// The steps for messages taken together, in order, given which carry a view (`is_view`)
/// and whether the node has had its first view.
fn steps<T>(messages: Vec<T>, is_view: impl Fn(&T) -> bool, mut synced: bool) -> Vec<Step<T>> {
    let mut steps = Vec::new();
    let mut together = Vec::new();
    for m in messages {
        if is_view(&m) {
            if !together.is_empty() {
                steps.push(Step::Run(std::mem::take(&mut together)));
            }
            steps.push(Step::View(m));
            synced = true;
        } else if synced {
            together.push(m);
        } else {
            steps.push(Step::Hold(m));
        }
    }
    if !together.is_empty() {
        steps.push(Step::Run(together));
    }
    steps
}

/// Consecutive messages, by their ops counts, cut into calls of at most [`OPS_TOGETHER`]
/// ops (one message alone may have more): how many messages each call takes.
fn calls(counts: &[usize]) -> Vec<usize> {
    let mut calls = Vec::new();
    let (mut messages, mut ops) = (0, 0);
    for &n in counts {
        if messages > 0 && ops + n > OPS_TOGETHER {
            calls.push(messages);
            (messages, ops) = (0, 0);
        }
        messages += 1;
        ops += n;
    }
    if messages > 0 {
        calls.push(messages);
    }
    calls
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

    /// The ops of a message if they may run here (signed by an enrolled scheduler for this
    /// node, within limits, secrets opened); a message that may not is set aside and
    /// terminated.
    async fn check(&mut self, m: Delivered) -> Option<(Delivered, Vec<NodeOp>)> {
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
                self.set_aside(m.seq, "untrusted_ops", why);
                m.ack(&self.client, Reply::Term).await;
                return None;
            }
        };
        let ops = self.within_limits(ops, m.seq);
        let ops = self.open_secrets(ops);
        Some((m, ops))
    }

    /// Takes the messages delivered together, in order, as [`steps`] says. False when the
    /// actor is gone.
    async fn take(&mut self, delivered: Vec<Delivered>) -> bool {
        let mut checked = Vec::with_capacity(delivered.len());
        for m in delivered {
            if let Some(c) = self.check(m).await {
                checked.push(c);
            }
        }
        let is_view = |(_, ops): &(Delivered, Vec<NodeOp>)| {
            ops.iter().any(|o| matches!(o, NodeOp::Sync { .. }))
        };
        for step in steps(checked, is_view, self.synced) {
            let done = match step {
                Step::Hold((m, ops)) => {
                    self.held.insert(m.seq, (m, ops));
                    true
                }
                Step::Run(messages) => self.run_in_calls(messages).await,
                Step::View((m, ops)) => self.view(m, ops).await,
            };
            if !done {
                return false;
            }
        }
        true
    }

    /// Runs a view of the log (a `sync` op), then, at the first, the ops held until it.
    async fn view(&mut self, m: Delivered, ops: Vec<NodeOp>) -> bool {
        let lost = ops
            .iter()
            .any(|o| matches!(o, NodeOp::Sync { view } if view.reason == SyncReason::Lost));
        if !self.run(vec![(m, ops)]).await {
            return false;
        }
        if !self.synced {
            self.synced = true;
            info!(node = %self.node, held = self.held.len(), "the scheduler's view came; running the ops held until then");
            let held = std::mem::take(&mut self.held).into_values().collect();
            if !self.run_in_calls(held).await {
                return false;
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

    /// Runs ops messages (no view among them), in order, in as few calls as [`calls`] says.
    async fn run_in_calls(&self, messages: Vec<(Delivered, Vec<NodeOp>)>) -> bool {
        let counts: Vec<usize> = messages.iter().map(|(_, ops)| ops.len()).collect();
        let mut messages = messages.into_iter();
        for n in calls(&counts) {
            if !self.run(messages.by_ref().take(n).collect()).await {
                return false;
            }
        }
        true
    }

    /// Runs messages' ops, in order, through the actor in one call and acknowledges each
    /// (telling JetStream they are still at work meanwhile: pulls and slow starts can
    /// outlast the ack wait); false when the actor is gone. Ops that partly failed send
    /// every message of the call again (a node takes a start once per head, a stop of what
    /// is gone is done).
    async fn run(&self, messages: Vec<(Delivered, Vec<NodeOp>)>) -> bool {
        if messages.is_empty() {
            return true;
        }
        let (messages, ops): (Vec<Delivered>, Vec<Vec<NodeOp>>) = messages.into_iter().unzip();
        let ops: Vec<NodeOp> = ops.into_iter().flatten().collect();
        let call = async { ractor::call!(self.actor, NodeMsg::Ops, ops) };
        let progress = || {
            futures::future::join_all(
                messages
                    .iter()
                    .map(|m| m.ack(&self.client, Reply::Progress)),
            )
            .map(|_| ())
        };
        let result = while_working(OPS_PROGRESS_EVERY, call, progress).await;
        let failed = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => return false,
        };
        // One line for the call, not one a message: they share the failure.
        if let Some(e) = &failed {
            let retried = messages
                .iter()
                .filter(|m| !redeliver::is_last(m.delivered))
                .count();
            if retried > 0 {
                warn!(node = %self.node, error = %e, messages = retried, "ops partly failed; will retry");
            }
        }
        for m in &messages {
            let kind = match &failed {
                None => Reply::Done,
                Some(e) if redeliver::is_last(m.delivered) => {
                    let why = format!("ops failed after {} deliveries: {e}", m.delivered);
                    self.set_aside(m.seq, "max_deliveries", why);
                    Reply::Term
                }
                Some(_) => Reply::Nak(redeliver::nak_delay(m.delivered)),
            };
            m.ack(&self.client, kind).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ops_run_together_a_view_alone_and_ops_before_the_first_view_wait() {
        use Step::*;
        let steps = |messages: &[&'static str], synced| {
            steps(messages.to_vec(), |m| m.starts_with("view"), synced)
        };
        // Synced: ops messages run together, broken by a view, which runs alone.
        assert_eq!(
            steps(&["a", "b", "view1", "c"], true),
            vec![Run(vec!["a", "b"]), View("view1"), Run(vec!["c"])]
        );
        // Not yet synced: what comes before the first view is held; after it, ops run.
        assert_eq!(
            steps(&["a", "view1", "b", "c"], false),
            vec![Hold("a"), View("view1"), Run(vec!["b", "c"])]
        );
        assert_eq!(steps(&["a", "b"], false), vec![Hold("a"), Hold("b")]);
        assert_eq!(
            steps(&["view1", "view2"], true),
            vec![View("view1"), View("view2")]
        );
        assert_eq!(steps(&[], true), Vec::new());
    }

    #[test]
    fn a_call_holds_a_messages_worth_of_ops_unless_one_message_has_more() {
        let half = OPS_TOGETHER / 2;
        assert_eq!(calls(&[half, half, half, 1]), vec![2, 2]);
        assert_eq!(calls(&[1, OPS_TOGETHER + 1, 1]), vec![1, 1, 1]);
        assert_eq!(calls(&[1; 16]), vec![16]);
        assert_eq!(calls(&[]), Vec::<usize>::new());
    }
}
