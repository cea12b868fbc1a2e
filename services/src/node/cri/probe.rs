//! The isolation probe's judgement: from what a tiny workload printed inside a sandbox
//! (`uname -r`, then `/proc/version`), decide whether the class isolates as it promises.
//! Pure; the CRI runtime runs the probe and feeds this.

use bulkhead_schemas::RuntimeClass;
use bulkhead_schemas::node::IsolationReport;

/// What the probe container runs: kernel release, then the full kernel version line.
pub const PROBE_SCRIPT: &str = "uname -r; cat /proc/version";

/// The host's kernel as the node sees it: (release, `/proc/version`).
pub fn host_kernel() -> (String, String) {
    let read = |p| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    (read("/proc/sys/kernel/osrelease"), read("/proc/version"))
}

/// The text lines of a CRI-format log (`<time> <stream> <P|F> <text>`), partial lines joined.
pub fn cri_log_text(log: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut partial = String::new();
    for l in log.lines() {
        let mut parts = l.splitn(4, ' ');
        let (Some(_time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        partial.push_str(parts.next().unwrap_or(""));
        if tag != "P" {
            lines.push(std::mem::take(&mut partial));
        }
    }
    if !partial.is_empty() {
        lines.push(partial);
    }
    lines
}

/// Why the probe printed nothing to judge.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cri(#[from] super::CriError),
    #[error(transparent)]
    Runtime(#[from] bulkhead_actors::ports::runtime::RuntimeError),
    #[error("probe exited with {code} ({reason}): {output}")]
    Exited {
        code: i32,
        reason: String,
        output: String,
    },
}

/// The report for `class` given the probe's output lines (or why it did not run).
pub fn judge(
    class: RuntimeClass,
    handler: &str,
    host_version: &str,
    output: Result<Vec<String>, ProbeError>,
    took_ms: u64,
    at: String,
) -> IsolationReport {
    let mut report = IsolationReport {
        class,
        handler: handler.to_owned(),
        ok: false,
        host_kernel_visible: None,
        kernel: String::new(),
        detail: String::new(),
        took_ms,
        at,
    };
    let lines = match output {
        Ok(l) => l,
        Err(e) => {
            report.detail = format!("probe did not run: {e}");
            return report;
        }
    };
    let (Some(release), Some(version)) = (lines.first(), lines.get(1)) else {
        report.detail = format!("probe printed {} line(s), expected 2", lines.len());
        return report;
    };
    let visible = version.trim() == host_version.trim();
    report.kernel = release.trim().to_owned();
    report.host_kernel_visible = Some(visible);
    if class == RuntimeClass::Runc {
        report.ok = true;
        report.detail = if visible {
            "shares the host kernel, as runc does".into()
        } else {
            format!("runc saw a kernel that is not the host's: {version}")
        };
    } else if visible {
        report.detail = "the sandbox sees the host kernel: this class does not isolate here".into();
    } else {
        report.ok = true;
        report.detail = format!("own kernel: {}", version.trim());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) #1 SMP";
    const GVISOR: &str = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016";

    fn out(release: &str, version: &str) -> Result<Vec<String>, ProbeError> {
        Ok(vec![release.into(), version.into()])
    }

    #[test]
    fn cri_log_lines_are_unwrapped() {
        let log = "2026-11-23T10:00:00.1Z stdout F 4.4.0\n\
                   2026-11-23T10:00:00.2Z stdout P Linux version \n\
                   2026-11-23T10:00:00.2Z stdout F 4.4.0 #1\n";
        assert_eq!(cri_log_text(log), vec!["4.4.0", "Linux version 4.4.0 #1"]);
    }

    #[test]
    fn runc_sharing_the_host_kernel_is_ok() {
        let r = judge(
            RuntimeClass::Runc,
            "runc",
            HOST,
            out("6.1.0-18-amd64", HOST),
            90,
            String::new(),
        );
        assert!(r.ok);
        assert_eq!(r.host_kernel_visible, Some(true));
    }

    #[test]
    fn gvisor_with_its_own_kernel_is_ok() {
        let r = judge(
            RuntimeClass::Gvisor,
            "runsc",
            HOST,
            out("4.4.0", GVISOR),
            700,
            String::new(),
        );
        assert!(r.ok, "{r:?}");
        assert_eq!(r.host_kernel_visible, Some(false));
        assert_eq!(r.kernel, "4.4.0");
    }

    #[test]
    fn a_sandbox_class_that_sees_the_host_kernel_fails() {
        // e.g. `gvisor` mapped to the runc handler by mistake
        let r = judge(
            RuntimeClass::Gvisor,
            "runc",
            HOST,
            out("6.1.0-18-amd64", HOST),
            90,
            String::new(),
        );
        assert!(!r.ok);
        assert!(r.detail.contains("does not isolate"), "{}", r.detail);
    }

    #[test]
    fn a_probe_that_did_not_run_or_printed_nothing_fails() {
        let r = judge(
            RuntimeClass::Kata,
            "kata",
            HOST,
            Err(ProbeError::Exited {
                code: 1,
                reason: "error".into(),
                output: "no runtime handler kata".into(),
            }),
            5,
            String::new(),
        );
        assert!(!r.ok);
        assert!(r.detail.contains("no runtime handler"));
        let r = judge(
            RuntimeClass::Runc,
            "runc",
            HOST,
            Ok(vec![]),
            5,
            String::new(),
        );
        assert!(!r.ok);
    }
}
