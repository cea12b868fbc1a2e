//! The `scan-cache` scenario: CPU time of a cold scan against a rescan of the same image,
//! then N images that share their base layers, scanned by two workers sharing the layer
//! cache. Images are pushed to a loopback registry through the OCI distribution API; the
//! base layers are real: this machine's Debian package database and a slice of its
//! shared libraries.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead::natsd::Sync;
use bulkhead_schemas::identity::Role;

use crate::bench::Bench;
use bulkhead::scan::worker::{self, WorkerConfig};
use bulkhead_scan::verdict::AdvisoryDb;
use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::scan::{LayerSource, ScanJob};
use bulkhead_schemas::subjects;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Scan CPU cold vs rescan, and N images sharing base layers (needs a loopback
/// registry: scripts/cri-env.sh starts one).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, env = "BULKHEAD_TEST_REGISTRY")]
    pub registry: String,
    #[arg(long, default_value_t = 100)]
    pub images: usize,
    /// MiB of real files in the big base layer.
    #[arg(long, default_value_t = 40)]
    pub base_mib: u64,
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

struct Blob {
    bytes: Vec<u8>,
    digest: String,
    diff_id: String,
}

fn layer(files: &[(String, Vec<u8>)]) -> anyhow::Result<Blob> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, &data[..])?;
    }
    let tar = b.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    let bytes = gz.finish()?;
    Ok(Blob {
        digest: sha(&bytes),
        diff_id: sha(&tar),
        bytes,
    })
}

/// The base layers: the OS (os-release and the real dpkg status) and a big one of real
/// shared libraries.
fn base_layers(base_mib: u64) -> anyhow::Result<Vec<Blob>> {
    let os = layer(&[
        (
            "usr/lib/os-release".into(),
            std::fs::read("/etc/os-release")
                .unwrap_or_else(|_| b"ID=debian\nVERSION_ID=\"12\"\n".to_vec()),
        ),
        (
            "var/lib/dpkg/status".into(),
            std::fs::read("/var/lib/dpkg/status")?,
        ),
    ])?;
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut entries: Vec<_> = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if total >= base_mib * 1024 * 1024 {
            break;
        }
        let data = std::fs::read(e.path())?;
        total += data.len() as u64;
        files.push((
            format!(
                "usr/lib/x86_64-linux-gnu/{}",
                e.file_name().to_string_lossy()
            ),
            data,
        ));
    }
    Ok(vec![os, layer(&files)?])
}

async fn push_blob(
    http: &reqwest::Client,
    reg: &str,
    repo: &str,
    b: &[u8],
    digest: &str,
) -> anyhow::Result<()> {
    let r = http
        .post(format!("http://{reg}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "upload start: {}", r.status());
    let loc = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| anyhow::anyhow!("no upload location"))?
        .to_owned();
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("http://{reg}{loc}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{url}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(b.to_vec())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "upload {digest}: {}", r.status());
    Ok(())
}

async fn push_image(
    http: &reqwest::Client,
    reg: &str,
    repo: &str,
    layers: &[&Blob],
) -> anyhow::Result<()> {
    for l in layers {
        push_blob(http, reg, repo, &l.bytes, &l.digest).await?;
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
    }))?;
    let config_digest = sha(&config);
    push_blob(http, reg, repo, &config, &config_digest).await?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.digest, "size": l.bytes.len()})).collect::<Vec<_>>(),
    }))?;
    let r = http
        .put(format!("http://{reg}/v2/{repo}/manifests/1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "manifest {repo}: {}", r.status());
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    bulkhead::scan::registry::install_crypto();
    let http = reqwest::Client::new();
    let t = Instant::now();
    let base = base_layers(args.base_mib)?;
    let run_id = format!("{:x}", std::process::id());
    let mut names = Vec::new();
    for i in 0..args.images {
        let app = layer(&[(
            format!("srv/app-{i}/build.txt"),
            format!("application {i} of run {run_id}\n")
                .repeat(2000)
                .into_bytes(),
        )])?;
        let repo = format!("loadtest-{run_id}/app-{i}");
        push_image(&http, &args.registry, &repo, &[&base[0], &base[1], &app]).await?;
        names.push(format!("{}/{repo}:1", args.registry));
    }
    println!(
        "pushed {} images of 3 layers (base: os + dpkg status {} KiB, libraries {} MiB compressed) in {:.1} s",
        args.images,
        base[0].bytes.len() / 1024,
        base[1].bytes.len() / (1024 * 1024),
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let bench = Bench::start(dir.path(), Sync::Default).await?;
    let bus = bench.admin().clone();
    let db = Arc::new(worker::Advisories::fixed(AdvisoryDb::default()));
    let mut workers = Vec::new();
    for id in ["w1", "w2"] {
        let scanner = bench.connect(Role::Scanner, "scanner").await?;
        workers.push(worker::start(&scanner, WorkerConfig::new(id.into()), db.clone()).await?);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await; // both on both rings
    let mut events = bus.client.subscribe(subjects::EVT_SCANS).await?;

    let mut n = 0;
    let mut scan = |images: Vec<String>| {
        let bus = bus.clone();
        let jobs: Vec<ScanJob> = images
            .into_iter()
            .map(|image| {
                n += 1;
                ScanJob {
                    id: format!("job-{n}"),
                    image,
                }
            })
            .collect();
        async move {
            for j in &jobs {
                bus.js
                    .publish(subjects::SCAN_JOBS, serde_json::to_vec(j)?.into())
                    .await?
                    .await?;
            }
            anyhow::Ok(jobs)
        }
    };
    let mut wait = async |jobs: Vec<ScanJob>| -> anyhow::Result<BTreeMap<LayerSource, usize>> {
        let mut left: std::collections::HashSet<String> = jobs.into_iter().map(|j| j.id).collect();
        let mut sources = BTreeMap::new();
        while !left.is_empty() {
            let m = tokio::time::timeout(Duration::from_secs(300), events.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("events ended"))?;
            let ev = Event::parse(&m.payload)?;
            if let EventBody::ScanCompleted(c) = ev.body
                && left.remove(&c.job)
            {
                anyhow::ensure!(c.error.is_none(), "scan failed: {:?}", c.error);
                for l in c.layers {
                    *sources.entry(l.source).or_default() += 1;
                }
            }
        }
        Ok(sources)
    };

    let (c0, t0) = (crate::procfs::cpu_secs("self"), Instant::now());
    let jobs = scan(vec![names[0].clone()]).await?;
    let cold_src = wait(jobs).await?;
    let (cold_cpu, cold_wall) = (crate::procfs::cpu_secs("self") - c0, t0.elapsed());
    let (c1, t1) = (crate::procfs::cpu_secs("self"), Instant::now());
    let jobs = scan(vec![names[0].clone()]).await?;
    let warm_src = wait(jobs).await?;
    let (warm_cpu, warm_wall) = (crate::procfs::cpu_secs("self") - c1, t1.elapsed());
    println!(
        "\n## cold scan vs rescan of one image\n| | CPU s | wall s | layer sources |\n|---|---|---|---|\n| cold | {cold_cpu:.2} | {:.2} | {cold_src:?} |\n| rescan | {warm_cpu:.2} | {:.2} | {warm_src:?} |\nrescan saves {:.1}% of the cold scan's CPU",
        cold_wall.as_secs_f64(),
        warm_wall.as_secs_f64(),
        100.0 * (1.0 - warm_cpu / cold_cpu.max(1e-9))
    );

    let (c2, t2) = (crate::procfs::cpu_secs("self"), Instant::now());
    let rest: Vec<String> = names[1..].to_vec();
    let count = rest.len();
    let jobs = scan(rest).await?;
    let src = wait(jobs).await?;
    let (cpu, wall) = (crate::procfs::cpu_secs("self") - c2, t2.elapsed());
    let total: usize = src.values().sum();
    let computed = src.get(&LayerSource::Computed).copied().unwrap_or(0);
    // Without the cache every layer would be read: the cold scan's CPU per image.
    let uncached = cold_cpu * count as f64;
    println!(
        "\n## {count} more images sharing their two base layers, two workers\nlayers {total}: {src:?}\nlayer hit ratio {:.1}% ({} of {total} not read)\nCPU {cpu:.2} s in {:.2} s wall, against ~{uncached:.2} s for {count} cold scans: {:.1}% saved",
        100.0 * (total - computed) as f64 / total.max(1) as f64,
        total - computed,
        wall.as_secs_f64(),
        100.0 * (1.0 - cpu / uncached.max(1e-9))
    );
    drop(workers);
    drop(bench);
    Ok(())
}
