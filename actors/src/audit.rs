//! The log as a whole, provable: a running hash over every stored message, checkpoints of
//! it, and what a replay finds. Pure.
//!
//! The running hash: `r₀` is 32 zero bytes; for each message in stream order,
//! `rₙ = SHA-256("bulkhead/2 log\n" ‖ rₙ₋₁ ‖ seq (8 bytes, big-endian) ‖ SHA-256(subject) ‖
//! SHA-256(payload) ‖ SHA-256(Bulkhead-Sig header))`. A checkpoint (`seq`, `rₛₑq`, signed by the
//! query API, which cannot purge) pins the whole log up to `seq`: a message deleted, purged,
//! replaced or added before it changes every hash after. [`Auditor`] replays a log through
//! the readers' own checks (the verifier, the projection's chains) and reports the first bad
//! sequence.

use std::collections::{BTreeMap, VecDeque};

use bulkhead_schemas::event::{EventBody, Hash, hash_bytes};
use bulkhead_schemas::policy::Checkpoint;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::projection::Projection;
use crate::verify::{Family, Raw, Verifier};

const CONTEXT: &[u8] = b"bulkhead/2 log\n";

/// Running hashes remembered to check the log's own checkpoints against (they cover a
/// recent sequence; an older one is counted as unchecked, not failed).
const WINDOW: usize = 100_000;

/// One stored message of the log, as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawMsg {
    pub seq: u64,
    pub subject: String,
    /// The payload, as UTF-8 text (events are JSON).
    pub payload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    pub stored_ms: u64,
}

impl RawMsg {
    /// An owned copy of a message as read.
    pub fn of(raw: &Raw<'_>) -> RawMsg {
        RawMsg {
            seq: raw.seq,
            subject: raw.subject.to_owned(),
            payload: String::from_utf8_lossy(raw.payload).into_owned(),
            proof: raw.proof.map(str::to_owned),
            stored_ms: raw.stored_ms,
        }
    }

    pub fn raw(&self) -> Raw<'_> {
        Raw {
            seq: self.seq,
            subject: &self.subject,
            payload: self.payload.as_bytes(),
            proof: self.proof.as_deref(),
            stored_ms: self.stored_ms,
        }
    }
}

/// The running hash through `seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningHash {
    pub seq: u64,
    #[serde(with = "crate::ports::log::hex32")]
    pub hash: Hash,
    pub messages: u64,
}

impl RunningHash {
    pub fn add(&mut self, seq: u64, subject: &str, payload: &[u8], proof: Option<&str>) {
        self.add_hashed(seq, subject, &hash_bytes(payload), proof);
    }

    /// [`RunningHash::add`] of a message whose payload's SHA-256 is known already (a
    /// verified event's `hash`): the payload is not hashed twice.
    pub fn add_hashed(&mut self, seq: u64, subject: &str, payload: &Hash, proof: Option<&str>) {
        let mut h = Sha256::new();
        h.update(CONTEXT);
        h.update(self.hash);
        h.update(seq.to_be_bytes());
        h.update(hash_bytes(subject.as_bytes()));
        h.update(payload);
        h.update(hash_bytes(proof.unwrap_or_default().as_bytes()));
        self.hash = h.finalize().into();
        self.seq = seq;
        self.messages += 1;
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            seq: self.seq,
            hash: hex::encode(self.hash),
            messages: self.messages,
        }
    }
}

/// The first thing wrong with a log, at its sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub seq: u64,
    pub code: String,
    pub reason: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sequence {}: {} ({})", self.seq, self.code, self.reason)
    }
}

/// What a replay found: how far it read, the running hash there, and the findings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub through_seq: u64,
    pub messages: u64,
    pub hash: String,
    /// Checkpoints (in the log and given) that matched.
    pub checkpoints_matched: u64,
    /// Checkpoints in the log about sequences too old to check in this replay's window.
    pub checkpoints_unchecked: u64,
    pub findings: u64,
    pub first: Option<Finding>,
}

/// Replays a log in stream order through the readers' own checks, and the checkpoints.
pub struct Auditor {
    verifier: Verifier,
    projection: Projection,
    running: RunningHash,
    recent: VecDeque<(u64, Hash)>,
    /// Checkpoints from outside the log, by sequence.
    expected: BTreeMap<u64, Checkpoint>,
    report: Report,
}

impl Auditor {
    /// An auditor trusting `admins` as the anchor, as every reader does.
    pub fn new(admins: &[String]) -> Auditor {
        Auditor {
            verifier: Verifier::new(admins),
            projection: Projection::default(),
            running: RunningHash::default(),
            recent: VecDeque::new(),
            expected: BTreeMap::new(),
            report: Report::default(),
        }
    }

    /// A checkpoint kept outside the log that the replay must match.
    pub fn expect(&mut self, cp: Checkpoint) {
        self.expected.insert(cp.seq, cp);
    }

    /// The identities and policy the replay has read so far.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn find(&mut self, seq: u64, code: &str, reason: String) {
        self.report.findings += 1;
        if self.report.first.is_none() {
            self.report.first = Some(Finding {
                seq,
                code: code.to_owned(),
                reason,
            });
        }
    }

    /// The next message of the log.
    pub fn read(&mut self, raw: Raw<'_>) {
        let expected_seq = self.running.seq + 1;
        if raw.seq < expected_seq {
            // Only a copy of the log (a backup file) can hold this: never apply it.
            self.find(
                raw.seq,
                "out_of_order",
                format!("sequence {} after {}", raw.seq, self.running.seq),
            );
            return;
        }
        if raw.seq > expected_seq {
            let missing = if raw.seq - 1 == expected_seq {
                format!("sequence {expected_seq} is missing")
            } else {
                format!("sequences {expected_seq}..{} are missing", raw.seq - 1)
            };
            self.find(expected_seq, "gap", format!("{missing}: deleted or purged"));
        }
        self.check_expected_before(raw.seq);
        self.running
            .add(raw.seq, raw.subject, raw.payload, raw.proof);
        self.remember();
        self.check_expected_at();
        match self.verifier.check(raw) {
            Err(a) => self.find(a.seq, a.code, a.reason),
            Ok((Family::Workload, stored)) => {
                let before = self.projection.set_aside.total();
                self.projection.ingest(&stored);
                if self.projection.set_aside.total() > before
                    && let Some(a) = self.projection.set_aside.recent().last()
                {
                    let (seq, code, reason) = (a.seq, a.code, a.reason.clone());
                    self.find(seq, code, reason);
                }
            }
            Ok((Family::Sys, stored)) => {
                if let EventBody::Checkpoint(cp) = &stored.event.body {
                    self.check_logged(raw.seq, cp);
                }
            }
            Ok((Family::Node | Family::Scan, _)) => {}
        }
    }

    fn remember(&mut self) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((self.running.seq, self.running.hash));
    }

    /// A checkpoint the log holds (at `seq`), against the running hash it names.
    fn check_logged(&mut self, seq: u64, cp: &Checkpoint) {
        let Some(first) = self.recent.front().map(|(s, _)| *s) else {
            return;
        };
        if cp.seq < first {
            self.report.checkpoints_unchecked += 1;
            return;
        }
        let found = self.recent.iter().find(|(s, _)| *s == cp.seq);
        match found {
            Some((_, h)) if hex::encode(h) == cp.hash => self.report.checkpoints_matched += 1,
            Some(_) => self.find(
                seq,
                "checkpoint_mismatch",
                format!(
                    "the checkpoint through sequence {} does not match the log before it",
                    cp.seq
                ),
            ),
            None => self.find(
                seq,
                "checkpoint_mismatch",
                format!(
                    "a checkpoint through sequence {}, which the log does not hold",
                    cp.seq
                ),
            ),
        }
    }

    /// Checkpoints given from outside for sequences the log skipped (now behind `next`).
    fn check_expected_before(&mut self, next: u64) {
        let skipped: Vec<u64> = self
            .expected
            .range(self.running.seq + 1..next)
            .map(|(s, _)| *s)
            .collect();
        for seq in skipped {
            self.expected.remove(&seq);
            self.find(
                seq,
                "checkpoint_mismatch",
                format!("the checkpoint through sequence {seq}: that message is gone"),
            );
        }
    }

    fn check_expected_at(&mut self) {
        let Some(cp) = self.expected.remove(&self.running.seq) else {
            return;
        };
        if cp.hash == hex::encode(self.running.hash) && cp.messages == self.running.messages {
            self.report.checkpoints_matched += 1;
        } else {
            self.find(
                cp.seq,
                "checkpoint_mismatch",
                format!(
                    "the log up to here is not the one the checkpoint pinned ({} messages then, {} now)",
                    cp.messages, self.running.messages
                ),
            );
        }
    }

    /// The replay's end: `last_seq` is the stream's last sequence (messages deleted at the
    /// tail show here), and every checkpoint given must have been reached.
    pub fn finish(mut self, last_seq: u64) -> Report {
        if last_seq > self.running.seq {
            let from = self.running.seq + 1;
            self.find(
                from,
                "gap",
                format!("sequences {from}..{last_seq} are missing: deleted or purged"),
            );
        }
        let unreached: Vec<Checkpoint> = std::mem::take(&mut self.expected).into_values().collect();
        for cp in unreached {
            self.find(
                cp.seq,
                "truncated",
                format!(
                    "a checkpoint pins sequence {}; the log ends at {}",
                    cp.seq, self.running.seq
                ),
            );
        }
        self.report.through_seq = self.running.seq;
        self.report.messages = self.running.messages;
        self.report.hash = hex::encode(self.running.hash);
        self.report
    }

    /// The report so far (for a reader that never finishes: the query API).
    pub fn report(&self) -> Report {
        Report {
            through_seq: self.running.seq,
            messages: self.running.messages,
            hash: hex::encode(self.running.hash),
            ..self.report.clone()
        }
    }

    pub fn running(&self) -> RunningHash {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use bulkhead_schemas::event::{Accepted, Event, EventBody, Scaled};
    use bulkhead_schemas::identity::{Enrolled, Role};
    use bulkhead_schemas::{WorkloadSpec, subjects};

    use super::*;
    use crate::signing::{Signer, seal_event};

    /// A stored message: sequence, subject, payload, proof.
    type Msg = (u64, String, Vec<u8>, Option<String>);

    struct Log {
        admin: Signer,
        scheduler: Signer,
        msgs: Vec<Msg>,
    }

    fn spec() -> WorkloadSpec {
        serde_json::from_value(serde_json::json!({"id": "w", "image": "i", "memory_mb": 1,
            "cpu_millicores": 1, "trust": "internal"}))
        .unwrap()
    }

    impl Log {
        fn new() -> Log {
            let mut log = Log {
                admin: Signer::generate(),
                scheduler: Signer::generate(),
                msgs: Vec::new(),
            };
            let body = EventBody::Enrolled(Enrolled {
                xkey: None,
                role: Role::Scheduler,
                name: "scheduler".into(),
                key: log.scheduler.public_key().to_owned(),
                classes: Vec::new(),
            });
            let ev = Event::new("admin", "scheduler/scheduler", None, body);
            let admin = log.admin.clone();
            log.push(
                &admin,
                ev,
                &subjects::sys_event("scheduler", "scheduler", "enrolled"),
            );
            log
        }

        fn push(&mut self, by: &Signer, mut ev: Event, subject: &str) -> [u8; 32] {
            let (payload, proof) = seal_event(by, &mut ev);
            let seq = self.msgs.last().map_or(0, |m| m.0) + 1;
            self.msgs
                .push((seq, subject.into(), payload.clone(), Some(proof.encode())));
            bulkhead_schemas::event::hash_bytes(&payload)
        }

        /// Enrolment, `accepted`, then `scaled` twice, chained.
        fn workload() -> Log {
            let mut log = Log::new();
            let s = log.scheduler.clone();
            let subject = |k| subjects::workload_event("t/w", k);
            let body = EventBody::Accepted(Accepted {
                spec: spec(),
                cmd_seq: 1,
                by: Default::default(),
                pending: None,
            });
            let mut prev = log.push(
                &s,
                Event::new("scheduler", "t/w", None, body),
                &subject("accepted"),
            );
            for replicas in [2, 3] {
                let body = EventBody::Scaled(Scaled {
                    replicas,
                    cmd_seq: 1,
                });
                let ev = Event::new("scheduler", "t/w", Some(&prev), body);
                prev = log.push(&s, ev, &subject("scaled"));
            }
            log
        }

        fn copy(&self) -> Log {
            Log {
                admin: self.admin.clone(),
                scheduler: self.scheduler.clone(),
                msgs: self.msgs.clone(),
            }
        }

        fn audit(&self, expect: &[Checkpoint]) -> Report {
            let mut a = Auditor::new(&[self.admin.public_key().to_owned()]);
            for cp in expect {
                a.expect(cp.clone());
            }
            for (seq, subject, payload, proof) in &self.msgs {
                a.read(Raw {
                    seq: *seq,
                    subject,
                    payload,
                    proof: proof.as_deref(),
                    stored_ms: bulkhead_schemas::now_ms(),
                });
            }
            let last = self.msgs.last().map_or(0, |m| m.0);
            a.finish(last)
        }
    }

    fn first(r: &Report) -> (u64, &str) {
        let f = r.first.as_ref().expect("a finding");
        (f.seq, f.code.as_str())
    }

    #[test]
    fn a_message_hashed_on_from_its_payloads_hash_moves_the_running_hash_alike() {
        let (mut a, mut b) = (RunningHash::default(), RunningHash::default());
        for (seq, payload, proof) in [(1, &b"{}"[..], None), (2, b"{\"x\":1}", Some("p"))] {
            a.add(seq, "bulkhead.evt.w.x", payload, proof);
            b.add_hashed(seq, "bulkhead.evt.w.x", &hash_bytes(payload), proof);
            assert_eq!(a, b);
        }
        // The payload's hash is what counts, not its bytes hashed on as they are.
        let mut c = RunningHash::default();
        c.add_hashed(1, "bulkhead.evt.w.x", &hash_bytes(b"{ }"), None);
        let mut d = RunningHash::default();
        d.add(1, "bulkhead.evt.w.x", b"{}", None);
        assert_ne!(c, d);
    }

    #[test]
    fn a_clean_log_passes_and_its_checkpoint_matches() {
        let log = Log::workload();
        let clean = log.audit(&[]);
        assert_eq!(
            (clean.findings, clean.through_seq, clean.messages),
            (0, 4, 4)
        );
        let cp = Checkpoint {
            seq: 4,
            hash: clean.hash.clone(),
            messages: 4,
        };
        let again = log.audit(std::slice::from_ref(&cp));
        assert_eq!((again.findings, again.checkpoints_matched), (0, 1));
    }

    #[test]
    fn each_kind_of_tampering_names_its_first_sequence() {
        let log = Log::workload();
        let pinned = log.audit(&[]);
        let cp = Checkpoint {
            seq: 4,
            hash: pinned.hash.clone(),
            messages: 4,
        };

        // A message deleted from the middle: a gap (and the chain breaks after it).
        let mut deleted = log.copy();
        deleted.msgs.remove(2);
        assert_eq!(first(&deleted.audit(&[])), (3, "gap"));

        // The tail deleted, or purged: the stream's last sequence says so; a checkpoint
        // from before says so even when the stream forgot.
        let mut truncated = log.copy();
        truncated.msgs.truncate(3);
        let r = truncated.audit(std::slice::from_ref(&cp));
        assert_eq!(first(&r), (4, "truncated"));

        // A payload changed: its signature no longer verifies.
        let mut changed = log.copy();
        let p = String::from_utf8(changed.msgs[3].2.clone()).unwrap();
        changed.msgs[3].2 = p.replace("\"replicas\":3", "\"replicas\":9").into_bytes();
        assert_eq!(first(&changed.audit(&[])), (4, "bad_signature"));

        // A copy of the log with a message twice (only a backup file can hold that).
        let mut twice = log.copy();
        let again = twice.msgs[2].clone();
        twice.msgs.insert(3, again);
        assert_eq!(first(&twice.audit(&[])), (3, "out_of_order"));

        // A valid signature by a key no admin enrolled.
        let mut foreign = log.copy();
        let stranger = Signer::generate();
        let body = EventBody::Scaled(Scaled {
            replicas: 1,
            cmd_seq: 1,
        });
        foreign.push(
            &stranger,
            Event::new("scheduler", "t/w", None, body),
            &subjects::workload_event("t/w", "scaled"),
        );
        assert_eq!(first(&foreign.audit(&[])), (5, "unknown_writer"));

        // The log rebuilt by someone holding the scheduler's key: every event verifies,
        // but the checkpoint pinned another log.
        let mut rebuilt = log.copy();
        rebuilt.msgs.truncate(1);
        let s = rebuilt.scheduler.clone();
        let body = EventBody::Accepted(Accepted {
            spec: spec(),
            cmd_seq: 7,
            by: Default::default(),
            pending: None,
        });
        let subject = |k| subjects::workload_event("t/w", k);
        let mut prev = rebuilt.push(
            &s,
            Event::new("scheduler", "t/w", None, body),
            &subject("accepted"),
        );
        for replicas in [2, 3] {
            let ev = Event::new(
                "scheduler",
                "t/w",
                Some(&prev),
                EventBody::Scaled(Scaled {
                    replicas,
                    cmd_seq: 1,
                }),
            );
            prev = rebuilt.push(&s, ev, &subject("scaled"));
        }
        assert_eq!(rebuilt.audit(&[]).findings, 0, "alone it looks clean");
        assert_eq!(first(&rebuilt.audit(&[cp])), (4, "checkpoint_mismatch"));
    }
}
