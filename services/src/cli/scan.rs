//! `bulkhead scan IMAGE`: here against a database (`--db`), or as a job for the scan
//! workers, with their progress and the verdict; exit 6 with `--fail-on`.

use std::io::Write;
use std::time::Duration;

use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::subjects;
use futures::StreamExt;

use super::exit;
use crate::bus::Bus;
use crate::scan::registry::Credentials;

/// `bulkhead scan IMAGE`: scans an image straight from its registry against an offline
/// OSV database; progress per layer on stderr, then the findings.
pub async fn scan(
    image: &str,
    db_path: &std::path::Path,
    fail_on: Option<bulkhead_scan::severity::Severity>,
    json: bool,
) -> anyhow::Result<i32> {
    use crate::scan::{Progress, registry};
    let image = registry::ImageRef::parse(image)?;
    let loaded = crate::scan::vulndb::load(db_path)?;
    eprintln!(
        "advisories: {} loaded from {} ({} files skipped)",
        loaded.db.len(),
        db_path.display(),
        loaded.skipped
    );
    let reg = registry::Registry::new(
        Credentials::from_env()?,
        crate::scan::egress::Egress::anywhere(),
    )?;
    let report = crate::scan::scan_image(&reg, &image, &loaded.db, |p| match p {
        Progress::Resolved { digest, layers } => {
            eprintln!("{image}: {digest}, {layers} layers")
        }
        Progress::Layer {
            index,
            diff_id,
            packages,
            source,
        } => eprintln!(
            "  layer {index} {}: {packages} packages in the databases ({source:?})",
            diff_id.get(..19).unwrap_or(&diff_id),
        ),
    })
    .await?;
    print_verdict(&report, &report.verdict, json)?;
    Ok(fail_code(&report.verdict, fail_on))
}

/// One line for a scan worker's progress message, as a local scan prints it.
fn progress_line(payload: &[u8]) -> String {
    let Ok(p) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return format!("  {}", String::from_utf8_lossy(payload));
    };
    let s = |k: &str| p[k].as_str().unwrap_or("?").to_owned();
    match p["step"].as_str() {
        Some("started") => format!("worker {} started on {}", s("worker"), s("image")),
        Some("resolved") => format!("{}, {} layers", s("digest"), p["layers"]),
        Some("layer") => {
            let diff_id = s("diff_id");
            format!(
                "  layer {} {}: {} packages in the databases ({}, worker {})",
                p["index"],
                diff_id.get(..19).unwrap_or(&diff_id),
                p["packages"],
                s("source"),
                s("worker")
            )
        }
        _ => format!("  {p}"),
    }
}

fn fail_code(
    v: &bulkhead_schemas::scan::Verdict,
    fail_on: Option<bulkhead_scan::severity::Severity>,
) -> i32 {
    match (fail_on, v.worst()) {
        (Some(limit), Some(worst)) if worst >= limit => exit::VULNERABLE,
        _ => exit::OK,
    }
}

fn print_verdict(
    report: &impl serde::Serialize,
    v: &bulkhead_schemas::scan::Verdict,
    json: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} ({}): {} packages, {} findings",
            if v.os.is_empty() { "unknown OS" } else { &v.os },
            v.ecosystem.as_deref().unwrap_or("-"),
            v.packages,
            v.findings.len()
        )?;
        if let Some(n) = &v.note {
            writeln!(out, "note: {n}")?;
        }
        let counts: Vec<String> = bulkhead_scan::severity::Severity::ALL
            .iter()
            .filter_map(|s| v.counts.get(s).map(|n| format!("{s} {n}")))
            .collect();
        if !counts.is_empty() {
            writeln!(out, "{}", counts.join(", "))?;
            writeln!(
                out,
                "{:<9} {:<28} {:<20} {:<26} FIXED",
                "SEVERITY", "ADVISORY", "PACKAGE", "INSTALLED"
            )?;
        }
        for f in &v.findings {
            writeln!(
                out,
                "{:<9} {:<28} {:<20} {:<26} {}",
                f.severity,
                f.advisory,
                f.package,
                f.installed,
                f.fixed.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

/// What `scan` says when no worker could take its job.
const NO_WORKER: &str = "no scan worker is running (a worker registers once it has an \
     advisory database): start one with `bulkhead scanner`, or `bulkhead up` (which runs one), \
     import a database with `bulkhead vulndb import PATH`, or scan here with --db PATH";

/// Scan workers alive now; none when they cannot be listed.
async fn live_workers(scanners: &async_nats::jetstream::kv::Store) -> usize {
    crate::scan::worker::live_workers(scanners)
        .await
        .unwrap_or(0)
}

/// `bulkhead scan IMAGE` without `--db`: a job for the scan workers; shows their progress,
/// then the verdict from the `scan_completed` event.
pub async fn scan_remote(
    bus: &Bus,
    image: &str,
    timeout: Duration,
    fail_on: Option<bulkhead_scan::severity::Severity>,
    json: bool,
) -> anyhow::Result<i32> {
    crate::scan::registry::ImageRef::parse(image)?;
    let scanners = bus.bucket(subjects::SCANNERS_BUCKET).await?;
    if live_workers(&scanners).await == 0 {
        eprintln!("{NO_WORKER}");
        return Ok(exit::ERROR);
    }
    let job = bulkhead_schemas::scan::ScanJob {
        id: uuid::Uuid::now_v7().to_string(),
        image: image.to_owned(),
    };
    let mut progress = bus
        .client
        .subscribe(subjects::scan_progress(&job.id))
        .await?;
    let mut done = bus.client.subscribe(subjects::EVT_SCANS).await?;
    // The job id as message id, as the contract says: a repeated publish queues one job.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", job.id.as_str());
    let queued = bus
        .js
        .publish_with_headers(subjects::SCAN_JOBS, h, serde_json::to_vec(&job)?.into())
        .await?
        .await?;
    eprintln!("scan job {} queued for {image}", job.id);
    // A job nobody will take is taken back, not left to run some day.
    let withdraw = || async {
        if let Ok(s) = bus.js.get_stream(subjects::SCAN_STREAM).await {
            let _ = s.delete_message(queued.sequence).await;
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut look = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                withdraw().await;
                eprintln!("no verdict after {} s; the job is withdrawn (are scan workers running? `bulkhead scanner`)", timeout.as_secs());
                return Ok(exit::TIMEOUT);
            }
            _ = look.tick() => {
                if live_workers(&scanners).await == 0 {
                    withdraw().await;
                    eprintln!("{NO_WORKER}; the job is withdrawn");
                    return Ok(exit::ERROR);
                }
            }
            Some(p) = progress.next() => eprintln!("{}", progress_line(&p.payload)),
            Some(m) = done.next() => {
                let Ok(ev) = Event::parse(&m.payload) else { continue };
                let EventBody::ScanCompleted(c) = ev.body else { continue };
                if c.job != job.id {
                    continue;
                }
                // The worker sent its progress before the verdict; the two subscriptions
                // are read apart, so print what is still waiting first.
                while let Some(Some(p)) = futures::FutureExt::now_or_never(progress.next()) {
                    eprintln!("{}", progress_line(&p.payload));
                }
                if let Some(e) = &c.error {
                    eprintln!("scan failed on {}: {e}", c.worker);
                    return Ok(exit::FAILED);
                }
                let v = c.verdict.clone().unwrap_or_default();
                print_verdict(&c, &v, json)?;
                return Ok(fail_code(&v, fail_on));
            }
        }
    }
}

/// `bulkhead vulndb import PATH | sync URL`: the advisory database every scan worker uses.
pub async fn vulndb(bus: &Bus, cmd: super::args::VulndbCmd) -> anyhow::Result<i32> {
    use super::args::VulndbCmd;
    let zip = match cmd {
        VulndbCmd::Import { path } => crate::scan::vulndb::pack(&path)?,
        VulndbCmd::Sync { url } => {
            crate::scan::registry::install_crypto();
            let r = reqwest::get(&url).await?.error_for_status()?;
            r.bytes().await?.to_vec()
        }
    };
    let size = zip.len();
    let loaded = crate::scan::vulndb::store(bus, zip).await?;
    println!(
        "imported {} advisories ({} KiB; {} files skipped); scan workers pick them up at their next job",
        loaded.db.len(),
        size / 1024,
        loaded.skipped
    );
    Ok(exit::OK)
}
