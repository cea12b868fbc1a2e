//! The bulkhead services and their adapters: the NATS/JetStream bus, the scheduler and
//! node services, the sim runtime, the query API, the local nats-server, telemetry.

pub mod api;
pub mod bus;
pub mod cli;
pub mod cri;
pub mod failover_svc;
pub mod follow;
pub mod lease;
pub mod natsd;
pub mod node_config;
pub mod node_svc;
pub mod scan;
pub mod scheduler_svc;
pub mod sim;
pub mod telemetry;
