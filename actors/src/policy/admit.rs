//! A submission against its tenant's policy: the trust level comes from the tenant (a spec
//! may ask for a stricter one only), then the runtime class, the registry and the quotas.
//! The scheduler's admission calls [`admit`]; so does `bulkhead policy test`.

use bulkhead_schemas::WorkloadSpec;
use bulkhead_schemas::policy::{Policy, SecurityRules};
use bulkhead_schemas::spec::{RejectCode, Rejection, class_for_trust};

/// What a tenant's live workloads take, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub workloads: u64,
    pub replicas: u64,
    pub memory_mb: u64,
    pub cpu_millicores: u64,
}

impl Usage {
    /// What one workload of `replicas` copies of `spec` takes.
    pub fn of(spec: &WorkloadSpec, replicas: u32) -> Usage {
        let r = u64::from(replicas);
        Usage {
            workloads: 1,
            replicas: r,
            memory_mb: spec.memory_mb.saturating_mul(r),
            cpu_millicores: spec.cpu_millicores.saturating_mul(r),
        }
    }

    pub fn add(&mut self, other: Usage) {
        self.workloads = self.workloads.saturating_add(other.workloads);
        self.replicas = self.replicas.saturating_add(other.replicas);
        self.memory_mb = self.memory_mb.saturating_add(other.memory_mb);
        self.cpu_millicores = self.cpu_millicores.saturating_add(other.cpu_millicores);
    }
}

/// `spec`, submitted by `tenant`, with its trust level resolved; or `rejected` with code
/// `policy`, naming the rule (`policy v<version> <tenants.t | default_tenant>.<rule>`).
/// `used` is what the tenant's live workloads already take.
pub fn admit(
    policy: &Policy,
    tenant: &str,
    mut spec: WorkloadSpec,
    used: &Usage,
) -> Result<WorkloadSpec, Rejection> {
    let (rules, source) = policy.tenant(tenant);
    let rule = |name: &str| format!("policy v{} {source}.{name}", policy.version);
    let refuse = |field: &str, name: &str, why: String| {
        Rejection::new(
            RejectCode::Policy,
            Some(field),
            format!("{}: {why}", rule(name)),
        )
    };
    let trust = match spec.trust {
        Some(asked) if asked.rank() > rules.trust.rank() => {
            return Err(refuse(
                "trust",
                "trust",
                format!(
                    "tenant {tenant} is {}; the spec asks for {} (only as strict or stricter)",
                    rules.trust.as_str(),
                    asked.as_str()
                ),
            ));
        }
        Some(asked) => asked,
        None => rules.trust,
    };
    spec.trust = Some(trust);
    class_for_trust(spec.runtime_class, trust)
        .map_err(|r| refuse("runtime_class", "trust", r.reason))?;
    if let Some(classes) = &rules.runtime_classes
        && !classes.contains(&spec.runtime_class)
    {
        let allowed: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
        return Err(refuse(
            "runtime_class",
            "runtime_classes",
            format!(
                "runtime class {} is not among [{}]",
                spec.runtime_class,
                allowed.join(", ")
            ),
        ));
    }
    if let Some(registries) = &rules.registries
        && !registries.iter().any(|r| registry_allows(r, &spec.image))
    {
        return Err(refuse(
            "image",
            "registries",
            format!(
                "image {} comes from {}, not from [{}]",
                spec.image,
                image_registry(&spec.image),
                registries.join(", ")
            ),
        ));
    }
    check_security(&spec, &rules.security, tenant)
        .map_err(|(field, name, why)| refuse(field, &format!("security.{name}"), why))?;
    let mut after = *used;
    after.add(Usage::of(&spec, spec.replicas));
    let q = &rules.quota;
    let over = [
        ("workloads", q.workloads, after.workloads, "workloads"),
        ("replicas", q.replicas, after.replicas, "replicas"),
        ("memory_mb", q.memory_mb, after.memory_mb, "MiB of memory"),
        (
            "cpu_millicores",
            q.cpu_millicores,
            after.cpu_millicores,
            "millicores of CPU",
        ),
    ];
    for (name, limit, total, unit) in over {
        if let Some(limit) = limit
            && total > limit
        {
            return Err(refuse(
                name,
                &format!("quota.{name}"),
                format!("tenant {tenant} would have {total} {unit}; its quota is {limit}"),
            ));
        }
    }
    Ok(spec)
}

/// The spec's `security` against the tenant's rules: (field, rule, why) of the first
/// refusal.
fn check_security(
    spec: &WorkloadSpec,
    rules: &SecurityRules,
    tenant: &str,
) -> Result<(), (&'static str, &'static str, String)> {
    let s = &spec.security;
    if s.host_network && !rules.allow_host_network {
        return Err((
            "security.host_network",
            "allow_host_network",
            format!(
                "tenant {tenant}'s workloads may not use the host's network namespace (every \
                 service on the host would be reachable); drop host_network"
            ),
        ));
    }
    if rules.require_non_root && s.run_as_user.is_none_or(|u| u == 0) {
        return Err((
            "security.run_as_user",
            "require_non_root",
            format!("tenant {tenant}'s workloads must name a run_as_user other than 0"),
        ));
    }
    if rules.require_read_only_rootfs && !s.read_only_rootfs {
        return Err((
            "security.read_only_rootfs",
            "require_read_only_rootfs",
            format!("tenant {tenant}'s workloads must set read_only_rootfs"),
        ));
    }
    if let Some(allowed) = &rules.allowed_capabilities
        && let Some(cap) = s.add_capabilities.iter().find(|c| !allowed.contains(c))
    {
        return Err((
            "security.add_capabilities",
            "allowed_capabilities",
            format!(
                "tenant {tenant}'s workloads may add only [{}], not {cap}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The registry an image reference names (`host[:port]`); `docker.io` for a bare name.
pub fn image_registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The image's repository with its registry (`host/path`), without tag or digest.
fn repository(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    // A tag follows the last ':' after the last '/'.
    let name = match name.rsplit_once('/') {
        Some((head, last)) => format!("{head}/{}", last.split(':').next().unwrap_or(last)),
        None => name.split(':').next().unwrap_or(name).to_owned(),
    };
    let registry = image_registry(image);
    if name.starts_with(&format!("{registry}/")) {
        name
    } else if name.contains('/') {
        format!("{registry}/{name}")
    } else {
        format!("{registry}/library/{name}")
    }
}

/// Whether allowlist entry `entry` (`host[:port]` or `host[:port]/path`) admits `image`.
fn registry_allows(entry: &str, image: &str) -> bool {
    let entry = entry.trim_end_matches('/');
    if !entry.contains('/') {
        return image_registry(image) == entry;
    }
    let repo = repository(image);
    repo == entry || repo.starts_with(&format!("{entry}/"))
}
