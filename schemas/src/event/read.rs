//! Reading an [`Event`] in one pass. serde's derived `flatten` (the envelope's `type` and
//! `body` beside its own fields) buffers every field of the message into a tree of its own
//! before it reads any, which was half of what a reader's whole check of an event cost;
//! here each field is read once, straight into its place. The format is the derived one:
//! `type` names the body and `body` holds it, a field that is not the envelope's is
//! ignored, a field given twice is an error. A `body` that comes before its `type` (no
//! writer of bulkhead does that) is held as a JSON value until the type is known.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{Actor, Event, EventBody};

/// The envelope's fields, by name.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    V,
    Id,
    Subject,
    At,
    Actor,
    Prev,
    Type,
    Body,
    Traceparent,
    #[serde(other)]
    Other,
}

/// Declares [`Kind`] (the `type` of an event, as a name) and how each kind's body is read,
/// from one list of [`EventBody`]'s variants; `kind_of` matches every variant, so a body
/// added to `EventBody` and not here does not compile.
macro_rules! bodies {
    ($($variant:ident),* $(,)?) => {
        /// An event's `type`, as written (snake case of its body's variant).
        #[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
        #[serde(rename_all = "snake_case")]
        enum Kind {
            $($variant),*
        }

        impl<'de> DeserializeSeed<'de> for Kind {
            type Value = EventBody;

            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventBody, D::Error> {
                Ok(match self {
                    $(Kind::$variant => EventBody::$variant(Deserialize::deserialize(d)?)),*
                })
            }
        }

        #[cfg(test)]
        fn kind_of(body: &EventBody) -> Kind {
            match body {
                $(EventBody::$variant(_) => Kind::$variant),*
            }
        }
    };
}

bodies!(
    Accepted,
    Rejected,
    Scheduled,
    Started,
    Exited,
    Lost,
    ReplicaRequested,
    StopRequested,
    Stopped,
    ScanRequested,
    ScanCompleted,
    GaveUp,
    Scaled,
    Quarantined,
    ScanWaiting,
    Joined,
    Draining,
    Drained,
    Undrained,
    Enrolled,
    Revoked,
    PolicyProposed,
    PolicyApproved,
    Checkpoint,
);

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        d.deserialize_map(Envelope)
    }
}

struct Envelope;

/// Keeps the first value of a field; a second is an error.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for Envelope {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event (an object with v, id, subject, at, actor, type and body)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut v: Option<u32> = None;
        let mut id: Option<String> = None;
        let mut subject: Option<String> = None;
        let mut at: Option<String> = None;
        let mut actor: Option<Actor> = None;
        let mut prev: Option<Option<String>> = None;
        let mut traceparent: Option<Option<String>> = None;
        let mut kind: Option<Kind> = None;
        let mut body: Option<EventBody> = None;
        // A body read before its type.
        let mut early: Option<serde_json::Value> = None;
        while let Some(field) = map.next_key()? {
            match field {
                Field::V => once(&mut v, "v", map.next_value()?)?,
                Field::Id => once(&mut id, "id", map.next_value()?)?,
                Field::Subject => once(&mut subject, "subject", map.next_value()?)?,
                Field::At => once(&mut at, "at", map.next_value()?)?,
                Field::Actor => once(&mut actor, "actor", map.next_value()?)?,
                Field::Prev => once(&mut prev, "prev", map.next_value()?)?,
                Field::Traceparent => once(&mut traceparent, "traceparent", map.next_value()?)?,
                Field::Type => {
                    let k: Kind = map.next_value()?;
                    once(&mut kind, "type", k)?;
                    if let Some(value) = early.take() {
                        body = Some(k.deserialize(value).map_err(de::Error::custom)?);
                    }
                }
                Field::Body => {
                    if body.is_some() || early.is_some() {
                        return Err(de::Error::duplicate_field("body"));
                    }
                    match kind {
                        Some(k) => body = Some(map.next_value_seed(k)?),
                        None => early = Some(map.next_value()?),
                    }
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = de::Error::missing_field;
        let body = match (kind, body) {
            (_, Some(body)) => body,
            (None, _) => return Err(missing("type")),
            (Some(_), None) => return Err(missing("body")),
        };
        Ok(Event {
            v: v.ok_or_else(|| missing("v"))?,
            id: id.ok_or_else(|| missing("id"))?,
            subject: subject.ok_or_else(|| missing("subject"))?,
            at: at.ok_or_else(|| missing("at"))?,
            actor: actor.ok_or_else(|| missing("actor"))?,
            prev: prev.flatten(),
            body,
            traceparent: traceparent.flatten(),
        })
    }
}

#[cfg(test)]
mod tests;
