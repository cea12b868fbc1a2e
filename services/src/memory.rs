//! How the process takes memory from the kernel: in small pages, not transparent huge ones.
//!
//! mimalloc asks for transparent huge pages (`madvise(MADV_HUGEPAGE)`), so on a kernel whose
//! THP mode is `madvise` (Debian's) the first touch of each 2 MiB of its arenas is a 2 MiB
//! page zeroed at once, however little of it is used. Turned off (`PR_SET_THP_DISABLE`,
//! which the processes it starts inherit), the throughput loadtest's restarted scheduler
//! held 1.47–1.55 KiB per workload against 1.58–1.64 with them (three runs each of one
//! build, freed buffers still counted, as the load test then measured); placements per second (median 2,742 against 2,637) and CPU per placement (653
//! against 675 µs) moved less than their run-to-run spread.

use tracing::debug;

/// Turns transparent huge pages off for this process and its children. A kernel that
/// refuses (not Linux, or too old) changes nothing: the process runs as before.
pub fn small_pages_only() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        debug!(error = %e, "transparent huge pages stay as the kernel has them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_once_asked_and_children_inherit_it() {
        // nextest runs each test in a process of its own: this one changes only itself.
        small_pages_only();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
            "the kernel says so too"
        );
        let child = std::process::Command::new("grep")
            .args(["THP_enabled", "/proc/self/status"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&child.stdout);
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}
