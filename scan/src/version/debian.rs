//! Debian version ordering, as `dpkg --compare-versions` does it:
//! `[epoch:]upstream[-revision]`, compared epoch first (numerically), then upstream and
//! revision each with dpkg's alternating non-digit / digit comparison, where `~` sorts
//! before everything (even the end of the string) and letters before other symbols.

use std::cmp::Ordering;

use super::cmp_digits;

/// A parsed Debian version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianVersion<'a> {
    /// Digits of the epoch, leading zeros kept (`""` when absent, which is 0).
    epoch: &'a str,
    upstream: &'a str,
    /// `""` when absent, which compares equal to `0`.
    revision: &'a str,
}

impl<'a> DebianVersion<'a> {
    /// Splits a version; the parts are compared as dpkg compares them, whatever they hold.
    pub fn parse(s: &'a str) -> DebianVersion<'a> {
        let s = s.trim();
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e, rest),
            _ => ("", s),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        DebianVersion {
            epoch,
            upstream,
            revision,
        }
    }
}

impl Ord for DebianVersion<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digits(self.epoch, other.epoch)
            .then_with(|| verrevcmp(self.upstream, other.upstream))
            .then_with(|| verrevcmp(self.revision, other.revision))
    }
}

impl PartialOrd for DebianVersion<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two Debian version strings.
pub fn compare(a: &str, b: &str) -> Ordering {
    DebianVersion::parse(a).cmp(&DebianVersion::parse(b))
}

/// Weight of one character in a non-digit run; `None` is the end of the run.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's comparison of one part: non-digit runs character by character, digit runs as
/// numbers, alternating.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        let na = a.iter().take_while(|c| !c.is_ascii_digit()).count();
        let nb = b.iter().take_while(|c| !c.is_ascii_digit()).count();
        for i in 0..na.max(nb) {
            let ca = (i < na).then(|| a[i]);
            let cb = (i < nb).then(|| b[i]);
            match weight(ca).cmp(&weight(cb)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        (a, b) = (&a[na..], &b[nb..]);
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let (ra, rb) = (&a[..da], &b[..db]);
        // Both runs are ASCII digits, so they are valid UTF-8.
        let o = cmp_digits(
            std::str::from_utf8(ra).unwrap_or(""),
            std::str::from_utf8(rb).unwrap_or(""),
        );
        if o != Ordering::Equal {
            return o;
        }
        (a, b) = (&a[da..], &b[db..]);
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn tilde_sorts_before_everything() {
        assert_eq!(compare("1.0~rc1", "1.0"), Less);
        assert_eq!(compare("1.0~~", "1.0~"), Less);
        assert_eq!(compare("1.0~rc1-1", "1.0-1"), Less);
    }

    #[test]
    fn epoch_beats_everything_and_defaults_to_zero() {
        assert_eq!(compare("1:0.1", "9.9"), Greater);
        assert_eq!(compare("0:1.0", "1.0"), Equal);
    }

    #[test]
    fn revision_absent_is_zero_and_splits_at_the_last_hyphen() {
        assert_eq!(compare("1.0", "1.0-0"), Equal);
        assert_eq!(compare("1.0-2-1", "1.0-2-0"), Greater);
        assert_eq!(compare("2.28-10+deb12u1", "2.28-10"), Greater);
    }

    #[test]
    fn letters_sort_before_symbols_and_numbers_numerically() {
        assert_eq!(compare("1.0a", "1.0+"), Less);
        assert_eq!(compare("1.10", "1.9"), Greater);
        assert_eq!(compare("1.010", "1.10"), Equal);
        assert_eq!(
            compare("1.99999999999999999999999", "1.100000000000000000000000"),
            Less
        );
    }
}
