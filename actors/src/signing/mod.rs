//! Signatures: every writer holds an nkey (ed25519, NATS's own key format) and signs what it
//! writes. Pure: no I/O.
//!
//! One signature covers a whole atomic batch: it signs the Merkle root (RFC 6962: leaves
//! `SHA-256(0x00 ‖ h)`, nodes `SHA-256(0x01 ‖ left ‖ right)`) over the batch's message
//! hashes `h = SHA-256(payload)`, and each message carries its Merkle path, so one message
//! still verifies alone, whatever became of its neighbours. The signed bytes are
//! `"bulkhead/2 batch\n" ‖ root`. A reader checks a batch's signature once, and hashes
//! each message's path only up to a node of the tree it knows already: a [`Checked`]
//! remembers the last 16 batches it verified (writers' batches interleave in the log).
//!
//! Each message's proof travels in its `Bulkhead-Sig` header as
//! `<index>/<size> <signature> <path>`: the 64-byte signature and the path (32 bytes a level,
//! leaf to root, concatenated; absent for a batch of one) in unpadded base64url.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bulkhead_schemas::event::Hash;
use nkeys::KeyPair;
use sha2::{Digest, Sha256};

/// The header that carries a message's proof.
pub const SIG_HEADER: &str = "Bulkhead-Sig";

/// What a batch signature signs, before the root: a batch of the log, or of node ops (a
/// signature for one is never good for the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Log,
    Ops,
}

impl Context {
    fn bytes(self) -> &'static [u8] {
        match self {
            Context::Log => b"bulkhead/2 batch\n",
            Context::Ops => b"bulkhead/2 ops\n",
        }
    }
}

/// The header of an ops message that proves its signer is an enrolled scheduler: the hex
/// payload of its `enrolled` event, a space, and that event's proof.
pub const CERT_HEADER: &str = "Bulkhead-Cert";

/// The headers of a signed command: the signer's public key, and its signature.
pub const KEY_HEADER: &str = "Bulkhead-Key";

/// What a command signature signs, before `subject ‖ "\n" ‖ payload`.
const COMMAND_CONTEXT: &[u8] = b"bulkhead/2 command\n";

/// `subject ‖ "\n" ‖ payload`: what a command signature covers besides its context, so a
/// signed command cannot be replayed on another subject.
fn command_message(subject: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(subject.len() + 1 + payload.len());
    m.extend_from_slice(subject.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(payload);
    m
}

/// The hex signature of a command published on `subject`.
pub fn sign_command(signer: &Signer, subject: &str, payload: &[u8]) -> String {
    hex::encode(signer.sign(COMMAND_CONTEXT, &command_message(subject, payload)))
}

/// Whether `sig` (hex) is `key`'s signature of the command on `subject`.
pub fn verify_command(key: &str, subject: &str, payload: &[u8], sig: &str) -> Result<(), SigError> {
    let sig = hex::decode(sig).map_err(|_| SigError::BadSignature)?;
    verify(
        key,
        COMMAND_CONTEXT,
        &command_message(subject, payload),
        &sig,
    )
}

/// An admin's approval of the policy whose hash is `hash` (hex).
pub fn sign_policy(signer: &Signer, hash: &str) -> String {
    hex::encode(signer.sign(bulkhead_schemas::policy::APPROVAL_CONTEXT, hash.as_bytes()))
}

/// Whether `sig` (hex) is `key`'s approval of the policy whose hash is `hash`.
pub fn verify_policy(key: &str, hash: &str, sig: &str) -> Result<(), SigError> {
    let sig = hex::decode(sig).map_err(|_| SigError::BadSignature)?;
    verify(
        key,
        bulkhead_schemas::policy::APPROVAL_CONTEXT,
        hash.as_bytes(),
        &sig,
    )
}

/// A key that does not parse, or a signature that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("not an nkey: {0}")]
    BadKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("malformed proof: {0}")]
    BadProof(&'static str),
}

/// A writer's key pair: it signs; its public key (`U…`) names it.
#[derive(Clone)]
pub struct Signer {
    kp: Arc<KeyPair>,
    public: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public", &self.public)
            .finish()
    }
}

impl Signer {
    /// A new user key (setup, tests).
    pub fn generate() -> Signer {
        Signer::of(KeyPair::new_user())
    }

    /// The key of an nkey seed (`SU…`).
    pub fn from_seed(seed: &str) -> Result<Signer, SigError> {
        let kp = KeyPair::from_seed(seed.trim()).map_err(|e| SigError::BadKey(e.to_string()))?;
        Ok(Signer::of(kp))
    }

    fn of(kp: KeyPair) -> Signer {
        let public = kp.public_key();
        Signer {
            kp: Arc::new(kp),
            public,
        }
    }

    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The seed, to be written to a 0600 file and nowhere else.
    pub fn seed(&self) -> Result<String, SigError> {
        self.kp.seed().map_err(|e| SigError::BadKey(e.to_string()))
    }

    /// Signs `context ‖ msg`.
    pub fn sign(&self, context: &[u8], msg: &[u8]) -> [u8; 64] {
        let mut input = Vec::with_capacity(context.len() + msg.len());
        input.extend_from_slice(context);
        input.extend_from_slice(msg);
        // ed25519 signing cannot fail for a key pair holding its seed.
        let sig = self.kp.sign(&input).unwrap_or_default();
        sig.try_into().unwrap_or([0; 64])
    }
}

/// Whether `sig` is `key`'s signature of `context ‖ msg`.
pub fn verify(key: &str, context: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), SigError> {
    let kp = KeyPair::from_public_key(key).map_err(|e| SigError::BadKey(e.to_string()))?;
    verify_with(&kp, context, msg, sig)
}

fn verify_with(kp: &KeyPair, context: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), SigError> {
    let mut input = Vec::with_capacity(context.len() + msg.len());
    input.extend_from_slice(context);
    input.extend_from_slice(msg);
    kp.verify(&input, sig).map_err(|_| SigError::BadSignature)
}

fn leaf(h: &Hash) -> Hash {
    let mut d = Sha256::new();
    d.update([0u8]);
    d.update(h);
    d.finalize().into()
}

fn node(l: &Hash, r: &Hash) -> Hash {
    let mut d = Sha256::new();
    d.update([1u8]);
    d.update(l);
    d.update(r);
    d.finalize().into()
}

/// The largest power of two below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The Merkle tree hash of `leaves` (already leaf-hashed), and each leaf's path.
fn tree(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    match leaves {
        [] => ([0; 32], Vec::new()),
        [one] => (*one, vec![Vec::new()]),
        _ => {
            let k = split(leaves.len());
            let (left, mut lpaths) = tree(&leaves[..k]);
            let (right, rpaths) = tree(&leaves[k..]);
            for p in &mut lpaths {
                p.push(right);
            }
            let rpaths = rpaths.into_iter().map(|mut p| {
                p.push(left);
                p
            });
            lpaths.extend(rpaths);
            (node(&left, &right), lpaths)
        }
    }
}

/// A message's place in its batch, its path to the root, and the batch's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub index: u32,
    pub size: u32,
    pub path: Vec<Hash>,
    pub sig: [u8; 64],
}

/// Signs a batch of the log: one proof per message hash (`SHA-256` of each payload).
pub fn sign_batch(signer: &Signer, hashes: &[Hash]) -> Vec<Proof> {
    sign_batch_in(Context::Log, signer, hashes)
}

/// Signs a batch of message hashes in `context`: one proof per message.
pub fn sign_batch_in(context: Context, signer: &Signer, hashes: &[Hash]) -> Vec<Proof> {
    let leaves: Vec<Hash> = hashes.iter().map(leaf).collect();
    let (root, paths) = tree(&leaves);
    let sig = signer.sign(context.bytes(), &root);
    let size = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
    paths
        .into_iter()
        .zip(0u32..)
        .map(|(path, index)| Proof {
            index,
            size,
            path,
            sig,
        })
        .collect()
}

/// The root a message hash and its path lead to (RFC 9162, 2.1.3.2).
pub fn root_of(hash: &Hash, proof: &Proof) -> Result<Hash, SigError> {
    if proof.size == 0 || proof.index >= proof.size || proof.path.len() > 64 {
        return Err(SigError::BadProof("index out of its batch"));
    }
    let (mut fnum, mut snum) = (u64::from(proof.index), u64::from(proof.size) - 1);
    let mut r = leaf(hash);
    for p in &proof.path {
        if snum == 0 {
            return Err(SigError::BadProof("a path longer than its tree"));
        }
        if fnum & 1 == 1 || fnum == snum {
            r = node(p, &r);
            while fnum & 1 == 0 && fnum != 0 {
                fnum >>= 1;
                snum >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    if snum != 0 {
        return Err(SigError::BadProof("a path shorter than its tree"));
    }
    Ok(r)
}

impl Proof {
    /// The `Bulkhead-Sig` header value: `<index>/<size> <signature> <path>`, the signature
    /// (64 bytes) and the path (32 bytes a level, leaf to root, concatenated) in unpadded
    /// base64url; a batch of one has no path.
    pub fn encode(&self) -> String {
        let mut s = format!("{}/{} {}", self.index, self.size, B64.encode(self.sig));
        if !self.path.is_empty() {
            s.push(' ');
            s.push_str(&B64.encode(self.path.concat()));
        }
        s
    }

    /// A `Bulkhead-Sig` header value.
    pub fn decode(s: &str) -> Result<Proof, SigError> {
        let mut parts = s.split(' ');
        let place = parts.next().ok_or(SigError::BadProof("empty"))?;
        let (index, size) = place
            .split_once('/')
            .ok_or(SigError::BadProof("no index/size"))?;
        let num = |t: &str| {
            t.parse::<u32>()
                .map_err(|_| SigError::BadProof("a bad number"))
        };
        let (index, size) = (num(index)?, num(size)?);
        let sig = parts.next().ok_or(SigError::BadProof("no signature"))?;
        let sig: [u8; 64] = B64
            .decode(sig)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(SigError::BadProof("a bad signature"))?;
        let path = match parts.next() {
            None => Vec::new(),
            Some(p) if p.len() <= 64 * 44 => {
                let bytes = B64
                    .decode(p)
                    .map_err(|_| SigError::BadProof("a bad path"))?;
                if bytes.is_empty() || bytes.len() % 32 != 0 {
                    return Err(SigError::BadProof("a bad path"));
                }
                bytes
                    .chunks_exact(32)
                    .map(|c| {
                        let mut h = [0u8; 32];
                        h.copy_from_slice(c);
                        h
                    })
                    .collect()
            }
            Some(_) => return Err(SigError::BadProof("too long a path")),
        };
        if parts.next().is_some() {
            return Err(SigError::BadProof("trailing fields"));
        }
        Ok(Proof {
            index,
            size,
            path,
            sig,
        })
    }
}

/// One event written alone: names `signer` as its writer, and is signed as a batch of one.
/// Returns the payload and its proof.
pub fn seal_event(signer: &Signer, event: &mut bulkhead_schemas::Event) -> (Vec<u8>, Proof) {
    event.actor.key = signer.public_key().to_owned();
    let (bytes, hash) = event.seal();
    let proof = sign_batch(signer, &[hash]).pop().unwrap_or(Proof {
        index: 0,
        size: 1,
        path: Vec::new(),
        sig: [0; 64],
    });
    (bytes, proof)
}

mod checked;

pub use checked::Checked;

#[cfg(test)]
mod tests {
    use bulkhead_schemas::event::hash_bytes;
    use proptest::prelude::*;

    use super::*;

    fn hashes(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| hash_bytes(format!("m{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn every_message_of_a_batch_verifies_alone_and_a_changed_one_does_not() {
        let signer = Signer::generate();
        let hs = hashes(7);
        let proofs = sign_batch(&signer, &hs);
        let mut checked = Checked::default();
        for (h, p) in hs.iter().zip(&proofs) {
            let back = Proof::decode(&p.encode()).unwrap();
            assert_eq!(&back, p);
            checked.verify(signer.public_key(), h, &back).unwrap();
        }
        assert_eq!(checked.verified, 1, "one signature checked for the batch");
        let forged = hash_bytes(b"not what was signed");
        let mut fresh = Checked::default();
        assert_eq!(
            fresh.verify(signer.public_key(), &forged, &proofs[3]),
            Err(SigError::BadSignature)
        );
        let other = Signer::generate();
        assert_eq!(
            fresh.verify(other.public_key(), &hs[3], &proofs[3]),
            Err(SigError::BadSignature),
            "signed by someone else"
        );
        let mut moved = proofs[3].clone();
        moved.index = 4;
        assert!(fresh.verify(signer.public_key(), &hs[3], &moved).is_err());
    }

    #[test]
    fn malformed_proofs_are_refused_not_trusted() {
        for bad in [
            "",
            "1",
            "1/0 00",
            "3/2 00",
            "0/1 zz",
            &format!("0/1 {}", "0".repeat(127)),
        ] {
            let r = Proof::decode(bad).and_then(|p| root_of(&[0; 32], &p));
            assert!(r.is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn paths_lead_every_leaf_to_the_one_root(n in 1usize..70) {
            let leaves: Vec<Hash> = hashes(n).iter().map(leaf).collect();
            let (root, paths) = tree(&leaves);
            let hs = hashes(n);
            for (i, path) in paths.into_iter().enumerate() {
                let proof = Proof { index: i as u32, size: n as u32, path, sig: [0; 64] };
                prop_assert_eq!(root_of(&hs[i], &proof).unwrap(), root);
            }
        }
    }
}
