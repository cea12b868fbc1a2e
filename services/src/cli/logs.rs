//! `bulkhead logs ID [--replica N] [--follow]`: a replica's output, asked of the node that
//! runs (or last ran) it over NATS — the server lets a tenant ask for its own workloads only.
//! Printed as the program wrote it (the runtime's timestamp and stream stripped, or kept with
//! `--timestamps`); `--follow` asks again every half second until interrupted.

use std::io::Write;
use std::time::Duration;

use bulkhead_schemas::api::WorkloadView;
use bulkhead_schemas::node::{LogsReply, LogsRequest};
use bulkhead_schemas::subjects;

use super::exit;
use super::query::api_request;
use crate::bus::Bus;

/// One line of a CRI log (`<time> <stream> <P|F> <text>`) as the program wrote it: its text,
/// with a newline unless the runtime split it (`P`); other lines as they are.
pub fn program_text(line: &str, timestamps: bool) -> String {
    let mut parts = line.splitn(4, ' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(time), Some("stdout" | "stderr"), Some(tag @ ("P" | "F")), Some(text)) => {
            let end = if tag == "F" { "\n" } else { "" };
            if timestamps {
                format!("{time} {text}{end}")
            } else {
                format!("{text}{end}")
            }
        }
        _ => format!("{line}\n"),
    }
}

pub async fn logs(
    bus: &Bus,
    tenant: &str,
    id: &str,
    replica: u32,
    follow: bool,
    timestamps: bool,
) -> anyhow::Result<i32> {
    let w: WorkloadView =
        match api_request(bus, &subjects::api_workloads_get(tenant), id.into()).await? {
            Ok(body) => serde_json::from_slice(&body)?,
            Err(e) => {
                eprintln!("error: {e} (see `bulkhead list`)");
                return Ok(exit::NOT_FOUND);
            }
        };
    let Some(node) = w
        .replicas
        .iter()
        .find(|r| r.replica == replica)
        .and_then(|r| r.node.clone())
    else {
        eprintln!("error: replica {replica} of {id} has not been placed on a node yet");
        return Ok(exit::NOT_FOUND);
    };
    let subject = subjects::logs(tenant, &node);
    let mut from = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let req = LogsRequest {
            id: id.to_owned(),
            replica,
            from,
            max: 256 * 1024,
        };
        let asked = tokio::time::timeout(
            Duration::from_secs(5),
            bus.client
                .request(subject.clone(), serde_json::to_vec(&req)?.into()),
        )
        .await;
        let reply: LogsReply = match asked {
            Ok(Ok(m)) => serde_json::from_slice(&m.payload)?,
            Ok(Err(e)) => anyhow::bail!("node {node} did not answer: {e} (is it running?)"),
            Err(_) => anyhow::bail!("node {node} did not answer in 5 s (is it running?)"),
        };
        if let Some(e) = reply.error {
            eprintln!("error: {e}");
            return Ok(exit::ERROR);
        }
        for line in reply.text.lines() {
            out.write_all(program_text(line, timestamps).as_bytes())?;
        }
        out.flush()?;
        let more = reply.next < reply.size;
        from = reply.next;
        if more {
            continue;
        }
        if !follow {
            return Ok(exit::OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = super::shutdown_signal() => return Ok(exit::OK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_become_what_the_program_wrote() {
        let f = "2026-12-01T15:00:00.123456789Z stdout F hello world";
        assert_eq!(program_text(f, false), "hello world\n");
        assert_eq!(
            program_text(f, true),
            "2026-12-01T15:00:00.123456789Z hello world\n"
        );
        let p = "2026-12-01T15:00:00Z stderr P part";
        assert_eq!(program_text(p, false), "part");
        assert_eq!(program_text("not cri", false), "not cri\n");
    }
}
