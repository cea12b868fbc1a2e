//! The scan pipeline against hostile references, servers and layers, with real scan
//! workers on a real nats-server: internal addresses refused (after DNS, and on
//! redirects), no byte of a server's answer in an error, registries outside the
//! allowlist refused, and a layer bomb refused with the worker under its memory bound.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/osv");
const SECRET: &str = "SECRET-admin-token-7f3a";

/// A hostile HTTP server on `host`: every request answers `status` with a secret in its
/// body (and a `Location` for 302). Returns its port and the count of requests it got.
async fn hostile(host: &str, status: u16, location: Option<String>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let body = format!("{{\"errors\":[{{\"message\":\"{SECRET}\"}}]}}");
                let extra = location
                    .map(|l| format!("Location: {l}\r\n"))
                    .unwrap_or_default();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

/// `bulkhead scan IMAGE` through the workers: the error it reports (it fails).
fn scan_error(env: &Env, image: &str) -> String {
    let out = env
        .cli()
        .args(["scan", "--timeout", "60", image])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    text
}

async fn one_worker(env: &Env) {
    wait_until("a scan worker", Duration::from_secs(30), async || {
        env.scan_workers().await == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_bodies_and_unlisted_registries_never_reach_a_scan() {
    let mut env = env().await;
    let (internal, internal_hits) = hostile("127.0.0.1", 403, None).await;
    // A redirect from a listed registry to another loopback address.
    let (target, target_hits) = hostile("127.0.0.2", 200, None).await;
    let (redirector, _) = hostile(
        "127.0.0.1",
        302,
        Some(format!("http://127.0.0.2:{target}/internal/admin")),
    )
    .await;

    // A worker with no allowlist: no private address at all.
    let pid = env.spawn("open", &["scanner", "--db", OSV, "--id", "open"]);
    one_worker(&env).await;
    let said = scan_error(&env, &format!("127.0.0.1:{internal}/internal/admin:1"));
    assert!(said.contains("private, loopback or link-local"), "{said}");
    assert!(!said.contains(SECRET), "{said}");
    // A name that resolves to loopback is refused after resolution.
    let said = scan_error(&env, &format!("localhost:{internal}/internal/admin:1"));
    assert!(said.contains("private, loopback or link-local"), "{said}");
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "no request reached the internal server"
    );
    env.sigkill(pid);
    wait_until(
        "the open worker to expire",
        Duration::from_secs(30),
        async || env.scan_workers().await == 0,
    )
    .await;

    // A worker whose allowlist names the two servers on 127.0.0.1.
    let listed = format!("127.0.0.1:{internal},127.0.0.1:{redirector}");
    env.spawn(
        "listed",
        &[
            "scanner",
            "--db",
            OSV,
            "--id",
            "listed",
            "--registries",
            &listed,
        ],
    );
    one_worker(&env).await;
    let said = scan_error(&env, &format!("127.0.0.1:{internal}/internal/admin:1"));
    assert!(said.contains("403"), "the status is said: {said}");
    assert!(!said.contains(SECRET), "no byte of the body: {said}");
    assert!(internal_hits.load(Ordering::SeqCst) > 0);
    let said = scan_error(&env, &format!("127.0.0.1:{redirector}/app:1"));
    assert!(said.contains("private, loopback or link-local"), "{said}");
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
    let said = scan_error(&env, "registry.example:5000/app:1");
    assert!(
        said.contains("not on this scan worker's allowlist"),
        "{said}"
    );
    let log = env.log("listed") + &env.log("open");
    assert!(!log.contains(SECRET), "no secret in the workers' logs");
}

/// Pushes a one-layer image to the test registry (the registry's upload API), with the
/// diffID given (the bomb is refused long before a diffID is checked).
async fn push(registry: &str, repo: &str, tag: &str, layer: Vec<u8>, diff_id: &str) {
    bulkhead::scan::registry::install_crypto();
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2/{repo}");
    let put_blob = async |body: Vec<u8>| -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        let started = http
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status().as_u16(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{registry}{location}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let done = http
            .put(format!("{url}{sep}digest={digest}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(done.status().as_u16(), 201, "{digest}");
        digest
    };
    let layer_size = layer.len();
    let layer_digest = put_blob(layer).await;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string()
    .into_bytes();
    let config_size = config.len();
    let config_digest = put_blob(config).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    });
    let put = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
}

/// A tar header block (GNU format) for `name` of `size` bytes and type `kind`.
fn header(name: &[u8], size: u64, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    h[100..107].copy_from_slice(b"0000644");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// The bomb: gzip members, each 16 whiteouts under GNU long names of 60,000 bytes (about
/// 1 MB decompressed, 2 KB compressed), repeated: about 2 MB of layer, 1 GB of tar.
fn bomb() -> Vec<u8> {
    let mut plain = Vec::new();
    for i in 0..16 {
        let name = format!("d{i}/.wh.{}", "a".repeat(60_000));
        let mut data = name.into_bytes();
        data.push(0);
        plain.extend(header(b"././@LongLink", data.len() as u64, b'L'));
        let pad = (512 - data.len() % 512) % 512;
        plain.extend(&data);
        plain.extend(vec![0u8; pad]);
        plain.extend(header(b"placeholder", 0, b'0'));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    let member = gz.finish().unwrap();
    member.repeat(1000)
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_bomb_is_refused_with_the_worker_under_its_memory_bound() {
    let registry = std::env::var("BULKHEAD_TEST_REGISTRY")
        .expect("BULKHEAD_TEST_REGISTRY: run ./scripts/test.sh or scripts/cri-env.sh start");
    let layer = bomb();
    let compressed = layer.len();
    push(
        &registry,
        "bulkhead/bomb",
        "1",
        layer,
        &format!("sha256:{}", "0".repeat(64)),
    )
    .await;
    let mut env = env().await;
    let pid = env.spawn(
        "worker",
        &[
            "scanner",
            "--db",
            OSV,
            "--id",
            "bomb",
            "--registries",
            &registry,
        ],
    );
    one_worker(&env).await;
    let before = peak_kib(pid);
    let said = scan_error(&env, &format!("{registry}/bulkhead/bomb:1"));
    assert!(said.contains("whiteouts"), "refused by its cap: {said}");
    let after = peak_kib(pid);
    eprintln!(
        "layer bomb: {} KiB compressed; worker peak {before} KiB before the scan, {after} KiB after",
        compressed / 1024
    );
    assert!(after < 256 * 1024, "peak {after} KiB, over 256 MiB");
}
