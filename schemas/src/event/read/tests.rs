//! The one-pass reader against serde's derived reading of the same envelope (`flatten`),
//! which it replaces: the same event, or an error, for every message drawn, but for the
//! differences it means to have (a table below names each).

use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, kind_of};
use crate::event::{Actor, Event, EventBody};

/// The envelope as serde derives its reading (what `Event` derived before).
#[derive(Deserialize)]
struct Derived {
    v: u32,
    id: String,
    subject: String,
    at: String,
    actor: Actor,
    #[serde(default)]
    prev: Option<String>,
    #[serde(flatten)]
    body: EventBody,
    #[serde(default)]
    traceparent: Option<String>,
}

impl From<Derived> for Event {
    fn from(d: Derived) -> Event {
        Event {
            v: d.v,
            id: d.id,
            subject: d.subject,
            at: d.at,
            actor: d.actor,
            prev: d.prev,
            body: d.body,
            traceparent: d.traceparent,
        }
    }
}

/// Bodies of several kinds: plain, nested, with a flattened body of its own (`rejected`),
/// with optional fields absent and present.
fn bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "accepted",
            json!({"spec": {"id": "w", "image": "localhost/app:1", "memory_mb": 64,
                            "cpu_millicores": 50}, "cmd_seq": 7}),
        ),
        (
            "rejected",
            json!({"code": "invalid_value", "field": "memory_mb", "reason": "too big",
                   "cmd_seq": 3}),
        ),
        (
            "scheduled",
            json!({"replica": 0, "node": "n1", "runtime_class": "gvisor"}),
        ),
        (
            "started",
            json!({"replica": 1, "node": "n1", "container": "c",
                   "confinement": {"network": "none", "seccomp": "default",
                                   "no_new_privs": true, "capabilities": ["CHOWN"],
                                   "read_only_rootfs": false}}),
        ),
        ("lost", json!({"node": "n1", "reason": "silent"})),
        (
            "lost",
            json!({"replica": 2, "node": "n1", "reason": "silent"}),
        ),
        ("scaled", json!({"replicas": 3, "cmd_seq": 9})),
        ("stop_requested", json!({"cmd_seq": 1, "grace_secs": 5})),
        ("drained", json!({"reason": "done"})),
    ]
}

/// The envelope's fields of a sample, as (name, JSON text).
fn fields(body: usize, prev: bool, trace: bool) -> Vec<(String, String)> {
    let (kind, value) = &bodies()[body];
    let mut f = vec![
        ("v".into(), "2".into()),
        ("id".into(), "\"0192-id\"".into()),
        ("subject".into(), "\"default/w\"".into()),
        ("at".into(), "\"2026-12-03T12:00:00.000Z\"".into()),
        (
            "actor".into(),
            r#"{"service":"scheduler","key":"UABC"}"#.into(),
        ),
        ("type".into(), format!("\"{kind}\"")),
        ("body".into(), value.to_string()),
    ];
    if prev {
        f.push(("prev".into(), "\"ab12\"".into()));
    }
    if trace {
        f.push(("traceparent".into(), "null".into()));
    }
    f
}

fn text(fields: &[(String, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The derived reading of `bytes`.
fn derived(bytes: &[u8]) -> Result<Event, serde_json::Error> {
    serde_json::from_slice::<Derived>(bytes).map(Event::from)
}

/// Both readers of `text`: the same event, or both refuse; but a body before its type the
/// one-pass reader refuses whatever the derived one does.
fn agree(text: &str, body_first: bool) -> Result<(), TestCaseError> {
    let ours = Event::parse(text.as_bytes());
    if body_first {
        prop_assert!(ours.is_err(), "{}: a body before its type was read", text);
        return Ok(());
    }
    match (ours, derived(text.as_bytes())) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
        (Err(_), Err(_)) => {}
        (a, b) => prop_assert!(false, "{text}: ours {a:?}, derived {b:?}"),
    }
    Ok(())
}

#[test]
fn every_kind_is_read_under_the_name_it_is_written_with() {
    for name in EventBody::KINDS {
        let kind: Kind = serde_json::from_value(json!(name)).expect(name);
        let body = bodies().into_iter().find(|(k, _)| *k == name);
        if let Some((_, value)) = body {
            let parsed: EventBody =
                serde_json::from_value(json!({"type": name, "body": value})).expect(name);
            assert_eq!(kind_of(&parsed), kind);
            assert_eq!(parsed.kind(), name);
        }
    }
}

#[test]
fn a_written_event_reads_back_and_a_body_before_its_type_is_refused() {
    for (i, _) in bodies().iter().enumerate() {
        let f = fields(i, i % 2 == 0, i % 3 == 0);
        let ev = Event::parse(text(&f).as_bytes()).expect("reads");
        let (bytes, _) = ev.seal();
        assert_eq!(Event::parse(&bytes).expect("reads back"), ev);
        let mut reversed = f.clone();
        reversed.reverse();
        let err = Event::parse(text(&reversed).as_bytes()).expect_err("body first");
        assert!(err.to_string().contains("before its type"), "{err}");
    }
}

/// Where the one-pass reader differs from the derived reading, on purpose, and inputs on
/// which a difference was suspected that both refuse or both read alike.
#[test]
fn the_differences_from_the_derived_reading_are_the_intended_ones() {
    let base = text(&fields(2, false, false));
    let with = |extra: &str| format!("{},{extra}}}", &base[..base.len() - 1]);
    let deep = format!("\"x\":{}{}", "[".repeat(200), "]".repeat(200));
    let ty = |t: &str| base.replace("\"type\":\"scheduled\"", &format!("\"type\":{t}"));
    let twice_inside = base.replace("\"node\":\"n1\",", "\"node\":\"n1\",\"node\":\"n2\",");
    let body_first_twice_inside = {
        let mut f = fields(2, false, false);
        f.reverse();
        text(&f).replace("\"node\":\"n1\",", "\"node\":\"n1\",\"node\":\"n2\",")
    };
    let mut not_utf8 = with("\"x\":\"?\"").into_bytes();
    let at = not_utf8.len() - 3;
    not_utf8[at] = 0xff;
    // (what, the message, the one-pass reader reads it, the derived reading reads it)
    let cases: Vec<(&str, Vec<u8>, bool, bool)> = vec![
        // An unknown field's value is skipped as JSON text, not decoded.
        (
            "a number out of range, unknown",
            with("\"x\":1e400").into(),
            true,
            false,
        ),
        (
            "a lone surrogate, unknown",
            with("\"x\":\"\\ud800\"").into(),
            true,
            false,
        ),
        (
            "200 nested arrays, unknown",
            with(&deep).into(),
            true,
            false,
        ),
        // A unit variant as an empty object: serde's buffer took it as `()`.
        (
            "type as {name: {}}",
            ty("{\"scheduled\":{}}").into(),
            false,
            true,
        ),
        // Alike.
        (
            "type as {name: null}",
            ty("{\"scheduled\":null}").into(),
            true,
            true,
        ),
        (
            "an escaped key",
            base.replace("\"type\"", "\"\\u0074ype\"").into(),
            true,
            true,
        ),
        (
            "a key twice inside the body",
            twice_inside.into(),
            false,
            false,
        ),
        (
            "the same, body first",
            body_first_twice_inside.into(),
            false,
            false,
        ),
        ("not UTF-8, unknown", not_utf8, false, false),
    ];
    for (what, bytes, ours, theirs) in cases {
        assert_ne!(
            bytes,
            base.as_bytes(),
            "{what}: the message was not changed"
        );
        let got = Event::parse(&bytes);
        assert_eq!(got.is_ok(), ours, "{what}: ours {got:?}");
        let got = derived(&bytes);
        assert_eq!(got.is_ok(), theirs, "{what}: derived {got:?}");
    }
}

#[test]
fn a_field_twice_a_missing_type_or_body_and_an_unknown_type_are_refused() {
    let base = fields(2, false, false);
    for twice in ["v", "type", "body", "actor"] {
        let mut f = base.clone();
        let again = f.iter().find(|(k, _)| k == twice).cloned().expect("field");
        f.push(again);
        let err = Event::parse(text(&f).as_bytes()).expect_err(twice);
        assert!(err.to_string().contains("duplicate field"), "{err}");
    }
    for gone in ["type", "body", "v", "actor"] {
        let f: Vec<_> = base.iter().filter(|(k, _)| k != gone).cloned().collect();
        let err = Event::parse(text(&f).as_bytes()).expect_err(gone);
        assert!(err.to_string().contains(gone), "{err}");
    }
    let mut f = base.clone();
    f[5].1 = "\"erased\"".into();
    assert!(Event::parse(text(&f).as_bytes()).is_err());
    assert!(Event::parse(b"[]").is_err());
    assert!(Event::parse(b"null").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Fields in any order, some dropped, some twice, unknown ones added, a type that is
    /// not its body's or no type at all, a body of another kind or not an object.
    #[test]
    fn the_one_pass_reader_reads_what_the_derived_reader_reads(
        body in 0..bodies().len(),
        prev in any::<bool>(),
        trace in any::<bool>(),
        order in prop::collection::vec(any::<u16>(), 9),
        dropped in prop::collection::vec(prop::bool::weighted(0.05), 9),
        twice in prop::option::weighted(0.1, (0usize..9, 0..bodies().len())),
        extra in prop::option::weighted(0.2, (
            prop::sample::select(vec!["x", "body_", "Type", "spec", "node"]),
            prop::sample::select(vec!["1", "null", "\"s\"", "{\"a\":[1,2]}", "[]"]),
        )),
        kind in prop::option::weighted(0.15, prop::sample::select(vec![
            "\"scheduled\"", "\"accepted\"", "\"erased\"", "0", "3", "null", "{}",
        ])),
        other_body in prop::option::weighted(0.1, prop::sample::select(vec![
            "null", "{}", "[]", "\"body\"", "{\"replica\":0,\"node\":\"n\",\"runtime_class\":\"runc\"}",
        ])),
    ) {
        let base = fields(body, prev, trace);
        let mut f: Vec<(String, String)> = Vec::new();
        let mut keyed: Vec<(u16, (String, String))> =
            order.iter().copied().zip(base.iter().cloned()).collect();
        keyed.sort_by_key(|(w, _)| *w);
        for (i, (_, field)) in keyed.into_iter().enumerate() {
            if !dropped[i] {
                f.push(field);
            }
        }
        for (name, value) in f.iter_mut() {
            match name.as_str() {
                "type" => if let Some(k) = kind { *value = k.to_owned(); },
                "body" => if let Some(b) = other_body { *value = b.to_owned(); },
                _ => {}
            }
        }
        if let Some((i, from)) = twice {
            let again = fields(from, true, true);
            if let Some(field) = again.get(i) {
                f.insert(i.min(f.len()), field.clone());
            }
        }
        if let Some((k, v)) = extra {
            f.insert(f.len() / 2, (k.to_owned(), v.to_owned()));
        }
        let first = |name: &str| f.iter().position(|(k, _)| k == name);
        let body_first = matches!((first("body"), first("type")), (Some(b), Some(t)) if b < t);
        agree(&text(&f), body_first)?;
    }
}
