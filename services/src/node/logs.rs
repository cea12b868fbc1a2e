//! A workload's output, served by the node that ran it: requests on
//! `bulkhead.logs.<tenant>.<node>` (a service the nodes' account exports to the tenants'; a
//! tenant may ask under its own name only, so the server scopes every request to its own
//! workloads) read `<log_dir>/<tenant>/<id>/<replica>.log`, as the CRI runtime wrote it, from
//! a byte offset, whole lines, at most 1 MiB an answer. A sim node keeps no output and says so.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bulkhead_schemas::node::{LogsReply, LogsRequest};
use bulkhead_schemas::spec::MAX_REPLICAS;
use bulkhead_schemas::subjects;
use futures::StreamExt;
use tracing::warn;

use crate::bus::Bus;
use crate::tasks::AbortOnDrop;

/// The most an answer carries.
pub const MAX_ANSWER: u32 = 1024 * 1024;

/// Answers log requests for `node` from `log_dir` (None: a runtime that keeps no output).
pub async fn serve(bus: &Bus, node: &str, log_dir: Option<PathBuf>) -> anyhow::Result<AbortOnDrop> {
    let mut requests = bus.client.subscribe(subjects::logs("*", node)).await?;
    let client = bus.client.clone();
    let node = node.to_owned();
    Ok(AbortOnDrop(tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            let Some(reply_to) = m.reply.clone() else {
                continue;
            };
            let reply = match subjects::logs_tenant(&m.subject) {
                None => refused("not a logs subject".into()),
                Some(tenant) => match &log_dir {
                    None => refused(format!(
                        "node {node} runs the sim runtime, which keeps no output"
                    )),
                    Some(dir) => answer(dir, tenant, &m.payload),
                },
            };
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(e) = client.publish(reply_to, body.into()).await {
                warn!(%node, error = %e, "could not answer a logs request");
            }
        }
    })))
}

fn refused(why: String) -> LogsReply {
    LogsReply {
        error: Some(why),
        ..Default::default()
    }
}

/// The answer to one request of `tenant` (the subject's, which the server vouches for).
pub fn answer(dir: &Path, tenant: &str, payload: &[u8]) -> LogsReply {
    let req: LogsRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => return refused(format!("not a logs request: {e}")),
    };
    if !subjects::is_valid_token(&req.id) {
        return refused(format!(
            "workload id {:?} is not 1-64 of [A-Za-z0-9_-]",
            req.id
        ));
    }
    if req.replica >= MAX_REPLICAS {
        return refused(format!("replica {} is past {MAX_REPLICAS}", req.replica));
    }
    let key = subjects::workload_key(tenant, &req.id);
    let path = super::cri::workload_log_dir(dir, &key).join(super::cri::log_name(req.replica));
    match read_lines(&path, req.from, req.max.min(MAX_ANSWER)) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => refused(format!(
            "no output of {}/{} replica {} on this node (it never ran here, or wrote nothing)",
            tenant, req.id, req.replica
        )),
        Err(e) => refused(format!("reading the log: {e}")),
    }
}

/// Whole lines of `path` from byte `from`, at most `max` bytes (a longer first line whole).
fn read_lines(path: &Path, from: u64, max: u32) -> std::io::Result<LogsReply> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let from = from.min(size);
    f.seek(SeekFrom::Start(from))?;
    let want = usize::try_from(max)
        .unwrap_or(usize::MAX)
        .min(usize::try_from(size - from).unwrap_or(usize::MAX));
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf)?;
    // Up to the last whole line; a first line longer than `max` goes whole, read on.
    let mut end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if end == 0 && !buf.is_empty() {
        let mut rest = Vec::new();
        f.take(u64::from(MAX_ANSWER)).read_to_end(&mut rest)?;
        buf.extend_from_slice(&rest);
        end = buf
            .iter()
            .position(|b| *b == b'\n')
            .map_or(buf.len(), |i| i + 1);
    }
    buf.truncate(end);
    Ok(LogsReply {
        next: from + buf.len() as u64,
        text: String::from_utf8_lossy(&buf).into_owned(),
        size,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_from_an_offset_and_refusals_with_reasons() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("acme").join("web");
        std::fs::create_dir_all(&w).unwrap();
        std::fs::write(w.join("0.log"), "a 1\nb 22\nc 333\n").unwrap();
        let ask = |from: u64, max: u32| {
            let req = serde_json::json!({"id": "web", "replica": 0, "from": from, "max": max});
            answer(d.path(), "acme", req.to_string().as_bytes())
        };
        let r = ask(0, 7);
        assert_eq!((r.text.as_str(), r.next, r.size), ("a 1\n", 4, 15));
        let r = ask(r.next, 64);
        assert_eq!((r.text.as_str(), r.next), ("b 22\nc 333\n", 15));
        assert_eq!(ask(15, 64).text, "", "nothing new");
        assert_eq!(ask(0, 2).text, "a 1\n", "a long first line goes whole");
        // Another tenant's name finds nothing; a path in the id is refused.
        let other = answer(d.path(), "evil", br#"{"id":"web"}"#);
        assert!(other.error.unwrap().contains("no output"));
        let bad = answer(d.path(), "acme", br#"{"id":"../acme/web"}"#);
        assert!(bad.error.unwrap().contains("is not 1-64"));
    }
}
