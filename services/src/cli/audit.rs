//! `bulkhead audit verify|checkpoint|status`, `backup` and `restore`: the log proved from
//! its start, checkpoints kept outside NATS, and copies of the log that verify before they
//! are written back.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use async_nats::HeaderMap;
use bulkhead_actors::audit::Report;
use bulkhead_actors::signing::SIG_HEADER;
use bulkhead_schemas::policy::Checkpoint;
use bulkhead_schemas::subjects;
use serde::{Deserialize, Serialize};

use super::args::AuditAction;
use super::exit;
use crate::audit::{CheckpointFile, RawMsg, latest_checkpoint, read_all, replay};
use crate::bus::{Bus, Topology};

fn checkpoints(files: &[PathBuf]) -> anyhow::Result<Vec<Checkpoint>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?;
            let file: CheckpointFile = serde_json::from_str(&text)?;
            let (cp, _key) = file
                .open()
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            Ok(cp)
        })
        .collect()
}

/// Prints a report; the exit code says whether the log is sound.
fn print(report: &Report, json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "{} messages through sequence {}, running hash {}; {} checkpoint(s) matched",
            report.messages, report.through_seq, report.hash, report.checkpoints_matched
        );
        match &report.first {
            None => println!("the log verifies: no finding"),
            Some(f) => println!(
                "{} finding(s); the first bad sequence is {}: {} ({})",
                report.findings, f.seq, f.code, f.reason
            ),
        }
    }
    Ok(if report.first.is_none() {
        exit::OK
    } else {
        exit::ERROR
    })
}

pub async fn run(bus: &Bus, action: AuditAction) -> anyhow::Result<i32> {
    match action {
        AuditAction::Verify {
            checkpoints: files,
            json,
        } => {
            let expected = checkpoints(&files)?;
            let admins = bus.identity()?.creds.admins.clone();
            let (msgs, last) = read_all(bus).await?;
            print(&replay(&admins, &msgs, last, &expected), json)
        }
        AuditAction::Checkpoint { file } => {
            let Some(cp) = latest_checkpoint(bus).await? else {
                anyhow::bail!("the log holds no checkpoint yet (the query API writes them)");
            };
            let (inner, key) = cp.open()?;
            std::fs::write(&file, serde_json::to_string_pretty(&cp)?)?;
            println!(
                "checkpoint through sequence {} ({} messages, hash {}) signed by {key}: {}",
                inner.seq,
                inner.messages,
                inner.hash,
                file.display()
            );
            Ok(exit::OK)
        }
        AuditAction::Status { json } => {
            let reply = bus
                .client
                .request(subjects::API_AUDIT_STATUS, Vec::new().into())
                .await
                .map_err(|e| anyhow::anyhow!("asking the query API: {e}"))?;
            let report: Report = serde_json::from_slice(&reply.payload)?;
            print(&report, json)
        }
    }
}

/// The first line of a backup file.
#[derive(Serialize, Deserialize)]
struct BackupHeader {
    bulkhead_backup: u32,
    last_seq: u64,
    messages: u64,
    hash: String,
}

/// `bulkhead backup FILE`: every message as stored, one JSON line each, after a header.
pub async fn backup(bus: &Bus, file: &Path) -> anyhow::Result<i32> {
    let (msgs, last) = read_all(bus).await?;
    let admins = bus.identity()?.creds.admins.clone();
    let report = replay(&admins, &msgs, last, &[]);
    let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
    let header = BackupHeader {
        bulkhead_backup: 1,
        last_seq: last,
        messages: report.messages,
        hash: report.hash.clone(),
    };
    writeln!(out, "{}", serde_json::to_string(&header)?)?;
    for m in &msgs {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
    }
    out.flush()?;
    println!(
        "{} messages through sequence {} to {} (running hash {})",
        report.messages,
        last,
        file.display(),
        report.hash
    );
    if let Some(f) = &report.first {
        eprintln!(
            "warning: the log does not verify; first bad sequence {}: {} ({})",
            f.seq, f.code, f.reason
        );
    }
    Ok(exit::OK)
}

/// `bulkhead restore FILE`: verifies the backup (and the checkpoints given), then writes
/// it, message by message at its own sequence, into an empty log.
pub async fn restore(bus: &Bus, file: &Path, files: &[PathBuf]) -> anyhow::Result<i32> {
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let mut lines = reader.lines();
    let header: BackupHeader = serde_json::from_str(
        &lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("an empty backup"))??,
    )?;
    let msgs = lines
        .map(|l| Ok(serde_json::from_str::<RawMsg>(&l?)?))
        .collect::<anyhow::Result<Vec<RawMsg>>>()?;
    let admins = bus.identity()?.creds.admins.clone();
    let report = replay(&admins, &msgs, header.last_seq, &checkpoints(files)?);
    if let Some(f) = &report.first {
        anyhow::bail!(
            "the backup does not verify; nothing restored. First bad sequence {}: {} ({})",
            f.seq,
            f.code,
            f.reason
        );
    }
    if report.hash != header.hash {
        anyhow::bail!(
            "the backup is not the log its header describes (running hash differs); nothing restored"
        );
    }
    bus.ensure(&Topology::default()).await?;
    let mut stream = bus.stream(subjects::EVT_STREAM).await?;
    let state = stream.info().await?.state.clone();
    anyhow::ensure!(
        state.messages == 0 && state.last_sequence == 0,
        "the log holds {} messages already: restore writes into an empty log only (start \
         nats-server with an empty store, then `bulkhead setup` is not needed: restore)",
        state.messages
    );
    for m in &msgs {
        let mut h = HeaderMap::new();
        if let Some(p) = &m.proof {
            h.insert(SIG_HEADER, p.as_str());
        }
        h.insert(
            "Nats-Expected-Last-Sequence",
            m.seq.saturating_sub(1).to_string().as_str(),
        );
        bus.publish_stored(m.subject.clone(), h, m.payload.clone().into_bytes().into())
            .await
            .map_err(|f| anyhow::anyhow!("restoring sequence {}: {f}", m.seq))?;
    }
    let (back, last) = read_all(bus).await?;
    let again = replay(&admins, &back, last, &[]);
    anyhow::ensure!(
        again.hash == report.hash,
        "the restored log's running hash differs from the backup's"
    );
    println!(
        "restored {} messages through sequence {}; the log verifies (running hash {})",
        again.messages, again.through_seq, again.hash
    );
    Ok(exit::OK)
}
