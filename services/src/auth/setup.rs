//! Setting a cluster up from an admin's data directory: the book (made once), nats-server
//! started with one nkey user per identity (over TLS beyond loopback), then, as the admin,
//! the streams and buckets and the book's enrolments in the log. `bulkhead up` and `init`
//! run it; so do the tests and the load test.

use std::path::PathBuf;

use bulkhead_schemas::identity::Role;
use tracing::{info, warn};

use super::book::DataDir;
use super::{enroll, server};
use crate::bus::{Bus, Topology};
use crate::natsd::{self, NatsServer, Security, Sync};

/// Where and how the local nats-server listens.
#[derive(Clone, Debug)]
pub struct Listen {
    pub host: String,
    /// 0: any free port.
    pub port: u16,
    pub sync: Sync,
}

/// A set-up cluster: its server, and the admin's connection.
pub struct Cluster {
    pub data: DataDir,
    pub server: NatsServer,
    pub admin: Bus,
}

impl DataDir {
    /// Where the local nats-server keeps its configuration and store.
    pub fn nats_dir(&self) -> PathBuf {
        self.root().join("nats")
    }

    /// Where the CA and the server's certificate live.
    pub fn tls_dir(&self) -> PathBuf {
        self.root().join("tls")
    }

    /// Rewrites the server's users from the book and has a running server reload them
    /// (a revoked identity's connections are cut at once).
    pub fn reload_server(&self) -> anyhow::Result<bool> {
        let conf = server::authorization(&self.book()?);
        Ok(natsd::reload(&self.nats_dir(), &conf)?)
    }
}

/// Whether the server checks who connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// One nkey user per identity, each with its role's permissions (the default).
    Required,
    /// Anyone may connect and do anything (`--insecure-no-auth`); events are still signed
    /// and verified, but nothing stops a client from running containers on any node.
    InsecureNoAuth,
}

/// The warning every start without authentication logs.
pub const NO_AUTH_WARNING: &str = "AUTHENTICATION IS OFF (--insecure-no-auth): any client that \
    reaches NATS can submit as any tenant, read every spec and send ops to every node";

/// Sets up `data` (once) and starts its nats-server on `listen` with authentication; then
/// creates the streams and buckets and writes the enrolments, as the admin.
pub async fn start(
    data: &DataDir,
    listen: &Listen,
    topo: &Topology,
    auth: Auth,
) -> anyhow::Result<Cluster> {
    let book = data.init()?;
    if auth == Auth::InsecureNoAuth {
        anyhow::ensure!(
            server::is_loopback(&listen.host),
            "--insecure-no-auth listens on loopback only, not on {}",
            listen.host
        );
        warn!("{NO_AUTH_WARNING}");
    }
    let tls = if server::is_loopback(&listen.host) {
        None
    } else {
        let (files, ca) =
            server::tls_material(&data.tls_dir(), std::slice::from_ref(&listen.host))?;
        data.set_ca(&ca)?;
        info!(host = %listen.host, "listening beyond loopback: TLS with the CA made at setup");
        Some(files)
    };
    let security = match auth {
        Auth::Required => Security::Users {
            authorization: server::authorization(&data.book()?),
            tls,
        },
        Auth::InsecureNoAuth => Security::InsecureNoAuth,
    };
    let server = NatsServer::start(
        &data.nats_dir(),
        &listen.host,
        listen.port,
        listen.sync,
        &security,
    )?;
    let admin = prepare(data, &server.url, topo).await?;
    drop(book);
    Ok(Cluster {
        data: data.clone(),
        server,
        admin,
    })
}

/// As the admin of `data`, against a server already running at `url`: the streams and
/// buckets, every node's ops consumer, and the enrolments the log does not hold yet.
/// Returns the admin's connection.
pub async fn prepare(data: &DataDir, url: &str, topo: &Topology) -> anyhow::Result<Bus> {
    let creds = data.creds(Role::Admin, "admin")?;
    let admin = Bus::connect_as(url, &creds).await?;
    admin.ensure(topo).await?;
    let book = data.book()?;
    let nodes: Vec<&str> = book
        .live()
        .filter(|e| e.role == Role::Node)
        .map(|e| e.name.as_str())
        .collect();
    enroll::node_consumers(&admin, &nodes).await?;
    let written = enroll::publish(&admin, &creds.signer()?, &book).await?;
    if written > 0 {
        info!(written, "enrolments written to the log");
    }
    if super::policy::ensure_first(&admin, &creds.signer()?).await? {
        info!(
            "the first policy is in the log: one admin (M = 1 of N = 1), tenant default \
             internal, other tenants untrusted; `bulkhead policy propose FILE` changes it \
             (add admins and raise the threshold there)"
        );
    }
    Ok(admin)
}
