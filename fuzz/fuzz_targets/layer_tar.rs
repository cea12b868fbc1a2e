//! An image layer as the scanner reads it: any bytes as a tar stream into an inventory,
//! never a panic; an inventory read survives its JSON round trip (the layer cache's form)
//! and merging is idempotent (applying a layer twice leaves what applying it once does).
#![no_main]

use bulkhead_scan::inventory::{self, LayerInventory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(inv) = LayerInventory::from_tar(data) else {
        return;
    };
    let img = inventory::merge([&inv]);
    assert_eq!(inventory::merge([&inv, &inv]), img, "merging a layer twice");
    let _ = img.os.as_ref().and_then(|os| os.ecosystem());
    for p in &img.packages {
        let _ = bulkhead_scan::version::debian::compare(&p.version, &p.source_version);
        let _ = bulkhead_scan::version::alpine::compare(&p.version, &p.source_version);
    }
    let json = serde_json::to_string(&inv).expect("an inventory serializes");
    let back: LayerInventory = serde_json::from_str(&json).expect("an inventory deserializes");
    assert_eq!(back, inv, "JSON round trip");
});
