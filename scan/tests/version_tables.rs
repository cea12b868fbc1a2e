//! Every comparison recorded from the package managers themselves
//! (`testdata/version-ordering/`, from google/osv-scalibr, Apache-2.0): ~14,000 from
//! `dpkg --compare-versions`, ~14,000 from `apk version -t`, and hand-written edge cases.

use std::cmp::Ordering;

use bulkhead_scan::version::{Ecosystem, compare};

fn check(eco: Ecosystem, file: &str) {
    let path = format!(
        "{}/testdata/version-ordering/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut cases = 0;
    let mut wrong = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        let [a, op, b] = parts[..] else {
            panic!("{file}:{}: not `A op B`: {line}", n + 1);
        };
        let want = match op {
            "<" => Ordering::Less,
            "=" => Ordering::Equal,
            ">" => Ordering::Greater,
            _ => panic!("{file}:{}: unknown operator {op}", n + 1),
        };
        cases += 1;
        for (x, y, w) in [(a, b, want), (b, a, want.reverse())] {
            let got = compare(eco, x, y);
            if got != w {
                wrong.push(format!(
                    "{file}:{}: {x} vs {y}: want {w:?}, got {got:?}",
                    n + 1
                ));
            }
        }
    }
    assert!(cases > 0, "{file} has no cases");
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases wrong:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn debian_generated_by_dpkg() {
    check(Ecosystem::Debian, "debian-versions-generated.txt");
}

#[test]
fn debian_edge_cases() {
    check(Ecosystem::Debian, "debian-versions.txt");
}

#[test]
fn alpine_generated_by_apk() {
    check(Ecosystem::Alpine, "alpine-versions-generated.txt");
}

#[test]
fn alpine_edge_cases() {
    check(Ecosystem::Alpine, "alpine-versions.txt");
}
