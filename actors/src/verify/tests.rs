//! What readers refuse, each with its reason: forged, stolen-key and poisoned events.

use bulkhead_schemas::event::{
    Accepted, Event, EventBody, Exited, NodeJoined, ScanCompleted, Scheduled, hash_bytes,
};
use bulkhead_schemas::identity::{Enrolled, Revoked, Role};
use bulkhead_schemas::{RuntimeClass, WorkloadSpec, subjects};

use super::*;
use crate::signing::{Signer, seal_event};

/// A log's writers: an admin, and the identities it enrolled.
struct World {
    admin: Signer,
    scheduler: Signer,
    node: Signer,
    scanner: Signer,
    verifier: Verifier,
    seq: u64,
    now: u64,
}

impl World {
    fn new() -> World {
        let admin = Signer::generate();
        let mut w = World {
            verifier: Verifier::new(&[admin.public_key().to_owned()]),
            admin,
            scheduler: Signer::generate(),
            node: Signer::generate(),
            scanner: Signer::generate(),
            seq: 0,
            now: bulkhead_schemas::now_ms(),
        };
        for (role, name, key) in [
            (
                Role::Scheduler,
                "scheduler",
                w.scheduler.public_key().to_owned(),
            ),
            (Role::Node, "n1", w.node.public_key().to_owned()),
            (
                Role::Scanner,
                "scanner-1",
                w.scanner.public_key().to_owned(),
            ),
        ] {
            let body = EventBody::Enrolled(Enrolled {
                xkey: None,
                role,
                name: name.into(),
                key,
                classes: vec![RuntimeClass::Runc],
            });
            let admin = w.admin.clone();
            let ev = Event::new("admin", &format!("{role}/{name}"), None, body);
            let subject = subjects::sys_event(role.as_str(), name, "enrolled");
            w.read(&admin, ev, &subject).expect("an admin's enrolment");
        }
        w
    }

    /// `ev` written by `by` under `subject`, as the log's reader checks it.
    fn read(&mut self, by: &Signer, mut ev: Event, subject: &str) -> Result<Stored, Aside> {
        let (payload, proof) = seal_event(by, &mut ev);
        self.raw(subject, &payload, Some(&proof.encode()))
    }

    fn raw(&mut self, subject: &str, payload: &[u8], proof: Option<&str>) -> Result<Stored, Aside> {
        self.seq += 1;
        let raw = Raw {
            seq: self.seq,
            subject,
            payload,
            proof,
            stored_ms: self.now,
        };
        self.verifier.check(raw).map(|(_, s)| s)
    }
}

fn spec(replicas: u32) -> WorkloadSpec {
    let mut s: WorkloadSpec = serde_json::from_value(
        serde_json::json!({"id": "w", "image": "i", "memory_mb": 10, "cpu_millicores": 5}),
    )
    .unwrap();
    s.replicas = replicas;
    s
}

fn accepted(replicas: u32) -> Event {
    let body = EventBody::Accepted(Accepted {
        spec: spec(replicas),
        cmd_seq: 1,
        by: Default::default(),
        pending: None,
    });
    Event::new("scheduler", "t/w", None, body)
}

fn exited(node: &str) -> Event {
    let body = EventBody::Exited(Exited {
        replica: 0,
        node: node.into(),
        code: 0,
        reason: "completed".into(),
        finished_at: String::new(),
    });
    Event::new("node/n1", "t/w", None, body)
}

fn code(r: Result<Stored, Aside>) -> &'static str {
    match r {
        Ok(_) => "applied",
        Err(a) => a.code,
    }
}

const W: &str = "bulkhead.evt.t.wl.w";

#[test]
fn events_of_enrolled_writers_in_their_place_are_applied() {
    let mut w = World::new();
    let sched = w.scheduler.clone();
    let node = w.node.clone();
    assert_eq!(
        code(w.read(&sched, accepted(2), &format!("{W}.accepted"))),
        "applied"
    );
    assert_eq!(
        code(w.read(&node, exited("n1"), &format!("{W}.exited"))),
        "applied"
    );
    let joined = EventBody::Joined(NodeJoined {
        capacity: Default::default(),
        runtime_classes: vec![RuntimeClass::Runc],
        runtime: "sim".into(),
    });
    let ev = Event::new("node/n1", "n1", None, joined);
    let subject = subjects::node_event("n1", "joined");
    assert_eq!(code(w.read(&node, ev, &subject)), "applied");
}

#[test]
fn unsigned_tampered_unknown_and_old_events_are_set_aside() {
    let mut w = World::new();
    let sched = w.scheduler.clone();
    let (payload, proof) = seal_event(&sched, &mut accepted(1));
    let subject = format!("{W}.accepted");
    assert_eq!(code(w.raw(&subject, &payload, None)), "unsigned");
    let text = String::from_utf8(payload.clone()).unwrap();
    assert!(text.contains(r#""image":"i""#), "{text}");
    let tampered = text
        .replace(r#""image":"i""#, r#""image":"j""#)
        .into_bytes();
    assert_eq!(
        code(w.raw(&subject, &tampered, Some(&proof.encode()))),
        "bad_signature"
    );
    let stranger = Signer::generate();
    let verified = w.verifier.signatures_verified();
    assert_eq!(
        code(w.read(&stranger, accepted(1), &subject)),
        "unknown_writer"
    );
    // The writer is looked up first: a key never enrolled costs no signature check, and
    // a forgery under it is an unknown writer too.
    assert_eq!(w.verifier.signatures_verified(), verified);
    let (theirs, their_proof) = seal_event(&stranger, &mut accepted(1));
    let forged = String::from_utf8(theirs)
        .unwrap()
        .replace(r#""image":"i""#, r#""image":"j""#)
        .into_bytes();
    assert_eq!(
        code(w.raw(&subject, &forged, Some(&their_proof.encode()))),
        "unknown_writer"
    );
    assert_eq!(w.verifier.signatures_verified(), verified);
    assert_eq!(code(w.read(&sched, accepted(1), &subject)), "applied");
    assert_eq!(w.verifier.signatures_verified(), verified + 1);
    let mut old = accepted(1);
    old.v = 1;
    assert_eq!(code(w.read(&sched, old, &subject)), "old_format");
    assert_eq!(
        code(w.raw(&subject, b"{not json", Some("0/1 00"))),
        "malformed"
    );
    assert_eq!(
        hash_bytes(&payload),
        hash_bytes(&payload),
        "the payload is what is hashed"
    );
}

/// A node's stolen key: it may write facts about its own copies only, and only in their
/// workload's place; a body naming another workload than its subject is refused too.
#[test]
fn a_nodes_key_writes_facts_about_its_own_copies_only() {
    let mut w = World::new();
    let node = w.node.clone();
    assert_eq!(
        code(w.read(&node, exited("n2"), &format!("{W}.exited"))),
        "no_authority"
    );
    assert_eq!(
        code(w.read(&node, accepted(1), &format!("{W}.accepted"))),
        "no_authority"
    );
    let other = "bulkhead.evt.t.wl.other.exited";
    assert_eq!(code(w.read(&node, exited("n1"), other)), "subject_mismatch");
    let stray = subjects::node_event("n1", "exited");
    assert_eq!(
        code(w.read(&node, exited("n1"), &stray)),
        "not_in_its_place"
    );
}

/// A scheduler's stolen key: poison within its authority is still outside admission's
/// limits, and is refused before any reader allocates for it.
#[test]
fn poison_signed_with_an_authorised_key_is_out_of_limits() {
    let mut w = World::new();
    let sched = w.scheduler.clone();
    let huge = w.read(&sched, accepted(u32::MAX), &format!("{W}.accepted"));
    assert_eq!(code(huge), "out_of_limits");
    let dotted = EventBody::Scheduled(Scheduled {
        replica: 0,
        node: "evil.node".into(),
        runtime_class: RuntimeClass::Runc,
        replaces: None,
    });
    let ev = Event::new("scheduler", "t/w", None, dotted);
    assert_eq!(
        code(w.read(&sched, ev, &format!("{W}.scheduled"))),
        "out_of_limits"
    );
    let mut future = accepted(1);
    future.at = bulkhead_schemas::rfc3339_from_ms(w.now + 10 * 365 * 86_400_000);
    assert_eq!(
        code(w.read(&sched, future, &format!("{W}.accepted"))),
        "out_of_limits"
    );
}

/// A node's stolen key: a `started` whose confinement names capabilities no container
/// here can hold (or one many times over, to swell every reader's projection) is refused;
/// an honest one is applied.
#[test]
fn a_started_confinement_names_only_capabilities_a_container_can_hold() {
    let mut w = World::new();
    let node = w.node.clone();
    let started = |caps: Vec<String>| {
        let body = EventBody::Started(bulkhead_schemas::event::Started {
            replica: 0,
            node: "n1".into(),
            container: "c".into(),
            confinement: Some(bulkhead_schemas::event::Confinement {
                network: "pod".into(),
                seccomp: "runtime/default".into(),
                no_new_privs: true,
                capabilities: caps,
                run_as_user: None,
                read_only_rootfs: false,
            }),
        });
        Event::new("node/n1", "t/w", None, body)
    };
    let subject = format!("{W}.started");
    for caps in [
        vec!["SYS_ADMIN".to_owned()],
        vec!["NET_RAW".to_owned(); 1000],
    ] {
        assert_eq!(
            code(w.read(&node, started(caps), &subject)),
            "out_of_limits"
        );
    }
    let honest = vec!["NET_BIND_SERVICE".to_owned(), "NET_RAW".to_owned()];
    assert_eq!(code(w.read(&node, started(honest), &subject)), "applied");
}

/// A scanner's stolen key: a verdict replayed from long ago, or dated in the future, is
/// refused; a fresh one is a scanner's to write.
#[test]
fn a_scanners_key_cannot_replay_or_predate_a_verdict() {
    let mut w = World::new();
    let scanner = w.scanner.clone();
    let verdict = |at_ms: u64| {
        let body = EventBody::ScanCompleted(ScanCompleted {
            image: "reg/app:1".into(),
            digest: "sha256:abc".into(),
            job: "j".into(),
            worker: "scanner-1".into(),
            verdict: Some(Default::default()),
            error: None,
            layers: Vec::new(),
        });
        let mut ev = Event::new("scanner/scanner-1", "sha256:abc", None, body);
        ev.at = bulkhead_schemas::rfc3339_from_ms(at_ms);
        ev
    };
    let subject = subjects::scan_event("sha256:abc", "scan_completed");
    let now = w.now;
    assert_eq!(code(w.read(&scanner, verdict(now), &subject)), "applied");
    assert_eq!(
        code(w.read(&scanner, verdict(now - 3_600_000), &subject)),
        "out_of_limits"
    );
    let far = now + 365 * 86_400_000;
    assert_eq!(
        code(w.read(&scanner, verdict(far), &subject)),
        "out_of_limits"
    );
    let sched = w.scheduler.clone();
    assert_eq!(code(w.read(&sched, verdict(now), &subject)), "no_authority");
}

#[test]
fn a_revoked_key_writes_nothing_after_its_revocation() {
    let mut w = World::new();
    let node = w.node.clone();
    assert_eq!(
        code(w.read(&node, exited("n1"), &format!("{W}.exited"))),
        "applied"
    );
    let body = EventBody::Revoked(Revoked {
        role: Role::Node,
        name: "n1".into(),
        key: node.public_key().into(),
    });
    let admin = w.admin.clone();
    let ev = Event::new("admin", "node/n1", None, body);
    let subject = subjects::sys_event("node", "n1", "revoked");
    assert_eq!(code(w.read(&admin, ev, &subject)), "applied");
    assert_eq!(
        code(w.read(&node, exited("n1"), &format!("{W}.exited"))),
        "unknown_writer"
    );
    // Only an admin enrols: a scheduler's key cannot make itself a node.
    let sched = w.scheduler.clone();
    let body = EventBody::Enrolled(Enrolled {
        xkey: None,
        role: Role::Node,
        name: "n9".into(),
        key: sched.public_key().into(),
        classes: vec![RuntimeClass::Confidential],
    });
    let ev = Event::new("scheduler", "node/n9", None, body);
    let subject = subjects::sys_event("node", "n9", "enrolled");
    assert_eq!(code(w.read(&sched, ev, &subject)), "no_authority");
}

/// Node and identity events are not chained: a copy stored again (a JetStream delivery a
/// service key aimed at the log's own subjects) is refused, and so is an old enrolment of a
/// key that was replaced: a key never comes back.
#[test]
fn replays_of_unchained_events_are_refused() {
    let mut w = World::new();
    let node = w.node.clone();
    let mut joined = Event::new(
        "node/n1",
        "n1",
        None,
        EventBody::Joined(NodeJoined {
            capacity: Default::default(),
            runtime_classes: vec![RuntimeClass::Runc],
            runtime: "sim".into(),
        }),
    );
    let (payload, proof) = seal_event(&node, &mut joined);
    let subject = subjects::node_event("n1", "joined");
    w.raw(&subject, &payload, Some(&proof.encode()))
        .expect("the first");
    let again = w
        .raw(&subject, &payload, Some(&proof.encode()))
        .unwrap_err();
    assert_eq!(again.code, "replayed");

    // n1 is enrolled again with a new key; the old enrolment, stored again, is refused,
    // and the old key stays out.
    let admin = w.admin.clone();
    let old_key = node.public_key().to_owned();
    let enrol = |key: &str| {
        Event::new(
            "admin",
            "node/n1",
            None,
            EventBody::Enrolled(Enrolled {
                xkey: None,
                role: Role::Node,
                name: "n1".into(),
                key: key.into(),
                classes: vec![RuntimeClass::Runc],
            }),
        )
    };
    let fresh = Signer::generate();
    let enrolled = subjects::sys_event("node", "n1", "enrolled");
    w.read(&admin, enrol(fresh.public_key()), &enrolled)
        .expect("re-keyed");
    let replay = w.read(&admin, enrol(&old_key), &enrolled).unwrap_err();
    assert_eq!(replay.code, "replayed");
    assert_eq!(
        w.verifier
            .directory
            .get(Role::Node, "n1")
            .map(|i| i.key.as_str()),
        Some(fresh.public_key())
    );
    // Revoking the replaced key leaves the name with its new one.
    let revoked = Event::new(
        "admin",
        "node/n1",
        None,
        EventBody::Revoked(Revoked {
            role: Role::Node,
            name: "n1".into(),
            key: old_key,
        }),
    );
    w.read(
        &admin,
        revoked,
        &subjects::sys_event("node", "n1", "revoked"),
    )
    .expect("an admin's revocation");
    assert!(w.verifier.directory.get(Role::Node, "n1").is_some());
}

/// A writer whose clock runs minutes ahead still has its events applied by every reader
/// (they must not fork from the writer's own view); a verdict may not date itself ahead.
#[test]
fn clock_skew_is_tolerated_except_in_verdicts() {
    let mut w = World::new();
    let scheduler = w.scheduler.clone();
    let spec: WorkloadSpec = serde_json::from_value(serde_json::json!(
        {"id": "w", "image": "i", "memory_mb": 64, "cpu_millicores": 100}
    ))
    .unwrap();
    let mut ev = Event::new(
        "scheduler",
        "default/w",
        None,
        EventBody::Accepted(Accepted {
            spec,
            cmd_seq: 1,
            by: Default::default(),
            pending: None,
        }),
    );
    ev.at = bulkhead_schemas::rfc3339_from_ms(w.now + 10 * 60_000);
    w.read(&scheduler, ev, "bulkhead.evt.default.wl.w.accepted")
        .expect("ten minutes fast is a clock, not an attack");
    let scanner = w.scanner.clone();
    let mut verdict = Event::new(
        "scanner/s",
        "sha256:aa",
        None,
        EventBody::ScanCompleted(ScanCompleted {
            image: "i".into(),
            digest: "sha256:aa".into(),
            job: "j".into(),
            worker: "s".into(),
            verdict: None,
            error: Some("x".into()),
            layers: Vec::new(),
        }),
    );
    verdict.at = bulkhead_schemas::rfc3339_from_ms(w.now + 2 * 60_000);
    let err = w
        .read(
            &scanner,
            verdict,
            &subjects::scan_event("sha256:aa", "scan_completed"),
        )
        .unwrap_err();
    assert_eq!(err.code, "out_of_limits");
}
