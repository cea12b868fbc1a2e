//! The admin's commands on identities: `init`, `node add`, `tenant add`, `service add`,
//! `revoke`, `perms`. Each changes the book in the data directory, has a running local
//! nats-server reload its users (a revoked identity is cut off at once), and writes the
//! enrolment or revocation to the log when NATS answers (else `up` writes it at its next
//! start).

use bulkhead_schemas::RuntimeClass;
use bulkhead_schemas::identity::Role;

use super::exit;
use crate::auth::{Credential, DataDir, enroll, perms};
use crate::bus::Bus;

/// `bulkhead init`.
pub fn init(data: &DataDir) -> anyhow::Result<i32> {
    let fresh = !data.is_set_up();
    let book = data.init()?;
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
    publish(data, nats).await;
    // The server reloads in the background: the credential is handed over once it works.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Bus::connect_as(nats, &creds).await.is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
    publish(data, nats).await;
    println!("revoked {role} {name} (key {})", e.key);
    Ok(exit::OK)
}

/// The server reloads its users; the log learns what changed (best effort: `up` writes
/// what is missing at its next start).
async fn publish(data: &DataDir, nats: &str) {
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
        anyhow::Ok(enroll::publish(&bus, &admin.signer()?, &data.book()?).await?)
    };
    match written.await {
        Ok(n) => eprintln!("{n} enrolment events written to the log"),
        Err(e) => eprintln!("warning: the log was not told (it will be at the next `up`): {e:#}"),
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
        for role in Role::ALL {
            let p = perms::of(role, "<name>");
            println!("{role}:");
            println!("  publish:   {}", p.publish.join(" "));
            println!("  subscribe: {}", p.subscribe.join(" "));
            if p.responses {
                println!("  answers requests");
            }
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
