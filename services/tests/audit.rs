//! The log proved, against a real nats-server: `audit verify` passes on a clean log from a
//! real run, and after each kind of tampering fails naming the sequence; the query API
//! checkpoints the log and serves its own verification; backups restore only when they
//! verify.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bulkhead::audit::{CheckpointFile, RawMsg, read_all};
use bulkhead_actors::audit::Report;
use bulkhead_actors::signing::{SIG_HEADER, Signer, seal_event};
use bulkhead_schemas::event::{Event, EventBody, Scaled};
use bulkhead_schemas::subjects;

use common::*;

const LONG: Duration = Duration::from_secs(30);

/// A cluster that ran three workloads, with the API checkpointing every second; the
/// services' pids; and a checkpoint exported after the last workload started.
async fn ran() -> (Env, Vec<u32>, PathBuf) {
    let mut env = env().await;
    let pids = vec![
        env.spawn("scheduler", &["scheduler"]),
        env.spawn("api", &["api", "--checkpoint-secs", "1"]),
        env.spawn("n1", &["node", "--name", "n1", "--heartbeat-ms", "200"]),
    ];
    for id in ["w1", "w2", "w3"] {
        env.natspy_pub(SUBMIT, spec(Some(id)).to_string().as_bytes(), None);
    }
    env.wait_for("three workloads to run", LONG, |by| {
        by.len() == 3 && by.values().all(|k| k.contains(&"started"))
    })
    .await;
    let last = env.last_seq(subjects::EVT_WORKLOADS).await;
    let file = env.dir.path().join("checkpoint.json");
    wait_until(
        "a checkpoint past the last workload event",
        LONG,
        async || {
            let out = env
                .cli()
                .args(["audit", "checkpoint"])
                .arg(&file)
                .output()
                .unwrap();
            out.status.success() && checkpoint_seq(&file) >= last
        },
    )
    .await;
    (env, pids, file)
}

fn checkpoint_seq(file: &PathBuf) -> u64 {
    let f: CheckpointFile = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    f.open().unwrap().0.seq
}

/// `bulkhead audit verify [--checkpoint FILE]`: its exit code and report.
fn verify(env: &Env, checkpoint: Option<&PathBuf>) -> (i32, Report) {
    let mut c = env.cli();
    c.args(["audit", "verify", "--json"]);
    if let Some(f) = checkpoint {
        c.arg("--checkpoint").arg(f);
    }
    let out = c.output().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

fn first(r: &Report) -> (u64, String) {
    let f = r.first.as_ref().expect("a finding");
    (f.seq, f.code.clone())
}

/// What an admin with the server's store in hand can do: the log copied, as stored, into a
/// stream that allows deletes and purges, minus the messages `drop` names.
async fn rewrite(env: &Env, drop: impl Fn(&RawMsg) -> bool) -> Vec<RawMsg> {
    let (msgs, _) = read_all(&env.bus).await.unwrap();
    let mut s = env.bus.js.get_stream(subjects::EVT_STREAM).await.unwrap();
    let config = s.info().await.unwrap().config.clone();
    env.bus
        .js
        .delete_stream(subjects::EVT_STREAM)
        .await
        .unwrap();
    env.bus
        .js
        .create_stream(stream::Config {
            deny_delete: false,
            deny_purge: false,
            ..config
        })
        .await
        .unwrap();
    for m in msgs.iter().filter(|m| !drop(m)) {
        let mut h = HeaderMap::new();
        if let Some(p) = &m.proof {
            h.insert(SIG_HEADER, p.as_str());
        }
        env.bus
            .publish_stored(m.subject.clone(), h, m.payload.clone().into_bytes().into())
            .await
            .unwrap();
    }
    msgs
}

fn stop(env: &mut Env, pids: &[u32]) {
    for pid in pids {
        env.sigkill(*pid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_log_verifies_and_a_foreign_key_is_named_by_verify_and_the_api() {
    let (env, _pids, file) = ran().await;
    let (code, report) = verify(&env, Some(&file));
    assert_eq!(code, 0, "{report:?}");
    assert!(report.first.is_none());
    assert!(
        report.checkpoints_matched >= 2,
        "the file's and the log's own: {report:?}"
    );
    wait_until("the API to report a clean log", LONG, async || {
        let out = env
            .cli()
            .args(["audit", "status", "--json"])
            .output()
            .unwrap();
        out.status.success()
            && serde_json::from_slice::<Report>(&out.stdout).is_ok_and(|r| r.messages > 10)
    })
    .await;

    // A valid signature by a key no admin enrolled, chained on w1's head.
    let head = env.bus.head(&key("w1")).await.unwrap().unwrap();
    let stranger = Signer::generate();
    let mut ev = Event::new(
        "scheduler",
        &key("w1"),
        Some(&head.hash),
        EventBody::Scaled(Scaled {
            replicas: 5,
            cmd_seq: 1,
        }),
    );
    let (payload, proof) = seal_event(&stranger, &mut ev);
    let mut h = HeaderMap::new();
    h.insert(SIG_HEADER, proof.encode().as_str());
    let seq = env
        .bus
        .publish_stored(
            subjects::workload_event(&key("w1"), "scaled"),
            h,
            payload.into(),
        )
        .await
        .unwrap();
    let (code, report) = verify(&env, Some(&file));
    assert_eq!(code, 1);
    assert_eq!(first(&report), (seq, "unknown_writer".into()));
    wait_until("the API to report the foreign key", LONG, async || {
        let out = env
            .cli()
            .args(["audit", "status", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Report>(&out.stdout).is_ok_and(|r| {
            r.first
                .is_some_and(|f| f.seq == seq && f.code == "unknown_writer")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_and_a_purged_workload_are_gaps() {
    let (mut env, pids, file) = ran().await;
    stop(&mut env, &pids);
    rewrite(&env, |_| false).await;
    assert_eq!(
        verify(&env, Some(&file)).0,
        0,
        "copied as stored, it still verifies"
    );

    // One message deleted: w2's `scheduled`.
    let w2 = env.events(&subjects::workload_events(&key("w2"))).await;
    let scheduled = w2
        .iter()
        .find(|(_, _, e)| e.kind() == "scheduled")
        .unwrap()
        .0;
    env.bus
        .js
        .get_stream(subjects::EVT_STREAM)
        .await
        .unwrap()
        .delete_message(scheduled)
        .await
        .unwrap();
    let (code, report) = verify(&env, None);
    assert_eq!((code, first(&report)), (1, (scheduled, "gap".into())));

    // Then w3 purged altogether: its first sequence is a gap too (the earlier deletion
    // stays the first finding; both are counted).
    let w3_first = env.events(&subjects::workload_events(&key("w3"))).await[0].0;
    env.bus
        .js
        .get_stream(subjects::EVT_STREAM)
        .await
        .unwrap()
        .purge()
        .filter(subjects::workload_events(&key("w3")))
        .await
        .unwrap();
    let (code, report) = verify(&env, Some(&file));
    assert_eq!(code, 1);
    let f = first(&report);
    assert_eq!(f, (scheduled.min(w3_first), "gap".into()), "{report:?}");
    assert!(report.findings >= 3, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_rebuilt_without_a_workload_no_longer_matches_its_checkpoint() {
    let (mut env, pids, file) = ran().await;
    stop(&mut env, &pids);
    let pinned = checkpoint_seq(&file);
    // A careful rewrite: w2's events and every checkpoint in the log left out, the rest
    // re-stored in order (sequences close up: no gap, and every chain still holds).
    // `bulkhead.evt.<tenant>.wl.w2.` (the filter ends in `*`, which this prefix match
    // drops; it once ended in `>`, and the old `.>` replace then matched nothing, so w2
    // stayed and the test passed only when a checkpoint message preceded the pinned one).
    let w2 = subjects::workload_events(&key("w2"))
        .trim_end_matches('*')
        .to_owned();
    rewrite(&env, |m| {
        m.subject.starts_with(&w2) || m.subject.ends_with(".checkpoint")
    })
    .await;
    let (code, report) = verify(&env, None);
    assert_eq!(code, 0, "alone, the rewritten log looks clean: {report:?}");
    let (code, report) = verify(&env, Some(&file));
    assert_eq!(code, 1);
    let (seq, kind) = first(&report);
    assert_eq!(seq, pinned);
    assert!(
        kind == "checkpoint_mismatch" || kind == "truncated",
        "{report:?}"
    );

    // A checkpoint file edited to match: its signature no longer verifies.
    let mut f: CheckpointFile =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    f.event = f.event.replace("\"seq\":", "\"seq\":1");
    let forged = env.dir.path().join("forged.json");
    std::fs::write(&forged, serde_json::to_string(&f).unwrap()).unwrap();
    let out = env
        .cli()
        .args(["audit", "verify", "--checkpoint"])
        .arg(&forged)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_an_empty_log_and_a_tampered_one_does_not() {
    let (mut env, pids, file) = ran().await;
    stop(&mut env, &pids);
    let backup = env.dir.path().join("log.backup");
    env.cli_ok([OsStr::new("backup"), backup.as_os_str()]);
    let (before, _) = verify(&env, None);
    assert_eq!(before, 0);
    let original = read_all(&env.bus).await.unwrap().0;

    // Lost: the stream is gone.
    env.bus
        .js
        .delete_stream(subjects::EVT_STREAM)
        .await
        .unwrap();
    // A tampered backup (one line dropped) is refused and writes nothing.
    let text = std::fs::read_to_string(&backup).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(5);
    let tampered = env.dir.path().join("tampered.backup");
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let out = env.cli().arg("restore").arg(&tampered).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing restored"),
        "{out:?}"
    );

    env.cli_ok([
        OsStr::new("restore"),
        backup.as_os_str(),
        OsStr::new("--checkpoint"),
        file.as_os_str(),
    ]);
    let restored = read_all(&env.bus).await.unwrap().0;
    assert_eq!(restored.len(), original.len());
    for (a, b) in original.iter().zip(&restored) {
        assert_eq!(
            (a.seq, &a.subject, &a.payload, &a.proof),
            (b.seq, &b.subject, &b.payload, &b.proof)
        );
    }
    let (code, report) = verify(&env, Some(&file));
    assert_eq!(code, 0, "{report:?}");
}
