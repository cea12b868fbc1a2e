//! The `throughput` scenario's figures: a table with each figure beside the limit measured
//! in the same run and the goal of issue 18, and a history row appended to a results file
//! (`--record loadtest/RESULTS.md`: date, commit, machine, figures) so regressions show.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The `p` quantile (0–1) of sorted durations; zero for none.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// [`pct`] in milliseconds.
pub fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    pct(sorted, p).as_secs_f64() * 1e3
}

/// What one `throughput` run measured.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub nodes: usize,
    pub workloads: usize,
    /// The machine's cores (what bounds placements at their CPU cost).
    pub cores: usize,
    pub sync: &'static str,
    /// The sim nodes' heartbeat interval, ms (the history's rows are at 5,000 unless they
    /// say otherwise).
    pub heartbeat_ms: u64,
    /// The limits, measured first: raw appends one by one and in atomic batches of 500.
    pub raw_single: f64,
    pub raw_batched: f64,
    /// Round trips one at a time, ms (medians): a durable append, an atomic batch of two.
    pub append_ms: (f64, f64),
    /// The steady phase's disk: flushes a workload, busy % (None where not counted).
    pub steady_disk: Option<(f64, f64)>,
    pub placements_per_s: f64,
    pub burst_running_s: f64,
    /// CPU per workload in the burst, µs: bulkhead (this process) and nats-server.
    pub cpu_us: (f64, f64),
    pub steady_rate: u64,
    /// The steady phase's workloads are placed `spread` (each on the emptiest node), not
    /// bin-packed as the burst's and the history's are unless they say so.
    pub steady_spread: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub restart_s: f64,
    pub failover_restart_s: f64,
    pub api_restart_s: f64,
    /// A node restarted with its share of the replicas running: until its view is reconciled.
    pub node_restart_s: f64,
    /// Replicas running on that node.
    pub node_replicas: usize,
    pub kib_per_workload: f64,
    /// The burst's messages alone, replayed on a server of their own (`server-floor`).
    pub floor: Option<crate::floor::Floor>,
}

impl Figures {
    /// The markdown table: figure, value, beside what, goal.
    pub fn table(&self) -> String {
        // Three events per placement: the durable append limit in placements.
        let limit = self.raw_batched / 3.0;
        let rows = [
            (
                "raw appends, atomic batches of 500".to_owned(),
                format!("{:.0}/s", self.raw_batched),
                format!("one by one: {:.0}/s", self.raw_single),
                "— (the limit)".to_owned(),
            ),
            (
                format!("placements/s, {}-workload burst", self.workloads),
                format!("{:.0}/s", self.placements_per_s),
                format!(
                    "{:.0} % of the limit ({limit:.0}/s at 3 events each); all running after {:.1} s",
                    100.0 * self.placements_per_s / limit.max(1.0),
                    self.burst_running_s
                ),
                "≥ 10,000/s".to_owned(),
            ),
            (
                "the burst's messages alone (`server-floor`: no bulkhead logic)".to_owned(),
                self.floor
                    .map_or("not measured".to_owned(), |f| format!("{:.0}/s", f.placements_per_s)),
                self.floor.map_or(String::new(), |f| {
                    format!(
                        "CPU a placement {:.0} + {:.0} µs (nats-server + the replay's clients); the burst placed at {:.0} % of this",
                        f.server_us,
                        f.client_us,
                        100.0 * self.placements_per_s / f.placements_per_s.max(1.0)
                    )
                }),
                "— (the limit of this design on this machine)".to_owned(),
            ),
            (
                "CPU per placement in the burst".to_owned(),
                format!(
                    "{:.0} µs (bulkhead {:.0} + nats-server {:.0})",
                    self.cpu_us.0 + self.cpu_us.1,
                    self.cpu_us.0,
                    self.cpu_us.1
                ),
                format!(
                    "at most {:.0} placements/s on {} cores at this cost",
                    self.cores as f64 * 1e6 / (self.cpu_us.0 + self.cpu_us.1).max(1.0),
                    self.cores
                ),
                "≤ 200 µs (10,000/s on 2 cores)".to_owned(),
            ),
            (
                format!(
                    "submit → running at {}/s{}",
                    self.steady_rate,
                    self.spread_label()
                ),
                format!("p50 {:.1} ms, p99 {:.1} ms", self.p50_ms, self.p99_ms),
                self.steady_limit(),
                "p99 < 50 ms".to_owned(),
            ),
            (
                "scheduler restart-to-ready".to_owned(),
                format!("{:.2} s", self.restart_s),
                format!("{} workloads in the log", self.workloads),
                "< 2 s".to_owned(),
            ),
            (
                "failover / query API restart-to-ready".to_owned(),
                format!(
                    "{:.2} s / {:.2} s",
                    self.failover_restart_s, self.api_restart_s
                ),
                "from their snapshots and the tail".to_owned(),
                "< 2 s".to_owned(),
            ),
            (
                "node restart-to-ready".to_owned(),
                format!("{:.2} s", self.node_restart_s),
                format!("{} replicas running on it", self.node_replicas),
                "< 1 s".to_owned(),
            ),
            (
                "resident memory per workload".to_owned(),
                format!("{:.2} KiB", self.kib_per_workload),
                String::new(),
                "≤ 1.5 KiB".to_owned(),
            ),
        ];
        let mut out = String::from("| figure | value | beside | goal |\n|---|---|---|---|\n");
        for (f, v, b, g) in rows {
            out.push_str(&format!("| {f} | {v} | {b} | {g} |\n"));
        }
        out
    }

    /// The limits that close a history row: the steady phase's, then the burst's messages
    /// alone where measured.
    fn limits(&self) -> String {
        match self.floor {
            Some(f) => format!(
                "{}; the burst's messages alone {:.0} placements/s ({:.0} + {:.0} µs)",
                self.steady_limit(),
                f.placements_per_s,
                f.server_us,
                f.client_us
            ),
            None => self.steady_limit(),
        }
    }

    /// What bounds the steady phase: its path's durable round trips on the idle server (the
    /// command, the node's fact and the ops one by one, the scheduler's atomic batch), and
    /// what the disk did meanwhile.
    fn steady_limit(&self) -> String {
        let (one, two) = self.append_ms;
        let floor = format!(
            "floor {:.1} ms (3 durable appends of {one:.2} ms and an atomic batch of {two:.2} ms, in turn)",
            3.0 * one + two
        );
        match self.steady_disk {
            Some((flushes, busy)) => {
                format!("{floor}; {flushes:.2} disk flushes a workload, the disk busy {busy:.0} %")
            }
            None => floor,
        }
    }

    /// What the steady phase's placement adds to its label: nothing when bin-packed.
    fn spread_label(&self) -> &'static str {
        if self.steady_spread {
            ", steady phase spread"
        } else {
            ""
        }
    }

    /// One row of the history: date, commit, machine, then the figures.
    pub fn history_row(&self, date: &str, commit: &str, machine: &str) -> String {
        format!(
            "| {date} | {commit} | {machine} | {} nodes{}, {} workloads, {}{} | {:.0} | {:.0} | {:.1} / {:.1} | {:.2} | {:.2} | {:.2} / {:.2} | {:.2} | {:.0} + {:.0} | {} |\n",
            self.nodes,
            match self.heartbeat_ms {
                crate::fleet::SIM_HEARTBEAT_MS => String::new(),
                ms => format!(" (beating every {ms} ms)"),
            },
            self.workloads,
            self.sync,
            self.spread_label(),
            self.raw_batched,
            self.placements_per_s,
            self.p50_ms,
            self.p99_ms,
            self.restart_s,
            self.kib_per_workload,
            self.failover_restart_s,
            self.api_restart_s,
            self.node_restart_s,
            self.cpu_us.0,
            self.cpu_us.1,
            self.limits()
        )
    }
}

const HEADER: &str = "# Load test results\n\n\
`bulkhead-loadtest throughput … --record loadtest/RESULTS.md` appends a row per run. The machine is\n\
noisy: compare a figure with the raw append limit of the same row, and judge by the median of\n\
several runs.\n\n\
| date | commit | machine | run | raw batched appends/s | placements/s | submit→running p50 / p99 ms | restart s | KiB/workload | failover / API restart s | node restart s | CPU µs per placement (bulkhead + server) | beside: the steady phase's floor and disk; from 2026-12-06 the burst's messages alone |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// Appends `row` to the history at `path`, writing its header first if the file is new.
pub fn record(path: &Path, row: &str) -> std::io::Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        f.write_all(HEADER.as_bytes())?;
    }
    f.write_all(row.as_bytes())
}

/// This checkout's commit (short), or `unknown`.
pub fn commit(near: &std::path::Path) -> String {
    // The checkout the record file is in (the benchmark may run from anywhere), marked
    // `-dirty` when it holds changes not committed.
    let dir = near
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// `<cores> cores, <GiB> GiB`.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    format!("{cores} cores, {} GiB", mem_kib / 1024 / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_sets_each_figure_beside_its_limit_and_the_history_grows() {
        let f = Figures {
            nodes: 1000,
            workloads: 100_000,
            sync: "always",
            heartbeat_ms: crate::fleet::SIM_HEARTBEAT_MS,
            raw_single: 9000.0,
            raw_batched: 60000.0,
            placements_per_s: 2000.0,
            steady_rate: 1000,
            p50_ms: 30.0,
            p99_ms: 150.0,
            restart_s: 20.0,
            failover_restart_s: 0.9,
            api_restart_s: 1.1,
            node_restart_s: 0.4,
            node_replicas: 1000,
            kib_per_workload: 0.5,
            cores: 2,
            cpu_us: (300.0, 100.0),
            append_ms: (0.5, 3.0),
            steady_disk: Some((2.94, 42.0)),
            ..Figures::default()
        };
        let t = f.table();
        assert!(
            t.contains("| p50 30.0 ms, p99 150.0 ms | floor 4.5 ms (3 durable appends of 0.50 ms and an atomic batch of 3.00 ms, in turn); 2.94 disk flushes a workload, the disk busy 42 % |"),
            "{t}"
        );
        assert!(t.contains("| 2000/s | 10 % of the limit (20000/s"), "{t}");
        assert!(t.contains("p99 150.0 ms"), "{t}");
        assert!(
            t.contains(
                "| 400 µs (bulkhead 300 + nats-server 100) | at most 5000 placements/s on 2 cores"
            ),
            "{t}"
        );
        assert!(
            t.contains("| 0.90 s / 1.10 s | from their snapshots"),
            "{t}"
        );
        assert!(
            f.history_row("d", "c", "m")
                .ends_with("| 0.50 | 0.90 / 1.10 | 0.40 | 300 + 100 | floor 4.5 ms (3 durable appends of 0.50 ms and an atomic batch of 3.00 ms, in turn); 2.94 disk flushes a workload, the disk busy 42 % |\n"),
            "the steady phase's limits close the row"
        );
        let uncounted = Figures {
            steady_disk: None,
            ..f.clone()
        };
        assert!(
            uncounted
                .history_row("d", "c", "m")
                .ends_with("| 300 + 100 | floor 4.5 ms (3 durable appends of 0.50 ms and an atomic batch of 3.00 ms, in turn) |\n"),
            "a disk not counted is not made up"
        );
        assert!(
            f.history_row("d", "c", "m")
                .contains("| 1000 nodes, 100000 workloads, always |"),
            "the usual heartbeat is not named"
        );
        let fast = Figures {
            heartbeat_ms: 1000,
            ..f.clone()
        };
        assert!(
            fast.history_row("d", "c", "m")
                .contains("| 1000 nodes (beating every 1000 ms), 100000 workloads, always |"),
            "another heartbeat is named"
        );
        let spread = Figures {
            steady_spread: true,
            ..f.clone()
        };
        assert!(
            spread
                .history_row("d", "c", "m")
                .contains("| 1000 nodes, 100000 workloads, always, steady phase spread |"),
            "a spread steady phase is named"
        );
        assert!(
            spread
                .table()
                .contains("| submit → running at 1000/s, steady phase spread | p50 30.0 ms"),
            "and its latency row says so"
        );
        assert!(t.contains("| submit → running at 1000/s | p50"), "{t}");
        assert!(
            t.contains(
                "| the burst's messages alone (`server-floor`: no bulkhead logic) | not measured |"
            ),
            "{t}"
        );
        let floored = Figures {
            floor: Some(crate::floor::Floor {
                placements_per_s: 4000.0,
                server_us: 150.0,
                client_us: 90.0,
            }),
            ..f.clone()
        };
        assert!(
            floored.table().contains("| 4000/s | CPU a placement 150 + 90 µs (nats-server + the replay's clients); the burst placed at 50 % of this |"),
            "{}",
            floored.table()
        );
        assert!(
            floored.history_row("d", "c", "m").ends_with(
                "the disk busy 42 %; the burst's messages alone 4000 placements/s (150 + 90 µs) |\n"
            ),
            "the floor closes the row"
        );
        assert!(
            t.contains("| node restart-to-ready | 0.40 s | 1000 replicas running on it | < 1 s |"),
            "{t}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("RESULTS.md");
        record(
            &path,
            &f.history_row("2026-12-01", "abc", "2 cores, 24 GiB"),
        )
        .unwrap();
        record(
            &path,
            &f.history_row("2026-12-02", "def", "2 cores, 24 GiB"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("# Load test results").count(), 1);
        assert!(text.contains("| 2026-12-02 | def |"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("| 2026")).count(), 2);
    }
}
