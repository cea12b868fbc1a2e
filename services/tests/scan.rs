//! `bulkhead scan` against real images in a loopback registry (built offline by
//! `scripts/cri-env.sh` from Debian and Alpine package databases, in layers where a later
//! one removes packages) and OSV advisories in the real OSV format (`tests/osv/`); scan
//! workers on a real nats-server sharing the layer cache and taking over dead jobs.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bulkhead_schemas::event::{Event, EventBody, ScanCompleted};
use bulkhead_schemas::scan::{LayerSource, ScanJob};
use bulkhead_schemas::subjects;
use common::*;
use futures::StreamExt;

const OSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/osv");

fn registry() -> String {
    std::env::var("BULKHEAD_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!(
            "BULKHEAD_TEST_REGISTRY is not set: run ./scripts/test.sh, or \
             `eval \"$(scripts/cri-env.sh start /tmp/bulkhead-cri)\"` first"
        )
    })
}

/// Runs `bulkhead scan --json`; returns the exit code and the report.
fn scan(image: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["scan", "--json", "--db", OSV])
        .args(extra)
        .arg(format!("{}/bulkhead/{image}", registry()))
        .output()
        .expect("bulkhead runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn findings(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["verdict"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["advisory"].as_str().unwrap().to_owned(),
                f["package"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn debian_image_findings_skip_packages_a_later_layer_removed() {
    for tag in ["debian-vuln:1", "debian-vuln:zstd"] {
        let (code, report, stderr) = scan(tag, &["--fail-on", "high"]);
        // openssl is vulnerable (CVSS 7.5 → high). zlib was removed by a rewritten status
        // file, curl by a whiteout, and glibc is already fixed: no findings for them.
        assert_eq!(
            findings(&report),
            [(
                "DEBIAN-CVE-2023-5678".to_owned(),
                "openssl".to_owned(),
                "high".to_owned()
            )],
            "{tag}: {stderr}"
        );
        let f = &report["verdict"]["findings"][0];
        assert_eq!(f["installed"], "3.0.11-1~deb12u2");
        assert_eq!(f["fixed"], "3.0.13-1~deb12u1");
        assert_eq!(report["verdict"]["ecosystem"], "Debian:12");
        assert_eq!(report["verdict"]["packages"], 3);
        assert_eq!(report["layers"].as_array().unwrap().len(), 2);
        assert_eq!(code, 6, "--fail-on high with a high finding");
        assert!(stderr.contains("2 layers"), "{stderr}");
    }
}

#[test]
fn an_image_index_resolves_to_this_platform_and_digests_are_checked() {
    // debian-multi:1 is an OCI index: this machine's platform → the Debian image, linux/s390x
    // → the Alpine one.
    let (_, plain, _) = scan("debian-vuln:1", &[]);
    let (code, multi, stderr) = scan("debian-multi:1", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(multi["verdict"]["ecosystem"], "Debian:12", "{stderr}");
    assert_eq!(findings(&multi), findings(&plain));
    let digest = plain["digest"].as_str().expect("digest");
    assert_eq!(
        multi["digest"], digest,
        "the platform manifest, not the index"
    );
    // By digest: fetched and checked against it.
    let (code, pinned, stderr) = scan(&format!("debian-vuln@{digest}"), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(pinned["digest"], digest);
}

#[test]
fn alpine_image_uses_origins_ignores_withdrawn_and_last_affected_bounds() {
    let (code, report, stderr) = scan("alpine-vuln:1", &["--fail-on", "high"]);
    // busybox is vulnerable; libcrypto3 (origin openssl) was removed by the second layer;
    // musl is past last_affected; the withdrawn busybox advisory is ignored.
    assert_eq!(
        findings(&report),
        [(
            "ALPINE-CVE-2023-42366".to_owned(),
            "busybox".to_owned(),
            "medium".to_owned()
        )],
        "{stderr}"
    );
    assert_eq!(report["verdict"]["ecosystem"], "Alpine:v3.19");
    assert_eq!(report["verdict"]["counts"]["medium"], 1);
    assert_eq!(code, 0, "the worst finding is below --fail-on high");
}

#[test]
fn a_missing_image_is_a_clear_error() {
    let (code, _, stderr) = scan("no-such-image:1", &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no-such-image") && stderr.contains("404"),
        "{stderr}"
    );
}

fn image(name: &str) -> String {
    format!("{}/bulkhead/{name}", registry())
}

/// Starts a scan worker process.
fn scanner(env: &mut Env, id: &str, vars: &[(&str, &str)]) -> u32 {
    let reg = registry();
    let args = ["scanner", "--db", OSV, "--id", id, "--registries", &reg];
    env.spawn_env(id, &args, vars)
}

async fn wait_members(env: &Env, n: usize) {
    wait_until(
        &format!("{n} scan workers"),
        Duration::from_secs(30),
        async || env.scan_workers().await >= n,
    )
    .await;
    // Each worker rebuilds its ring every second: let both see both.
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

async fn queue(env: &Env, id: &str, image: &str) {
    let job = ScanJob {
        id: id.into(),
        image: image.into(),
    };
    env.bus
        .js
        .publish(
            subjects::SCAN_JOBS,
            serde_json::to_vec(&job).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Waits for the `scan_completed` events of these jobs.
async fn completions(
    sub: &mut async_nats::Subscriber,
    jobs: &[&str],
) -> BTreeMap<String, ScanCompleted> {
    let mut out = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < jobs.len() {
        let m = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no scan_completed for all of {jobs:?}; got {out:?}"))
            .unwrap();
        let ev = Event::parse(&m.payload).unwrap();
        if let EventBody::ScanCompleted(c) = ev.body
            && jobs.contains(&c.job.as_str())
        {
            out.insert(c.job.clone(), c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_layers_are_inventoried_once_across_workers_even_at_the_same_moment() {
    let mut env = env().await;
    scanner(&mut env, "scan-a", &[]);
    scanner(&mut env, "scan-b", &[]);
    wait_members(&env, 2).await;
    let mut events = env.bus.client.subscribe(subjects::EVT_SCANS).await.unwrap();
    // Two images on the same two base layers, queued together: each worker takes one.
    let (a, b) = (image("debian-vuln:1"), image("debian-app:1"));
    tokio::join!(queue(&env, "j1", &a), queue(&env, "j2", &b));
    let done = completions(&mut events, &["j1", "j2"]).await;
    assert_ne!(done["j1"].worker, done["j2"].worker, "one job per worker");

    let mut computed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for c in done.values() {
        assert_eq!(c.error, None, "{c:?}");
        let v = c.verdict.as_ref().unwrap();
        assert_eq!(v.findings.len(), 1, "{v:?}");
        assert_eq!(v.findings[0].advisory, "DEBIAN-CVE-2023-5678");
        for l in &c.layers {
            *seen.entry(&l.diff_id).or_default() += 1;
            if l.source == LayerSource::Computed {
                *computed.entry(&l.diff_id).or_default() += 1;
            }
        }
    }
    let shared: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(d, _)| *d)
        .collect();
    assert_eq!(
        shared.len(),
        2,
        "the base layers appear in both scans: {seen:?}"
    );
    assert_eq!(seen.len(), 3);
    for d in seen.keys() {
        assert_eq!(
            computed.get(d),
            Some(&1),
            "{d} inventoried once in the cluster: {done:?}"
        );
    }

    // A rescan reads nothing: every layer comes from its owner's memory.
    queue(&env, "j3", &a).await;
    let again = completions(&mut events, &["j3"]).await;
    let sources: Vec<LayerSource> = again["j3"].layers.iter().map(|l| l.source).collect();
    assert_eq!(sources, [LayerSource::Memory, LayerSource::Memory]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_dies_mid_scan_is_finished_by_another() {
    let mut env = env().await;
    let slow = scanner(
        &mut env,
        "scan-slow",
        &[("BULKHEAD_SCAN_LAYER_DELAY_MS", "4000")],
    );
    wait_members(&env, 1).await;
    let mut progress = env
        .bus
        .client
        .subscribe(subjects::scan_progress("jk"))
        .await
        .unwrap();
    let mut events = env.bus.client.subscribe(subjects::EVT_SCANS).await.unwrap();
    queue(&env, "jk", &image("alpine-vuln:1")).await;
    let first = tokio::time::timeout(Duration::from_secs(30), progress.next())
        .await
        .expect("the slow worker starts the job")
        .unwrap();
    assert!(String::from_utf8_lossy(&first.payload).contains("scan-slow"));
    env.sigkill(slow);
    scanner(&mut env, "scan-rescue", &[]);
    let done = completions(&mut events, &["jk"]).await;
    let c = &done["jk"];
    assert_eq!(c.worker, "scan-rescue");
    assert_eq!(c.error, None);
    assert_eq!(
        c.verdict.as_ref().unwrap().findings[0].advisory,
        "ALPINE-CVE-2023-42366"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulkhead_scan_without_a_db_asks_the_workers_and_prints_a_findings_table() {
    let mut env = env().await;
    scanner(&mut env, "cli-worker", &[]);
    wait_members(&env, 1).await;
    let out = env
        .cli()
        .args(["scan", "--fail-on", "high"])
        .arg(image("debian-vuln:1"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(6),
        "--fail-on high: {stdout}{stderr}"
    );
    // Progress per layer from the worker, then the table.
    assert!(
        stderr.contains("queued") && stderr.matches("layer ").count() >= 2,
        "{stderr}"
    );
    assert!(stdout.contains("Debian GNU/Linux 12"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.contains("DEBIAN-CVE-2023-5678"))
        .unwrap_or_else(|| panic!("a row for the finding: {stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "high",
            "DEBIAN-CVE-2023-5678",
            "openssl",
            "3.0.11-1~deb12u2",
            "3.0.13-1~deb12u1"
        ]
    );
}

fn submit(env: &Env, id: &str, image: &str, trust: &str) {
    let spec = serde_json::json!({
        "id": id, "image": image, "trust": trust, "runtime_class": "gvisor",
        "memory_mb": 64, "cpu_millicores": 100,
    });
    env.natspy_pub(SUBMIT, spec.to_string().as_bytes(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_rejects_a_vulnerable_image_and_async_quarantines_one() {
    let mut env = env().await;
    env.spawn(
        "up",
        &[
            "up",
            "--classes",
            "runc,gvisor",
            "--heartbeat-ms",
            "200",
            "--scan-db",
            OSV,
            "--scan-registries",
            &registry(),
        ],
    );
    // untrusted → gate: openssl (high) keeps the Debian image out; the Alpine image's
    // worst finding is medium, under the default threshold (high), so it runs.
    submit(&env, "gated-bad", &image("debian-vuln:1"), "untrusted");
    submit(&env, "gated-ok", &image("alpine-vuln:1"), "untrusted");
    // busybox alone: no OS package database, so no verdict on its packages. A gate does not
    // take that for clean.
    let unjudged = std::env::var("BULKHEAD_TEST_PULL_IMAGE").expect("the CRI test environment");
    submit(&env, "gated-unjudged", &unjudged, "untrusted");
    // multi_tenant → async: starts at once, is stopped when the verdict comes.
    submit(&env, "tenant", &image("debian-app:1"), "multi_tenant");
    let long = Duration::from_secs(60);
    env.wait_for("the verdicts to act", long, |by| {
        by.get("gated-bad").is_some_and(|k| k.contains(&"rejected"))
            && by
                .get("gated-unjudged")
                .is_some_and(|k| k.contains(&"rejected"))
            && by.get("gated-ok").is_some_and(|k| k.contains(&"started"))
            && by.get("tenant").is_some_and(|k| k.contains(&"stopped"))
    })
    .await;
    let by = env.kinds_by_workload().await;
    assert_eq!(
        by["gated-bad"],
        ["accepted", "scan_requested", "scan_completed", "rejected"]
    );
    assert_eq!(
        by["gated-ok"],
        [
            "accepted",
            "scan_requested",
            "scan_completed",
            "scheduled",
            "started"
        ]
    );
    let t = &by["tenant"];
    assert_eq!(t[..2], ["accepted", "scan_requested"]);
    assert!(
        t.contains(&"started") && t.ends_with(&["stop_requested", "stopped"]),
        "{t:?}"
    );

    let get = |id: &str| -> serde_json::Value {
        serde_json::from_str(&env.natspy_req(GET, id).unwrap()).unwrap()
    };
    let bad = get("gated-bad");
    assert_eq!(bad["state"], "rejected");
    let reason = bad["reason"].as_str().unwrap();
    assert!(
        reason.contains("DEBIAN-CVE-2023-5678") && reason.contains("openssl"),
        "{reason}"
    );
    assert_eq!(bad["scan"]["worst"], "high");
    let unjudged = get("gated-unjudged");
    let reason = unjudged["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not be judged: no os-release"),
        "{reason}"
    );
    assert_eq!(get("gated-ok")["scan"]["worst"], "medium");
    assert_eq!(get("tenant")["state"], "stopped");
    let i = t
        .iter()
        .position(|k| *k == "quarantined")
        .expect("quarantined");
    assert_eq!(t[i + 1], "stop_requested", "{t:?}");
    let q = get("tenant")["quarantine"].as_str().unwrap().to_owned();
    assert!(q.starts_with("stopped: ") && q.contains("openssl"), "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_quarantine_moves_a_running_workload_to_a_stronger_class() {
    let mut env = env().await;
    env.spawn(
        "up",
        &[
            "up",
            "--classes",
            "runc,gvisor,kata",
            "--heartbeat-ms",
            "200",
            "--scan-db",
            OSV,
            "--scan-registries",
            &registry(),
            "--scan-quarantine",
            "kata",
        ],
    );
    // (Running first: a verdict that came before the node would move nothing.)
    env.wait_ready("node").await;
    // Two replicas in gvisor, each stopped and placed again in kata; one already in kata
    // stays where it is.
    let spec = serde_json::json!({
        "id": "mover", "image": image("debian-app:1"), "trust": "multi_tenant",
        "runtime_class": "gvisor", "replicas": 2, "memory_mb": 64, "cpu_millicores": 100,
    });
    env.natspy_pub(SUBMIT, spec.to_string().as_bytes(), None);
    let mut stays = spec.clone();
    stays["id"] = "stayer".into();
    stays["runtime_class"] = "kata".into();
    stays["replicas"] = 1.into();
    env.natspy_pub(SUBMIT, stays.to_string().as_bytes(), None);
    env.wait_for("the move", Duration::from_secs(60), |by| {
        by.get("mover").is_some_and(|k| {
            k.iter()
                .skip_while(|k| **k != "quarantined")
                .filter(|k| **k == "started")
                .count()
                == 2
        }) && by.get("stayer").is_some_and(|k| k.contains(&"quarantined"))
    })
    .await;
    let events: Vec<Event> = env
        .events(&subjects::workload_events(&key("mover")))
        .await
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    let q = events
        .iter()
        .position(|e| e.kind() == "quarantined")
        .unwrap();
    let EventBody::Quarantined(qe) = &events[q].body else {
        unreachable!()
    };
    assert_eq!(
        (
            qe.action.as_str(),
            qe.from.as_str(),
            qe.to.map(|c| c.as_str())
        ),
        ("move", "gvisor", Some("kata"))
    );
    assert!(qe.reason.contains("openssl"), "{}", qe.reason);
    // Before: two copies in gvisor started. After: each replica's copy stops first, then
    // it is scheduled in kata and starts; nothing else.
    let before = &events[..q];
    assert_eq!(
        before.iter().filter(|e| e.kind() == "started").count(),
        2,
        "{:?}",
        before.iter().map(Event::kind).collect::<Vec<_>>()
    );
    for replica in 0..2u32 {
        let after: Vec<&str> = events[q + 1..]
            .iter()
            .filter(|e| match &e.body {
                EventBody::Stopped(s) => s.replica == replica,
                EventBody::Scheduled(s) => s.replica == replica,
                EventBody::Started(s) => s.replica == replica,
                _ => true,
            })
            .map(Event::kind)
            .collect();
        assert_eq!(
            after,
            ["stopped", "scheduled", "started"],
            "replica {replica}"
        );
    }
    for e in &events[q + 1..] {
        if let EventBody::Scheduled(s) = &e.body {
            assert_eq!(s.runtime_class.as_str(), "kata", "{s:?}");
        }
    }
    let get = |id: &str| -> serde_json::Value {
        serde_json::from_str(&env.natspy_req(GET, id).unwrap()).unwrap()
    };
    let view = get("mover");
    assert_eq!(view["state"], "running");
    assert_eq!(view["spec"]["runtime_class"], "kata");
    assert!(
        view["quarantine"]
            .as_str()
            .unwrap()
            .starts_with("moved from gvisor to kata: "),
        "{view}"
    );
    // Submitted once the verdict is known: admitted straight into kata.
    let mut late = spec.clone();
    late["id"] = "late".into();
    late["replicas"] = 1.into();
    env.natspy_pub(SUBMIT, late.to_string().as_bytes(), None);
    env.wait_for("the late one to start", Duration::from_secs(30), |by| {
        by.get("late").is_some_and(|k| k.contains(&"started"))
    })
    .await;
    let late: Vec<Event> = env
        .events(&subjects::workload_events(&key("late")))
        .await
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    assert_eq!(
        late.iter().map(Event::kind).collect::<Vec<_>>(),
        [
            "accepted",
            "scan_completed",
            "quarantined",
            "scheduled",
            "started"
        ]
    );
    let EventBody::Scheduled(s) = &late[3].body else {
        unreachable!()
    };
    assert_eq!(s.runtime_class.as_str(), "kata");
    // Already in kata: left running, marked.
    let kinds: Vec<&str> = env
        .events(&subjects::workload_events(&key("stayer")))
        .await
        .iter()
        .map(|(_, _, e)| e.kind())
        .collect();
    assert!(
        !kinds.contains(&"stopped") && !kinds.contains(&"stop_requested"),
        "{kinds:?}"
    );
    let view = get("stayer");
    assert_eq!(view["state"], "running", "{view}");
    assert!(
        view["quarantine"]
            .as_str()
            .unwrap()
            .starts_with("left running in kata: "),
        "{view}"
    );
}

fn bulkhead(env: &Env, args: &[&str]) -> String {
    let out = env.cli().args(args).output().expect("bulkhead runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_use_the_imported_database_and_pick_up_a_new_one() {
    let mut env = env().await;
    // 8 files, one of them withdrawn.
    let said = bulkhead(&env, &["vulndb", "import", OSV]);
    assert!(said.contains("imported 7 advisories"), "{said}");
    let reg = registry();
    env.spawn(
        "scanner",
        &["scanner", "--id", "shared-db", "--registries", &reg],
    );
    wait_members(&env, 1).await;
    let mut events = env.bus.client.subscribe(subjects::EVT_SCANS).await.unwrap();
    let alpine = image("alpine-vuln:1");
    queue(&env, "v1", &alpine).await;
    let done = completions(&mut events, &["v1"]).await;
    assert_eq!(done["v1"].verdict.as_ref().unwrap().findings.len(), 1);

    // A database without the busybox advisory: the next job matches against it.
    let d = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(OSV).unwrap() {
        let p = f.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().contains("42366") {
            std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let said = bulkhead(&env, &["vulndb", "import", &d.path().display().to_string()]);
    assert!(said.contains("imported 6 advisories"), "{said}");
    queue(&env, "v2", &alpine).await;
    let done = completions(&mut events, &["v2"]).await;
    assert!(
        done["v2"].verdict.as_ref().unwrap().findings.is_empty(),
        "{done:?}"
    );
}

/// Trivy cannot be installed on this machine (no Debian package, no binary downloads), so
/// this stands in for it: a script named as the fake it is, printing a report in Trivy's
/// JSON format, and recording how it was called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trivy_backend_is_run_and_its_report_becomes_the_verdict() {
    let mut env = env().await;
    let fake = env.dir.path().join("fake-trivy");
    let calls = env.dir.path().join("fake-trivy.calls");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncat <<'EOF'\n{}\nEOF\n",
            calls.display(),
            r#"{"SchemaVersion":2,"Metadata":{"OS":{"Family":"debian","Name":"12.5"}},"Results":[{"Packages":[{"Name":"libssl3"}],"Vulnerabilities":[{"VulnerabilityID":"CVE-2024-0727","PkgName":"libssl3","InstalledVersion":"3.0.11-1~deb12u2","FixedVersion":"3.0.13-1~deb12u1","Severity":"HIGH","Title":"openssl: PKCS12"}]}]}"#
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&fake, perm).unwrap();
    let fake_s = fake.display().to_string();
    env.spawn(
        "scanner",
        &[
            "scanner",
            "--id",
            "trivy-1",
            "--trivy",
            &fake_s,
            "--trivy-server",
            "http://trivy.example:4954",
            "--registries",
            &registry(),
        ],
    );
    wait_members(&env, 1).await;
    let mut events = env.bus.client.subscribe(subjects::EVT_SCANS).await.unwrap();
    let img = image("debian-vuln:1");
    queue(&env, "t1", &img).await;
    let done = completions(&mut events, &["t1"]).await;
    let c = &done["t1"];
    assert_eq!(c.error, None);
    assert!(
        c.digest.starts_with("sha256:"),
        "resolved through the registry: {c:?}"
    );
    let v = c.verdict.as_ref().unwrap();
    assert_eq!(v.findings.len(), 1);
    assert_eq!(v.findings[0].advisory, "CVE-2024-0727");
    assert_eq!(v.ecosystem.as_deref(), Some("Debian:12"));
    let called = std::fs::read_to_string(&calls).unwrap();
    assert!(
        called.contains("image --format json")
            && called.contains("--server http://trivy.example:4954")
            && called.contains("--insecure")
            && called.trim_end().ends_with(&format!(
                "{}@{}",
                img.rsplit_once(':').unwrap().0,
                c.digest
            )),
        "Trivy reads the manifest that was resolved, by digest: {called}"
    );
}

#[test]
fn a_registry_that_asks_for_credentials_gets_them() {
    let reg = std::env::var("BULKHEAD_TEST_AUTH_REGISTRY").expect("the CRI test environment");
    let creds = std::env::var("BULKHEAD_TEST_AUTH").expect("the CRI test environment");
    let image = format!("{reg}/bulkhead/alpine-vuln:1");
    let run = |auth: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        cmd.args(["scan", "--json", "--db", OSV, &image]);
        cmd.env_remove("BULKHEAD_REGISTRY_AUTH");
        if let Some(a) = auth {
            cmd.env("BULKHEAD_REGISTRY_AUTH", a);
        }
        cmd.output().expect("bulkhead runs")
    };
    let anonymous = run(None);
    assert_eq!(anonymous.status.code(), Some(1));
    let said = String::from_utf8_lossy(&anonymous.stderr);
    assert!(said.contains("asks for a user and password"), "{said}");
    let wrong = run(Some(&format!("{reg}=scanuser:wrong")));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    // Credentials for another registry are not offered to this one; unscoped ones are refused.
    let elsewhere = run(Some(&format!("127.0.0.1:1={creds}")));
    let said = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(said.contains("asks for a user and password"), "{said}");
    let unscoped = run(Some(&creds));
    assert_eq!(unscoped.status.code(), Some(1));
    let said = String::from_utf8_lossy(&unscoped.stderr);
    assert!(said.contains("HOST=user:password"), "{said}");
    let ok = run(Some(&format!("{reg}={creds}")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        report["verdict"]["findings"][0]["advisory"],
        "ALPINE-CVE-2023-42366"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vulndb_sync_downloads_an_osv_zip() {
    let env = env().await;
    // An OSV all.zip served over HTTP on loopback (python's http.server).
    let web = env.dir.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    let zip = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile, pathlib; z = zipfile.ZipFile(sys.argv[1], 'w'); \
             [z.write(p, p.name) for p in pathlib.Path(sys.argv[2]).glob('*.json')]; z.close()",
        ])
        .arg(web.join("all.zip"))
        .arg(OSV)
        .status()
        .unwrap();
    assert!(zip.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&web)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/all.zip");
    let mut said = String::new();
    for _ in 0..50 {
        let out = env.cli().args(["vulndb", "sync", &url]).output().unwrap();
        said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // the server is starting
    }
    let missing = env
        .cli()
        .args(["vulndb", "sync"])
        .arg(format!("http://127.0.0.1:{port}/nothing.zip"))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(said.contains("imported 7 advisories"), "{said}");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}

#[test]
fn a_registry_that_wants_a_bearer_token_gets_one_from_its_token_server() {
    // docker-registry with `auth.token`: /v2/ answers 401 with a Bearer challenge naming
    // the token server (scripts/token-server.py), which wants the user and password.
    let reg = std::env::var("BULKHEAD_TEST_TOKEN_REGISTRY").expect("the CRI test environment");
    let log = std::env::var("BULKHEAD_TEST_TOKEN_LOG").expect("the CRI test environment");
    let creds = std::env::var("BULKHEAD_TEST_AUTH").expect("the CRI test environment");
    let image = format!("{reg}/bulkhead/alpine-vuln:1");
    let issued = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("repository:bulkhead/alpine-vuln:pull"))
            .count()
    };
    let run = |auth: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        cmd.args(["scan", "--json", "--db", OSV, &image]);
        cmd.env_remove("BULKHEAD_REGISTRY_AUTH");
        if let Some(a) = auth {
            cmd.env("BULKHEAD_REGISTRY_AUTH", a);
        }
        cmd.output().expect("bulkhead runs")
    };
    let before = issued();
    let anonymous = run(None);
    assert_eq!(anonymous.status.code(), Some(1));
    let said = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        said.contains("401") && said.contains("BULKHEAD_REGISTRY_AUTH"),
        "{said}"
    );
    let wrong = run(Some(&format!("{reg}=scanuser:wrong")));
    assert_eq!(wrong.status.code(), Some(1));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("the credentials were refused"), "{said}");
    // The token service of a registry gets that registry's credentials only.
    let elsewhere = run(Some(&format!("127.0.0.1:1={creds}")));
    let said = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(said.contains("it wants a user and password"), "{said}");
    assert_eq!(
        issued(),
        before,
        "no token for wrong or missing credentials"
    );
    let ok = run(Some(&format!("{reg}={creds}")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(issued() > before, "the scan fetched a pull token");
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        report["verdict"]["findings"][0]["advisory"],
        "ALPINE-CVE-2023-42366"
    );
}

/// A registry that is down: the error names the registry's URL and the root cause, each once
/// (it used to end at "error sending request for url …").
#[test]
fn a_registry_that_is_down_is_named_with_its_cause_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["scan", "--db", OSV, &format!("127.0.0.1:{port}/app:1")])
        .output()
        .expect("bulkhead runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(!err.contains("error sending request"), "{err}");
}
