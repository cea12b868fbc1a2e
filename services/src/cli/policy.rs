//! `bulkhead policy`: show the policy in force, propose a change and approve one (M of N
//! admins), and `policy test`: example submissions through admission, test-first.

use std::collections::HashMap;
use std::path::Path;

use bulkhead_actors::policy::{Usage, admit};
use bulkhead_schemas::policy::Policy;
use bulkhead_schemas::spec::parse_submission;
use serde::Deserialize;

use super::args::PolicyAction;
use super::exit;
use crate::auth::policy as log_policy;
use crate::bus::Bus;

/// A JSON or TOML (by extension) document as JSON.
fn load(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let value = if path.extension().is_some_and(|e| e == "toml") {
        serde_json::to_value(toml::from_str::<toml::Value>(&text)?)?
    } else {
        serde_json::from_str(&text)?
    };
    Ok(value)
}

/// A policy document with what it leaves out filled from `base`: the next version, the
/// hash it replaces, and the admins.
fn complete(mut doc: serde_json::Value, base: &Policy, base_hash: &str) -> anyhow::Result<Policy> {
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("a policy is an object"))?;
    obj.entry("version").or_insert((base.version + 1).into());
    if base.version > 0 {
        obj.entry("replaces").or_insert(base_hash.into());
    }
    obj.entry("admins")
        .or_insert(serde_json::to_value(&base.admins)?);
    serde_json::from_value(doc).map_err(|e| anyhow::anyhow!("the policy: {e}"))
}

pub async fn run(bus: &Bus, action: PolicyAction) -> anyhow::Result<i32> {
    let signer = &bus.identity()?.signer;
    let d = log_policy::directory(bus).await?;
    let book = &d.policy;
    match action {
        PolicyAction::Show { json } => {
            let pending: Vec<serde_json::Value> = book
                .pending()
                .map(|(hash, p, approvals)| {
                    serde_json::json!({"hash": hash, "version": p.version,
                        "approvals": approvals, "policy": p})
                })
                .collect();
            if json {
                let out = serde_json::json!({"version": book.current().version,
                    "hash": book.hash(), "adopted_at": book.adopted_at(),
                    "policy": book.current(), "pending": pending});
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(exit::OK);
            }
            let p = book.current();
            println!(
                "policy v{} (hash {}), in force since sequence {}",
                p.version,
                book.hash(),
                book.adopted_at()
            );
            println!(
                "admins: {} of {}: {}",
                p.admins.threshold,
                p.admins.keys.len(),
                p.admins.keys.join(", ")
            );
            println!("{}", serde_json::to_string_pretty(p)?);
            for (hash, pending, approvals) in book.pending() {
                println!(
                    "pending: v{} {hash}: {} of {} approvals",
                    pending.version,
                    approvals.len(),
                    p.admins.threshold
                );
            }
            Ok(exit::OK)
        }
        PolicyAction::Propose { file } => {
            let policy = complete(load(&file)?, book.current(), book.hash())?;
            if let Some(why) = policy.problem() {
                anyhow::bail!("{why}");
            }
            let version = policy.version;
            let need = book.current().admins.threshold;
            let hash = log_policy::propose(bus, signer, policy).await?;
            println!("proposed policy v{version} {hash} and approved it (1 of {need})");
            if need > 1 {
                println!(
                    "it takes effect when {} more admin(s) run: bulkhead policy sign {}",
                    need - 1,
                    &hash[..16]
                );
            }
            Ok(exit::OK)
        }
        PolicyAction::Sign { hash } => {
            anyhow::ensure!(hash.len() >= 8, "name at least 8 characters of the hash");
            let found: Vec<_> = book
                .pending()
                .filter(|(h, _, _)| h.starts_with(&hash))
                .map(|(h, p, _)| (h.clone(), p.version))
                .collect();
            let [(full, version)] = found.as_slice() else {
                anyhow::bail!(
                    "{} pending proposals match {hash}; `bulkhead policy show` lists them",
                    found.len()
                );
            };
            log_policy::approve(bus, signer, *version, full).await?;
            let after = log_policy::directory(bus).await?;
            if after.policy.current().version == *version {
                println!("approved: policy v{version} is in force");
            } else {
                println!("approved policy v{version} {full}; more approvals are needed");
            }
            Ok(exit::OK)
        }
        PolicyAction::Test { .. } => unreachable!("runs without a connection"),
    }
}

/// A `policy test` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The policy inline…
    #[serde(default)]
    policy: Option<serde_json::Value>,
    /// … or in a file (relative to this one).
    #[serde(default)]
    policy_file: Option<String>,
    /// What tenants' live workloads take before the first example.
    #[serde(default)]
    usage: HashMap<String, UsageDoc>,
    #[serde(rename = "example", alias = "examples")]
    examples: Vec<Example>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct UsageDoc {
    #[serde(default)]
    workloads: u64,
    #[serde(default)]
    replicas: u64,
    #[serde(default)]
    memory_mb: u64,
    #[serde(default)]
    cpu_millicores: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Example {
    name: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    /// The submission (a spec).
    spec: serde_json::Value,
    /// `admit` or `reject`.
    expect: String,
    /// When rejected: the code (`policy`, `invalid_value`, …).
    #[serde(default)]
    code: Option<String>,
    /// When rejected: text the reason must contain (a rule: `tenants.acme.trust`).
    #[serde(default)]
    rule: Option<String>,
}

fn default_tenant() -> String {
    "default".into()
}

/// `bulkhead policy test FILE`: each example through the scheduler's own admission checks
/// (the spec's validation, then the policy), in order: an admitted example counts against
/// its tenant's quota for the next ones.
pub fn test(file: &Path) -> anyhow::Result<i32> {
    let doc: TestFile = serde_json::from_value(load(file)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let policy_doc = match (doc.policy, doc.policy_file) {
        (Some(p), None) => p,
        (None, Some(f)) => load(&file.parent().unwrap_or(Path::new(".")).join(f))?,
        _ => anyhow::bail!("name the policy: `policy` inline or `policy_file`, one of them"),
    };
    let base = Policy::before_any(Vec::new());
    let mut policy = complete(policy_doc, &base, "")?;
    policy.replaces = None;
    let mut usage: HashMap<String, Usage> = doc
        .usage
        .into_iter()
        .map(|(t, u)| {
            let u = Usage {
                workloads: u.workloads,
                replicas: u.replicas,
                memory_mb: u.memory_mb,
                cpu_millicores: u.cpu_millicores,
            };
            (t, u)
        })
        .collect();
    let mut failed = Vec::new();
    for ex in &doc.examples {
        let used = usage.get(&ex.tenant).copied().unwrap_or_default();
        let outcome = parse_submission(ex.spec.to_string().as_bytes())
            .and_then(|spec| admit(&policy, &ex.tenant, spec, &used));
        let got = match &outcome {
            Ok(spec) => {
                usage
                    .entry(ex.tenant.clone())
                    .or_default()
                    .add(Usage::of(spec, spec.replicas));
                "admit".to_owned()
            }
            Err(r) => format!(
                "reject {} ({})",
                serde_json::to_value(r.code)?.as_str().unwrap_or_default(),
                r.reason
            ),
        };
        let ok = match (ex.expect.as_str(), &outcome) {
            ("admit", Ok(_)) => true,
            ("reject", Err(r)) => {
                let code = serde_json::to_value(r.code)?;
                ex.code.as_deref().is_none_or(|c| code == c)
                    && ex.rule.as_deref().is_none_or(|t| r.reason.contains(t))
            }
            ("admit" | "reject", _) => false,
            (other, _) => anyhow::bail!(
                "example {:?}: expect is admit or reject, not {other}",
                ex.name
            ),
        };
        let mut want = ex.expect.clone();
        if let Some(c) = &ex.code {
            want.push_str(&format!(" {c}"));
        }
        if let Some(r) = &ex.rule {
            want.push_str(&format!(" naming {r}"));
        }
        if ok {
            println!("ok    {}: {got}", ex.name);
        } else {
            println!("FAIL  {}: expected {want}, got {got}", ex.name);
            failed.push(ex.name.clone());
        }
    }
    println!(
        "{} examples, {} failed{}",
        doc.examples.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join(", "))
        }
    );
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::ERROR
    })
}
