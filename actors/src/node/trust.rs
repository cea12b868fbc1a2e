//! What a node runs: ops signed by an enrolled scheduler, for this node. The node reads no
//! log; each ops message proves its signer with the scheduler's own enrolment (an event an
//! admin signed, carried in `Bulkhead-Cert`), checked against the admin keys the node's
//! credential trusts. A scheduler key proved once is remembered. Pure.

use std::collections::HashSet;

use bulkhead_schemas::NodeOps;
use bulkhead_schemas::event::{Event, EventBody, hash_bytes};
use bulkhead_schemas::identity::Role;

use crate::signing::{Checked, Context, Proof, SigError};

/// Why an ops message is not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not ops: {0}")]
    Malformed(String),
    #[error("ops for node {0}, not this one")]
    OtherNode(String),
    #[error("unsigned: no {0} header")]
    Unsigned(&'static str),
    #[error("the signer is no enrolled scheduler: {0}")]
    NotAScheduler(String),
    #[error("the signature: {0}")]
    Signature(SigError),
}

/// The trust of one node.
pub struct OpsTrust {
    node: String,
    admins: Vec<String>,
    schedulers: HashSet<String>,
    certs: Checked,
    ops: Checked,
}

impl OpsTrust {
    /// Node `node`, trusting enrolments by `admins`.
    pub fn new(node: &str, admins: Vec<String>) -> OpsTrust {
        OpsTrust {
            node: node.to_owned(),
            admins,
            schedulers: HashSet::new(),
            certs: Checked::new(Context::Log),
            ops: Checked::new(Context::Ops),
        }
    }

    /// The ops of a message, if it may be run: `sig` is its `Bulkhead-Sig` header and
    /// `cert` its `Bulkhead-Cert`.
    pub fn check(
        &mut self,
        payload: &[u8],
        sig: Option<&str>,
        cert: Option<&str>,
    ) -> Result<NodeOps, Refused> {
        let ops: NodeOps =
            serde_json::from_slice(payload).map_err(|e| Refused::Malformed(e.to_string()))?;
        if ops.node != self.node {
            return Err(Refused::OtherNode(ops.node));
        }
        if !self.schedulers.contains(&ops.by) {
            self.prove_scheduler(&ops.by, cert.ok_or(Refused::Unsigned("Bulkhead-Cert"))?)?;
        }
        let proof = Proof::decode(sig.ok_or(Refused::Unsigned("Bulkhead-Sig"))?)
            .map_err(Refused::Signature)?;
        self.ops
            .verify(&ops.by, &hash_bytes(payload), &proof)
            .map_err(Refused::Signature)?;
        Ok(ops)
    }

    /// Whether `cert` is an admin's enrolment of `key` as a scheduler; remembers it if so.
    fn prove_scheduler(&mut self, key: &str, cert: &str) -> Result<(), Refused> {
        let not = |why: &str| Refused::NotAScheduler(format!("{key}: {why}"));
        let (payload, proof) = cert
            .split_once(' ')
            .ok_or_else(|| not("a malformed cert"))?;
        let payload = hex::decode(payload).map_err(|_| not("a malformed cert"))?;
        let proof = Proof::decode(proof).map_err(Refused::Signature)?;
        let enrolment = Event::parse(&payload).map_err(|_| not("a malformed enrolment"))?;
        let EventBody::Enrolled(e) = &enrolment.body else {
            return Err(not("the cert is no enrolment"));
        };
        if e.role != Role::Scheduler || e.key != key {
            return Err(not("the cert enrols another key or role"));
        }
        if !self.admins.contains(&enrolment.actor.key) {
            return Err(not("the enrolment is not an admin's"));
        }
        self.certs
            .verify(&enrolment.actor.key, &hash_bytes(&payload), &proof)
            .map_err(Refused::Signature)?;
        self.schedulers.insert(key.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bulkhead_schemas::RuntimeClass;
    use bulkhead_schemas::identity::Enrolled;

    use super::*;
    use crate::signing::{Signer, seal_event, sign_batch_in};

    fn cert(admin: &Signer, role: Role, key: &str) -> String {
        let body = EventBody::Enrolled(Enrolled {
            xkey: None,
            role,
            name: "scheduler".into(),
            key: key.into(),
            classes: vec![RuntimeClass::Runc],
        });
        let mut ev = Event::new("admin", &format!("{role}/scheduler"), None, body);
        let (payload, proof) = seal_event(admin, &mut ev);
        format!("{} {}", hex::encode(payload), proof.encode())
    }

    fn signed(by: &Signer, node: &str) -> (Vec<u8>, String) {
        let ops = NodeOps {
            node: node.into(),
            by: by.public_key().into(),
            ops: Vec::new(),
        };
        let payload = serde_json::to_vec(&ops).unwrap();
        let proof = sign_batch_in(Context::Ops, by, &[hash_bytes(&payload)]).remove(0);
        (payload, proof.encode())
    }

    #[test]
    fn a_node_runs_ops_of_an_enrolled_scheduler_for_itself_only() {
        let admin = Signer::generate();
        let sched = Signer::generate();
        let mut trust = OpsTrust::new("n1", vec![admin.public_key().into()]);
        let good = cert(&admin, Role::Scheduler, sched.public_key());
        let (payload, sig) = signed(&sched, "n1");
        assert!(trust.check(&payload, Some(&sig), Some(&good)).is_ok());
        let (other, sig2) = signed(&sched, "n2");
        assert!(matches!(
            trust.check(&other, Some(&sig2), Some(&good)),
            Err(Refused::OtherNode(_))
        ));
        assert!(matches!(
            trust.check(&payload, None, Some(&good)),
            Err(Refused::Unsigned(_))
        ));
        let mut tampered = payload.clone();
        tampered.extend_from_slice(b" ");
        assert!(matches!(
            trust.check(&tampered, Some(&sig), Some(&good)),
            Err(Refused::Signature(_))
        ));
    }

    #[test]
    fn ops_signed_by_a_key_no_admin_made_a_scheduler_are_refused() {
        let admin = Signer::generate();
        let node_key = Signer::generate();
        let mut trust = OpsTrust::new("n1", vec![admin.public_key().into()]);
        let (payload, sig) = signed(&node_key, "n1");
        let as_node = cert(&admin, Role::Node, node_key.public_key());
        assert!(matches!(
            trust.check(&payload, Some(&sig), Some(&as_node)),
            Err(Refused::NotAScheduler(_))
        ));
        let rogue_admin = Signer::generate();
        let self_made = cert(&rogue_admin, Role::Scheduler, node_key.public_key());
        assert!(matches!(
            trust.check(&payload, Some(&sig), Some(&self_made)),
            Err(Refused::NotAScheduler(_))
        ));
        assert!(matches!(
            trust.check(&payload, Some(&sig), None),
            Err(Refused::Unsigned(_))
        ));
    }
}
