//! A manifest, an index and an image config as a registry serves them: parsed, the
//! platform picked, layers paired with the config's diffIDs, never a panic; the pairing
//! keeps the manifest's order and count.
#![no_main]

use bulkhead_scan::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One input, two documents: the manifest, then (after the first NUL) the config.
    let (manifest, config) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(m) = Manifest::parse(manifest) else {
        return;
    };
    let _ = m.is_index();
    let _ = m.platform("linux", "amd64");
    let _ = m.config();
    if let Ok(layers) = m.layers(config) {
        assert_eq!(layers.len(), m.layers.len());
        for (l, d) in layers.iter().zip(&m.layers) {
            assert_eq!(l.digest, d.digest);
        }
    }
});
