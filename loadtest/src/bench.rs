//! A benchmark's cluster, set up as `bulkhead up` sets one up: identities, nats-server with
//! authentication, streams, enrolments. Every service and every node connects with its own
//! credential (a thousand sim nodes: a thousand keys and connections).

use std::path::Path;
use std::sync::Arc;

use bulkhead::api::ApiHandle;
use bulkhead::node::NodeHandle;
use bulkhead::scheduler::{self, SchedulerConfig};
use bulkhead::tasks::AbortOnDrop;
use bulkhead_actors::node::NodeConfig;
use bulkhead_actors::ports::runtime::{ContainerRuntime, ExitNotice};
use tokio::sync::mpsc;

use bulkhead::auth::DataDir;
use bulkhead::auth::setup::{self, Auth, Cluster, Listen};
use bulkhead::bus::{Bus, Topology};
use bulkhead::natsd::Sync;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::spec::RuntimeClass;
use bulkhead_schemas::subjects;

/// Which of nats-server's fsync settings a scenario runs under.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum SyncMode {
    Default,
    Always,
    Both,
}

pub struct Bench {
    pub cluster: Cluster,
}

/// The query API (it answers the nodes' chain heads) and the active scheduler, each as
/// its own identity; both stop when this is dropped.
pub struct Control {
    _api: ApiHandle,
    scheduler: AbortOnDrop,
}

impl Control {
    /// Stops the scheduler now.
    pub fn stop_scheduler(&self) {
        self.scheduler.0.abort();
    }
}

impl Bench {
    /// A cluster in `dir` whose server syncs as `sync`.
    pub async fn start(dir: &Path, sync: Sync) -> anyhow::Result<Bench> {
        let data = DataDir::new(&dir.join("data"));
        let listen = Listen {
            host: "127.0.0.1".into(),
            port: 0,
            sync,
        };
        let cluster = setup::start(&data, &listen, &Topology::default(), Auth::Required).await?;
        Ok(Bench { cluster })
    }

    /// The admin's connection (it sees everything: the benchmarks' observers use it).
    pub fn admin(&self) -> &Bus {
        &self.cluster.admin
    }

    /// Enrols nodes (every runtime class) at once, and tells the server and the log.
    pub async fn enroll_nodes(&self, names: &[String]) -> anyhow::Result<()> {
        let all = vec![
            RuntimeClass::Runc,
            RuntimeClass::Gvisor,
            RuntimeClass::Kata,
            RuntimeClass::EderaZone,
            RuntimeClass::Confidential,
        ];
        self.enroll(
            names
                .iter()
                .map(|n| (Role::Node, n.clone(), all.clone()))
                .collect(),
        )
        .await
    }

    /// Enrols a tenant, and tells the server and the log.
    pub async fn enroll_tenant(&self, name: &str) -> anyhow::Result<()> {
        self.enroll(vec![(Role::Tenant, name.to_owned(), Vec::new())])
            .await
    }

    async fn enroll(&self, who: Vec<(Role, String, Vec<RuntimeClass>)>) -> anyhow::Result<()> {
        let data = &self.cluster.data;
        data.enroll_all(who)?;
        data.reload_server()?;
        // The server reloads its users in the background: with thousands of users, for
        // longer than a moment (JetStream answers no one meanwhile), so the setup is tried
        // again for up to a minute.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            match setup::prepare(data, &self.cluster.server.url, &Topology::default()).await {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("the cluster's setup after enrolling nodes, again: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connection as `role` `name`.
    pub async fn connect(&self, role: Role, name: &str) -> anyhow::Result<Bus> {
        let creds = self.cluster.data.creds(role, name)?;
        Ok(Bus::connect_as(&self.cluster.server.url, &creds).await?)
    }

    pub async fn scheduler(&self) -> anyhow::Result<Bus> {
        self.connect(Role::Scheduler, "scheduler").await
    }

    pub async fn failover(&self) -> anyhow::Result<Bus> {
        self.connect(Role::Failover, "failover").await
    }

    /// Starts node `config.name` (enrolled already) as its own identity, over `runtime`.
    pub async fn node<R: ContainerRuntime>(
        &self,
        config: NodeConfig,
        runtime: Arc<R>,
        exits: mpsc::UnboundedReceiver<ExitNotice>,
    ) -> anyhow::Result<NodeHandle> {
        let bus = self.connect(Role::Node, &config.name).await?;
        bulkhead::node::start(&bus, config, runtime, exits).await
    }

    /// The query API and a scheduler, with the default configuration.
    pub async fn control(&self) -> anyhow::Result<Control> {
        let api = bulkhead::api::start(&self.connect(Role::Api, "api").await?).await?;
        let bus = self.scheduler().await?;
        let scheduler = tokio::spawn(async move {
            if let Err(e) = scheduler::run(bus, SchedulerConfig::default()).await {
                eprintln!("the scheduler stopped: {e:#}");
            }
        });
        Ok(Control {
            _api: api,
            scheduler: AbortOnDrop(scheduler),
        })
    }

    /// The default tenant's connection: what submits.
    pub async fn tenant(&self) -> anyhow::Result<Bus> {
        self.connect(Role::Tenant, subjects::DEFAULT_TENANT).await
    }
}
