//! One counter and one API for everything refused, whatever refused it. Each service
//! records what it sets aside (a command that is none, an op out of limits, a heartbeat
//! that does not decode, a message given up after its last delivery) in its [`Ledger`]; a
//! task reports the ledger on `bulkhead.aside.<role>.<name>` whenever it grew (at most once
//! a second) and every 30 s while it is not zero. The query API keeps each reporter's
//! latest report ([`Reports`]), records JetStream's own advisories of messages a consumer
//! gave up on, and answers `bulkhead.api.admin.aside.list` with the sum.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_actors::aside::{Aside, SetAside};
use bulkhead_schemas::api::{AsideReply, AsideReport, AsideView};
use bulkhead_schemas::subjects;
use futures::StreamExt;
use serde::Deserialize;
use tracing::{debug, warn};

use crate::bus::Bus;
use crate::tasks::AbortOnDrop;

/// How often a ledger that grew is reported, at most.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often a ledger that did not grow is reported again while not zero (so an API that
/// started since hears it).
const REPORT_AGAIN: Duration = Duration::from_secs(30);
/// Items of its own a report carries, at most.
const REPORT_RECENT: usize = 20;
/// Reporters the API keeps, at most (further new ones are counted, not kept).
const MAX_REPORTERS: usize = 10_000;
/// The largest report the API reads.
const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Latest items the API's answer lists, at most.
const ANSWER_RECENT: usize = 200;

/// What one service set aside: shared by its tasks, reported by [`reporting`].
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<SetAside>>);

impl Ledger {
    /// Counts and logs one item.
    pub fn record(&self, a: Aside) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).record(a);
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).total()
    }

    /// The ledger as it is reported.
    pub fn report(&self) -> AsideReport {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        report_of(&s, REPORT_RECENT)
    }
}

/// A set-aside count as a report, with its latest `recent` items.
pub fn report_of(s: &SetAside, recent: usize) -> AsideReport {
    let skip = s.recent().count().saturating_sub(recent);
    AsideReport {
        total: s.total(),
        by_code: s
            .by_code()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        recent: s.recent().skip(skip).map(|a| view_of(a, "")).collect(),
    }
}

fn view_of(a: &Aside, by: &str) -> AsideView {
    AsideView {
        seq: a.seq,
        subject: a.subject.clone(),
        code: a.code.to_owned(),
        reason: a.reason.clone(),
        by: by.to_owned(),
    }
}

/// Reports `ledger` under this connection's identity, in a task (none without one).
pub fn reporting(bus: &Bus, ledger: Ledger) -> Option<AbortOnDrop> {
    let id = bus.identity().ok()?;
    let subject = subjects::aside_report(id.creds.role.as_str(), &id.creds.name);
    let client = bus.client.clone();
    Some(AbortOnDrop(tokio::spawn(async move {
        let mut reported = 0u64;
        let mut since = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tick.tick().await;
            let total = ledger.total();
            let again = total > 0 && since.elapsed() >= REPORT_AGAIN;
            if total == reported && !again {
                continue;
            }
            let body = serde_json::to_vec(&ledger.report()).unwrap_or_default();
            match client.publish(subject.clone(), body.into()).await {
                Ok(()) => {
                    reported = total;
                    since = tokio::time::Instant::now();
                }
                Err(e) => debug!(error = %e, "could not report what was set aside; will again"),
            }
        }
    })))
}

/// JetStream's advisory that a consumer gave up on a message after its last delivery.
#[derive(Deserialize)]
struct MaxDeliveries {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

/// What the query API heard from every reporter.
#[derive(Default)]
pub struct Reports {
    by_who: BTreeMap<String, AsideReport>,
}

impl Reports {
    /// Takes one report, or says why it is none (a bad subject, too large, not JSON, one
    /// reporter too many): the caller sets that aside in its own ledger.
    pub fn take(&mut self, subject: &str, payload: &[u8]) -> Result<(), Aside> {
        let bad = |why: String| Aside::new(0, subject, "bad_report", why);
        let who = subjects::parse_aside_report(subject)
            .ok_or_else(|| bad("not a reporter's subject".into()))?;
        if payload.len() > MAX_REPORT_BYTES {
            return Err(bad(format!(
                "{} bytes, over {MAX_REPORT_BYTES}",
                payload.len()
            )));
        }
        let mut report: AsideReport =
            serde_json::from_slice(payload).map_err(|e| bad(format!("not a report: {e}")))?;
        if !self.by_who.contains_key(&who) && self.by_who.len() >= MAX_REPORTERS {
            return Err(bad(format!("over {MAX_REPORTERS} reporters")));
        }
        report.recent.truncate(REPORT_RECENT);
        self.by_who.insert(who, report);
        Ok(())
    }

    /// The answer: the log reader's own count (`api`) beside every report, summed.
    pub fn answer(&self, log: &SetAside) -> AsideReply {
        let mut reply = AsideReply::default();
        let own = report_of(log, ANSWER_RECENT);
        let all =
            std::iter::once(("api", &own)).chain(self.by_who.iter().map(|(k, v)| (k.as_str(), v)));
        for (who, r) in all {
            reply.total = reply.total.saturating_add(r.total);
            for (code, n) in &r.by_code {
                let sum = reply.by_code.entry(code.clone()).or_default();
                *sum = sum.saturating_add(*n);
            }
            reply.recent.extend(r.recent.iter().map(|a| AsideView {
                by: who.to_owned(),
                ..a.clone()
            }));
            reply.by_who.insert(who.to_owned(), r.clone());
        }
        let skip = reply.recent.len().saturating_sub(ANSWER_RECENT);
        reply.recent.drain(..skip);
        reply
    }
}

/// What a max-deliveries advisory says, as an item set aside.
pub fn of_advisory(subject: &str, payload: &[u8]) -> Aside {
    match serde_json::from_slice::<MaxDeliveries>(payload) {
        Ok(a) => Aside::new(
            a.stream_seq,
            &a.stream,
            "max_deliveries",
            format!(
                "consumer {} gave up on it after {} deliveries",
                a.consumer, a.deliveries
            ),
        ),
        Err(e) => Aside::new(0, subject, "max_deliveries", format!("advisory: {e}")),
    }
}

/// The query API's collection: every report and advisory, in a task.
pub async fn collecting(
    bus: &Bus,
    reports: Arc<Mutex<Reports>>,
    own: Ledger,
) -> anyhow::Result<AbortOnDrop> {
    let mut sub = bus
        .client
        .subscribe(subjects::ASIDE_REPORTS)
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to aside reports: {e}"))?;
    let mut advisories = bus
        .client
        .subscribe(subjects::MAX_DELIVERIES_ADVISORIES)
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to max-deliveries advisories: {e}"))?;
    Ok(AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(m) = sub.next() => {
                    let taken = reports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take(m.subject.as_str(), &m.payload);
                    if let Err(a) = taken {
                        own.record(a);
                    }
                }
                Some(m) = advisories.next() => own.record(of_advisory(m.subject.as_str(), &m.payload)),
                else => {
                    warn!("the aside reports' subscriptions ended");
                    return;
                }
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with(n: u64, code: &'static str) -> Ledger {
        let l = Ledger::default();
        for i in 0..n {
            l.record(Aside::new(i, "bulkhead.node.n1.ops", code, "why"));
        }
        l
    }

    #[test]
    fn the_answer_sums_every_reporter_beside_the_log() {
        let mut reports = Reports::default();
        let node = serde_json::to_vec(&ledger_with(3, "out_of_limits").report()).unwrap();
        let sched = serde_json::to_vec(&ledger_with(2, "no_command").report()).unwrap();
        reports
            .take(&subjects::aside_report("node", "n1"), &node)
            .unwrap();
        reports
            .take(&subjects::aside_report("scheduler", "main"), &sched)
            .unwrap();
        // A later report replaces the reporter's earlier one.
        let node = serde_json::to_vec(&ledger_with(4, "out_of_limits").report()).unwrap();
        reports
            .take(&subjects::aside_report("node", "n1"), &node)
            .unwrap();
        let mut log = SetAside::default();
        log.record(Aside::new(9, "bulkhead.evt.x", "bad_signature", "forged"));
        let a = reports.answer(&log);
        assert_eq!(a.total, 7);
        assert_eq!(a.by_code["out_of_limits"], 4);
        assert_eq!(a.by_code["bad_signature"], 1);
        assert_eq!(a.by_who["node/n1"].total, 4);
        assert_eq!(a.by_who["api"].total, 1);
        assert!(a.recent.iter().any(|v| v.by == "scheduler/main"));
    }

    #[test]
    fn a_bad_report_is_refused_with_a_reason() {
        let mut reports = Reports::default();
        for (subject, body) in [
            ("bulkhead.aside.node", b"{}".to_vec()),
            ("bulkhead.aside.node.n1", b"not json".to_vec()),
            ("bulkhead.aside.node.n1", vec![b' '; MAX_REPORT_BYTES + 1]),
        ] {
            let a = reports.take(subject, &body).unwrap_err();
            assert_eq!(a.code, "bad_report", "{subject}");
        }
        assert_eq!(reports.answer(&SetAside::default()).total, 0);
    }

    #[test]
    fn an_advisory_names_the_message_and_its_consumer() {
        let body = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"BULKHEAD_CMD","consumer":"scheduler","stream_seq":42,"deliveries":20}"#;
        let a = of_advisory(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BULKHEAD_CMD.scheduler",
            body,
        );
        assert_eq!((a.seq, a.code), (42, "max_deliveries"));
        assert!(
            a.reason.contains("scheduler") && a.reason.contains("20"),
            "{}",
            a.reason
        );
        assert_eq!(of_advisory("x", b"junk").code, "max_deliveries");
    }
}
