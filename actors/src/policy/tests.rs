//! The policy's rules and its M-of-N changes, directly.

use bulkhead_schemas::event::{Event, EventBody};
use bulkhead_schemas::policy::{
    Policy, PolicyApproved, PolicyProposed, Quota, SecurityRules, TenantPolicy,
};
use bulkhead_schemas::spec::{RejectCode, TrustLevel, parse_submission};
use bulkhead_schemas::{RuntimeClass, WorkloadSpec};

use super::*;
use crate::signing::{Signer, sign_policy};

fn spec(v: serde_json::Value) -> WorkloadSpec {
    parse_submission(v.to_string().as_bytes()).unwrap()
}

fn base() -> serde_json::Value {
    serde_json::json!({"image": "registry.example:5000/team/app:1", "memory_mb": 100, "cpu_millicores": 10})
}

fn policy_with(tenant: &str, rules: TenantPolicy) -> Policy {
    let mut p = Policy::first(vec!["UADMIN".into()]);
    p.tenants.insert(tenant.into(), rules);
    p
}

#[test]
fn the_tenant_decides_the_trust_level_and_a_spec_may_only_ask_for_stricter() {
    let p = policy_with("acme", TenantPolicy::at(TrustLevel::MultiTenant));
    let mut s = base();
    s["runtime_class"] = "gvisor".into();
    let admitted = admit(&p, "acme", spec(s.clone()), &Usage::default()).unwrap();
    assert_eq!(
        admitted.trust,
        Some(TrustLevel::MultiTenant),
        "the tenant's level"
    );
    s["trust"] = "untrusted".into();
    let admitted = admit(&p, "acme", spec(s.clone()), &Usage::default()).unwrap();
    assert_eq!(
        admitted.trust,
        Some(TrustLevel::Untrusted),
        "stricter is fine"
    );
    s["trust"] = "internal".into();
    let r = admit(&p, "acme", spec(s), &Usage::default()).unwrap_err();
    assert_eq!(r.code, RejectCode::Policy);
    assert_eq!(r.field.as_deref(), Some("trust"));
    assert!(
        r.reason.contains("policy v1 tenants.acme.trust"),
        "{}",
        r.reason
    );
    // A tenant the policy does not name is untrusted: runc (the host kernel) is refused.
    let r = admit(&p, "stranger", spec(base()), &Usage::default()).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("runtime_class"));
    assert!(r.reason.contains("default_tenant.trust"), "{}", r.reason);
}

#[test]
fn classes_registries_and_quotas_refuse_with_their_rule() {
    let rules = TenantPolicy {
        runtime_classes: Some(vec![RuntimeClass::Gvisor]),
        registries: Some(vec!["registry.example:5000/team".into()]),
        quota: Quota {
            workloads: Some(2),
            memory_mb: Some(250),
            ..Quota::default()
        },
        ..TenantPolicy::at(TrustLevel::Internal)
    };
    let p = policy_with("acme", rules);
    let none = Usage::default();
    let r = admit(&p, "acme", spec(base()), &none).unwrap_err();
    assert!(r.reason.contains("runtime_classes"), "{}", r.reason);
    let mut s = base();
    s["runtime_class"] = "gvisor".into();
    assert!(admit(&p, "acme", spec(s.clone()), &none).is_ok());
    for image in [
        "registry.example:5000/other/app:1",
        "registry.example:50001/team/app:1",
        "busybox",
        "registry.example:5000/teamx/app",
    ] {
        s["image"] = image.into();
        let r = admit(&p, "acme", spec(s.clone()), &none).unwrap_err();
        assert!(r.reason.contains("registries"), "{image}: {}", r.reason);
    }
    s["image"] = "registry.example:5000/team/sub/app@sha256:00".into();
    assert!(admit(&p, "acme", spec(s.clone()), &none).is_ok());
    s["image"] = "registry.example:5000/team/app:2".into();
    s["replicas"] = 3.into();
    let r = admit(&p, "acme", spec(s.clone()), &none).unwrap_err();
    assert!(r.reason.contains("quota.memory_mb"), "{}", r.reason);
    assert!(r.reason.contains("300 MiB"), "{}", r.reason);
    s["replicas"] = 1.into();
    let two = Usage {
        workloads: 2,
        ..Usage::default()
    };
    let r = admit(&p, "acme", spec(s), &two).unwrap_err();
    assert!(r.reason.contains("quota.workloads"), "{}", r.reason);
}

#[test]
fn registries_are_told_apart_by_host_and_port() {
    assert_eq!(image_registry("busybox"), "docker.io");
    assert_eq!(image_registry("library/busybox:1"), "docker.io");
    assert_eq!(image_registry("localhost/x"), "localhost");
    assert_eq!(image_registry("127.0.0.1:5000/x/y:1"), "127.0.0.1:5000");
}

fn signer() -> Signer {
    Signer::generate()
}

fn proposed(by: &Signer, policy: &Policy) -> Event {
    let mut e = Event::new(
        "admin",
        &format!("policy/v{}", policy.version),
        None,
        EventBody::PolicyProposed(PolicyProposed {
            policy: policy.clone(),
            hash: policy.hash(),
        }),
    );
    e.actor.key = by.public_key().to_owned();
    e
}

fn approved(by: &Signer, policy: &Policy) -> Event {
    let hash = policy.hash();
    let mut e = Event::new(
        "admin",
        &format!("policy/v{}", policy.version),
        None,
        EventBody::PolicyApproved(PolicyApproved {
            version: policy.version,
            sig: sign_policy(by, &hash),
            hash,
        }),
    );
    e.actor.key = by.public_key().to_owned();
    e
}

/// Applies `ev` as a reader does: refused events do nothing.
fn feed(book: &mut PolicyBook, seq: u64, ev: &Event) -> Result<Option<Adopted>, String> {
    if let Some(why) = book.refuses(&ev.actor.key, ev) {
        return Err(why);
    }
    Ok(book.apply(seq, &ev.actor.key, ev))
}

#[test]
fn a_change_takes_m_of_n_approvals_of_the_admins_in_force() {
    let (a, b, c) = (signer(), signer(), signer());
    let keys =
        |s: &[&Signer]| -> Vec<String> { s.iter().map(|s| s.public_key().to_owned()).collect() };
    let mut book = PolicyBook::new(&keys(&[&a]));
    // Version 1: the anchor admin alone (1 of 1) adopts three admins, two of whom must agree.
    let mut v1 = Policy::first(keys(&[&a, &b, &c]));
    v1.admins.threshold = 2;
    feed(&mut book, 1, &proposed(&a, &v1)).unwrap();
    let adopted = feed(&mut book, 2, &approved(&a, &v1)).unwrap().unwrap();
    assert_eq!(adopted.version, 1);
    assert_eq!(book.current(), &v1);

    // Version 2 drops admin c and makes tenant acme untrusted.
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.replaces = Some(v1.hash());
    v2.admins.keys = keys(&[&a, &b]);
    v2.tenants
        .insert("acme".into(), TenantPolicy::at(TrustLevel::Untrusted));
    feed(&mut book, 3, &proposed(&b, &v2)).unwrap();
    assert_eq!(
        feed(&mut book, 4, &approved(&b, &v2)).unwrap(),
        None,
        "1 of 2"
    );
    assert_eq!(book.current().version, 1, "M-1 approvals change nothing");
    let again = feed(&mut book, 5, &approved(&b, &v2)).unwrap_err();
    assert!(again.contains("already"), "{again}");
    let adopted = feed(&mut book, 6, &approved(&c, &v2)).unwrap().unwrap();
    assert_eq!(adopted.dropped, vec![c.public_key().to_owned()]);
    assert_eq!(book.current().version, 2);

    // c is no admin of v2: its proposal and approvals do not count.
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.replaces = Some(v2.hash());
    v3.admins.threshold = 1;
    let why = feed(&mut book, 7, &proposed(&c, &v3)).unwrap_err();
    assert!(why.contains("not an admin"), "{why}");
    feed(&mut book, 8, &proposed(&a, &v3)).unwrap();
    let why = feed(&mut book, 9, &approved(&c, &v3)).unwrap_err();
    assert!(why.contains("not an admin"), "{why}");
    assert_eq!(book.current().version, 2);

    // An old policy replayed (v1 again, or v2's proposal) is refused.
    let why = feed(&mut book, 10, &proposed(&a, &v1)).unwrap_err();
    assert!(why.contains("not replayed"), "{why}");
    let why = feed(&mut book, 11, &approved(&a, &v2)).unwrap_err();
    assert!(why.contains("not pending"), "{why}");
    // A proposal that names the wrong predecessor, or a forged approval, is refused.
    let mut fork = v3.clone();
    fork.replaces = Some(v1.hash());
    fork.tenants.clear();
    assert!(feed(&mut book, 12, &proposed(&a, &fork)).is_err());
    let mut forged = approved(&b, &v3);
    forged.actor.key = a.public_key().to_owned();
    let why = feed(&mut book, 13, &forged).unwrap_err();
    assert!(why.contains("signature"), "{why}");
}

#[test]
fn a_policy_that_cannot_govern_is_refused() {
    let a = signer();
    let book = PolicyBook::new(&[a.public_key().to_owned()]);
    let mut p = Policy::first(vec![a.public_key().to_owned()]);
    p.admins.threshold = 2;
    let why = book.refuses(a.public_key(), &proposed(&a, &p)).unwrap();
    assert!(why.contains("threshold"), "{why}");
    p.admins.threshold = 0;
    assert!(book.refuses(a.public_key(), &proposed(&a, &p)).is_some());
}

/// Host networking is forbidden unless the tenant's policy allows it; non-root, a read-only
/// root filesystem and the capabilities a spec may add are the policy's to require or limit.
#[test]
fn security_settings_are_the_policys_to_require_or_forbid() {
    let none = Usage::default();
    let open = policy_with("acme", TenantPolicy::at(TrustLevel::Internal));
    let mut s = base();
    s["security"] = serde_json::json!({"host_network": true});
    let r = admit(&open, "acme", spec(s.clone()), &none).unwrap_err();
    assert!(
        r.reason.contains("security.allow_host_network"),
        "{}",
        r.reason
    );
    assert_eq!(r.field.as_deref(), Some("security.host_network"));
    let allowing = policy_with(
        "acme",
        TenantPolicy {
            security: SecurityRules {
                allow_host_network: true,
                ..SecurityRules::default()
            },
            ..TenantPolicy::at(TrustLevel::Internal)
        },
    );
    assert!(admit(&allowing, "acme", spec(s), &none).is_ok());

    let strict = policy_with(
        "acme",
        TenantPolicy {
            security: SecurityRules {
                require_non_root: true,
                require_read_only_rootfs: true,
                allowed_capabilities: Some(vec!["CHOWN".into()]),
                ..SecurityRules::default()
            },
            ..TenantPolicy::at(TrustLevel::Internal)
        },
    );
    let mut s = base();
    for (security, rule) in [
        (serde_json::json!({}), "require_non_root"),
        (serde_json::json!({"run_as_user": 0}), "require_non_root"),
        (
            serde_json::json!({"run_as_user": 1000}),
            "require_read_only_rootfs",
        ),
        (
            serde_json::json!({"run_as_user": 1000, "read_only_rootfs": true,
                               "add_capabilities": ["NET_RAW"]}),
            "allowed_capabilities",
        ),
    ] {
        s["security"] = security.clone();
        let r = admit(&strict, "acme", spec(s.clone()), &none).unwrap_err();
        assert!(r.reason.contains(rule), "{security}: {}", r.reason);
    }
    s["security"] = serde_json::json!({"run_as_user": 1000, "read_only_rootfs": true,
                                       "add_capabilities": ["CHOWN"]});
    assert!(admit(&strict, "acme", spec(s), &none).is_ok());
}
