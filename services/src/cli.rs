//! Client commands of the CLI: submit and follow, get, list, nodes, events, stop.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bulkhead_actors::projection::Projection;
use bulkhead_schemas::api::{ListReply, ListRequest, NodesReply, WorkloadState, WorkloadView};
use bulkhead_schemas::event::{Event, EventBody, hash_bytes};
use bulkhead_schemas::{ids, spec, subjects};
use futures::StreamExt;

use crate::bus::Bus;

/// Exit codes a script can rely on.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const REJECTED: i32 = 2;
    pub const FAILED: i32 = 3;
    pub const TIMEOUT: i32 = 4;
    /// `bulkhead scan --fail-on S`: a finding at or above S.
    pub const VULNERABLE: i32 = 6;
}

/// `bulkhead submit FILE|-`: sends the spec, prints the id, follows it to running or its end.
pub async fn submit(bus: &Bus, file: &str, follow: bool, timeout: Duration) -> anyhow::Result<i32> {
    let raw = if file == "-" {
        let mut s = Vec::new();
        std::io::stdin()
            .read_to_end(&mut s)
            .context("reading the spec from stdin")?;
        s
    } else {
        std::fs::read(file).with_context(|| format!("reading {file}"))?
    };
    let mut spec = match spec::parse_submission(&raw) {
        Ok(s) => s,
        Err(r) => {
            eprintln!("invalid workload spec: {r}");
            return Ok(exit::REJECTED);
        }
    };
    let id = spec.id.get_or_insert_with(ids::new_workload_id).clone();
    let payload = serde_json::to_vec(&spec)?;
    let mut headers = HeaderMap::new();
    // The id makes resubmitting the same spec idempotent.
    headers.insert("Nats-Msg-Id", id.as_str());
    let span = tracing::info_span!("submit", workload = %id);
    if let Some(tp) = bulkhead_actors::trace::traceparent(&span) {
        headers.insert("traceparent", tp.as_str());
    }
    let ack = bus
        .js
        .publish_with_headers(subjects::CMD_SUBMIT, headers, payload.into())
        .await?
        .await
        .context("the command stream did not acknowledge the submission (is the system set up? run `bulkhead up`)")?;
    println!("{id}");
    if ack.duplicate {
        eprintln!("(already submitted: same id within the deduplication window)");
    }
    if !follow {
        return Ok(exit::OK);
    }
    follow_workload(bus, &id, timeout).await
}

/// Follows one workload's events until it runs or ends; prints a progress line.
pub async fn follow_workload(bus: &Bus, id: &str, timeout: Duration) -> anyhow::Result<i32> {
    let stream = bus.js.get_stream(subjects::EVT_STREAM).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subjects::workload_events(id),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut p = Projection::default();
    let tty = std::io::stderr().is_terminal();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let m = match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => anyhow::bail!("following {id}: {e}"),
            Ok(None) => anyhow::bail!("event stream ended"),
            Err(_) => {
                let state = p
                    .get(id)
                    .map(|w| w.state().to_string())
                    .unwrap_or_else(|| "not yet admitted".into());
                eprintln!("\ntimed out after {timeout:?}; {id} is {state}");
                return Ok(exit::TIMEOUT);
            }
        };
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
        let Ok(ev) = Event::parse(&m.payload) else {
            continue;
        };
        let _ = p.apply(seq, hash_bytes(&m.payload), &ev);
        let Some(w) = p.get(id) else { continue };
        let state = w.state();
        let running = w
            .replicas
            .iter()
            .filter(|r| r.state == WorkloadState::Running)
            .count();
        let line = format!(
            "{id}: {state} ({running}/{} running) after {}",
            w.replicas.len(),
            ev.kind()
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
        let done = match state {
            WorkloadState::Running | WorkloadState::Succeeded => Some(exit::OK),
            WorkloadState::Rejected => Some(exit::REJECTED),
            WorkloadState::Failed | WorkloadState::Lost | WorkloadState::Stopped => {
                Some(exit::FAILED)
            }
            _ => None,
        };
        if let Some(code) = done {
            if tty {
                eprintln!();
            }
            if let Some(reason) = w
                .reason
                .as_deref()
                .or_else(|| w.replicas.iter().find_map(|r| r.reason.as_deref()))
            {
                eprintln!("reason: {reason}");
            }
            return Ok(code);
        }
        if let (WorkloadState::Pending, Some(reason)) = (state, w.reason.as_deref()) {
            eprintln!("\npending: {reason}");
        }
    }
}

async fn api_request(
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

pub async fn get(bus: &Bus, id: &str) -> anyhow::Result<i32> {
    match api_request(bus, subjects::API_WORKLOADS_GET, id.as_bytes().to_vec()).await? {
        Ok(body) => {
            let w: WorkloadView = serde_json::from_slice(&body)?;
            println!("{}", serde_json::to_string_pretty(&w)?);
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(exit::ERROR)
        }
    }
}

/// Asks the query API. On a service error, prints it; with `json`, prints the reply.
/// Either way the command is then done: `Err` carries its exit code.
async fn query<T: serde::de::DeserializeOwned + serde::Serialize>(
    bus: &Bus,
    subject: &str,
    payload: Vec<u8>,
    json: bool,
) -> anyhow::Result<Result<T, i32>> {
    let body = match api_request(bus, subject, payload).await? {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Err(exit::ERROR));
        }
    };
    let reply: T = serde_json::from_slice(&body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(Err(exit::OK));
    }
    Ok(Ok(reply))
}

pub async fn list(bus: &Bus, req: ListRequest, json: bool) -> anyhow::Result<i32> {
    let reply: ListReply = match query(
        bus,
        subjects::API_WORKLOADS_LIST,
        serde_json::to_vec(&req)?,
        json,
    )
    .await?
    {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<38} {:<10} {:<9} {:<24} IMAGE",
        "ID", "STATE", "REPLICAS", "NODES"
    )?;
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
        writeln!(
            out,
            "{:<38} {:<10} {:<9} {:<24} {}",
            w.id,
            w.state,
            format!("{running}/{}", w.desired),
            nodes.join(","),
            image
        )?;
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

pub async fn nodes(bus: &Bus, json: bool) -> anyhow::Result<i32> {
    let reply: NodesReply = match query(bus, subjects::API_NODES_LIST, Vec::new(), json).await? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:<14} {:<5} {:<22} {:>16} {:>16} {:>9} {:>8}",
        "NODE",
        "STATUS",
        "RT",
        "CLASSES",
        "MEM MiB used/cap",
        "CPU m used/cap",
        "WORKLOADS",
        "AGE ms"
    )?;
    for n in &reply.nodes {
        let hb = &n.heartbeat;
        let classes: Vec<&str> = hb.runtime_classes.iter().map(|c| c.as_str()).collect();
        writeln!(
            out,
            "{:<20} {:<14} {:<5} {:<22} {:>16} {:>16} {:>9} {:>8}",
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

/// `bulkhead events`: follows the log, one line per event (or raw JSON).
pub async fn events(
    bus: &Bus,
    workload: Option<&str>,
    types: &[String],
    from_start: bool,
    json: bool,
) -> anyhow::Result<i32> {
    for t in types {
        anyhow::ensure!(
            EventBody::KINDS.contains(&t.as_str()),
            "unknown event type {t}; known: {}",
            EventBody::KINDS.join(", ")
        );
    }
    let filter = match workload {
        Some(id) => subjects::workload_events(id),
        None => subjects::EVT_ALL.to_owned(),
    };
    let stream = bus.js.get_stream(subjects::EVT_STREAM).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: if from_start {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = messages.next().await {
        let m = m?;
        let kind = m.subject.rsplit('.').next().unwrap_or_default();
        if !types.is_empty() && !types.iter().any(|t| t == kind) {
            continue;
        }
        if json {
            println!("{}", String::from_utf8_lossy(&m.payload));
            continue;
        }
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
        match Event::parse(&m.payload) {
            Ok(ev) => {
                let body = serde_json::to_value(&ev.body)
                    .ok()
                    .map(|v| v["body"].to_string())
                    .unwrap_or_default();
                println!(
                    "{seq:>8} {} {:<17} {:<38} {} {body}",
                    ev.at,
                    ev.kind(),
                    ev.subject,
                    ev.actor.service
                );
            }
            Err(e) => println!("{seq:>8} (malformed event on {}: {e})", m.subject),
        }
    }
    Ok(exit::OK)
}

pub async fn stop(bus: &Bus, id: &str, grace_secs: Option<u32>) -> anyhow::Result<i32> {
    let payload = serde_json::to_vec(&bulkhead_schemas::command::StopCommand {
        id: id.to_owned(),
        grace_secs,
    })?;
    bus.js
        .publish(subjects::CMD_STOP, payload.into())
        .await?
        .await?;
    println!("stop requested for {id}");
    Ok(exit::OK)
}

/// `bulkhead scale ID N`: publishes a scale command.
pub async fn scale(bus: &Bus, id: &str, replicas: u32) -> anyhow::Result<i32> {
    let max = bulkhead_schemas::spec::MAX_REPLICAS;
    anyhow::ensure!(
        replicas <= max,
        "replicas must be between 0 and {max}, got {replicas}"
    );
    let payload = serde_json::to_vec(&bulkhead_schemas::command::ScaleCommand {
        id: id.to_owned(),
        replicas,
    })?;
    bus.js
        .publish(subjects::CMD_SCALE, payload.into())
        .await?
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
    let payload = serde_json::to_vec(&bulkhead_schemas::command::DrainCommand {
        node: node.to_owned(),
    })?;
    let subject = if drain {
        subjects::CMD_DRAIN
    } else {
        subjects::CMD_UNDRAIN
    };
    bus.js.publish(subject, payload.into()).await?.await?;
    if drain {
        println!(
            "drain of {node} requested: follow it with `bulkhead events --type draining,scheduled,stopped,drained`"
        );
    } else {
        println!("undrain of {node} requested: `bulkhead nodes` shows it ready once it takes work");
    }
    Ok(exit::OK)
}

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
    let reg = registry::Registry::new(registry_credentials()?)?;
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

/// `BULKHEAD_REGISTRY_AUTH=HOST=user:password[,…]`, for registries that ask.
pub fn registry_credentials() -> anyhow::Result<crate::scan::registry::Credentials> {
    use crate::scan::registry::{AUTH_VAR, Credentials};
    match std::env::var(AUTH_VAR) {
        Ok(v) => Credentials::parse(&v).map_err(anyhow::Error::msg),
        Err(_) => Ok(Credentials::default()),
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
    bus.js
        .publish_with_headers(subjects::SCAN_JOBS, h, serde_json::to_vec(&job)?.into())
        .await?
        .await?;
    eprintln!("scan job {} queued for {image}", job.id);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                eprintln!("no verdict after {} s (are scan workers running? `bulkhead scanner --db PATH`)", timeout.as_secs());
                return Ok(exit::TIMEOUT);
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
