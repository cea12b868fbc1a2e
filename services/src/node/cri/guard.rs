//! The pod network's guard: nftables rules a node makes when it starts on a pod network, so
//! that no workload reaches the host itself (nats-server, containerd, the node's own
//! ports, anything listening on any of the host's addresses), removed when the node stops.
//! A table per node process (`bulkhead_<node>_<pid>`), so that nodes sharing a host do not
//! remove each other's; a table left by a process that is gone is removed at start. Egress
//! beyond the host (masquerade, forwarding) is the CNI configuration's.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("pod_cidr {0:?} is not an IPv4 network (a.b.c.d/n)")]
    Cidr(String),
    #[error(
        "nft: {0} (the pod network needs nftables to keep workloads off the host's services: \
         install it, or run the node with network = \"host\")"
    )]
    Nft(String),
}

/// Tables this process installed and has not removed: a drop may not run as a process
/// exits, so a stopping node removes them with [`remove_installed`].
static INSTALLED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Removes every table this process installed (a node's last act when it stops).
pub fn remove_installed() {
    let tables = std::mem::take(&mut *INSTALLED.lock().unwrap_or_else(|p| p.into_inner()));
    for table in tables {
        match nft(&["delete", "table", "inet", &table], None) {
            Ok(_) => info!(%table, "pod network guard removed"),
            Err(e) => warn!(%table, error = %e, "could not remove the pod network guard"),
        }
    }
}

/// The rules in force while it lives.
#[derive(Debug)]
pub struct HostGuard {
    table: String,
}

/// Table names of this node: `bulkhead_<node>_`, the node's name with `-` as `_`.
fn prefix(node: &str) -> String {
    let safe: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("bulkhead_{safe}_")
}

/// `a.b.c.d/n`, checked: it goes into an nft script.
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), GuardError> {
    let bad = || GuardError::Cidr(cidr.to_owned());
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((addr, len))
}

/// The ruleset: from the pod network to the host, only replies to what the host began.
pub fn ruleset(table: &str, addr: Ipv4Addr, len: u8) -> String {
    format!(
        "table inet {table} {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter - 10; policy accept;\n\
         \x20   ip saddr {addr}/{len} ct state established,related accept\n\
         \x20   ip saddr {addr}/{len} counter drop\n\
         \x20 }}\n\
         }}\n"
    )
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, GuardError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| GuardError::Nft(e.to_string()))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .map_err(|e| GuardError::Nft(e.to_string()))?;
    }
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .map_err(|e| GuardError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(GuardError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl HostGuard {
    /// Installs the rules for `node`'s pod network `cidr`, after removing tables an earlier
    /// process of the same node left.
    pub fn install(node: &str, cidr: &str) -> Result<HostGuard, GuardError> {
        let (addr, len) = parse_cidr(cidr)?;
        let prefix = prefix(node);
        let listed = nft(&["list", "tables", "inet"], None)?;
        for table in listed
            .lines()
            .filter_map(|l| l.trim().strip_prefix("table inet "))
        {
            let Some(pid) = table
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            info!(table, "removing a guard an earlier node process left");
            let _ = nft(&["delete", "table", "inet", table], None);
        }
        let table = format!("{prefix}{}", std::process::id());
        nft(&["-f", "-"], Some(&ruleset(&table, addr, len)))?;
        INSTALLED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(table.clone());
        info!(%table, cidr, "pod network guard: the host's own addresses are closed to workloads");
        Ok(HostGuard { table })
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = installed.iter().position(|t| *t == self.table) else {
            return; // removed already, as the process stopped
        };
        installed.remove(i);
        drop(installed);
        if let Err(e) = nft(&["delete", "table", "inet", &self.table], None) {
            warn!(table = %self.table, error = %e, "could not remove the pod network guard");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked_before_they_reach_a_script() {
        assert_eq!(
            parse_cidr("10.88.0.0/16").unwrap(),
            (Ipv4Addr::new(10, 88, 0, 0), 16)
        );
        for bad in [
            "10.88.0.0",
            "10.88.0.0/33",
            "10.88.0.0/16; flush ruleset",
            "::/0",
            "x/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert_eq!(prefix("node-a"), "bulkhead_node_a_");
        let r = ruleset("bulkhead_n_1", Ipv4Addr::new(10, 88, 0, 0), 16);
        assert!(r.contains("ip saddr 10.88.0.0/16 counter drop"), "{r}");
        assert!(r.contains("hook input"), "{r}");
    }
}
