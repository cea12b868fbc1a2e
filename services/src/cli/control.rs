//! Commands that change what runs: `stop`, `scale`, `node drain`, `node undrain`. Each asks
//! the query API first whether what it names exists, and exits [`exit::NOT_FOUND`] with a
//! message when it does not (a command about nothing would be acknowledged and do nothing).

use bulkhead_schemas::api::NodesReply;
use bulkhead_schemas::command::{DrainCommand, ScaleCommand, StopCommand};
use bulkhead_schemas::spec::MAX_REPLICAS;
use bulkhead_schemas::subjects;

use super::exit;
use super::query::api_request;
use crate::bus::Bus;

/// Whether the tenant has workload `id`; Err(message) when it does not.
async fn workload_exists(bus: &Bus, tenant: &str, id: &str) -> anyhow::Result<Result<(), String>> {
    let subject = subjects::api_workloads_get(tenant);
    Ok(api_request(bus, &subject, id.as_bytes().to_vec())
        .await?
        .map(|_| ())
        .map_err(|e| format!("{e} (see `bulkhead list`)")))
}

/// Whether node `node` heartbeats; Err(message) when it does not.
async fn node_exists(bus: &Bus, node: &str) -> anyhow::Result<Result<(), String>> {
    let body = match api_request(bus, subjects::API_NODES_LIST, Vec::new()).await? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let nodes: NodesReply = serde_json::from_slice(&body)?;
    Ok(if nodes.nodes.iter().any(|n| n.heartbeat.name == node) {
        Ok(())
    } else {
        Err(format!(
            "no node {node} is heartbeating (see `bulkhead nodes`)"
        ))
    })
}

/// `bulkhead stop ID [--grace SECS]`: publishes a stop command.
pub async fn stop(
    bus: &Bus,
    tenant: &str,
    id: &str,
    grace_secs: Option<u32>,
) -> anyhow::Result<i32> {
    if let Err(e) = workload_exists(bus, tenant, id).await? {
        eprintln!("error: cannot stop {id}: {e}");
        return Ok(exit::NOT_FOUND);
    }
    let payload = serde_json::to_vec(&StopCommand {
        id: id.to_owned(),
        grace_secs,
    })?;
    super::send_command(
        bus,
        subjects::cmd(tenant, "stop"),
        Default::default(),
        payload,
    )
    .await?;
    println!("stop requested for {id}");
    Ok(exit::OK)
}

/// `bulkhead scale ID N`: publishes a scale command.
pub async fn scale(bus: &Bus, tenant: &str, id: &str, replicas: u32) -> anyhow::Result<i32> {
    anyhow::ensure!(
        replicas <= MAX_REPLICAS,
        "replicas must be between 0 and {MAX_REPLICAS}, got {replicas}"
    );
    if let Err(e) = workload_exists(bus, tenant, id).await? {
        eprintln!("error: cannot scale {id}: {e}");
        return Ok(exit::NOT_FOUND);
    }
    let payload = serde_json::to_vec(&ScaleCommand {
        id: id.to_owned(),
        replicas,
    })?;
    super::send_command(
        bus,
        subjects::cmd(tenant, "scale"),
        Default::default(),
        payload,
    )
    .await?;
    println!("scale of {id} to {replicas} requested");
    Ok(exit::OK)
}

/// `bulkhead node drain NODE` (`drain`) or `bulkhead node undrain NODE`: publishes the command.
pub async fn drain(bus: &Bus, node: &str, drain: bool) -> anyhow::Result<i32> {
    anyhow::ensure!(
        subjects::is_valid_token(node),
        "node name {node:?} must be 1-64 characters of [A-Za-z0-9_-]"
    );
    if let Err(e) = node_exists(bus, node).await? {
        let verb = if drain { "drain" } else { "undrain" };
        eprintln!("error: cannot {verb} {node}: {e}");
        return Ok(exit::NOT_FOUND);
    }
    let payload = serde_json::to_vec(&DrainCommand {
        node: node.to_owned(),
    })?;
    let subject = if drain {
        subjects::CTL_DRAIN
    } else {
        subjects::CTL_UNDRAIN
    };
    super::send_command(bus, subject.to_owned(), Default::default(), payload).await?;
    if drain {
        println!(
            "drain of {node} requested: follow it with `bulkhead events --type draining,scheduled,stopped,drained`"
        );
    } else {
        println!("undrain of {node} requested: `bulkhead nodes` shows it ready once it takes work");
    }
    Ok(exit::OK)
}
