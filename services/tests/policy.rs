//! The policy against a real nats-server with authentication: a tenant's identity decides
//! its trust level, registries and quota; changes take M of N admin approvals; a replayed
//! or unauthorised change does not count; `policy test` checks example submissions.

mod common;

use std::ffi::OsStr;
use std::time::Duration;

use async_nats::HeaderMap;
use bulkhead::auth::policy::{approve, directory, propose};
use bulkhead_actors::signing::{SIG_HEADER, Signer};
use bulkhead_schemas::event::EventBody;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::policy::Policy;
use bulkhead_schemas::subjects;

use common::*;

const LONG: Duration = Duration::from_secs(30);

/// Submits `spec` as tenant `tenant` with its own credential (`bulkhead submit`, signed).
fn submit_as(env: &Env, tenant: &str, spec: &serde_json::Value) {
    let f = env
        .dir
        .path()
        .join(format!("{}.json", spec["id"].as_str().unwrap()));
    std::fs::write(&f, spec.to_string()).unwrap();
    let creds = env.creds_path(Role::Tenant, tenant);
    let tenant = OsStr::new(tenant);
    env.cli_ok([
        OsStr::new("--creds"),
        creds.as_os_str(),
        OsStr::new("--tenant"),
        tenant,
        OsStr::new("submit"),
        OsStr::new("--no-follow"),
        f.as_os_str(),
    ]);
}

/// The policy in force, as every reader reads it from the log.
async fn current(env: &Env) -> Policy {
    directory(&env.bus).await.unwrap().policy.current().clone()
}

/// The rejection of workload `tenant/id` (code, reason), once the log has one.
async fn rejection(env: &Env, tenant: &str, id: &str) -> Option<(String, String)> {
    let evs = env
        .events(&subjects::workload_events(&subjects::workload_key(
            tenant, id,
        )))
        .await;
    evs.iter().find_map(|(_, _, e)| match &e.body {
        EventBody::Rejected(r) => Some((
            serde_json::to_value(r.rejection.code)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned(),
            r.rejection.reason.clone(),
        )),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_policy_fixes_its_trust_registries_and_quota() {
    let mut env = env().await;
    // Untrusted work is gated on a scan; there is no scan worker here.
    env.spawn(
        "scheduler",
        &["scheduler", "--scan-policy", "untrusted=off"],
    );
    env.spawn(
        "n1",
        &[
            "node",
            "--name",
            "n1",
            "--classes",
            "gvisor,runc",
            "--heartbeat-ms",
            "200",
        ],
    );
    env.cli_ok(["tenant", "add", "acme"]);
    assert_eq!(
        current(&env).await.version,
        1,
        "setup wrote the first policy"
    );

    let file = env.dir.path().join("policy.toml");
    std::fs::write(
        &file,
        r#"
[default_tenant]
trust = "untrusted"

[tenants.default]
trust = "internal"

[tenants.acme]
trust = "untrusted"
registries = ["localhost"]
quota = { workloads = 1 }
"#,
    )
    .unwrap();
    env.cli_ok([
        OsStr::new("policy"),
        OsStr::new("propose"),
        file.as_os_str(),
    ]);
    let p = current(&env).await;
    assert_eq!(p.version, 2, "one admin of one: in force at once");
    assert!(p.tenants["acme"].quota.workloads == Some(1));

    let mut internal = spec(Some("asks-internal"));
    internal["trust"] = "internal".into();
    submit_as(&env, "acme", &internal);
    let mut elsewhere = spec(Some("other-registry"));
    elsewhere["image"] = "registry.example:5000/team/app:1".into();
    elsewhere["runtime_class"] = "gvisor".into();
    submit_as(&env, "acme", &elsewhere);
    let mut fits = spec(Some("fits"));
    fits["runtime_class"] = "gvisor".into();
    submit_as(&env, "acme", &fits);
    wait_until("the fitting workload to run", LONG, async || {
        env.events(&subjects::workload_events("acme/fits"))
            .await
            .iter()
            .any(|(_, _, e)| e.kind() == "started")
    })
    .await;
    let mut more = fits.clone();
    more["id"] = "over-quota".into();
    submit_as(&env, "acme", &more);
    // Runc is the host kernel: an untrusted tenant may not have it even when it asks for
    // nothing.
    let mut runc = spec(Some("runc"));
    runc["image"] = "localhost/busybox:1".into();
    submit_as(&env, "acme", &runc);

    for (id, rule) in [
        ("asks-internal", "policy v2 tenants.acme.trust"),
        ("other-registry", "policy v2 tenants.acme.registries"),
        ("over-quota", "policy v2 tenants.acme.quota.workloads"),
        ("runc", "policy v2 tenants.acme.trust"),
    ] {
        let mut got = None;
        wait_until(&format!("{id} to be rejected"), LONG, async || {
            got = rejection(&env, "acme", id).await;
            got.is_some()
        })
        .await;
        let (code, reason) = got.unwrap();
        assert_eq!(code, "policy", "{id}: {reason}");
        assert!(reason.contains(rule), "{id}: {reason}");
    }
    // The admitted spec carries the trust level the tenant's identity gave it.
    let fits = env.events(&subjects::workload_events("acme/fits")).await;
    let EventBody::Accepted(a) = &fits[0].2.body else {
        panic!("{:?}", fits[0].2)
    };
    assert_eq!(
        a.spec.trust,
        Some(bulkhead_schemas::spec::TrustLevel::Untrusted)
    );
    // Tenant default keeps the internal level its policy gives it.
    env.natspy_pub(SUBMIT, spec(Some("d1")).to_string().as_bytes(), None);
    env.wait_for("default's workload to run", LONG, |by| {
        by.get("d1").is_some_and(|k| k.contains(&"started"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_takes_m_of_n_admins_and_an_old_one_is_not_replayed() {
    let env = env().await;
    let admin = env
        .data
        .creds(Role::Admin, "admin")
        .unwrap()
        .signer()
        .unwrap();
    // b is an admin enrolled with the CLI; c a key alone (what counts is its signature).
    let out = env.cli_ok(["admin", "add", "bob"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("propose a policy"));
    let b = env
        .data
        .creds(Role::Admin, "bob")
        .unwrap()
        .signer()
        .unwrap();
    let c = Signer::generate();
    let keys =
        |s: &[&Signer]| -> Vec<String> { s.iter().map(|s| s.public_key().to_owned()).collect() };

    // v2: three admins, two of whom must approve; the one admin of v1 adopts it alone.
    let v1 = current(&env).await;
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.replaces = Some(v1.hash());
    v2.admins.keys = keys(&[&admin, &b, &c]);
    v2.admins.threshold = 2;
    propose(&env.bus, &admin, v2.clone()).await.unwrap();
    assert_eq!(current(&env).await, v2);

    // v3 drops c. Proposed by b: 1 of 2, nothing changes.
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.replaces = Some(v2.hash());
    v3.admins.keys = keys(&[&admin, &b]);
    let h3 = propose(&env.bus, &b, v3.clone()).await.unwrap();
    assert_eq!(
        current(&env).await.version,
        2,
        "M-1 approvals do not take effect"
    );
    let show = env.cli().args(["policy", "show"]).output().unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("pending: v3") && text.contains("1 of 2"),
        "{text}"
    );
    // The admin approves with the CLI: 2 of 2.
    let out = env.cli_ok(["policy", "sign", &h3[..12]]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("policy v3 is in force"));
    assert_eq!(current(&env).await, v3);

    // v4: c, dropped by v3, approves; it does not count. b's approval does.
    let mut v4 = v3.clone();
    v4.version = 4;
    v4.replaces = Some(v3.hash());
    v4.tenants.insert(
        "acme".into(),
        bulkhead_schemas::policy::TenantPolicy::untrusted(),
    );
    let h4 = propose(&env.bus, &admin, v4.clone()).await.unwrap();
    approve(&env.bus, &c, 4, &h4).await.unwrap();
    assert_eq!(
        current(&env).await.version,
        3,
        "a dropped admin's approval does not count"
    );
    approve(&env.bus, &b, 4, &h4).await.unwrap();
    assert_eq!(current(&env).await, v4);

    // The old policy v2, its proposal and approval copied back into the log as stored:
    // refused (it does not replace the policy in force), v4 stays.
    let stored = env.events("bulkhead.evt.sys.policy.v2.>").await;
    assert_eq!(stored.len(), 2, "v2's proposal and approval");
    let raw = bulkhead::audit::read_all(&env.bus).await.unwrap().0;
    for (seq, _, e) in &stored {
        let m = raw.iter().find(|m| m.seq == *seq).unwrap();
        let mut h = HeaderMap::new();
        h.insert(SIG_HEADER, m.proof.clone().unwrap().as_str());
        env.bus
            .publish_stored(m.subject.clone(), h, m.payload.clone().into_bytes().into())
            .await
            .unwrap();
        assert!(e.kind().starts_with("policy_"));
    }
    let d = directory(&env.bus).await.unwrap();
    assert_eq!(d.policy.current(), &v4, "a replayed old policy is refused");
    // `audit verify` names the first of what did not count (c's approval after it was
    // dropped) and counts the two replays.
    let out = env
        .cli()
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: bulkhead_actors::audit::Report = serde_json::from_slice(&out.stdout).unwrap();
    let first = report.first.unwrap();
    assert_eq!(first.code, "unknown_writer", "{first:?}");
    assert!(first.reason.contains("revoked"), "{first:?}");
    assert_eq!(report.findings, 3, "c's approval and the two replays");
}

#[test]
fn policy_test_passes_on_its_examples_and_names_a_wrong_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let examples = |expect_quota: &str| {
        format!(
            r#"
[policy.tenants.acme]
trust = "multi_tenant"
runtime_classes = ["gvisor", "kata"]
quota = {{ workloads = 2, memory_mb = 512 }}

[policy.default_tenant]
trust = "untrusted"

[usage.acme]
workloads = 1
memory_mb = 128

[[example]]
name = "acme on gvisor"
tenant = "acme"
spec = {{ image = "localhost/app:1", memory_mb = 256, cpu_millicores = 100, runtime_class = "gvisor" }}
expect = "admit"

[[example]]
name = "acme asks for internal"
tenant = "acme"
spec = {{ image = "localhost/app:1", memory_mb = 64, cpu_millicores = 100, runtime_class = "gvisor", trust = "internal" }}
expect = "reject"
code = "policy"
rule = "tenants.acme.trust"

[[example]]
name = "acme past its quota"
tenant = "acme"
spec = {{ image = "localhost/app:1", memory_mb = 64, cpu_millicores = 100, runtime_class = "kata" }}
expect = "{expect_quota}"
rule = "quota.workloads"

[[example]]
name = "a stranger on runc"
tenant = "stranger"
spec = {{ image = "localhost/app:1", memory_mb = 64, cpu_millicores = 100 }}
expect = "reject"
rule = "default_tenant.trust"

[[example]]
name = "not a spec"
spec = {{ image = "localhost/app:1" }}
expect = "reject"
code = "invalid_field"
"#
        )
    };
    let run = |text: String| {
        let f = dir.path().join("examples.toml");
        std::fs::write(&f, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["policy", "test"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let good = run(examples("reject"));
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(text.contains("5 examples, 0 failed"), "{text}");
    // The same file expecting the third to be admitted: the quota (the first example,
    // admitted, counts against it) says otherwise.
    let bad = run(examples("admit"));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  acme past its quota"), "{text}");
    assert!(text.contains("1 failed: acme past its quota"), "{text}");
}
