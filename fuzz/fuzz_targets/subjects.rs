//! Subjects and the names in them, as commands, API requests and events carry them: parsed,
//! never a panic; what is accepted as a token or tenant cannot leave its subject.
#![no_main]

use bulkhead_actors::scheduler::Command;
use bulkhead_schemas::subjects;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if subjects::is_valid_token(&s) || subjects::is_valid_tenant(&s) {
        assert!(!s.contains(['.', '*', '>', ' ', '/']), "{s:?}");
    }
    let _ = subjects::split_key(&s);
    let _ = subjects::api_tenant(&s);
    let _ = subjects::api_heads_node(&s);
    let _ = Command::read(&s, 1, 1, data.to_vec(), None, None);
});
