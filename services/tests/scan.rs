//! `bulkhead scan` against real images in a loopback registry (built offline by
//! `scripts/cri-env.sh` from Debian and Alpine package databases, in layers where a later
//! one removes packages) and OSV advisories in the real OSV format (`tests/osv/`).

use std::process::Command;

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
        .args(["scan", "--json", "--db"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/osv"))
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
