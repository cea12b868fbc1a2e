//! The package databases and os-release as text (dpkg `status`, apk `installed`,
//! `os-release`): parsed, never a panic; an ecosystem named is one OSV knows by that form.
#![no_main]

use bulkhead_scan::inventory::{OsRelease, PackageKind, parse_apk, parse_dpkg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(parse_dpkg(text).iter().all(|p| p.kind == PackageKind::Deb));
    assert!(parse_apk(text).iter().all(|p| p.kind == PackageKind::Apk));
    let os = OsRelease::parse(text);
    if let Some(eco) = os.ecosystem() {
        assert!(
            eco.starts_with("Debian:") || eco.starts_with("Alpine:v"),
            "{eco:?} from {os:?}"
        );
    }
});
