//! Scan verdicts in the scheduler: which verdict answers for an image, and what a new
//! verdict does to the workloads waiting on it (place, reject, quarantine).

use bulkhead_schemas::WorkloadSpec;
use bulkhead_schemas::event::{
    EventBody, QuarantineAction, Quarantined, Rejected, ScanCompleted, ScanWaiting, StopRequested,
};
use bulkhead_schemas::scan::ScanJob;
use bulkhead_schemas::spec::{RejectCode, Rejection};

use super::SchedulerCore;
use super::plan::{Effect, Plan, event};
use super::scan_policy::ScanMode;
use crate::ports::log::WorkloadAppend;

/// A `rejected` for an image whose verdict fails the scan policy.
pub(super) fn vulnerable(image: &str, why: &str, cmd_seq: u64) -> EventBody {
    EventBody::Rejected(Rejected {
        rejection: Rejection {
            code: RejectCode::Vulnerable,
            field: Some("image".into()),
            reason: format!("image {image}: {why}"),
        },
        cmd_seq,
    })
}

/// How long a gated workload waits with no scan worker alive before it is told its verdict
/// cannot come (a worker that is starting registers well within it).
pub const STALL_GRACE_MS: u64 = 10_000;

/// Why a gated workload's verdict cannot come while no scan worker is alive, and the fix.
pub fn no_scanner(image: &str) -> String {
    format!(
        "waiting for the scan verdict of {image}, which cannot come: no scan worker is alive \
         (a worker registers once it has an advisory database). Import one with `bulkhead \
         vulndb import PATH` and run a worker (`bulkhead up` runs one; else `bulkhead \
         scanner`): the job stays queued and the verdict settles this workload; or stop it"
    )
}

/// The scan job of a workload: one per admission, named so that requeueing it is
/// idempotent (its command's sequence, and a digest of the workload's key so that the id
/// stays one subject token).
pub(super) fn scan_job(workload: &str, cmd_seq: u64, image: &str) -> ScanJob {
    use sha2::Digest;
    let key = sha2::Sha256::digest(workload.as_bytes());
    ScanJob {
        id: format!("job-{cmd_seq}-{}", hex::encode(&key[..6])),
        image: image.to_owned(),
    }
}

impl SchedulerCore {
    /// The verdict of `image` that still answers for it at `at_ms`: a tag can be pushed
    /// again with a fix, and the advisory database changes, so an older one is scanned anew.
    pub(super) fn fresh_verdict(&self, image: &str, at_ms: u64) -> Option<&ScanCompleted> {
        self.verdicts
            .get(image)
            .filter(|(_, done)| self.policy.fresh(*done, at_ms))
            .map(|(c, _)| c)
    }

    /// Why the known verdict of `spec`'s image fails its trust level's scan policy.
    pub(super) fn verdict_fails(&self, spec: &WorkloadSpec, now_ms: u64) -> Option<String> {
        let mode = self.policy.mode(spec.trust_level());
        if mode == ScanMode::Off {
            return None;
        }
        let c = self.fresh_verdict(&spec.image, now_ms)?;
        self.policy
            .judge(mode, c.verdict.as_ref(), c.error.as_deref())
    }

    /// A scan finished: record it, and decide for every workload waiting on that image.
    /// `gate`: place it (the verdict passes) or reject it; `async`: keep it, or
    /// quarantine it by stopping it.
    /// `done_ms`: when the scan finished. It settles only workloads that asked for a scan
    /// within the verdict's lifetime (an old verdict replayed from the log does not settle a
    /// workload that asked for a new scan).
    pub fn scan_completed(&mut self, c: ScanCompleted, done_ms: u64) -> Plan {
        let record = ScanCompleted {
            layers: Vec::new(),
            ..c.clone()
        };
        if self
            .verdicts
            .get(&c.image)
            .is_none_or(|(_, at)| *at <= done_ms)
        {
            self.verdicts.insert(c.image.clone(), (c, done_ms));
        }
        self.settle(&record, done_ms)
    }

    /// What the verdicts known now mean for the workloads waiting on them: the plans a
    /// scheduler that rebuilt from the log carries out first (a verdict may have come
    /// while none ran).
    pub fn settle_known(&self) -> Vec<Plan> {
        self.verdicts
            .values()
            .map(|(c, done_ms)| self.settle(c, *done_ms))
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Decides, for every workload that waits for a verdict of `record`'s image and asked
    /// within its lifetime, what the verdict does.
    fn settle(&self, record: &ScanCompleted, done_ms: u64) -> Plan {
        let mut plan = Plan::default();
        let judge = |mode| {
            self.policy
                .judge(mode, record.verdict.as_ref(), record.error.as_deref())
        };
        let (fails_gate, fails_async) = (judge(ScanMode::Gate), judge(ScanMode::Async));
        for (id, w) in self.projection.iter() {
            let Some(spec) = w.spec.as_deref() else {
                continue;
            };
            if spec.image != record.image
                || !w.wants_verdict()
                || w.state().is_terminal()
                || !self.policy.fresh(done_ms, w.scan_requested_ms)
            {
                continue;
            }
            let tp = w.traceparent.as_deref();
            let mut events = vec![event(id, EventBody::ScanCompleted(record.clone()), tp)];
            let mut effect = Effect::traced(tp);
            effect.verdict = true;
            let fails = if w.scan_gate == Some(true) {
                &fails_gate
            } else {
                &fails_async
            };
            match (fails, w.scan_gate) {
                (None, _) => effect.new_pending = w.scan_gate == Some(true),
                (Some(why), Some(true)) => {
                    events.push(event(id, vulnerable(&record.image, why, w.cmd_seq), tp))
                }
                (Some(why), _) => {
                    let from = spec.runtime_class;
                    let (action, to) = self.policy.quarantine(from);
                    plan.notes
                        .push(format!("quarantining {id} ({}): {why}", action.as_str()));
                    let q = Quarantined {
                        action,
                        from,
                        to,
                        reason: why.clone(),
                    };
                    events.push(event(id, EventBody::Quarantined(q), tp));
                    match action {
                        QuarantineAction::Stop => {
                            let stop = StopRequested {
                                cmd_seq: 0,
                                grace_secs: None,
                            };
                            events.push(event(id, EventBody::StopRequested(stop), tp));
                            effect.stop = true;
                        }
                        // Every copy stops; the projection makes each pending again, in
                        // the new class, as its `stopped` comes in.
                        QuarantineAction::Move => effect.stop = true,
                        QuarantineAction::Contained => {}
                    }
                }
            }
            plan.push(WorkloadAppend::after(id, w.head, events), effect);
        }
        plan
    }

    /// How many scan workers are alive (their keys in the scanners bucket), as the
    /// service last counted them.
    pub fn scanners(&mut self, live: usize) {
        self.scanners_live = Some(live);
    }

    /// `scan_waiting` for every gated workload that has waited `STALL_GRACE_MS` for a
    /// verdict while no scan worker is alive, once each. Nothing while the count is
    /// unknown. One that loses a race for its workload's head is tried at the next count.
    pub fn stalled_scans(&self, now_ms: u64) -> Plan {
        let mut plan = Plan::default();
        if self.scanners_live != Some(0) {
            return plan;
        }
        for (id, w) in self.projection.iter() {
            let Some(spec) = w.spec.as_deref() else {
                continue;
            };
            if w.scan_gate != Some(true)
                || !w.wants_verdict()
                || w.scan_waiting
                || w.stop_requested
                || w.state().is_terminal()
                || now_ms.saturating_sub(w.scan_requested_ms) < STALL_GRACE_MS
                || self
                    .fresh_verdict(&spec.image, w.scan_requested_ms)
                    .is_some()
            {
                continue;
            }
            let tp = w.traceparent.as_deref();
            let body = EventBody::ScanWaiting(ScanWaiting {
                image: spec.image.clone(),
                reason: no_scanner(&spec.image),
            });
            plan.notes
                .push(format!("{id}: no scan worker is alive for its verdict"));
            plan.push(
                WorkloadAppend::after(id, w.head, vec![event(id, body, tp)]),
                Effect::traced(tp),
            );
        }
        plan
    }

    /// Whether a verdict's append lost a race or failed since the last call: the known
    /// verdicts are settled again (`settle_known`).
    pub fn take_resettle(&mut self) -> bool {
        std::mem::take(&mut self.resettle)
    }

    /// A verdict finished just now (tests).
    #[cfg(test)]
    pub(super) fn scan_completed_now(&mut self, c: ScanCompleted) -> Plan {
        self.scan_completed(c, bulkhead_schemas::now_ms())
    }

    /// Scan jobs for workloads still waiting for a verdict (a scheduler that died after
    /// `scan_requested` but before queueing the job): queued again, idempotently.
    pub fn unqueued_scans(&self) -> Vec<ScanJob> {
        self.projection
            .iter()
            .filter(|(_, w)| w.wants_verdict() && !w.state().is_terminal())
            .filter_map(|(id, w)| {
                let spec = w.spec.as_deref()?;
                self.fresh_verdict(&spec.image, w.scan_requested_ms)
                    .is_none()
                    .then(|| scan_job(id, w.cmd_seq, &spec.image))
            })
            .collect()
    }
}
