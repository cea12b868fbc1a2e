//! Commands that change what runs: `stop`, `scale`, `node drain`, `node undrain`.

use bulkhead_schemas::command::{DrainCommand, ScaleCommand, StopCommand};
use bulkhead_schemas::spec::MAX_REPLICAS;
use bulkhead_schemas::subjects;

use super::exit;
use crate::bus::Bus;

/// `bulkhead stop ID [--grace SECS]`: publishes a stop command.
pub async fn stop(
    bus: &Bus,
    tenant: &str,
    id: &str,
    grace_secs: Option<u32>,
) -> anyhow::Result<i32> {
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
