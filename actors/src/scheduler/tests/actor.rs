//! The scheduler actor over in-memory ports, on a paused clock: what it appends and sends,
//! what it retries, and when it wakes up, in milliseconds of test time.

use std::time::Duration;

use bulkhead_schemas::event::{Exited, ReplicaRequested};
use ractor::{Actor, ActorRef};
use serde_json::json;

use super::*;
use crate::aside::Aside;
use crate::clock::Clock;
use crate::liveness::Ear;
use crate::ports::log::Batch;
use crate::ports::mem_log::MemLog;
use crate::ports::ops::RecordingOps;
use crate::scheduler::actor::{SchedulerActor, SchedulerArgs, SchedulerMsg, SchedulerStats};

/// A scheduler actor with its twins, as the service would run it.
struct Shell {
    actor: ActorRef<SchedulerMsg>,
    log: MemLog,
    ops: RecordingOps,
    clock: Clock,
    seq: u64,
}

impl Shell {
    /// Nodes beating every `beat_ms` (their first beat now; later ones are the test's).
    async fn start(nodes: &[&str], beat_ms: u64) -> Shell {
        Shell::start_paced(nodes, beat_ms, 0).await
    }

    /// As [`Shell::start`], the nodes paced to at most `beats_per_sec` (0: not paced).
    async fn start_paced(nodes: &[&str], beat_ms: u64, beats_per_sec: u64) -> Shell {
        let clock = Clock::tokio();
        let mut core = SchedulerCore::default();
        core.set_heartbeat_budget(beats_per_sec);
        for n in nodes {
            beat_in(&mut core, &beat(n, beat_ms), clock.now_ms());
        }
        let (log, ops) = (MemLog::default(), RecordingOps::default());
        let args = SchedulerArgs {
            core,
            log: log.clone(),
            ops: ops.clone(),
            tick: Duration::from_millis(200),
            clock,
        };
        let (actor, _) = Actor::spawn(None, SchedulerActor::default(), args)
            .await
            .unwrap();
        Shell {
            actor,
            log,
            ops,
            clock,
            seq: 0,
        }
    }

    /// A command as the service hands it over; the dispositions the actor answers.
    async fn command(&mut self, kind: CommandKind, body: serde_json::Value) -> Vec<Disposition> {
        self.seq += 1;
        self.resend(kind, self.seq, body).await
    }

    /// The command at `seq` again (a redelivery).
    async fn resend(
        &self,
        kind: CommandKind,
        seq: u64,
        body: serde_json::Value,
    ) -> Vec<Disposition> {
        let cmd = Command {
            cmd_seq: seq,
            stored_ms: self.clock.now_ms(),
            kind,
            tenant: T.into(),
            payload: body.to_string().into_bytes(),
            traceparent: None,
            signature: None,
        };
        let out = ractor::call!(self.actor, SchedulerMsg::Commands, vec![cmd]).unwrap();
        out.into_iter().map(|(_, d)| d).collect()
    }

    /// Another writer's event about workload `id` of tenant [`T`], stored and then
    /// delivered as the log follower would.
    fn logged(&self, id: &str, body: EventBody) {
        let stored = self.log.write(Event::new("other", &key(id), None, body));
        self.deliver(vec![stored]);
    }

    fn deliver(&self, events: Vec<Stored>) {
        let batch = Batch::from(events);
        self.actor
            .send_message(SchedulerMsg::Logged(batch))
            .unwrap();
    }

    async fn stats(&self) -> SchedulerStats {
        ractor::call!(self.actor, SchedulerMsg::Stats).unwrap()
    }

    /// The start ops sent so far: (node, workload, replica).
    fn starts(&self) -> Vec<(String, String, u32)> {
        self.sent(|n, op| match op {
            NodeOp::Start {
                workload, replica, ..
            } => Some((n.to_owned(), id_of(&workload), replica)),
            NodeOp::Stop { .. } | NodeOp::Sync { .. } | NodeOp::Pace { .. } => None,
        })
    }

    fn stops(&self) -> Vec<(String, String, u32)> {
        self.sent(|n, op| match op {
            NodeOp::Stop {
                workload, replica, ..
            } => Some((n.to_owned(), id_of(&workload), replica)),
            NodeOp::Start { .. } | NodeOp::Sync { .. } | NodeOp::Pace { .. } => None,
        })
    }

    /// What `pick` takes of each op sent so far (with its node), in order.
    fn sent<T>(&self, pick: impl Fn(&str, NodeOp) -> Option<T>) -> Vec<T> {
        let ops = self.ops.ops().into_iter();
        ops.filter_map(|(n, op)| pick(&n, op)).collect()
    }
}

/// The id part of a workload key.
fn id_of(key: &str) -> String {
    bulkhead_schemas::subjects::split_key(key)
        .map_or(key, |(_, id)| id)
        .to_owned()
}

/// A heartbeat of node `n` saying it beats every `ms`.
fn beat(n: &str, ms: u64) -> NodeHeartbeat {
    NodeHeartbeat {
        interval_ms: ms,
        ..hb(n, 1000)
    }
}

/// Long enough that no node falls silent in a test about something else.
const MINUTE: u64 = 60_000;

fn spec(id: &str, replicas: u32) -> serde_json::Value {
    json!({"id": id, "image": "i", "memory_mb": 100, "cpu_millicores": 10,
        "replicas": replicas, "restart": {"policy": "always"}})
}

/// Lets the actor work through its mailbox and timers up to `ms` of test time.
async fn pass(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn a_submission_is_stored_acknowledged_and_its_starts_sent_with_the_head() {
    let mut s = Shell::start(&["n1"], MINUTE).await;
    let d = s.command(CommandKind::Submit, spec("a", 2)).await;
    assert_eq!(d, [Disposition::Ack]);
    assert_eq!(
        s.log.kinds(&key("a")),
        ["accepted", "scheduled", "scheduled"]
    );
    let head = s.log.head(&key("a")).unwrap();
    let heads = s.sent(|_, op| match op {
        NodeOp::Start { head, .. } | NodeOp::Stop { head, .. } => Some(head.seq),
        NodeOp::Sync { .. } | NodeOp::Pace { .. } => None,
    });
    assert_eq!(
        heads,
        [head.seq, head.seq],
        "each op names the head it follows"
    );
    assert_eq!(
        s.starts(),
        [("n1".into(), "a".into(), 0), ("n1".into(), "a".into(), 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_is_placed_when_its_backoff_ends_not_before() {
    let mut s = Shell::start(&["n1"], MINUTE).await;
    s.command(CommandKind::Submit, spec("a", 1)).await;
    let exited = EventBody::Exited(Exited {
        replica: 0,
        node: "n1".into(),
        code: 1,
        reason: "error".into(),
        finished_at: String::new(),
    });
    let backoff = EventBody::ReplicaRequested(ReplicaRequested {
        replica: 0,
        cause: "exited: code 1 (error)".into(),
        attempt: 1,
        not_before: bulkhead_schemas::rfc3339_from_ms(s.clock.now_ms() + 5_000),
    });
    s.logged(
        "a",
        EventBody::Started(Started {
            replica: 0,
            node: "n1".into(),
            container: "c1".into(),
            confinement: None,
        }),
    );
    s.logged("a", exited);
    s.logged("a", backoff);
    pass(4_900).await;
    assert_eq!(s.starts().len(), 1, "still backing off after 4.9 s");
    pass(300).await;
    assert_eq!(
        s.starts().len(),
        2,
        "placed again once the 5 s backoff ended"
    );
    assert_eq!(s.log.kinds(&key("a")).last(), Some(&"scheduled"));
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_lost_a_race_is_redelivered_then_stops_every_copy() {
    let mut s = Shell::start(&["n1", "n2"], MINUTE).await;
    s.command(CommandKind::Submit, spec("a", 2)).await;
    let started = |replica, node: &str| {
        EventBody::Started(Started {
            replica,
            node: node.into(),
            container: format!("c{replica}"),
            confinement: None,
        })
    };
    let first = s
        .log
        .stored()
        .into_iter()
        .find(|e| e.event.kind() == "scheduled");
    let node0 = match first.map(|e| e.event.body) {
        Some(EventBody::Scheduled(sch)) => sch.node,
        other => panic!("{other:?}"),
    };
    // A node's fact lands between the scheduler's view and its append.
    s.log
        .interpose(Event::new("node", &key("a"), None, started(0, &node0)));
    let stop = json!({"id": "a"});
    let d = s.command(CommandKind::Stop, stop.clone()).await;
    assert!(
        matches!(d.as_slice(), [Disposition::Retry(why)] if why.contains("moved")),
        "the head moved: decided again later: {d:?}"
    );
    assert!(s.stops().is_empty());
    // The follower brings the fact; the redelivered command lands.
    let fact = s.log.stored().into_iter().last().unwrap();
    s.deliver(vec![fact]);
    let d = s.resend(CommandKind::Stop, s.seq, stop).await;
    assert_eq!(d, [Disposition::Ack]);
    assert_eq!(s.log.kinds(&key("a")).last(), Some(&"stop_requested"));
    let mut stopped: Vec<u32> = s.stops().into_iter().map(|(_, _, r)| r).collect();
    stopped.sort();
    assert_eq!(stopped, [0, 1], "every copy holding a node is told to stop");
}

#[tokio::test(start_paused = true)]
async fn what_is_no_command_or_no_fact_is_set_aside_and_counted() {
    let s = Shell::start(&["n1"], MINUTE).await;
    let aside = Command::read("bulkhead.cmd.foo", 7, 0, b"{}".to_vec(), None, None).unwrap_err();
    assert_eq!(aside.code, "unknown_command");
    s.actor.send_message(SchedulerMsg::SetAside(aside)).unwrap();
    s.logged(
        "ghost",
        EventBody::Started(Started {
            replica: 0,
            node: "n1".into(),
            container: "c".into(),
            confinement: None,
        }),
    );
    let malformed = Aside::new(9, "bulkhead.evt.wl.x.started", "malformed", "not JSON");
    let batch = Batch {
        set_aside: vec![malformed],
        ..Batch::default()
    };
    s.actor.send_message(SchedulerMsg::Logged(batch)).unwrap();
    let stats = s.stats().await;
    assert_eq!(stats.set_aside, 3, "{stats:?}");
    assert_eq!(stats.workloads, 0, "nothing was applied");
    assert!(s.ops.ops().is_empty(), "nothing sent");
    assert_eq!(
        s.log.kinds(&key("ghost")),
        ["started"],
        "only the fact set aside"
    );
}

/// Its own events the reader passed by (stored and applied as the append came back) are
/// counted, and change nothing.
#[tokio::test(start_paused = true)]
async fn own_events_passed_by_are_counted_and_change_nothing() {
    let s = Shell::start(&["n1"], 1_000).await;
    let before = s.stats().await;
    let batch = Batch {
        own: crate::ports::log::OwnPassed {
            count: 2,
            last_seq: 7,
        },
        ..Batch::default()
    };
    s.actor.send_message(SchedulerMsg::Logged(batch)).unwrap();
    let stats = s.stats().await;
    assert_eq!(stats.own_passed, 2, "{stats:?}");
    assert_eq!(
        SchedulerStats {
            own_passed: 0,
            ..stats
        },
        before
    );
    assert!(s.ops.ops().is_empty(), "nothing sent");
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_takes_nothing_new_until_it_beats_again() {
    let mut s = Shell::start(&["n1"], 1_000).await;
    s.command(CommandKind::Submit, spec("a", 1)).await;
    assert_eq!(s.starts().len(), 1);
    pass(3_300).await; // three missed 1 s beats
    s.command(CommandKind::Submit, spec("b", 1)).await;
    assert_eq!(s.log.kinds(&key("b")), ["accepted"], "no ready node for b");
    s.actor
        .send_message(SchedulerMsg::Heartbeat(beat("n1", 1_000), s.clock.now_ms()))
        .unwrap();
    pass(300).await;
    assert_eq!(
        s.log.kinds(&key("b")),
        ["accepted", "scheduled"],
        "placed once n1 is back"
    );
    assert_eq!(s.starts().last(), Some(&("n1".into(), "b".into(), 0)));
}

#[tokio::test(start_paused = true)]
async fn nodes_past_the_budget_are_told_the_pace_and_again_only_if_they_did_not_listen() {
    // Three nodes, one beat a second for the whole cluster: each should beat every 4 s.
    let s = Shell::start_paced(&["n1", "n2", "n3"], 1_000, 1).await;
    let beat_all = |ms: u64| {
        for n in ["n1", "n2", "n3"] {
            s.actor
                .send_message(SchedulerMsg::Heartbeat(beat(n, ms), s.clock.now_ms()))
                .unwrap();
        }
    };
    let paces = || {
        s.sent(|n, op| match op {
            NodeOp::Pace { every_ms } => Some((n.to_owned(), every_ms)),
            NodeOp::Start { .. } | NodeOp::Stop { .. } | NodeOp::Sync { .. } => None,
        })
    };
    beat_all(1_000);
    pass(250).await; // a tick
    let told: Vec<(String, u64)> = ["n1", "n2", "n3"].map(|n| (n.into(), 4_000)).into();
    assert_eq!(paces(), told);
    pass(750).await;
    beat_all(1_000); // the ops on their way: not told again
    pass(1_000).await;
    beat_all(4_000); // they listened
    pass(6_000).await;
    assert_eq!(paces(), told);
    beat_all(1_000); // two paces (8 s) after they were told, fast again (restarted)
    pass(250).await;
    assert_eq!(paces().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_silence_while_the_scheduler_was_cut_off_is_not_the_nodes() {
    let mut s = Shell::start(&["n1"], 1_000).await;
    s.actor
        .send_message(SchedulerMsg::Hearing {
            ear: Ear::Connection,
            up: false,
            at_ms: s.clock.now_ms(),
        })
        .unwrap();
    pass(6_000).await; // six beats that could not arrive
    s.actor
        .send_message(SchedulerMsg::Hearing {
            ear: Ear::Connection,
            up: true,
            at_ms: s.clock.now_ms(),
        })
        .unwrap();
    pass(500).await; // within a fresh interval, no beat yet
    s.command(CommandKind::Submit, spec("a", 1)).await;
    assert_eq!(
        s.log.kinds(&key("a")),
        ["accepted", "scheduled"],
        "n1 still takes placements"
    );
    pass(3_300).await; // three missed beats since the reconnect: now it is the node's
    s.command(CommandKind::Submit, spec("b", 1)).await;
    assert_eq!(s.log.kinds(&key("b")), ["accepted"], "no ready node for b");
}

#[tokio::test(start_paused = true)]
async fn a_stop_whose_first_send_failed_is_sent_again_until_it_is_delivered() {
    let mut s = Shell::start(&["n1"], MINUTE).await;
    s.command(CommandKind::Submit, spec("a", 1)).await;
    s.logged(
        "a",
        EventBody::Started(Started {
            replica: 0,
            node: "n1".into(),
            container: "c0".into(),
            confinement: None,
        }),
    );
    s.ops.cut_off("n1");
    let d = s.command(CommandKind::Stop, json!({"id": "a"})).await;
    assert_eq!(d, [Disposition::Ack], "stop_requested is in the log");
    assert_eq!(s.log.kinds(&key("a")).last(), Some(&"stop_requested"));
    pass(1_000).await;
    assert!(s.stops().is_empty(), "n1 is cut off: nothing delivered yet");
    s.ops.reach("n1");
    pass(500).await;
    assert_eq!(
        s.stops(),
        [("n1".into(), "a".into(), 0)],
        "delivered once n1 can be reached, and only once"
    );
    pass(1_000).await;
    assert_eq!(s.stops().len(), 1, "not sent again once delivered");
}

#[tokio::test(start_paused = true)]
async fn replicas_stored_though_the_append_seemed_to_fail_are_started_once_the_log_brings_them() {
    let mut s = Shell::start(&["n1"], 1_000).await;
    s.log.lose_outcome_of_next(1);
    let d = s.command(CommandKind::Submit, spec("a", 2)).await;
    assert!(matches!(d[..], [Disposition::Retry(_)]), "{d:?}");
    assert!(
        s.starts().is_empty(),
        "no op for an append that seemed to fail"
    );
    assert_eq!(
        s.log.kinds(&key("a")),
        ["accepted", "scheduled", "scheduled"]
    );
    // The follower brings what the log stored: the replicas are owed their ops.
    s.deliver(s.log.stored());
    pass(10).await;
    let mut starts = s.starts();
    starts.sort();
    assert_eq!(
        starts,
        [("n1".into(), "a".into(), 0), ("n1".into(), "a".into(), 1)]
    );
    // The command again: the workload is in the log, acknowledged, nothing sent twice.
    let d = s.resend(CommandKind::Submit, 1, spec("a", 2)).await;
    assert!(matches!(d[..], [Disposition::Ack]), "{d:?}");
    pass(500).await;
    assert_eq!(s.starts().len(), 2);
}
