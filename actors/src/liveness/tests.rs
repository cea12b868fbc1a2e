//! The silence rule, the deaf watcher and the mass-silence guard, with time as numbers.

use super::*;

#[test]
fn silent_nodes_are_reported_once_until_they_beat_again() {
    let mut nw = NodeWatch::default();
    nw.beat("a", 1000, 1000);
    nw.beat("b", 1000, 1000);
    nw.expect("c", 1500, None);
    nw.beat("b", 3500, 1000);
    assert!(nw.silent(3900, 3000).is_empty());
    let mut lost = nw.silent(4100, 3000);
    lost.sort();
    assert_eq!(lost, [("a".to_owned(), 3100)]);
    assert!(nw.silent(4200, 3000).is_empty(), "reported once");
    assert!(nw.is_lost("a"));
    assert_eq!(nw.silent(4600, 3000), [("c".to_owned(), 3100)]);
    assert!(nw.beat("a", 5000, 1000), "back");
    assert!(!nw.is_lost("a"));
}

#[test]
fn a_node_that_beats_slowly_is_lost_only_after_three_missed_beats() {
    let mut nw = NodeWatch::default();
    nw.beat("slow", 0, 5000);
    nw.beat("fast", 0, 200);
    let lost = nw.silent(3100, 3000);
    assert_eq!(
        lost,
        [("fast".to_owned(), 3100)],
        "3 s timeout for a 200 ms beat"
    );
    assert!(
        nw.silent(14_000, 3000).is_empty(),
        "5 s beats: not before 15 s"
    );
    assert_eq!(nw.silent(15_100, 3000), [("slow".to_owned(), 15_100)]);
}

#[test]
fn a_watcher_cut_off_declares_no_one_and_gives_everyone_a_fresh_interval() {
    let mut w = NodeWatch::default();
    w.beat("n", 1000, 1000);
    w.blind(Ear::Connection, 1000);
    assert!(w.silent(60_000, 3000).is_empty(), "deaf: no one is silent");
    w.hears_again(Ear::Connection, 60_000);
    assert!(
        w.silent(62_000, 3000).is_empty(),
        "a fresh interval from the reconnect"
    );
    assert_eq!(w.silent(63_100, 3000), [("n".to_owned(), 3100)]);
}

#[test]
fn an_endless_interval_does_not_make_a_node_immortal() {
    let mut w = NodeWatch::default();
    w.beat("n", 0, u64::MAX);
    let silence = MAX_INTERVAL_MS * MISSED_BEATS + 1;
    assert_eq!(
        w.silent(silence, 0).len(),
        1,
        "lost after three capped intervals"
    );
}

/// `n` nodes named `n0`…, each beating every second, the last beat of node *i* at
/// `at + i * spread / n` (spread over one interval, as a fleet's beats are).
fn fleet(n: usize, at: u64, spread: u64) -> NodeWatch {
    let mut w = NodeWatch::default();
    for i in 0..n {
        w.beat(&format!("n{i}"), at + i as u64 * spread / n as u64, 1000);
    }
    w
}

fn names(d: &Declared) -> Vec<&str> {
    d.lost.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn one_silent_node_among_many_is_declared_at_once() {
    let mut w = fleet(10, 0, 0);
    for t in (1000..=3000).step_by(1000) {
        for i in 1..10 {
            w.beat(&format!("n{i}"), t, 1000);
        }
    }
    let d = w.declare(3100, 3000);
    assert_eq!(names(&d), ["n0"]);
    assert_eq!((d.held, d.silence), (0, Silence::Normal));
}

#[test]
fn every_node_silent_at_once_declares_none_and_those_still_silent_a_limit_after() {
    // Beats spread over a second, then the watcher hears nothing (a stalled watch, a
    // server that stores no heartbeat): the first node passes its limit while every other
    // is already quiet, so the silence is seen as total before anyone is declared.
    let mut w = fleet(20, 0, 1000);
    let first = w.declare(3001, 3000);
    assert!(first.lost.is_empty(), "{first:?}");
    assert_eq!(
        (first.held, first.silence),
        (1, Silence::Total { quiet: 20 })
    );
    let later = w.declare(60_000, 3000);
    assert!(later.lost.is_empty());
    assert_eq!(later.held, 20, "all past their limit, all held");
    // Heard again: 18 beat, n0 and n1 do not. The silence eases, every node gets a fresh
    // interval; the two still silent a limit later are lost then, at once.
    let beat = |w: &mut NodeWatch, t: u64| {
        for i in 2..20 {
            w.beat(&format!("n{i}"), t, 1000);
        }
    };
    beat(&mut w, 61_000);
    let d = w.declare(61_100, 3000);
    assert!(d.lost.is_empty(), "{d:?}");
    assert_eq!(d.silence, Silence::Normal);
    for t in [62_000, 63_000, 64_000] {
        beat(&mut w, t);
        assert!(w.declare(t + 50, 3000).lost.is_empty());
    }
    let d = w.declare(64_200, 3000);
    let mut lost = names(&d);
    lost.sort();
    assert_eq!(lost, ["n0", "n1"]);
}

/// Every `n`-th node of `w` beats at each 50 ms from `from` for `span` ms, in turn, each
/// once per `every` ms; `declare` asked every 100 ms. What was declared lost.
fn run(w: &mut NodeWatch, nodes: &[(String, u64)], from: u64, span: u64) -> Vec<String> {
    let mut lost = Vec::new();
    for t in (from..from + span).step_by(50) {
        for (i, (n, every)) in nodes.iter().enumerate() {
            // Node i beats at its own phase: (i * 50) ms into each of its intervals.
            if (t - from) % every == (i as u64 * 50) % every {
                w.beat(n, t, *every);
            }
        }
        if t % 100 == 0 {
            lost.extend(w.declare(t, 3000).lost.into_iter().map(|(n, _)| n));
        }
    }
    lost
}

#[test]
fn beats_coming_back_one_by_one_after_a_total_silence_lose_no_node() {
    let nodes: Vec<(String, u64)> = (0..20).map(|i| (format!("n{i}"), 1000)).collect();
    let mut w = NodeWatch::default();
    assert!(run(&mut w, &nodes, 0, 5_000).is_empty(), "beating: none");
    // Silent for 20 s (everything held), then back, one beat every 50 ms.
    for t in (5_000..25_000).step_by(100) {
        assert!(w.declare(t, 3000).lost.is_empty(), "at {t}");
    }
    assert!(
        run(&mut w, &nodes, 25_000, 10_000).is_empty(),
        "a node whose beat was still on its way is not lost"
    );
}

#[test]
fn a_slower_node_turns_a_total_silence_into_a_mass_one_that_waits_before_declaring() {
    // Ten nodes beat every second, one every three: when they all stop, the fast ones pass
    // their limit (3 s) before the slow one is quiet (past 4.5 of its 9 s): a mass silence
    // first, whose first declaration waits ten seconds, by which time it is total.
    let mut nodes: Vec<(String, u64)> = (0..10).map(|i| (format!("n{i}"), 1000)).collect();
    nodes.push(("slow".into(), 3000));
    let mut w = NodeWatch::default();
    assert!(run(&mut w, &nodes, 0, 4_000).is_empty());
    let mut seen = Vec::new();
    for t in (4_000..40_000).step_by(100) {
        let d = w.declare(t, 3000);
        assert!(d.lost.is_empty(), "at {t}: {d:?}");
        seen.push(d.silence.rank());
    }
    assert!(seen.contains(&1) && seen.last() == Some(&2), "{seen:?}");
}

#[test]
fn most_of_the_cluster_silent_is_declared_one_node_per_trickle() {
    let mut w = fleet(10, 0, 0);
    // n0..n5 stop (n0 first); n6..n9 go on beating.
    for i in 0..6u64 {
        w.beat(&format!("n{i}"), i * 10, 1000);
    }
    let keep = |w: &mut NodeWatch, t: u64| {
        for i in 6..10 {
            w.beat(&format!("n{i}"), t, 1000);
        }
    };
    let mass = Silence::Mass {
        quiet: 6,
        watched: 10,
    };
    keep(&mut w, 3000);
    let d = w.declare(3100, 3000);
    assert!(d.lost.is_empty(), "the first waits {TRICKLE_MS} ms: {d:?}");
    assert_eq!((d.held, d.silence), (6, mass));
    for t in (6_000..=12_000).step_by(3000) {
        keep(&mut w, t);
        assert!(w.declare(t + 100, 3000).lost.is_empty());
    }
    keep(&mut w, 13_000);
    let d = w.declare(13_100, 3000);
    assert_eq!(names(&d), ["n0"], "the longest silent first");
    assert_eq!(
        (d.held, d.silence),
        (5, mass),
        "a node lost in it still counts"
    );
    for t in (14_000..=22_000).step_by(2000) {
        keep(&mut w, t);
        assert!(w.declare(t + 100, 3000).lost.is_empty());
    }
    keep(&mut w, 23_000);
    assert_eq!(names(&w.declare(23_100, 3000)), ["n1"]);
    // Counting only those not lost it would be four quiet of eight, under 55 %: the mass
    // silence would end by its own declarations, and the other four be lost at once.
    for t in (24_000..=32_000).step_by(1000) {
        keep(&mut w, t);
        let d = w.declare(t + 100, 3000);
        assert!(d.lost.is_empty(), "at {t}: {d:?}");
        assert_eq!(d.silence, mass);
    }
    keep(&mut w, 33_000);
    assert_eq!(names(&w.declare(33_100, 3000)), ["n2"]);
    // n3..n5 beat again: only the three lost in it are quiet now, the silence eases and
    // ends; n0..n2 stay lost until they beat.
    for i in 3..6 {
        w.beat(&format!("n{i}"), 34_000, 1000);
    }
    keep(&mut w, 34_000);
    let d = w.declare(34_100, 3000);
    assert_eq!((d.lost.len(), d.silence), (0, Silence::Normal));
    assert!(w.is_lost("n0") && w.is_lost("n1") && w.is_lost("n2"));
}

#[test]
fn a_small_cluster_fails_over_as_before_even_all_at_once() {
    let mut w = fleet(2, 0, 0);
    let d = w.declare(3100, 3000);
    assert_eq!(d.lost.len(), 2, "two nodes are under the mass minimum");
    assert_eq!(d.silence, Silence::Normal);
}

#[test]
fn nodes_lost_long_ago_do_not_count_towards_a_mass_silence() {
    let mut w = fleet(10, 0, 0);
    for i in 4..10 {
        w.beat(&format!("n{i}"), 3000, 1000);
    }
    assert_eq!(w.declare(3100, 3000).lost.len(), 4, "four of ten: normal");
    // Three of the six left go quiet: half of the six watched, under 55 % (counting the
    // four lost ones it would be seven of ten).
    for i in 7..10 {
        w.beat(&format!("n{i}"), 6000, 1000);
    }
    let d = w.declare(6100, 3000);
    let mut lost = names(&d);
    lost.sort();
    assert_eq!(lost, ["n4", "n5", "n6"]);
    assert_eq!(d.silence, Silence::Normal);
}

#[test]
fn a_deaf_watch_or_connection_each_keeps_every_node_alive() {
    // Two nodes: fewer than a mass silence, so only deafness can keep them.
    let mut w = fleet(2, 0, 0);
    w.blind(Ear::Watch, 0);
    w.blind(Ear::Connection, 0);
    w.hears_again(Ear::Connection, 10_000);
    assert!(
        w.declare(20_000, 3000).lost.is_empty(),
        "the watch is still down: deaf"
    );
    assert!(w.silent(20_000, 3000).is_empty(), "the scheduler's ask too");
    w.hears_again(Ear::Watch, 20_000);
    assert!(
        w.declare(22_000, 3000).lost.is_empty(),
        "a fresh interval from when the last ear came back"
    );
    w.beat("n0", 22_500, 1000);
    assert_eq!(names(&w.declare(23_100, 3000)), ["n1"]);
}

#[test]
fn a_node_known_from_the_log_has_the_interval_it_last_stated() {
    let mut w = NodeWatch::default();
    w.expect("slow", 0, Some(5000));
    w.expect("unknown", 0, None);
    assert_eq!(
        w.silent(3100, 3000),
        [("unknown".to_owned(), 3100)],
        "no interval known: the timeout"
    );
    assert!(w.silent(14_000, 3000).is_empty(), "three of its 5 s beats");
    assert_eq!(w.silent(15_100, 3000), [("slow".to_owned(), 15_100)]);
}

#[test]
fn recurring_stalls_do_not_keep_a_dead_node_alive() {
    // Nine nodes beat twice a second but for 2 s of every 4.5 s (a server that stalls); a
    // tenth, beating every 2 s (its limit 6 s, longer than the stalls' period), is dead.
    // Each stall is total and eases: the dead node gets one fresh interval, not one at every
    // stall.
    let mut w = NodeWatch::default();
    w.beat("dead", 0, 2000);
    let mut lost = Vec::new();
    for t in (0..60_000u64).step_by(100) {
        if t % 4500 < 2500 && t % 500 == 0 {
            for i in 0..9 {
                w.beat(&format!("n{i}"), t, 1000);
            }
        }
        lost.extend(w.declare(t, 3000).lost.into_iter().map(|(n, _)| n));
    }
    assert_eq!(lost, ["dead"]);
}

#[test]
fn a_mass_silence_ends_with_the_silence_of_the_nodes_left() {
    // Three of five die at once: a mass silence, one declared every 10 s. Once they are all
    // lost and the two left beat, it is over: a later lone failure is declared at its limit,
    // not at a turn of the old silence.
    let mut w = NodeWatch::default();
    let mut lost = Vec::new();
    for t in (0..60_000u64).step_by(100) {
        for i in 0..5 {
            let alive = match i {
                0..=2 => t < 1000,
                3 => t < 36_000,
                _ => true,
            };
            if alive && t % 1000 == 0 {
                w.beat(&format!("n{i}"), t, 1000);
            }
        }
        let d = w.declare(t, 3000);
        lost.extend(d.lost.into_iter().map(|(n, _)| (n, t)));
    }
    let names: Vec<&str> = lost.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n0", "n1", "n2", "n3"], "{lost:?}");
    let n3_at = lost[3].1;
    assert!(
        (38_000..=38_300).contains(&n3_at),
        "n3 at its limit after its last beat at 35 s, not at the next turn (41.6 s): {lost:?}"
    );
}

#[test]
fn a_watch_that_comes_and_goes_keeps_no_dead_node_alive() {
    // Deaf for a second, hearing for a second, again and again: each time shorter than the
    // 3 s timeout. Two nodes, so no mass silence: only the rule for hearing again decides.
    let mut w = NodeWatch::default();
    w.beat("dead", 0, 1000);
    w.beat("live", 0, 1000);
    let mut lost_at = None;
    for cycle in 0..20u64 {
        let t = 1000 + cycle * 2000;
        w.blind(Ear::Watch, t);
        w.hears_again(Ear::Watch, t + 1000);
        w.beat("live", t + 1500, 1000);
        let d = w.declare(t + 1900, 3000);
        assert!(!names(&d).contains(&"live"), "cycle {cycle}");
        if names(&d) == ["dead"] {
            lost_at = Some(t + 1900);
            break;
        }
    }
    // One fresh interval (from 2 s), then only the time heard counts: 900 ms a cycle.
    assert_eq!(lost_at, Some(8900), "the dead node is lost after 3 s heard");
}

#[test]
fn a_node_silent_across_two_deafnesses_keeps_the_time_heard_between() {
    let mut w = NodeWatch::default();
    w.beat("n", 0, 1000);
    w.blind(Ear::Connection, 1000);
    w.hears_again(Ear::Connection, 30_000);
    // Deaf again before its next beat came: the 500 ms heard still count, the deaf time not.
    w.blind(Ear::Connection, 30_500);
    w.hears_again(Ear::Connection, 60_000);
    assert!(w.silent(62_000, 3000).is_empty(), "2.5 s heard");
    assert_eq!(w.silent(62_600, 3000), [("n".to_owned(), 3100)]);
    // A beat makes it eligible for a fresh interval again.
    w.beat("n", 63_000, 1000);
    w.blind(Ear::Connection, 63_500);
    w.hears_again(Ear::Connection, 90_000);
    assert!(
        w.silent(92_900, 3000).is_empty(),
        "a fresh interval from 90 s"
    );
}

#[test]
fn after_a_server_restart_beats_coming_back_slowly_lose_no_node() {
    // The watcher's connection is down 100 ms → 6 s; five nodes beating every 200 ms
    // reconnect 1.6 to 4 s after it. Hearing again and the mass silence easing each give a
    // fresh interval: neither uses up the other's.
    let mut w = NodeWatch::default();
    for i in 0..5 {
        w.beat(&format!("n{i}"), 0, 200);
    }
    w.blind(Ear::Connection, 100);
    w.hears_again(Ear::Connection, 6000);
    let back = [7600, 8000, 8500, 9500, 10_000];
    for now in (6000..14_000).step_by(100) {
        for (i, at) in back.iter().enumerate() {
            if now >= *at && (now - at) % 200 == 0 {
                w.beat(&format!("n{i}"), now, 200);
            }
        }
        let d = w.declare(now, 3000);
        assert!(d.lost.is_empty(), "at {now}: {:?}", d.lost);
    }
}

/// Ticks every 100 ms from `from` to `to` (excluded), the `alive` beating at each, declaring
/// with a 1 s timeout; the nodes declared lost, with when.
fn ticking(w: &mut NodeWatch, alive: &[&str], from: u64, to: u64) -> Vec<(String, u64)> {
    let mut lost = Vec::new();
    for t in (from..to).step_by(100) {
        w.tick(t, 100);
        let d = w.declare(t, 1000);
        lost.extend(d.lost.into_iter().map(|(n, _)| (n, t)));
        for node in alive {
            w.beat(node, t, 100);
        }
    }
    lost
}

#[test]
fn a_watcher_paused_declares_no_one_for_its_pause_and_a_dead_node_a_limit_after() {
    // Two nodes beat every 100 ms; one dies at 2 s, when the watcher is paused for 2 s (its
    // process stopped): nothing ticks and no beat is read. The first tick after it is late,
    // and no one is declared lost then; the dead node is a limit (1 s) later, the live one
    // never.
    let mut w = NodeWatch::default();
    let mut lost = ticking(&mut w, &["alive", "dead"], 0, 2000);
    assert_eq!(w.tick(4000, 100), Some(2000), "due at 2 s, 2 s late");
    assert!(w.declare(4000, 1000).lost.is_empty());
    w.beat("alive", 4000, 100);
    lost.extend(ticking(&mut w, &["alive"], 4100, 8000));
    assert_eq!(lost, [("dead".to_owned(), 5100)]);
}

#[test]
fn ticks_on_time_or_a_little_late_change_nothing() {
    // The same death without the pause: declared a limit after its last beat. A tick up to
    // PAUSED_MS late is not a pause; the first tick has nothing to be late against.
    let mut w = NodeWatch::default();
    assert_eq!(w.tick(0, 100), None);
    assert_eq!(w.tick(100 + PAUSED_MS, 100), None);
    assert_eq!(
        w.tick(100 + PAUSED_MS, 100),
        None,
        "a tick again at the same time"
    );
    let mut w = NodeWatch::default();
    w.beat("dead", 1900, 100);
    let lost = ticking(&mut w, &["alive"], 0, 8000);
    assert_eq!(lost, [("dead".to_owned(), 3000)]);
}

#[test]
fn recurring_pauses_do_not_keep_a_dead_node_alive() {
    // The watcher is paused 1.5 s of every 2 s, a dead node's limit is 1 s: each pause is
    // taken off its silence after the first, the 0.5 s heard between them counts: 0.4 s in
    // the second cycle (from its fresh interval at 2 s), 0.5 s in the third, past its limit
    // 0.1 s into the fourth.
    let mut w = NodeWatch::default();
    w.beat("dead", 0, 100);
    let mut lost = Vec::new();
    for cycle in 0..10u64 {
        let start = cycle * 2000;
        lost.extend(ticking(&mut w, &["alive"], start, start + 500));
        w.tick(start + 2000, 100);
        w.beat("alive", start + 2000, 100);
    }
    assert_eq!(lost, [("dead".to_owned(), 6100)]);
}

#[test]
fn a_wall_clock_stepped_forward_a_minute_declares_no_one() {
    // Times are Unix ms of arrival: a clock stepped forward makes every node look silent
    // for the step at the next tick, which comes as late as the step. No one is lost.
    let mut w = NodeWatch::default();
    let mut lost = ticking(&mut w, &["a", "b"], 0, 2000);
    lost.extend(ticking(&mut w, &["a", "b"], 62_000, 65_000));
    assert_eq!(lost, []);
}
