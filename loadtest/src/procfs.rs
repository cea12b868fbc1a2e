//! What `/proc` says of a process (`self` or a pid): CPU used and resident memory.

/// CPU seconds `proc` has used (user + system).
pub fn cpu_secs(proc: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{proc}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the command, in
    // clock ticks (USER_HZ, 100 a second).
    (ticks(11) + ticks(12)) / 100.0
}

/// `proc`'s resident memory in KiB.
pub fn rss_kib(proc: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{proc}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
