//! A submission, as `bulkhead.cmd.<tenant>.submit` carries it: parsed and validated, never a
//! panic; what is admitted survives a round trip and validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = bulkhead_schemas::spec::parse_submission(data) {
        let again = serde_json::to_vec(&spec).expect("an admitted spec serializes");
        let back = bulkhead_schemas::spec::parse_submission(&again).expect("and parses again");
        assert_eq!(back, spec);
        let policy = bulkhead_schemas::policy::Policy::first(Vec::new());
        let _ = bulkhead_actors::policy::admit(
            &policy,
            "default",
            spec,
            &bulkhead_actors::policy::Usage::default(),
        );
    }
});
