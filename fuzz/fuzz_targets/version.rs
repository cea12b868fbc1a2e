//! Version ordering, Debian and Alpine, on two versions (the input split at its first NUL
//! or newline): never a panic, and an order: reflexive and antisymmetric for both.
#![no_main]

use std::cmp::Ordering;

use bulkhead_scan::version::{alpine, debian};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once(['\0', '\n']).unwrap_or((text, ""));
    for (name, compare) in [
        ("debian", debian::compare as fn(&str, &str) -> Ordering),
        ("alpine", alpine::compare),
    ] {
        assert_eq!(compare(a, a), Ordering::Equal, "{name}: {a:?} vs itself");
        assert_eq!(compare(b, b), Ordering::Equal, "{name}: {b:?} vs itself");
        assert_eq!(
            compare(a, b),
            compare(b, a).reverse(),
            "{name}: {a:?} vs {b:?} not antisymmetric"
        );
    }
});
