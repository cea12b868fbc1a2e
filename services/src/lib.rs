//! The `bulkhead` binary's library: one folder per service over shared plumbing, and the
//! adapters of the actors' ports. `docs/ARCHITECTURE.md` maps every concept to its files.
//!
//! | module | what it holds |
//! |---|---|
//! | [`scheduler`] | the scheduler service: lease, rebuild, command lanes, watches |
//! | [`node`] | the node service: its settings, the CRI runtime, its ops, losing and coming back |
//! | [`failover`] | the failover service: lease, rebuild, heartbeat watch |
//! | [`api`] | the query API (a NATS service) over a read model of the log |
//! | [`scan`] | the scan workers: registry client, layer streaming, advisories, Trivy |
//! | [`sealing`] | secrets: the schedulers' curve keys, checked, and specs sealed to them |
//! | [`cli`] | the `bulkhead` command: arguments, `up`, and the client commands |
//! | [`aside`] | one counter for everything refused: each service's ledger, reported to the API |
//! | [`audit`] | the log proved: raw reads, replays, checkpoint files, the API's checkpointer |
//! | [`auth`] | identities: credentials, the admin's book, enrolments in the log |
//! | [`bus`] | plumbing: the NATS connection, streams and buckets, the log/ops/heartbeat adapters |
//! | [`follow`] | plumbing: reading the log in order (rebuild, then live) |
//! | [`own`] | plumbing: a service's own appends, which its reader passes by unparsed |
//! | [`snapshot`] | a service's projection, signed and anchored on a checkpoint: restarts replay the tail |
//! | [`lease`] | plumbing: one active instance through a KV lease |
//! | [`memory`] | plumbing: small pages only (no transparent huge pages) |
//! | [`natsd`] | plumbing: a local nats-server child |
//! | [`tasks`] | plumbing: task guards and the ack-progress loop |
//! | [`telemetry`] | plumbing: logs and OpenTelemetry traces |

pub mod api;
pub mod aside;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod failover;
pub mod follow;
pub mod lease;
pub mod memory;
pub mod natsd;
pub mod node;
pub mod own;
pub mod scan;
pub mod scheduler;
pub mod sealing;
pub mod snapshot;
pub mod tasks;
pub mod telemetry;
