//! What `/proc` says of a process (`self` or a pid): CPU used and resident memory; and of
//! the disk a path is on: flushes and busy time.

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

/// What `/proc/diskstats` counts for one block device: cache flushes completed and the
/// milliseconds it was busy (both since boot).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Disk {
    pub flushes: u64,
    pub busy_ms: u64,
}

impl Disk {
    /// The device that holds `path`, as counted now; None when `/proc/diskstats` does not
    /// list it (a tmpfs, an overlay) or predates flush counts (Linux 5.5).
    pub fn holding(path: &std::path::Path) -> Option<Disk> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(path).ok()?.dev();
        let (major, minor) = split_dev(dev);
        let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
        disk_of(&stats, major, minor)
    }

    /// What was counted between `before` and this.
    pub fn since(self, before: Disk) -> Disk {
        Disk {
            flushes: self.flushes.saturating_sub(before.flushes),
            busy_ms: self.busy_ms.saturating_sub(before.busy_ms),
        }
    }
}

/// Linux's `dev_t` as (major, minor).
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The line of `major:minor` in `/proc/diskstats`: after major, minor and name come 17
/// counters (Linux 5.5+), the 10th the milliseconds spent doing I/O, the 16th the flushes.
fn disk_of(stats: &str, major: u64, minor: u64) -> Option<Disk> {
    stats.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        if num(0)? != major || num(1)? != minor {
            return None;
        }
        Some(Disk {
            busy_ms: num(3 + 9)?,
            flushes: num(3 + 15)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_found_by_its_numbers_and_read_for_its_flushes_and_busy_time() {
        let stats = " 254       0 vda 123726 8167 7243210 146791 1808905 91127 19246776 120988 0 98584 302143 137759 0 5513856 11131 550639 23231\n 254       1 vda1 1 2 3 4 5 6 7 8 0 9 10 11 12 13 14 15 16\n 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(
            disk_of(stats, 254, 0),
            Some(Disk {
                flushes: 550639,
                busy_ms: 98584
            })
        );
        assert_eq!(
            disk_of(stats, 254, 1),
            Some(Disk {
                flushes: 15,
                busy_ms: 9
            })
        );
        assert_eq!(disk_of(stats, 8, 0), None);
        // Before Linux 5.5: no flush counters.
        assert_eq!(disk_of(" 8 0 sda 1 2 3 4 5 6 7 8 0 9 10\n", 8, 0), None);
    }

    #[test]
    fn dev_numbers_split_as_linux_encodes_them() {
        assert_eq!(split_dev((254 << 8) | 1), (254, 1));
        // A large minor spills into the upper bits.
        assert_eq!(split_dev(0x0010_0000 | (8 << 8) | 0x23), (8, 0x123));
    }
}
