//! What a reader checks before it applies an event of the log, in stream order. An event is
//! applied only when: it parses as a format-2 event and carries a `Bulkhead-Sig` proof that
//! decodes; the key it names is enrolled (and not revoked) at that point of the log; the
//! proof verifies with that key; the
//! key's role may write that type there (a node writes facts about its own copies only, a
//! scanner writes verdicts, an admin enrols and changes the policy, the query API writes
//! checkpoints); a policy event counts under the policy in force (M of N); the subject it
//! was stored under is the one
//! its body names; and every value is within the limits admission enforces. Anything else
//! is set aside with its reason. Pure; the directory of identities grows as the log goes.

use bulkhead_schemas::event::{EVENT_VERSION, Event, EventBody, hash_bytes};
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::spec::{MAX_REPLICAS, validate};
use bulkhead_schemas::subjects;

use crate::aside::Aside;
use crate::directory::Directory;
use crate::ports::log::{Batch, Stored};
use crate::signing::{Checked, Proof};

/// How far ahead of the server's clock a verdict may date itself.
pub const MAX_SKEW_MS: u64 = 60_000;
/// How far ahead any other event may: a writer whose clock runs fast must not see its own
/// appends applied while every other reader sets them aside, so this is generous; a date
/// years ahead (a stolen key's poison) is still refused.
pub const MAX_CLOCK_SKEW_MS: u64 = 3_600_000;
/// How far ahead of its event a restart may be put off.
const MAX_NOT_BEFORE_MS: u64 = 86_400_000;
/// How much older than its storing a verdict may be: a worker publishes it at once, so an
/// old one is a replay.
pub const MAX_VERDICT_AGE_MS: u64 = 300_000;
/// The longest text a reason, a cause or an image may be.
const MAX_TEXT: usize = 8 * 1024;

/// One message of the log as read.
#[derive(Clone, Copy, Debug)]
pub struct Raw<'a> {
    pub seq: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// The `Bulkhead-Sig` header, if any.
    pub proof: Option<&'a str>,
    /// When the server stored it (Unix ms).
    pub stored_ms: u64,
}

/// Where in the log an event belongs, by its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Workload,
    Node,
    Scan,
    Sys,
}

impl Family {
    fn of(subject: &str) -> Option<Family> {
        let rest = subject.strip_prefix("bulkhead.evt.")?;
        let family = match rest.split('.').next()? {
            "node" => Family::Node,
            "scan" => Family::Scan,
            "sys" => Family::Sys,
            _ => Family::Workload,
        };
        Some(family)
    }
}

/// Checks events in stream order against the identities the log enrolled.
pub struct Verifier {
    pub directory: Directory,
    checked: Checked,
    /// Ids of the node and identity events applied: those are not chained like a
    /// workload's, so a copy stored again (a JetStream delivery a service key aimed at the
    /// log's own subjects) is refused as a replay.
    seen: std::collections::HashSet<String>,
}

/// Ids of node and identity events remembered at most (past it, they are forgotten).
const MAX_SEEN: usize = 1_000_000;

impl Verifier {
    /// A verifier trusting `admins` (public nkeys) as the source of every identity.
    pub fn new(admins: &[String]) -> Verifier {
        Verifier {
            directory: Directory::new(admins),
            checked: Checked::default(),
            seen: Default::default(),
        }
    }

    /// Signatures verified so far (each batch once).
    pub fn signatures_verified(&self) -> u64 {
        self.checked.verified
    }

    /// Checks one message and adds it to `batch`: as an event of its family, or set aside.
    pub fn read(&mut self, raw: Raw<'_>, batch: &mut Batch) {
        match self.check(raw) {
            Ok((Family::Workload, s)) => batch.events.push(s),
            Ok((Family::Node, s)) => batch.nodes.push(s),
            Ok((Family::Scan, s)) => batch.scans.push((s, raw.stored_ms)),
            Ok((Family::Sys, s)) => batch.identities.push(s),
            Err(a) => batch.set_aside.push(a),
        }
    }

    /// The event a message holds, and its family; or why it is set aside.
    pub fn check(&mut self, raw: Raw<'_>) -> Result<(Family, Stored), Aside> {
        let aside = |code, why: String| Aside::new(raw.seq, raw.subject, code, why);
        let event = Event::parse(raw.payload).map_err(|e| aside("malformed", e.to_string()))?;
        if event.v != EVENT_VERSION {
            let why = format!("format {} (this log reads format {EVENT_VERSION})", event.v);
            return Err(aside("old_format", why));
        }
        let proof = raw
            .proof
            .ok_or_else(|| aside("unsigned", "no Bulkhead-Sig header".into()))?;
        let proof = Proof::decode(proof).map_err(|e| aside("bad_signature", e.to_string()))?;
        // The writer first: a key the log never enrolled costs no signature check, and
        // leaves no batch tree behind in the reader's memory.
        let writer = self
            .directory
            .writer(&event.actor.key, raw.seq)
            .map_err(|e| aside("unknown_writer", e.to_string()))?;
        let hash = hash_bytes(raw.payload);
        self.checked
            .verify(&event.actor.key, &hash, &proof)
            .map_err(|e| aside("bad_signature", e.to_string()))?;
        let family = Family::of(raw.subject)
            .ok_or_else(|| aside("subject_mismatch", "not a subject of the log".into()))?;
        let expected = expected_subject(family, &event).ok_or_else(|| {
            aside(
                "not_in_its_place",
                format!("{} {}", kind(&event), where_(family)),
            )
        })?;
        if expected != raw.subject {
            let why = format!("stored under {} but its body names {expected}", raw.subject);
            return Err(aside("subject_mismatch", why));
        }
        authority(family, &event, writer.role, &writer.name)
            .map_err(|why| aside("no_authority", why))?;
        limits(&event, raw.stored_ms).map_err(|why| aside("out_of_limits", why))?;
        if matches!(family, Family::Node | Family::Sys) {
            if self.seen.contains(&event.id) {
                return Err(aside(
                    "replayed",
                    format!("event {} was applied before", event.id),
                ));
            }
            if let Some(why) = self.directory.refuses(&event) {
                return Err(aside("replayed", why));
            }
            if let Some(why) = self.directory.policy.refuses(&event.actor.key, &event) {
                return Err(aside("policy_refused", why));
            }
            if self.seen.len() >= MAX_SEEN {
                self.seen.clear();
            }
            self.seen.insert(event.id.clone());
        }
        if family == Family::Sys {
            self.directory.apply(raw.seq, &event);
        }
        Ok((
            family,
            Stored {
                seq: raw.seq,
                hash,
                event,
            },
        ))
    }
}

fn kind(ev: &Event) -> &'static str {
    ev.kind()
}

fn where_(family: Family) -> &'static str {
    match family {
        Family::Workload => "is not a workload event",
        Family::Node => "is not a node event",
        Family::Scan => "is not a scan event",
        Family::Sys => "is not an identity event",
    }
}

/// The subject an event of `family` must be stored under; None when its type does not
/// belong to that family.
fn expected_subject(family: Family, ev: &Event) -> Option<String> {
    let kind = ev.kind();
    match family {
        Family::Workload => {
            let (tenant, id) = subjects::split_key(&ev.subject)?;
            let ok = subjects::is_valid_tenant(tenant)
                && subjects::is_valid_token(id)
                && ev.body.node_event().is_none()
                && !matches!(ev.body, EventBody::Enrolled(_) | EventBody::Revoked(_));
            ok.then(|| subjects::workload_event(&ev.subject, kind))
        }
        Family::Node => {
            let ok = subjects::is_valid_token(&ev.subject) && ev.body.node_event().is_some();
            ok.then(|| subjects::node_event(&ev.subject, kind))
        }
        Family::Scan => {
            let token = ev.subject.rsplit(':').next().unwrap_or_default();
            let ok =
                subjects::is_valid_token(token) && matches!(ev.body, EventBody::ScanCompleted(_));
            ok.then(|| subjects::scan_event(&ev.subject, kind))
        }
        Family::Sys => {
            let (family, name) = match &ev.body {
                EventBody::Enrolled(e) => (e.role.as_str(), e.name.clone()),
                EventBody::Revoked(r) => (r.role.as_str(), r.name.clone()),
                EventBody::PolicyProposed(p) => ("policy", format!("v{}", p.policy.version)),
                EventBody::PolicyApproved(a) => ("policy", format!("v{}", a.version)),
                EventBody::Checkpoint(_) => {
                    let name = ev.subject.strip_prefix("audit/")?;
                    ("audit", name.to_owned())
                }
                _ => return None,
            };
            let ok = subjects::is_valid_token(&name) && ev.subject == format!("{family}/{name}");
            ok.then(|| subjects::sys_event(family, &name, kind))
        }
    }
}

/// Whether `role` (named `name`) may write `ev` in `family`.
fn authority(family: Family, ev: &Event, role: Role, name: &str) -> Result<(), String> {
    let need = |want: Role| -> Result<(), String> {
        if role == want {
            Ok(())
        } else {
            Err(format!(
                "{role} {name} may not write {}; only a {want} may",
                ev.kind()
            ))
        }
    };
    let own_node = |node: &str| -> Result<(), String> {
        need(Role::Node)?;
        if node == name {
            Ok(())
        } else {
            Err(format!(
                "node {name} wrote a fact about a copy on node {node}"
            ))
        }
    };
    match (&ev.body, family) {
        (EventBody::Started(s), Family::Workload) => own_node(&s.node),
        (EventBody::Exited(x), Family::Workload) => own_node(&x.node),
        (EventBody::Stopped(s), Family::Workload) => own_node(&s.node),
        (EventBody::Joined(_), Family::Node) => own_node(&ev.subject),
        (EventBody::ScanCompleted(_), Family::Scan) => need(Role::Scanner),
        (EventBody::Lost(_) | EventBody::ReplicaRequested(_) | EventBody::GaveUp(_), _) => {
            need(Role::Failover)
        }
        (
            EventBody::Enrolled(_)
            | EventBody::Revoked(_)
            | EventBody::PolicyProposed(_)
            | EventBody::PolicyApproved(_),
            _,
        ) => need(Role::Admin),
        (EventBody::Checkpoint(_), _) => {
            need(Role::Api)?;
            if ev.subject == format!("audit/{name}") {
                Ok(())
            } else {
                Err(format!("api {name} wrote a checkpoint as {}", ev.subject))
            }
        }
        (
            EventBody::Accepted(_)
            | EventBody::Rejected(_)
            | EventBody::ScanRequested(_)
            | EventBody::ScanCompleted(_)
            | EventBody::Scheduled(_)
            | EventBody::Scaled(_)
            | EventBody::Quarantined(_)
            | EventBody::ScanWaiting(_)
            | EventBody::StopRequested(_)
            | EventBody::Draining(_)
            | EventBody::Drained(_)
            | EventBody::Undrained(_)
            | EventBody::Started(_)
            | EventBody::Exited(_)
            | EventBody::Stopped(_)
            | EventBody::Joined(_),
            _,
        ) => need(Role::Scheduler),
    }
}

fn token(what: &str, s: &str) -> Result<(), String> {
    if subjects::is_valid_token(s) {
        Ok(())
    } else {
        Err(format!("{what} {s:?} is not 1-64 of [A-Za-z0-9_-]"))
    }
}

fn replica(r: u32) -> Result<(), String> {
    if r < MAX_REPLICAS {
        Ok(())
    } else {
        Err(format!(
            "replica {r} is past the {MAX_REPLICAS} a workload may have"
        ))
    }
}

/// A `started` event's confinement: only the capabilities a container can hold here, each
/// once, and short words (every reader keeps it per replica).
fn confinement(c: &bulkhead_schemas::event::Confinement) -> Result<(), String> {
    use bulkhead_schemas::spec::{ADDABLE_CAPABILITIES, BASE_CAPABILITIES};
    text("confinement.network", &c.network)?;
    text("confinement.seccomp", &c.seccomp)?;
    for (i, cap) in c.capabilities.iter().enumerate() {
        let known = BASE_CAPABILITIES.contains(&cap.as_str())
            || ADDABLE_CAPABILITIES.contains(&cap.as_str());
        if !known || c.capabilities[..i].contains(cap) {
            let shown: String = cap.chars().take(32).collect();
            return Err(format!(
                "confinement names capability {shown:?}, unknown or twice"
            ));
        }
    }
    Ok(())
}

fn text(what: &str, s: &str) -> Result<(), String> {
    if s.len() <= MAX_TEXT {
        Ok(())
    } else {
        Err(format!("{what} is {} bytes, more than {MAX_TEXT}", s.len()))
    }
}

/// Whether every value of `ev` is within what admission allows, and `ev` does not date
/// itself after the server stored it.
fn limits(ev: &Event, stored_ms: u64) -> Result<(), String> {
    let at = bulkhead_schemas::parse_rfc3339_ms(&ev.at)
        .ok_or_else(|| format!("at {:?} is not an RFC 3339 time", ev.at))?;
    let skew = match ev.body {
        EventBody::ScanCompleted(_) => MAX_SKEW_MS,
        _ => MAX_CLOCK_SKEW_MS,
    };
    if at > stored_ms.saturating_add(skew) {
        return Err(format!(
            "dated {} ms after the server stored it",
            at - stored_ms
        ));
    }
    match &ev.body {
        EventBody::Accepted(a) => {
            validate(&a.spec).map_err(|r| format!("its spec: {r}"))?;
            let id = subjects::split_key(&ev.subject).map(|(_, id)| id);
            if a.spec.id.as_deref() != id {
                return Err("its spec names another workload".into());
            }
            Ok(())
        }
        EventBody::Rejected(r) => text("reason", &r.rejection.reason),
        EventBody::Scheduled(s) => {
            replica(s.replica)?;
            token("node", &s.node)?;
            s.replaces.as_deref().map_or(Ok(()), |n| token("node", n))
        }
        EventBody::Started(s) => {
            replica(s.replica)?;
            token("node", &s.node)?;
            text("container", &s.container)?;
            s.confinement.as_ref().map_or(Ok(()), confinement)
        }
        EventBody::Exited(x) => {
            replica(x.replica)?;
            token("node", &x.node)?;
            text("reason", &x.reason)
        }
        EventBody::Stopped(s) => {
            replica(s.replica)?;
            token("node", &s.node)
        }
        EventBody::Lost(l) => {
            l.replica.map_or(Ok(()), replica)?;
            token("node", &l.node)?;
            text("reason", &l.reason)
        }
        EventBody::ReplicaRequested(r) => {
            replica(r.replica)?;
            text("cause", &r.cause)?;
            let not_before = bulkhead_schemas::parse_rfc3339_ms(&r.not_before)
                .ok_or("not_before is not an RFC 3339 time")?;
            if not_before > at.saturating_add(MAX_NOT_BEFORE_MS) {
                return Err("a restart put off by more than a day".into());
            }
            Ok(())
        }
        EventBody::GaveUp(g) => {
            replica(g.replica)?;
            text("reason", &g.reason)
        }
        EventBody::Scaled(s) if s.replicas > MAX_REPLICAS => Err(format!(
            "scaled to {}, more than {MAX_REPLICAS}",
            s.replicas
        )),
        EventBody::Scaled(_) => Ok(()),
        EventBody::Quarantined(q) => text("reason", &q.reason),
        EventBody::ScanRequested(r) => text("image", &r.image),
        EventBody::ScanWaiting(w) => {
            text("image", &w.image)?;
            text("reason", &w.reason)
        }
        EventBody::ScanCompleted(c) => {
            if at.saturating_add(MAX_VERDICT_AGE_MS) < stored_ms {
                return Err(format!(
                    "a verdict dated {} ms before the server stored it",
                    stored_ms - at
                ));
            }
            text("image", &c.image)
        }
        EventBody::StopRequested(s) => match s.grace_secs {
            Some(g) if g > bulkhead_schemas::command::MAX_GRACE_SECS => {
                Err(format!("a grace of {g} s"))
            }
            _ => Ok(()),
        },
        EventBody::Joined(j) if j.runtime_classes.len() > 16 => {
            Err("more runtime classes than there are".into())
        }
        EventBody::Joined(_) => Ok(()),
        EventBody::Draining(_) | EventBody::Undrained(_) => Ok(()),
        EventBody::Drained(d) => text("reason", &d.reason),
        EventBody::Enrolled(e) => {
            token("name", &e.name)?;
            nkey(&e.key)
        }
        EventBody::Revoked(r) => {
            token("name", &r.name)?;
            nkey(&r.key)
        }
        EventBody::PolicyProposed(p) => {
            for key in &p.policy.admins.keys {
                nkey(key)?;
            }
            for (tenant, rules) in &p.policy.tenants {
                if !subjects::is_valid_tenant(tenant) {
                    return Err(format!("tenant {tenant:?} is not a tenant name"));
                }
                for r in rules.registries.iter().flatten() {
                    text("registry", r)?;
                }
            }
            Ok(())
        }
        EventBody::PolicyApproved(a) => text("hash", &a.hash),
        EventBody::Checkpoint(c) => text("hash", &c.hash),
    }
}

fn nkey(key: &str) -> Result<(), String> {
    nkeys::KeyPair::from_public_key(key)
        .map(drop)
        .map_err(|_| format!("{key:?} is not a public nkey"))
}

#[cfg(test)]
mod tests;
