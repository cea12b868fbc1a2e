//! Scan policy in the scheduler: gate, async, quarantine, verdict lifetimes.

use super::*;
use bulkhead_schemas::api::WorkloadState;
use bulkhead_schemas::event::{QuarantineAction, ScanCompleted};
use bulkhead_schemas::scan::{Finding, Severity, Verdict};

/// A scheduler with node n1, enrolled for runc, gvisor and kata, offering runc and gvisor.
fn core() -> SchedulerCore {
    let mut core = SchedulerCore::default();
    let mut hb = hb("n1", 4096);
    hb.runtime_classes = vec![RuntimeClass::Runc, RuntimeClass::Gvisor, RuntimeClass::Kata];
    beat_in(&mut core, &hb, 0);
    hb.runtime_classes.pop();
    core.heartbeat(&hb, 0).unwrap();
    core
}

fn submit(seq: u64, id: &str, trust: &str) -> Command {
    Command {
        cmd_seq: seq,
        stored_ms: 1_700_000_000_000,
        kind: CommandKind::Submit,
        tenant: T.into(),
        payload: serde_json::json!({"id": id, "image": "reg/app:1", "trust": trust,
            "runtime_class": "gvisor", "memory_mb": 64, "cpu_millicores": 10})
        .to_string()
        .into_bytes(),
        traceparent: None,
        signature: None,
    }
}

/// Stores a plan's appends at consecutive sequences and commits it.
fn run(core: &mut SchedulerCore, mut plan: Plan, seq: &mut u64) -> Commit {
    let out = store_all(&mut plan, seq);
    core.commit(plan, out)
}

fn verdict(sev: Option<Severity>) -> ScanCompleted {
    ScanCompleted {
        image: "reg/app:1".into(),
        digest: "sha256:abc".into(),
        job: "j".into(),
        worker: "w".into(),
        verdict: Some(Verdict {
            findings: sev
                .into_iter()
                .map(|s| Finding {
                    severity: s,
                    advisory: "CVE-1".into(),
                    aliases: vec![],
                    package: "openssl".into(),
                    installed: "1".into(),
                    fixed: Some("2".into()),
                    summary: String::new(),
                })
                .collect(),
            ..Verdict::default()
        }),
        error: None,
        layers: Vec::new(),
    }
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.appends
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.kind()))
        .collect()
}

#[test]
fn gate_waits_for_a_clean_verdict_then_places() {
    let mut c = core();
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "u", "untrusted")]);
    assert_eq!(kinds(&plan), ["accepted", "scan_requested"]);
    let commit = run(&mut c, plan, &mut seq);
    assert_eq!(commit.placed, 0);
    assert_eq!(commit.scan_jobs.len(), 1);
    assert_eq!(commit.scan_jobs[0].image, "reg/app:1");
    assert!(
        c.place_pending(10, bulkhead_schemas::now_ms())
            .appends
            .is_empty(),
        "held by the gate"
    );
    assert_eq!(c.unqueued_scans().len(), 1);

    let plan = c.scan_completed_now(verdict(Some(Severity::Medium)));
    assert_eq!(kinds(&plan), ["scan_completed"]);
    run(&mut c, plan, &mut seq);
    let plan = c.place_pending(10, bulkhead_schemas::now_ms());
    assert_eq!(kinds(&plan), ["scheduled"]);
    let commit = run(&mut c, plan, &mut seq);
    assert_eq!(commit.placed, 1);
    assert!(c.unqueued_scans().is_empty());
    // The node runs what was judged: the image pinned to the scanned digest.
    let Some(NodeOp::Start { spec, .. }) = commit.ops.values().flatten().next() else {
        panic!("a start op")
    };
    assert_eq!(spec.image, "reg/app@sha256:abc");
    let again = c.unstarted_ops();
    let Some(NodeOp::Start { spec, .. }) = again.values().flatten().next() else {
        panic!("sent again to a new scheduler")
    };
    assert_eq!(spec.image, "reg/app@sha256:abc");
    assert_eq!(
        c.projection
            .get(&key("u"))
            .unwrap()
            .spec
            .as_deref()
            .unwrap()
            .image,
        "reg/app:1",
        "the spec in the log keeps its reference"
    );
}

#[test]
fn gate_rejects_a_bad_verdict_with_the_findings() {
    let mut c = core();
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "u", "untrusted")]);
    run(&mut c, plan, &mut seq);
    let plan = c.scan_completed_now(verdict(Some(Severity::Critical)));
    assert_eq!(kinds(&plan), ["scan_completed", "rejected"]);
    run(&mut c, plan, &mut seq);
    assert!(
        c.place_pending(10, bulkhead_schemas::now_ms())
            .appends
            .is_empty(),
        "a rejected workload is never placed"
    );
    let w = c.projection.get(&key("u")).unwrap();
    assert_eq!(w.state(), WorkloadState::Rejected);
    let reason = w.reason.as_deref().unwrap();
    assert!(reason.contains("critical CVE-1 in openssl"), "{reason}");
    // The verdict is known now: the next untrusted submission is rejected at once.
    let plan = c.decide(&[submit(2, "u2", "untrusted")]);
    assert_eq!(kinds(&plan), ["rejected"]);
}

#[test]
fn async_places_at_once_and_quarantines_on_a_bad_verdict() {
    let mut c = core();
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "t", "multi_tenant")]);
    assert_eq!(kinds(&plan), ["accepted", "scan_requested", "scheduled"]);
    let commit = run(&mut c, plan, &mut seq);
    assert_eq!((commit.placed, commit.scan_jobs.len()), (1, 1));
    let plan = c.scan_completed_now(verdict(Some(Severity::High)));
    assert_eq!(
        kinds(&plan),
        ["scan_completed", "quarantined", "stop_requested"]
    );
    let commit = run(&mut c, plan, &mut seq);
    assert!(matches!(
        commit.ops.values().flatten().next(),
        Some(NodeOp::Stop { .. })
    ));
}

#[test]
fn async_quarantine_moves_to_the_stronger_class_after_the_old_copy_stopped() {
    let mut c = core();
    let mut hb = hb("n1", 4096);
    hb.runtime_classes = vec![RuntimeClass::Runc, RuntimeClass::Gvisor, RuntimeClass::Kata];
    c.heartbeat(&hb, 0).unwrap();
    c.policy.quarantine_class = Some(RuntimeClass::Kata);
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "t", "multi_tenant")]);
    run(&mut c, plan, &mut seq);
    let plan = c.scan_completed_now(verdict(Some(Severity::High)));
    assert_eq!(kinds(&plan), ["scan_completed", "quarantined"]);
    let EventBody::Quarantined(q) = &plan.appends[0].events[1].body else {
        unreachable!()
    };
    assert_eq!(
        (q.action, q.from, q.to),
        (
            QuarantineAction::Move,
            RuntimeClass::Gvisor,
            Some(RuntimeClass::Kata)
        )
    );
    assert!(q.reason.contains("CVE-1"), "{}", q.reason);
    let commit = run(&mut c, plan, &mut seq);
    let ops: Vec<_> = commit.ops.values().flatten().collect();
    assert!(
        matches!(ops[..], [NodeOp::Stop { replica: 0, .. }]),
        "{ops:?}"
    );
    // Nothing is placed while the old copy still runs.
    assert!(
        c.place_pending(10, bulkhead_schemas::now_ms())
            .appends
            .is_empty()
    );
    // The node reports the stop: the replica is placed again, now in kata.
    seq += 1;
    let head = c.projection.get(&key("t")).unwrap().head.hash;
    let stopped = Event::new(
        "node/n1",
        &key("t"),
        Some(&head),
        EventBody::Stopped(bulkhead_schemas::event::Stopped {
            replica: 0,
            node: "n1".into(),
        }),
    );
    c.apply(&Stored {
        seq,
        hash: stopped.seal().1,
        event: stopped,
    });
    let plan = c.place_pending(10, bulkhead_schemas::now_ms());
    assert_eq!(kinds(&plan), ["scheduled"]);
    let EventBody::Scheduled(s) = &plan.appends[0].events[0].body else {
        unreachable!()
    };
    assert_eq!(s.runtime_class, RuntimeClass::Kata);
    let commit = run(&mut c, plan, &mut seq);
    let Some(NodeOp::Start { spec, .. }) = commit.ops.values().flatten().next() else {
        panic!("a start op")
    };
    assert_eq!(
        spec.runtime_class,
        RuntimeClass::Kata,
        "the node starts it in kata"
    );
    let view = c.projection.get(&key("t")).unwrap().view(&key("t"));
    assert!(
        view.quarantine
            .as_deref()
            .is_some_and(|q| q.starts_with("moved from gvisor to kata: ")),
        "{view:?}"
    );
}

#[test]
fn a_known_bad_verdict_rejects_async_work_or_admits_it_quarantined() {
    let mut c = core();
    let mut hb = hb("n1", 4096);
    hb.runtime_classes = vec![RuntimeClass::Gvisor, RuntimeClass::Kata];
    c.heartbeat(&hb, 0).unwrap();
    let mut seq = 0;
    c.scan_completed_now(verdict(Some(Severity::High)));
    let plan = c.decide(&[submit(1, "a", "multi_tenant")]);
    assert_eq!(
        kinds(&plan),
        ["rejected"],
        "quarantine stops: never started"
    );
    run(&mut c, plan, &mut seq);
    c.policy.quarantine_class = Some(RuntimeClass::Kata);
    let plan = c.decide(&[submit(2, "b", "multi_tenant")]);
    assert_eq!(
        kinds(&plan),
        ["accepted", "scan_completed", "quarantined", "scheduled"]
    );
    let EventBody::Accepted(a) = &plan.appends[0].events[0].body else {
        unreachable!()
    };
    assert_eq!(a.spec.runtime_class, RuntimeClass::Gvisor, "as submitted");
    let EventBody::Scheduled(s) = &plan.appends[0].events[3].body else {
        unreachable!()
    };
    assert_eq!(s.runtime_class, RuntimeClass::Kata);
    let commit = run(&mut c, plan, &mut seq);
    let Some(NodeOp::Start { spec, .. }) = commit.ops.values().flatten().next() else {
        panic!("a start op")
    };
    assert_eq!(spec.runtime_class, RuntimeClass::Kata);
}

#[test]
fn an_old_verdict_is_scanned_again_and_does_not_settle_a_newer_request() {
    const T: u64 = 1_700_000_000_000; // the commands' stored time
    let mut c = core();
    let mut seq = 0;
    let ttl = c.policy.verdict_ttl_ms;
    // Bad, and just young enough: the untrusted submission is rejected at once.
    c.scan_completed(verdict(Some(Severity::High)), T - ttl + 1);
    assert_eq!(
        kinds(&c.decide(&[submit(1, "a", "untrusted")])),
        ["rejected"]
    );
    // A millisecond later it is older than the TTL: a new scan is asked for instead.
    let mut later = submit(2, "b", "untrusted");
    later.stored_ms = T + 1;
    let plan = c.decide(&[later]);
    assert_eq!(kinds(&plan), ["accepted", "scan_requested"]);
    run(&mut c, plan, &mut seq);
    let requested = c.projection.get(&key("b")).unwrap().scan_requested_ms;
    assert_eq!(c.unqueued_scans().len(), 1, "its job is still owed");
    // The old verdict replayed (a restarted scheduler reading the log) settles nothing.
    let plan = c.scan_completed(verdict(Some(Severity::High)), requested - ttl - 1);
    assert!(plan.appends.is_empty(), "{:?}", kinds(&plan));
    // The new scan: the tag was pushed again with the fix.
    let plan = c.scan_completed(verdict(None), requested + 5);
    assert_eq!(kinds(&plan), ["scan_completed"]);
    run(&mut c, plan, &mut seq);
    assert!(c.unqueued_scans().is_empty());
    assert_eq!(
        kinds(&c.place_pending(10, bulkhead_schemas::now_ms())),
        ["scheduled"]
    );
}

#[test]
fn async_quarantine_leaves_a_workload_already_in_the_quarantine_class() {
    let mut c = core();
    c.policy.quarantine_class = Some(RuntimeClass::Gvisor);
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "t", "multi_tenant")]);
    run(&mut c, plan, &mut seq);
    let plan = c.scan_completed_now(verdict(Some(Severity::Critical)));
    assert_eq!(kinds(&plan), ["scan_completed", "quarantined"]);
    let commit = run(&mut c, plan, &mut seq);
    assert!(commit.ops.is_empty(), "no stop: {:?}", commit.ops);
    let view = c.projection.get(&key("t")).unwrap().view(&key("t"));
    assert_eq!(view.state, WorkloadState::Scheduled);
    assert!(
        view.quarantine
            .unwrap()
            .starts_with("left running in gvisor")
    );
}

#[test]
fn internal_is_not_scanned_and_a_clean_known_verdict_is_recorded() {
    let mut c = core();
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "i", "internal")]);
    assert_eq!(kinds(&plan), ["accepted", "scheduled"]);
    run(&mut c, plan, &mut seq);
    let plan = c.scan_completed_now(verdict(None));
    assert!(plan.appends.is_empty(), "nobody waited for it");
    let plan = c.decide(&[submit(2, "u", "untrusted")]);
    assert_eq!(kinds(&plan), ["accepted", "scan_completed", "scheduled"]);
}

#[test]
fn a_gated_workload_with_no_scan_worker_is_told_once_with_the_fix() {
    let mut c = core();
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "u", "untrusted"), submit(2, "t", "multi_tenant")]);
    run(&mut c, plan, &mut seq);
    let now = bulkhead_schemas::now_ms();
    let later = now + verdicts::STALL_GRACE_MS + 1_000;
    assert!(
        c.stalled_scans(later).is_empty(),
        "nothing while the scanners are not counted yet"
    );
    c.scanners(1);
    assert!(c.stalled_scans(later).is_empty(), "a worker is alive");
    c.scanners(0);
    assert!(c.stalled_scans(now).is_empty(), "within the grace");
    let plan = c.stalled_scans(later);
    // The gated one only: the async one runs and needs no verdict to.
    assert_eq!(kinds(&plan), ["scan_waiting"]);
    assert_eq!(plan.appends[0].workload, format!("{T}/u"));
    run(&mut c, plan, &mut seq);
    let view = c
        .projection
        .get(&format!("{T}/u"))
        .unwrap()
        .view(&format!("{T}/u"));
    let reason = view.reason.unwrap();
    assert!(reason.contains("no scan worker is alive"), "{reason}");
    assert!(
        reason.contains("bulkhead vulndb import"),
        "the fix: {reason}"
    );
    assert!(c.stalled_scans(later + 60_000).is_empty(), "told once");

    // A worker comes and the verdict settles it as any other.
    c.scanners(1);
    let plan = c.scan_completed_now(verdict(None));
    run(&mut c, plan, &mut seq);
    let w = c.projection.get(&format!("{T}/u")).unwrap();
    assert_eq!(w.view("x").reason, None);
    assert_eq!(
        kinds(&c.place_pending(10, bulkhead_schemas::now_ms())),
        ["scheduled"]
    );
}

#[test]
fn a_verdict_whose_append_lost_a_race_is_settled_again() {
    let mut c = core();
    let mut seq = 0;
    let plan = c.decide(&[submit(1, "u", "untrusted")]);
    run(&mut c, plan, &mut seq);
    let plan = c.scan_completed_now(verdict(Some(Severity::Critical)));
    assert_eq!(kinds(&plan), ["scan_completed", "rejected"]);
    // Another writer moved the workload's head first.
    let commit = c.commit(plan, vec![Err(crate::ports::log::LogError::Conflict)]);
    assert!(commit.ops.is_empty());
    assert!(c.take_resettle(), "the verdict is settled again");
    assert!(!c.take_resettle(), "once per loss");
    let again = c.settle_known();
    assert_eq!(again.len(), 1);
    assert_eq!(kinds(&again[0]), ["scan_completed", "rejected"]);
}
