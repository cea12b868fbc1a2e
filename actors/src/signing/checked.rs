//! [`Checked`]: a reader's check of batch proofs that remembers what it verified. For each
//! recent batch it keeps the nodes of the tree it knows to be under the signed root (every
//! node a verified path computed or carried), so the next message of that batch hashes up
//! its path only until it meets a known node (one or two hashes, not one a level), and no
//! signature is checked twice. A path that meets a known node with another value is
//! refused: it cannot lead to the signed root.

use std::collections::{HashMap, VecDeque};

use nkeys::KeyPair;

use super::{Context, Hash, Proof, SigError, leaf, node, split, verify_with};

/// Leaves `[from, to)` of a batch: one node of its tree.
type Span = (u32, u32);

/// Batches remembered as verified.
const RECENT_BATCHES: usize = 16;

/// Keys remembered at most (a reader meets few writers).
const MAX_KEYS: usize = 10_000;

/// Nodes remembered of one batch at most: a tree of 2,048 messages in all (a writer's batches
/// are smaller). A batch claiming more (any key can sign a root over a size of 2^31 of one
/// payload repeated) is still checked, its paths hashed up to the nodes already known or the
/// root; what they computed is not kept.
const MAX_TREE_NODES: usize = 4096;

/// What is known of one verified batch: its nodes under the signed root, by span.
struct Tree {
    key: String,
    sig: [u8; 64],
    size: u32,
    nodes: HashMap<Span, Hash>,
}

/// Verifies batch proofs, each batch's signature once, each key parsed once.
pub struct Checked {
    context: Context,
    keys: HashMap<String, KeyPair>,
    /// The latest batches verified: writers' batches interleave in the log (a scheduler's
    /// and its nodes'), so more than the last one.
    trees: VecDeque<Tree>,
    /// Signatures verified (not counting batches seen again).
    pub verified: u64,
}

impl Default for Checked {
    /// Checks batches of the log.
    fn default() -> Self {
        Checked::new(Context::Log)
    }
}

impl Checked {
    /// Checks batches signed in `context`.
    pub fn new(context: Context) -> Checked {
        Checked {
            context,
            keys: HashMap::new(),
            trees: VecDeque::with_capacity(RECENT_BATCHES),
            verified: 0,
        }
    }

    /// Whether `proof` shows `key` signed the batch holding the message with `hash`.
    pub fn verify(&mut self, key: &str, hash: &Hash, proof: &Proof) -> Result<(), SigError> {
        let steps = steps(proof)?;
        let known = self
            .trees
            .iter()
            .position(|t| t.sig == proof.sig && t.size == proof.size && t.key == key);
        let mut at = (proof.index, proof.index + 1);
        let mut h = leaf(hash);
        let mut learned = Vec::with_capacity(2 * steps.len() + 1);
        learned.push((at, h));
        let mut settled = false;
        // Leaf to root: each level's sibling as carried, and the spans of node and sibling.
        let levels = || proof.path.iter().zip(steps.iter().rev());
        for (d, (sibling, &(here, other))) in levels().enumerate() {
            if let Some(t) = known.and_then(|k| self.trees.get(k))
                && meets(t, at, &h)?
            {
                // The rest of the path is known too: it must be what it carries.
                carries_known(t, levels().skip(d))?;
                settled = true;
                break;
            }
            debug_assert_eq!(here, at);
            h = if here.0 < other.0 {
                node(&h, sibling)
            } else {
                node(sibling, &h)
            };
            learned.push((other, *sibling));
            at = (here.0.min(other.0), here.1.max(other.1));
            learned.push((at, h));
        }
        if !settled {
            match known.and_then(|k| self.trees.get(k)) {
                Some(t) => {
                    if !meets(t, at, &h)? {
                        return Err(SigError::BadProof("a batch's tree without its root"));
                    }
                }
                None => self.check_root(key, &h, &proof.sig)?,
            }
        }
        let k = match known {
            Some(k) => k,
            None => {
                if self.trees.len() == RECENT_BATCHES {
                    self.trees.pop_front();
                }
                self.trees.push_back(Tree {
                    key: key.to_owned(),
                    sig: proof.sig,
                    size: proof.size,
                    nodes: HashMap::new(),
                });
                self.trees.len() - 1
            }
        };
        // All of a path or none of it: a known node's sibling and parent are known too.
        if let Some(t) = self.trees.get_mut(k)
            && t.nodes.len() + learned.len() <= MAX_TREE_NODES
        {
            t.nodes.extend(learned);
        }
        Ok(())
    }

    /// Tree nodes remembered, over all batches.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }

    /// Checks `sig` of `root` by `key` (a batch not seen before).
    fn check_root(&mut self, key: &str, root: &Hash, sig: &[u8; 64]) -> Result<(), SigError> {
        if !self.keys.contains_key(key) {
            let kp = KeyPair::from_public_key(key).map_err(|e| SigError::BadKey(e.to_string()))?;
            if self.keys.len() >= MAX_KEYS {
                self.keys.clear();
            }
            self.keys.insert(key.to_owned(), kp);
        }
        let kp = self
            .keys
            .get(key)
            .ok_or_else(|| SigError::BadKey(key.to_owned()))?;
        verify_with(kp, self.context.bytes(), root, sig)?;
        self.verified += 1;
        Ok(())
    }
}

/// Whether the known tree holds node `at` as `h` (so everything hashed up to it is in the
/// batch); an error when it holds another value there.
fn meets(t: &Tree, at: Span, h: &Hash) -> Result<bool, SigError> {
    match t.nodes.get(&at) {
        None => Ok(false),
        Some(k) if k == h => Ok(true),
        Some(_) => Err(SigError::BadSignature),
    }
}

/// Whether the path's remaining `levels` carry the siblings the known tree holds (a node
/// is learned only with every sibling above it, so all are known).
fn carries_known<'a>(
    t: &Tree,
    levels: impl Iterator<Item = (&'a Hash, &'a (Span, Span))>,
) -> Result<(), SigError> {
    for (sibling, &(_, other)) in levels {
        if t.nodes.get(&other) != Some(sibling) {
            return Err(SigError::BadSignature);
        }
    }
    Ok(())
}

/// The spans on the way from the root down to the proof's leaf: at each level, the node
/// holding the leaf and its sibling (RFC 9162's tree: the left subtree holds the largest
/// power of two below the size). Its length is the path's, or the proof is refused.
fn steps(proof: &Proof) -> Result<Vec<(Span, Span)>, SigError> {
    if proof.size == 0 || proof.index >= proof.size {
        return Err(SigError::BadProof("index out of its batch"));
    }
    let mut out = Vec::with_capacity(proof.path.len());
    let (mut from, mut to) = (0u32, proof.size);
    while to - from > 1 {
        let mid = from + split((to - from) as usize) as u32;
        if proof.index < mid {
            out.push(((from, mid), (mid, to)));
            to = mid;
        } else {
            out.push(((mid, to), (from, mid)));
            from = mid;
        }
    }
    match out.len().cmp(&proof.path.len()) {
        std::cmp::Ordering::Equal => Ok(out),
        std::cmp::Ordering::Less => Err(SigError::BadProof("a path longer than its tree")),
        std::cmp::Ordering::Greater => Err(SigError::BadProof("a path shorter than its tree")),
    }
}

#[cfg(test)]
mod tests {
    use bulkhead_schemas::event::hash_bytes;
    use proptest::prelude::*;

    use super::super::{Signer, root_of, sign_batch};
    use super::*;

    /// A change made to one message's claim before it is checked.
    #[derive(Clone, Copy, Debug)]
    enum Tamper {
        None,
        Hash,
        PathElement(usize),
        Index(u32),
        DropLevel,
    }

    fn tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            4 => Just(Tamper::None),
            1 => Just(Tamper::Hash),
            1 => (0usize..8).prop_map(Tamper::PathElement),
            1 => (0u32..80).prop_map(Tamper::Index),
            1 => Just(Tamper::DropLevel),
        ]
    }

    #[test]
    fn a_batch_too_large_to_remember_is_still_checked_and_memory_stays_bounded() {
        let signer = Signer::generate();
        let n = 3000;
        let hs: Vec<Hash> = (0..n)
            .map(|i| hash_bytes(format!("m{i}").as_bytes()))
            .collect();
        let ps = sign_batch(&signer, &hs);
        let mut checked = Checked::default();
        for (h, p) in hs.iter().zip(&ps) {
            checked.verify(signer.public_key(), h, p).unwrap();
        }
        assert!(
            checked.remembered() <= MAX_TREE_NODES,
            "{}",
            checked.remembered()
        );
        assert!(
            checked.remembered() > MAX_TREE_NODES / 2,
            "it remembered what fit"
        );
        assert_eq!(checked.verified, 1);
        for (h, p) in hs.iter().zip(&ps).rev().step_by(7) {
            let mut forged = p.clone();
            forged.path[0][0] ^= 1;
            assert!(checked.verify(signer.public_key(), h, &forged).is_err());
            assert!(checked.verify(signer.public_key(), &[9; 32], p).is_err());
            checked.verify(signer.public_key(), h, p).unwrap();
        }
        assert!(checked.remembered() <= MAX_TREE_NODES);
    }

    proptest! {
        // Each case makes two keys and signs two batches: fewer cases than the default
        // keep a debug build's run to a few seconds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Messages of two interleaved batches, checked in any order, some of them
        /// tampered with: a reader that remembers what it verified accepts exactly the
        /// messages whose path leads to their batch's signed root (RFC 9162's algorithm),
        /// and checks each batch's signature once.
        #[test]
        fn a_remembered_tree_accepts_exactly_what_the_signed_root_does(
            n in 1usize..70,
            m in 1usize..20,
            order in prop::collection::vec((any::<bool>(), 0usize..70, tamper()), 1..120),
        ) {
            let (a, b) = (Signer::generate(), Signer::generate());
            let batch = |s: &Signer, n: usize, tag: &str| {
                let hs: Vec<Hash> = (0..n).map(|i| hash_bytes(format!("{tag}{i}").as_bytes())).collect();
                let ps = sign_batch(s, &hs);
                (hs, ps)
            };
            let (ha, pa) = batch(&a, n, "a");
            let (hb, pb) = batch(&b, m, "b");
            let root = |hs: &[Hash], ps: &[Proof]| root_of(&hs[0], &ps[0]).unwrap();
            let (ra, rb) = (root(&ha, &pa), root(&hb, &pb));
            let mut checked = Checked::default();
            for (first, i, t) in order {
                let (signer, hs, ps, r) = if first { (&a, &ha, &pa, ra) } else { (&b, &hb, &pb, rb) };
                let i = i % hs.len();
                let mut h = hs[i];
                let mut p = ps[i].clone();
                match t {
                    Tamper::None => {}
                    Tamper::Hash => h = hash_bytes(b"something else"),
                    Tamper::PathElement(k) => {
                        let k = k % p.path.len().max(1);
                        if let Some(e) = p.path.get_mut(k) {
                            e[0] ^= 1;
                        }
                    }
                    Tamper::Index(j) => p.index = j,
                    Tamper::DropLevel => { p.path.pop(); }
                }
                let expected = root_of(&h, &p).is_ok_and(|got| got == r);
                let got = checked.verify(signer.public_key(), &h, &p);
                prop_assert_eq!(got.is_ok(), expected, "{:?} of message {} gave {:?}", t, i, got);
            }
            prop_assert!(checked.verified <= 2, "a batch's signature checked again");
        }
    }
}
