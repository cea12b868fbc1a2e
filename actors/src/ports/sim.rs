//! The `sim` container runtime, the twin of the CRI runtime: containers that exist only
//! in memory, with a configurable start delay and injectable exits. For load tests with
//! thousands of nodes on one machine and for tests of the node actor; it runs nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::runtime::{
    ContainerRuntime, ExitNotice, Observed, ObservedStatus, RuntimeError, StartSpec,
};
use bulkhead_schemas::spec::RuntimeClass;
use tokio::sync::mpsc;

/// Environment variables of a workload the sim runtime obeys.
pub const SIM_EXIT_AFTER_MS: &str = "SIM_EXIT_AFTER_MS";
pub const SIM_EXIT_CODE: &str = "SIM_EXIT_CODE";

struct SimContainer {
    workload: String,
    replica: u32,
    exit_task: Option<tokio::task::JoinHandle<()>>,
}

pub struct SimRuntime {
    classes: Vec<RuntimeClass>,
    start_delay: Duration,
    exits: mpsc::UnboundedSender<ExitNotice>,
    containers: Mutex<HashMap<String, SimContainer>>,
    next: AtomicU64,
    prefix: String,
    /// Stops asked, and how many of the next ones fail (as a runtime slow under load).
    stops: AtomicU64,
    failing_stops: AtomicU32,
}

impl SimRuntime {
    /// A runtime offering `classes`; exits are reported on the returned channel.
    pub fn new(
        node: &str,
        classes: Vec<RuntimeClass>,
        start_delay: Duration,
    ) -> (SimRuntime, mpsc::UnboundedReceiver<ExitNotice>) {
        let (exits, rx) = mpsc::unbounded_channel();
        let rt = SimRuntime {
            classes,
            start_delay,
            exits,
            containers: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            prefix: format!("sim-{node}-"),
            stops: AtomicU64::new(0),
            failing_stops: AtomicU32::new(0),
        };
        (rt, rx)
    }

    pub fn running(&self) -> usize {
        self.containers.lock().expect("lock").len()
    }

    /// Makes the next `n` stops fail.
    pub fn fail_next_stops(&self, n: u32) {
        self.failing_stops.store(n, Ordering::SeqCst);
    }

    /// How many stops were asked (those that failed included).
    pub fn stops(&self) -> u64 {
        self.stops.load(Ordering::SeqCst)
    }

    /// Makes a container exit now with `code`, as if its process ended.
    pub fn inject_exit(&self, container: &str, code: i32) -> bool {
        let found = self.containers.lock().expect("lock").remove(container);
        match found {
            Some(c) => {
                if let Some(t) = c.exit_task {
                    t.abort();
                }
                let _ = self.exits.send(notice(container, code));
                true
            }
            None => false,
        }
    }
}

fn notice(container: &str, code: i32) -> ExitNotice {
    ExitNotice {
        container: container.to_owned(),
        code,
        reason: if code == 0 {
            "completed".into()
        } else {
            "error".into()
        },
        finished_at: bulkhead_schemas::now_rfc3339(),
    }
}

impl ContainerRuntime for SimRuntime {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn runtime_classes(&self) -> Vec<RuntimeClass> {
        self.classes.clone()
    }

    async fn start(&self, req: StartSpec) -> Result<String, RuntimeError> {
        if !self.classes.contains(&req.spec.runtime_class) {
            return Err(RuntimeError::UnsupportedClass(req.spec.runtime_class));
        }
        if !self.start_delay.is_zero() {
            tokio::time::sleep(self.start_delay).await;
        }
        let id = format!(
            "{}{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let exit_after = req
            .spec
            .env
            .get(SIM_EXIT_AFTER_MS)
            .and_then(|v| v.parse::<u64>().ok());
        let code = req
            .spec
            .env
            .get(SIM_EXIT_CODE)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        let mut containers = self.containers.lock().expect("lock");
        let task = exit_after.map(|ms| {
            let exits = self.exits.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = exits.send(notice(&id, code));
            })
        });
        containers.insert(
            id.clone(),
            SimContainer {
                workload: req.workload,
                replica: req.replica,
                exit_task: task,
            },
        );
        Ok(id)
    }

    async fn stop(&self, container: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failing_stops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(RuntimeError::Stop(
                "the sim was told to fail this stop".into(),
            ));
        }
        let found = self.containers.lock().expect("lock").remove(container);
        if let Some(t) = found.and_then(|c| c.exit_task) {
            t.abort();
        }
        Ok(())
    }

    /// Sim containers live in this process only: a restarted sim node holds none.
    async fn observe(&self, _node: &str) -> Result<Vec<Observed>, RuntimeError> {
        let containers = self.containers.lock().expect("lock");
        Ok(containers
            .iter()
            .map(|(id, c)| Observed {
                container: id.clone(),
                workload: c.workload.clone(),
                replica: c.replica,
                status: ObservedStatus::Running,
            })
            .collect())
    }
}
