//! Reading an [`Event`] in one pass. serde's derived `flatten` (the envelope's `type` and
//! `body` beside its own fields) buffers `type`, `body` and every field it does not know
//! into a tree of its own before it reads the body, which was half of what a reader's whole
//! check of an event cost; here each field is read once, straight into its place. The
//! format is the derived one, a little stricter: `type` names the body and must come before
//! it (every writer puts it first; the derived reading also took a body first, but a body
//! buffered before its type would hide a key given twice inside it); a field of the
//! envelope given twice is an error; a field it does not know is skipped, its value checked
//! as JSON text only (the message is UTF-8 as a whole: `Event::parse` checks that first).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{Actor, Event, EventBody};
use crate::de::once;

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
/// added to `EventBody` and not here does not compile (in any build).
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

        #[allow(dead_code)] // the compile-time guard; the tests use it too
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
        while let Some(field) = map.next_key()? {
            match field {
                Field::V => once(&mut v, "v", map.next_value()?)?,
                Field::Id => once(&mut id, "id", map.next_value()?)?,
                Field::Subject => once(&mut subject, "subject", map.next_value()?)?,
                Field::At => once(&mut at, "at", map.next_value()?)?,
                Field::Actor => once(&mut actor, "actor", map.next_value()?)?,
                Field::Prev => once(&mut prev, "prev", map.next_value()?)?,
                Field::Traceparent => once(&mut traceparent, "traceparent", map.next_value()?)?,
                Field::Type => once(&mut kind, "type", map.next_value()?)?,
                Field::Body => {
                    let Some(k) = kind else {
                        return Err(de::Error::custom("the body comes before its type"));
                    };
                    once(&mut body, "body", map.next_value_seed(k)?)?;
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
