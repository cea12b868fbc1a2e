//! The policy in force, as the log's `policy_proposed` and `policy_approved` events make
//! it: a proposal names the next version and the hash of the policy in force; it is adopted
//! when `threshold` distinct admins *of the policy in force* have approved its hash, and
//! every other proposal then lapses (an approval never carries over to another policy).
//! Before the log holds a policy, the anchor admins (each reader's credential names them)
//! govern and tenants get what they ask for ([`Policy::before_any`]).

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::policy::{Policy, PolicyApproved, PolicyProposed};

use crate::signing::verify_policy;

#[derive(Clone, Debug)]
pub struct PolicyBook {
    current: Policy,
    hash: String,
    /// Stream sequence it was adopted at (0: before any).
    adopted_at: u64,
    /// Pending proposals by hash: the policy and the admin keys that approved it.
    pending: BTreeMap<String, (Policy, BTreeSet<String>)>,
}

/// A policy taking effect: the admins it drops and adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopted {
    pub version: u64,
    pub dropped: Vec<String>,
    pub added: Vec<String>,
}

/// Pending proposals remembered at most (an admin key flooding proposals cannot grow a
/// reader without bound).
const MAX_PENDING: usize = 64;

impl PolicyBook {
    pub fn new(anchors: &[String]) -> PolicyBook {
        let current = Policy::before_any(anchors.to_vec());
        PolicyBook {
            hash: current.hash(),
            current,
            adopted_at: 0,
            pending: BTreeMap::new(),
        }
    }

    pub fn current(&self) -> &Policy {
        &self.current
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn adopted_at(&self) -> u64 {
        self.adopted_at
    }

    /// Pending proposals: their policy and approvals so far.
    pub fn pending(&self) -> impl Iterator<Item = (&String, &Policy, &BTreeSet<String>)> {
        self.pending.iter().map(|(h, (p, a))| (h, p, a))
    }

    /// Whether `key` may approve the next change.
    pub fn is_admin(&self, key: &str) -> bool {
        self.current.admins.keys.iter().any(|k| k == key)
    }

    /// Why the policy event `ev`, written with `key`, cannot count (None: it can).
    pub fn refuses(&self, key: &str, ev: &Event) -> Option<String> {
        match &ev.body {
            EventBody::PolicyProposed(p) => self.refuses_proposal(key, p),
            EventBody::PolicyApproved(a) => self.refuses_approval(key, a),
            _ => None,
        }
    }

    fn refuses_proposal(&self, key: &str, p: &PolicyProposed) -> Option<String> {
        let now = &self.current;
        if !self.is_admin(key) {
            return Some(format!("{key} is not an admin of policy v{}", now.version));
        }
        if p.policy.hash() != p.hash {
            return Some("its hash is not the policy's".into());
        }
        if p.policy.version != now.version + 1 {
            return Some(format!(
                "proposes version {}; the policy in force is v{} (an old policy is not replayed)",
                p.policy.version, now.version
            ));
        }
        let replaces = (now.version > 0).then(|| self.hash.clone());
        if p.policy.replaces != replaces {
            return Some(format!(
                "replaces {:?}, not the policy in force ({:?})",
                p.policy.replaces, replaces
            ));
        }
        if let Some(why) = p.policy.problem() {
            return Some(why);
        }
        if self.pending.contains_key(&p.hash) {
            return Some(format!("policy {} is proposed already", p.hash));
        }
        if self.pending.len() >= MAX_PENDING {
            return Some(format!("{MAX_PENDING} proposals pending already"));
        }
        None
    }

    fn refuses_approval(&self, key: &str, a: &PolicyApproved) -> Option<String> {
        if !self.is_admin(key) {
            return Some(format!(
                "{key} is not an admin of policy v{}: its approval does not count",
                self.current.version
            ));
        }
        let Some((policy, approvals)) = self.pending.get(&a.hash) else {
            return Some(format!("approves {}, which is not pending", a.hash));
        };
        if policy.version != a.version {
            return Some(format!(
                "names version {} for a proposal of version {}",
                a.version, policy.version
            ));
        }
        if approvals.contains(key) {
            return Some(format!("{key} approved {} already", a.hash));
        }
        verify_policy(key, &a.hash, &a.sig)
            .err()
            .map(|e| format!("the approval's signature: {e}"))
    }

    /// Applies a policy event that [`PolicyBook::refuses`] let through, stored at `seq`
    /// and written with `key`. Returns the change when a policy takes effect.
    pub fn apply(&mut self, seq: u64, key: &str, ev: &Event) -> Option<Adopted> {
        if self.refuses(key, ev).is_some() {
            return None;
        }
        match &ev.body {
            EventBody::PolicyProposed(p) => {
                self.pending
                    .insert(p.hash.clone(), (p.policy.clone(), BTreeSet::new()));
                None
            }
            EventBody::PolicyApproved(a) => {
                let (_, approvals) = self.pending.get_mut(&a.hash)?;
                approvals.insert(key.to_owned());
                if approvals.len() < self.current.admins.threshold as usize {
                    return None;
                }
                let (policy, _) = self.pending.remove(&a.hash)?;
                Some(self.adopt(seq, policy))
            }
            _ => None,
        }
    }

    fn adopt(&mut self, seq: u64, policy: Policy) -> Adopted {
        let old: BTreeSet<&String> = self.current.admins.keys.iter().collect();
        let new: BTreeSet<&String> = policy.admins.keys.iter().collect();
        let adopted = Adopted {
            version: policy.version,
            dropped: old.difference(&new).map(|k| (*k).clone()).collect(),
            added: new.difference(&old).map(|k| (*k).clone()).collect(),
        };
        self.hash = policy.hash();
        self.current = policy;
        self.adopted_at = seq;
        self.pending.clear();
        adopted
    }
}
