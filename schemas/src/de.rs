//! What hand-written serde readers share (the event's one-pass reader here, the snapshot's
//! sized reader in the services): the rules a derived `Deserialize` keeps.

use serde::de::Error;

/// Sets a field once: a second copy is refused, as a derived `Deserialize` refuses it.
pub fn once<T, E: Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}
