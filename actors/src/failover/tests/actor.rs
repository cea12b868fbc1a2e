//! The failover actor over the in-memory log, on a paused clock: exits answered once,
//! decisions that lost a race taken again, silent nodes declared lost (empty ones too, and
//! not a whole cluster silent at once).

use std::time::Duration;

use bulkhead_schemas::WorkloadSpec;
use bulkhead_schemas::event::{Accepted, Event, EventBody, Exited, NodeJoined, Scheduled, Started};
use ractor::{Actor, ActorRef};

use crate::clock::Clock;
use crate::failover::actor::{FailoverActor, FailoverArgs, FailoverMsg, FailoverStats};
use crate::ports::log::{Batch, Stored};
use crate::ports::mem_log::MemLog;
use crate::projection::Projection;

struct Shell {
    actor: ActorRef<FailoverMsg>,
    log: MemLog,
    clock: Clock,
}

impl Shell {
    /// A failover started over what `log` holds (as rebuilt at takeover).
    async fn start(log: MemLog) -> Shell {
        Shell::start_with(log, Vec::new()).await
    }

    /// The same, with these node events read before it started.
    async fn start_with(log: MemLog, nodes: Vec<Stored>) -> Shell {
        let clock = Clock::tokio();
        let mut projection = Projection::default();
        projection.logged(Batch {
            nodes,
            ..Batch::from(log.stored())
        });
        let args = FailoverArgs {
            projection,
            log: log.clone(),
            lost_timeout: Duration::from_secs(3),
            tick: Duration::from_millis(100),
            clock,
            intervals: Default::default(),
        };
        let (actor, _) = Actor::spawn(None, FailoverActor::default(), args)
            .await
            .unwrap();
        Shell { actor, log, clock }
    }

    /// Another writer's event, stored and delivered as the follower would.
    fn logged(&self, id: &str, body: EventBody) {
        let s = self.log.write(Event::new("node/n1", id, None, body));
        self.deliver(vec![s]);
    }

    fn deliver(&self, events: Vec<crate::ports::log::Stored>) {
        let msg = FailoverMsg::Logged(Batch::from(events));
        self.actor.send_message(msg).unwrap();
    }

    /// Node events, delivered as the follower would.
    fn node_events(&self, nodes: Vec<Stored>) {
        let msg = FailoverMsg::Logged(Batch {
            nodes,
            ..Batch::default()
        });
        self.actor.send_message(msg).unwrap();
    }

    fn beat(&self, node: &str) {
        let msg = FailoverMsg::Beat {
            node: node.into(),
            interval_ms: 1000,
            at_ms: self.clock.now_ms(),
        };
        self.actor.send_message(msg).unwrap();
    }

    /// The nodes declared lost, in the order of their `lost` events.
    fn nodes_lost(&self) -> Vec<String> {
        let events = self.log.node_events().into_iter();
        events
            .filter(|e| e.kind() == "lost")
            .map(|e| e.subject)
            .collect()
    }

    async fn stats(&self) -> FailoverStats {
        ractor::call!(self.actor, FailoverMsg::Stats).unwrap()
    }
}

/// A log where workload `w` runs `replicas` copies on `node`, restarting on failure.
fn running(replicas: u32, node: &str) -> MemLog {
    let log = MemLog::default();
    let spec: WorkloadSpec = serde_json::from_value(serde_json::json!({
        "id": "w", "image": "i", "memory_mb": 10, "cpu_millicores": 5, "replicas": replicas,
        "restart": {"policy": "on-failure", "backoff_initial_ms": 100}
    }))
    .unwrap();
    let write = |body| log.write(Event::new("scheduler", "w", None, body));
    write(EventBody::Accepted(Accepted {
        spec,
        cmd_seq: 1,
        by: Default::default(),
        pending: None,
    }));
    for replica in 0..replicas {
        write(EventBody::Scheduled(Scheduled {
            replica,
            node: node.into(),
            runtime_class: Default::default(),
            replaces: None,
        }));
        write(EventBody::Started(Started {
            replica,
            node: node.into(),
            container: format!("c{replica}"),
            confinement: None,
        }));
    }
    log
}

/// Node `node`'s `joined`, as stored at `seq`.
fn joined(node: &str, seq: u64) -> Stored {
    let body = EventBody::Joined(NodeJoined {
        capacity: Default::default(),
        runtime_classes: vec![],
        runtime: "sim".into(),
    });
    let event = Event::new(&format!("node/{node}"), node, None, body);
    let (_, hash) = event.seal();
    Stored { seq, hash, event }
}

fn exited(replica: u32, code: i32) -> EventBody {
    EventBody::Exited(Exited {
        replica,
        node: "n1".into(),
        code,
        reason: "error".into(),
        finished_at: String::new(),
    })
}

async fn pass(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn an_exit_is_answered_by_one_restart() {
    let s = Shell::start(running(1, "n1")).await;
    s.beat("n1");
    s.logged("w", exited(0, 1));
    pass(500).await;
    let kinds = s.log.kinds("w");
    assert_eq!(kinds.last(), Some(&"replica_requested"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "replica_requested").count(),
        1
    );
    assert_eq!(s.stats().await.restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_decision_that_lost_a_race_is_taken_again_on_the_new_head() {
    let s = Shell::start(running(2, "n1")).await;
    s.beat("n1");
    // Replica 1's exit lands between the failover's view and its append for replica 0.
    let other = Event::new("node/n1", "w", None, exited(1, 1));
    s.log.interpose(other);
    s.logged("w", exited(0, 1));
    pass(50).await;
    let stats = s.stats().await;
    assert_eq!(stats.conflicts, 1, "{stats:?}");
    assert!(!s.log.kinds("w").contains(&"replica_requested"));
    // The follower brings the exit that won; both replicas are decided, each once.
    let won = s.log.stored().into_iter().last().unwrap();
    s.deliver(vec![won]);
    pass(500).await;
    let decided: Vec<u32> = s
        .log
        .workload("w")
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::ReplicaRequested(r) => Some(r.replica),
            _ => None,
        })
        .collect();
    assert_eq!(decided, [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_node_silent_past_the_timeout_is_lost_and_its_replicas_requested_elsewhere() {
    let s = Shell::start(running(1, "n1")).await;
    for _ in 0..10 {
        s.beat("n1");
        s.beat("n2");
        pass(1_000).await;
    }
    assert!(s.log.node_events().is_empty(), "beating nodes are not lost");
    for _ in 0..3 {
        s.beat("n2");
        pass(1_000).await;
    }
    pass(200).await;
    let lost = s.nodes_lost();
    assert_eq!(lost, ["n1"], "n1 went silent, n2 did not");
    let kinds = s.log.kinds("w");
    assert!(kinds.ends_with(&["lost", "replica_requested"]), "{kinds:?}");
    assert_eq!(s.stats().await.nodes_lost, 1);
}

#[tokio::test(start_paused = true)]
async fn a_replica_placed_on_a_node_already_lost_is_lost_at_the_next_tick() {
    let s = Shell::start(running(1, "n1")).await;
    s.beat("n1");
    pass(3_500).await;
    assert_eq!(s.stats().await.nodes_lost, 1, "n1 is silent");
    let before = s.log.kinds("w").len();
    // A scheduler that had not heard yet places the replacement on the lost node.
    s.logged(
        "w",
        EventBody::Scheduled(Scheduled {
            replica: 0,
            node: "n1".into(),
            runtime_class: Default::default(),
            replaces: None,
        }),
    );
    pass(300).await;
    let lost: Vec<Option<u32>> = s
        .log
        .workload("w")
        .into_iter()
        .skip(before)
        .filter_map(|e| match e.body {
            EventBody::Lost(l) => Some(l.replica),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [Some(0)], "{:?}", s.log.kinds("w"));
}

#[tokio::test(start_paused = true)]
async fn a_whole_cluster_silent_at_once_is_held_and_the_one_still_silent_lost_after() {
    let s = Shell::start(running(1, "n1")).await;
    let nodes = ["n1", "n2", "n3", "n4"];
    for _ in 0..3 {
        for n in nodes {
            s.beat(n);
        }
        pass(1_000).await;
    }
    // Not one beat for twenty seconds (past a mass silence's first turn at 10 s): a stalled
    // watch or a stuck server, not four nodes.
    pass(20_000).await;
    assert!(s.log.node_events().is_empty(), "none declared lost");
    let stats = s.stats().await;
    assert_eq!((stats.nodes_lost, stats.held), (0, 4));
    // Heard again: three beat, n1 does not. Every node gets a fresh interval when the
    // silence eases; n1, still silent a lost timeout later, is its own fault then.
    for _ in 0..2 {
        for n in &nodes[1..] {
            s.beat(n);
        }
        pass(1_000).await;
    }
    assert!(s.log.node_events().is_empty(), "not before a fresh timeout");
    for _ in 0..2 {
        for n in &nodes[1..] {
            s.beat(n);
        }
        pass(1_000).await;
    }
    let lost = s.nodes_lost();
    assert_eq!(lost, ["n1"]);
    assert!(s.log.kinds("w").ends_with(&["lost", "replica_requested"]));
    assert_eq!(s.stats().await.held, 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_node_is_watched_from_its_join_and_lost_when_it_never_beats() {
    // n2 joined before this failover started, n3 while it runs; neither has work, and
    // neither beats once this failover listens: both are silent from then.
    let s = Shell::start_with(running(1, "n1"), vec![joined("n2", 100)]).await;
    s.node_events(vec![joined("n3", 101)]);
    for _ in 0..5 {
        s.beat("n1");
        pass(1_000).await;
    }
    let mut lost = s.nodes_lost();
    lost.sort();
    assert_eq!(lost, ["n2", "n3"]);
    // Back: n2 beats again, and joins again once it has heard (no second loss).
    s.beat("n2");
    s.node_events(vec![joined("n2", 102)]);
    for _ in 0..5 {
        s.beat("n1");
        s.beat("n2");
        pass(1_000).await;
    }
    assert_eq!(s.nodes_lost().len(), 2, "{:?}", s.nodes_lost());
}
