//! The silence rule, the deaf watcher and the mass-silence guard, with time as numbers.

use super::*;

#[test]
fn silent_nodes_are_reported_once_until_they_beat_again() {
    let mut nw = NodeWatch::default();
    nw.beat("a", 1000, 1000);
    nw.beat("b", 1000, 1000);
    nw.expect("c", 1500);
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
    w.blind(Ear::Connection);
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
fn every_node_silent_at_once_declares_none_until_most_beat_again() {
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
    // Heard again: the 18 that beat are alive; the two that did not are lost, at once.
    for i in 2..20 {
        w.beat(&format!("n{i}"), 61_000, 1000);
    }
    let d = w.declare(61_100, 3000);
    let mut lost = names(&d);
    lost.sort();
    assert_eq!(lost, ["n0", "n1"]);
    assert_eq!(d.silence, Silence::Normal);
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
    keep(&mut w, 3000);
    let d = w.declare(3100, 3000);
    assert_eq!(names(&d), ["n0"], "the longest silent first");
    assert_eq!(
        d.silence,
        Silence::Mass {
            quiet: 6,
            watched: 10
        }
    );
    assert_eq!(d.held, 5);
    keep(&mut w, 6000);
    let d = w.declare(6100, 3000);
    assert!(d.lost.is_empty(), "not before {TRICKLE_MS} ms: {d:?}");
    keep(&mut w, 13_000);
    let d = w.declare(13_100, 3000);
    assert_eq!(names(&d), ["n1"]);
    // Five quiet of nine watched (n0 is lost): 55 % and more.
    assert_eq!(
        d.silence,
        Silence::Mass {
            quiet: 5,
            watched: 9
        }
    );
    // Four quiet of eight watched is under 55 %: the rest are each their own fault,
    // declared together.
    keep(&mut w, 23_000);
    let d = w.declare(23_100, 3000);
    let mut lost = names(&d);
    lost.sort();
    assert_eq!(lost, ["n2", "n3", "n4", "n5"]);
    assert_eq!((d.held, d.silence), (0, Silence::Normal));
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
    w.blind(Ear::Watch);
    w.blind(Ear::Connection);
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
