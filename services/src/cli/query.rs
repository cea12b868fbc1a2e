//! Questions for the query API: `get`, `list`, `nodes` (tables, or `--json`).

use std::io::Write;
use std::time::Duration;

use bulkhead_schemas::api::{
    AsideReply, ListReply, ListRequest, NodesReply, WorkloadState, WorkloadView,
};
use bulkhead_schemas::subjects;

use super::exit;
use super::output::Output;
use crate::bus::Bus;

/// Asks the query API; `Err` inside carries a service error's message (not found, …).
pub(super) async fn api_request(
    bus: &Bus,
    subject: &str,
    payload: Vec<u8>,
) -> anyhow::Result<Result<Vec<u8>, String>> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        bus.client.request(subject.to_owned(), payload.into()),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "no reply from {subject} in 5 s (is `bulkhead up` or the query API running?)"
        )
    })?
    .map_err(|e| anyhow::anyhow!("{subject}: {e} (is the query API running?)"))?;
    if let Some(h) = &reply.headers
        && let Some(err) = h.get("Nats-Service-Error")
    {
        let msg = serde_json::from_str::<serde_json::Value>(err.as_str())
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| err.as_str().to_owned());
        return Ok(Err(msg));
    }
    Ok(Ok(reply.payload.to_vec()))
}

/// `bulkhead get ID`: the workload for people (what it runs, where, why), or as the API
/// answers it (`-o json|yaml`).
pub async fn get(bus: &Bus, tenant: &str, id: &str, o: Output) -> anyhow::Result<i32> {
    let subject = subjects::api_workloads_get(tenant);
    let w: WorkloadView = match query(bus, &subject, id.as_bytes().to_vec(), o).await? {
        Ok(w) => w,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    let running = w
        .replicas
        .iter()
        .filter(|r| r.state == WorkloadState::Running)
        .count();
    writeln!(
        out,
        "{}  (tenant {})  {}  {running}/{} running",
        w.id, w.tenant, w.state, w.desired
    )?;
    if let Some(s) = &w.spec {
        writeln!(out, "image     {}", s.image)?;
        writeln!(
            out,
            "runs as   class {}, trust {}, {} MiB, {}m CPU, placement {}",
            s.runtime_class.as_str(),
            s.trust_level().as_str(),
            s.memory_mb,
            s.cpu_millicores,
            serde_json::to_value(s.placement)?
                .as_str()
                .unwrap_or_default()
        )?;
        writeln!(
            out,
            "restart   {} (at most {} in {} s)",
            serde_json::to_value(s.restart.policy)?
                .as_str()
                .unwrap_or_default(),
            s.restart.max_restarts,
            s.restart.window_s
        )?;
    }
    if let Some(reason) = &w.reason {
        writeln!(out, "reason    {reason}")?;
    }
    if let Some(scan) = &w.scan {
        let worst = scan.worst.map(|s| s.to_string()).unwrap_or("none".into());
        writeln!(
            out,
            "scan      {} findings, worst {worst}{}",
            scan.findings,
            scan.error
                .as_deref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        )?;
    }
    if let Some(q) = &w.quarantine {
        writeln!(out, "quarantine {q}")?;
    }
    writeln!(
        out,
        "\n{:<8} {:<11} {:<20} {:<28} {:>8}  REASON",
        "REPLICA", "STATE", "NODE", "CONTAINER", "RESTARTS"
    )?;
    for r in &w.replicas {
        writeln!(
            out,
            "{:<8} {:<11} {:<20} {:<28} {:>8}  {}",
            r.replica,
            r.state.to_string(),
            r.node.as_deref().unwrap_or("-"),
            r.container.as_deref().unwrap_or("-"),
            r.restarts,
            r.reason.as_deref().unwrap_or("")
        )?;
    }
    // What each running copy was given: one line per distinct confinement.
    let mut shown: Vec<&bulkhead_schemas::event::Confinement> = Vec::new();
    for c in w.replicas.iter().filter_map(|r| r.confinement.as_ref()) {
        if !shown.contains(&c) {
            shown.push(c);
        }
    }
    for c in shown {
        writeln!(
            out,
            "\nconfined  network {}, seccomp {}, no_new_privs {}, capabilities {}, user {}, root filesystem {}",
            c.network,
            c.seccomp,
            c.no_new_privs,
            c.capabilities.join(","),
            c.run_as_user
                .map_or("the image's".to_owned(), |u| u.to_string()),
            if c.read_only_rootfs {
                "read-only"
            } else {
                "writable"
            }
        )?;
    }
    Ok(exit::OK)
}

/// Asks the query API. On a service error, prints it; as JSON or YAML, prints the reply.
/// Either way the command is then done: `Err` carries its exit code.
async fn query<T: serde::de::DeserializeOwned + serde::Serialize>(
    bus: &Bus,
    subject: &str,
    payload: Vec<u8>,
    o: Output,
) -> anyhow::Result<Result<T, i32>> {
    let body = match api_request(bus, subject, payload).await? {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Err(exit::ERROR));
        }
    };
    let reply: T = serde_json::from_slice(&body)?;
    if super::output::structured(o, &reply)? {
        return Ok(Err(exit::OK));
    }
    Ok(Ok(reply))
}

pub async fn list(bus: &Bus, tenant: &str, req: ListRequest, o: Output) -> anyhow::Result<i32> {
    let reply: ListReply = match query(
        bus,
        &subjects::api_workloads_list(tenant),
        serde_json::to_vec(&req)?,
        o,
    )
    .await?
    {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let wide = o == Output::Wide;
    let mut out = std::io::stdout().lock();
    write!(
        out,
        "{:<38} {:<10} {:<9} {:<24} ",
        "ID", "STATE", "REPLICAS", "NODES"
    )?;
    if wide {
        write!(out, "{:<13} {:<13} {:<24} ", "CLASS", "TRUST", "LABELS")?;
    }
    writeln!(out, "IMAGE")?;
    for w in &reply.workloads {
        let running = w
            .replicas
            .iter()
            .filter(|r| r.state == WorkloadState::Running)
            .count();
        let mut nodes: Vec<&str> = w
            .replicas
            .iter()
            .filter_map(|r| r.node.as_deref())
            .collect();
        nodes.dedup();
        let image = w.spec.as_ref().map(|s| s.image.as_str()).unwrap_or("-");
        write!(
            out,
            "{:<38} {:<10} {:<9} {:<24} ",
            w.id,
            w.state,
            format!("{running}/{}", w.desired),
            nodes.join(","),
        )?;
        if wide {
            let (class, trust, labels) = match &w.spec {
                Some(s) => (
                    s.runtime_class.as_str().to_owned(),
                    s.trust_level().as_str().to_owned(),
                    s.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                None => ("-".into(), "-".into(), String::new()),
            };
            write!(out, "{class:<13} {trust:<13} {labels:<24} ")?;
        }
        writeln!(out, "{image}")?;
    }
    writeln!(
        out,
        "{} of {} shown{}",
        reply.workloads.len(),
        reply.total,
        reply
            .next
            .map(|n| format!("; next page: --after {n}"))
            .unwrap_or_default()
    )?;
    Ok(exit::OK)
}

pub async fn nodes(bus: &Bus, o: Output) -> anyhow::Result<i32> {
    let reply: NodesReply = match query(bus, subjects::API_NODES_LIST, Vec::new(), o).await? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let wide = o == Output::Wide;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:<14} {:<5} {:<22} {:>16} {:>16} {:>9} {:>8}{}",
        "NODE",
        "STATUS",
        "RT",
        "CLASSES",
        "MEM MiB used/cap",
        "CPU m used/cap",
        "WORKLOADS",
        "AGE ms",
        if wide { "  LABELS" } else { "" }
    )?;
    for n in &reply.nodes {
        let hb = &n.heartbeat;
        let classes: Vec<&str> = hb.runtime_classes.iter().map(|c| c.as_str()).collect();
        let labels = if wide {
            let l: Vec<String> = hb.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("  {}", l.join(","))
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:<20} {:<14} {:<5} {:<22} {:>16} {:>16} {:>9} {:>8}{labels}",
            hb.name,
            n.marks.status(),
            hb.runtime,
            classes.join(","),
            format!("{}/{}", n.allocated.memory_mb, hb.capacity.memory_mb),
            format!(
                "{}/{}",
                n.allocated.cpu_millicores, hb.capacity.cpu_millicores
            ),
            n.workloads,
            n.age_ms
        )?;
        for r in &hb.isolation {
            let kernel = match r.host_kernel_visible {
                Some(true) => "host kernel",
                Some(false) => "own kernel",
                None => "-",
            };
            writeln!(
                out,
                "  {:<12} handler {:<10} {:<4} {:<11} {:>6} ms  {}",
                r.class,
                r.handler,
                if r.ok { "ok" } else { "FAIL" },
                kernel,
                r.took_ms,
                r.detail
            )?;
        }
    }
    Ok(exit::OK)
}

/// `bulkhead aside`: everything set aside, whatever refused it (the query API reading the
/// log, and every service's report), by reporter, the latest listed.
pub async fn aside(bus: &Bus, json: bool) -> anyhow::Result<i32> {
    let o = if json { Output::Json } else { Output::Table };
    let reply: AsideReply = match query(bus, subjects::API_ASIDE_LIST, Vec::new(), o).await? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    let codes: Vec<String> = reply
        .by_code
        .iter()
        .map(|(c, n)| format!("{c}={n}"))
        .collect();
    writeln!(out, "{} set aside: {}", reply.total, codes.join(" "))?;
    for (who, r) in reply.by_who.iter().filter(|(_, r)| r.total > 0) {
        writeln!(out, "  {who}: {}", r.total)?;
    }
    for a in &reply.recent {
        writeln!(
            out,
            "{:>8} {:<16} {:<16} {} {}",
            a.seq, a.code, a.by, a.subject, a.reason
        )?;
    }
    Ok(exit::OK)
}
