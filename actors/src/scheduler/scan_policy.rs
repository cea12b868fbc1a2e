//! Scan policy per trust level: `gate` (place only after a verdict within the threshold),
//! `async` (place at once; a verdict over the threshold quarantines the workload), `off`.
//! Pure: the scheduler asks it what a verdict means.

use bulkhead_schemas::RuntimeClass;
use bulkhead_schemas::event::QuarantineAction;
use bulkhead_schemas::scan::{Severity, Verdict};
use bulkhead_schemas::spec::TrustLevel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanMode {
    Gate,
    Async,
    Off,
}

impl ScanMode {
    pub fn parse(s: &str) -> Option<ScanMode> {
        match s {
            "gate" => Some(ScanMode::Gate),
            "async" => Some(ScanMode::Async),
            "off" => Some(ScanMode::Off),
            _ => None,
        }
    }
}

/// A `--scan-policy` that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadModes {
    #[error("{0}: expected LEVEL=MODE")]
    NotAPair(String),
    #[error("{0}: mode is gate, async or off")]
    Mode(String),
    #[error("{0}: level is untrusted, multi_tenant or internal")]
    Level(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPolicy {
    pub untrusted: ScanMode,
    pub multi_tenant: ScanMode,
    pub internal: ScanMode,
    /// A finding at or above this severity fails the verdict.
    pub threshold: Severity,
    /// `async` quarantine: `None` stops the workload; a class moves it there.
    pub quarantine_class: Option<RuntimeClass>,
    /// How long an image's verdict answers for later submissions of the same reference.
    pub verdict_ttl_ms: u64,
    /// Whether `gate` lets through an image whose packages could not be judged (no OS
    /// package database, or an OS without advisories here): no findings is not clean.
    pub gate_allows_unjudged: bool,
}

/// Ten minutes: a tag re-pushed with a fix, or a new advisory database, is seen within
/// that; rescans in between cost little thanks to the layer cache.
pub const DEFAULT_VERDICT_TTL_MS: u64 = 600_000;

impl Default for ScanPolicy {
    /// Untrusted code waits for a clean verdict; tenants start at once and are
    /// quarantined on a bad one; internal workloads are not scanned.
    fn default() -> Self {
        ScanPolicy {
            untrusted: ScanMode::Gate,
            multi_tenant: ScanMode::Async,
            internal: ScanMode::Off,
            threshold: Severity::High,
            quarantine_class: None,
            verdict_ttl_ms: DEFAULT_VERDICT_TTL_MS,
            gate_allows_unjudged: false,
        }
    }
}

impl ScanPolicy {
    /// Every trust level off: nothing is scanned.
    pub fn off() -> Self {
        ScanPolicy {
            untrusted: ScanMode::Off,
            multi_tenant: ScanMode::Off,
            internal: ScanMode::Off,
            threshold: Severity::High,
            quarantine_class: None,
            verdict_ttl_ms: DEFAULT_VERDICT_TTL_MS,
            gate_allows_unjudged: false,
        }
    }

    /// What quarantine does to a workload running in `class`: stop it (no quarantine
    /// class), move it to the quarantine class (a stronger one), or leave it where it is
    /// (it is in that class or a stronger one already).
    pub fn quarantine(&self, class: RuntimeClass) -> (QuarantineAction, Option<RuntimeClass>) {
        match self.quarantine_class {
            None => (QuarantineAction::Stop, None),
            Some(to) if to.isolation_rank() > class.isolation_rank() => {
                (QuarantineAction::Move, Some(to))
            }
            Some(_) => (QuarantineAction::Contained, None),
        }
    }

    /// Whether a verdict from `done_ms` still answers at `at_ms` (a verdict newer than
    /// the question always does).
    pub fn fresh(&self, done_ms: u64, at_ms: u64) -> bool {
        at_ms.saturating_sub(done_ms) < self.verdict_ttl_ms
    }

    /// These settings with what the cluster's policy says over them.
    pub fn overlay(&self, rules: &bulkhead_schemas::policy::ScanRules) -> ScanPolicy {
        use bulkhead_schemas::policy::ScanMode as M;
        let mode = |m: Option<M>, default: ScanMode| match m {
            Some(M::Gate) => ScanMode::Gate,
            Some(M::Async) => ScanMode::Async,
            Some(M::Off) => ScanMode::Off,
            None => default,
        };
        ScanPolicy {
            untrusted: mode(rules.untrusted, self.untrusted),
            multi_tenant: mode(rules.multi_tenant, self.multi_tenant),
            internal: mode(rules.internal, self.internal),
            threshold: rules.threshold.unwrap_or(self.threshold),
            ..self.clone()
        }
    }

    pub fn mode(&self, trust: TrustLevel) -> ScanMode {
        match trust {
            TrustLevel::Untrusted => self.untrusted,
            TrustLevel::MultiTenant => self.multi_tenant,
            TrustLevel::Internal => self.internal,
        }
    }

    /// `untrusted=gate,multi_tenant=async,internal=off` (levels left out keep their mode).
    pub fn with_modes(mut self, spec: &str) -> Result<Self, BadModes> {
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (level, mode) = part
                .split_once('=')
                .ok_or_else(|| BadModes::NotAPair(part.into()))?;
            let mode = ScanMode::parse(mode).ok_or_else(|| BadModes::Mode(part.into()))?;
            match level {
                "untrusted" => self.untrusted = mode,
                "multi_tenant" => self.multi_tenant = mode,
                "internal" => self.internal = mode,
                _ => return Err(BadModes::Level(part.into())),
            }
        }
        Ok(self)
    }

    /// Why a verdict fails the policy under `mode` (None: it passes). A scan that could
    /// not run fails too, and under `gate` so does a verdict that could not judge the
    /// packages (unless the policy allows it): nothing unknown gets through a gate.
    pub fn judge(
        &self,
        mode: ScanMode,
        verdict: Option<&Verdict>,
        error: Option<&str>,
    ) -> Option<String> {
        if let Some(e) = error {
            return Some(format!("the image could not be scanned: {e}"));
        }
        let v = verdict?;
        if let Some(note) = &v.note
            && mode == ScanMode::Gate
            && !self.gate_allows_unjudged
        {
            return Some(format!(
                "the image could not be judged: {note} (a gate lets no unjudged image through; \
                 --scan-gate-unjudged allow)"
            ));
        }
        let over: Vec<String> = v
            .findings
            .iter()
            .filter(|f| f.severity >= self.threshold)
            .map(|f| {
                format!(
                    "{} {} in {} {}{}",
                    f.severity,
                    f.advisory,
                    f.package,
                    f.installed,
                    f.fixed
                        .as_deref()
                        .map(|x| format!(" (fixed in {x})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        if over.is_empty() {
            return None;
        }
        let shown = over.iter().take(10).cloned().collect::<Vec<_>>().join("; ");
        let more = over.len().saturating_sub(10);
        Some(format!(
            "{} finding(s) at or above {}: {shown}{}",
            over.len(),
            self.threshold,
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_schemas::scan::Finding;

    fn verdict(sev: &[Severity]) -> Verdict {
        Verdict {
            findings: sev
                .iter()
                .enumerate()
                .map(|(i, s)| Finding {
                    severity: *s,
                    advisory: format!("CVE-{i}"),
                    aliases: vec![],
                    package: "openssl".into(),
                    installed: "1.0".into(),
                    fixed: Some("1.1".into()),
                    summary: String::new(),
                })
                .collect(),
            ..Verdict::default()
        }
    }

    #[test]
    fn verdicts_fail_at_the_threshold_and_name_the_findings() {
        let p = ScanPolicy::default();
        assert_eq!(
            p.judge(
                ScanMode::Gate,
                Some(&verdict(&[Severity::Medium, Severity::Low])),
                None
            ),
            None
        );
        let why = p
            .judge(
                ScanMode::Async,
                Some(&verdict(&[Severity::Critical, Severity::Low])),
                None,
            )
            .unwrap();
        assert!(why.contains("1 finding(s) at or above high"), "{why}");
        assert!(
            why.contains("critical CVE-0 in openssl 1.0 (fixed in 1.1)"),
            "{why}"
        );
        assert!(
            p.judge(ScanMode::Async, None, Some("404"))
                .unwrap()
                .contains("could not be scanned")
        );
    }

    #[test]
    fn a_gate_lets_no_unjudged_image_through_unless_allowed() {
        let unjudged = Verdict {
            note: Some("no os-release in the image: packages not matched".into()),
            ..Verdict::default()
        };
        let mut p = ScanPolicy::default();
        let why = p.judge(ScanMode::Gate, Some(&unjudged), None).unwrap();
        assert!(why.contains("could not be judged: no os-release"), "{why}");
        assert_eq!(
            p.judge(ScanMode::Async, Some(&unjudged), None),
            None,
            "not bad"
        );
        assert_eq!(
            p.judge(ScanMode::Gate, Some(&verdict(&[])), None),
            None,
            "clean"
        );
        p.gate_allows_unjudged = true;
        assert_eq!(p.judge(ScanMode::Gate, Some(&unjudged), None), None);
    }

    #[test]
    fn modes_per_trust_level() {
        let p = ScanPolicy::default()
            .with_modes("internal=gate,untrusted=off")
            .unwrap();
        assert_eq!(p.mode(TrustLevel::Internal), ScanMode::Gate);
        assert_eq!(p.mode(TrustLevel::Untrusted), ScanMode::Off);
        assert_eq!(p.mode(TrustLevel::MultiTenant), ScanMode::Async);
        assert!(ScanPolicy::default().with_modes("root=gate").is_err());
        assert!(ScanPolicy::default().with_modes("internal=maybe").is_err());
    }

    #[test]
    fn quarantine_stops_moves_up_or_leaves_a_strong_enough_class() {
        use QuarantineAction::*;
        let mut p = ScanPolicy::default();
        assert_eq!(p.quarantine(RuntimeClass::Runc), (Stop, None));
        assert_eq!(p.quarantine(RuntimeClass::Kata), (Stop, None));
        p.quarantine_class = Some(RuntimeClass::Gvisor);
        assert_eq!(
            p.quarantine(RuntimeClass::Runc),
            (Move, Some(RuntimeClass::Gvisor))
        );
        assert_eq!(p.quarantine(RuntimeClass::Gvisor), (Contained, None));
        assert_eq!(p.quarantine(RuntimeClass::Kata), (Contained, None));
        p.quarantine_class = Some(RuntimeClass::Kata);
        assert_eq!(
            p.quarantine(RuntimeClass::Gvisor),
            (Move, Some(RuntimeClass::Kata))
        );
        // a Xen zone is as strong as a VM: no move sideways
        assert_eq!(p.quarantine(RuntimeClass::EderaZone), (Contained, None));
        assert_eq!(p.quarantine(RuntimeClass::Confidential), (Contained, None));
    }
}
