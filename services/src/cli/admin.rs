//! The admin's commands on identities: `init`, `node add`, `tenant add`, `service add`,
//! `revoke`, `perms`. Each changes the book in the data directory, has a running local
//! nats-server reload its users (a revoked identity is cut off at once), and writes the
//! enrolment or revocation to the log when NATS answers (else `up` writes it at its next
//! start).

use bulkhead_schemas::RuntimeClass;
use bulkhead_schemas::identity::Role;

use super::exit;
use crate::auth::{Credential, DataDir, enroll, perms, server};
use crate::bus::Bus;

/// `bulkhead init`.
pub fn init(data: &DataDir, tls_hosts: &[String]) -> anyhow::Result<i32> {
    let fresh = !data.is_set_up();
    let book = data.init()?;
    if !tls_hosts.is_empty() {
        let (files, ca) = server::tls_material(&data.tls_dir(), tls_hosts)?;
        data.set_ca(&ca)?;
        println!(
            "TLS for {}: {} and {} (CA {})",
            tls_hosts.join(", "),
            files.cert.display(),
            files.key.display(),
            data.tls_dir().join("ca.pem").display()
        );
    }
    data.reload_server()?;
    if fresh {
        println!(
            "set up {}: {} identities; credentials in {}",
            data.root().display(),
            book.live().count(),
            data.root().join("keys").display()
        );
    } else {
        println!("{} is set up already", data.root().display());
    }
    println!(
        "nats-server users: include {} in its configuration",
        crate::natsd::auth_file(&data.nats_dir()).display()
    );
    Ok(exit::OK)
}

/// `bulkhead setup`: the streams, buckets and enrolments, as the admin.
pub async fn setup(data: &DataDir, nats: &str) -> anyhow::Result<i32> {
    crate::auth::setup::prepare(data, nats, &crate::bus::Topology::default()).await?;
    println!("streams, buckets and enrolments are in place at {nats}");
    Ok(exit::OK)
}

/// Enrols `role` `name`, tells the server and the log, and prints the credential.
pub async fn add(
    data: &DataDir,
    nats: &str,
    role: Role,
    name: &str,
    classes: Vec<RuntimeClass>,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        data.is_set_up(),
        "{} is not set up: run `bulkhead init` (or `bulkhead up`) first",
        data.root().display()
    );
    let mut creds = data.enroll(role, name, classes)?;
    creds.nats = Some(nats.to_owned());
    let new_node = (role == Role::Node).then_some(name);
    if publish(data, nats, new_node).await {
        // The server reloads in the background: the credential is handed over once it
        // works.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Bus::connect_as(nats, &creds).await.is_err() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "enrolled {role} {name}; its credential follows (also in {}): hand it over, 0600",
        data.creds_path(role, name).display()
    );
    print!("{}", creds_text(&creds)?);
    Ok(exit::OK)
}

/// `bulkhead revoke ROLE NAME`.
pub async fn revoke(data: &DataDir, nats: &str, role: Role, name: &str) -> anyhow::Result<i32> {
    anyhow::ensure!(
        !(role == Role::Admin && data.book()?.admins().len() <= 1),
        "refusing to revoke the last admin"
    );
    let e = data.revoke(role, name)?;
    publish(data, nats, None).await;
    println!("revoked {role} {name} (key {})", e.key);
    Ok(exit::OK)
}

/// The server reloads its users; the log learns what changed, and a new node gets its ops
/// consumer (best effort: `up` or `setup` does what is missing). Returns whether the log
/// was told.
async fn publish(data: &DataDir, nats: &str, new_node: Option<&str>) -> bool {
    match data.reload_server() {
        Ok(true) => eprintln!("nats-server reloaded its users"),
        Ok(false) => eprintln!(
            "no local nats-server runs from {}: its users change at its next start",
            data.root().display()
        ),
        Err(e) => eprintln!("warning: could not reload nats-server: {e:#}"),
    }
    let written = async {
        let admin = data.creds(Role::Admin, "admin")?;
        let bus = Bus::connect_as(nats, &admin).await?;
        if let Some(node) = new_node {
            enroll::node_consumers(&bus, &[node]).await?;
        }
        anyhow::Ok(enroll::publish(&bus, &admin.signer()?, &data.book()?).await?)
    };
    match written.await {
        Ok(n) => {
            eprintln!("{n} enrolment events written to the log");
            true
        }
        Err(e) => {
            eprintln!(
                "warning: the log was not told (`bulkhead setup` or the next `up` will): {e:#}"
            );
            false
        }
    }
}

fn creds_text(creds: &Credential) -> anyhow::Result<String> {
    creds.to_text().map_err(anyhow::Error::msg)
}

/// `bulkhead perms`.
pub fn print_perms(markdown: bool) -> i32 {
    if markdown {
        print!("{}", perms::markdown());
    } else {
        for e in perms::exports() {
            let kind = if e.stream { "stream" } else { "service" };
            match e.local {
                Some(l) => println!("export {kind} {} to {} as {l}", e.subject, e.to),
                None => println!("export {kind} {} to {}", e.subject, e.to),
            }
        }
        for role in Role::ALL {
            let p = perms::of(role, "<name>");
            println!("{role} (account {}):", perms::account(role));
            println!("  publish:   {}", p.publish.join(" "));
            println!("  subscribe: {}", p.subscribe.join(" "));
        }
    }
    exit::OK
}

pub fn parse_role(s: &str) -> anyhow::Result<Role> {
    Role::parse(s).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown role {s}: admin, scheduler, failover, api, scanner, node or tenant"
        )
    })
}
