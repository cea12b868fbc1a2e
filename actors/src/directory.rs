//! Who is who: the identities the log has enrolled (and revoked), by key, and the policy in
//! force. Admins are the trust anchor, given to every reader out of band (its credential)
//! until the log's policy names others (a policy change, approved by M of N admins, adds
//! and drops admins); every other identity is an `enrolled` event an admin signed, read
//! from the log in order. Pure.

use std::collections::HashMap;

use bulkhead_schemas::RuntimeClass;
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::identity::Role;

use crate::policy::PolicyBook;

/// One identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub name: String,
    pub key: String,
    /// A node's runtime classes, fixed at enrolment.
    pub classes: Vec<RuntimeClass>,
    /// The log sequence from which its key may no longer write.
    pub revoked_at: Option<u64>,
    /// Its curve public key, for secrets sealed to it.
    pub xkey: Option<String>,
}

/// Why a key may not write at a point of the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAWriter {
    #[error("key {0} is not enrolled")]
    Unknown(String),
    #[error("{role} {name} was revoked at sequence {at}")]
    Revoked { role: Role, name: String, at: u64 },
}

#[derive(Clone, Debug)]
pub struct Directory {
    by_key: HashMap<String, Identity>,
    /// `role/name` → key, for the enrolled (not revoked) identities.
    by_name: HashMap<(Role, String), String>,
    /// The policy in force, and the changes pending.
    pub policy: PolicyBook,
}

impl Default for Directory {
    /// A directory that trusts no admin (tests that enrol by hand).
    fn default() -> Self {
        Directory::new(&[])
    }
}

impl Directory {
    /// A directory that trusts these admin keys.
    pub fn new(admins: &[String]) -> Directory {
        let mut d = Directory {
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            policy: PolicyBook::new(admins),
        };
        for key in admins {
            d.insert(admin(key));
        }
        d
    }

    /// Adds an identity as an enrolment would (the admin's own book, tests).
    pub fn enroll(&mut self, id: Identity) {
        self.insert(id);
    }

    fn insert(&mut self, id: Identity) {
        self.by_name
            .insert((id.role, id.name.clone()), id.key.clone());
        self.by_key.insert(id.key.clone(), id);
    }

    /// The identity writing with `key` at sequence `seq`.
    pub fn writer(&self, key: &str, seq: u64) -> Result<&Identity, NotAWriter> {
        let id = self
            .by_key
            .get(key)
            .ok_or_else(|| NotAWriter::Unknown(key.to_owned()))?;
        match id.revoked_at {
            Some(at) if seq >= at => Err(NotAWriter::Revoked {
                role: id.role,
                name: id.name.clone(),
                at,
            }),
            _ => Ok(id),
        }
    }

    /// The enrolled identity `role`/`name`, if not revoked.
    pub fn get(&self, role: Role, name: &str) -> Option<&Identity> {
        let key = self.by_name.get(&(role, name.to_owned()))?;
        self.by_key.get(key).filter(|id| id.revoked_at.is_none())
    }

    /// Every identity not revoked.
    pub fn live(&self) -> impl Iterator<Item = &Identity> {
        self.by_key.values().filter(|id| id.revoked_at.is_none())
    }

    /// Why an admin-signed `enrolled` may not be applied: its key was revoked once (a key
    /// never comes back; an old enrolment replayed into the log would otherwise take a
    /// name back from its current key).
    pub fn refuses(&self, ev: &Event) -> Option<String> {
        let EventBody::Enrolled(e) = &ev.body else {
            return None;
        };
        let id = self.by_key.get(&e.key)?;
        id.revoked_at.map(|at| {
            format!(
                "enrols {} {} with key {}, revoked at sequence {at}",
                e.role, e.name, e.key
            )
        })
    }

    /// An `enrolled` or `revoked` event at `seq` (already verified as an admin's).
    pub fn apply(&mut self, seq: u64, ev: &Event) {
        match &ev.body {
            EventBody::Enrolled(e) if self.refuses(ev).is_some() => {
                let _ = e; // a revoked key stays revoked
            }
            EventBody::Enrolled(e) => {
                // A name enrolled again with a new key: the old key is done.
                if let Some(old) = self.by_name.get(&(e.role, e.name.clone())).cloned()
                    && old != e.key
                    && let Some(id) = self.by_key.get_mut(&old)
                {
                    id.revoked_at.get_or_insert(seq);
                }
                self.insert(Identity {
                    role: e.role,
                    name: e.name.clone(),
                    key: e.key.clone(),
                    classes: e.classes.clone(),
                    revoked_at: None,
                    xkey: e.xkey.clone(),
                });
            }
            EventBody::PolicyProposed(_) | EventBody::PolicyApproved(_) => {
                let Some(adopted) = self.policy.apply(seq, &ev.actor.key, ev) else {
                    return;
                };
                // The dropped admins write nothing after the event that dropped them.
                for key in &adopted.dropped {
                    if let Some(id) = self.by_key.get_mut(key) {
                        id.revoked_at.get_or_insert(seq + 1);
                    }
                }
                for key in &adopted.added {
                    if !self.by_key.contains_key(key) {
                        self.insert(admin(key));
                    }
                }
            }
            EventBody::Revoked(r) => {
                if let Some(id) = self.by_key.get_mut(&r.key) {
                    id.revoked_at.get_or_insert(seq);
                }
                // Only if the name still has that key: revoking a key replaced since must
                // not take the name's new key with it.
                let name = (r.role, r.name.clone());
                if self.by_name.get(&name) == Some(&r.key) {
                    self.by_name.remove(&name);
                }
            }
            _ => {}
        }
    }
}

/// An admin identity, named by its key.
fn admin(key: &str) -> Identity {
    Identity {
        role: Role::Admin,
        name: format!("admin-{}", key.chars().take(12).collect::<String>()),
        key: key.to_owned(),
        classes: Vec::new(),
        revoked_at: None,
        xkey: None,
    }
}

#[cfg(test)]
mod tests {
    use bulkhead_schemas::identity::{Enrolled, Revoked};

    use super::*;

    fn ev(body: EventBody) -> Event {
        Event::new("admin", "node/n1", None, body)
    }

    #[test]
    fn keys_write_from_enrolment_until_revocation() {
        let mut d = Directory::new(&["UADMIN".into()]);
        assert_eq!(d.writer("UADMIN", 1).unwrap().role, Role::Admin);
        assert!(matches!(d.writer("UN1", 1), Err(NotAWriter::Unknown(_))));
        let enrolled = Enrolled {
            xkey: None,
            role: Role::Node,
            name: "n1".into(),
            key: "UN1".into(),
            classes: vec![RuntimeClass::Runc],
        };
        d.apply(5, &ev(EventBody::Enrolled(enrolled.clone())));
        assert_eq!(d.writer("UN1", 6).unwrap().name, "n1");
        assert_eq!(
            d.get(Role::Node, "n1").unwrap().classes,
            [RuntimeClass::Runc]
        );
        d.apply(
            9,
            &ev(EventBody::Revoked(Revoked {
                role: Role::Node,
                name: "n1".into(),
                key: "UN1".into(),
            })),
        );
        assert!(d.writer("UN1", 8).is_ok(), "what it wrote before stays");
        assert!(matches!(
            d.writer("UN1", 9),
            Err(NotAWriter::Revoked { .. })
        ));
        assert!(d.get(Role::Node, "n1").is_none());
        // Enrolled again with a new key: only the new one writes.
        d.apply(
            12,
            &ev(EventBody::Enrolled(Enrolled {
                key: "UN1B".into(),
                ..enrolled
            })),
        );
        assert!(d.writer("UN1B", 13).is_ok());
        assert!(d.writer("UN1", 13).is_err());
    }
}
