//! JSON Schemas of the public wire types, generated from the Rust types; the committed
//! copies in `schemas/json/` are checked against them by a test.

use schemars::schema_for;

/// `(file name, pretty JSON Schema)` for every public wire type.
pub fn all() -> Vec<(&'static str, String)> {
    let pretty =
        |s: schemars::Schema| serde_json::to_string_pretty(&s).expect("schema serializes") + "\n";
    vec![
        (
            "workload-spec.json",
            pretty(schema_for!(crate::spec::WorkloadSpec)),
        ),
        (
            "stop-command.json",
            pretty(schema_for!(crate::command::StopCommand)),
        ),
        (
            "scale-command.json",
            pretty(schema_for!(crate::command::ScaleCommand)),
        ),
        (
            "drain-command.json",
            pretty(schema_for!(crate::command::DrainCommand)),
        ),
        ("event.json", pretty(schema_for!(crate::event::Event))),
        (
            "node-heartbeat.json",
            pretty(schema_for!(crate::node::NodeHeartbeat)),
        ),
        ("node-ops.json", pretty(schema_for!(crate::node::NodeOps))),
        (
            "api-list-request.json",
            pretty(schema_for!(crate::api::ListRequest)),
        ),
        (
            "api-list-reply.json",
            pretty(schema_for!(crate::api::ListReply)),
        ),
        (
            "api-workload.json",
            pretty(schema_for!(crate::api::WorkloadView)),
        ),
        ("scan-job.json", pretty(schema_for!(crate::scan::ScanJob))),
        (
            "api-nodes-reply.json",
            pretty(schema_for!(crate::api::NodesReply)),
        ),
    ]
}
