//! The node actor over the sim runtime and in-memory ports, on a paused clock: heartbeats,
//! starts and stops turned into facts after the workload's head, exits, redeliveries, and
//! facts that could not be logged at first.

use std::sync::Arc;
use std::time::Duration;

use bulkhead_schemas::event::{Accepted, Event, EventBody, Scheduled};
use bulkhead_schemas::{ChainHead, NodeOp, RuntimeClass, WorkloadSpec};
use ractor::{Actor, ActorRef};

use super::{NodeActor, NodeArgs, NodeConfig, NodeMsg};
use crate::ports::heartbeat::RecordingBeats;
use crate::ports::mem_log::MemLog;
use crate::ports::sim::{SIM_EXIT_AFTER_MS, SIM_EXIT_CODE, SimRuntime};

struct Shell {
    actor: ActorRef<NodeMsg>,
    runtime: Arc<SimRuntime>,
    log: MemLog,
    beats: RecordingBeats,
}

impl Shell {
    async fn start() -> Shell {
        let (rt, mut exits) = SimRuntime::new("n1", vec![RuntimeClass::Runc], Duration::ZERO);
        let runtime = Arc::new(rt);
        let (log, beats) = (MemLog::default(), RecordingBeats::default());
        let args = NodeArgs {
            config: NodeConfig::example("n1"),
            runtime: runtime.clone(),
            log: log.clone(),
            sink: beats.clone(),
        };
        let (actor, _) = Actor::spawn(None, NodeActor::default(), args)
            .await
            .unwrap();
        // As the service does: the runtime's exits go to the actor.
        let a = actor.clone();
        tokio::spawn(async move {
            while let Some(n) = exits.recv().await {
                if a.send_message(NodeMsg::Exit(n)).is_err() {
                    return;
                }
            }
        });
        Shell {
            actor,
            runtime,
            log,
            beats,
        }
    }

    /// What the scheduler would have logged before sending the op; the op's head.
    fn admit(&self, id: &str, spec: &WorkloadSpec) -> ChainHead {
        let accepted = EventBody::Accepted(Accepted {
            spec: spec.clone(),
            cmd_seq: 1,
            by: Default::default(),
            pending: None,
        });
        self.log.write(Event::new("scheduler", id, None, accepted));
        let scheduled = EventBody::Scheduled(Scheduled {
            replica: 0,
            node: "n1".into(),
            runtime_class: RuntimeClass::Runc,
            replaces: None,
        });
        let s = self.log.write(Event::new("scheduler", id, None, scheduled));
        ChainHead {
            seq: s.seq,
            hash: hex::encode(s.hash),
        }
    }

    async fn ops(&self, ops: Vec<NodeOp>) {
        ractor::call!(self.actor, NodeMsg::Ops, ops)
            .unwrap()
            .unwrap();
    }
}

fn spec(env: &[(&str, &str)]) -> WorkloadSpec {
    let mut s: WorkloadSpec = serde_json::from_value(
        serde_json::json!({"id": "w", "image": "i", "memory_mb": 64, "cpu_millicores": 10}),
    )
    .unwrap();
    s.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    s
}

fn start(spec: &WorkloadSpec, head: &ChainHead) -> NodeOp {
    NodeOp::Start {
        workload: "w".into(),
        replica: 0,
        spec: spec.clone(),
        head: head.clone(),
        traceparent: None,
    }
}

async fn pass(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn heartbeats_come_every_interval_and_count_what_runs() {
    let s = Shell::start().await;
    let spec = spec(&[]);
    let head = s.admit("w", &spec);
    s.ops(vec![start(&spec, &head)]).await;
    pass(3_500).await;
    let beats = s.beats.beats();
    assert_eq!(beats.len(), 4, "one at start, then one a second");
    let last = beats.last().unwrap();
    assert_eq!((last.running, last.free.memory_mb), (1, 1024 - 64));
}

#[tokio::test(start_paused = true)]
async fn a_start_becomes_started_after_the_head_once_however_often_it_comes() {
    let s = Shell::start().await;
    let spec = spec(&[]);
    let head = s.admit("w", &spec);
    s.ops(vec![start(&spec, &head)]).await;
    s.ops(vec![start(&spec, &head)]).await; // redelivered
    assert_eq!(s.runtime.running(), 1);
    assert_eq!(s.log.kinds("w"), ["accepted", "scheduled", "started"]);
    let started = s.log.workload("w").pop().unwrap();
    assert_eq!(started.prev, Some(head.hash), "chained after the op's head");
    assert_eq!(started.actor.service, "node/n1");
}

#[tokio::test(start_paused = true)]
async fn an_exit_is_logged_after_its_start_and_the_container_removed() {
    let s = Shell::start().await;
    let spec = spec(&[(SIM_EXIT_AFTER_MS, "0"), (SIM_EXIT_CODE, "3")]);
    let head = s.admit("w", &spec);
    s.ops(vec![start(&spec, &head)]).await;
    pass(10).await;
    assert_eq!(
        s.log.kinds("w"),
        ["accepted", "scheduled", "started", "exited"]
    );
    match &s.log.workload("w")[3].body {
        EventBody::Exited(x) => assert_eq!((x.code, x.reason.as_str()), (3, "error")),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.runtime.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_ended_container_whose_removal_fails_is_removed_on_a_later_try() {
    let s = Shell::start().await;
    s.runtime.fail_next_stops(2);
    let spec = spec(&[(SIM_EXIT_AFTER_MS, "0"), (SIM_EXIT_CODE, "0")]);
    let head = s.admit("w", &spec);
    s.ops(vec![start(&spec, &head)]).await;
    pass(10).await;
    assert_eq!(
        s.runtime.stops(),
        1,
        "the first removal is tried at once, and fails"
    );
    pass(1_000).await;
    assert_eq!(s.runtime.stops(), 2, "tried again after 1 s, and fails");
    pass(2_000).await;
    assert_eq!(
        s.runtime.stops(),
        3,
        "tried again after 2 s more, and succeeds"
    );
    pass(60_000).await;
    assert_eq!(s.runtime.stops(), 3, "not tried after it succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_container_and_logs_stopped() {
    let s = Shell::start().await;
    let spec = spec(&[]);
    let head = s.admit("w", &spec);
    s.ops(vec![start(&spec, &head)]).await;
    let stop = NodeOp::Stop {
        workload: "w".into(),
        replica: 0,
        head: head.clone(),
        grace_secs: Some(1),
        traceparent: None,
    };
    s.ops(vec![stop]).await;
    assert_eq!(s.runtime.running(), 0);
    assert_eq!(
        s.log.kinds("w"),
        ["accepted", "scheduled", "started", "stopped"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_fact_the_log_refused_is_logged_again_within_a_heartbeat_interval() {
    let s = Shell::start().await;
    let spec = spec(&[]);
    let head = s.admit("w", &spec);
    s.log.fail_next(1);
    s.ops(vec![start(&spec, &head)]).await;
    assert_eq!(s.log.kinds("w"), ["accepted", "scheduled"], "not yet");
    pass(1_100).await;
    assert_eq!(s.log.kinds("w"), ["accepted", "scheduled", "started"]);
}

#[tokio::test(start_paused = true)]
async fn a_paced_node_beats_at_the_pace_but_still_logs_a_refused_fact_within_its_own_interval() {
    let s = Shell::start().await; // beating every second
    s.ops(vec![NodeOp::Pace { every_ms: 8_000 }]).await;
    pass(1).await;
    let stated = s.beats.beats().last().map(|b| b.interval_ms);
    assert_eq!(stated, Some(8_000), "a beat at once, stating the pace");
    let spec = spec(&[]);
    let head = s.admit("w", &spec);
    s.log.fail_next(1);
    s.ops(vec![start(&spec, &head)]).await;
    let beats = s.beats.beats().len();
    pass(1_100).await;
    assert_eq!(s.log.kinds("w"), ["accepted", "scheduled", "started"]);
    assert_eq!(s.beats.beats().len(), beats, "no beat before the pace");
    pass(7_000).await;
    assert_eq!(s.beats.beats().len(), beats + 1, "one at the pace");
}

#[tokio::test(start_paused = true)]
async fn a_fact_stored_whose_outcome_was_lost_is_not_logged_twice_and_the_next_chains_onto_it() {
    let s = Shell::start().await;
    let spec = spec(&[(SIM_EXIT_AFTER_MS, "3000"), (SIM_EXIT_CODE, "0")]);
    let head = s.admit("w", &spec);
    s.log.lose_outcome_of_next(1);
    s.ops(vec![start(&spec, &head)]).await;
    assert_eq!(s.log.kinds("w"), ["accepted", "scheduled", "started"]);
    // Retried within a heartbeat interval, re-chained onto the log's head: its id is stored.
    pass(1_100).await;
    assert_eq!(s.log.kinds("w"), ["accepted", "scheduled", "started"]);
    pass(3_000).await;
    assert_eq!(
        s.log.kinds("w"),
        ["accepted", "scheduled", "started", "exited"]
    );
    let stored = s.log.stored();
    let chain: Vec<_> = stored.iter().filter(|st| st.event.subject == "w").collect();
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].event.prev,
            Some(hex::encode(pair[0].hash)),
            "chained"
        );
    }
}
