//! Secrets sealed with curve keys (nkeys "xkeys": X25519 and XSalsa20-Poly1305). A spec's
//! `secrets` hold only sealed values: `bulkhead submit` (or `bulkhead seal`) seals each to
//! every live scheduler's curve key, the scheduler re-seals it to the chosen node's key in
//! the start op, and only the node opens it, into the container's environment. Each
//! identity's curve key is derived from its nkey seed, so no second secret is kept. Pure.
//!
//! A sealed value: `bhs1:<sender X…>:<recipient X…>=<base64url box>[,<recipient>=<box>…]`,
//! the sender an ephemeral key made for the value.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
pub use nkeys::XKey;
use sha2::{Digest, Sha256};

use crate::signing::Signer;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "bhs1:";

/// Why a value could not be sealed or opened (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("not a sealed value (seal it with `bulkhead seal`)")]
    NotSealed,
    #[error("a sealed value that does not parse")]
    Malformed,
    #[error("not sealed to this key ({0})")]
    NotForMe(String),
    #[error("not a curve public key: {0}")]
    BadKey(String),
    #[error("the sealed value does not open (tampered, or sealed by someone else)")]
    DoesNotOpen,
    #[error("no recipient to seal to")]
    NoRecipient,
}

/// The curve key of an identity: derived from its nkey seed.
pub fn xkey_of(signer: &Signer) -> XKey {
    let seed = signer.seed().unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"bulkhead/2 xkey\n");
    h.update(seed.as_bytes());
    XKey::new_from_raw(h.finalize().into())
}

pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// `value` sealed to each of `recipients` (public curve keys, `X…`).
pub fn seal(value: &str, recipients: &[String]) -> Result<String, SecretError> {
    if recipients.is_empty() {
        return Err(SecretError::NoRecipient);
    }
    let sender = XKey::new();
    let mut boxes = Vec::with_capacity(recipients.len());
    for r in recipients {
        let to = XKey::from_public_key(r).map_err(|_| SecretError::BadKey(r.clone()))?;
        let sealed = sender
            .seal(value.as_bytes(), &to)
            .map_err(|_| SecretError::BadKey(r.clone()))?;
        boxes.push(format!("{r}={}", B64.encode(sealed)));
    }
    Ok(format!(
        "{SEALED_PREFIX}{}:{}",
        sender.public_key(),
        boxes.join(",")
    ))
}

/// The value `sealed` holds, opened with `own`.
pub fn open(sealed: &str, own: &XKey) -> Result<String, SecretError> {
    let rest = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or(SecretError::NotSealed)?;
    let (sender, boxes) = rest.split_once(':').ok_or(SecretError::Malformed)?;
    let sender = XKey::from_public_key(sender).map_err(|_| SecretError::Malformed)?;
    let me = own.public_key();
    let b = boxes
        .split(',')
        .find_map(|b| b.strip_prefix(me.as_str())?.strip_prefix('='))
        .ok_or_else(|| SecretError::NotForMe(me.clone()))?;
    let bytes = B64.decode(b).map_err(|_| SecretError::Malformed)?;
    let plain = own
        .open(&bytes, &sender)
        .map_err(|_| SecretError::DoesNotOpen)?;
    String::from_utf8(plain).map_err(|_| SecretError::DoesNotOpen)
}

/// `sealed`, opened with `own` and sealed again to `recipient` alone.
pub fn reseal(sealed: &str, own: &XKey, recipient: &str) -> Result<String, SecretError> {
    seal(&open(sealed, own)?, &[recipient.to_owned()])
}

/// The scheduler's side: its curve key, to re-seal a spec's secrets for a node.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<XKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", self.key.public_key())
    }
}

impl Sealer {
    pub fn of(signer: &Signer) -> Sealer {
        Sealer {
            key: std::sync::Arc::new(xkey_of(signer)),
        }
    }

    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// Each secret re-sealed to `node_xkey`; one that cannot be is left as it was (the
    /// node cannot open it and its start fails, naming the secret).
    pub fn for_node(
        &self,
        secrets: &std::collections::BTreeMap<String, String>,
        node_xkey: Option<&str>,
    ) -> std::collections::BTreeMap<String, String> {
        secrets
            .iter()
            .map(|(name, v)| {
                let resealed = node_xkey.and_then(|k| reseal(v, &self.key, k).ok());
                (name.clone(), resealed.unwrap_or_else(|| v.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_and_a_reseal_moves_it_to_the_node() {
        let (scheduler, standby, node, other) = (
            Signer::generate(),
            Signer::generate(),
            Signer::generate(),
            Signer::generate(),
        );
        let keys = [
            xkey_of(&scheduler).public_key(),
            xkey_of(&standby).public_key(),
        ];
        let sealed = seal("hunter2", &keys).unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_eq!(open(&sealed, &xkey_of(&scheduler)).unwrap(), "hunter2");
        assert_eq!(open(&sealed, &xkey_of(&standby)).unwrap(), "hunter2");
        assert!(matches!(
            open(&sealed, &xkey_of(&node)),
            Err(SecretError::NotForMe(_))
        ));
        let s = Sealer::of(&scheduler);
        let secrets = std::collections::BTreeMap::from([("TOKEN".to_owned(), sealed.clone())]);
        let for_node = s.for_node(&secrets, Some(&xkey_of(&node).public_key()));
        assert_eq!(
            open(&for_node["TOKEN"], &xkey_of(&node)).unwrap(),
            "hunter2"
        );
        assert!(open(&for_node["TOKEN"], &xkey_of(&other)).is_err());
        // The same key derives the same curve key (a restarted node opens what was sealed).
        assert_eq!(xkey_of(&node).public_key(), xkey_of(&node).public_key());
        // Tampered: one character of the box changed.
        let mut t = for_node["TOKEN"].clone();
        let last = t.pop().unwrap();
        t.push(if last == 'A' { 'B' } else { 'A' });
        assert!(open(&t, &xkey_of(&node)).is_err());
        assert_eq!(
            open("hunter2", &xkey_of(&node)),
            Err(SecretError::NotSealed)
        );
    }
}
