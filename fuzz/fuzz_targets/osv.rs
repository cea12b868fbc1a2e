//! An OSV advisory as the feed delivers it: parsed, and every entry matched against the
//! versions its own ranges name and a few others, in both ecosystems, never a panic; a
//! listed version is affected, and a fix offered is greater than the version it fixes.
#![no_main]

use std::cmp::Ordering;

use bulkhead_scan::osv::{self, Advisory, RangeEvent};
use bulkhead_scan::version::{self, Ecosystem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(adv) = Advisory::parse(data) else {
        return;
    };
    for entry in &adv.affected {
        let pkg = &entry.package;
        let _ = adv.entries_for(&pkg.ecosystem, &pkg.name).count();
        let _ = adv.entries_for("Debian:12", &pkg.name).count();
        let _ = adv.entries_for("Alpine:v3.19", &pkg.name).count();
        let _ = adv.severity(entry);
        let mut versions: Vec<&str> = vec!["0", "", "1.0-1", "1:2.3~rc1-4", "1.2.3_rc1-r2"];
        versions.extend(entry.versions.iter().map(String::as_str));
        for r in &entry.ranges {
            versions.extend(r.events.iter().map(|e| match e {
                RangeEvent::Introduced(v)
                | RangeEvent::Fixed(v)
                | RangeEvent::LastAffected(v)
                | RangeEvent::Limit(v) => v.as_str(),
            }));
        }
        for eco in [Ecosystem::Debian, Ecosystem::Alpine] {
            for v in &versions {
                match osv::affects(eco, entry, v) {
                    Some(Some(fix)) => assert_eq!(
                        version::compare(eco, &fix, v),
                        Ordering::Greater,
                        "fix {fix:?} for {v:?} ({eco:?})"
                    ),
                    Some(None) => {}
                    None => assert!(
                        !entry.versions.iter().any(|l| l == v),
                        "listed {v:?} not affected"
                    ),
                }
            }
        }
    }
});
