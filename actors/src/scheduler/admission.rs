//! Admission (`bulkhead.cmd.submit`): a submission becomes `accepted` (placed as far as
//! capacity allows, scanned as its trust level's policy says) or `rejected` with a reason.
//! Its events are the first of the workload's chain: the append expects no event before
//! them, so a redelivered submission can never admit a workload twice.

use std::collections::HashMap;

use bulkhead_schemas::event::{
    Accepted, Event, EventBody, QuarantineAction, Quarantined, Rejected, ScanCompleted,
    ScanRequested,
};
use bulkhead_schemas::identity::{Role, Submitter};
use bulkhead_schemas::spec::{RejectCode, Rejection, parse_submission};
use bulkhead_schemas::{WorkloadSpec, ids, subjects};

use super::SchedulerCore;
use super::cluster::Overlay;
use super::command::Command;
use super::plan::{Effect, Plan, Settle, Want, event, scheduled};
use super::scan_policy::ScanMode;
use super::verdicts::{scan_job, vulnerable};
use crate::policy::Usage;
use crate::ports::log::WorkloadAppend;
use crate::signing::verify_command;

/// Submissions of this round, by workload id, with their command sequence.
pub(super) type InPlan = HashMap<String, u64>;

impl SchedulerCore {
    pub(super) fn decide_submit(
        &self,
        cmd: &Command,
        plan: &mut Plan,
        overlay: &mut Overlay,
        in_plan: &mut InPlan,
    ) {
        let Some((id, outcome)) = self.identify(cmd, plan, in_plan) else {
            plan.settle(cmd.cmd_seq, Settle::Done);
            return;
        };
        let (outcome, by) = match self.submitter(cmd) {
            Ok(by) => (outcome, by),
            Err(rejection) => (Err(rejection), Submitter::default()),
        };
        let outcome = outcome.and_then(|spec| self.within_policy(&cmd.tenant, spec, plan));
        in_plan.insert(id.clone(), cmd.cmd_seq);
        let tp = cmd.traceparent.as_deref();
        let mut effect = Effect::traced(tp);
        let events = match outcome {
            Err(rejection) => {
                let body = EventBody::Rejected(Rejected {
                    rejection,
                    cmd_seq: cmd.cmd_seq,
                });
                vec![event(&id, body, tp)]
            }
            Ok(spec) => self.admit(&id, spec, by, cmd, overlay, &mut effect),
        };
        let append =
            WorkloadAppend::new(&id, events).after_set_aside(self.projection.set_aside_seq(&id));
        let i = plan.push(append, effect);
        plan.settle(cmd.cmd_seq, Settle::By(i));
    }

    /// The workload a submission names (its key: the command's tenant and the id the spec
    /// names or is given), and whether it can be admitted under it. None: this very
    /// command was handled already (a redelivery).
    fn identify(
        &self,
        cmd: &Command,
        plan: &mut Plan,
        in_plan: &InPlan,
    ) -> Option<(String, Result<WorkloadSpec, Rejection>)> {
        let tenant = cmd.tenant.as_str();
        let derived = || ids::derived_workload_id(cmd.cmd_seq, cmd.stored_ms);
        let parsed = parse_submission(&cmd.payload);
        let id = match &parsed {
            Ok(spec) => spec.id.clone().unwrap_or_else(derived),
            Err(_) => loose_id(&cmd.payload).unwrap_or_else(derived),
        };
        let key = subjects::workload_key(tenant, &id);
        let existing = self
            .projection
            .get(&key)
            .map(|w| w.cmd_seq)
            .or_else(|| in_plan.get(&key).copied());
        let Some(seq) = existing else {
            return Some((key, parsed));
        };
        if seq == cmd.cmd_seq {
            return None;
        }
        // Another submission holds the id: this one is rejected under a derived id.
        let dup = subjects::workload_key(tenant, &derived());
        if self.projection.get(&dup).is_some() || in_plan.contains_key(&dup) {
            return None;
        }
        plan.notes.push(format!(
            "submission {} reuses workload id {id}",
            cmd.cmd_seq
        ));
        let rejection = Rejection {
            code: RejectCode::Duplicate,
            field: Some("id".into()),
            reason: format!(
                "workload id {id} already exists (submitted as command {seq}); to replace \
                 it, stop it (`bulkhead stop {id}`) and submit the new spec under a new id \
                 (in-place updates come later)"
            ),
        };
        Some((dup, Err(rejection)))
    }

    /// The events of a valid submission: `accepted` (or `rejected` when its image is known
    /// to fail the scan policy), its scan, its quarantine, and what could be placed now.
    /// `id` is the workload's key (`tenant/id`).
    fn admit(
        &self,
        id: &str,
        mut spec: WorkloadSpec,
        by: Submitter,
        cmd: &Command,
        overlay: &mut Overlay,
        effect: &mut Effect,
    ) -> Vec<Event> {
        let tp = cmd.traceparent.as_deref();
        let known_bad = self.verdict_fails(&spec, cmd.stored_ms);
        let mode = self.policy.mode(spec.trust_level());
        // `async` with a known bad verdict: admitted already quarantined when the policy
        // moves (or leaves) rather than stops; otherwise rejected.
        let quarantine = match &known_bad {
            Some(why) if mode == ScanMode::Async => {
                match self.policy.quarantine(spec.runtime_class) {
                    (QuarantineAction::Stop, _) => None,
                    (action, to) => Some(Quarantined {
                        action,
                        from: spec.runtime_class,
                        to,
                        reason: why.clone(),
                    }),
                }
            }
            _ => None,
        };
        if let (Some(why), None) = (&known_bad, &quarantine) {
            // The image's verdict is already known and over the threshold.
            return vec![event(id, vulnerable(&spec.image, why, cmd.cmd_seq), tp)];
        }
        spec.id = subjects::split_key(id).map(|(_, id)| id.to_owned());
        let known = self.fresh_verdict(&spec.image, cmd.stored_ms).cloned();
        let gate = mode == ScanMode::Gate && known.is_none();
        let replicas: Vec<Want> = if gate {
            Vec::new()
        } else {
            (0..spec.replicas).map(Want::new).collect()
        };
        let class = quarantine
            .as_ref()
            .and_then(|q| q.to)
            .unwrap_or(spec.runtime_class);
        let placed_as = WorkloadSpec {
            runtime_class: class,
            ..spec.clone()
        };
        let (placed, mut pending) = self.place_replicas(&placed_as, &replicas, &[], overlay);
        if gate {
            pending = Some(format!("waiting for the scan verdict of {}", spec.image));
        }
        effect.new_pending = pending.is_some() && !gate;
        let image = spec.image.clone();
        let accepted = Accepted {
            spec,
            cmd_seq: cmd.cmd_seq,
            by,
            pending,
        };
        let mut events = vec![event(id, EventBody::Accepted(accepted), tp)];
        if mode != ScanMode::Off {
            events.push(match known {
                // Known and within the threshold: recorded, nothing to wait for.
                Some(c) => {
                    let c = ScanCompleted {
                        layers: Vec::new(),
                        ..c
                    };
                    event(id, EventBody::ScanCompleted(c), tp)
                }
                None => {
                    let job = scan_job(id, cmd.cmd_seq, &image);
                    let requested = ScanRequested {
                        image,
                        job: job.id.clone(),
                        gate,
                    };
                    effect.scan_job = Some(job);
                    event(id, EventBody::ScanRequested(requested), tp)
                }
            });
        }
        if let Some(q) = quarantine {
            events.push(event(id, EventBody::Quarantined(q), tp));
        }
        for (replica, node) in placed {
            events.push(event(id, scheduled(replica, &node, class, None), tp));
            effect.starts.push((replica, node));
        }
        events
    }
}

impl SchedulerCore {
    /// The spec with the trust level its tenant's policy gives it, or `rejected` (code
    /// `policy`) naming the rule; an admitted one counts against the tenant's quota.
    fn within_policy(
        &self,
        tenant: &str,
        spec: WorkloadSpec,
        plan: &mut Plan,
    ) -> Result<WorkloadSpec, Rejection> {
        let policy = self.directory.policy.current();
        let limited = !policy.tenant(tenant).0.quota.is_unlimited();
        let used = if limited {
            *plan
                .usage
                .entry(tenant.to_owned())
                .or_insert_with(|| self.usage(tenant))
        } else {
            Usage::default()
        };
        let spec = crate::policy::admit(policy, tenant, spec, &used)?;
        if limited && let Some(u) = plan.usage.get_mut(tenant) {
            u.add(Usage::of(&spec, spec.replicas));
        }
        Ok(spec)
    }

    /// What `tenant`'s live workloads take: neither rejected nor stopping, with a copy
    /// that has not ended.
    fn usage(&self, tenant: &str) -> Usage {
        let mut used = Usage::default();
        for (_, w) in self.projection.tenant_range(tenant, None) {
            let Some(spec) = w.spec.as_deref() else {
                continue;
            };
            if w.stop_requested || w.state().is_terminal() {
                continue;
            }
            used.add(Usage::of(spec, w.desired));
        }
        used
    }

    /// Who asked: the tenant the server authenticated (the command's subject) and, when the
    /// submission is signed, the proof. A signature that is not the tenant's refuses it.
    fn submitter(&self, cmd: &Command) -> Result<Submitter, Rejection> {
        let mut by = Submitter {
            tenant: cmd.tenant.clone(),
            ..Submitter::default()
        };
        let Some(sig) = &cmd.signature else {
            return Ok(by);
        };
        let refuse = |why: String| Rejection {
            code: RejectCode::Signature,
            field: None,
            reason: why,
        };
        let tenant = self
            .directory
            .get(Role::Tenant, &cmd.tenant)
            .ok_or_else(|| refuse(format!("tenant {} is not enrolled", cmd.tenant)))?;
        if tenant.key != sig.key {
            return Err(refuse(format!(
                "signed by {}, which is not tenant {}'s key",
                sig.key, cmd.tenant
            )));
        }
        let subject = cmd.kind.subject(&cmd.tenant);
        verify_command(&sig.key, &subject, &cmd.payload, &sig.sig)
            .map_err(|e| refuse(format!("the submission's signature: {e}")))?;
        by.key = Some(sig.key.clone());
        by.sig = Some(sig.sig.clone());
        by.signed = String::from_utf8(cmd.payload.clone()).ok();
        Ok(by)
    }
}

/// The `id` of a submission that failed validation, if it has a usable one.
fn loose_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    let id = serde_json::from_slice::<IdOnly>(payload).ok()?.id?;
    subjects::is_valid_token(&id).then_some(id)
}
