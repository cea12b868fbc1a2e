//! Package version ordering per ecosystem, exact to the package managers themselves
//! (checked against tables recorded from `dpkg --compare-versions` and `apk version -t`).

pub mod alpine;
pub mod debian;

use std::cmp::Ordering;

/// Ecosystems whose versions bulkhead orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ecosystem {
    Debian,
    Alpine,
}

/// Orders two versions of one ecosystem.
pub fn compare(eco: Ecosystem, a: &str, b: &str) -> Ordering {
    match eco {
        Ecosystem::Debian => debian::compare(a, b),
        Ecosystem::Alpine => alpine::compare(a, b),
    }
}

/// Compares two runs of ASCII digits as numbers of any size (leading zeros ignored,
/// `""` is 0).
pub(crate) fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_compare_as_numbers_of_any_size() {
        assert_eq!(cmp_digits("", "0"), Ordering::Equal);
        assert_eq!(cmp_digits("007", "7"), Ordering::Equal);
        assert_eq!(cmp_digits("10", "9"), Ordering::Greater);
        assert_eq!(
            cmp_digits(
                "123456789012345678901234567890",
                "123456789012345678901234567891"
            ),
            Ordering::Less
        );
    }
}
