//! Alpine (apk) version ordering: `number{.number}…{letter}{_suffix{number}}…{~hash}{-rN}`.
//! Numbers compare numerically, except that a later component with a leading zero
//! compares as a string (apk treats it as a fraction); a letter sorts after none; the
//! suffixes sort `alpha < beta < pre < rc < (none) < cvs < svn < git < hg < p`; the hash is
//! ignored; `-rN` (absent: 0) comes last. Text after all that makes a version smaller
//! than the same version without it (and is otherwise ignored); two versions whose tail
//! cannot be read as `-rN` at all compare as plain strings, as the recorded cases demand.

use std::cmp::Ordering;

use super::cmp_digits;

/// Suffixes in their order; a missing suffix sits where `""` is.
const SUFFIXES: [&str; 10] = [
    "alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg", "p",
];
const NO_SUFFIX: usize = 4;

/// A parsed apk version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlpineVersion<'a> {
    original: &'a str,
    numbers: Vec<&'a str>,
    letter: Option<u8>,
    /// (index in `SUFFIXES`, its number's digits)
    suffixes: Vec<(usize, &'a str)>,
    /// Digits of `-rN` (`""` is 0).
    build: &'a str,
    /// Text after the last part read.
    rest: &'a str,
    /// Text apk cannot read where the build number should be.
    invalid: bool,
}

impl<'a> AlpineVersion<'a> {
    pub fn parse(original: &'a str) -> AlpineVersion<'a> {
        let mut s = original;
        let digits = |s: &'a str| -> (&'a str, &'a str) {
            let n = s.bytes().take_while(u8::is_ascii_digit).count();
            s.split_at(n)
        };
        let mut numbers = Vec::new();
        let (first, after) = digits(s);
        if !first.is_empty() {
            numbers.push(first);
            s = after;
            while let Some(r) = s.strip_prefix('.') {
                let (d, after) = digits(r);
                if d.is_empty() {
                    break;
                }
                numbers.push(d);
                s = after;
            }
        }
        let letter = match s.as_bytes().first() {
            Some(c) if c.is_ascii_lowercase() => {
                s = &s[1..];
                Some(*c)
            }
            _ => None,
        };
        let mut suffixes = Vec::new();
        while let Some(r) = s.strip_prefix('_') {
            let Some((i, name)) = SUFFIXES
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.is_empty())
                .find(|(_, n)| r.starts_with(*n))
            else {
                break;
            };
            let (d, after) = digits(&r[name.len()..]);
            suffixes.push((i, d));
            s = after;
        }
        if let Some(r) = s.strip_prefix('~') {
            let n = r
                .bytes()
                .take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
                .count();
            if n > 0 {
                s = &r[n..];
            }
        }
        // Whatever is left must start a build number, or apk cannot read the version.
        let mut build = "";
        let invalid = match s.strip_prefix("-r") {
            Some(r) => {
                let (d, after) = digits(r);
                build = d;
                s = after;
                false
            }
            None => !s.is_empty(),
        };
        AlpineVersion {
            original,
            invalid,
            numbers,
            letter,
            suffixes,
            build,
            rest: s,
        }
    }

    fn number(&self, i: usize) -> Option<&'a str> {
        self.numbers.get(i).copied()
    }

    fn suffix(&self, i: usize) -> (usize, &'a str) {
        self.suffixes.get(i).copied().unwrap_or((NO_SUFFIX, ""))
    }
}

impl Ord for AlpineVersion<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.invalid && other.invalid {
            return self.original.cmp(other.original);
        }
        let numbers = (0..self.numbers.len().max(other.numbers.len())).map(|i| {
            match (self.number(i), other.number(i)) {
                // A later component with a leading zero is a fraction: compare as text.
                (Some(a), Some(b)) if i > 0 && (a.starts_with('0') || b.starts_with('0')) => {
                    a.cmp(b)
                }
                (a, b) => cmp_digits(a.unwrap_or("0"), b.unwrap_or("0")),
            }
        });
        let suffixes = (0..self.suffixes.len().max(other.suffixes.len())).map(|i| {
            let ((wa, na), (wb, nb)) = (self.suffix(i), other.suffix(i));
            wa.cmp(&wb).then_with(|| cmp_digits(na, nb))
        });
        first_difference(numbers)
            .then_with(|| self.letter.cmp(&other.letter))
            .then_with(|| first_difference(suffixes))
            .then_with(|| cmp_digits(self.build, other.build))
            // Trailing text makes a version smaller than the same version without it.
            .then_with(|| self.rest.is_empty().cmp(&other.rest.is_empty()))
    }
}

impl PartialOrd for AlpineVersion<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn first_difference(mut it: impl Iterator<Item = Ordering>) -> Ordering {
    it.find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

/// Compares two apk version strings.
pub fn compare(a: &str, b: &str) -> Ordering {
    AlpineVersion::parse(a).cmp(&AlpineVersion::parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn suffix_order() {
        let order = [
            "1.0_alpha",
            "1.0_alpha2",
            "1.0_beta",
            "1.0_pre1",
            "1.0_rc1",
            "1.0",
            "1.0_cvs1",
            "1.0_svn1",
            "1.0_git1",
            "1.0_hg1",
            "1.0_p1",
        ];
        for w in order.windows(2) {
            assert_eq!(compare(w[0], w[1]), Less, "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn revisions_letters_and_fractions() {
        assert_eq!(compare("1.2-r1", "1.2-r10"), Less);
        assert_eq!(compare("1.2-r", "1.2-r0"), Equal);
        assert_eq!(compare("1.2a", "1.2"), Greater);
        assert_eq!(compare("1.2a", "1.2b"), Less);
        assert_eq!(compare("1.01", "1.1"), Less);
        assert_eq!(compare("1.10", "1.9"), Greater);
        assert_eq!(compare("1.0~abc123-r1", "1.0-r1"), Equal);
    }
}
