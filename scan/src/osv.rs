//! OSV advisories (the OSV JSON schema, the parts a package scan needs) and whether one
//! affects a package version: ECOSYSTEM ranges with `introduced` / `fixed` /
//! `last_affected` events, explicit version lists; withdrawn entries never match.

use std::cmp::Ordering;

use serde::Deserialize;

use crate::severity::Severity;
use crate::version::{self, Ecosystem};

/// One OSV entry.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Advisory {
    pub id: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// When set, the advisory was taken back: it matches nothing.
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub affected: Vec<Affected>,
    #[serde(default)]
    pub severity: Vec<SeverityScore>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Affected {
    pub package: Package,
    #[serde(default)]
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub severity: Vec<SeverityScore>,
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// `Debian:12`, `Alpine:v3.19`, …
    pub ecosystem: String,
    pub name: String,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub events: Vec<RangeEvent>,
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RangeEvent {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SeverityScore {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

#[derive(Debug, thiserror::Error)]
#[error("not an OSV advisory: {0}")]
pub struct ParseError(String);

impl Advisory {
    pub fn parse(json: &[u8]) -> Result<Advisory, ParseError> {
        serde_json::from_slice(json).map_err(|e| ParseError(e.to_string()))
    }

    /// The entries of this advisory about `name` in ecosystem `eco` (e.g. `Debian:12`).
    /// An entry naming the bare ecosystem (`Debian`) applies to every release.
    pub fn entries_for<'a>(
        &'a self,
        eco: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Affected> + 'a {
        let bare = eco.split(':').next().unwrap_or(eco);
        self.affected.iter().filter(move |a| {
            self.withdrawn.is_none()
                && a.package.name == name
                && (a.package.ecosystem == eco || a.package.ecosystem == bare)
        })
    }

    /// The most severe rating the advisory (or its entry) gives, if any.
    pub fn severity(&self, entry: &Affected) -> Severity {
        let from_db = self
            .database_specific
            .as_ref()
            .and_then(|d| d.get("severity"))
            .and_then(|s| s.as_str())
            .and_then(Severity::from_label);
        entry
            .severity
            .iter()
            .chain(&self.severity)
            .filter_map(|s| crate::severity::from_score(&s.kind, &s.score))
            .chain(from_db)
            .max()
            .unwrap_or(Severity::Unknown)
    }
}

/// Whether `version` is affected per this entry, and the version that fixes it if known.
pub fn affects(eco: Ecosystem, entry: &Affected, version: &str) -> Option<Option<String>> {
    if entry.versions.iter().any(|v| v == version) {
        return Some(None);
    }
    entry
        .ranges
        .iter()
        .filter(|r| r.kind == "ECOSYSTEM")
        .find_map(|r| in_range(eco, &r.events, version))
}

/// OSV's evaluation of one range: walk the events in version order; the last one at or
/// below the version decides (`introduced` opens, `fixed` closes, `last_affected` closes
/// just above itself). Returns the fix, if any, when affected.
fn in_range(eco: Ecosystem, events: &[RangeEvent], version: &str) -> Option<Option<String>> {
    // "0" is below everything (OSV's "from the first version"), on either side.
    let cmp = |a: &str, b: &str| match (a == "0", b == "0") {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => version::compare(eco, a, b),
    };
    let events: Vec<&RangeEvent> = events
        .iter()
        .filter(|e| !matches!(e, RangeEvent::Limit(_)))
        .take(MAX_RANGE_EVENTS)
        .collect();
    let sorted = insertion_sorted(events, |a, b| cmp(event_version(a), event_version(b)));
    let mut affected = false;
    for e in &sorted {
        match e {
            RangeEvent::Introduced(v) if cmp(v, version).is_le() => affected = true,
            RangeEvent::Fixed(v) if cmp(v, version).is_le() => affected = false,
            RangeEvent::LastAffected(v) if cmp(v, version).is_lt() => affected = false,
            _ => {}
        }
    }
    if !affected {
        return None;
    }
    let fix = sorted.iter().find_map(|e| match e {
        // By the ecosystem's own order: a fix offered is always above the version.
        RangeEvent::Fixed(v) if version::compare(eco, v, version).is_gt() => Some(v.clone()),
        _ => None,
    });
    Some(fix)
}

/// Events of one range considered at most (a real range has a handful).
pub const MAX_RANGE_EVENTS: usize = 512;

/// `items` in the order `cmp` gives, by insertion: unlike the standard sorts, it neither
/// panics nor loops on an order that is not total — apk's is not transitive ("1.0" and
/// "1.00" each equal "1" but not each other), and an advisory is input from outside.
fn insertion_sorted<T>(items: Vec<T>, cmp: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        let at = out
            .iter()
            .position(|o| cmp(&item, o).is_lt())
            .unwrap_or(out.len());
        out.insert(at, item);
    }
    out
}

fn event_version(e: &RangeEvent) -> &str {
    match e {
        RangeEvent::Introduced(v)
        | RangeEvent::Fixed(v)
        | RangeEvent::LastAffected(v)
        | RangeEvent::Limit(v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `osv` fuzz target: ranges of 21 events or more whose versions the
    /// ecosystem does not order totally made the standard sort panic, and a scan worker with
    /// it. Both ecosystems, both causes ("0" on the right; apk's leading zeros).
    #[test]
    fn ranges_the_ecosystem_cannot_order_totally_do_not_panic() {
        let events = |vs: &[&str]| -> Vec<serde_json::Value> {
            vs.iter()
                .enumerate()
                .map(|(i, v)| match i % 3 {
                    0 => serde_json::json!({"introduced": v}),
                    1 => serde_json::json!({"fixed": v}),
                    _ => serde_json::json!({"last_affected": v}),
                })
                .collect()
        };
        for (eco, e, vs) in [
            ("Debian:12", Ecosystem::Debian, ["0", "0~", "~", "1"]),
            (
                "Alpine:v3.19",
                Ecosystem::Alpine,
                ["1", "1.0", "1.00", "1.000"],
            ),
        ] {
            let many: Vec<&str> = vs.iter().copied().cycle().take(64).collect();
            let a = advisory(serde_json::json!({
                "id": "X",
                "affected": [{"package": {"ecosystem": eco, "name": "p"},
                              "ranges": [{"type": "ECOSYSTEM", "events": events(&many)}]}]
            }));
            for entry in a.entries_for(eco, "p") {
                for v in vs {
                    let _ = affects(e, entry, v);
                }
            }
        }
        let sorted = insertion_sorted(vec![3, 1, 2], |a, b| a.cmp(b));
        assert_eq!(sorted, [1, 2, 3]);
    }

    fn advisory(json: serde_json::Value) -> Advisory {
        Advisory::parse(json.to_string().as_bytes()).unwrap()
    }

    fn openssl() -> Advisory {
        advisory(serde_json::json!({
            "id": "DEBIAN-CVE-2024-0001",
            "summary": "openssl: a bug",
            "affected": [{
                "package": {"ecosystem": "Debian:12", "name": "openssl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [
                    {"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}
                ]}]
            }],
            "database_specific": {"severity": "HIGH"}
        }))
    }

    #[test]
    fn introduced_zero_to_fixed() {
        let a = openssl();
        let e = a.entries_for("Debian:12", "openssl").next().unwrap();
        assert_eq!(
            affects(Ecosystem::Debian, e, "3.0.11-1~deb12u2"),
            Some(Some("3.0.13-1~deb12u1".into()))
        );
        assert_eq!(affects(Ecosystem::Debian, e, "3.0.13-1~deb12u1"), None);
        assert_eq!(affects(Ecosystem::Debian, e, "3.0.14-1"), None);
        assert_eq!(a.severity(e), Severity::High);
        assert!(a.entries_for("Debian:11", "openssl").next().is_none());
        assert!(a.entries_for("Debian:12", "libssl3").next().is_none());
    }

    #[test]
    fn last_affected_and_reintroduction() {
        let a = advisory(serde_json::json!({
            "id": "ALPINE-CVE-1",
            "affected": [{
                "package": {"ecosystem": "Alpine:v3.19", "name": "busybox"},
                "ranges": [{"type": "ECOSYSTEM", "events": [
                    {"introduced": "1.30.0-r0"}, {"last_affected": "1.30.1-r2"},
                    {"introduced": "1.36.0-r0"}, {"fixed": "1.36.1-r7"}
                ]}]
            }]
        }));
        let e = &a.affected[0];
        let eco = Ecosystem::Alpine;
        assert_eq!(affects(eco, e, "1.29.9-r0"), None);
        assert!(affects(eco, e, "1.30.0-r0").is_some());
        assert!(affects(eco, e, "1.30.1-r2").is_some());
        assert_eq!(affects(eco, e, "1.30.1-r3"), None);
        assert_eq!(affects(eco, e, "1.36.1-r6"), Some(Some("1.36.1-r7".into())));
        assert_eq!(affects(eco, e, "1.36.1-r7"), None);
    }

    #[test]
    fn withdrawn_and_explicit_versions() {
        let mut a = openssl();
        a.affected[0].ranges.clear();
        a.affected[0].versions = vec!["1.0-1".into()];
        let e = a.entries_for("Debian:12", "openssl").next().unwrap();
        assert_eq!(affects(Ecosystem::Debian, e, "1.0-1"), Some(None));
        assert_eq!(affects(Ecosystem::Debian, e, "1.0-2"), None);
        a.withdrawn = Some("2024-01-01T00:00:00Z".into());
        assert!(a.entries_for("Debian:12", "openssl").next().is_none());
    }

    #[test]
    fn bare_ecosystem_applies_to_every_release() {
        let mut a = openssl();
        a.affected[0].package.ecosystem = "Debian".into();
        assert!(a.entries_for("Debian:12", "openssl").next().is_some());
        assert!(a.entries_for("Alpine:v3.19", "openssl").next().is_none());
    }
}
